"""The in-memory transport's Python ports of the runtime's Lua scripts, and its WATCH, give
the same answers as the real server: each scenario runs on both and the replies (and the data
left behind) are compared. Values that depend on the clock (wait times) are compared by sign.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from redis.asyncio import Redis

from agent_runtime.transport import breaker_scripts as breaker_lua
from agent_runtime.transport.commit import (
    PUBLISH_SCRIPT,
    REPLY_SCRIPT,
    Publication,
    publish_args,
    publish_outcome,
)
from agent_runtime.transport.deadlines import ANSWER_SCRIPT, RELEASE_SCRIPT
from agent_runtime.transport.llm_store import BOOK_SCRIPT
from agent_runtime.transport.memory import MemoryRedis
from agent_runtime.transport.state import RedisState
from agent_runtime.transport.streams import TRACE_SCRIPT

pytestmark = pytest.mark.anyio

Scenario = Callable[[Any, str], Awaitable[list[Any]]]


@pytest.fixture
async def both(redis_url: str, prefix: str) -> AsyncIterator[tuple[Any, Any, str]]:
    real = Redis.from_url(redis_url)
    yield real, MemoryRedis(), prefix
    left = [k async for k in real.scan_iter(f"{prefix}*")]
    if left:
        await real.delete(*left)
    await real.aclose()


async def same(both: tuple[Any, Any, str], scenario: Scenario) -> list[Any]:
    real, memory, prefix = both
    on_real, on_memory = await scenario(real, prefix), await scenario(memory, prefix)
    assert on_memory == on_real
    return on_real


def run(redis: Any, script: str, keys: list[str], *args: Any) -> Awaitable[Any]:
    return redis.eval(script, len(keys), *keys, *args)


async def test_trace_script(both: Any) -> None:
    async def scenario(r: Any, p: str) -> list[Any]:
        await r.set(f"{p}:str", "x")
        written = await run(r, TRACE_SCRIPT, [f"{p}:t", f"{p}:str", f"{p}:t"], 60, b"a", b"b", b"c")
        return [written, await r.lrange(f"{p}:t", 0, -1), 0 < await r.ttl(f"{p}:t") <= 60]

    assert await same(both, scenario) == [2, [b"a", b"c"], True]


async def test_reply_and_answer_scripts_keep_one_terminal_reply(both: Any) -> None:
    async def scenario(r: Any, p: str) -> list[Any]:
        guard, stream = f"{p}:g", f"{p}:r"
        first = await run(r, REPLY_SCRIPT, [guard, stream], "m1", 60, b"k", b"one")
        second = await run(r, ANSWER_SCRIPT, [guard, stream], "late", 60, b"k", b"two")
        await r.set(f"{p}:str", "x")
        wrong = await run(r, ANSWER_SCRIPT, [f"{p}:g2", f"{p}:str"], "x", 60, b"k", b"v")
        rows = [f for _, f in await r.xrange(stream)]
        return [first, second, wrong, rows, await r.get(guard), await r.exists(f"{p}:g2")]

    assert await same(both, scenario) == [1, 0, -1, [{b"k": b"one"}], b"m1", 0]


async def test_sweep_lock_release_script(both: Any) -> None:
    async def scenario(r: Any, p: str) -> list[Any]:
        await r.set(f"{p}:lock", "mine", nx=True, px=5000)
        other = await run(r, RELEASE_SCRIPT, [f"{p}:lock"], "theirs")
        own = await run(r, RELEASE_SCRIPT, [f"{p}:lock"], "mine")
        return [other, own, await r.exists(f"{p}:lock")]

    assert await same(both, scenario) == [0, 1, 0]


def _shape(reply: list[Any]) -> list[Any]:
    """A breaker script's reply with its clock-dependent wait (index 2) as a sign."""
    out = list(reply)
    if len(out) == 4:
        out[2] = int(out[2]) > 0
    return out


async def test_breaker_scripts_open_probe_and_close(both: Any) -> None:
    async def scenario(r: Any, p: str) -> list[Any]:
        key, ttl = f"{p}:breaker", 3600
        steps: list[Any] = []
        acquire = lambda token, reset: run(  # noqa: E731
            r, breaker_lua.ACQUIRE, [key], token, reset, 60_000, ttl
        )
        record = lambda token, outcome: run(  # noqa: E731
            r, breaker_lua.RECORD, [key], token, outcome, 2, 0, ttl
        )
        steps.append(_shape(await acquire("t1", 60_000)))  # closed: call
        steps.append(await record("t1", "failure"))
        steps.append(await record("t2", "failure"))  # fail_max 2: opens (reset 0 ms)
        steps.append(_shape(await acquire("p1", 0)))  # reset passed: t1 probes
        steps.append(_shape(await acquire("p2", 0)))  # another caller: busy
        steps.append(await run(r, breaker_lua.RELEASE, [key], "p2"))  # not the prober: 0
        steps.append(await record("p1", "success"))  # the probe closes it
        fields = await r.hgetall(key)
        steps.append({k: v for k, v in fields.items() if not k.endswith(b"_ms")})
        return steps

    steps = await same(both, scenario)
    assert steps[0][0] == b"call" and steps[2][1] == b"open" and steps[3][0] == b"probe"
    assert steps[4][0] == b"busy" and steps[6][1] == b"closed"


async def test_ledger_script_books_each_call_once(both: Any) -> None:
    async def scenario(r: Any, p: str) -> list[Any]:
        key = f"{p}:ledger"
        usage = [10, 5, "0.25", 0, 3600]
        first = await run(r, BOOK_SCRIPT, [key], "m1:0", "model-a", *usage)
        again = await run(r, BOOK_SCRIPT, [key], "m1:0", "model-a", *usage)
        other = await run(r, BOOK_SCRIPT, [key], "m2:0", "model-a", *usage)
        fields = await r.hgetall(key)
        return [first, again, other, {k: float(v) for k, v in sorted(fields.items())}]

    result = await same(both, scenario)
    assert result[:3] == [1, 0, 1] and result[3][b"tokens_in"] == 20.0


async def test_state_transact_retries_after_a_concurrent_write(both: Any) -> None:
    """WATCH: a write to the key between the read and the write makes the transaction run
    again on the fresh value (RedisState.transact, the agents' state API)."""

    async def scenario(r: Any, p: str) -> list[Any]:
        key, seen = f"{p}:state", []
        await r.set(key, "1")
        state = RedisState(r)

        def bump(old: bytes | None) -> tuple[bytes, int]:
            seen.append(old)
            if len(seen) == 1:  # another writer gets in between our read and our write
                competitor.append(key)
            return str(int(old or b"0") + 10).encode(), len(seen)

        competitor: list[str] = []
        real_execute = _patch_competitor(r, competitor)
        try:
            attempts = await state.transact(key, bump, ttl=60)
        finally:
            real_execute()
        return [attempts, seen, await r.get(key)]

    assert await same(both, scenario) == [2, [b"1", b"5"], b"15"]


def _patch_competitor(r: Any, pending: list[str]) -> Callable[[], None]:
    """Make ``r.pipeline()``'s execute first write ``5`` to each key in ``pending`` through
    the same server (another client's write, as far as WATCH can tell)."""
    original = r.pipeline

    def pipeline(*args: Any, **kwargs: Any) -> Any:
        pipe = original(*args, **kwargs)
        execute = pipe.execute

        async def competing_execute(*a: Any, **k: Any) -> Any:
            while pending:
                await other(r).set(pending.pop(), "5")
            return await execute(*a, **k)

        pipe.execute = competing_execute
        return pipe

    r.pipeline = pipeline
    return lambda: setattr(r, "pipeline", original)


def other(r: Any) -> Any:
    """A second client on the same server/store."""
    if isinstance(r, MemoryRedis):
        return MemoryRedis(r.store)
    return Redis(connection_pool=r.connection_pool)


async def test_publish_script_queues_each_request_and_only_its_records(both: Any) -> None:
    async def scenario(r: Any, p: str) -> list[Any]:
        await r.set(f"{p}:bad", "x")
        requests = [
            Publication(f"{p}:in", {b"m": b"one"}, (f"{p}:t1", 60, b"r1"), ("m1", 1000)),
            Publication(f"{p}:bad", {b"m": b"two"}, (f"{p}:t2", 60, b"r2"), ("m2", 2000)),
            Publication(f"{p}:in", {b"m": b"three", b"s": b"sig"}, None, ("m1", 500)),  # GT
        ]
        reply = await r.eval(PUBLISH_SCRIPT, 0, *publish_args(f"{p}:dl", requests))
        queued, failed = publish_outcome(reply, len(requests))
        return [
            [type(e).__name__ if e else None for e in queued],
            failed,
            [f for _, f in await r.xrange(f"{p}:in")],
            [await r.lrange(f"{p}:t{i}", 0, -1) for i in (1, 2)],
            0 < await r.ttl(f"{p}:t1") <= 60,
            [await r.zscore(f"{p}:dl", m) for m in ("m1", "m2")],
        ]

    assert await same(both, scenario) == [
        [None, "ResponseError", None],
        None,
        [{b"m": b"one"}, {b"m": b"three", b"s": b"sig"}],
        [[b"r1"], []],
        True,
        [1000.0, None],
    ]
