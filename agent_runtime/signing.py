"""Envelope signing keys: one key signs, every key of the ring verifies (rotation).

Where the keys come from, first match wins:

1. ``AGENT_RUNTIME_SIGNING_KEY`` (the signing secret, any string of 16+ characters) and
   ``AGENT_RUNTIME_VERIFY_KEYS`` (more secrets, comma-separated, that only verify);
2. the key file ``AGENT_RUNTIME_SIGNING_KEYS_FILE``, else ``signing-keys`` in the runtime
   directory (``AGENT_RUNTIME_HOME``; see transport/embedded.py ``runtime_dir``): one secret per
   line, the first signs, every line verifies, ``#`` starts a comment. ``up``, ``run`` and the
   test helpers create it (mode 0600) when neither exists (:func:`ensure_keyring`);
   ``agent-runtime keys`` rotates it.

A key's id is derived from its secret (:func:`key_id`: 8 hex digits of a SHA-256), so ids need
no bookkeeping and the same secret has the same id in every process. A file-backed ring
re-reads its file when the file was replaced or changed -- checked at most every
``RELOAD_EVERY`` seconds when it signs or verifies, and at once (at most once a second) when an
entry names a key id it does not know -- so ``agent-runtime keys rotate`` (which first adds the
new key as verify-only, waits until every process has re-read the file, then makes it the
signing key) takes effect in running workers without a restart or a refused message.

The MAC of an entry is HMAC-SHA256 over ``len(stream) || stream || envelope bytes``: an entry
copied to another stream (another agent's inbox, another request's reply stream) fails.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import secrets
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from agent_runtime.errors import ConfigError

SIGNING_KEY_ENV = "AGENT_RUNTIME_SIGNING_KEY"
VERIFY_KEYS_ENV = "AGENT_RUNTIME_VERIFY_KEYS"
KEYS_FILE_ENV = "AGENT_RUNTIME_SIGNING_KEYS_FILE"
KEYS_FILE_NAME = "signing-keys"
MIN_SECRET_LENGTH = 16
#: Seconds between checks of the key file for a new signing key (file-backed rings only).
RELOAD_EVERY = 2.0
#: At most one re-read per this many seconds on an unknown key id (a flood of made-up ids
#: costs one ``stat`` a second).
UNKNOWN_RELOAD_EVERY = 1.0
#: A key file larger than this is refused unread (a ring is a few lines).
MAX_FILE_BYTES = 64 * 1024
_HEADER = (
    "# agent-runtime envelope signing keys: the first line signs, every line verifies.\n"
    "# Rotate with 'agent-runtime keys rotate'; see docs/security.md.\n"
)


def key_id(secret: bytes) -> str:
    """The public id of ``secret``: 8 hex digits, the same in every process."""
    return hashlib.sha256(b"agent-runtime key id\0" + secret).hexdigest()[:8]


def new_secret() -> str:
    return secrets.token_hex(32)


class Keyring:
    """The signing key and the verify-only keys of one process (see the module doc)."""

    def __init__(self, secrets_: list[bytes], *, path: Path | None = None) -> None:
        self.path = path
        self._stamp: tuple[int, int] | None = None
        self._next_check = 0.0
        self._next_unknown = 0.0
        self._set(secrets_)

    @classmethod
    def of(cls, secret: bytes, *verify: bytes) -> Keyring:
        """A ring held in memory: ``secret`` signs, it and ``verify`` verify."""
        return cls([secret, *verify])

    @classmethod
    def from_file(cls, path: Path) -> Keyring:
        ring = cls(read_secrets(path), path=path)
        ring._stamp = _stamp(path)
        ring._next_check = time.monotonic() + RELOAD_EVERY
        return ring

    def _set(self, secrets_: list[bytes]) -> None:
        if not secrets_:
            raise ConfigError("a signing key ring needs at least one key")
        self._bases = {key_id(s): _Pads(s) for s in secrets_}
        # The same keys by the key id field's bytes: an entry's ``k`` is looked up as read.
        self._by_field = {kid.encode(): pads for kid, pads in self._bases.items()}
        self.signing_id = key_id(secrets_[0])
        self._signing = self._bases[self.signing_id]
        self._signing_field = self.signing_id.encode()

    @property
    def ids(self) -> list[str]:
        """Key ids, the signing key's first."""
        return list(self._bases)

    def sign(self, stream: str, data: bytes) -> tuple[bytes, bytes]:
        """(key id, hex MAC) of ``data`` bound for ``stream``, with the signing key."""
        if self.path is not None and time.monotonic() >= self._next_check:
            self._reload()
        return self._signing_field, _mac(self._signing, stream, data)

    def verify(self, stream: str, data: bytes, kid: bytes | None, mac: bytes) -> str:
        """'' when ``mac`` is right for (``stream``, ``data``) under key ``kid`` (None: the
        entry names no key, every key is tried), else why not."""
        if self.path is not None and time.monotonic() >= self._next_check:
            self._reload()
        if kid is None:
            bases = list(self._bases.values())
        else:
            base = self._by_field.get(kid) or self._base(kid)
            if base is None:
                return f"signed with key id {kid[:16]!r}, unknown here (keys: {self.ids})"
            if hmac.compare_digest(_mac(base, stream, data), mac):
                return ""
            bases = []
        if any(hmac.compare_digest(_mac(b, stream, data), mac) for b in bases):
            return ""
        return "signature does not match the envelope bytes and its stream"

    def _base(self, kid: bytes) -> _Pads | None:
        """The key of an id not in the ring: found after a re-read of the key file, if any."""
        if self.path is not None and time.monotonic() >= self._next_unknown:
            self._next_unknown = time.monotonic() + UNKNOWN_RELOAD_EVERY
            self._reload()
            return self._by_field.get(kid)
        return None

    def _reload(self) -> None:
        """Re-read the key file when its modification time changed; a file that cannot be
        read (mid-rotation, removed) leaves the ring as it was."""
        assert self.path is not None
        self._next_check = time.monotonic() + RELOAD_EVERY
        stamp = _stamp(self.path)
        if stamp is None or stamp == self._stamp:
            return
        with contextlib.suppress(ConfigError):
            self._set(read_secrets(self.path))
            self._stamp = stamp


class _Pads:
    """HMAC-SHA256 (RFC 2104) with the key's inner and outer pads hashed once: per entry two
    hash copies and updates. Measured against ``hmac.new(key, digestmod=sha256).copy()`` per
    entry (what it replaces) on a 379-byte envelope: 7-9 us against 12-13 us on the loaded
    test machine (the one-shot ``hmac.digest``: 20-23 us); tests/unit/test_signing.py checks
    it equals ``hmac`` for short and long keys.

    The inner state is also kept per stream *after* the stream's ``len || name`` prefix
    (:meth:`inner_for`; at most :data:`STREAM_STATES` streams, then the cache starts over:
    a worker reads a few inboxes, reply streams come and go): a MAC is then one copy and
    one update of the envelope for the inner hash. Measured under callgrind, 2,000 MACs of
    a 424-byte envelope: 28,642 -> 27,163 instructions per MAC (wall 2.4 -> 1.9 us); the
    rest is SHA-256 itself (17,300 instructions on valgrind's CPU model, which has no SHA
    extensions) and the copies (docs/benchmarks.md, "Issue 17: intake (session 8)")."""

    __slots__ = ("inner", "outer", "streams")

    def __init__(self, secret: bytes) -> None:
        key = secret if len(secret) <= 64 else hashlib.sha256(secret).digest()
        key = key.ljust(64, b"\0")
        self.inner = hashlib.sha256(bytes(b ^ 0x36 for b in key))
        self.outer = hashlib.sha256(bytes(b ^ 0x5C for b in key))
        self.streams: dict[str, Any] = {}

    def inner_for(self, stream: str) -> Any:
        """The inner hash state after ``len(stream) || stream`` (kept; do not update it)."""
        state = self.streams.get(stream)
        if state is None:
            if len(self.streams) >= STREAM_STATES:
                self.streams.clear()
            name = stream.encode()
            state = self.inner.copy()
            state.update(len(name).to_bytes(4, "big") + name)
            self.streams[stream] = state
        return state


#: Streams whose prefixed inner hash state one key keeps (see :class:`_Pads`).
STREAM_STATES = 256


def _mac(pads: _Pads, stream: str, data: bytes) -> bytes:
    inner = pads.inner_for(stream).copy()
    inner.update(data)
    outer = pads.outer.copy()
    outer.update(inner.digest())
    return outer.hexdigest().encode()


def _stamp(path: Path) -> tuple[int, int] | None:
    """(inode, mtime): a rotation replaces the file, so the inode changes even within one
    tick of a coarse file-system clock."""
    try:
        info = path.stat()
    except OSError:
        return None
    return info.st_ino, info.st_mtime_ns


# ---------------------------------------------------------------------------- finding keys


def keys_file(environ: Mapping[str, str] | None = None) -> Path:
    """Where the key file is: ``AGENT_RUNTIME_SIGNING_KEYS_FILE``, else the runtime directory's."""
    env = os.environ if environ is None else environ
    explicit = env.get(KEYS_FILE_ENV)
    if explicit:
        return Path(explicit)
    from agent_runtime.transport.embedded import runtime_dir  # no Redis: only the directory

    return runtime_dir() / KEYS_FILE_NAME


def load_keyring(environ: Mapping[str, str] | None = None) -> Keyring | None:
    """The process's ring: from the environment, else the key file; None when neither."""
    env = os.environ if environ is None else environ
    secret = env.get(SIGNING_KEY_ENV, "")
    if secret:
        verify = [v.strip() for v in env.get(VERIFY_KEYS_ENV, "").split(",") if v.strip()]
        for name, value in [(SIGNING_KEY_ENV, secret), *((VERIFY_KEYS_ENV, v) for v in verify)]:
            _check_secret(value, name)
        return Keyring.of(secret.encode(), *(v.encode() for v in verify))
    path = keys_file(env)
    if not path.exists():
        return None
    return Keyring.from_file(path)


def ensure_keyring(environ: Mapping[str, str] | None = None) -> Keyring:
    """The process's ring, creating the key file with a fresh random key when there is none
    (``up``, ``run``, the test helpers)."""
    ring = load_keyring(environ)
    if ring is not None:
        return ring
    path = keys_file(environ)
    create_keys_file(path, [new_secret()])
    return Keyring.from_file(path)


def no_key_error() -> ConfigError:
    return ConfigError(
        f"envelope signing is on (the default) and there is no signing key: set "
        f"{SIGNING_KEY_ENV}, or create one with 'agent-runtime keys init' (file "
        f"{keys_file()}); 'up' and 'run' create it themselves. 'signing: off' in the "
        "pipeline config turns signing off (insecure: any Redis client can inject messages)"
    )


def _check_secret(value: str, name: str) -> None:
    if len(value) < MIN_SECRET_LENGTH or "\n" in value:
        raise ConfigError(
            f"{name}: a signing secret must be one line of at least {MIN_SECRET_LENGTH} "
            "characters (e.g. 'openssl rand -hex 32')"
        )


# ---------------------------------------------------------------------------- the key file


def read_secrets(path: Path) -> list[bytes]:
    """The secrets of a key file, signing key first; ConfigError naming the problem."""
    try:
        with path.open("rb") as file:
            raw = file.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read signing keys {path}: {exc.strerror}") from exc
    if len(raw) > MAX_FILE_BYTES:
        raise ConfigError(f"{path}: larger than {MAX_FILE_BYTES} bytes; not a signing key file")
    lines = [line.strip() for line in raw.split(b"\n")]
    found = [line for line in lines if line and not line.startswith(b"#")]
    for number, line in enumerate(found, 1):
        if len(line) < MIN_SECRET_LENGTH:
            raise ConfigError(
                f"{path}: key {number} is shorter than {MIN_SECRET_LENGTH} characters"
            )
    if not found:
        raise ConfigError(f"{path}: no signing key in the file")
    return found


def write_keys_file(path: Path, secrets_: list[str]) -> None:
    """Replace the key file atomically (temporary file + rename, mode 0600)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    _write_private(tmp, secrets_)
    os.replace(tmp, path)


def create_keys_file(path: Path, secrets_: list[str]) -> bool:
    """Create the key file unless it exists (two processes racing: one wins, both then read
    the same key). Returns whether this call created it."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    _write_private(tmp, secrets_)
    try:
        os.link(tmp, path)  # fails if the file exists: never overwrites another's key
    except FileExistsError:
        return False
    finally:
        tmp.unlink()
    return True


def _write_private(path: Path, secrets_: list[str]) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as file:
        file.write(_HEADER + "".join(f"{s}\n" for s in secrets_))
        file.flush()
        os.fsync(file.fileno())


def edit_keys_file(path: Path, change: Callable[[list[str]], list[str]]) -> list[str]:
    """Apply ``change`` to the file's secrets (signing key first) and write the result."""
    current = [s.decode() for s in read_secrets(path)]
    updated = change(current)
    write_keys_file(path, updated)
    return updated


def worker_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """What ``up`` and ``run`` pass their workers so they sign and verify with the same keys:
    the key variables when set, else the key file's path (created when missing)."""
    env = os.environ if environ is None else environ
    if env.get(SIGNING_KEY_ENV):
        names = (SIGNING_KEY_ENV, VERIFY_KEYS_ENV)
        return {name: env[name] for name in names if env.get(name)}
    ensure_keyring(env)
    return {KEYS_FILE_ENV: str(keys_file(env).resolve())}
