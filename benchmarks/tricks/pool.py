# ruff: noqa: E402  (scratch script: checkout on sys.path first)
"""Callgrind: the handler pool's cost per message, 5000 no-op handlers in batches of 128
(as the worker submits a read), on uvloop, for the checkout in argv[1]."""

import os
import subprocess
import sys

root = sys.argv[1]
sys.path.insert(0, root)

import uvloop

from agent_runtime.worker.runners import HandlerPool


def ctl(*a):
    subprocess.run(["callgrind_control", *a, str(os.getpid())], capture_output=True, check=False)


N, BATCH = 5000, 128


async def handle(item):
    pass


async def main():
    pool = HandlerPool(handle, 256, 30.0)
    for i in range(BATCH):  # warm up: runners / task group exist
        pool.submit(i)
    await pool.idle.wait()
    ctl("-z")
    ctl("-i", "on")
    done = 0
    while done < N:
        for i in range(BATCH):
            pool.submit(i)
        await pool.idle.wait()
        done += BATCH
    ctl("-i", "off")
    ctl("--dump=pool")
    await pool.close()
    print("messages", done)


uvloop.run(main())
