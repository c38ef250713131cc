"""Bearer tokens with scopes, the login cookie, and the per-token rate limit.

A token is any secret string; the gateway keeps only its SHA-256 (``agent-runtime serve
--hash-token``). The presented token is hashed and compared with every stored hash in
constant time (``hmac.compare_digest``, no early exit). The dashboard's login stores the same
token in an HttpOnly, SameSite=Strict cookie: a cross-site page cannot send it (the CSRF
defence), scripts cannot read it. Tokens and cookies are never logged.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.requests import HTTPConnection

from agent_runtime.gateway.problems import Problem
from agent_runtime.gateway.settings import GatewaySettings, RateLimit, Scope, TokenSpec

COOKIE = "agent_runtime_token"
#: Longest token accepted (longer ones are refused unhashed: no work for junk).
MAX_TOKEN = 512
bearer = HTTPBearer(auto_error=False, description="an API token: Authorization: Bearer TOKEN")


def hash_token(token: str) -> str:
    """The SHA-256 hex digest the settings store for ``token``."""
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    """A fresh random token (256 bits, URL-safe)."""
    return "art_" + secrets.token_urlsafe(32)


@dataclass(frozen=True)
class Principal:
    """The caller a valid token names."""

    name: str
    scopes: frozenset[str]
    rate_limit: RateLimit


class TokenTable:
    """The configured tokens' hashes; finds a token's owner in constant time."""

    def __init__(self, settings: GatewaySettings) -> None:
        self.entries = [(bytes.fromhex(t.sha256), t) for t in settings.tokens]
        self.default_limit = settings.rate_limit

    def find(self, token: str) -> Principal | None:
        if not token or len(token) > MAX_TOKEN:
            return None
        digest = hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()
        found: TokenSpec | None = None
        for stored, spec in self.entries:  # every entry compared: the time says nothing
            if hmac.compare_digest(stored, digest):
                found = spec
        if found is None:
            return None
        return Principal(
            found.name, frozenset(found.scopes), found.rate_limit or self.default_limit
        )


def presented_token(request: Request, credentials: HTTPAuthorizationCredentials | None) -> str:
    if credentials is not None:
        return credentials.credentials
    return request.cookies.get(COOKIE, "")


def authenticate(request: Request, token: str) -> Principal:
    table: TokenTable = request.app.state.tokens
    if not token:
        raise Problem(
            401,
            "missing API token: send 'Authorization: Bearer TOKEN' (or log in)",
            headers={"WWW-Authenticate": "Bearer"},
        )
    principal = table.find(token)
    if principal is None:
        raise Problem(
            401,
            "invalid API token",
            headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
        )
    return principal


async def enforce_rate(request: HTTPConnection, principal: Principal) -> None:
    """Count the call in the token's current window (in Redis, shared by every replica);
    429 with ``Retry-After`` (seconds to the next window) once over the limit."""
    limit = principal.rate_limit
    now = time.time()
    window = int(now // limit.per_seconds)
    runtime = request.app.state.runtime
    key = runtime.keys.gateway_rate(principal.name, window)
    count = await runtime.store.count_call(key, limit.per_seconds + 1)
    if count > limit.requests:
        runtime.metrics.limited.inc()
        retry = max(1, int((window + 1) * limit.per_seconds - now + 0.999))
        raise Problem(
            429,
            f"rate limit of {limit.requests} calls per {limit.per_seconds} s exceeded for "
            f"token {principal.name!r}",
            headers={"Retry-After": str(retry)},
        )


def require(scope: Scope) -> Callable[..., Awaitable[Principal]]:
    """A dependency: the caller, who must hold ``scope``; counted against its rate limit."""

    async def check(
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> Principal:
        principal = authenticate(request, presented_token(request, credentials))
        if scope not in principal.scopes:
            raise Problem(403, f"token {principal.name!r} lacks the {scope!r} scope for this call")
        await enforce_rate(request, principal)
        return principal

    return check


def cookie_options(secure: bool) -> dict[str, Any]:
    return {"httponly": True, "samesite": "strict", "path": "/", "secure": secure}
