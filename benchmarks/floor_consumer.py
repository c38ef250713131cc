"""The floor: the per-message work the message contract requires, and nothing else.

Not a usable consumer. It does what every delivery must do under the contract -- the size
cap, the signature, envelope + payload validation (the runtime's own ``Codec.decode``), the
de-duplication lookup (two SMISMEMBER, pipelined), a no-op handler call, the per-request
trace record (the runtime's own ``Tracer.record``), and the done mark + XACK in one
MULTI/EXEC -- in one synchronous loop with the raw loop's client (redis-py with hiredis), one
batch at a time.

Everything a worker adds is left out: concurrent handlers and their bound, lease renewal,
reclaim, per-handler timeouts and context isolation, the policy middleware, dead letters
(an invalid entry stops this loop), retries, metrics and logging. So its throughput is an
upper bound for any consumer in Python that keeps the contract: single_hop.py --floor runs it
next to the raw loop and the runtime to show how much of the gap is the contract's own cost.

    python benchmarks/floor_consumer.py URL STREAM GROUP BATCH PREFIX TRACE(0|1)
"""

from __future__ import annotations

import gc
import sys
import time
from pathlib import Path

import redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agent_runtime.codec import Codec
from agent_runtime.signing import load_keyring
from agent_runtime.transport.keys import Keys
from agent_runtime.transport.streams import TRACE_SCRIPT, Entry
from agent_runtime.worker.delivery import Tracer
from protocols import SchemaRegistry, UserRequest

TRACE_TTL = 24 * 3600
DONE_TTL = 24 * 3600


async def handle(message: object, payload: object) -> None:
    return None


def main(url: str, stream: str, group: str, count: int, prefix: str, trace: bool) -> None:
    r = redis.Redis.from_url(url)
    keys = Keys(prefix)
    codec = Codec(SchemaRegistry([UserRequest]), keys=keys, keyring=load_keyring())  # verifies
    tracer = Tracer("noop", "floor-0") if trace else None
    read = [b"XREADGROUP", b"GROUP", group, "floor-0", b"COUNT", count, b"BLOCK", 1000]
    read += [b"STREAMS", stream, b">"]
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 10, 10)  # as the worker does (cli/worker.py: tune_gc)
    while True:
        # The command name as bytes: redis-py skips its reply callback (as the worker does).
        reply = r.execute_command(*read)
        for _name, items in reply.items() if isinstance(reply, dict) else reply or []:
            decoded = []
            for entry_id, flat in items:
                it = iter(flat)
                fields = dict(zip(it, it, strict=True))
                item = codec.decode(fields, stream)  # raises on a bad entry: a floor, not a worker
                decoded.append((Entry(stream, entry_id, fields), item.message, item.payload))
            ids = [message.id_text for _, message, _ in decoded]
            bucket = int(time.time() // DONE_TTL)
            with r.pipeline(transaction=False) as pipe:
                pipe.smismember(keys.done("noop", bucket - 1), ids)
                pipe.smismember(keys.done("noop", bucket), ids)
                previous, current = pipe.execute()
            acks, done, trace_keys, records = [], [], [], []
            handled = []
            for (entry, message, payload), old, new in zip(decoded, previous, current, strict=True):
                acks.append(entry.entry_id)
                if old or new:
                    continue
                started = time.time()
                coro = handle(message, payload)
                try:
                    coro.send(None)
                except StopIteration:
                    pass
                done.append(message.id_text)
                handled.append((entry, message, started))
            if tracer is not None:
                now = time.time()  # one reading per commit, as the worker's commit does
                for entry, message, started in handled:
                    trace_keys.append(keys.trace(message.correlation_text))
                    records.append(tracer.record(message, entry, "handled", started, now=now))
            with r.pipeline(transaction=True) as pipe:
                if trace_keys:
                    n = len(trace_keys)  # as the worker's commit: EVAL (no SCRIPT EXISTS trip)
                    pipe.eval(TRACE_SCRIPT, n, *trace_keys, TRACE_TTL, *records)
                if done:
                    key = keys.done("noop", bucket)
                    pipe.sadd(key, *done)
                    pipe.expire(key, 2 * DONE_TTL + 60)
                pipe.xack(stream, group, *acks)
                pipe.execute()


if __name__ == "__main__":
    url, stream, group, batch, prefix, trace = sys.argv[1:7]
    main(url, stream, group, int(batch), prefix, trace == "1")
