# ruff: noqa: E402, UP031, B007  (scratch script: checkout on sys.path first)
"""Callgrind: packing one commit's EVALSHA (128 handled messages, traces on) in Python
(redis-py asyncio Connection.pack_command) vs hiredis (transport/fastpack.py)."""

import os
import subprocess
import sys
import uuid

root = sys.argv[1]
sys.path.insert(0, root)
from redis.asyncio.connection import Connection

from agent_runtime.transport.fastpack import _fast_class


def ctl(*a):
    subprocess.run(["callgrind_control", *a, str(os.getpid())], capture_output=True, check=False)


N, BATCH = 5000, 128
args = [
    "EVALSHA",
    "a" * 40,
    0,
    "mark:tok",
    86400,
    "noop",
    "ar:done:x",
    "ar:done:y",
    604800,
    86400,
    BATCH,
]
for i in range(BATCH):
    args += ["h", str(uuid.uuid4()), "ar:inbox:noop", b"1700000000000-%d" % i, 0]
args.append(BATCH)
for i in range(BATCH):
    args += ["ar:trace:{%s}" % uuid.uuid4(), b"x" * 400]
py = Connection()
fast = _fast_class(Connection)()
rounds = N // BATCH
ctl("-z")
ctl("-i", "on")
for _ in range(rounds):
    py.pack_command(*args)
ctl("-i", "off")
ctl("--dump=pack_python")
ctl("-i", "on")
for _ in range(rounds):
    fast.pack_command(*args)
ctl("-i", "off")
ctl("--dump=pack_hiredis")
print("messages", rounds * BATCH)
