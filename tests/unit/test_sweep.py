"""The deadline sweep's pure parts: where a request waits (from its trace records, whatever
they hold), which code its ``request.failed`` gets, which deadline members are the runtime's,
and which failures leave a member for the next round."""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from redis import exceptions as redis_errors

from agent_runtime.agent import Output
from agent_runtime.client import _published_record
from agent_runtime.transport.keys import Keys
from agent_runtime.transport.streams import Entry
from agent_runtime.worker.delivery import Tracer
from agent_runtime.worker.sweep import (
    Waiting,
    deadline_member,
    failure_reply,
    parse_member,
    settled,
    verdict,
    waiting_on,
)
from protocols.core import RequestFailed
from protocols.envelope import AgentMessage, utcnow

KEYS = Keys("ar")
CID = uuid.uuid4()


def request() -> AgentMessage:
    return AgentMessage(
        message_id=uuid.uuid4(),
        correlation_id=CID,
        from_agent="client",
        to_agent="echo",
        message_type="user.request",
        schema_version=1,
        payload={"text": "hi"},
        timestamp=utcnow(),
        reply_to=KEYS.reply(str(CID)),
    )


def handled(message: AgentMessage, agent: str, *outputs: tuple[str, str]) -> tuple[bytes, list]:
    """The worker's record of ``message`` and the outputs it sent (to, message type)."""
    sent = [
        message.derive(
            index=i,
            from_agent=agent,
            to_agent=to,
            message_type=kind,
            schema_version=1,
            payload={},
            now=utcnow(),
        )
        for i, (to, kind) in enumerate(outputs)
    ]
    entry = Entry("inbox", b"1-0", {})
    record = Tracer(agent, f"{agent}-0").record(
        message, entry, "handled", time.time(), outputs=[Output("s", m) for m in sent]
    )
    return record, sent


def published(message: AgentMessage) -> bytes:
    return json.dumps(_published_record(message)).encode()


def test_it_waits_where_a_sent_message_has_no_record_of_its_own() -> None:
    first = request()
    echo_record, (echoed,) = handled(first, "echo", ("sink", "test.echoed"))
    assert waiting_on([published(first)]) == [Waiting("echo", "user.request", first.id_text)]
    assert waiting_on([published(first), echo_record]) == [
        Waiting("sink", "test.echoed", echoed.id_text)
    ]


def test_replies_are_not_waiting_and_all_handled_names_the_last_agent() -> None:
    first = request()
    echo_record, (echoed,) = handled(first, "echo", ("sink", "test.echoed"))
    sink_record, _ = handled(echoed, "sink", ("client", "test.reply"))
    assert waiting_on([published(first), echo_record, sink_record]) == [
        Waiting("sink", "test.echoed")
    ]
    assert waiting_on([]) == []


@pytest.mark.parametrize(
    ("waiting", "live", "expected"),
    [
        ([Waiting("a", "x"), Waiting("b", "y")], {"a"}, ("no_consumer", Waiting("b", "y"))),
        ([Waiting("a", "x")], {"a"}, ("expired", Waiting("a", "x"))),
        ([Waiting("zzz", "x")], set(), ("expired", Waiting("zzz", "x"))),  # not ours
        ([], set(), ("expired", Waiting("", ""))),  # no trace
    ],
)
def test_verdict(waiting: list[Waiting], live: set[str], expected: tuple[str, Waiting]) -> None:
    assert verdict(waiting, live, ["a", "b"]) == expected


def test_members_round_trip_and_only_the_requests_own_reply_stream_counts() -> None:
    cid = str(CID)
    assert parse_member(deadline_member(cid, KEYS.reply(cid)).encode(), KEYS) == (
        cid,
        KEYS.reply(cid),
    )
    assert parse_member(deadline_member(cid, KEYS.inbox("echo")), KEYS) is None
    assert parse_member(deadline_member(cid.upper(), KEYS.reply(cid.upper())), KEYS) is None


@pytest.mark.parametrize(
    ("result", "done"),
    [
        (1, True),
        (0, True),
        (-1, True),
        (redis_errors.ResponseError("WRONGTYPE Operation against a key"), True),
        (redis_errors.ResponseError("CROSSSLOT Keys in request"), True),
        (
            redis_errors.OutOfMemoryError("command not allowed when used memory > 'maxmemory'"),
            False,
        ),
        (redis_errors.BusyLoadingError("Redis is loading the dataset in memory"), False),
        (redis_errors.ResponseError("BUSY Redis is busy running a script"), False),
        (redis_errors.TryAgainError("Multiple keys request during rehashing of slot"), False),
        (redis_errors.ReadOnlyError("You can't write against a read only replica."), False),
        (redis_errors.ClusterDownError("The cluster is down"), False),
        (redis_errors.MasterDownError("Link with MASTER is down"), False),
        (redis_errors.MovedError("3999 127.0.0.1:6381"), False),
        (redis_errors.AskError("3999 127.0.0.1:6381"), False),
        (redis_errors.ConnectionError("reset"), False),
        (redis_errors.TimeoutError("timeout"), False),
    ],
)
def test_transient_failures_leave_the_member_for_the_next_round(result: Any, done: bool) -> None:
    assert settled(result) is done


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=300),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=20), inner),
    max_leaves=30,
)
RECORD = st.fixed_dictionaries(
    {},
    optional={
        "agent": JSON,
        "outcome": st.sampled_from(["published", "handled", "dead_lettered"]) | JSON,
        "message_id": st.text(max_size=100) | JSON,
        "to_agent": st.text(max_size=300) | JSON,
        "message_type": st.text(max_size=300) | JSON,
        "outputs": st.lists(
            st.fixed_dictionaries(
                {},
                optional={"message_id": st.text(max_size=80), "to": JSON, "message_type": JSON},
            )
            | JSON,
            max_size=4,
        )
        | JSON,
    },
)
RAW = st.binary(max_size=300) | RECORD.map(lambda r: json.dumps(r).encode())


@settings(max_examples=100, deadline=None)
@given(st.lists(RAW, max_size=12))
def test_any_trace_content_gives_a_valid_reply(records: list[bytes]) -> None:
    waiting = waiting_on(records)
    code, where = verdict(waiting, set(), ["echo", "sink"])
    cid = str(CID)
    reply = failure_reply(cid, KEYS.reply(cid), code, where, datetime.now(UTC))
    failed = RequestFailed.model_validate(reply.payload)
    assert failed.code == code and failed.status == "timeout"


def test_deeply_nested_and_oversized_records_are_skipped() -> None:
    deep = b"[" * 20_000 + b"]" * 20_000  # under the size cap, past the parser's depth
    huge = json.dumps({"agent": "x" * 100_000, "outcome": "handled"}).encode()
    assert waiting_on([deep, huge]) == []


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200) | st.text(max_size=200))
def test_any_member_parses_or_is_refused(raw: bytes | str) -> None:
    parsed = parse_member(raw, KEYS)
    assert parsed is None or parsed[1] == KEYS.reply(parsed[0])
