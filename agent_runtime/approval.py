"""Signed step approvals: the safety checker alone signs, executors only verify.

An approval is an Ed25519 signature (the ``cryptography`` package) over the canonical JSON of
what it allows (:func:`material`): the correlation id, the step id, the tool, the SHA-256 of
the canonical JSON of the step's exact arguments, the task's idempotency key, the message id
of the task envelope that will carry it, the approver, the signing key's id and an expiry
(epoch seconds on the Redis server's clock). The safety checker holds the private key
(``AGENT_RUNTIME_APPROVAL_PRIVATE_KEY``); executors hold the public key(s)
(``AGENT_RUNTIME_APPROVAL_PUBLIC_KEY``, comma-separated during a rotation); no other process
holds either: the supervisor gives each agent type only the secrets it names
(:func:`agent_env`). Whoever lacks the private key cannot make an approval an executor
accepts. Keys are 32 raw bytes in hex (or a PEM block). ``run``, ``up`` and the test helpers
keep a generated pair in the runtime home when the environment has none (:func:`child_env`).

Pending human approvals of a request live in the hash ``keys.request_state(cid, "approval")``
(field: step id, value: JSON of the step, its expiry and the safety checker's seal over both)
with a TTL, written by the safety checker and cleared by the router as steps are decided.
docs/security.md ("Approvals", "Who holds which key") has the whole design.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
import uuid
from collections.abc import Iterable, Mapping, MutableMapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent_runtime.errors import ConfigError, RequestError
from agent_runtime.limits import too_deep
from agent_runtime.schedule import Scheduled
from agent_runtime.transport.embedded import runtime_dir
from agent_runtime.transport.keys import Keys

# cryptography is imported in the functions that use it: its bindings cost 107 M instructions
# at import, and every worker imports this module (each agent class is imported to check the
# config) while 5 of the default pipeline's 8 never sign or verify (docs/benchmarks.md
# "Issue 17: start time")
if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (
        Ed25519PrivateKey,
        Ed25519PublicKey,
    )

    from agent_runtime.client import Client
    from agent_runtime.transport.base import State

PRIVATE_KEY_ENV = "AGENT_RUNTIME_APPROVAL_PRIVATE_KEY"
PUBLIC_KEY_ENV = "AGENT_RUNTIME_APPROVAL_PUBLIC_KEY"
#: The shared HMAC key of earlier versions: no longer read, never passed to a worker.
LEGACY_KEY_ENV = "AGENT_RUNTIME_APPROVAL_KEY"
#: Where ``up``/``run``/tests keep a generated key pair (in the runtime home, mode 0600).
KEY_FILE = "approval-keys.json"
APPROVAL_STATE = "approval"
#: The message type of a human decision (``agent-runtime approve/reject``); its payload model
#: is the pipeline's (the default pipeline: protocols.pipeline.ApprovalDecision).
DECISION_TYPE = "approval.decision"
#: Domain separation: an approval signature is never valid as a pending-record seal.
APPROVAL_DOMAIN = b"agent-runtime step approval v1\n"
SEAL_DOMAIN = b"agent-runtime pending approval v1\n"
#: Secrets every worker needs: the envelope signing keys (``AGENT_RUNTIME_SIGNING_KEY``,
#: ``..._KEYS_FILE``, ``AGENT_RUNTIME_VERIFY_KEYS``) and the Redis TLS client files
#: (``AGENT_RUNTIME_REDIS_TLS_KEY_FILE``, ...); every other ``AGENT_RUNTIME_*KEY*`` variable
#: goes only to the agent types that name it.
SHARED_SECRET_PREFIXES = (
    "AGENT_RUNTIME_SIGNING_KEY",
    "AGENT_RUNTIME_VERIFY_KEYS",
    "AGENT_RUNTIME_REDIS_TLS_",
)
_RUNTIME_SECRET = re.compile(r"^AGENT_RUNTIME_\w*KEY\w*$")
_HEX_KEY = re.compile(r"^[0-9a-fA-F]{64}$")
#: The router's approval timer (its schedule lists the requests waiting for a human).
TIMER_TYPE = "approval.timer"
#: A pending-approval record longer than this is not parsed.
MAX_RECORD_BYTES = 256 * 1024
#: Requests listed at most by :func:`waiting_approvals` (earliest expiry first).
LIST_LIMIT = 1_000


def canonical(value: Any) -> bytes:
    """Canonical JSON bytes: sorted keys, no whitespace, UTF-8."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode()


def args_digest(args: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of the canonical JSON of a step's arguments."""
    return hashlib.sha256(canonical(dict(args))).hexdigest()


def key_id(public: Ed25519PublicKey) -> str:
    """16 hex digits naming a public key (approvals say which key signed them)."""
    from cryptography.hazmat.primitives import serialization

    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


@dataclass(frozen=True)
class Grant:
    """What one approval allows: exactly this task of this request, until ``expires_at``."""

    correlation_id: str
    step_id: str
    tool: str
    args_sha256: str
    idempotency_key: str
    message_id: str
    approver: str
    expires_at: float  # epoch seconds, Redis server clock

    def material(self, kid: str) -> bytes:
        fields = {**self.__dict__, "expires_at": round(self.expires_at, 3), "key_id": kid}
        return APPROVAL_DOMAIN + canonical(fields)


class ApprovalSigner:
    """The safety checker's private key: signs grants and seals its own pending records."""

    def __init__(self, private: Ed25519PrivateKey) -> None:
        self._private = private
        self.public = private.public_key()
        self.key_id = key_id(self.public)

    def sign(self, grant: Grant) -> str:
        return self._private.sign(grant.material(self.key_id)).hex()

    def seal(self, record: Any) -> str:
        return self._private.sign(SEAL_DOMAIN + canonical(record)).hex()

    def unsealed(self, record: Any, seal: object) -> bool:
        """True when ``seal`` is this key's seal over exactly ``record``."""
        try:
            data = SEAL_DOMAIN + canonical(record)
        except (TypeError, ValueError):  # NaN or a non-JSON value: never sealed
            return False
        return _valid(self.public, data, seal)


class ApprovalVerifier:
    """An executor's public key(s), by key id."""

    def __init__(self, keys: Iterable[Ed25519PublicKey]) -> None:
        self.keys = {key_id(k): k for k in keys}

    def verify(self, grant: Grant, kid: str, signature: str) -> bool:
        public = self.keys.get(kid)
        try:
            data = grant.material(kid)
        except (TypeError, ValueError):  # NaN, infinities: never signed
            return False
        return public is not None and _valid(public, data, signature)


def _valid(public: Ed25519PublicKey, data: bytes, signature: object) -> bool:
    from cryptography.exceptions import InvalidSignature

    if not isinstance(signature, str) or len(signature) != 128:
        return False
    try:
        public.verify(bytes.fromhex(signature), data)
    except (InvalidSignature, ValueError):
        return False
    return True


# ---------------------------------------------------------------------- keys
def signer(env: Mapping[str, str] | None = None) -> ApprovalSigner:
    """The private key from the environment, or a ConfigError saying how to set one."""
    value = (os.environ if env is None else env).get(PRIVATE_KEY_ENV, "").strip()
    if not value:
        raise ConfigError(
            f"{PRIVATE_KEY_ENV} is not set: only the safety checker signs approvals, with an "
            "Ed25519 private key ('agent-runtime run'/'up' generate a pair in the runtime "
            f"home; see docs/security.md){_legacy_hint(env)}"
        )
    return ApprovalSigner(_private(value))


def verifier(env: Mapping[str, str] | None = None) -> ApprovalVerifier:
    """The public key(s) from the environment, or a ConfigError saying how to set them."""
    value = (os.environ if env is None else env).get(PUBLIC_KEY_ENV, "").strip()
    items = [v.strip() for v in value.split(",") if v.strip()]
    if not items:
        raise ConfigError(
            f"{PUBLIC_KEY_ENV} is not set: executors verify approvals with the safety "
            "checker's Ed25519 public key ('agent-runtime run'/'up' generate a pair in the "
            f"runtime home; see docs/security.md){_legacy_hint(env)}"
        )
    return ApprovalVerifier(_public(v) for v in items)


def _legacy_hint(env: Mapping[str, str] | None) -> str:
    if (os.environ if env is None else env).get(LEGACY_KEY_ENV):
        return f" ({LEGACY_KEY_ENV}, the shared HMAC key of earlier versions, is not used)"
    return ""


def _private(value: str) -> Ed25519PrivateKey:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    try:
        if _HEX_KEY.match(value):
            return Ed25519PrivateKey.from_private_bytes(bytes.fromhex(value))
        key = serialization.load_pem_private_key(value.encode(), password=None)
    except ValueError as exc:
        raise ConfigError(f"{PRIVATE_KEY_ENV} is not an Ed25519 private key: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"{PRIVATE_KEY_ENV} is not an Ed25519 private key")
    return key


def _public(value: str) -> Ed25519PublicKey:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        if _HEX_KEY.match(value):
            return Ed25519PublicKey.from_public_bytes(bytes.fromhex(value))
        key = serialization.load_pem_public_key(value.encode())
    except ValueError as exc:
        raise ConfigError(f"{PUBLIC_KEY_ENV} holds no Ed25519 public key: {exc}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise ConfigError(f"{PUBLIC_KEY_ENV} holds no Ed25519 public key")
    return key


def generate_pair() -> dict[str, str]:
    """A fresh key pair as environment values (hex of the raw 32-byte keys)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    private = Ed25519PrivateKey.generate()
    raw = private.private_bytes(
        serialization.Encoding.Raw,
        serialization.PrivateFormat.Raw,
        serialization.NoEncryption(),
    )
    public = private.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    return {PRIVATE_KEY_ENV: raw.hex(), PUBLIC_KEY_ENV: public.hex()}


def ensure_pair(home: Path, env: MutableMapping[str, str]) -> MutableMapping[str, str]:
    """Give ``env`` the approval key pair unless it has one: the pair kept in ``home``
    (``approval-keys.json``, 0600), generated on first use."""
    from cryptography.hazmat.primitives import serialization

    if env.get(PRIVATE_KEY_ENV) and env.get(PUBLIC_KEY_ENV):
        return env
    if env.get(PRIVATE_KEY_ENV) and not env.get(PUBLIC_KEY_ENV):
        public = signer(env).public.public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        env[PUBLIC_KEY_ENV] = public.hex()
        return env
    if env.get(PUBLIC_KEY_ENV):  # a public key alone: the pair in the home would not match
        raise ConfigError(
            f"{PUBLIC_KEY_ENV} is set but {PRIVATE_KEY_ENV} is not: set both (or neither, "
            "and a pair is generated in the runtime home)"
        )
    path = home / KEY_FILE
    try:
        pair = json.loads(path.read_text())
        signer(pair)  # a damaged file is replaced below
        verifier(pair)
    except (OSError, ValueError, ConfigError):
        pair = generate_pair()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump(pair, out)
    env.update(pair)
    return env


def child_env(home: Path | None = None) -> dict[str, str]:
    """The approval keys for a supervisor's children: ours, else the runtime home's pair.
    The supervisor passes each to the agent types that name it only (:func:`agent_env`)."""
    env = ensure_pair(runtime_dir() if home is None else home, dict(os.environ))
    return {PRIVATE_KEY_ENV: env[PRIVATE_KEY_ENV], PUBLIC_KEY_ENV: env[PUBLIC_KEY_ENV]}


# ---------------------------------------------------------------------- secrets per agent
def restricted(name: str, named: Iterable[str] = ()) -> bool:
    """Is ``name`` a secret that only agent types naming it receive? Every
    ``AGENT_RUNTIME_*KEY*`` variable but the shared envelope signing keys, and every variable
    some agent type names in its ``secrets:`` list."""
    if name in set(named):
        return True
    return bool(_RUNTIME_SECRET.match(name)) and not name.startswith(SHARED_SECRET_PREFIXES)


def agent_env(
    env: Mapping[str, str], allowed: Iterable[str], named: Iterable[str]
) -> dict[str, str]:
    """``env`` without the restricted secrets an agent type does not name (``allowed``);
    ``named``: every secret any agent type of the pipeline names."""
    keep, all_named = set(allowed), set(named)
    return {k: v for k, v in env.items() if k in keep or not restricted(k, all_named)}


# ---------------------------------------------------------------------- human decisions
async def pending_approvals(
    state: State, keys: Keys, correlation_id: str, *, now: float | None = None
) -> dict[str, Any]:
    """Steps of a request still waiting for a human at ``now`` (epoch seconds; pass the
    server's time, default: the local clock): step id -> {step, expires_at}. A record that is
    not one the safety checker wrote is left out."""
    raw = await state.hash_get_all(keys.request_state(correlation_id, APPROVAL_STATE))
    now = time.time() if now is None else now
    pending = {k: _record(v) for k, v in raw.items()}
    return {k: v for k, v in pending.items() if v is not None and v["expires_at"] > now}


def _record(raw: bytes) -> dict[str, Any] | None:
    """A pending-approval record (JSON ``{step, expires_at}``), or None if it is not one."""
    if len(raw) > MAX_RECORD_BYTES or too_deep(raw):
        return None
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    if not isinstance(value, dict) or not isinstance(value.get("step"), dict):
        return None
    expires = value.get("expires_at")
    if not isinstance(expires, int | float) or isinstance(expires, bool):
        return None
    return {**value, "expires_at": float(expires)}


async def submit_decision(
    client: Client,
    correlation_id: str,
    *,
    approved: bool,
    steps: list[str],
    approver: str,
    comment: str = "",
) -> list[str]:
    """Send a human decision to the safety checker; returns the steps it covers. Raises
    RequestError when nothing (or not a named step) of the request is waiting."""
    try:
        cid = uuid.UUID(correlation_id)
    except ValueError as exc:
        raise RequestError(f"{correlation_id!r} is not a correlation id (a UUID)") from exc
    schemas = client.pipeline.schemas
    if DECISION_TYPE not in schemas:
        raise RequestError(f"this pipeline takes no {DECISION_TYPE!r} messages (no approvals)")
    from agent_runtime.cancel import cancellation  # cancel.py imports this module

    cancelled = await cancellation(client.state, client.keys, str(cid))
    if cancelled is not None:
        raise RequestError(f"request {cid} was {cancelled.text()}; nothing to decide")
    now = await client.clock.now()  # expiry on the server's clock
    pending = await pending_approvals(client.state, client.keys, str(cid), now=now)
    if not pending:
        raise RequestError(
            f"no step of request {cid} is waiting for approval (unknown "
            "request, already decided, finished, or the approval expired)"
        )
    unknown = sorted(set(steps) - set(pending))
    if unknown:
        raise RequestError(
            f"steps {unknown} of request {cid} are not waiting for approval; "
            f"waiting: {sorted(pending)}"
        )
    decision = schemas.current(DECISION_TYPE).model_validate(
        {"approved": approved, "steps": steps, "approver": approver, "comment": comment}
    )
    await client.send(client.new_message(decision, correlation_id=cid))
    return sorted(steps or pending)


@dataclass(frozen=True, slots=True)
class WaitingStep:
    """A step waiting for a human decision (``agent-runtime approvals``)."""

    correlation_id: str
    step_id: str
    tool: str
    args: dict[str, Any]
    risk: str
    expires_at: float  # server epoch seconds

    def as_json(self) -> dict[str, Any]:
        return {
            "correlation_id": self.correlation_id,
            "step": self.step_id,
            "tool": self.tool,
            "args": self.args,
            "risk": self.risk,
            "expires_at": datetime.fromtimestamp(self.expires_at, UTC).isoformat(),
        }


async def waiting_approvals(client: Client, *, limit: int = LIST_LIMIT) -> list[WaitingStep]:
    """Every step waiting for a human, earliest expiry first. The requests are those with an
    approval timer in the schedule of an agent type that consumes ``approval.timer`` (the
    router: it starts one as soon as it takes a plan that waits), their steps those of the
    request's pending-approval hash that have not expired on the server's clock."""
    agents = getattr(client.pipeline, "agents", None)  # an entry Endpoint has none
    if agents is None:
        raise RequestError(
            "listing approvals needs a client of the whole pipeline (Client(redis, pipeline)), "
            "not of one entry (Client.connect(url, entry=...))"
        )
    now = await client.clock.now()
    cids: dict[str, None] = {}
    for agent in agents.values():
        if TIMER_TYPE not in agent.consumes:
            continue
        for member, _ in await client.transport.schedule.members(agent.name, limit):
            spec = Scheduled.parse(member)
            if spec is not None and spec.message_type == TIMER_TYPE:
                cids[str(spec.correlation_id)] = None
    rows = []
    for cid in list(cids)[:limit]:
        pending = await pending_approvals(client.state, client.keys, cid, now=now)
        rows += [_waiting(cid, step_id, info) for step_id, info in pending.items()]
    return sorted(rows, key=lambda r: (r.expires_at, r.correlation_id, r.step_id))


def _waiting(cid: str, step_id: str, info: dict[str, Any]) -> WaitingStep:
    step = info["step"]
    args = step.get("args")
    return WaitingStep(
        correlation_id=cid,
        step_id=step_id,
        tool=str(step.get("tool", "?")),
        args=args if isinstance(args, dict) else {},
        risk=str(step.get("risk", "?")),
        expires_at=info["expires_at"],
    )
