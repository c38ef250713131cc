"""Signed step approvals: what the safety checker signs and every executor verifies.

An approval is an HMAC-SHA256, keyed by ``AGENT_RUNTIME_APPROVAL_KEY``, over the canonical JSON
of ``[correlation_id, step_id, tool, args, approver]`` (sorted keys, no whitespace). A task
whose signature is missing, forged, or made for another request, step, tool, argument or
approver is refused. ``run`` and ``up`` generate a random key for their children when none is
set (:func:`ensure_key`); a standalone worker without a key refuses to start.

Pending human approvals of a request live in the hash ``keys.request_state(cid, "approval")``
(field: step id, value: JSON of tool, args, risk, reasons, expires_at) with a TTL, written by
the safety checker and cleared by the router as steps are decided or expire.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from collections.abc import MutableMapping
from typing import Any

from agent_runtime.errors import ConfigError

APPROVAL_KEY_ENV = "AGENT_RUNTIME_APPROVAL_KEY"
APPROVAL_STATE = "approval"
MIN_KEY_LENGTH = 16


def approval_key(env: MutableMapping[str, str] | None = None) -> bytes:
    """The signing key from the environment, or a ConfigError saying how to set one."""
    value = (os.environ if env is None else env).get(APPROVAL_KEY_ENV, "")
    if len(value) < MIN_KEY_LENGTH:
        raise ConfigError(f"{APPROVAL_KEY_ENV} must be set to a secret of at least "
                          f"{MIN_KEY_LENGTH} characters (the safety checker signs approvals "
                          "with it, executors verify them); 'agent-runtime run' and 'up' "
                          "generate one for their workers")
    return value.encode()


def ensure_key(env: MutableMapping[str, str]) -> MutableMapping[str, str]:
    """Give ``env`` a random approval key unless it has one (embedded/dev runs)."""
    if len(env.get(APPROVAL_KEY_ENV, "")) < MIN_KEY_LENGTH:
        env[APPROVAL_KEY_ENV] = secrets.token_hex(32)
    return env


def canonical(value: Any) -> bytes:
    """Canonical JSON bytes: sorted keys, no whitespace, UTF-8."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode()


def sign(key: bytes, *, correlation_id: str, step_id: str, tool: str, args: dict[str, Any],
         approver: str) -> str:
    material = canonical([correlation_id, step_id, tool, args, approver])
    return hmac.new(key, material, hashlib.sha256).hexdigest()


def verify(key: bytes, signature: str, *, correlation_id: str, step_id: str, tool: str,
           args: dict[str, Any], approver: str) -> bool:
    expected = sign(key, correlation_id=correlation_id, step_id=step_id, tool=tool, args=args,
                    approver=approver)
    return hmac.compare_digest(expected, signature)
