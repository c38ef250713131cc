"""``Client.connect(url, entry=...)``: a client that knows only the pipeline file and the
payload schemas publishes to the entry agent type exactly as a full Pipeline's client does,
and waits for its reply, without importing a single agent class. The publisher runs in a
fresh interpreter (argv-only subprocess) against the session's real server; this process
reads what it wrote with the full pipeline's codec and answers it as the reporter would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path

import anyio
import pytest
import redis
from pydantic import ValidationError

from agent_runtime.client import Client
from agent_runtime.config.pipeline import Pipeline
from agent_runtime.endpoint import Endpoint
from agent_runtime.errors import ConfigError, ImportNotAllowedError, RequestError
from protocols.envelope import AgentMessage, utcnow
from protocols.pipeline import Report

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]

PUBLISHER = """
import json, sys
import anyio
from agent_runtime.client import Client

async def main(url: str, config: str) -> None:
    client = Client.connect(url, entry="intent_parser", config=config,
                            schemas=["protocols.pipeline"])
    async with client:
        message = await client.publish(
            client.payload("user.request", {"text": "list files in configs"}), timeout=60
        )
        print(json.dumps({"cid": str(message.correlation_id)}), flush=True)
        reply = await client.wait_reply(message, 60)
    loaded = sorted(m for m in sys.modules if m == "agents" or m.startswith("agents."))
    print(json.dumps({"type": reply.message.message_type, "status": reply.payload.status,
                      "class": type(reply.payload).__qualname__, "agents": loaded}), flush=True)

anyio.run(main, sys.argv[1], sys.argv[2])
"""


@pytest.fixture
def config(tmp_path: Path, prefix: str) -> Path:
    text = (ROOT / "configs" / "default.yaml").read_text(encoding="utf-8")
    path = tmp_path / "pipeline.yaml"
    path.write_text(text.replace("key_prefix: ar\n", f"key_prefix: {prefix}\n", 1))
    (tmp_path / "policy.yaml").write_text((ROOT / "configs" / "policy.yaml").read_text())
    return path


def test_entry_client_publishes_and_gets_its_reply_without_agent_classes(
    redis_url: str, config: Path, subprocess_env: dict[str, str]
) -> None:
    env = {**os.environ, **subprocess_env, "PYTHONPATH": str(ROOT)}
    with subprocess.Popen(
        [sys.executable, "-c", PUBLISHER, redis_url, str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    ) as proc:
        try:
            assert proc.stdout is not None
            first = proc.stdout.readline()
            assert first, proc.stderr.read() if proc.stderr else ""
            cid = uuid.UUID(json.loads(first)["cid"])

            pipeline = Pipeline.load(config)  # the full pipeline: what the workers run
            codec = pipeline.codec("intent_parser")
            r = redis.Redis.from_url(redis_url)
            stream = pipeline.routing.stream_for("intent_parser", cid)
            entries = r.xrange(stream)
            assert len(entries) == 1
            request = codec.decode(entries[0][1], stream)
            assert request.message.to_agent == "intent_parser"
            assert request.message.message_type == "user.request"
            assert request.message.reply_to == pipeline.config.keys.reply(str(cid))
            assert request.message.deadline is not None
            assert request.payload.text == "list files in configs"  # type: ignore[attr-defined]
            assert r.exists(pipeline.config.keys.trace(str(cid)))  # its trace was opened

            now = datetime.now(UTC)
            report = Report(
                correlation_id=str(cid),
                status="succeeded",
                request="list files in configs",
                requested_at=now,
                finished_at=now,
                total_ms=1.0,
            )
            reply = AgentMessage(
                message_id=uuid.uuid4(),
                correlation_id=cid,
                causation_id=request.message.message_id,
                from_agent="reporter",
                to_agent="client",
                message_type=Report.message_type,
                schema_version=Report.schema_version,
                payload=report.model_dump(mode="json"),
                timestamp=utcnow(),
            )
            assert request.message.reply_to is not None
            r.xadd(
                request.message.reply_to,
                pipeline.codec("reporter").encode(reply, request.message.reply_to),
            )

            second = proc.stdout.readline()
            assert second, proc.stderr.read() if proc.stderr else ""
            answer = json.loads(second)
            assert answer == {
                "type": "report.created",
                "status": "succeeded",
                "class": "Report",
                "agents": [],  # no agent class (nor the agents package) was imported
            }
            assert proc.wait(30) == 0
            r.close()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)


def test_entry_must_be_an_agent_type_and_schemas_allow_listed(config: Path) -> None:
    with pytest.raises(ConfigError, match="'nobody' is not an agent type"):
        Endpoint.load("nobody", config)
    for schema in ("agents.planner", "agents.planner:Planner", "os", "json:loads"):
        with pytest.raises(ImportNotAllowedError, match="refusing to import schema"):
            Endpoint.load("intent_parser", config, [schema])
    with pytest.raises(ConfigError, match="defines no payload model"):
        Endpoint.load("intent_parser", config, ["protocols.envelope"])
    endpoint = Endpoint.load("intent_parser", config, ["protocols.pipeline:Report"])
    assert "report.created" in endpoint.schemas
    assert endpoint.routing.agent_for("user.request") == "intent_parser"


def test_payload_validates_a_raw_dict_by_its_type(config: Path, redis_url: str) -> None:
    client = Client.connect(redis_url, entry="intent_parser", config=config)
    try:
        assert client.payload("user.request", {"text": "hi"}).text == "hi"  # type: ignore[attr-defined]
        with pytest.raises(ValidationError):
            client.payload("user.request", {"text": ""})
        with pytest.raises(RequestError, match="no payload model"):
            client.payload("plan.created", {})
        with pytest.raises(RequestError, match="needs a pipeline or an entry"):
            Client.connect(redis_url)
    finally:
        anyio.run(client.aclose)
