"""Step approvals piece by piece (agent_runtime/approval.py, agents/approvals.py): each bound
value on its own, expiry on the runtime's (server) clock, one inbox entry per approval, the
sealed pending records and the policy re-run on approve, the key pair kept in the runtime
home, and the environment the supervisor gives each agent type."""

from __future__ import annotations

import json
import stat
import uuid
from pathlib import Path
from typing import Any

import anyio
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent_runtime.approval import (
    KEY_FILE,
    LEGACY_KEY_ENV,
    PRIVATE_KEY_ENV,
    PUBLIC_KEY_ENV,
    agent_env,
    ensure_pair,
    signer,
    verifier,
)
from agent_runtime.errors import ConfigError
from agent_runtime.testing import AgentHarness
from agent_runtime.transport.memory import MemoryTransport
from agent_runtime.worker.supervisor import Supervisor
from agents import approvals
from agents.executor import Executor
from agents.safety_checker import SafetyChecker
from protocols.envelope import AgentMessage, utcnow
from protocols.pipeline import ApprovalDecision, Plan, PlanStep, RequestInfo, SafetyVerdict, Task
from tests.fixtures.approvals import key_pair, signed_task, with_id

STEP = PlanStep(id="s1", tool="file_read", args={"path": "a.txt"})


@pytest.fixture(autouse=True)
def approval_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in key_pair().items():
        monkeypatch.setenv(name, value)


class Clock:
    def __init__(self, now: float) -> None:
        self.value = now

    async def now(self) -> float:
        return self.value


def executor(tmp_path: Path, state: Any = None) -> AgentHarness:
    (tmp_path / "a.txt").write_text("hello")
    kwargs = {"state": state} if state is not None else {}
    return AgentHarness(Executor, config={"sandbox": str(tmp_path)}, **kwargs)


def run(
    harness: AgentHarness, task: Task, message: AgentMessage, entry: bytes = b"1-0"
) -> dict[str, Any]:
    async def go() -> Any:
        from agent_runtime.worker.delivery import MessageContext

        ctx = MessageContext(
            agent="executor",
            message=message,
            payload=task,
            stream="test:inbox",
            entry_id=entry,
            delivery_count=1,
            routing=harness.routing,
            log=harness.agent.runtime.log,
        )
        await harness.agent.handle(ctx)
        return ctx.outputs

    (out,) = anyio.run(go)
    return dict(out.message.payload)


def task_and_message(harness: AgentHarness, **options: Any) -> tuple[Task, AgentMessage]:
    cid = uuid.uuid4()
    task, message_id = signed_task(STEP, cid, **options)
    return task, harness.message_for(task, correlation_id=cid, message_id=message_id)


# ------------------------------------------------------------------ each bound value
def test_each_bound_value_on_its_own_is_refused(tmp_path: Path) -> None:
    harness = executor(tmp_path)
    task, message = task_and_message(harness)
    assert task.approval is not None
    cases = {
        "another idempotency key": (task.model_copy(update={"idempotency_key": "x:s1"}), message),
        "another task message": (task, with_id(message, uuid.uuid4())),
        "another step": (
            task.model_copy(update={"step": STEP.model_copy(update={"id": "s2"})}),
            message,
        ),
        "other arguments": (
            task.model_copy(update={"step": STEP.model_copy(update={"args": {"path": "b"}})}),
            message,
        ),
    }
    for reason, (variant, envelope) in cases.items():
        result = run(harness, variant, envelope)
        assert result["status"] == "refused" and reason in result["error"]
    # the bound values copied into the approval too: the signature still decides
    approval = task.approval.model_copy(update={"approver": "human:mallory"})
    result = run(harness, task.model_copy(update={"approval": approval}), message)
    assert result["error"] == "refused: the approval signature does not match this task"
    other_cid = harness.message_for(task, message_id=message.message_id)  # another request
    assert "does not match" in run(harness, task, other_cid)["error"]
    assert run(harness, task, message)["status"] == "succeeded"


def test_expiry_is_judged_on_the_runtime_clock(tmp_path: Path) -> None:
    harness = executor(tmp_path)
    task, message = task_and_message(harness, valid_for=30)
    assert task.approval is not None
    harness.agent.runtime.clock = Clock(task.approval.expires_at + 0.5)  # a server 0.5 s on
    result = run(harness, task, message)
    assert result["status"] == "refused" and "expired 0.5s ago" in result["error"]
    harness.agent.runtime.clock = Clock(task.approval.expires_at - 1)
    assert run(harness, task, message)["status"] == "succeeded"


def test_one_inbox_entry_per_approval(tmp_path: Path) -> None:
    harness = executor(tmp_path, state=MemoryTransport().state)
    task, message = task_and_message(harness)
    assert run(harness, task, message, entry=b"5-0")["status"] == "succeeded"
    # the same entry again (a retry, a reclaim after a crash) may use it
    assert run(harness, task, message, entry=b"5-0")["status"] == "succeeded"
    result = run(harness, task, message, entry=b"9-0")  # the same bytes, XADDed again
    assert result["status"] == "refused" and "already used" in result["error"]
    assert "5-0" in result["error"]


# ------------------------------------------------------------------ the safety checker
def plan(*steps: PlanStep) -> Plan:
    return Plan(
        request=RequestInfo(text="t", requested_at=utcnow()),
        steps=list(steps),
        cost_estimate_usd=0.0,
    )


def checker(state: Any, **policy: Any) -> AgentHarness:
    rules = {"approval_required": ["shell"], "shell": {"commands": ["date"]}, **policy}
    return AgentHarness(SafetyChecker, config={"policy": rules}, state=state)


def test_approve_signs_only_a_step_that_still_passes_the_policy() -> None:
    state = MemoryTransport().state
    step = PlanStep(id="s1", tool="shell", args={"argv": ["date"]})
    first = checker(state)
    message = first.message_for(plan(step))
    (out,) = anyio.run(lambda: first.handle(plan(step), message=message))
    assert SafetyVerdict.model_validate(out.message.payload).awaiting_approval == ["s1"]
    stricter = checker(state, shell={"commands": ["uptime"]})  # the policy changed since
    decision = ApprovalDecision(approved=True, approver="ann")
    decided = stricter.message_for(decision, correlation_id=message.correlation_id)
    (out,) = anyio.run(lambda: stricter.handle(decision, message=decided))
    payload = out.message.payload
    assert payload["approvals"] == [] and payload["rejected"] == ["s1"]
    assert "fails the policy now" in payload["comment"]


def test_a_pending_record_moved_or_damaged_is_not_signed() -> None:
    state = MemoryTransport().state
    steps = [PlanStep(id=i, tool="shell", args={"argv": ["date"]}) for i in ("s1", "s2")]
    harness = checker(state)
    message = harness.message_for(plan(*steps))
    anyio.run(lambda: harness.handle(plan(*steps), message=message))
    cid = str(message.correlation_id)
    key = harness.agent.runtime.keys.request_state(cid, "approval")
    records = anyio.run(state.hash_get_all, key)
    moved = {"s2": records["s1"], "s1": b"[" * 100 + b"]" * 100}  # s1's record under s2
    anyio.run(lambda: state.hash_put(key, moved, 60))
    decision = ApprovalDecision(approved=True, approver="ann")
    decided = harness.message_for(decision, correlation_id=message.correlation_id)
    (out,) = anyio.run(lambda: harness.handle(decision, message=decided))
    payload = out.message.payload
    assert payload["approvals"] == [] and payload["rejected"] == ["s1", "s2"]
    assert "too large or too deep" in payload["comment"]
    assert "belongs to another step" in payload["comment"]


# ------------------------------------------------------------------ keys
def test_the_pair_is_kept_in_the_runtime_home(tmp_path: Path) -> None:
    first = ensure_pair(tmp_path, {})
    path = tmp_path / KEY_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert ensure_pair(tmp_path, {}) == first  # the next run uses the same pair
    given = ensure_pair(tmp_path, dict(key_pair()))
    assert given[PRIVATE_KEY_ENV] == key_pair()[PRIVATE_KEY_ENV]  # the environment's wins
    with pytest.raises(ConfigError, match="set both"):
        ensure_pair(tmp_path, {PUBLIC_KEY_ENV: first[PUBLIC_KEY_ENV]})
    path.write_text("{damaged")
    assert ensure_pair(tmp_path, {}) != first  # a damaged file is replaced


def test_keys_are_read_as_hex_or_pem_and_refused_with_one_line() -> None:
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    made = signer({PRIVATE_KEY_ENV: pem})
    assert made.key_id in verifier({PUBLIC_KEY_ENV: public}).keys
    both = verifier({PUBLIC_KEY_ENV: f"{key_pair()[PUBLIC_KEY_ENV]},{public}"})
    assert len(both.keys) == 2  # a rotation: old and new verify
    with pytest.raises(ConfigError, match="not an Ed25519 private key"):
        signer({PRIVATE_KEY_ENV: "00" * 31})
    with pytest.raises(ConfigError, match=f"{LEGACY_KEY_ENV}.*not used"):
        signer({LEGACY_KEY_ENV: "an-old-shared-hmac-key"})


# ------------------------------------------------------------------ secrets per agent type
SIX = """\
key_prefix: unit
agents:
  intent_parser: {class: "agents.intent_parser:IntentParser"}
  planner: {class: "agents.planner:Planner"}
  safety_checker:
    class: agents.safety_checker:SafetyChecker
    config: {policy: {}}
  router: {class: "agents.router:Router"}
  executor:
    class: agents.executor:Executor
    secrets: [AGENT_RUNTIME_APPROVAL_PUBLIC_KEY, PAYMENTS_TOKEN]
  reporter: {class: "agents.reporter:Reporter"}
"""


def test_the_supervisor_gives_each_agent_type_only_the_secrets_it_names(tmp_path: Path) -> None:
    config = tmp_path / "pipeline.yaml"
    config.write_text(SIX)
    env = {
        **key_pair(),
        LEGACY_KEY_ENV: "old",
        "AGENT_RUNTIME_BACKUP_KEY": "x",
        "AGENT_RUNTIME_SIGNING_KEY": "shared-envelope-key",
        "AGENT_RUNTIME_SIGNING_KEYS_FILE": "/run/keys",
        "AGENT_RUNTIME_VERIFY_KEYS": "k1,k2",
        "AGENT_RUNTIME_REDIS_TLS_KEY_FILE": "/run/tls/client.key",
        "PAYMENTS_TOKEN": "pay",
        "HOME": "/root",
    }
    sup = Supervisor(config, "unix:///x", env=env)
    given = {c.agent: sup._child_env(c) for c in sup._children}
    restricted = {PRIVATE_KEY_ENV, PUBLIC_KEY_ENV, LEGACY_KEY_ENV, "AGENT_RUNTIME_BACKUP_KEY"}
    held = {agent: sorted((restricted | {"PAYMENTS_TOKEN"}) & set(e)) for agent, e in given.items()}
    assert held == {
        "intent_parser": [],
        "planner": [],
        "safety_checker": [PRIVATE_KEY_ENV],  # the class's own list: no secrets: entry
        "router": [],
        "executor": [PUBLIC_KEY_ENV, "PAYMENTS_TOKEN"],
        "reporter": [],
    }
    shared = (
        "AGENT_RUNTIME_SIGNING_KEY",
        "AGENT_RUNTIME_SIGNING_KEYS_FILE",
        "AGENT_RUNTIME_VERIFY_KEYS",
        "AGENT_RUNTIME_REDIS_TLS_KEY_FILE",
    )
    assert all(e[name] == env[name] for e in given.values() for name in shared)
    assert all(e["HOME"] == "/root" for e in given.values())


def test_secrets_lists_name_environment_variables(tmp_path: Path) -> None:
    from agent_runtime.config.pipeline import Pipeline

    config = tmp_path / "pipeline.yaml"
    config.write_text(SIX.replace("PAYMENTS_TOKEN]", "'BAD NAME']"))
    with pytest.raises(ConfigError, match="not an environment variable name"):
        Pipeline.load(config)


def test_agent_env_keeps_what_is_not_restricted() -> None:
    env = {"PATH": "/bin", "AGENT_RUNTIME_X_KEY_ID": "k", "OPENAI_API_KEY": "sk"}
    assert agent_env(env, [], []) == {"PATH": "/bin", "OPENAI_API_KEY": "sk"}
    assert agent_env(env, [], ["OPENAI_API_KEY"]) == {"PATH": "/bin"}
    assert agent_env(env, ["OPENAI_API_KEY"], ["OPENAI_API_KEY"]) == {
        "PATH": "/bin",
        "OPENAI_API_KEY": "sk",
    }


def test_records_and_approvals_never_validate_each_other() -> None:
    """Domain separation: a seal is no approval signature and vice versa."""
    key = signer(key_pair())
    cid = str(uuid.uuid4())
    record = json.loads(approvals.sealed_record(key, cid, STEP, 123.0))
    grant = approvals.grant_for(cid, STEP, "policy", 123.0, key="k", message="m")
    assert not verifier(key_pair()).verify(grant, key.key_id, record["seal"])
    assert not key.unsealed([cid, {"step": record["step"], "expires_at": 123.0}], key.sign(grant))
