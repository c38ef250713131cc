"""Single-hop throughput: producer -> one consumer process -> ack.

Runs, in the same run and on the same embedded server, (1) the raw redis-py XREADGROUP/XACK
loop and (2) one ``agent-runtime worker`` process with a no-op agent (decode + validate +
de-duplicate + handle + done marker + trace + ack), and prints both throughputs and the ratio.

    .venv/bin/python benchmarks/single_hop.py [--messages 50000] [--rounds 3]

``--checkout NAME=PATH`` (repeatable) also runs the runtime variants from another checkout of
the project (its worker process imports that checkout's code), interleaved with this one's in
every round: before/after figures from the same run.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import NamedTuple

import redis
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agent_runtime.config.pipeline import Pipeline  # noqa: E402
from agent_runtime.signing import ensure_keyring  # noqa: E402
from agent_runtime.transport.embedded import EmbeddedServer  # noqa: E402
from protocols.core import UserRequest  # noqa: E402
from protocols.envelope import AgentMessage, utcnow  # noqa: E402


def envelopes(n: int, prefix: str) -> list[dict[bytes, bytes]]:
    """``n`` request entries for the no-op agent's inbox, signed as the Client signs them (the
    runtime directory's key, created when missing, as ``run`` does)."""
    ensure_keyring()
    pipeline = Pipeline.build(_config(prefix, {}))
    codec, stream = pipeline.codec(), pipeline.config.keys.inbox("noop")
    out = []
    for i in range(n):
        cid = uuid.uuid4()
        message = AgentMessage(
            message_id=uuid.uuid4(),
            correlation_id=cid,
            from_agent="client",
            to_agent="noop",
            message_type="user.request",
            schema_version=1,
            payload=UserRequest(text=f"benchmark request {i}").model_dump(mode="json"),
            timestamp=utcnow(),
            reply_to=f"{prefix}:reply:{{{cid}}}",
        )
        out.append(codec.encode(message, stream))
    return out


def _config(prefix: str, worker: dict[str, object]) -> object:
    from agent_runtime.config.model import PipelineConfig

    return PipelineConfig.model_validate(
        {
            "key_prefix": prefix,
            "allowed_modules": ["benchmarks"],
            "worker": worker,
            "agents": {"noop": {"class": "benchmarks.agents:Noop"}},
        }
    )


def produce(r: redis.Redis, stream: str, items: list[dict[bytes, bytes]]) -> None:
    for start in range(0, len(items), 1000):
        with r.pipeline(transaction=False) as pipe:
            for fields in items[start : start + 1000]:
                pipe.xadd(stream, fields)  # type: ignore[arg-type]
            pipe.execute()


def wait_consumed(r: redis.Redis, stream: str, group: str, n: int, timeout: float) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = {g["name"]: g for g in r.xinfo_groups(stream)}.get(group.encode())
        if info and info["entries-read"] and info["entries-read"] >= n and info["pending"] == 0:
            return time.perf_counter()
        time.sleep(0.005)
    raise TimeoutError(f"{stream}: not all {n} entries consumed within {timeout}s")


class Run(NamedTuple):
    """One consumer's round: messages per second, and its CPU time per message (user + system
    while it consumed, from /proc; None where there is no /proc)."""

    rate: float
    cpu_us: float | None


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of process ``pid`` so far (Linux /proc), else None."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def run_one(
    r: redis.Redis,
    url: str,
    argv: list[str],
    stream: str,
    group: str,
    items: list[dict[bytes, bytes]],
    ready: object,
    checkout: Path = ROOT,
) -> Run:
    env = {**os.environ, "PYTHONPATH": str(checkout), "AGENT_RUNTIME_LOG_LEVEL": "warning"}
    proc = subprocess.Popen(
        argv, env=env, cwd=checkout, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 30
        while not ready():  # type: ignore[operator]
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"consumer did not start: {argv}")
            time.sleep(0.01)
        cpu_started = cpu_seconds(proc.pid)
        started = time.perf_counter()
        produce(r, stream, items)
        finished = wait_consumed(r, stream, group, len(items), 300)
        cpu_finished = cpu_seconds(proc.pid)
        cpu_us = None
        if cpu_started is not None and cpu_finished is not None:
            cpu_us = (cpu_finished - cpu_started) / len(items) * 1e6
        return Run(len(items) / (finished - started), cpu_us)
    finally:
        proc.terminate()
        proc.wait(30)


def script_consumer(
    r: redis.Redis,
    url: str,
    script: str,
    stream: str,
    group: str,
    items: list[dict[bytes, bytes]],
    *extra: str,
) -> Run:
    """One round of ``python benchmarks/SCRIPT URL STREAM GROUP EXTRA...`` as the consumer,
    ready once the group has a consumer."""
    r.xgroup_create(stream, group, id="0", mkstream=True)
    argv = [sys.executable, str(ROOT / "benchmarks" / script), url, stream, group, *extra]
    consumers = lambda: any(g["consumers"] for g in r.xinfo_groups(stream))  # noqa: E731
    return run_one(r, url, argv, stream, group, items, consumers)


def raw(r: redis.Redis, url: str, items: list[dict[bytes, bytes]], batch: int) -> Run:
    stream = f"raw{uuid.uuid4().hex[:6]}:inbox"
    return script_consumer(r, url, "raw_consumer.py", stream, "raw", items, str(batch))


def floor(r: redis.Redis, url: str, n: int, batch: int, trace: bool) -> Run:
    """The contract's per-message work without a worker (benchmarks/floor_consumer.py)."""
    prefix = f"f{uuid.uuid4().hex[:6]}"
    stream, flag = f"{prefix}:inbox:noop", "1" if trace else "0"
    items = envelopes(n, prefix)
    return script_consumer(
        r, url, "floor_consumer.py", stream, "noop", items, str(batch), prefix, flag
    )


def runtime(
    r: redis.Redis,
    url: str,
    n: int,
    worker: dict[str, object],
    tmp: Path,
    checkout: Path = ROOT,
) -> Run:
    prefix = f"b{uuid.uuid4().hex[:6]}"
    items = envelopes(n, prefix)
    config = tmp / f"{prefix}.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "key_prefix": prefix,
                "allowed_modules": ["benchmarks"],
                "worker": worker,
                "agents": {"noop": {"class": "benchmarks.agents:Noop"}},
            }
        )
    )
    argv = [
        sys.executable,
        "-m",
        "agent_runtime",
        "worker",
        "noop",
        "--config",
        str(config),
        "--redis-url",
        url,
    ]
    hb = f"{prefix}:hb:*"
    inbox, ready = f"{prefix}:inbox:noop", lambda: bool(r.keys(hb))
    return run_one(r, url, argv, inbox, "noop", items, ready, checkout)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=128, help="XREADGROUP COUNT for both")
    parser.add_argument("--concurrency", type=int, default=256)
    parser.add_argument(
        "--floor",
        action="store_true",
        help="also run benchmarks/floor_consumer.py (the contract's per-message work with no "
        "worker around it, traces on and off): an upper bound for any Python consumer",
    )
    parser.add_argument(
        "--checkout",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="also run the runtime variants from the checkout at PATH, labelled NAME",
    )
    args = parser.parse_args()
    checkouts = {"": ROOT} | {
        f" [{name}]": Path(path).resolve()
        for name, path in (item.split("=", 1) for item in args.checkout)
    }
    print(
        f"machine: {platform.machine()} {os.cpu_count()} cores, Python "
        f"{platform.python_version()}, {platform.platform()}"
    )
    with (
        tempfile.TemporaryDirectory() as tmp,
        EmbeddedServer(Path(tmp) / "redis", persistent=False) as server,
    ):
        r = redis.Redis.from_url(server.url)
        base = {"batch_size": args.batch, "concurrency": args.concurrency}
        variants = {
            f"runtime (defaults: trace on){label}": (base, path)
            for label, path in checkouts.items()
        } | {
            f"runtime (trace off){label}": ({**base, "trace": False}, path)
            for label, path in checkouts.items()
        }
        floors = {"floor (trace on)": True, "floor (trace off)": False} if args.floor else {}
        results: dict[str, list[Run]] = {
            "raw redis-py loop": [],
            **{k: [] for k in variants},
            **{k: [] for k in floors},
        }
        sample = envelopes(args.messages, "raw")
        for round_ in range(args.rounds):
            results["raw redis-py loop"].append(raw(r, server.url, sample, args.batch))
            for name, (worker, path) in variants.items():
                results[name].append(runtime(r, server.url, args.messages, worker, Path(tmp), path))
                r.flushall()
            for name, trace in floors.items():
                results[name].append(floor(r, server.url, args.messages, args.batch, trace))
                r.flushall()
            print(
                f"round {round_ + 1}: "
                + ", ".join(f"{k} {v[-1].rate:,.0f}/s" for k, v in results.items())
            )
        _report(results, args)


def _report(results: dict[str, list[Run]], args: argparse.Namespace) -> None:
    """Best of the rounds, and the median of the per-round ratios: raw and runtime run back to
    back within a round, so a round's ratio is the figure least disturbed by a noisy machine.

    CPU us/msg is the consumer's own CPU time per message (median). "CPU-bound ratio" is the
    ratio a consumer would reach if it never waited (1 / its CPU time per message, against the
    raw loop of the same round): an upper bound for that consumer's way of doing the work."""
    raw_runs = results["raw redis-py loop"]
    print(
        f"\n{args.messages:,} messages, {args.rounds} rounds, batch {args.batch}, "
        f"concurrency {args.concurrency}"
    )
    print(
        f"  {'':32s} {'best msg/s':>12s} {'median ratio':>13s} {'CPU us/msg':>11s}"
        f" {'CPU-bound ratio':>16s}"
    )
    for name, runs in results.items():
        ratios = sorted(run.rate / raw.rate for run, raw in zip(runs, raw_runs, strict=True))
        line = f"  {name:32s} {max(run.rate for run in runs):12,.0f} {_median(ratios):12.2f}x"
        cpus = [run.cpu_us for run in runs]
        if all(cpu for cpu in cpus):
            bound = [1e6 / cpu / raw.rate for cpu, raw in zip(cpus, raw_runs, strict=True) if cpu]
            line += f" {_median([c for c in cpus if c]):11.1f} {_median(bound):15.2f}x"
        print(line)


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2]


if __name__ == "__main__":
    main()
