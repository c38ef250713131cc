"""Hostile entries XADDed into the inboxes of real worker processes of every built-in agent
type while good requests flow. Asserted: no worker exits; every hostile entry is acknowledged,
and is dead-lettered with a reason (the reason the codec gives, when the codec rejects it) or
handled; every good request is answered with a succeeded report.

Entries come from hypothesis (tests/hostile/strategies.py): each example draws
``HOSTILE_BATCH`` entries per agent type; ``HOSTILE_EXAMPLES`` examples run against the same
fleet; ``HOSTILE_SEED`` fixes what is drawn (reproduce a failure by re-running with its seed).
Defaults keep the test near a minute on a CI machine.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis
import yaml
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

from agent_runtime.codec import Codec
from agent_runtime.config.pipeline import Pipeline
from agent_runtime.errors import DecodeError
from agent_runtime.testing import WorkerProcess, wait_until
from agent_runtime.transport.embedded import EmbeddedServer
from protocols.core import UserRequest
from protocols.envelope import AgentMessage
from protocols.pipeline import Report
from tests.fixtures.approvals import key_pair
from tests.hostile.strategies import ALLOWED_REPLY, Fields, hostile_entries

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

SEED = int(os.environ.get("HOSTILE_SEED", "20261201"))
EXAMPLES = int(os.environ.get("HOSTILE_EXAMPLES", "20"))
BATCH = int(os.environ.get("HOSTILE_BATCH", "8"))
GOOD_TEXT = "list files in data and read data/notes.txt"
FAST = {
    "block_ms": 200,
    "heartbeat_interval": 0.5,
    "reclaim_interval": 0.5,
    "retry_backoff": 0.05,
    "retry_backoff_max": 0.2,
    "max_deliveries": 2,
    "handler_timeout": 10,
    "drain_timeout": 2,
}


def write_config(root: Path) -> Path:
    sandbox = root / "sandbox"
    (sandbox / "data").mkdir(parents=True)
    (sandbox / "data" / "notes.txt").write_text("alpha beta gamma\ndelta\n")
    files = {
        "file_list": {"class": "agents.executors.files:FileList"},
        "file_read": {"class": "agents.executors.files:FileRead"},
    }
    config = {
        "key_prefix": "h" + uuid.uuid4().hex[:8],
        "worker": FAST,
        "reply_streams": [ALLOWED_REPLY],
        "agents": {
            "intent_parser": {"class": "agents.intent_parser:IntentParser"},
            "planner": {"class": "agents.planner:Planner"},
            "safety_checker": {
                "class": "agents.safety_checker:SafetyChecker",
                "config": {"policy": {"shell": {"commands": ["echo"]}, "budget_usd": 1.0}},
            },
            "router": {
                "class": "agents.router:Router",
                "config": {"timer_poll": 0.5, "executors": {"executor": list(files)}},
            },
            "executor": {
                "class": "agents.executor:Executor",
                "config": {"sandbox": str(sandbox), "tools": files},
            },
            "reporter": {"class": "agents.reporter:Reporter"},
        },
    }
    path = root / "pipeline.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@dataclass
class Injected:
    agent: str
    label: str
    entry_id: bytes
    expected: str | None  # the codec's reason when it rejects the entry, else None
    message_id: str | None  # when it decodes


@dataclass
class Fleet:
    pipeline: Pipeline
    r: redis.Redis
    workers: dict[str, WorkerProcess]
    root: Path
    codec: Codec = field(init=False)

    def __post_init__(self) -> None:
        self.keys = self.pipeline.config.keys
        self.codec = Codec(  # signed like the workers: the checks after the MAC are under test
            self.pipeline.schemas,
            keyring=self.pipeline.keyring(),
            max_bytes=self.pipeline.config.worker.max_message_bytes,
            keys=self.keys,
            reply_streams=self.pipeline.config.reply_streams,
        )

    def good_request(self) -> AgentMessage:
        cid = uuid.uuid4()
        message = AgentMessage(
            message_id=uuid.uuid4(),
            correlation_id=cid,
            from_agent="client",
            to_agent="intent_parser",
            message_type="user.request",
            schema_version=1,
            payload=UserRequest(text=GOOD_TEXT).model_dump(mode="json"),
            timestamp=datetime.now(UTC),
            deadline=datetime.now(UTC) + timedelta(seconds=240),
            reply_to=self.keys.reply(str(cid)),
        )
        inbox = self.keys.inbox("intent_parser")
        self.r.xadd(inbox, self.codec.encode(message, inbox))
        return message

    def inject(self, agent: str, label: str, fields: Fields) -> Injected:
        inbox = self.keys.inbox(agent)
        if b"m" in fields:  # signed with the fleet's key: an insider's bytes, past the MAC
            fields = self.codec.sign_fields(fields, inbox)
        try:
            decoded = self.codec.decode(fields, inbox)
            expected, message_id = None, decoded.message.id_text
        except DecodeError as exc:
            expected, message_id = exc.reason, None
        entry_id = self.r.xadd(inbox, fields)
        return Injected(agent, label, entry_id, expected, message_id)

    def report(self, message: AgentMessage) -> Report | None:
        assert message.reply_to is not None
        for _id, fields in self.r.xrange(message.reply_to):
            payload = json.loads(fields[b"m"])["payload"]
            if "status" in payload and "steps" in payload:
                return Report.model_validate(payload)
        return None

    def acked(self, item: Injected) -> bool:
        inbox = self.keys.inbox(item.agent)
        group = self.r.xinfo_groups(inbox)[0]
        delivered = _id_key(group["last-delivered-id"]) >= _id_key(item.entry_id)
        pending = self.r.xpending_range(inbox, item.agent, item.entry_id, item.entry_id, 1)
        return delivered and not pending

    def dead_letters(self, agent: str) -> list[dict[bytes, bytes]]:
        return [fields for _id, fields in self.r.xrange(self.keys.dlq(agent))]

    def done(self, agent: str, message_ids: list[str]) -> list[bool]:
        day = self.pipeline.worker_settings(agent).done_ttl
        bucket = int(datetime.now(UTC).timestamp() // day)
        keys = [self.keys.done(agent, bucket - 1), self.keys.done(agent, bucket)]
        marks = [self.r.smismember(key, message_ids) for key in keys]
        return [bool(a or b) for a, b in zip(*marks, strict=True)]

    def __repr__(self) -> str:  # hypothesis prints the arguments of a failing example
        return f"Fleet({self.keys.prefix}, logs in {self.root})"

    def exits(self) -> dict[str, int | None]:
        return {name: w.process.poll() for name, w in self.workers.items() if not w.alive()}


def _id_key(entry_id: bytes | str) -> tuple[int, int]:
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    ms, _, seq = text.partition("-")
    return int(ms), int(seq)


@pytest.fixture(scope="module")
def fleet(
    redis_server: EmbeddedServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Fleet]:
    root = tmp_path_factory.mktemp("hostile")
    config = write_config(root)
    pipeline = Pipeline.load(config)
    env = dict(os.environ)
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])
    env.update(key_pair())
    env.pop("AGENT_RUNTIME_REDIS_URL", None)
    r = redis.Redis.from_url(redis_server.url)
    workers = {
        name: WorkerProcess(
            name, config=config, redis_url=redis_server.url, env=env, log_path=root / f"{name}.log"
        ).start()
        for name in pipeline.agents
    }
    for worker in workers.values():
        worker.wait_ready(r, pipeline.config.keys, timeout=60)
    running = Fleet(pipeline, r, workers, root)
    yield running
    codes = {name: worker.stop(15) for name, worker in workers.items()}
    r.close()
    assert codes == dict.fromkeys(workers, 0), f"worker exit codes on SIGTERM: {codes}"


AGENTS = ["intent_parser", "planner", "safety_checker", "router", "executor", "reporter"]


def batches(fleet_pipeline: Pipeline) -> st.SearchStrategy[dict[str, list[tuple[str, Fields]]]]:
    keys = fleet_pipeline.config.keys
    cap = fleet_pipeline.config.worker.max_message_bytes
    types = fleet_pipeline.schemas.message_types()
    return st.fixed_dictionaries(
        {
            agent: st.lists(
                hostile_entries(agent, keys, cap=cap, agents=AGENTS, message_types=types),
                min_size=BATCH,
                max_size=BATCH,
            )
            for agent in AGENTS
        }
    )


@seed(SEED)
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    phases=[Phase.generate],  # no shrinking of an end-to-end run; the seed reproduces it
    suppress_health_check=list(HealthCheck),
)
@given(data=st.data())
def test_hostile_entries_never_stop_an_agent_type(fleet: Fleet, data: st.DataObject) -> None:
    drawn = data.draw(batches(fleet.pipeline), label="hostile entries")
    good = [fleet.good_request()]
    injected: list[Injected] = []
    for round_ in range(BATCH):  # interleaved: every inbox gets one, then a good request
        for agent in AGENTS:
            label, fields = drawn[agent][round_]
            injected.append(fleet.inject(agent, label, fields))
        good.append(fleet.good_request())

    wait_until(
        lambda: all(fleet.acked(item) for item in injected) or fleet.exits(),
        120,
        message="every hostile entry acknowledged",
    )
    assert fleet.exits() == {}, "a worker exited"
    check_fates(fleet, injected)
    wait_until(
        lambda: all(fleet.report(m) for m in good) or fleet.exits(),
        120,
        message="every good request answered",
    )
    assert fleet.exits() == {}, "a worker exited"
    statuses = [report.status for m in good if (report := fleet.report(m)) is not None]
    assert statuses == ["succeeded"] * len(good)


def check_fates(fleet: Fleet, injected: list[Injected]) -> None:
    """Per agent type: exactly one dead letter per rejected entry, with the codec's reason
    when the codec rejects it (else any reason: expired, misrouted, max_deliveries, ...); every
    other entry handled (its message id marked done, or acked as a copy of another entry with
    the same message id)."""
    for agent in AGENTS:
        mine = {item.entry_id: item for item in injected if item.agent == agent}
        letters = [f for f in fleet.dead_letters(agent) if f[b"entry_id"] in mine]
        dead = {f[b"entry_id"]: f for f in letters}
        assert len(dead) == len(letters), f"{agent}: an entry was dead-lettered twice"
        rejected = [item for item in mine.values() if item.expected is not None]
        assert {item.entry_id for item in rejected} <= set(dead), [
            item.label for item in rejected if item.entry_id not in dead
        ]
        for entry_id, letter in dead.items():
            item = mine[entry_id]
            assert letter[b"reason"], item.label
            assert letter[b"stream"] == fleet.keys.inbox(agent).encode()
            if item.expected is not None:
                assert letter[b"reason"].decode() == item.expected, item.label
        handled = [item for item in mine.values() if item.entry_id not in dead]
        ids = [item.message_id for item in handled]
        copies = {m for m in ids if sum(i.message_id == m for i in injected) > 1}
        unique = [m for m in ids if m is not None and m not in copies]
        marks = dict(zip(unique, fleet.done(agent, unique) if unique else [], strict=True))
        unmarked = [i.label for i in handled if i.message_id in marks and not marks[i.message_id]]
        assert not unmarked, f"{agent}: handled without a done mark: {unmarked}"
        assert len(dead) + len(handled) == len(mine) == BATCH
