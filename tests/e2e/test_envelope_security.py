"""Signed by default, fresh or refused (issue 14), through real worker processes on the real
server: no signing key in any environment -- the test helpers create one in the runtime
directory, as ``up`` and ``run`` do -- and every forged, tampered, cross-routed, replayed,
stale or future entry is dead-lettered on its first delivery without its handler running.
The Echo agent touches a marker file per handler call: the count of tool executions."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from agent_runtime.cli import main
from agent_runtime.codec import FIELD_KEY_ID, FIELD_MESSAGE, Codec
from agent_runtime.signing import (
    KEYS_FILE_ENV,
    KEYS_FILE_NAME,
    SIGNING_KEY_ENV,
    VERIFY_KEYS_ENV,
    key_id,
    read_secrets,
)
from agent_runtime.testing import wait_until
from protocols.envelope import AgentMessage
from tests.fixtures.pipeline import FAST, LivePipeline, MakePipeline, child_env, echo_sink

pytestmark = pytest.mark.e2e


@pytest.fixture
def home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A fresh runtime directory and no key anywhere in the environment (a fresh clone)."""
    for name in (SIGNING_KEY_ENV, VERIFY_KEYS_ENV, KEYS_FILE_ENV):
        monkeypatch.delenv(name, raising=False)
    path = tmp_path / "home"
    monkeypatch.setenv("AGENT_RUNTIME_HOME", str(path))
    return path


@pytest.fixture
def subprocess_env(home: Path) -> dict[str, str]:
    """The worker processes' environment: the test's, so no key variable either."""
    return child_env()


class Env(LivePipeline):
    """echo -> sink with the marker directory of the Echo agent's handler calls."""

    @property
    def markers(self) -> Path:
        return Path(self.data["agents"]["echo"]["config"]["marker_dir"])

    def executions(self, message: AgentMessage) -> int:
        return len(list(self.markers.glob(f"*-{message.message_id}")))

    def stored(self, stream: str, message: AgentMessage, id_field: str = "message_id") -> Any:
        """The exact fields of the entry of ``message`` in ``stream`` (``causation_id``: of
        the output of handling ``message``)."""
        for _id, fields in self.r.xrange(stream):
            if json.loads(fields[FIELD_MESSAGE])[id_field] == str(message.message_id):
                return dict(fields)
        raise AssertionError(f"no entry of {message.message_id} in {stream}")

    def letters(self, agent: str = "echo") -> dict[str, dict[bytes, bytes]]:
        """Dead letters by the message id of their original envelope (kept whole: they are
        small), whether or not it was decoded."""
        return {
            json.loads(letter[b"orig.m"])["message_id"]: letter
            for letter in self.dead_letters(agent)
        }

    def server_now(self) -> datetime:
        seconds, micros = self.r.time()
        return datetime.fromtimestamp(seconds + micros / 1e6, UTC)


@pytest.fixture
def env(make_pipeline: MakePipeline, tmp_path: Path, home: Path) -> Iterator[Env]:
    markers = tmp_path / "markers"
    markers.mkdir()
    worker = {**FAST, "done_ttl": 60, "max_age": 10, "clock_skew": 5}
    pipe = make_pipeline(echo_sink({"marker_dir": str(markers)}), worker=worker, cls=Env)
    yield pipe


def test_signing_is_on_by_default_with_the_key_the_helpers_keep(env: Env, home: Path) -> None:
    key_file = home / KEYS_FILE_NAME
    assert key_file.stat().st_mode & 0o777 == 0o600
    [secret] = read_secrets(key_file)
    env.start_all()
    message = env.publish("hello")  # the real Client: it finds the same key file
    wait_until(lambda: env.replies(message), 30, message="reply")
    stored = env.stored(env.keys.inbox("echo"), message)
    assert stored[FIELD_KEY_ID] == key_id(secret).encode()
    assert env.replies(message) == [{"text": "HELLO"}]


def test_unsigned_forged_tampered_and_cross_routed_entries_die_on_first_delivery(
    env: Env,
) -> None:
    env.start_all()
    inbox, sink_inbox = env.keys.inbox("echo"), env.keys.inbox("sink")
    legit = env.publish(env.message("legit"))
    wait_until(lambda: env.replies(legit), 30, message="legit reply")
    sink_entry = env.stored(
        sink_inbox, legit, "causation_id"
    )  # written and signed by the echo worker
    sink_message = json.loads(sink_entry[FIELD_MESSAGE])

    unsigned, forged, tampered = (env.message(t) for t in ("unsigned", "forged", "tamper me"))
    env.r.xadd(inbox, Codec(env.pipeline.schemas).encode(unsigned, inbox))
    attacker = Codec(env.pipeline.schemas, signing_key=b"attacker-guessed-key")
    env.r.xadd(inbox, attacker.encode(forged, inbox))
    fields = env.codec.encode(tampered, inbox)
    fields[FIELD_MESSAGE] = fields[FIELD_MESSAGE].replace(b"tamper me", b"tamper ME")
    env.r.xadd(inbox, fields)
    env.r.xadd(inbox, sink_entry)  # a validly signed entry, copied to another agent's inbox

    wait_until(lambda: len(env.dead_letters()) == 4, 30, message="four dead letters")
    letters = env.letters()
    for message_id in (unsigned.message_id, forged.message_id, tampered.message_id):
        assert letters[str(message_id)][b"reason"] == b"bad_signature"
    crossed = letters[sink_message["message_id"]]
    assert crossed[b"reason"] == b"bad_signature"  # refused by the MAC, before any routing
    assert all(d[b"delivery_count"] == b"1" for d in env.dead_letters())
    assert [env.executions(m) for m in (unsigned, forged, tampered)] == [0, 0, 0]
    assert len(env.inbox("sink")) == 1  # nothing reached the sink but the legit output
    after = env.publish("still serving")
    wait_until(lambda: env.replies(after), 30, message="signed traffic continues")


def test_replays_past_dedup_stale_and_future_entries_never_run(env: Env) -> None:
    env.start_all()
    inbox = env.keys.inbox("echo")
    once = env.publish(env.message("run once", deadline_in=120))
    wait_until(lambda: env.replies(once), 30, message="first run")
    exact = env.stored(inbox, once)
    assert env.executions(once) == 1

    # The replay comes after the de-duplication window: its done marks are gone (their TTL,
    # done_ttl, is 60-120 s; deleted here rather than waited for) and max_age has passed
    # on the server's clock since the message was stamped.
    wait_until(
        lambda: env.server_now() > once.timestamp + timedelta(seconds=10.5),
        30,
        message="max_age passed on the server's clock",
    )
    done_keys = list(env.r.scan_iter(env.keys.done("echo", 0).rsplit(":", 1)[0] + ":*"))
    assert done_keys and env.r.delete(*done_keys)
    env.r.xadd(inbox, exact)  # the exact stored bytes, signature and all

    now = env.server_now()
    old = env.message("two days old", timestamp=now - timedelta(days=2), deadline_in=120)
    ahead = env.message("a year ahead", timestamp=now + timedelta(days=365), deadline_in=120)
    env.inject(old)
    env.inject(ahead)

    wait_until(lambda: len(env.dead_letters()) == 3, 30, message="three dead letters")
    letters = env.letters()
    assert letters[str(once.message_id)][b"reason"] == b"stale"
    assert letters[str(old.message_id)][b"reason"] == b"stale"
    assert letters[str(ahead.message_id)][b"reason"] == b"clock_skew"
    assert all(d[b"delivery_count"] == b"1" for d in env.dead_letters())
    assert [env.executions(m) for m in (once, old, ahead)] == [1, 0, 0]
    # Trustworthy (signed) envelopes: their requesters are told, once.
    for message, code in ((old, "stale"), (ahead, "clock_skew")):
        wait_until(lambda m=message: env.replies(m), 30, message=f"{code} failure reply")
        [reply] = env.replies(message)
        assert reply["code"] == code and reply["status"] == "rejected"
    assert env.replies(once) == [{"text": "RUN ONCE"}]  # its request had ended already


def test_keys_rotate_without_downtime(env: Env, home: Path) -> None:
    env.start_all()
    before = env.publish("before rotation")
    wait_until(lambda: env.replies(before), 30, message="reply before rotation")
    old_secret = read_secrets(home / KEYS_FILE_NAME)[0]
    in_flight = env.message("signed with the old key")
    out = _cli("keys", "rotate", "--settle", "5")
    new_secret, still = read_secrets(home / KEYS_FILE_NAME)
    assert still == old_secret and new_secret != old_secret
    assert f"key {key_id(new_secret)} now signs" in out and new_secret.decode() not in out
    inbox = env.keys.inbox("echo")
    env.r.xadd(inbox, Codec(env.pipeline.schemas, signing_key=old_secret).encode(in_flight, inbox))
    after = env.publish("after rotation")  # a new client signs with the new key
    for message in (in_flight, after):
        wait_until(lambda m=message: env.replies(m), 30, message="reply across the rotation")
    assert env.stored(inbox, after)[FIELD_KEY_ID] == key_id(new_secret).encode()
    output = env.stored(env.keys.inbox("sink"), after, "causation_id")  # a worker's output
    assert output[FIELD_KEY_ID] == key_id(new_secret).encode()
    assert env.dead_letters() == [] and env.dead_letters("sink") == []


def test_signing_off_is_explicit_and_status_warns(make_pipeline: MakePipeline, home: Path) -> None:
    pipe = make_pipeline(signing="off")
    pipe.start_all()
    plain = pipe.message("unsigned but allowed")
    pipe.r.xadd(pipe.keys.inbox("echo"), {FIELD_MESSAGE: plain.model_dump_json().encode()})
    wait_until(lambda: pipe.replies(plain), 30, message="reply without signing")
    code, text = pipe.cli("status")
    assert code == 0 and "WARNING: signing: off" in text
    health: dict[str, Any] = pipe.cli_json("health")
    assert any("signing: off" in w for w in health["warnings"])


def _cli(*args: str) -> str:
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(list(args)) == 0
    return out.getvalue()
