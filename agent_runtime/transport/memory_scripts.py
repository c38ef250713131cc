"""Python ports of the runtime's Lua scripts, for the in-memory transport.

Why ports and not a Lua interpreter: the runtime has a handful of scripts, each a short
sequence of commands; a port keyed by the script's exact text keeps the memory transport free
of dependencies, and a script without a port is refused loudly (``NOSCRIPT``), never run
wrongly. Each port follows its script line by line; the script's module is named next to it.
A port runs without yielding to the loop, so it is atomic like the script on the server.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Awaitable, Callable
from typing import Any

from redis.exceptions import NoScriptError, ResponseError

from agent_runtime.transport.memory_store import as_text

Port = Callable[[Any, list[str], list[bytes]], Awaitable[Any]]


async def run_script(client: Any, script: str, keys: list[str], args: list[bytes]) -> Any:
    """Run the port of ``script`` on ``client`` (a MemoryRedis)."""
    port = _ports().get(script)
    if port is None:
        raise ResponseError(
            "NOSCRIPT the in-memory transport has no Python port of this script "
            f"(add one to agent_runtime/transport/memory_scripts.py): {script[:60]!r}"
        )
    return await port(client, keys, args)


def script_by_sha(sha: str) -> str:
    """The ported script whose SHA1 is ``sha`` (EVALSHA), or NoScriptError as Redis says."""
    for script in _ports():
        if _sha(script) == sha:
            return script
    raise NoScriptError("NOSCRIPT No matching script. Please use EVAL.")


@functools.cache
def _sha(script: str) -> str:
    return hashlib.sha1(script.encode()).hexdigest()  # noqa: S324 (Redis's script id)


@functools.cache
def _ports() -> dict[str, Port]:
    """Script text -> port (imported on first use: most processes never need the ports)."""
    from agent_runtime.transport import breaker_scripts as breaker
    from agent_runtime.transport import deadlines
    from agent_runtime.transport import ratelimit as limits
    from agent_runtime.transport.commit import PUBLISH_SCRIPT, REPLY_SCRIPT
    from agent_runtime.transport.llm_store import BOOK_SCRIPT
    from agent_runtime.transport.schedule import CLAIM_SCRIPT, SETTLE_SCRIPT
    from agent_runtime.transport.streams import TRACE_SCRIPT

    return {
        TRACE_SCRIPT: _trace,
        REPLY_SCRIPT: _reply,
        PUBLISH_SCRIPT: _publish,
        deadlines.ANSWER_SCRIPT: _answer,
        deadlines.RELEASE_SCRIPT: _release_lock,
        breaker.ACQUIRE: _breaker_acquire,
        breaker.RECORD: _breaker_record,
        breaker.RELEASE: _breaker_release,
        BOOK_SCRIPT: _book,
        CLAIM_SCRIPT: _schedule_claim,
        SETTLE_SCRIPT: _schedule_settle,
        limits.ACQUIRE: _limit_acquire,
        limits.SETTLE: _limit_settle,
        limits.USAGE: _limit_usage,
        limits.STATS: _limit_stats,
    }


async def _trace(r: Any, keys: list[str], args: list[bytes]) -> int:
    """streams.TRACE_SCRIPT: RPUSH each record, EXPIRE a list this push created."""
    written = 0
    for i, key in enumerate(keys):
        try:
            length = await r.rpush(key, args[i + 1])
        except ResponseError:
            continue
        written += 1
        if length == 1:
            await r.expire(key, int(args[0]))
    return written


async def _reply(r: Any, keys: list[str], args: list[bytes]) -> int:
    """commit.REPLY_SCRIPT: the reply only if the outcome guard was free."""
    ttl = int(args[1])
    if not await r.set(keys[0], args[0], nx=True, ex=max(ttl, 60)):
        return 0
    await r.xadd(keys[1], _pairs(args[2:]))
    if ttl > 0:
        await r.expire(keys[1], ttl)
    return 1


async def _publish(r: Any, keys: list[str], args: list[bytes]) -> list[Any]:
    """commit.PUBLISH_SCRIPT: per request its XADD, and only if queued its first trace record
    and deadline entry; {deadline error or '', (index, error) per request not queued}."""
    zkey, i = as_text(args[0]), 2
    out: list[Any] = [b""]
    deadlines: dict[bytes, float] = {}
    for index in range(int(args[1])):
        count = int(args[i + 1])
        stream, fields = as_text(args[i]), _pairs(args[i + 2 : i + 2 + 2 * count])
        i += 2 + 2 * count
        try:
            await r.xadd(stream, fields)
        except ResponseError as exc:
            out += [index, str(exc).encode()]
        else:
            if args[i]:
                try:
                    if await r.rpush(as_text(args[i]), args[i + 2]) == 1:
                        await r.expire(as_text(args[i]), int(args[i + 1]))
                except ResponseError:
                    pass
            if args[i + 3]:  # ZADD GT of a member twice keeps the greater score
                score = float(args[i + 4])
                deadlines[args[i + 3]] = max(score, deadlines.get(args[i + 3], score))
        i += 5
    if deadlines:
        try:
            await r.zadd(zkey, deadlines, gt=True)
        except ResponseError as exc:
            out[0] = str(exc).encode()
    return out


async def _answer(r: Any, keys: list[str], args: list[bytes]) -> int:
    """deadlines.ANSWER_SCRIPT: -1 reply key of another type, 0 already answered, 1 answered."""
    kind = as_text(await r.type(keys[1]))
    if kind not in ("none", "stream"):
        return -1
    if not await r.set(keys[0], args[0], nx=True, ex=int(args[1])):
        return 0
    await r.xadd(keys[1], _pairs(args[2:]))
    await r.expire(keys[1], int(args[1]))
    return 1


async def _release_lock(r: Any, keys: list[str], args: list[bytes]) -> int:
    """deadlines.RELEASE_SCRIPT: delete the lock only if it holds our token."""
    if await r.get(keys[0]) == args[0]:
        return int(await r.delete(keys[0]))
    return 0


async def _schedule_claim(r: Any, keys: list[str], args: list[bytes]) -> list[bytes]:
    """schedule.CLAIM_SCRIPT: the due members, their score moved to the lease end."""
    due: list[bytes] = await r.zrangebyscore(keys[0], "-inf", args[0], start=0, num=int(args[2]))
    for member in due:
        await r.zadd(keys[0], {member: float(args[1])})
    return due


async def _schedule_settle(r: Any, keys: list[str], args: list[bytes]) -> int:
    """schedule.SETTLE_SCRIPT: remove the member only if it still holds that lease."""
    score = await r.zscore(keys[0], args[0])
    if score is not None and score == float(args[1]):
        return int(await r.zrem(keys[0], args[0]))
    return 0


async def _now_ms(r: Any) -> int:
    seconds, micros = await r.time()
    return int(seconds) * 1000 + int(micros) // 1000


def _num(value: bytes | None) -> int:
    return int(float(value)) if value else 0


async def _breaker_acquire(r: Any, keys: list[str], args: list[bytes]) -> list[Any]:
    """breaker_scripts.ACQUIRE: {decision, state, wait_ms, failures}."""
    now, key = await _now_ms(r), keys[0]
    state_raw, failures_raw, opened, until = await r.hmget(
        key, ["state", "failures", "opened_at_ms", "probe_until_ms"]
    )
    state, failures = as_text(state_raw or b"closed"), _num(failures_raw)
    if state == "closed":
        return [b"call", state.encode(), 0, failures]
    if state == "open":
        left = _num(opened) + int(args[1]) - now
        if left > 0:
            return [b"open", b"open", left, failures]
    else:
        held = _num(until) - now
        if held > 0:
            return [b"busy", state.encode(), held, failures]
    mapping = {
        "state": "half-open",
        "probe": args[0],
        "probe_until_ms": now + int(args[2]),
        "changed_at_ms": now,
    }
    await r.hset(key, mapping=mapping)
    await r.expire(key, int(args[3]))
    return [b"probe", b"half-open", 0, failures]


async def _breaker_record(r: Any, keys: list[str], args: list[bytes]) -> list[Any]:
    """breaker_scripts.RECORD: {state_before, state_after, failures}."""
    now, key, outcome = await _now_ms(r), keys[0], as_text(args[1])
    state_raw, failures_raw, probe = await r.hmget(key, ["state", "failures", "probe"])
    state, failures = as_text(state_raw or b"closed"), _num(failures_raw)

    async def trip() -> None:
        mapping = {"state": "open", "opened_at_ms": now, "reset_ms": args[3], "changed_at_ms": now}
        await r.hset(key, mapping=mapping)
        await r.hdel(key, "probe", "probe_until_ms")
        await r.hincrby(key, "trips", 1)
        await r.expire(key, int(args[4]))

    if state == "half-open" and probe == args[0]:
        if outcome == "success":
            await r.hset(key, mapping={"state": "closed", "failures": 0, "changed_at_ms": now})
            await r.hdel(key, "probe", "probe_until_ms")
            return [state.encode(), b"closed", 0]
        await trip()
        return [state.encode(), b"open", failures]
    if state != "closed":
        return [state.encode(), state.encode(), failures]
    if outcome == "success":
        if failures > 0:
            await r.hset(key, "failures", 0)
        return [state.encode(), state.encode(), 0]
    failures = await r.hincrby(key, "failures", 1)
    await r.expire(key, int(args[4]))
    if failures >= int(args[2]):
        await trip()
        return [state.encode(), b"open", failures]
    return [state.encode(), state.encode(), failures]


async def _breaker_release(r: Any, keys: list[str], args: list[bytes]) -> int:
    """breaker_scripts.RELEASE: a cancelled prober gives its lock back."""
    if await r.hget(keys[0], "probe") == args[0]:
        await r.hdel(keys[0], "probe", "probe_until_ms")
        return 1
    return 0


async def _book(r: Any, keys: list[str], args: list[bytes]) -> int:
    """llm_store.BOOK_SCRIPT: add one call's usage to the request's ledger, once per call id."""
    key = keys[0]
    if not await r.hsetnx(key, args[0], "1"):
        return 0
    by = f"by:{as_text(args[1])}:"
    for prefix in ("", by):
        await r.hincrby(key, prefix + "tokens_in", int(args[2]))
        await r.hincrby(key, prefix + "tokens_out", int(args[3]))
        await r.hincrbyfloat(key, prefix + "cost_usd", float(args[4]))
        await r.hincrby(key, prefix + "calls", 1)
    await r.hincrby(key, "cached_calls", int(args[5]))
    await r.expire(key, int(args[6]))
    return 1


def _meters(r: Any, keys: list[str]) -> list[tuple[Any, str, str]]:
    """(zset, zset key, weight hash key) per meter of a rate limit (created on use)."""
    from agent_runtime.transport.memory_store import ZSet

    return [
        (r.store.typed(keys[i], ZSet, create=True), keys[i], keys[i + 1])
        for i in range(0, len(keys), 2)
    ]


async def _weight(r: Any, key: str, members: list[bytes]) -> int:
    total = 0
    for member in members:
        total += _num(await r.hget(key, member))
    return total


async def _limit_acquire(r: Any, keys: list[str], args: list[bytes]) -> list[int]:
    """ratelimit.ACQUIRE: admit one call to every meter of a limit, or say how long to wait."""
    now, member, window = await _now_ms(r), args[0], int(args[1])
    lease, ttl = int(args[2]), int(args[3])
    wait = least = 0
    meters = _meters(r, keys)
    for i, (zset, _z, h) in enumerate(meters):
        limit, cost = int(args[4 + 2 * i]), int(args[5 + 2 * i])
        if cost > limit:
            return [-1, i + 1, 0, now]
        old = [m for m, end in zset.items() if end < now - window]
        if old:
            gone = await _weight(r, h, old)
            await r.hdel(h, *old)
            for m in old:
                del zset[m]
            await r.hincrby(h, "_sum", -gone)
        used = _num(await r.hget(h, "_sum"))
        if used + cost > limit:
            need, freed, ends = used + cost - limit, 0, None
            for m in zset.by_score(float("-inf"), float("inf")):
                freed += _num(await r.hget(h, m))
                if freed >= need:
                    ends = int(zset[m])
                    break
            wait = max(wait, window if ends is None else ends + window + 1 - now)
            least = max(least, window if ends is None else min(ends, now) + window + 1 - now)
    if wait > 0:
        return [0, wait, least, now]
    for i, (_zset, z, h) in enumerate(meters):
        cost = int(args[5 + 2 * i])
        await r.zadd(z, {member: now + lease})
        await r.hset(h, member, cost)
        await r.hincrby(h, "_sum", cost)
        await r.expire(z, ttl / 1000)
        await r.expire(h, ttl / 1000)
    return [1, 0, 0, now]


async def _limit_settle(r: Any, keys: list[str], args: list[bytes]) -> int:
    """ratelimit.SETTLE: the call ended now; its real cost replaces the reserved one."""
    now, member = await _now_ms(r) + 1, args[0]
    for i, (zset, _z, h) in enumerate(_meters(r, keys)):
        ends = zset.get(member)
        if ends is None:
            continue
        if ends > now:
            zset[member] = float(now)
        if args[1 + i] != b"":
            old = _num(await r.hget(h, member))
            await r.hset(h, member, args[1 + i])
            await r.hincrby(h, "_sum", int(args[1 + i]) - old)
    return 1


async def _limit_usage(r: Any, keys: list[str], args: list[bytes]) -> list[int]:
    """ratelimit.USAGE: (entries, weight) counting now, per meter."""
    now = await _now_ms(r)
    out = [now]
    for zset, _z, h in _meters(r, keys):
        live = zset.by_score(now - int(args[0]), float("inf"))
        out += [len(live), await _weight(r, h, live)]
    return out


async def _limit_stats(r: Any, keys: list[str], args: list[bytes]) -> int:
    """ratelimit.STATS: HINCRBY each field, then EXPIRE."""
    for i in range(0, len(args) - 1, 2):
        await r.hincrby(keys[0], args[i], int(args[i + 1]))
    await r.expire(keys[0], int(args[-1]))
    return 1


def _pairs(flat: list[bytes]) -> dict[bytes, bytes]:
    it = iter(flat)
    return dict(zip(it, it, strict=True))
