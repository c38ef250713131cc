"""Trace records are formatted by hand on the hot path: they must still be exactly the JSON
object ``trace``/``status`` read back, whatever text the free-form fields hold."""

from __future__ import annotations

import json
import time
import uuid

import pytest

from agent_runtime.agent import Output
from agent_runtime.cli.progress import hop_line
from agent_runtime.transport.streams import Entry
from agent_runtime.worker.delivery import Tracer, expand_trace
from protocols.envelope import AgentMessage, utcnow

AWKWARD = ["plain", 'quote " and \\ backslash', "new\nline\ttab\x01ctl", "unicodé ✓ 𝄞", ""]


def message(from_agent: str = "client", causation: uuid.UUID | None = None) -> AgentMessage:
    return AgentMessage(
        message_id=uuid.uuid4(),
        correlation_id=uuid.uuid4(),
        causation_id=causation,
        from_agent=from_agent,
        to_agent="planner",
        message_type="intent.parsed",
        schema_version=1,
        payload={},
        timestamp=utcnow(),
    )


@pytest.mark.parametrize("text", AWKWARD)
def test_record_is_valid_json_with_every_field(text: str) -> None:
    tracer = Tracer("planner", f"planner-{text}-0")
    msg = message(from_agent=text[:64], causation=uuid.uuid4())
    out = message().derive(
        index=0,
        from_agent="planner",
        to_agent="safety",
        message_type="plan.proposed",
        schema_version=1,
        payload={},
        now=utcnow(),
    )
    started = time.time() - 0.25
    raw = tracer.record(
        msg,
        Entry("s", b"1-0", {}, delivery_count=3),
        "dead_lettered",
        started,
        reason=text,
        outputs=[Output("inbox", out)],
    )
    record = json.loads(raw)
    assert record.pop("finished_ms") >= record["started_ms"] == int(started * 1000)
    assert 250 <= record.pop("duration_ms") < 60_000
    assert record == {
        "agent": "planner",
        "consumer": f"planner-{text}-0",
        "correlation_id": str(msg.correlation_id),
        "message_id": str(msg.message_id),
        "causation_id": str(msg.causation_id),
        "message_type": "intent.parsed",
        "from_agent": text[:64],
        "to_agent": "planner",
        "outcome": "dead_lettered",
        "reason": text,
        "delivery_count": 3,
        "started_ms": int(started * 1000),
        "outputs": [
            {"message_id": str(out.message_id), "message_type": "plan.proposed", "to": "safety"}
        ],
    }


def test_record_without_causation_reason_or_outputs() -> None:
    msg = message()
    record = json.loads(Tracer("a", "c").record(msg, Entry("s", b"1-0", {}), "handled", 0.0))
    assert record["causation_id"] == ""
    assert record["reason"] == ""
    assert record["outputs"] == []
    assert record["started_ms"] == record["finished_ms"]  # started 0: the record's own time


def test_records_expand_to_text_fields() -> None:
    raw = Tracer("a", "c").record(message(), Entry("s", b"1-0", {}), "handled", time.time())
    fields = expand_trace(raw)
    assert fields[b"outcome"] == b"handled"
    assert fields[b"outputs"] == b"[]"
    assert fields[b"delivery_count"] == b"1"


@pytest.mark.parametrize("raw", [b"", b"not json", b"[1, 2]", b'"text"', b"\xff\xfe"])
def test_a_record_that_is_not_a_json_object_expands_to_nothing(raw: bytes) -> None:
    assert expand_trace(raw) == {}
    assert hop_line(raw, 0) is None


def test_hop_line_of_worker_and_client_records() -> None:
    msg = message()
    raw = Tracer("planner", "planner-0").record(msg, Entry("s", b"1-0", {}), "handled", 0.0)
    finished = json.loads(raw)["finished_ms"]
    line = hop_line(raw, finished - 1500)
    assert line is not None
    assert line.startswith("  +  1.50s  planner") and "intent.parsed" in line
    assert line.endswith("handled")
    published = {"agent": "client", "outcome": "published", "message_type": "user.request"}
    assert hop_line(json.dumps(published).encode(), 0) is None


@pytest.mark.parametrize("elapsed", [0.0, 0.0004, 0.00105, 0.25, 1.5, 3601.25])
def test_duration_is_the_elapsed_milliseconds_to_the_microsecond(
    elapsed: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = 1_763_900_000.5
    monkeypatch.setattr(time, "time", lambda: now)
    started = now - elapsed
    raw = Tracer("a", "a-0").record(message(), Entry("s", b"1-0", {}), "handled", started)
    record = json.loads(raw)
    assert record["duration_ms"] == pytest.approx(elapsed * 1000, abs=0.0015)
    assert record["finished_ms"] - record["started_ms"] == int(now * 1000) - int(started * 1000)


def test_a_wall_clock_step_back_gives_zero_not_a_negative_duration(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(time, "time", lambda: 1_763_900_000.0)
    raw = Tracer("a", "a-0").record(message(), Entry("s", b"1-0", {}), "handled", 1_763_900_002.0)
    assert json.loads(raw)["duration_ms"] == 0


def test_the_cached_names_stay_per_combination() -> None:
    tracer = Tracer("a", "a-0")
    first = json.loads(tracer.record(message("x"), Entry("s", b"1-0", {}), "handled", 0.0))
    second = json.loads(tracer.record(message("y"), Entry("s", b"1-0", {}), "skipped", 0.0))
    third = json.loads(tracer.record(message("x"), Entry("s", b"1-0", {}), "skipped", 0.0))
    assert (first["from_agent"], first["outcome"]) == ("x", "handled")
    assert (second["from_agent"], second["outcome"]) == ("y", "skipped")
    assert (third["from_agent"], third["outcome"]) == ("x", "skipped")


def test_a_given_clock_reading_is_the_records_finish_and_is_not_kept_stale() -> None:
    tracer = Tracer("a", "a-0")
    entry = Entry("s", b"1-0", {})
    first = json.loads(tracer.record(message(), entry, "handled", 1_000.25, now=1_000.5))
    same = json.loads(tracer.record(message(), entry, "handled", 1_000.0, now=1_000.5))
    later = json.loads(tracer.record(message(), entry, "handled", 1_000.0, now=1_002.0))
    assert (first["finished_ms"], first["duration_ms"]) == (1_000_500, 250)
    assert (same["finished_ms"], same["duration_ms"]) == (1_000_500, 500)
    assert (later["finished_ms"], later["duration_ms"]) == (1_002_000, 2_000)
