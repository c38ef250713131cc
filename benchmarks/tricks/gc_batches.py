# ruff: noqa: E402  (scratch script: checkout on sys.path first)
"""Callgrind: decode + trace record per message with nothing retained (the worker frees each
message after its commit), gc tuned as cli/worker.tune_gc did (env MICRO_TUNE_GC=1) or not."""

import os
import subprocess
import sys
import time

root = sys.argv[1]
sys.path.insert(0, root)
sys.path.insert(0, root + "/benchmarks")
import single_hop
from single_hop import envelopes

from agent_runtime.codec import Codec
from agent_runtime.config.pipeline import Pipeline
from agent_runtime.transport.streams import Entry
from agent_runtime.worker.delivery import Tracer

STREAM = "mb:inbox:noop"  # the no-op agent's inbox (the codec is unsigned)


def ctl(*a):
    subprocess.run(["callgrind_control", *a, str(os.getpid())], capture_output=True, check=False)


N = 5000
items = envelopes(N, "mb")
_p = Pipeline.build(single_hop._config("mb", {}))
codec = Codec(_p.schemas, keys=_p.config.keys)
tracer = Tracer("noop", "noop-0")
if os.environ.get("MICRO_TUNE_GC") == "1":
    import gc  # what cli/worker.py's tune_gc did before it was removed

    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 10, 10)
now = time.time()
ctl("-z")
ctl("-i", "on")
for start in range(0, N, 128):  # a read's batch stays alive until its commit, as in the worker
    batch = [
        (Entry("mb:inbox:noop", b"1-%d" % i, items[i]), codec.decode(items[i], STREAM))
        for i in range(start, min(start + 128, N))
    ]
    records = [tracer.record(d.message, e, "handled", now, now=now) for e, d in batch]
    del batch, records
ctl("-i", "off")
ctl("--dump=gc")
