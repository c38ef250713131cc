"""CPU instructions per message of one worker, counted by valgrind (callgrind): a figure that,
unlike msg/s, does not move with the other tenants of a noisy machine.

Starts an embedded server, runs ``agent-runtime worker``'s ``serve`` in this process with the
no-op agent, pre-fills its inbox with N envelopes in one MULTI/EXEC, and counts instructions
only while the worker consumes them (callgrind's instrumentation is switched on and off around
that phase). The raw redis-py XREADGROUP/XACK loop is counted the same way.

    .venv/bin/python benchmarks/instructions.py [--messages 10000] [--only runtime]

runs itself under ``valgrind --tool=callgrind`` once per variant (raw loop, runtime with
traces and without, and benchmarks/floor_consumer.py with traces and without: the contract's
per-message work with no worker around it) and prints instructions per message. A clock read
(``time.time()``) counts about 500 instructions here.

``--agent forward`` measures a forwarding stage instead of the no-op consumer and ``--batch N``
sets its batch_size (small batches: a low request rate; issue 17).
``--only runtime`` measures only the worker (repeatable; also ``raw``, ``floor``), and
``--traces off`` only one trace mode: a change that does not touch trace records saves the same
instructions per message either way. The worker runs on the event loop ``agent-runtime worker``
picks (``loop_options()``), so its environment switches (AGENT_RUNTIME_UVLOOP=0,
AGENT_RUNTIME_GC_TUNE=0) apply here too.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
import tempfile
import time
from pathlib import Path

import anyio
import redis
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from callgrind import collected, instrument  # noqa: E402
from single_hop import envelopes  # noqa: E402

from agent_runtime.cli import worker as cli_worker  # noqa: E402
from agent_runtime.config.model import load_config  # noqa: E402
from agent_runtime.config.pipeline import Pipeline  # noqa: E402
from agent_runtime.transport.embedded import EmbeddedServer  # noqa: E402


def consumed(r: redis.Redis, stream: str, group: str, n: int) -> bool:
    info = {g["name"]: g for g in r.xinfo_groups(stream)}.get(group.encode())
    return bool(info and (info["entries-read"] or 0) >= n and info["pending"] == 0)


#: The agent measured: a no-op consumer, or a forwarding stage (benchmarks/pipeline.py's stage 1:
#: one output per message, written by the same commit) -- named "noop" either way.
AGENTS = {
    "noop": {"noop": {"class": "benchmarks.agents:Noop"}},
    "forward": {
        "noop": {"class": "benchmarks.agents:Stage1"},
        # the rest of the chain, for routing only: no worker runs them here
        **{f"s{i}": {"class": f"benchmarks.agents:Stage{i}"} for i in range(2, 7)},
    },
}


async def run_worker(
    url: str,
    tmp: Path,
    n: int,
    trace: bool,
    r: redis.Redis,
    agent: str,
    batch: int,
    unsigned: bool = False,
) -> None:
    prefix = "ib"
    config = tmp / "pipeline.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "key_prefix": prefix,
                "allowed_modules": ["benchmarks"],
                "worker": {"batch_size": batch, "concurrency": 256, "trace": trace},
                "agents": AGENTS[agent],
                **({"signing": False} if unsigned else {}),
            }
        )
    )
    pipeline = Pipeline.build(load_config(config))
    stream = f"{prefix}:inbox:noop"
    items = envelopes(n, prefix)
    task = asyncio.get_running_loop().create_task(cli_worker.serve(pipeline, "noop", url, "noop-0"))
    while not r.keys(f"{prefix}:hb:*"):  # noqa: ASYNC110 -- state of another client
        await asyncio.sleep(0.05)
    with r.pipeline(transaction=True) as pipe:
        for fields in items:
            pipe.xadd(stream, fields)  # type: ignore[arg-type]
        pipe.execute()
    instrument(True)
    while not consumed(r, stream, "noop", n):  # noqa: ASYNC110 -- the server's group state
        await asyncio.sleep(0.2)  # few polls: their cost is counted too
    instrument(False)
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass


def run_raw(r: redis.Redis, n: int) -> None:
    stream, group = "raw:inbox", "raw"
    r.xgroup_create(stream, group, id="0", mkstream=True)
    items = envelopes(n, "raw")
    with r.pipeline(transaction=True) as pipe:
        for fields in items:
            pipe.xadd(stream, fields)  # type: ignore[arg-type]
        pipe.execute()
    gc.collect()
    instrument(True)
    done = 0
    while done < n:  # the loop of benchmarks/raw_consumer.py
        reply = r.xreadgroup(group, "raw-0", {stream: ">"}, count=128, block=1000)
        for _name, entries in reply or []:
            r.xack(stream, group, *[entry_id for entry_id, _fields in entries])
            done += len(entries)
    instrument(False)


def run_floor(r: redis.Redis, url: str, n: int, trace: bool) -> None:
    """benchmarks/floor_consumer.py (the contract's per-message work, no worker), in a thread."""
    import threading

    import floor_consumer

    prefix = "fl"
    stream = f"{prefix}:inbox:noop"
    r.xgroup_create(stream, "noop", id="0", mkstream=True)
    items = envelopes(n, prefix)
    with r.pipeline(transaction=True) as pipe:
        for fields in items:
            pipe.xadd(stream, fields)  # type: ignore[arg-type]
        pipe.execute()
    instrument(True)
    args = (url, stream, "noop", 128, prefix, trace)
    threading.Thread(target=floor_consumer.main, args=args, daemon=True).start()
    while not consumed(r, stream, "noop", n):
        time.sleep(0.2)  # few polls: their cost is counted too
    instrument(False)


def measure(
    what: str,
    messages: int,
    trace: bool,
    agent: str = "noop",
    batch: int = 128,
    unsigned: bool = False,
) -> float:
    """Run this script under callgrind for one variant; instructions per message."""
    args = ["--variant", what, "--messages", str(messages), "--trace" if trace else "--no-trace"]
    args += ["--agent", agent, "--batch", str(batch), *(["--unsigned"] if unsigned else [])]
    return collected(__file__, args) / messages


def drive(
    messages: int, only: set[str], traces: list[bool], agent: str, batch: int, unsigned: bool
) -> None:
    """Measure the chosen variants, each in its own valgrind run, and print the figures."""
    raw = measure("raw", messages, False) if "raw" in only else None
    if raw is not None:
        print(f"raw redis-py loop          {raw:9,.0f} instructions/message")
    for what in ("runtime", "floor"):
        if what not in only:
            continue
        for trace in traces:
            count = measure(what, messages, trace, agent, batch, unsigned and what == "runtime")
            label = f"{what} (trace {'on' if trace else 'off'})"
            if what == "runtime" and (agent, batch, unsigned) != ("noop", 128, False):
                label = f"{what} {agent} b{batch}{' unsigned' if unsigned else ''} " + (
                    f"(trace {'on' if trace else 'off'})"
                )
            ratio = "" if raw is None else f"  ({count / raw:.1f}x raw)"
            print(f"{label:26s} {count:9,.0f} instructions/message{ratio}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--variant", choices=["runtime", "raw", "floor"], help=argparse.SUPPRESS)
    parser.add_argument("--trace", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument(
        "--only",
        action="append",
        choices=["raw", "runtime", "floor"],
        help="measure only these variants (repeatable; default: all three)",
    )
    parser.add_argument(
        "--traces",
        nargs="+",
        choices=["on", "off"],
        help="the runtime and floor variants with traces on, off, or both (the default)",
    )
    parser.add_argument(
        "--agent",
        choices=sorted(AGENTS),
        default="noop",
        help="the runtime variant's agent: a no-op consumer (default) or a forwarding stage",
    )
    parser.add_argument(
        "--batch",
        type=int,
        default=128,
        help="the runtime variant's batch_size (XREADGROUP COUNT): small values stand for "
        "the small batches of a low request rate",
    )
    parser.add_argument(
        "--unsigned",
        action="store_true",
        help="the runtime variant with 'signing: off' (no HMAC verify): the worker's other work, "
        "comparable with figures taken before signing became the default (issue 14)",
    )
    args = parser.parse_args()
    if args.variant is None:  # the driver: one valgrind run per variant
        modes = [mode == "on" for mode in args.traces or ["on", "off"]]
        only = set(args.only or ["raw", "runtime", "floor"])
        drive(args.messages, only, modes, args.agent, args.batch, args.unsigned)
        return
    args.what = args.variant
    started = time.monotonic()
    with (
        tempfile.TemporaryDirectory() as tmp,
        EmbeddedServer(Path(tmp) / "redis", persistent=False) as server,
    ):
        r = redis.Redis.from_url(server.url)
        if args.what == "raw":
            run_raw(r, args.messages)
        elif args.what == "floor":
            run_floor(r, server.url, args.messages, args.trace)
        else:
            anyio.run(
                run_worker,
                server.url,
                Path(tmp),
                args.messages,
                args.trace,
                r,
                args.agent,
                args.batch,
                args.unsigned,
                backend_options=cli_worker.loop_options(),
            )
    label = args.what + ("" if args.what == "raw" else f" trace={'on' if args.trace else 'off'}")
    print(
        f"{label}: divide valgrind's 'Collected' by {args.messages} "
        f"({time.monotonic() - started:.0f}s)",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
