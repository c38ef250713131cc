"""Worker-side cost of dead-lettering hostile entries: a 4 MiB entry (over the size cap) and a
256 KiB deeply nested entry (under the cap). Target: under 5 ms each (issue 12).

In process (always): a real ``Worker`` (no-op agent; its Redis client is never used here) runs
``Worker._register([entry])`` -- decode, build the dead letter, redact it, log it (JSON, to
/dev/null), count it -- and then the dead-letter fields the commit XADDs
(``streams._dead_fields``). Min, median and max over ``--rounds`` (the minimum is the code's
own cost; the rest adds whatever else the machine runs), plus the bytes the dead letter would
write.

``--e2e``: also through a real worker process on an embedded server: the time from XADD of the
entry until its dead letter is readable (XREAD BLOCK on the dead-letter stream), which adds two
transfers of the entry and one commit.

``--tree PATH`` runs the same code against another checkout's ``agent_runtime`` (for a before
figure: ``mkdir /tmp/before && git archive main agent_runtime protocols agents | tar -x -C
/tmp/before``). A code path that raises is reported with the exception (a worker would crash).

    .venv/bin/python benchmarks/deadletter.py [--rounds 20] [--e2e] [--tree PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

ROOT = Path(__file__).resolve().parent.parent
MiB = 1024 * 1024
KiB = 1024


def _envelope(prefix: str, metadata_json: str) -> bytes:
    cid = uuid.uuid4()
    data = {
        "message_id": str(uuid.uuid4()),
        "correlation_id": str(cid),
        "from_agent": "client",
        "to_agent": "noop",
        "message_type": "user.request",
        "schema_version": 1,
        "payload": {"text": "hostile", "metadata": 0},
        "timestamp": "2026-12-01T00:00:00+00:00",
        "reply_to": f"{prefix}:reply:{{{cid}}}",
    }
    return json.dumps(data).replace('"metadata": 0', f'"metadata": {metadata_json}').encode()


def entries(prefix: str) -> dict[str, dict[bytes, bytes]]:
    """The two entries of the issue, each an envelope of exactly its size."""
    big = _envelope(prefix, '{"pad": ""}')
    big = big.replace(b'"pad": ""', b'"pad": "' + b"x" * (4 * MiB - len(big)) + b'"')
    head = len(_envelope(prefix, "[]")) - 2
    levels = (256 * KiB - head) // 2
    deep = _envelope(prefix, "[" * levels + "]" * levels)
    return {"4 MiB entry (oversize)": {b"m": big}, "256 KiB nested entry": {b"m": deep}}


def _config(prefix: str) -> dict[str, Any]:
    return {
        "key_prefix": prefix,
        "allowed_modules": ["benchmarks"],
        "worker": {"block_ms": 100, "heartbeat_interval": 0.5},
        "agents": {"noop": {"class": "benchmarks.agents:Noop"}},
    }


def in_process(rounds: int, timeout: float) -> list[tuple[str, str]]:
    """Each entry in a forked child, so a code path that never finishes (the old redactor on
    4 MiB) is reported after ``timeout`` seconds instead of hanging the benchmark."""
    import multiprocessing

    context = multiprocessing.get_context("fork")
    out = []
    for name in entries("x"):
        results: Any = context.Queue()
        child = context.Process(target=_measure, args=(name, rounds, results))
        child.start()
        child.join(timeout)
        if child.is_alive():
            child.kill()
            child.join()
            out.append((name, f"did not finish within {timeout:.0f} s"))
        else:
            out.append((name, results.get()))
    return out


def _measure(name: str, rounds: int, results: Any) -> None:
    from agent_runtime.config.pipeline import Pipeline
    from agent_runtime.observability.logging import configure_logging
    from agent_runtime.transport import streams
    from agent_runtime.transport.streams import Entry
    from agent_runtime.worker.build import build_worker

    configure_logging(json=True, stream=open(os.devnull, "w"))  # for the process's life
    prefix = "bench" + uuid.uuid4().hex[:6]
    pipeline = Pipeline.build(_load(_config(prefix)))
    worker = build_worker(pipeline, "noop", None, consumer="bench-0").worker
    fields = entries(prefix)[name]
    times: list[float] = []
    written = 0
    for i in range(rounds):
        entry = Entry(pipeline.routing.inboxes("noop")[0], f"{i + 1}-0".encode(), fields)
        started = time.perf_counter()
        try:
            worker._register([entry])
            letter = worker._finished.pop().letter
            assert letter is not None
            dead = streams._dead_fields(letter, "bench-0")
        except BaseException as exc:  # the old code path may raise: report it
            elapsed = (time.perf_counter() - started) * 1000
            results.put(f"raised {type(exc).__name__} after {elapsed:.1f} ms")
            return
        times.append(time.perf_counter() - started)
        written = sum(len(k) + len(v) for k, v in dead.items())
        worker._deliveries.clear()
    results.put(_figures(times) + f"; dead letter {written:,} bytes")


def _figures(seconds: list[float]) -> str:
    ms = sorted(s * 1000 for s in seconds)
    middle = statistics.median(ms)
    return f"min {ms[0]:.2f} ms, median {middle:.2f} ms, max {ms[-1]:.2f} ms ({len(ms)} rounds)"


def _load(config: dict[str, Any]) -> Any:
    from agent_runtime.config.model import PipelineConfig

    return PipelineConfig.model_validate(config)


def end_to_end(rounds: int, tree: Path) -> list[tuple[str, str]]:
    import yaml

    from agent_runtime.testing import WorkerProcess
    from agent_runtime.transport.embedded import EmbeddedServer
    from agent_runtime.transport.keys import Keys

    out = []
    with tempfile.TemporaryDirectory() as tmp:
        server = EmbeddedServer(Path(tmp) / "redis", persistent=False)
        server.start()
        try:
            prefix = "bench" + uuid.uuid4().hex[:6]
            config = Path(tmp) / "pipeline.yaml"
            config.write_text(yaml.safe_dump(_config(prefix)))
            env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tree), str(ROOT)])}
            keys, r = Keys(prefix), redis.Redis.from_url(server.url)
            here = Path.cwd()
            os.chdir(tmp)  # ``python -m`` puts the working directory first on sys.path
            try:
                worker = WorkerProcess(
                    "noop", config=config, redis_url=server.url, env=env, log_path=Path("w.log")
                ).start()
            finally:
                os.chdir(here)
            worker.wait_ready(r, keys, 60)
            for name, fields in entries(prefix).items():
                out.append((name, _through_worker(r, keys, fields, rounds, worker.alive)))
            worker.stop(10)
        finally:
            server.stop()
    return out


def _through_worker(
    r: Any, keys: Any, fields: dict[bytes, bytes], rounds: int, alive: Callable[[], bool]
) -> str:
    times = []
    for _ in range(rounds):
        last = (r.xrevrange(keys.dlq("noop"), count=1) or [(b"0-0", {})])[0][0]
        started = time.perf_counter()
        r.xadd(keys.inbox("noop"), fields)
        try:
            got = r.xread({keys.dlq("noop"): last}, count=1, block=5_000)
        except redis.exceptions.TimeoutError:  # the client's own socket timeout
            got = None
        if not got:
            return "no dead letter within 5 s" + ("" if alive() else " (the worker exited)")
        times.append(time.perf_counter() - started)
    return _figures(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--e2e", action="store_true", help="also through a worker process")
    parser.add_argument("--tree", type=Path, default=ROOT, help="checkout to measure")
    parser.add_argument("--timeout", type=float, default=60, help="seconds per entry (in process)")
    args = parser.parse_args()
    tree = args.tree.resolve()
    sys.path.insert(0, str(ROOT))  # benchmarks.agents
    sys.path.insert(0, str(tree))
    import agent_runtime

    print(f"tree: {Path(agent_runtime.__file__).parent.parent}")
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
    )
    print("in process (decode + dead letter + redaction + log + commit fields):")
    for name, figures in in_process(args.rounds, args.timeout):
        print(f"  {name}: {figures}")
    if args.e2e:
        print("end to end (XADD -> dead letter readable, one worker process):")
        for name, figures in end_to_end(max(args.rounds // 4, 3), tree):
            print(f"  {name}: {figures}")


if __name__ == "__main__":
    main()
