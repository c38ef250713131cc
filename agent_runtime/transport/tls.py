"""TLS to the Redis server (``rediss://``, ``rediss+cluster://``): the server's certificate is
always verified (against a CA file, or the system's CAs), its host name checked, and a client
certificate presented when one is configured (mutual TLS).

Where the settings come from, first found wins, per setting:

1. the URL's query: ``ssl_ca_certs``, ``ssl_certfile``, ``ssl_keyfile``, ``ssl_check_hostname``
   (redis-py's names);
2. the environment: ``AGENT_RUNTIME_REDIS_TLS_CA_FILE``, ``AGENT_RUNTIME_REDIS_TLS_CERT_FILE``,
   ``AGENT_RUNTIME_REDIS_TLS_KEY_FILE``, ``AGENT_RUNTIME_REDIS_TLS_CHECK_HOSTNAME``
   (``true``/``false``);
3. the pipeline config's ``redis_tls:`` block (``ca_file``, ``cert_file``, ``key_file``,
   ``check_hostname``), merged into the URL by the CLI.

Turning certificate verification off (``ssl_cert_reqs=none``/``optional``) is refused."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, quote

TLS_SCHEMES = ("rediss", "rediss+cluster")
#: setting -> (environment variable, redis-py keyword / URL query name)
SETTINGS = {
    "ca_file": ("AGENT_RUNTIME_REDIS_TLS_CA_FILE", "ssl_ca_certs"),
    "cert_file": ("AGENT_RUNTIME_REDIS_TLS_CERT_FILE", "ssl_certfile"),
    "key_file": ("AGENT_RUNTIME_REDIS_TLS_KEY_FILE", "ssl_keyfile"),
    "check_hostname": ("AGENT_RUNTIME_REDIS_TLS_CHECK_HOSTNAME", "ssl_check_hostname"),
}
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


@dataclass(frozen=True)
class TlsSettings:
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    check_hostname: bool | None = None


def uses_tls(url: str) -> bool:
    return url.partition("://")[0] in TLS_SCHEMES


def env_settings(environ: Mapping[str, str] | None = None) -> TlsSettings:
    """The TLS settings in the environment (``AGENT_RUNTIME_REDIS_TLS_*``)."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for name, (variable, _) in SETTINGS.items():
        value = env.get(variable, "")
        if not value:
            continue
        if name == "check_hostname":
            values[name] = _flag(variable, value)
        else:
            values[name] = value
    return TlsSettings(**values)


def _flag(variable: str, value: str) -> bool:
    if value.lower() in _TRUE:
        return True
    if value.lower() in _FALSE:
        return False
    raise ValueError(f"{variable}={value!r}: expected true or false")


def client_options(url: str, environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """redis-py keywords for ``url``: the environment's TLS settings (the URL's own query
    overrides them, as redis-py lets a URL's query win over keywords); nothing for a URL
    without TLS. Raises ValueError for a URL that turns certificate verification off."""
    if not uses_tls(url):
        return {}
    query = dict(parse_qsl(url.partition("?")[2]))
    reqs = query.get("ssl_cert_reqs", "required").lower()
    if reqs not in ("required", "cert_required"):
        raise ValueError(
            f"ssl_cert_reqs={reqs} would accept any server certificate; agent-runtime always "
            "verifies it (give the server's CA with ssl_ca_certs or "
            "AGENT_RUNTIME_REDIS_TLS_CA_FILE)"
        )
    settings = env_settings(environ)
    options: dict[str, Any] = {"ssl_cert_reqs": "required"}
    for name, (_, keyword) in SETTINGS.items():
        value = getattr(settings, name)
        if value is not None:
            options[keyword] = value
    return options


def with_settings(url: str, settings: TlsSettings, environ: Mapping[str, str] | None = None) -> str:
    """``url`` with ``settings`` (the config's ``redis_tls``) added to its query, each only
    where neither the URL nor the environment sets it; a URL without TLS is returned as is."""
    if not uses_tls(url):
        return url
    env = os.environ if environ is None else environ
    base, _, query = url.partition("?")
    present = {key for key, _ in parse_qsl(query)}
    extra = []
    for name, (variable, keyword) in SETTINGS.items():
        value = getattr(settings, name)
        if value is None or keyword in present or env.get(variable):
            continue
        text = ("true" if value else "false") if isinstance(value, bool) else str(value)
        extra.append(f"{keyword}={quote(text, safe='/')}")
    if not extra:
        return url
    return f"{base}?{'&'.join([query, *extra] if query else extra)}"
