"""The deadline sweep: the fleet itself answers a request that nobody else did.

Every request carries a deadline (``requests.deadline`` by default) and ``Client.send`` enters
it in ``P:deadlines`` (score: deadline in epoch ms, member ``"CID REPLY_STREAM"``). Every
worker runs :class:`DeadlineSweep` beside its consume loop; about every ``sweep_interval``
seconds it peeks at the set, and when a member is due (on the server's clock) it takes the
sweep lock (``SET NX PX``, a token, released by compare-and-delete) and handles a bounded batch:

* where does the request wait? The last records of its trace list: messages sent (the
  client's ``published`` record, each record's ``outputs``) without a record of their own;
* ``no_consumer`` when an agent type it waits on has no live worker (a heartbeat key of a
  consumer of its group, not ``stopping``), else ``expired``;
* one script per request, on the request's slot: ``SET outcome NX`` and, only if that
  succeeded, XADD ``request.failed`` to the reply stream (+ EXPIRE) -- the same outcome guard
  every terminal reply goes through, so a request gets exactly one terminal reply whoever
  races (another sweep, a worker dead-lettering it, the reporter's success reply);
* one ``ZREM`` of every member handled, answered or not (a set guard means it was answered).

See docs/architecture.md ("Deadlines and the deadline sweep").
"""

from __future__ import annotations

import asyncio
import json
import random
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import anyio
import structlog

from agent_runtime.agent import REPLY_TTL
from agent_runtime.codec import Codec
from agent_runtime.config.pipeline import Pipeline
from agent_runtime.policies.clock import RedisClock
from agent_runtime.policies.errors import classify
from agent_runtime.transport.base import Transport
from agent_runtime.transport.deadlines import Answer
from agent_runtime.transport.keys import Keys
from protocols.core import RequestFailed
from protocols.envelope import OUTPUT_ID_NAMESPACE, AgentMessage

if TYPE_CHECKING:
    from agent_runtime.worker.loop import Worker

#: ``from_agent`` of the replies the sweep writes.
SWEEP_AGENT = "deadline-sweep"
#: Trace records read (the newest) to find where a request waits.
TRACE_WINDOW = 64
#: A trace record longer than this is not parsed (a record is normally < 2 KB).
MAX_RECORD_BYTES = 64 * 1024
#: Consumers of an agent type's group whose heartbeat is checked (most recently active first).
HEARTBEAT_CHECKS = 64
#: Longest back-off after a failed round (seconds).
MAX_BACKOFF = 5.0


def deadline_member(correlation_id: str, reply_stream: str) -> str:
    return f"{correlation_id} {reply_stream}"


def deadline_entry(keys: Keys, message: AgentMessage) -> tuple[str, int] | None:
    """``(member, score ms)`` of ``message`` in ``P:deadlines`` (``Client.send`` adds it with
    ``ZADD GT``: a later deadline of the same request -- an approval decision -- extends it,
    never shortens it), or None: only a message with a deadline whose reply stream is the
    request's own (``keys.reply``, same slot as its outcome guard) is registered."""
    cid = message.correlation_text
    if message.deadline is None or message.reply_to != keys.reply(cid):
        return None
    return deadline_member(cid, message.reply_to), int(message.deadline.timestamp() * 1000)


def parse_member(raw: bytes | str, keys: Keys) -> tuple[str, str] | None:
    """``(correlation id, reply stream)`` of a deadline member, or None if it is not one the
    runtime wrote (the reply stream must be the request's own)."""
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    cid, _, stream = text.partition(" ")
    try:
        canonical = str(uuid.UUID(cid))
    except ValueError:
        return None
    return (canonical, stream) if cid == canonical and stream == keys.reply(cid) else None


@dataclass(frozen=True, slots=True)
class Waiting:
    """A message of the request that no agent has finished: where it waits."""

    agent: str
    stage: str  # its message type
    message_id: str = ""


def waiting_on(records: Iterable[bytes]) -> list[Waiting]:
    """The messages the trace records show as sent but not yet handled (oldest first). With
    none (all handled: the request waits elsewhere, e.g. for an approval), the agent of the
    last record; empty without records (tracing off)."""
    sent: dict[str, Waiting] = {}
    seen: set[str] = set()
    last: Waiting | None = None
    for record in map(_record, records):
        if record is None:
            continue
        kind = record.get("message_type")
        if record.get("outcome") == "published":
            _note(sent, record.get("message_id"), record.get("to_agent"), kind)
            continue
        seen.add(str(record.get("message_id")))
        last = _waiting(record.get("agent"), kind)
        outputs = record.get("outputs")
        for out in outputs if isinstance(outputs, list) else []:
            if isinstance(out, dict):
                _note(sent, out.get("message_id"), out.get("to"), out.get("message_type"))
    pending = [w for mid, w in sent.items() if mid not in seen and w.agent != "client"]
    return pending or ([last] if last else [])


def _record(raw: bytes) -> dict[str, Any] | None:
    if len(raw) > MAX_RECORD_BYTES:
        return None
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def _note(sent: dict[str, Waiting], message_id: Any, agent: Any, stage: Any) -> None:
    if isinstance(message_id, str) and isinstance(agent, str):
        sent[message_id] = _waiting(agent, stage, message_id[:36])


def _waiting(agent: Any, stage: Any, message_id: str = "") -> Waiting:
    """A Waiting within the limits of ``RequestFailed`` whatever the record says."""
    return Waiting(
        agent[:64] if isinstance(agent, str) else "",
        stage[:128] if isinstance(stage, str) else "",
        message_id,
    )


def verdict(waiting: list[Waiting], live: set[str], agents: Iterable[str]) -> tuple[str, Waiting]:
    """``(code, where)``: ``no_consumer`` at the first agent type of this pipeline it waits on
    that has no live worker, else ``expired`` where it waits first."""
    known = set(agents)
    for where in waiting:
        if where.agent in known and where.agent not in live:
            return "no_consumer", where
    return "expired", waiting[0] if waiting else Waiting("", "")


def failure_reply(
    correlation_id: str, reply_stream: str, code: str, where: Waiting, now: datetime
) -> AgentMessage:
    """The ``request.failed`` envelope the sweep writes (its id is derived from the request:
    every sweep builds the same one)."""
    if code == "no_consumer":
        reason = f"no live worker of agent type {where.agent!r} took it before its deadline"
    elif where.agent:
        reason = f"its deadline passed while it waited for {where.agent!r}"
    else:
        reason = "its deadline passed before it was answered"
    payload = RequestFailed(
        status="timeout", reason=reason, agent=where.agent, stage=where.stage, code=code
    )
    causation = _uuid(where.message_id)
    return AgentMessage(
        message_id=uuid.uuid5(OUTPUT_ID_NAMESPACE, f"{correlation_id}:deadline"),
        correlation_id=uuid.UUID(correlation_id),
        causation_id=causation,
        from_agent=SWEEP_AGENT,
        to_agent="client",
        message_type=payload.message_type,
        schema_version=payload.schema_version,
        payload=payload.model_dump(mode="json"),
        timestamp=now,
        reply_to=reply_stream,
    )


def _uuid(text: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(text) if text else None
    except ValueError:
        return None


def settled(result: Any) -> bool:
    """Whether a member's answer script settled it: ran (answered, already answered, or the
    reply key is unusable), or failed for good (a command error about its keys). A transient
    failure (OOM, BUSY, a lost connection, ...) leaves it for the next round."""
    return not isinstance(result, BaseException) or classify(result) == "permanent"


class DeadlineSweep:
    """One process's share of the sweep. ``await run(stopping)`` beside the consume loop."""

    def __init__(
        self, transport: Transport, pipeline: Pipeline, codec: Codec, *, owner: str, log: Any = None
    ) -> None:
        self.deadlines = transport.deadlines  # its key names must be the pipeline's
        self.pipeline = pipeline
        self.codec = codec
        self.keys = pipeline.config.keys
        self.settings = pipeline.config.requests
        self.token = f"{owner}:{uuid.uuid4().hex}"
        self.clock = RedisClock(transport.clock)
        self.log = log or structlog.get_logger("agent_runtime.worker.sweep")
        self.lock_ms = max(1_000, int(self.settings.sweep_interval * 4_000))
        self.answered = 0  # replies written by this process (tests, metrics)

    @classmethod
    def for_worker(cls, worker: Worker) -> DeadlineSweep:
        return cls(
            worker.transport, worker.pipeline, worker.codec, owner=worker.consumer, log=worker.log
        )

    async def run(self, stopping: asyncio.Event) -> None:
        """Sweep until ``stopping`` is set; a failed round is logged and retried after a
        jittered back-off that resets after a good round."""
        interval, backoff = self.settings.sweep_interval, self.settings.sweep_interval
        while not stopping.is_set():
            try:
                handled = await self.sweep_once()
            except Exception as exc:
                self.log.warning("deadline_sweep_failed", error=repr(exc), retry_in=backoff)
                await anyio.sleep(_jittered(backoff))
                backoff = min(backoff * 2, MAX_BACKOFF)
                continue
            backoff = interval
            if handled < self.settings.sweep_batch:  # a full batch settled: go on at once
                await anyio.sleep(_jittered(interval))

    async def sweep_once(self) -> int:
        """One round: members settled (0 when nothing is due, another process holds the lock,
        or every answer failed transiently)."""
        now_ms = int(await self.clock.now() * 1000)
        if not await self.deadlines.due(now_ms, 1):
            return 0
        if not await self.deadlines.lock(self.token, self.lock_ms):
            return 0
        try:
            due = await self.deadlines.due(now_ms, self.settings.sweep_batch)
            return await self.answer(due, now_ms)
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(2):
                await self.release()

    async def release(self) -> None:
        await self.deadlines.unlock(self.token)

    async def answer(self, due: list[bytes], now_ms: int) -> int:
        """Answer the due members (one pipelined round trip), then ZREM the settled ones;
        returns how many were settled (those left failed transiently: the loop waits)."""
        requests = [(raw, parse_member(raw, self.keys)) for raw in due]
        done = [raw for raw, parsed in requests if parsed is None]  # not ours: drop
        valid = [(raw, parsed) for raw, parsed in requests if parsed is not None]
        if valid:
            verdicts = await self._verdicts([cid for _, (cid, _) in valid])
            results = await self._write([p for _, p in valid], verdicts, now_ms)
            for (raw, (cid, _)), found, result in zip(valid, verdicts, results, strict=True):
                self._report(cid, *found, result)
                if settled(result):
                    done.append(raw)
        await self.deadlines.settle(done)
        return len(done)

    async def _write(
        self, requests: list[tuple[str, str]], verdicts: list[tuple[str, Waiting]], now_ms: int
    ) -> list[Any]:
        """One answer per request (transport/deadlines.py ANSWER_SCRIPT); results in order."""
        now = datetime.fromtimestamp(now_ms / 1000, UTC)
        answers = [
            Answer(
                guard=self.keys.outcome(cid),
                guard_value=f"request.failed:{code}",
                stream=stream,
                ttl=REPLY_TTL,
                fields=self.codec.encode(failure_reply(cid, stream, code, where, now), stream),
            )
            for (cid, stream), (code, where) in zip(requests, verdicts, strict=True)
        ]
        return await self.deadlines.answer(answers)

    def _report(self, cid: str, code: str, where: Waiting, result: Any) -> None:
        if result == 1:
            self.answered += 1
            self.log.info("request_expired", correlation_id=cid, code=code, waiting_on=where.agent)
        elif result == -1:
            self.log.warning("deadline_reply_key_unusable", correlation_id=cid)
        elif isinstance(result, BaseException):
            self.log.warning("deadline_answer_failed", correlation_id=cid, error=repr(result))

    async def _verdicts(self, cids: list[str]) -> list[tuple[str, Waiting]]:
        """Where each request waits (its trace, one pipelined round trip) and its code."""
        traces = await self.deadlines.traces(cids, TRACE_WINDOW)
        waiting = [[] if isinstance(t, BaseException) else waiting_on(t) for t in traces]
        agents = self.pipeline.agents
        live = await self._live({w.agent for ws in waiting for w in ws if w.agent in agents})
        return [verdict(ws, live, agents) for ws in waiting]

    async def _live(self, agents: set[str]) -> set[str]:
        """Those of ``agents`` with a live worker: a consumer of its group whose heartbeat key
        exists and does not say ``stopping``."""
        live = set()
        for agent in sorted(agents):
            names = await self._consumers(agent)
            if not names:
                continue
            beats = await self.deadlines.heartbeats(
                [self.keys.heartbeat(agent, name) for name in names]
            )
            if any(_beating(beat) for beat in beats):
                live.add(agent)
        return live

    async def _consumers(self, agent: str) -> list[str]:
        """The consumers of the agent's group(s), most recently active first (capped)."""
        rows: list[tuple[int, str]] = []
        for stream in self.pipeline.routing.inboxes(agent):
            rows += await self.deadlines.consumers(stream, self.keys.group(agent))
        names = dict.fromkeys(name for _, name in sorted(rows))
        return list(names)[:HEARTBEAT_CHECKS]


def _jittered(seconds: float) -> float:
    return random.uniform(seconds / 2, seconds)  # noqa: S311 - jitter, not crypto


def _beating(beat: Any) -> bool:
    if beat is None or isinstance(beat, BaseException):
        return False
    try:
        value = json.loads(beat)
    except (ValueError, RecursionError):
        return True  # the key exists: a worker of another version
    return not (isinstance(value, dict) and value.get("stopping"))
