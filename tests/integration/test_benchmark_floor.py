"""benchmarks/floor_consumer.py, the yardstick single_hop.py --floor compares the runtime with,
must do the contract's per-message work, or its figure says nothing: every entry acked, a
done mark for every message, a message already marked done not handled again, and one trace
record per handled message (none with traces off)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
import redis

from agent_runtime.codec import FIELD_MESSAGE
from agent_runtime.testing import wait_until
from agent_runtime.transport.keys import Keys
from benchmarks.single_hop import envelopes
from tests.conftest import ROOT

pytestmark = pytest.mark.integration


@pytest.fixture
def admin(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


def _ids(fields: dict[bytes, bytes]) -> tuple[str, str]:
    envelope = json.loads(fields[FIELD_MESSAGE])
    return envelope["message_id"], envelope["correlation_id"]


@pytest.mark.parametrize("trace", [True, False])
def test_floor_does_the_contracts_work(
    admin: redis.Redis, redis_url: str, prefix: str, subprocess_env: dict[str, str], trace: bool
) -> None:
    keys = Keys(prefix)
    stream = keys.inbox("noop")
    admin.xgroup_create(stream, "noop", id="0", mkstream=True)
    items = envelopes(4, prefix)
    ids = [_ids(fields) for fields in items]
    seen_id, seen_cid = ids[0]  # handled before: must be acked, not handled again
    bucket = int(time.time() // 86_400)
    admin.sadd(keys.done("noop", bucket), seen_id)
    for fields in items:
        admin.xadd(stream, fields)  # type: ignore[arg-type]
    argv = [sys.executable, str(ROOT / "benchmarks" / "floor_consumer.py"), redis_url, stream]
    argv += ["noop", "128", prefix, "1" if trace else "0"]
    with subprocess.Popen(argv, env=subprocess_env, stderr=subprocess.PIPE) as process:

        def drained() -> bool:
            group = admin.xinfo_groups(stream)[0]
            return bool(group["entries-read"] == 4 and group["pending"] == 0)

        try:
            wait_until(lambda: drained() or process.poll() is not None, 30, message="floor acks")
            assert process.poll() is None, process.communicate()[1].decode()
        finally:
            process.kill()
    marked = admin.smembers(keys.done("noop", bucket))
    assert marked == {mid.encode() for mid, _ in ids}
    assert not admin.exists(keys.trace(seen_cid))
    for mid, cid in ids[1:]:
        records = [json.loads(r) for r in admin.lrange(keys.trace(cid), 0, -1)]
        if not trace:
            assert records == []
            continue
        assert [(r["message_id"], r["outcome"], r["agent"]) for r in records] == [
            (mid, "handled", "noop")
        ]
        assert admin.ttl(keys.trace(cid)) > 0
