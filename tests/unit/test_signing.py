"""Signing keys (agent_runtime/signing.py, ``agent-runtime keys``) and freshness settings:
where keys come from, how a running process follows a rotation, and what config is refused."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import pytest
import yaml

from agent_runtime.cli import main
from agent_runtime.config.validation import problems
from agent_runtime.errors import ConfigError
from agent_runtime.signing import (
    KEYS_FILE_ENV,
    SIGNING_KEY_ENV,
    VERIFY_KEYS_ENV,
    Keyring,
    create_keys_file,
    ensure_keyring,
    key_id,
    load_keyring,
    read_secrets,
    worker_env,
)
from agent_runtime.worker.fate import HANDLE, Rules, fate_of

STREAM = "ar:inbox:echo"


def env_with(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {KEYS_FILE_ENV: str(tmp_path / "signing-keys"), **extra}


def test_the_environment_key_wins_and_verify_keys_only_verify(tmp_path: Path) -> None:
    env = env_with(
        tmp_path, **{SIGNING_KEY_ENV: "new-key-0123456789", VERIFY_KEYS_ENV: "old-key-0123456789, "}
    )
    ring = load_keyring(env)
    assert ring is not None and ring.ids == [
        key_id(b"new-key-0123456789"),
        key_id(b"old-key-0123456789"),
    ]
    kid, mac = ring.sign(STREAM, b"data")
    assert kid == key_id(b"new-key-0123456789").encode()
    old_kid, old_mac = Keyring.of(b"old-key-0123456789").sign(STREAM, b"data")
    assert ring.verify(STREAM, b"data", old_kid, old_mac) == ""
    assert ring.verify("ar:inbox:sink", b"data", kid, mac)  # another stream: refused
    assert not (tmp_path / "signing-keys").exists()  # the file is not used, not created


@pytest.mark.parametrize("bad", ["short", "line\nbreak-0123456789"])
def test_weak_environment_keys_are_refused(tmp_path: Path, bad: str) -> None:
    with pytest.raises(ConfigError, match="at least 16"):
        load_keyring(env_with(tmp_path, **{SIGNING_KEY_ENV: bad}))


def test_the_key_file_is_created_once_private_and_never_overwritten(tmp_path: Path) -> None:
    env = env_with(tmp_path)
    assert load_keyring(env) is None
    first = ensure_keyring(env)
    path = tmp_path / "signing-keys"
    assert path.stat().st_mode & 0o777 == 0o600
    assert ensure_keyring(env).ids == first.ids  # kept: the next run signs with it too
    assert not create_keys_file(path, ["another-secret-0123456789"])
    assert load_keyring(env).ids == first.ids  # type: ignore[union-attr]
    assert worker_env(env) == {KEYS_FILE_ENV: str(path.resolve())}
    assert worker_env({SIGNING_KEY_ENV: "k" * 16}) == {SIGNING_KEY_ENV: "k" * 16}


def cli(*args: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(list(args)) == 0
    return out.getvalue()


def test_a_running_process_follows_rotate_and_retire(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(SIGNING_KEY_ENV, raising=False)
    path = tmp_path / "signing-keys"
    assert "created" in cli("keys", "init", "--file", str(path))
    running = Keyring.from_file(path)  # a worker that loaded the ring before the rotation
    old_kid, old_mac = running.sign(STREAM, b"x")

    out = cli("keys", "rotate", "--file", str(path), "--settle", "0")
    new, old = read_secrets(path)
    assert key_id(old).encode() == old_kid and f"key {key_id(new)} now signs" in out
    assert new.decode() not in out and old.decode() not in out  # secrets are never printed
    new_kid, new_mac = Keyring.of(new).sign(STREAM, b"x")
    assert running.verify(STREAM, b"x", new_kid, new_mac) == ""  # unknown id: re-read at once
    running._next_check = 0.0  # the periodic re-read is due
    assert running.sign(STREAM, b"x") == (new_kid, new_mac)  # now signs with the new key
    assert running.verify(STREAM, b"x", old_kid, old_mac) == ""  # in-flight entries verify

    listed = cli("keys", "list", "--file", str(path))
    assert f"{key_id(new)}  signs and verifies" in listed and f"{key_id(old)}  verifies" in listed
    assert main(["keys", "retire", key_id(new), "--file", str(path)]) == 2  # it signs
    assert read_secrets(path) == [new, old]
    cli("keys", "retire", key_id(old), "--file", str(path))
    running._next_check = 0.0
    assert "unknown here" in running.verify(STREAM, b"x", old_kid, old_mac)


def test_a_broken_key_file_is_a_one_line_error(tmp_path: Path) -> None:
    path = tmp_path / "signing-keys"
    path.write_text("# only a comment\n")
    with pytest.raises(ConfigError, match="no signing key"):
        read_secrets(path)
    path.write_text("short\n")
    with pytest.raises(ConfigError, match="shorter than 16"):
        read_secrets(path)


def test_max_age_beyond_the_dedup_window_is_refused_with_its_line(tmp_path: Path) -> None:
    config = {
        "allowed_modules": ["tests.fixtures"],
        "worker": {"done_ttl": 600, "max_age": 900},
        "agents": {
            "echo": {"class": "tests.fixtures.agents:Echo"},
            "sink": {"class": "tests.fixtures.agents:Sink", "worker": {"max_age": 60}},
        },
    }
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    [problem] = problems(path)
    assert problem.startswith(f"{path}:") and "max_age (900s) must not exceed done_ttl" in problem
    config["worker"] = {"done_ttl": 600, "max_age": 600}
    config["agents"]["sink"]["worker"] = {"done_ttl": 120}  # type: ignore[index]
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    [problem] = problems(path)
    assert "agents.sink.worker" in problem and "done_ttl" in problem


@pytest.mark.parametrize(
    ("age", "action", "reason"),
    [
        (0.0, "handle", ""),
        (3600.0, "handle", ""),  # exactly max_age: still fresh
        (3600.5, "dead", "stale"),
        (2 * 86400.0, "dead", "stale"),
        (-60.0, "handle", ""),  # within the clock tolerance
        (-61.0, "dead", "clock_skew"),
        (-365 * 86400.0, "dead", "clock_skew"),
        (float("nan"), "dead", "stale"),
    ],
)
def test_freshness_fates(age: float, action: str, reason: str) -> None:
    rules = Rules("echo", 5, max_age=3600.0, clock_skew=60.0)
    fate = fate_of(None, 1, rules, age=age, to_agent="echo")
    assert (fate.action, fate.reason) == (action, reason)
    if action == "dead":
        assert fate.status == "rejected"
    else:
        assert fate is HANDLE


def test_max_age_defaults_to_an_hour_or_the_dedup_window_if_shorter() -> None:
    from agent_runtime.config.settings import WorkerSettings

    assert WorkerSettings().freshness == 3600.0
    assert WorkerSettings(done_ttl=600).freshness == 600.0  # never outlives de-duplication
    assert WorkerSettings(done_ttl=600, max_age=30).freshness == 30.0
    assert Rules.of("echo", WorkerSettings(done_ttl=600), ()).max_age == 600.0


@pytest.mark.parametrize("secret", [b"k" * 16, b"x" * 64, b"long" * 40, bytes(range(200))])
def test_the_mac_is_standard_hmac_sha256_over_stream_and_bytes(secret: bytes) -> None:
    import hashlib
    import hmac

    data = b'{"message_id":"...","payload":{"text":"hi"}}'
    name = STREAM.encode()
    expected = hmac.new(secret, len(name).to_bytes(4, "big") + name + data, hashlib.sha256)
    assert Keyring.of(secret).sign(STREAM, data)[1] == expected.hexdigest().encode()


def test_the_mac_is_the_same_for_any_number_of_streams() -> None:
    """The per-stream inner states are a bounded cache: past STREAM_STATES streams it starts
    over, and every MAC stays the standard one (reply streams come and go)."""
    import hashlib
    import hmac

    from agent_runtime.signing import STREAM_STATES

    secret, data = b"s" * 32, b'{"payload":{"text":"hi"}}'
    ring = Keyring.of(secret)
    for n in [*range(STREAM_STATES + 3), 0, 1]:
        stream = f"ar:reply:{{{n}}}"
        name = stream.encode()
        expected = hmac.new(secret, len(name).to_bytes(4, "big") + name + data, hashlib.sha256)
        kid, mac = ring.sign(stream, data)
        assert mac == expected.hexdigest().encode()
        assert ring.verify(stream, data, kid, mac) == ""
        assert ring.verify(stream, data + b" ", kid, mac)  # the cached state is not changed
        assert ring.verify(stream, data, kid.upper(), mac)  # ids are matched as bytes, exactly
    assert all(len(pads.streams) <= STREAM_STATES for pads in ring._bases.values())
