"""Removing secrets from anything the runtime writes for humans: logs, dead-letter errors,
trace entries, CLI reports.

What counts as a secret:

* the values of environment variables whose names contain KEY, TOKEN, SECRET, PASSWORD,
  PASSWD or CREDENTIAL (collected once when the :class:`Redactor` is built, at process start),
  and passwords inside any URL found in the environment or the pipeline config;
* values stored under secret-looking names (``api_key``, ``authorization``, ``password``,
  ``token``, ``secret``, ``client_secret``, ``private_key``, ...) in mappings, in the pipeline
  config and in ``key=value`` / ``"key": "value"`` text;
* URL passwords (``redis://user:PASSWORD@host``), ``Bearer`` tokens and provider API keys
  shaped like ``sk-...``.

A :class:`Redactor` is immutable; build one per process (:func:`Redactor.from_env`, plus
:meth:`Redactor.with_config` for the pipeline config) and pass it where it is needed.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping, MutableMapping
from dataclasses import dataclass
from functools import cache
from typing import Any

from agent_runtime.limits import MAX_ERROR_TEXT, too_deep

MASK = "***"
MIN_SECRET_LENGTH = 6  # shorter env values ("1", "yes") would mask ordinary words

ENV_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL", re.IGNORECASE)
SECRET_NAME = re.compile(
    r"(^|[_\-.])(api[_\-]?key|apikey|authorization|auth[_\-]?token|password|passwd|pwd|secret|"
    r"token|access[_\-]?token|refresh[_\-]?token|id[_\-]?token|private[_\-]?key|"
    r"secret[_\-]?key|signing[_\-]?key|client[_\-]?secret|credentials?|cookie|set[_\-]cookie|"
    r"x[_\-]api[_\-]key)$",
    re.IGNORECASE,
)
# Every pattern runs in linear time on any text (tests/hostile/test_redaction_linear.py feeds
# 1 MiB runs of every character class): no quantifier over a run that a match attempt can start
# inside of is unbounded (a URL scheme is at most 32 characters), and runs end in possessive
# quantifiers (``*+``, ``++``) that never backtrack.
_URL_PASSWORD = re.compile(
    r"(?P<head>[a-zA-Z][a-zA-Z0-9+.\-]{0,31}+://[^:@/\s\"']*+:)"
    r"(?P<secret>[^@/\s\"']++)(?P<tail>@)"
)
_QUERY_PASSWORD = re.compile(
    r"(?P<head>[?&](?:password|passwd|token|api_key|secret)=)"
    r"(?P<secret>[^&#\s\"']+)",
    re.IGNORECASE,
)
_BEARER = re.compile(r"(?P<head>\b(?:Bearer|Basic|Token)\s++)(?P<secret>[A-Za-z0-9._~+/\-=]{8,})")
_KEY_VALUE = re.compile(
    r"(?P<head>(?<![A-Za-z0-9])[\"']?(?:api[_\-]?key|apikey|authorization|password|passwd|"
    r"secret|client[_\-]?secret|token|access[_\-]?token|refresh[_\-]?token|private[_\-]?key)"
    r"[\"']?\s*+[:=]\s*+[\"']?)(?!\*\*\*)(?P<secret>[^\s\"',;&}]++)",
    re.IGNORECASE,
)
_API_KEY_SHAPE = re.compile(r"\b(?:sk|pk|rk)-[A-Za-z0-9_\-]{16,}\b")
_PATTERNS = (_URL_PASSWORD, _QUERY_PASSWORD, _BEARER, _KEY_VALUE)


def is_secret_name(name: str) -> bool:
    """True for field names like ``api_key``, ``Authorization``, ``db_password``."""
    return bool(SECRET_NAME.search(name))


def url_password(value: str) -> str | None:
    """The password inside a URL in ``value`` (``redis://:pw@host``), if any."""
    match = _URL_PASSWORD.search(value)
    return match.group("secret") if match else None


@dataclass(frozen=True)
class Redactor:
    """Masks known secret values and secret-looking patterns. Immutable, cheap to share."""

    secrets: tuple[str, ...] = ()

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Redactor:
        """Secrets from the environment: values of secret-named variables, URL passwords."""
        env = os.environ if environ is None else environ
        found: list[str] = []
        for name, value in env.items():
            if ENV_NAME.search(name):
                found.append(value)
            password = url_password(value)
            if password:
                found.append(password)
        return cls(()).with_secrets(found)

    def with_secrets(self, values: Iterable[str]) -> Redactor:
        """A redactor that also masks ``values`` (short or empty values are ignored)."""
        merged = set(self.secrets)
        merged.update(v for v in values if isinstance(v, str) and len(v) >= MIN_SECRET_LENGTH)
        # longest first, so a secret containing another is masked whole
        return Redactor(tuple(sorted(merged, key=lambda s: (-len(s), s))))

    def with_config(self, config: Any) -> Redactor:
        """Also mask secrets found in a pipeline config (pydantic model or mapping): values
        under secret-looking keys and URL passwords anywhere in it."""
        data = config.model_dump() if hasattr(config, "model_dump") else config
        return self.with_secrets(_config_secrets(data))

    # ------------------------------------------------------------------ applying
    def text(self, value: str) -> str:
        """``value`` with every known secret and secret-looking pattern masked."""
        for secret in self.secrets:
            if secret in value:
                value = value.replace(secret, MASK)
        for pattern in _PATTERNS:
            value = pattern.sub(
                lambda m: m.group("head") + MASK + (m.groupdict().get("tail") or ""), value
            )
        return _API_KEY_SHAPE.sub(MASK, value)

    def __call__(self, obj: Any) -> Any:
        """A redacted copy of ``obj`` (str, bytes, mappings, lists, tuples; other values as
        is). Values under secret-looking keys are masked whatever they contain."""
        if isinstance(obj, str):
            return self.text(obj)
        if isinstance(obj, bytes):
            text = obj.decode("utf-8", "replace")
            redacted = self.text(text)
            return obj if redacted == text else redacted.encode()
        if isinstance(obj, Mapping):
            return {key: self._field(key, value) for key, value in obj.items()}
        if isinstance(obj, list | tuple):
            return type(obj)(self(item) for item in obj)
        return obj

    def _field(self, key: Any, value: Any) -> Any:
        name = key.decode("utf-8", "replace") if isinstance(key, bytes) else str(key)
        if is_secret_name(name) and value not in (None, "", b""):
            return MASK.encode() if isinstance(value, bytes) else MASK
        return self(value)

    def json_bytes(self, data: bytes) -> tuple[bytes, bool]:
        """Redact a JSON document (or any bytes) given as bytes. Returns the original bytes
        unchanged when nothing was masked, so signatures over them stay valid."""
        if too_deep(data):  # never hand a parser more nesting than the runtime accepts
            redacted = self(data)
            return redacted, redacted is not data
        try:
            doc = json.loads(data)
        except (ValueError, UnicodeDecodeError):
            redacted = self(data)
            return redacted, redacted is not data
        clean = self(doc)
        if clean == doc:
            return data, False
        return json.dumps(clean, separators=(",", ":")).encode(), True

    def entry_fields(self, fields: dict[bytes, bytes]) -> tuple[dict[bytes, bytes], bool]:
        """A stream entry's fields with secrets masked (the envelope JSON structurally), and
        whether anything changed. Unchanged fields keep their exact bytes."""
        out: dict[bytes, bytes] = {}
        changed = False
        for key, value in fields.items():
            if is_secret_name(key.decode("utf-8", "replace")):
                out[key], dirty = MASK.encode(), True
            else:
                out[key], dirty = self.json_bytes(value)
            changed = changed or dirty
        return (out, True) if changed else (fields, False)

    def processor(
        self, _logger: Any, _method: str, event: MutableMapping[str, Any]
    ) -> dict[str, Any]:
        """structlog processor: redacts every field of the event dict."""
        return {key: self._field(key, value) for key, value in event.items()}


def _config_secrets(data: Any, name: str = "") -> list[str]:
    found: list[str] = []
    if isinstance(data, Mapping):
        for key, value in data.items():
            found += _config_secrets(value, str(key))
    elif isinstance(data, list | tuple):
        for item in data:
            found += _config_secrets(item, name)
    elif isinstance(data, str):
        if name and is_secret_name(name):
            found.append(data)
        password = url_password(data)
        if password:
            found.append(password)
    return found


@cache
def env_redactor() -> Redactor:
    """The redactor for this process's environment, built on first use (at start-up: the
    CLI builds it before any message). Immutable; cached so the hot path does not rescan."""
    return Redactor.from_env()


def redact(obj: Any, redactor: Redactor | None = None) -> Any:
    """Redact ``obj`` with ``redactor`` (default: the process environment's)."""
    return (redactor or env_redactor())(obj)


def redact_dead_letter(letter: Any, redactor: Redactor) -> Any:
    """A :class:`~agent_runtime.transport.streams.DeadLetter` with its error text and what it
    keeps of the original entry (``letter.original``, bounded: see
    :func:`~agent_runtime.transport.original.describe_original`) redacted; the entry itself is
    never scanned. ``redacted=1`` is recorded when the kept original had to change (replay then
    re-publishes the redacted envelope, re-signed when a signing key is set)."""
    from agent_runtime.transport.original import describe_original
    from agent_runtime.transport.streams import DeadLetter

    original = letter.original
    if original is None:
        original = describe_original(letter.entry.fields, whole=False)
    fields, changed = redactor.entry_fields(original)
    extra = {key: redactor.text(value) for key, value in letter.extra.items()}
    if changed:
        extra["redacted"] = "1"
    error = redactor.text(letter.error[:MAX_ERROR_TEXT])
    return DeadLetter(
        letter.entry, letter.dlq, letter.reason, error, extra, letter.reply, original=fields
    )
