"""The worker's de-duplication check folded into its next read (loop.py ``_read_folded``):
copies of a message already handled, read while entries wait (non-blocking reads), are
dropped and acked without running the handler again (REDIS-NOTES "Duplicates come from
below": a re-sent XADD writes the same envelope twice)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest

from agent_runtime.inprocess import TestPipeline
from agent_runtime.worker.loop import Worker
from tests.inprocess.test_test_pipeline import echo_pipeline

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30)]


async def settled(worker: Worker, processed: int) -> None:
    with anyio.fail_after(10):
        while worker.processed < processed:
            await anyio.sleep(0.01)


async def test_copies_read_without_blocking_are_dropped_by_the_done_marks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pipeline = echo_pipeline({"batch_size": 1}, marker_dir=str(tmp_path))
    async with TestPipeline(pipeline) as tp:
        worker = tp.workers["echo"]
        checks: list[tuple[list[str], list[bool]]] = []
        real = worker.bus.read_checked

        async def read_checked(streams: Any, count: int, ids: list[str]) -> Any:
            entries, done = await real(streams, count, ids)
            checks.append((ids, done))
            return entries, done

        monkeypatch.setattr(worker.bus, "read_checked", read_checked)
        message = await tp.publish("once")
        await tp.wait_reply(message)
        await settled(worker, 1)
        inbox = tp.keys.inbox("echo")
        [(_, fields)] = await tp.redis.xrange(inbox)
        for _ in range(3):  # a client retry's copies, queued at once
            await tp.redis.xadd(inbox, fields)
        await settled(worker, 4)
        pending = await tp.redis.xpending(inbox, "echo")
        replies = await tp.redis.xlen(message.reply_to or "")

    assert len(list(tmp_path.iterdir())) == 1  # the handler ran once
    assert replies == 1
    assert pending["pending"] == 0  # the copies were acked
    mid = str(message.message_id)
    # batch_size 1: the first delivery's check and each copy's rode on the read after it
    found = [done for ids, flags in checks for i, done in zip(ids, flags, strict=True) if i == mid]
    assert found == [False, True, True, True]
