# ruff: noqa: E402, B905, B018  (scratch script: checkout on sys.path first)
"""Callgrind micro-measure of per-message pieces in the checkout given as argv[1]:
decode (+ both id texts), trace record, one middleware layer through chain()."""

import os
import subprocess
import sys
import time

root = sys.argv[1]
sys.path.insert(0, root)
sys.path.insert(0, root + "/benchmarks")
N = 5000
import single_hop
from single_hop import envelopes

from agent_runtime.codec import Codec
from agent_runtime.config.pipeline import Pipeline
from agent_runtime.transport.streams import Entry
from agent_runtime.worker.delivery import Tracer, chain

STREAM = "mb:inbox:noop"  # the no-op agent's inbox (the codec is unsigned)


def ctl(*a):
    subprocess.run(["callgrind_control", *a, str(os.getpid())], capture_output=True, check=False)


items = envelopes(N, "mb")
_p = Pipeline.build(single_hop._config("mb", {}))
codec = Codec(_p.schemas, keys=_p.config.keys)
ctl("-z")
ctl("-i", "on")
decoded = []
for fields in items:
    d = codec.decode(fields, STREAM)
    d.message.id_text
    d.message.correlation_text
    decoded.append(d)
ctl("-i", "off")
ctl("--dump=decode")
tracer = Tracer("noop", "noop-0")
entries = [Entry("mb:inbox:noop", b"1-%d" % i, f) for i, f in enumerate(items)]
now = time.time()
ctl("-i", "on")
for d, e in zip(decoded, entries):
    tracer.record(d.message, e, "handled", now - 0.001, now=now)
ctl("-i", "off")
ctl("--dump=trace")


class Layer:
    async def handle(self, ctx, call_next):
        await call_next(ctx)


async def handler(ctx):
    pass


call = chain([Layer()], handler)
ctl("-i", "on")
for d in decoded:
    coro = call(d)
    try:
        coro.send(None)
    except StopIteration:
        pass
ctl("-i", "off")
ctl("--dump=chain")
