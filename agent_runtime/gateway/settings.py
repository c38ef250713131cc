"""The gateway's settings: API tokens (as SHA-256 hashes) with their scopes, limits, CORS.

Read from a YAML file (``agent-runtime serve --gateway-config FILE`` or
``AGENT_RUNTIME_GATEWAY_CONFIG``) and from the environment: ``AGENT_RUNTIME_GATEWAY_TOKENS``
adds tokens as ``NAME:SHA256HEX:SCOPE+SCOPE`` entries separated by ``;`` or newlines
(docs/gateway.md, "Tokens"). Unknown keys are errors; a token's plain text never appears here.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from agent_runtime.errors import ConfigError

Scope = Literal["submit", "read", "approve", "admin"]
SCOPES: tuple[Scope, ...] = ("submit", "read", "approve", "admin")
TOKENS_ENV = "AGENT_RUNTIME_GATEWAY_TOKENS"
CONFIG_ENV = "AGENT_RUNTIME_GATEWAY_CONFIG"
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_NAME = r"^[A-Za-z0-9_.@-]{1,64}$"


class RateLimit(BaseModel):
    """At most ``requests`` authenticated calls per ``per_seconds`` window and token."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    requests: int = Field(default=600, ge=1, le=10_000_000)
    per_seconds: int = Field(default=60, ge=1, le=86_400)


class TokenSpec(BaseModel):
    """One API token: a name (shown in logs and as the default approver), the SHA-256 hex of
    the token, its scopes and optionally its own rate limit."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=_NAME)
    sha256: str
    scopes: tuple[Scope, ...] = Field(min_length=1)
    rate_limit: RateLimit | None = None

    @field_validator("sha256")
    @classmethod
    def _hex(cls, value: str) -> str:
        value = value.strip().lower()
        if not _HEX64.match(value):
            raise ValueError("must be the 64 hex digits of the token's SHA-256")
        return value


class GatewaySettings(BaseModel):
    """Everything ``agent-runtime serve`` needs besides the pipeline file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tokens: tuple[TokenSpec, ...] = ()
    rate_limit: RateLimit = RateLimit()
    max_body_bytes: int = Field(default=64 * 1024, ge=1_024, le=16 * 1024 * 1024)
    max_wait_seconds: float = Field(default=60.0, gt=0, le=3_600)
    sse_max_seconds: float = Field(default=3_600.0, gt=0, le=86_400)
    idempotency_ttl: int = Field(default=24 * 3600, ge=60, le=30 * 24 * 3600)
    cors_origins: tuple[str, ...] = ()
    recent_limit: int = Field(default=200, ge=1, le=10_000)
    trace_poll_seconds: float = Field(default=0.25, gt=0, le=10)
    secure_cookie: bool = Field(
        default=False, description="mark the login cookie Secure (set it behind TLS)"
    )


def parse_tokens_env(value: str) -> list[TokenSpec]:
    """``NAME:SHA256:SCOPE+SCOPE`` entries separated by ``;`` or newlines; ConfigError naming
    the entry (by position, never its text) that is malformed."""
    specs = []
    entries = [e.strip() for e in re.split(r"[;\n]", value) if e.strip()]
    for index, entry in enumerate(entries, 1):
        parts = entry.split(":")
        if len(parts) != 3:
            raise ConfigError(
                f"{TOKENS_ENV}: entry {index} is not NAME:SHA256HEX:SCOPE+SCOPE "
                "(scopes: submit, read, approve, admin)"
            )
        name, digest, scopes = parts
        try:
            specs.append(TokenSpec(name=name, sha256=digest, scopes=tuple(scopes.split("+"))))
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()
            )
            raise ConfigError(f"{TOKENS_ENV}: entry {index}: {problems}") from None
    return specs


def load_settings(
    path: str | Path | None = None, env: dict[str, str] | None = None
) -> GatewaySettings:
    """The settings from ``path`` (or ``$AGENT_RUNTIME_GATEWAY_CONFIG``; none: defaults) plus
    the tokens of ``$AGENT_RUNTIME_GATEWAY_TOKENS``."""
    env = dict(os.environ) if env is None else env
    path = path or env.get(CONFIG_ENV) or None
    data: dict[str, object] = {}
    if path:
        try:
            loaded = yaml.safe_load(Path(path).read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"gateway config {path}: {exc}") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"gateway config {path}: must be a mapping")
        data = dict(loaded or {})
    extra = parse_tokens_env(env.get(TOKENS_ENV, ""))
    try:
        settings = GatewaySettings.model_validate(data)
    except ValidationError as exc:
        lines = [f"{path}: {'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()]
        raise ConfigError("\n".join(lines)) from None
    if extra:
        settings = settings.model_copy(update={"tokens": (*settings.tokens, *extra)})
    names = [t.name for t in settings.tokens]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise ConfigError(f"gateway tokens: duplicate names {duplicated}")
    return settings
