"""``http``: fetch a URL with httpx. The URL is read by the pipeline's one parser
(agents/urls.py, the one the safety policy uses): what it cannot read is refused, and the tool
fetches the URL rebuilt from the parts it read. Host allow-list, scheme check, no redirects
followed (a redirect could leave the list), timeout, and a cap on the body bytes read (the
rest is never downloaded). The idempotency key travels as the ``Idempotency-Key`` header."""

from __future__ import annotations

from typing import Any

import httpx
from pydantic import Field

from agents.executors.base import (
    ToolContext,
    ToolError,
    ToolOptions,
    ToolOutput,
    TransientToolError,
    only,
)
from agents.urls import BadUrl, parse_url


class HttpOptions(ToolOptions):
    hosts: list[str] = Field(
        default_factory=list, description="exact host names (or host:port) that may be fetched"
    )
    methods: list[str] = Field(default_factory=lambda: ["GET", "HEAD"])
    schemes: list[str] = Field(default_factory=lambda: ["https", "http"])
    timeout: float = Field(default=10.0, gt=0, le=600)
    max_bytes: int = Field(default=16 * 1024, ge=1, le=16 * 1024 * 1024)


class Http:
    """args: ``url``, optional ``method`` (GET). Output: status, content type, body text."""

    Options = HttpOptions

    def __init__(self, options: HttpOptions) -> None:
        self.options = options

    def check(self, args: dict[str, Any]) -> tuple[str, str]:
        only(args, "url", "method")
        method = str(args.get("method", "GET")).upper()
        if method not in self.options.methods:
            raise ToolError(f"method {method} is not allowed")
        try:
            url = parse_url(args.get("url"))
        except BadUrl as exc:
            raise ToolError(f"url refused: {exc}") from None
        if url.scheme not in self.options.schemes:
            raise ToolError(f"scheme {url.scheme!r} is not allowed")
        if not url.allowed(self.options.hosts):
            raise ToolError(f"host {url.host!r} is not on the allow-list")
        return method, url.text

    async def run(self, args: dict[str, Any], context: ToolContext) -> ToolOutput:
        method, url = self.check(args)
        headers = {
            "Idempotency-Key": context.idempotency_key,
            "User-Agent": "agent-runtime",
            "Accept-Encoding": "identity",
        }  # raw bytes are capped: no decompression
        try:
            async with (
                httpx.AsyncClient(
                    timeout=self.options.timeout, follow_redirects=False, trust_env=False
                ) as client,
                client.stream(method, url, headers=headers) as response,
            ):
                body, truncated = await _read_capped(response, self.options.max_bytes)
        except httpx.TimeoutException as exc:
            raise TransientToolError(f"{method} {url} timed out") from exc
        except httpx.HTTPError as exc:
            raise TransientToolError(f"{method} {url} failed: {type(exc).__name__}") from exc
        if response.status_code >= 500:
            raise TransientToolError(f"{method} {url} answered {response.status_code}")
        result = {
            "status": response.status_code,
            "content_type": response.headers.get("content-type", ""),
            "body": body.decode(response.encoding or "utf-8", errors="replace"),
        }
        if response.status_code >= 400:
            raise ToolError(f"{method} {url} answered {response.status_code}")
        return ToolOutput(result, truncated=truncated)


async def _read_capped(response: httpx.Response, cap: int) -> tuple[bytes, bool]:
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_raw():
        chunks.append(chunk)
        size += len(chunk)
        if size > cap:
            return b"".join(chunks)[:cap], True
    return b"".join(chunks), False
