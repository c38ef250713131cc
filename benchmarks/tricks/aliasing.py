# ruff: noqa: B905, UP031  (scratch script: checkout on sys.path first)
"""Callgrind: the worker's per-message bookkeeping (register + release) with the instance
attributes aliased to locals (as in loop.py) and without."""

import os
import subprocess


def ctl(*a):
    subprocess.run(["callgrind_control", *a, str(os.getpid())], capture_output=True, check=False)


N = 5000


class E:
    __slots__ = ("entry_id", "stream")

    def __init__(s, i):
        s.stream = "ib:inbox:noop"
        s.entry_id = b"1-%d" % i


class W:
    def __init__(self):
        self._inflight = {}
        self._handling = set()
        self._finished = []

    def aliased(self, entries, ids):
        inflight, handling = self._inflight, self._handling
        for entry, mid in zip(entries, ids):
            key = (entry.stream, entry.entry_id)
            if key in inflight:
                continue
            inflight[key] = entry
            if mid in handling:
                continue
            handling.add(mid)
        finished = self._finished
        for mid in ids:
            finished.append(mid)
        for entry, mid in zip(entries, ids):
            inflight.pop((entry.stream, entry.entry_id), None)
            handling.discard(mid)

    def plain(self, entries, ids):
        for entry, mid in zip(entries, ids):
            key = (entry.stream, entry.entry_id)
            if key in self._inflight:
                continue
            self._inflight[key] = entry
            if mid in self._handling:
                continue
            self._handling.add(mid)
        for mid in ids:
            self._finished.append(mid)
        for entry, mid in zip(entries, ids):
            self._inflight.pop((entry.stream, entry.entry_id), None)
            self._handling.discard(mid)


entries = [E(i) for i in range(N)]
ids = ["%032x" % i for i in range(N)]
w = W()
ctl("-z")
ctl("-i", "on")
w.aliased(entries, ids)
ctl("-i", "off")
ctl("--dump=aliased")
w._finished.clear()
ctl("-i", "on")
w.plain(entries, ids)
ctl("-i", "off")
ctl("--dump=plain")
