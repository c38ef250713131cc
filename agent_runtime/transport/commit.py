"""Every write of a message to the streams: a client's publish (:class:`RedisPublisher`, the
start of a message's path) and a worker's commit (the end of a handled message's path):
outputs, done marks, dead letters, failure replies, trace records, acks.

**Publish** (``Client.publish``/``publish_many``): the XADDs to the entry agents' inboxes, the
traces' ``published`` records and the deadline entries, in one round trip per batch: ONE
``EVALSHA`` of :data:`PUBLISH_SCRIPT` on a single server; on Cluster, whose keys span slots and
whose pipelines run no scripts, a pipeline of XADD + RPUSH + EXPIRE per request and one
``ZADD GT``.

**Commit**:

Two paths with the same outcome for each input (outputs written, then marked done and acked;
or not acked at all):

* **Atomic** (a single server): one ``EVALSHA`` of :data:`COMMIT_SCRIPT` per commit. The
  script is flagged (``#!lua``), so a server over ``maxmemory`` refuses it as a whole: nothing
  is half-written, the worker backs off and retries. It refuses a replay of the same commit
  (its ``token`` mark), skips the outputs of an input already marked done (a copy handled
  twice), writes a terminal reply only if the request's outcome guard was free (exactly one
  terminal reply per request), and checks every output key's type first: an input whose
  output key holds another type (WRONGTYPE: permanent, about that key) is neither written nor
  acked and is returned, so the worker dead-letters it alone while the rest of the batch
  commits.
* **Portable** (Redis Cluster, where keys span slots, and servers without scripting): two
  pipelined round trips, writes then -- only if every write succeeded -- done marks + XACK
  (MULTI/EXEC on a single server). Terminal replies go through :data:`REPLY_SCRIPT` (guard
  and reply stream share the request's slot). A write refused for a reason of its own key
  (a command error, not OOM) makes its input :class:`Unwritable`; the others commit. A commit
  replayed after an ambiguous failure may write non-terminal outputs twice here; downstream
  de-duplication by message id drops the copies.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from redis.asyncio.cluster import RedisCluster
from redis.exceptions import NoScriptError, ResponseError

from agent_runtime.errors import TransportError
from agent_runtime.transport.connect import out_of_memory
from agent_runtime.transport.errors import redis_error_kind
from agent_runtime.transport.keys import Keys
from agent_runtime.transport.streams import (
    TRACE_SCRIPT,
    Commit,
    DeadLetter,
    Handled,
    Unwritable,
    Write,
)
from agent_runtime.transport.streams import (
    _dead_fields as dead_fields,
)

#: Seconds a commit's applied mark lives: longer than any retry of the same commit.
COMMIT_MARK_TTL = 3600

# ARGV: mark key, mark ttl, group, done key (current), done key (previous), done key expire,
# trace ttl, item count, then per item: kind (h handled, a ack only, d dead), message id,
# inbox, entry id, write count, and per write: stream, ttl, maxlen, guard, field count,
# fields...; then the trace count and (key, record) pairs. Returns {-1} for a replay, else a
# flat list of (item index, error) of handled items that were not written (kept in the mark,
# so a replay returns the same list). Per commit, not per input: one SMISMEMBER per done set
# for all inputs, one SADD, one XACK per inbox, one TYPE per key and wanted type (was 2
# SISMEMBER, a SADD, an XACK and a TYPE per input: 5.3 instead of 9 redis.call per message at
# batch 4). Measured, benchmarks/server_cost.py, a forwarding stage draining at batch 128
# (medians of 5 interleaved runs): the server's CPU per message 23.8 -> 20.9 us (-12 %), the
# script's own time per message 21.2 -> 15.2 us; at batch 1-4 no change beyond the noise
# (docs/benchmarks.md "Issue 17: round trips").
COMMIT_SCRIPT = """#!lua
local A = ARGV
if not redis.call('SET', A[1], '1', 'NX', 'EX', A[2]) then
  local before = redis.call('GET', A[1])
  if before and before ~= '1' then return cjson.decode(before) end
  return {-1}
end
local group, cur, prev = A[3], A[4], A[5]
local refused, i = {}, 9
local mids, at = {}, 9  -- first pass: the handled items' ids, for one SMISMEMBER per set
for item = 1, tonumber(A[8]) do
  if A[at] == 'h' then mids[#mids + 1] = A[at + 1] end
  local nw = tonumber(A[at + 4])
  at = at + 5
  for w = 1, nw do at = at + 5 + 2 * tonumber(A[at + 4]) end
end
local done = {}
for first = 1, #mids, 1000 do  -- chunks of 1000: unpack's limit
  local last = math.min(first + 999, #mids)
  local a = redis.call('SMISMEMBER', cur, unpack(mids, first, last))
  local b = redis.call('SMISMEMBER', prev, unpack(mids, first, last))
  for k = 1, last - first + 1 do
    if a[k] == 1 or b[k] == 1 then done[mids[first + k - 1]] = true end
  end
end
local types = {stream = {}, string = {}}  -- one TYPE per key, wanted type and commit
local function bad_type(key, want)
  local seen = types[want]
  if seen[key] == nil then
    local t = redis.call('TYPE', key)['ok']
    seen[key] = (t ~= 'none' and t ~= want) and ('WRONGTYPE ' .. key .. ' holds a ' .. t) or false
  end
  return seen[key] or nil
end
local marks, acks = {}, {}
for item = 1, tonumber(A[8]) do
  local kind, mid, inbox, eid, nw = A[i], A[i + 1], A[i + 2], A[i + 3], tonumber(A[i + 4])
  i = i + 5
  local writes, problem = {}, nil
  local skip = kind == 'h' and done[mid] == true
  for w = 1, nw do
    local nf = tonumber(A[i + 4])
    local why = bad_type(A[i], 'stream')
    if not why and A[i + 3] ~= '' then why = bad_type(A[i + 3], 'string') end
    if why and kind == 'h' then problem = problem or why
    elseif not why then writes[#writes + 1] = i end
    i = i + 5 + 2 * nf
  end
  if problem and not skip then
    refused[#refused + 1] = item - 1
    refused[#refused + 1] = problem
  else
    if not skip then
      for _, p in ipairs(writes) do
        local stream, ttl, maxlen, guard = A[p], tonumber(A[p + 1]), A[p + 2], A[p + 3]
        if guard == '' or redis.call('SET', guard, mid, 'NX', 'EX', math.max(ttl, 60)) then
          local args = {stream}
          if maxlen ~= '0' then args = {stream, 'MAXLEN', '~', maxlen} end
          args[#args + 1] = '*'
          for f = p + 5, p + 4 + 2 * tonumber(A[p + 4]) do args[#args + 1] = A[f] end
          redis.call('XADD', unpack(args))
          if ttl > 0 then redis.call('EXPIRE', stream, ttl) end
        end
      end
      if kind == 'h' then
        marks[#marks + 1] = mid
        done[mid] = true  -- a second copy in this commit writes nothing
      end
    end
    if not acks[inbox] then acks[inbox] = {} end
    local ids = acks[inbox]
    ids[#ids + 1] = eid
  end
end
for first = 1, #marks, 1000 do
  redis.call('SADD', cur, unpack(marks, first, math.min(first + 999, #marks)))
end
if #marks > 0 then redis.call('EXPIRE', cur, A[6]) end
for inbox, ids in pairs(acks) do
  for first = 1, #ids, 1000 do
    redis.call('XACK', inbox, group, unpack(ids, first, math.min(first + 999, #ids)))
  end
end
if #refused > 0 then redis.call('SET', A[1], cjson.encode(refused), 'KEEPTTL') end
for t = 1, tonumber(A[i]) do
  local key, record = A[i + 2 * t - 1], A[i + 2 * t]
  local length = redis.pcall('RPUSH', key, record)
  if length == 1 then redis.pcall('EXPIRE', key, A[7]) end
end
return refused
"""

# KEYS[1] outcome guard, KEYS[2] reply stream; ARGV: guard value, ttl, fields... Writes the
# reply only if the guard was free. Flagged: refused as a whole under OOM.
REPLY_SCRIPT = """#!lua
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', math.max(tonumber(ARGV[2]), 60)) then
  return 0
end
redis.call('XADD', KEYS[2], '*', unpack(ARGV, 3))
if tonumber(ARGV[2]) > 0 then redis.call('EXPIRE', KEYS[2], ARGV[2]) end
return 1
"""


def _write_args(write: Write) -> list[Any]:
    flat: list[Any] = []
    for key, value in write.fields.items():
        flat += (key, value)
    return [
        write.stream,
        write.ttl or 0,
        write.maxlen or 0,
        write.guard or "",
        len(write.fields),
        *flat,
    ]


def script_args(
    commit: Commit,
    *,
    mark: str,
    group: str,
    done: tuple[str, str],
    done_expire: int,
    consumer: str,
    dlq_maxlen: int,
) -> list[Any]:
    """ARGV of :data:`COMMIT_SCRIPT` for ``commit``."""
    args: list[Any] = [mark, COMMIT_MARK_TTL, group, done[1], done[0], done_expire]
    args += [commit.trace_ttl, len(commit.handled) + len(commit.dead)]
    for item in commit.handled:
        entry = item.entry
        kind = "h" if item.message_id else "a"
        args += [kind, item.message_id, entry.stream, entry.entry_id, len(item.writes)]
        for write in item.writes:
            args += _write_args(write)
    for dead in commit.dead:
        writes = _dead_writes(dead, consumer, dlq_maxlen)
        mid = dead.extra.get("message_id", "")
        args += ["d", mid, dead.entry.stream, dead.entry.entry_id, len(writes)]
        for write in writes:
            args += _write_args(write)
    args.append(len(commit.traces))
    for key, record in commit.traces:
        args += (key, record)
    return args


def _dead_writes(dead: DeadLetter, consumer: str, dlq_maxlen: int) -> list[Write]:
    writes = [Write(dead.dlq, dead_fields(dead, consumer), maxlen=dlq_maxlen)]
    if dead.reply is not None:
        writes.append(dead.reply)
    return writes


def refused_items(commit: Commit, reply: Any) -> list[Unwritable]:
    """The handled inputs the script did not write (see :data:`COMMIT_SCRIPT`'s return)."""
    if not reply or reply[0] == -1:
        return []
    out = []
    for index, error in zip(reply[::2], reply[1::2], strict=True):
        text = error.decode() if isinstance(error, bytes) else str(error)
        out.append(Unwritable(commit.handled[int(index)], text))
    return out


async def commit_portable(
    redis: Any,
    commit: Commit,
    *,
    group: str,
    done_key: str,
    done_expire: int,
    consumer: str,
    dlq_maxlen: int,
    cluster: bool,
    reply_script: Callable[..., Any],
) -> list[Unwritable]:
    """The two-round-trip commit (see the module docstring). Returns the inputs refused."""
    refused: list[Unwritable] = []
    owners: list[Handled | str] = []  # pipeline position -> the input it writes for
    async with redis.pipeline(transaction=False) as pipe:
        for item in commit.handled:
            for write in item.writes:
                if write.guard is None:
                    _xadd(pipe, write)
                    owners.append(item)
                    if write.ttl:
                        pipe.expire(write.stream, write.ttl)
                        owners.append(item)
        for dead in commit.dead:
            _xadd(pipe, Write(dead.dlq, dead_fields(dead, consumer), maxlen=dlq_maxlen))
            owners.append(DEAD)
        if cluster:
            _queue_traces(pipe, commit, owners, cluster=True)
        results = await pipe.execute(raise_on_error=False) if len(pipe) else []
    _raise_or_refuse(results, owners, refused)
    bad = {id(r.handled) for r in refused}
    for item in commit.handled:
        for write in item.writes:
            if write.guard is not None and id(item) not in bad:
                await _guarded(reply_script, write, item.message_id)
    for dead in commit.dead:
        if dead.reply is not None:
            await _guarded(reply_script, dead.reply, dead.extra.get("message_id", ""))
    await _marks(redis, commit, bad, group, done_key, done_expire, cluster)
    return refused


DEAD, TRACE = "dead", "trace"  # pipeline positions that write no handled input's output


def _raise_or_refuse(
    results: list[Any], owners: list[Handled | str], refused: list[Unwritable]
) -> None:
    """Infrastructure errors (OOM, connection) fail the commit; a command error about one
    output key refuses that input alone. Trace records never fail it; a dead-letter stream of
    another type loses that dead letter (logged by the caller's reader of the DLQ)."""
    seen: set[int] = set()
    for result, owner in zip(results, owners, strict=True):
        if not isinstance(result, Exception) or owner == TRACE:
            continue
        permanent = isinstance(result, ResponseError) and redis_error_kind(result) == "permanent"
        if not permanent:
            raise result
        if isinstance(owner, Handled) and id(owner) not in seen:
            seen.add(id(owner))
            refused.append(Unwritable(owner, str(result)))


async def _guarded(reply_script: Callable[..., Any], write: Write, message_id: str) -> None:
    flat: list[Any] = []
    for key, value in write.fields.items():
        flat += (key, value)
    try:
        await reply_script(
            keys=[write.guard, write.stream], args=[message_id, write.ttl or 0, *flat]
        )
    except ResponseError as exc:
        if redis_error_kind(exc) != "permanent":
            raise  # a reply key of another type: that reply is lost, the commit goes on


async def _marks(
    redis: Any,
    commit: Commit,
    bad: set[int],
    group: str,
    done_key: str,
    done_expire: int,
    cluster: bool,
) -> None:
    """Done marks + XACK, in MULTI/EXEC on a single server (an OOM-refused SADD aborts the
    XACK too); trace records ride along there."""
    done_ids = [h.message_id for h in commit.handled if h.message_id and id(h) not in bad]
    acks: dict[str, list[bytes]] = {}
    for item in commit.handled:
        if id(item) not in bad:
            acks.setdefault(item.entry.stream, []).append(item.entry.entry_id)
    for dead in commit.dead:
        acks.setdefault(dead.entry.stream, []).append(dead.entry.entry_id)
    traced: list[Handled | str] = []
    async with redis.pipeline(transaction=not cluster) as pipe:
        if not cluster:
            _queue_traces(pipe, commit, traced, cluster=False)
        first = len(pipe)
        if done_ids:
            pipe.sadd(done_key, *done_ids)
            pipe.expire(done_key, done_expire)
        for stream, ids in acks.items():
            pipe.xack(stream, group, *ids)
        if not len(pipe):
            return
        results = await pipe.execute(raise_on_error=False)
    errors = [r for r in results[first:] if isinstance(r, Exception)]
    if errors:
        raise errors[0]


def _xadd(pipe: Any, write: Write) -> None:
    if write.maxlen:
        pipe.xadd(write.stream, write.fields, maxlen=write.maxlen, approximate=True)
    else:
        pipe.xadd(write.stream, write.fields)


def _queue_traces(pipe: Any, commit: Commit, owners: list[Handled | str], *, cluster: bool) -> None:
    """Trace records; their replies are ignored: a lost record never fails a commit. On
    Cluster (keys in many slots) RPUSH + one EXPIRE per key, else one EVAL of TRACE_SCRIPT."""
    if not commit.traces:
        return
    if cluster:
        expiring: set[str] = set()
        for key, record in commit.traces:
            pipe.rpush(key, record)
            owners.append(TRACE)
            if key not in expiring:
                expiring.add(key)
                pipe.expire(key, commit.trace_ttl)
                owners.append(TRACE)
        return
    keys = [key for key, _ in commit.traces]
    records = [record for _, record in commit.traces]
    pipe.eval(TRACE_SCRIPT, len(keys), *keys, commit.trace_ttl, *records)
    owners.append(TRACE)


@dataclass(frozen=True, slots=True)
class Publication:
    """One request to queue, and what goes with it."""

    stream: str
    fields: Mapping[bytes, bytes]
    #: The trace list, its TTL and the ``published`` record (None: the agent writes none).
    trace: tuple[str, int, bytes] | None = None
    #: Member and score (ms) in the deadline set (None: not swept).
    deadline: tuple[str, int] | None = None


# ARGV: deadline set key, request count, then per request: stream, field count, fields...,
# trace key ('' for none), trace ttl, record, deadline member ('' for none), score. Per
# request: XADD; only if it was queued, its trace's first record (RPUSH, EXPIRE on a new list)
# and its deadline entry (ZADD GT, in chunks: ``unpack`` has a stack limit). Every write is a
# pcall, so nothing after the first write can abort the script: the reply says exactly which
# requests were queued. Returns {deadline error or '', then (index, error) per request whose
# XADD failed}. Flagged: a server over ``maxmemory`` refuses it as a whole (nothing queued).
PUBLISH_SCRIPT = """#!lua
local A = ARGV
local zkey, i, out, zargs = A[1], 3, {''}, {}
local function zadd()
  local z = redis.pcall('ZADD', zkey, 'GT', unpack(zargs))
  if type(z) == 'table' and z.err then out[1] = z.err end
  zargs = {}
end
for r = 1, tonumber(A[2]) do
  local nf = tonumber(A[i + 1])
  local args = {A[i], '*'}
  for f = i + 2, i + 1 + 2 * nf do args[#args + 1] = A[f] end
  i = i + 2 + 2 * nf
  local id = redis.pcall('XADD', unpack(args))
  if type(id) == 'table' and id.err then
    out[#out + 1] = r - 1
    out[#out + 1] = id.err
  else
    if A[i] ~= '' and redis.pcall('RPUSH', A[i], A[i + 2]) == 1 then
      redis.pcall('EXPIRE', A[i], A[i + 1])
    end
    if A[i + 3] ~= '' then
      zargs[#zargs + 1] = A[i + 4]
      zargs[#zargs + 1] = A[i + 3]
      if #zargs >= 1000 then zadd() end
    end
  end
  i = i + 5
end
if #zargs > 0 then zadd() end
return out
"""
PUBLISH_SHA = hashlib.sha1(PUBLISH_SCRIPT.encode()).hexdigest()  # noqa: S324 (Redis's id)


def publish_args(deadlines: str, requests: Sequence[Publication]) -> list[Any]:
    """ARGV of :data:`PUBLISH_SCRIPT` for ``requests``."""
    args: list[Any] = [deadlines, len(requests)]
    add = args.extend
    for request in requests:
        fields = request.fields
        args.append(request.stream)
        args.append(len(fields))
        for item in fields.items():
            add(item)
        trace, deadline = request.trace, request.deadline
        add(trace if trace is not None else ("", 0, b""))
        add(deadline if deadline is not None else ("", 0))
    return args


def publish_outcome(
    reply: Any, count: int
) -> tuple[list[BaseException | None], BaseException | None]:
    """:meth:`RedisPublisher.publish_many`'s answer from :data:`PUBLISH_SCRIPT`'s reply."""
    queued: list[BaseException | None] = [None] * count
    for index, error in zip(reply[1::2], reply[2::2], strict=True):
        queued[int(index)] = ResponseError(_text(error))
    failed = ResponseError(_text(reply[0])) if reply[0] else None
    return queued, failed


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


class RedisPublisher:
    """:class:`~agent_runtime.transport.base.Publisher` on a redis-py client.

    Hot path (issue 17, benchmarks/pipeline.py "producer CPU"): on a single server a batch is
    ONE ``EVALSHA`` of :data:`PUBLISH_SCRIPT` (the XADDs, the ``published`` trace records and
    the deadline entries of all its requests; one command to pack and one reply to read
    instead of one per request: docs/benchmarks.md "Issue 17: lean publish (session 8)").
    On Cluster, whose keys span slots and whose pipelines run no scripts, one pipeline: an
    XADD, RPUSH and EXPIRE per request and one ``ZADD GT`` for the deadline entries."""

    def __init__(self, redis: Any, keys: Keys, *, cluster: bool = False) -> None:
        self._redis = redis
        self._keys = keys
        self._cluster = cluster or isinstance(redis, RedisCluster)

    async def publish(self, request: Publication, *, label: str) -> BaseException | None:
        """Queue ``request``. Only a failed XADD raises (``label`` names the request in the
        error); a trace record or deadline entry that cannot be written is not the request's
        failure: the deadline entry's error is returned for the caller to log."""
        queued, failed = await self.publish_many([request])
        if queued[0] is not None:
            raise _not_queued(queued[0], label)
        return failed

    async def publish_many(
        self, requests: Sequence[Publication]
    ) -> tuple[list[BaseException | None], BaseException | None]:
        """Queue ``requests`` in one round trip. Returns, per request, None when its XADD
        succeeded, else why not (it was not queued); and the deadline entries' error, if
        any (the requests are queued all the same). A request that was not queued gets no
        trace record and no deadline entry on a single server."""
        if not requests:
            return [], None
        if self._cluster:
            return await self._pipelined(requests)
        args = publish_args(self._keys.deadlines(), requests)
        try:
            reply = await self._script(args)
        except ResponseError as exc:  # refused as a whole (OOM, read-only replica): none queued
            return [exc] * len(requests), None
        return publish_outcome(reply, len(requests))

    async def _script(self, args: list[Any]) -> Any:
        try:
            return await self._redis.evalsha(PUBLISH_SHA, 0, *args)
        except NoScriptError:  # a restarted or flushed server: nothing ran; load it, once
            await self._redis.script_load(PUBLISH_SCRIPT)
            return await self._redis.evalsha(PUBLISH_SHA, 0, *args)

    async def _pipelined(
        self, requests: Sequence[Publication]
    ) -> tuple[list[BaseException | None], BaseException | None]:
        """Cluster: an XADD, RPUSH and EXPIRE per request, one ZADD GT, one pipeline."""
        deadlines: dict[str, int] = {}
        async with self._redis.pipeline(transaction=False) as pipe:
            for request in requests:
                pipe.xadd(request.stream, dict(request.fields))
                if request.deadline is not None:
                    member, score = request.deadline
                    deadlines[member] = score
                if request.trace is not None:
                    key, ttl, record = request.trace
                    pipe.rpush(key, record)  # the trace's first record: the list is new
                    pipe.expire(key, ttl)
            if deadlines:
                pipe.zadd(self._keys.deadlines(), deadlines, gt=True)
            results = await pipe.execute(raise_on_error=False)
        # results: per request its XADD (and its RPUSH + EXPIRE), then the ZADD
        starts, at = [], 0
        for request in requests:
            starts.append(at)
            at += 3 if request.trace is not None else 1
        queued = [results[i] if isinstance(results[i], BaseException) else None for i in starts]
        failed = results[-1] if deadlines else None
        return queued, failed if isinstance(failed, BaseException) else None


def _not_queued(error: BaseException, label: str) -> BaseException:
    """The error to raise for a request whose XADD failed."""
    if out_of_memory(error):  # maxmemory + noeviction: refused, not queued
        exc = TransportError(
            f"{label} not published: the Redis server is out of memory (OOM: {error}); "
            "free memory or raise maxmemory, then publish again"
        )
        exc.__cause__ = error
        return exc
    return error
