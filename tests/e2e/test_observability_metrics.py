"""Every metric name the shipped Grafana dashboard and Prometheus alert rules use is exported
by a real worker process: one worker of an LLM-calling agent type (the vendor's real SDK
against the local fake OpenAI server) serves /metrics on a free port; a request whose first
LLM call fails opens the call's circuit breaker, is retried, and succeeds after the breaker's
reset (failures, breaker state, LLM tokens and cost); an undecodable entry is dead-lettered.
Then the scrape is compared with the names read out of the dashboard's and rules' PromQL
(``up`` is the one name Prometheus itself makes, one per scraped target), and a real
Prometheus scraping the worker with the shipped rules loaded answers every dashboard query
with series of this agent type and evaluates every rule without error."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import urllib.parse
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml
from prometheus_client.parser import text_string_to_metric_families

from agent_runtime.config.pipeline import Pipeline
from agent_runtime.testing import WorkerProcess, wait_until
from protocols.core import UserRequest
from protocols.envelope import AgentMessage, utcnow
from tests.fixtures.promql import dashboard_expressions, metric_names, rule_expressions
from tests.llmfakes import openai_api

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
MADE_BY_PROMETHEUS = {"up"}
SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "gauge": ("",),
    "summary": ("", "_count", "_sum", "_created"),
    "info": ("_info",),
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def scrape(port: int) -> tuple[set[str], set[str]]:
    """(names with at least one sample, every name the exposition declares: a labelled
    family with no series yet still has its HELP and TYPE lines)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        families = list(text_string_to_metric_families(response.read().decode()))
    sampled = {s.name for family in families for s in family.samples}
    declared = {family.name + suffix for family in families for suffix in SUFFIXES[family.type]}
    return sampled, declared | sampled


def check_on_prometheus(tmp_path: Path, worker_port: int, agent: str) -> None:
    """A real Prometheus (Debian's, as promtool) scrapes the worker as the shipped scrape
    configs label it (job="agent-runtime", target label agent, honor_labels) with the shipped
    alert rules loaded: every rule evaluates without error, and every dashboard query, its
    variables set for this agent type, returns series labelled with it."""
    binary = shutil.which("prometheus")
    assert binary, "prometheus is missing: apt-get install prometheus (.ci/run installs it)"
    web = free_port()
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(ROOT / "deploy/prometheus/alerts.yml")],
        "scrape_configs": [
            {
                "job_name": "agent-runtime",
                "honor_labels": True,
                "static_configs": [
                    {"targets": [f"127.0.0.1:{worker_port}"], "labels": {"agent": agent}}
                ],
            }
        ],
    }
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    argv = [
        binary,
        f"--config.file={tmp_path / 'prometheus.yml'}",
        f"--storage.tsdb.path={tmp_path / 'tsdb'}",
        f"--web.listen-address=127.0.0.1:{web}",
    ]
    with (tmp_path / "prometheus.log").open("wb") as log:
        server = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=log)
        try:
            _check_queries(web, agent)
        finally:
            server.terminate()
            server.wait(30)


def _api(port: int, path: str, **params: str) -> Any:
    url = f"http://127.0.0.1:{port}/api/v1/{path}?{urllib.parse.urlencode(params)}"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            body = json.loads(response.read())
    except OSError:
        return None  # not listening yet
    assert body["status"] == "success", body
    return body["data"]


def _check_queries(port: int, agent: str) -> None:
    def series(expr: str) -> list[Any]:
        data = _api(port, "query", query=expr)
        return data["result"] if data else []

    wait_until(lambda: series(f'up{{job="agent-runtime",agent="{agent}"}} == 1'), 60, 0.2)
    dashboard = json.loads((ROOT / "deploy/grafana/dashboards/agent-runtime.json").read_text())
    queries = {
        where: expr.replace("$__rate_interval", "30s").replace("$agent", agent)
        for where, expr in dashboard_expressions(dashboard)
        if not where.startswith("variable")
    }
    quiet = {"Failed attempts and retries / s"}  # retried: none in this run; failed: counted
    for where, expr in queries.items():
        if where in quiet:
            continue
        # rate() and increase() need two scrapes of the series in their window
        found = wait_until(lambda e=expr: series(e), 30, 0.2, message=f"{where}: {expr}")
        assert all(s["metric"].get("agent") == agent for s in found), (where, found)

    def evaluated() -> list[Any] | None:
        data = _api(port, "rules")
        rules = [r for group in data["groups"] for r in group["rules"]] if data else []
        done = rules and all(r.get("lastEvaluation", "").startswith("2") for r in rules)
        return rules if done else None

    rules = wait_until(evaluated, 30, 0.2, message="every rule evaluated")
    assert len(rules) == 8 and {r["health"] for r in rules} == {"ok"}, rules


def shipped_names() -> dict[str, set[str]]:
    """Metric name -> where the dashboard or the rules use it."""
    dashboard = json.loads((ROOT / "deploy/grafana/dashboards/agent-runtime.json").read_text())
    rules = yaml.safe_load((ROOT / "deploy/prometheus/alerts.yml").read_text())
    used: dict[str, set[str]] = {}
    for where, expr in [*dashboard_expressions(dashboard), *rule_expressions(rules)]:
        for name in metric_names(expr):
            used.setdefault(name, set()).add(where)
    return used


def test_every_metric_of_the_dashboard_and_rules_is_on_a_live_worker(
    tmp_path: Path, redis_url: str, prefix: str, subprocess_env: dict[str, str]
) -> None:
    used = shipped_names()
    assert len(used) >= 10, "the PromQL reader found the names"
    fake = openai_api.OpenAIFake()
    fake.default = openai_api.json_answer({"text": "ok"})
    fake.script(openai_api.error(503, "server_error", "down"))  # the first call fails
    state = tmp_path / "state"
    state.mkdir()
    config = {
        "key_prefix": prefix,
        "allowed_modules": ["tests.fixtures"],
        "worker": {
            "block_ms": 200,
            "heartbeat_interval": 0.5,
            "retry_backoff": 0.05,
            "retry_backoff_max": 0.2,
            "max_deliveries": 50,
            "drain_timeout": 2,
        },
        "agents": {
            "caller": {
                "class": "tests.fixtures.llm_caller:LLMCaller",
                "config": {
                    "state_dir": str(state),
                    "llm": {
                        "provider": "openai",
                        "base_url": fake.root_url + "/v1",
                        "cache_ttl": 0,
                    },
                },
                "policies": {
                    "calls": {
                        "llm.openai": {
                            "retry": {"attempts": 1},
                            "breaker": {"fail_max": 1, "reset_timeout": 1},
                        }
                    }
                },
            }
        },
    }
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(config))
    pipeline = Pipeline.load(path)
    keys = pipeline.config.keys
    port = free_port()
    env = {
        **subprocess_env,
        "OPENAI_API_KEY": "sk-test",
        "AGENT_RUNTIME_METRICS_PORT": str(port),
        "AGENT_RUNTIME_METRICS_INTERVAL": "0.2",
    }
    r = redis.Redis.from_url(redis_url)
    with fake.running():
        worker = WorkerProcess(
            "caller",
            config=path,
            redis_url=redis_url,
            env=env,
            log_path=tmp_path / "caller.log",
        ).start()
        try:
            worker.wait_ready(r, keys, timeout=60)  # two cores shared by many processes
            cid = uuid.uuid4()
            message = AgentMessage(
                message_id=uuid.uuid4(),
                correlation_id=cid,
                from_agent="client",
                to_agent="caller",
                message_type="user.request",
                schema_version=1,
                payload=UserRequest(text="hello").model_dump(mode="json"),
                timestamp=utcnow(),
                reply_to=keys.reply(str(cid)),
            )
            inbox = keys.inbox("caller")
            r.xadd(inbox, pipeline.codec().encode(message, inbox))  # signed, as a client does
            r.xadd(keys.inbox("caller"), {b"m": b"not json"})  # dead-lettered: unsigned
            assert message.reply_to is not None
            wait_until(lambda: r.xlen(message.reply_to), 60, message="the reply")
            reply = json.loads(r.xrange(message.reply_to)[0][1][b"m"])["payload"]
            assert reply["ok"] is True, reply
            assert len(fake.requests) == 2, "one failed call, one after the breaker's reset"

            every_series = {
                "agent_runtime_messages_handled_total",
                "agent_runtime_messages_failed_total",
                "agent_runtime_handle_duration_seconds_bucket",
                "agent_runtime_messages_dead_lettered_total",
                "agent_runtime_in_flight_messages",
                "agent_runtime_consumer_group_lag_messages",
                "agent_runtime_pending_messages",
                "agent_runtime_oldest_pending_age_seconds",
                "agent_runtime_breaker_state",
                "agent_runtime_llm_tokens_total",
                "agent_runtime_llm_cost_usd_total",
                "agent_runtime_llm_calls_total",
            }

            def complete() -> tuple[set[str], set[str]] | None:
                got = scrape(port)
                return got if every_series <= got[0] else None

            try:
                sampled, declared = wait_until(complete, 60, message="every kind of series")
            except AssertionError as exc:
                raise AssertionError(f"{exc}: missing {every_series - scrape(port)[0]}") from exc
            check_on_prometheus(tmp_path, port, "caller")
        finally:
            worker.stop(15)
            r.close()
    missing = {
        name: sorted(where)
        for name, where in used.items()
        if name not in declared and name not in MADE_BY_PROMETHEUS
    }
    assert missing == {}, "used by the dashboard or rules, not exported by a worker"
    # every name used that can have a series after this run has one (not just HELP/TYPE)
    assert every_series <= set(used) | {"agent_runtime_llm_calls_total"}
    assert set(used) - sampled - MADE_BY_PROMETHEUS <= {
        "agent_runtime_messages_retried_total",  # only when a handler raises Retry
        "agent_runtime_deleted_pending_entries_total",  # only when trimming destroyed one
    }
