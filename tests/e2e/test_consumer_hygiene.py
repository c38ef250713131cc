"""Consumer names and hygiene with real worker processes on the session's server.

A worker replaced under the same stable name (``AGENT_RUNTIME_CONSUMER_NAME``, as each
Compose service sets it) takes over what its killed predecessor left pending at once, while
``reclaim_idle`` (how long another consumer would wait) is ten minutes.

Consumers left in a
group by gone workers (autoscaling churn, recreated containers) are removed by a live worker
once idle past ``consumer_idle_remove`` -- but never while they own pending entries: a dead
worker's unacknowledged message is first reclaimed (``reclaim_idle``) and answered, and only
then its consumer removed. Removal is deliberately quicker than reclaim here, so removing a
consumer with pending entries (which drops them from the group for good) would lose the
message and the request would never be answered."""

from __future__ import annotations

from typing import Any

import pytest

from agent_runtime.testing import wait_until
from tests.fixtures.pipeline import FAST, MakePipeline, echo_sink

pytestmark = pytest.mark.e2e

HYGIENE: dict[str, Any] = {
    **FAST,
    "reclaim_idle": 3.0,
    "consumer_idle_remove": 0.5,
    "consumer_sweep_interval": 0.1,
}


def consumers(p: Any, agent: str) -> set[str]:
    rows = p.r.xinfo_consumers(p.keys.inbox(agent), p.keys.group(agent))
    return {r["name"].decode() for r in rows}


def test_gone_workers_consumers_are_removed_after_their_pending_work(
    make_pipeline: MakePipeline,
) -> None:
    p = make_pipeline(worker=HYGIENE)
    inbox, group = p.keys.inbox("echo"), p.keys.group("echo")
    p.r.xgroup_create(inbox, group, id="0", mkstream=True)
    p.r.xgroup_createconsumer(inbox, group, "echo-scaled-away-0")  # owns nothing
    message = p.publish("taken by a worker that died")
    taken = p.r.xreadgroup(group, "echo-killed-0", {inbox: ">"}, count=1)  # never acked
    assert len(taken[0][1]) == 1

    p.start("sink")
    p.start("echo")
    live = p.consumer("echo")
    wait_until(lambda: p.replies(message), 30, message="the dead worker's message answered")
    wait_until(
        lambda: consumers(p, "echo") == {live},
        30,
        message="both gone consumers removed, the live one kept",
    )
    assert p.pending("echo") == []
    assert consumers(p, "sink") == {p.consumer("sink")}
    log = (p.root / "echo-0.log").read_text()
    assert "idle_consumers_removed" in log


def test_a_replacement_under_the_same_consumer_name_resumes_the_pending_work_at_once(
    make_pipeline: MakePipeline, tmp_path: Any
) -> None:
    markers = tmp_path / "markers"
    markers.mkdir()
    p = make_pipeline(
        echo_sink({"hang_first_delivery": True, "marker_dir": str(markers)}),
        worker={**FAST, "reclaim_idle": 600.0},
    )
    p.start("sink")

    def started(name: str) -> None:
        key = p.keys.heartbeat("echo", name)
        wait_until(lambda: p.r.exists(key), 60, message=f"{name}'s heartbeat")

    first = p.start("echo", "0", wait=False, AGENT_RUNTIME_CONSUMER_NAME="echo-1")
    started("echo-1")
    message = p.publish("in flight when its worker is killed")
    wait_until(lambda: list(markers.iterdir()), 30, message="the first delivery under way")
    first.kill()  # SIGKILL: nothing handed back, the entry stays pending for echo-1
    assert [row["consumer"] for row in p.pending("echo")] == [b"echo-1"]

    # the replacement: another process (slot, host name) under the same consumer name
    second = p.start("echo", "1", wait=False, AGENT_RUNTIME_CONSUMER_NAME="echo-1")
    started("echo-1")
    wait_until(lambda: p.replies(message), 30, message="the replacement's answer")
    assert p.replies(message) == [{"text": "IN FLIGHT WHEN ITS WORKER IS KILLED"}]
    assert consumers(p, "echo") == {"echo-1"}, "no consumer named after the host"
    assert second.alive()
