"""The six-stage floor: what the message contract's own per-message work allows a six-stage
pipeline of Python processes, against the raw relay and the runtime in the same run (issue 17).

Three variants of the same six-stage chain, each stage its own process, on one embedded server:

* **raw relay** (benchmarks/raw_relay.py): XREADGROUP, then XADD each entry's fields to the
  next stream + XACK, pipelined; no decoding, no checks;
* **floor relay** (``stage`` below): a synchronous redis-py loop per stage that does exactly
  the contract's work of a runtime stage and nothing else, through the runtime's own
  functions (so the floor moves when they get cheaper): XREADGROUP a batch (raw reply, as the
  worker reads: ``transport.streams._entries``); per entry the size cap, the signature, the
  envelope and the payload (``Codec.decode``, signed as the pipeline's codec is); the
  de-duplication check of the batch's ids (two SMISMEMBER on the done sets; a full batch's
  ride on the next, non-blocking, read, as the worker folds them: ``read_checked``); the
  checks before handling (``fate.before_handling``: deliveries, freshness, deadline, hops,
  addressee); the stage's output built as the handler + ``MessageContext.send``/``reply``
  build it (the same payload classes as benchmarks/agents.py Stage1..Stage6, ``model_dump``,
  ``AgentMessage.derive`` with ``hop_traceparent``, routed by the pipeline's ``Routing``); the
  commit as the worker builds and writes it (``build_commit``: ``Codec.encode`` + sign, the
  trace record by ``Tracer``; ``script_args`` and ONE ``EVALSHA`` of ``COMMIT_SCRIPT``:
  outputs, done marks, acks and trace records). Left out, as worker machinery and not the
  contract: asyncio, the handler pool and its middleware/policies, ``MessageContext``, lease
  renewal, reclaim, heartbeats, dead letters (a bad entry stops this loop), retries, metrics,
  logging;
* **runtime**: ``agent-runtime worker`` per stage (benchmarks/agents.py Stage1..Stage6,
  default settings, traces on unless ``--traces off``), as benchmarks/pipeline.py starts them.

Per round, the three variants one after the other (the order rotates from round to round, so
the machine's other load falls on each alike): ``--messages`` signed requests (built by
``Client.new_message`` + ``Codec.encode``, the same way for all three) queued at once in
stage 1's stream; req/s until stage 6 has consumed and acked them all, and each stage
process's CPU (user + system, /proc) per request over that drain, and the Redis server's
(its INFO cpu). The load average is printed per variant. Medians of the rounds; the ratios
are medians of the rounds' ratios.

    .venv/bin/python benchmarks/floor_pipeline.py [--rounds 3] [--messages 10000] [--batch 128]
    .venv/bin/python benchmarks/floor_pipeline.py --instructions 3000   # callgrind, one stage

``--instructions N`` instead counts instructions per message (valgrind callgrind, as
benchmarks/instructions.py: immune to the machine's load) of ONE stage draining N requests
in its inbox: the raw relay's stage, the floor's stage 1 (a forwarding stage), and the
runtime's forwarding stage (benchmarks/instructions.py ``--agent forward``); traces on unless
``--traces off``. (The runtime's count is not load-proof: under valgrind on a loaded machine
its handler pool's 20 ms burst budget can split batches; see docs/benchmarks.md "Issue 17:
handler and output path".)
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from agent_runtime.config.model import PipelineConfig  # noqa: E402
from agent_runtime.config.pipeline import Pipeline  # noqa: E402
from agent_runtime.transport.commit import COMMIT_SCRIPT, refused_items, script_args  # noqa: E402
from agent_runtime.transport.streams import Entry, _entries  # noqa: E402
from agent_runtime.worker.delivery import (  # noqa: E402
    REPLY_TTL,
    Delivery,
    Output,
    Tracer,
    build_commit,
    server_now,
)
from agent_runtime.worker.fate import HANDLE, Rules, before_handling, epoch_seconds  # noqa: E402
from benchmarks.agents import Answered, Hop, Hop2, Hop3, Hop4, Hop5  # noqa: E402

STAGES = 6
#: What each stage's handler sends (benchmarks/agents.py Stage1..Stage6): a hop payload, the
#: last one a terminal reply.
OUTPUTS: dict[int, type[Hop] | type[Answered]] = {
    1: Hop,
    2: Hop2,
    3: Hop3,
    4: Hop4,
    5: Hop5,
    6: Answered,
}


def config(prefix: str, batch: int, trace: bool = True) -> dict[str, Any]:
    """The pipeline of benchmarks/pipeline.py (Stage1..Stage6 plug-ins, default settings;
    ``trace``: off only when asked, ``--traces off``)."""
    worker: dict[str, Any] = {"batch_size": batch} if batch != 128 else {}
    if not trace:
        worker["trace"] = False
    return {
        "key_prefix": prefix,
        "allowed_modules": ["benchmarks"],
        "worker": worker,
        "agents": {f"s{i}": {"class": f"benchmarks.agents:Stage{i}"} for i in range(1, STAGES + 1)},
    }


# -- one stage of the floor relay --------------------------------------------------------------


class _Outputs:
    """What ``build_commit`` reads of a delivery's context: its queued outputs (the floor
    builds no ``MessageContext``: handler plumbing, not the contract)."""

    __slots__ = ("outputs",)

    def __init__(self, outputs: list[Output]) -> None:
        self.outputs = outputs


def stage(
    config_path: str,
    agent: str,
    url: str,
    consumer: str = "floor-0",
    ready: Callable[[], None] | None = None,
) -> None:
    """The floor relay's stage ``agent`` (``s1``..``s6``): see the module docstring. Runs
    until killed; raises on anything a worker would dead-letter or retry. ``ready``: called
    once set up, before the first read (``--instructions`` counts from there)."""
    from agent_runtime.cli.worker import tune_gc

    raw = yaml.safe_load(Path(config_path).read_text())
    pipeline = Pipeline.build(PipelineConfig.model_validate(raw))
    keys, routing = pipeline.config.keys, pipeline.routing
    settings = pipeline.worker_settings(agent)
    codec = pipeline.codec(agent)  # signed, verifying: the pipeline's default
    decode = codec.decode
    rules = Rules.of(agent, settings, ())
    tracer = Tracer(agent, consumer) if settings.trace else None
    group = keys.group(agent)
    streams = routing.inboxes(agent)
    number = int(agent[1:])
    make = OUTPUTS[number]
    terminal = number == STAGES
    target = "client" if terminal else routing.agent_for(make.message_type)
    kind, version = make.message_type, make.schema_version
    extra = {"hop": number} if number < STAGES else {}
    done_ttl, count = settings.done_ttl, settings.batch_size
    done_expire = 2 * done_ttl + 60
    r = redis.Redis.from_url(url)
    commit_script = r.register_script(COMMIT_SCRIPT)  # EVALSHA, loaded on NOSCRIPT
    head: list[Any] = [b"XREADGROUP", b"GROUP", group, consumer, b"COUNT", count]
    tail = [b"STREAMS", *streams, *([">"] * len(streams))]
    blocking, nonblocking = [*head, b"BLOCK", 1000, *tail], [*head, *tail]

    def intake(entries: list[Entry]) -> list[tuple[Entry, Any, Any]]:
        out = []
        for entry in entries:
            message, payload = decode(entry.fields, entry.stream)  # raises: a floor
            out.append((entry, message, payload))
        return out

    def handle_and_commit(batch: list[tuple[Entry, Any, Any]], done: list[Any]) -> None:
        now = time.time()  # the worker: its cached server clock, once per batch
        finished, seen = [], set()
        for (entry, message, payload), is_done in zip(batch, done, strict=True):
            id_text = message.id_text
            if is_done or id_text in seen:  # a duplicate: acked, not handled
                finished.append(Delivery(entry, message, payload, outcome="duplicate"))
                continue
            seen.add(id_text)
            deadline = message.deadline
            fate = before_handling(
                entry.delivery_count,
                rules,
                None if deadline is None else epoch_seconds(deadline) - now,
                message.hops,
                message.to_agent,
                now - epoch_seconds(message.timestamp),
            )
            if fate is not HANDLE:
                raise RuntimeError(f"the floor dead-letters nothing: {fate}")
            started = time.time()
            # the handler (benchmarks/agents.py StageN) and MessageContext.send/reply
            out = make(text=payload.text, **extra)
            derived = message.derive(
                index=0,
                from_agent=agent,
                to_agent=target,
                message_type=kind,
                schema_version=version,
                payload=out.model_dump(mode="json"),
                now=server_now(0.0),
                traceparent=message.hop_traceparent(),
            )
            if terminal:
                output = Output(message.reply_to, derived, REPLY_TTL, None, True)
            else:
                output = Output(routing.stream_for(target, message.correlation_id), derived)
            ctx: Any = _Outputs([output])
            finished.append(Delivery(entry, message, payload, True, ctx, started, "handled"))
        commit = build_commit(
            finished, codec=codec, keys=keys, tracer=tracer, trace_ttl=settings.trace_ttl
        )
        bucket = int(time.time() // done_ttl)
        args = script_args(
            commit,
            mark=keys.commit_mark(consumer, commit.token),
            group=group,
            done=(keys.done(agent, bucket - 1), keys.done(agent, bucket)),
            done_expire=done_expire,
            consumer=consumer,
            dlq_maxlen=settings.dlq_maxlen,
        )
        refused = refused_items(commit, commit_script(keys=[], args=args))
        if refused:
            raise RuntimeError(f"the floor dead-letters nothing: {refused}")

    def check(batch: list[tuple[Entry, Any, Any]]) -> list[bool]:
        ids = [message.id_text for _, message, _ in batch]
        bucket = int(time.time() // done_ttl)
        with r.pipeline(transaction=False) as pipe:
            pipe.smismember(keys.done(agent, bucket - 1), ids)
            pipe.smismember(keys.done(agent, bucket), ids)
            previous, current = pipe.execute()
        return [bool(a or b) for a, b in zip(previous, current, strict=True)]

    tune_gc()
    if ready is not None:
        ready()
    unchecked: list[tuple[Entry, Any, Any]] = []  # a full batch: its check rides on the next read
    while True:
        if unchecked:  # the worker's read_checked: check + non-blocking read, one round trip
            ids = [message.id_text for _, message, _ in unchecked]
            bucket = int(time.time() // done_ttl)
            with r.pipeline(transaction=False) as pipe:
                pipe.smismember(keys.done(agent, bucket - 1), ids)
                pipe.smismember(keys.done(agent, bucket), ids)
                pipe.execute_command(*nonblocking)
                previous, current, reply = pipe.execute()
            flags = [bool(a or b) for a, b in zip(previous, current, strict=True)]
            handle_and_commit(unchecked, flags)
        else:
            reply = r.execute_command(*blocking)  # bytes name: no reply callback, as the worker
        batch = intake(_entries(reply))
        if len(batch) >= count:
            unchecked = batch
            continue
        unchecked = []
        if batch:  # a partial batch: its check is a round trip of its own
            handle_and_commit(batch, check(batch))


# -- the driver ----------------------------------------------------------------------------


def requests(url: str, pipeline: Pipeline, n: int) -> list[dict[bytes, bytes]]:
    """``n`` signed requests to stage 1, as benchmarks/pipeline.py's throughput phase builds
    them (``Client.new_message`` + ``Codec.encode``)."""
    import anyio
    from pipeline import TEXT

    from agent_runtime.client import Client, user_request
    from protocols.envelope import utcnow

    stream = pipeline.config.keys.inbox("s1")

    async def build() -> list[dict[bytes, bytes]]:
        async with Client.connect(url, pipeline) as client:
            return [
                client.codec.encode(client.new_message(user_request(TEXT), now=utcnow()), stream)
                for _ in range(n)
            ]

    return anyio.run(build)


def drain(
    r: redis.Redis,
    stages: Any,
    first: str,
    last: str,
    group: str,
    items: list[dict[bytes, bytes]],
) -> dict[str, Any]:
    """Queue ``items`` in ``first`` at once; req/s until ``last``'s ``group`` acked them all,
    and CPU µs per request of each stage process over that drain."""
    from pipeline import consumed, wait_until

    n = len(items)
    server0 = server_cpu(r)
    cpu0 = stages.cpu()
    started = time.perf_counter()
    for start in range(0, n, 500):
        with r.pipeline(transaction=False) as pipe:
            for fields in items[start : start + 500]:
                pipe.xadd(first, fields)  # type: ignore[arg-type]
            pipe.execute()
    wait_until(lambda: consumed(r, last, group) >= n, 600, f"drain of {first}")
    elapsed = time.perf_counter() - started
    cpu = [(b - a) / n * 1e6 for a, b in zip(cpu0, stages.cpu(), strict=True)]
    server = (server_cpu(r) - server0) / n * 1e6
    stages.alive()
    return {"req/s": n / elapsed, "cpu": cpu, "server": server}


def delivered(r: redis.Redis, pipeline: Pipeline, items: list[dict[bytes, bytes]]) -> None:
    """After a drain (not timed): every request got its one terminal reply, its outcome
    guard, its done mark at stage 1 and one trace record per stage (the requests were
    XADDed, not published: no ``published`` record), and nothing was dead-lettered."""
    import json

    keys = pipeline.config.keys
    bucket = int(time.time() // pipeline.worker_settings("s1").done_ttl)
    with r.pipeline(transaction=False) as pipe:
        for fields in items:
            envelope = json.loads(fields[b"m"])
            cid, mid = envelope["correlation_id"], envelope["message_id"]
            pipe.xlen(keys.reply(cid))
            pipe.exists(keys.outcome(cid))
            pipe.llen(keys.trace(cid))
            pipe.sismember(keys.done("s1", bucket), mid)
        replies = pipe.execute()
    counts = [tuple(replies[i : i + 4]) for i in range(0, len(replies), 4)]
    traced = STAGES if pipeline.worker_settings("s1").trace else 0
    wrong = [c for c in counts if c != (1, 1, traced, 1)]
    dead = sum(r.xlen(keys.dlq(f"s{i}")) for i in range(1, STAGES + 1))
    if wrong or dead:
        raise RuntimeError(
            f"{len(wrong)} requests not as the contract says {wrong[:3]}, {dead} dead"
        )


def server_cpu(r: redis.Redis) -> float:
    """The Redis server's CPU seconds so far (user + system, its own INFO)."""
    info = r.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def raw_variant(r: redis.Redis, url: str, args: argparse.Namespace) -> dict[str, Any]:
    from pipeline import start_relays

    streams, stages = start_relays(r, url, args.batch)
    try:
        # signed requests as the other two get (the relay copies them as they are)
        prefix = streams[0].rsplit(":", 1)[0]
        base = Pipeline.build(PipelineConfig.model_validate(config(prefix, args.batch)))
        items = requests(url, base, args.messages)
        return drain(r, stages, streams[0], streams[-2], "g", items)
    finally:
        stages.stop()
        r.flushall()


def floor_variant(r: redis.Redis, url: str, args: argparse.Namespace) -> dict[str, Any]:
    from pipeline import Stages, wait_until

    prefix = f"f{uuid.uuid4().hex[:6]}"
    raw_config = config(prefix, args.batch, args.traces == "on")
    path = Path(args.tmp) / f"{prefix}.yaml"
    path.write_text(yaml.safe_dump(raw_config))
    pipeline = Pipeline.build(PipelineConfig.model_validate(raw_config))
    keys = pipeline.config.keys
    inboxes = [keys.inbox(f"s{i}") for i in range(1, STAGES + 1)]
    for i, inbox in enumerate(inboxes, 1):
        r.xgroup_create(inbox, keys.group(f"s{i}"), id="0", mkstream=True)
    argvs = [
        [sys.executable, __file__, "--stage", f"s{i}", "--config", str(path), "--url", url]
        for i in range(1, STAGES + 1)
    ]
    stages = Stages(argvs)
    try:

        def ready() -> bool:
            stages.alive()
            return all(r.xinfo_groups(s)[0]["consumers"] for s in inboxes)

        wait_until(ready, 60, "floor start")
        items = requests(url, pipeline, args.messages)
        result = drain(r, stages, inboxes[0], inboxes[-1], keys.group(f"s{STAGES}"), items)
        delivered(r, pipeline, items)
        return result
    finally:
        stages.stop()
        r.flushall()


def runtime_variant(r: redis.Redis, url: str, args: argparse.Namespace) -> dict[str, Any]:
    from pipeline import start_stages, wait_until

    prefix = f"b{uuid.uuid4().hex[:6]}"
    raw_config = config(prefix, args.batch, args.traces == "on")
    pipeline, stages = start_stages(raw_config, Path(args.tmp), url)
    keys = pipeline.config.keys
    try:

        def ready() -> bool:
            stages.alive()
            return len(r.keys(keys.heartbeat_pattern())) >= STAGES

        wait_until(ready, 60, "workers")
        items = requests(url, pipeline, args.messages)
        last = keys.inbox(f"s{STAGES}")
        result = drain(r, stages, keys.inbox("s1"), last, keys.group(f"s{STAGES}"), items)
        delivered(r, pipeline, items)
        return result
    finally:
        stages.stop()
        r.flushall()


def load() -> str:
    return "load {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


VARIANTS = {"raw relay": raw_variant, "floor relay": floor_variant, "runtime": runtime_variant}


def run(args: argparse.Namespace) -> None:
    from agent_runtime.signing import ensure_keyring
    from agent_runtime.transport.embedded import EmbeddedServer

    print(
        f"machine: {platform.machine()} {os.cpu_count()} cores, Python "
        f"{platform.python_version()}, {platform.platform()}; {load()}"
    )
    ensure_keyring()
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in VARIANTS}
    names = list(VARIANTS)
    with (
        tempfile.TemporaryDirectory() as tmp,
        EmbeddedServer(Path(tmp) / "redis", persistent=False) as server,
    ):
        args.tmp = tmp
        r = redis.Redis.from_url(server.url)
        for round_ in range(args.rounds):
            order = names[round_ % 3 :] + names[: round_ % 3]
            print(f"round {round_ + 1}:", flush=True)
            for name in order:
                result = VARIANTS[name](r, server.url, args)
                result["load"] = load()
                results[name].append(result)
                print(f"  {_line(name, [result])}  ({result['load']})", flush=True)
            raw, floor, rt = (results[n][-1]["req/s"] for n in names)
            cpu = [total(results[n][-1]) for n in names]
            print(
                f"  floor/raw {floor / raw:.2f}x, runtime/raw {rt / raw:.2f}x, "
                f"runtime/floor {rt / floor:.2f}x; CPU-bound (µs/req of stages + server: "
                f"{' / '.join(f'{c:.0f}' for c in cpu)}) floor/raw {cpu[0] / cpu[1]:.2f}x, "
                f"runtime/raw {cpu[0] / cpu[2]:.2f}x, runtime/floor {cpu[1] / cpu[2]:.2f}x",
                flush=True,
            )
    med = statistics.median
    print(
        f"\nmedians of {args.rounds} rounds ({args.messages} requests drained, batch "
        f"{args.batch}, traces {args.traces}):"
    )
    for name in names:
        print(f"  {_line(name, results[name])}")
    for label, top, bottom in (
        ("floor/raw", "floor relay", "raw relay"),
        ("runtime/raw", "runtime", "raw relay"),
        ("runtime/floor", "runtime", "floor relay"),
    ):
        pairs = list(zip(results[top], results[bottom], strict=True))
        ratios = [a["req/s"] / b["req/s"] for a, b in pairs]
        bound = [total(b) / total(a) for a, b in pairs]
        print(
            f"  {label}: {med(ratios):.2f}x (rounds: {' '.join(f'{x:.2f}' for x in ratios)}); "
            f"CPU-bound {med(bound):.2f}x (rounds: {' '.join(f'{x:.2f}' for x in bound)})"
        )


def total(run: dict[str, Any]) -> float:
    """CPU µs per request of the whole pipeline: the six stages and the Redis server. On a
    machine where they share the cores, throughput goes as its inverse: the "CPU-bound"
    ratios above are the ratios of these totals (what the req/s ratio would be with no
    waiting and no other load)."""
    return float(sum(run["cpu"]) + run["server"])


def _line(name: str, runs: list[dict[str, Any]]) -> str:
    med = statistics.median
    rate = med(run["req/s"] for run in runs)
    cpu = [med(run["cpu"][k] for run in runs) for k in range(STAGES)]
    per_stage = " ".join(f"{c:.0f}" for c in cpu)
    server = med(run["server"] for run in runs)
    return (
        f"{name:11s} {rate:7,.0f} req/s; CPU µs/req per stage {per_stage} (sum {sum(cpu):.0f})"
        f"; Redis server {server:.0f}; total {med(total(run) for run in runs):.0f}"
    )


# -- instructions per message of one stage (callgrind) -----------------------------------------


def one_stage(what: str, url: str, n: int, tmp: str, batch: int, trace: bool) -> None:
    """Under valgrind: ``n`` requests in stage 1's inbox, drained by one stage (the raw
    relay's, or the floor's stage 1) in a thread of this process; instructions counted only
    while it drains (and this thread's few polls), as benchmarks/instructions.py counts the
    runtime's worker: started and set up before, its connection made on the first read."""
    from instructions import consumed, instrument

    r = redis.Redis.from_url(url)
    raw_config = config("fl", batch, trace)
    path = Path(tmp) / "fl.yaml"
    path.write_text(yaml.safe_dump(raw_config))
    pipeline = Pipeline.build(PipelineConfig.model_validate(raw_config))
    keys = pipeline.config.keys
    stream, group = keys.inbox("s1"), keys.group("s1")
    r.xgroup_create(stream, group, id="0", mkstream=True)
    items = requests(url, pipeline, n)
    with r.pipeline(transaction=True) as pipe:
        for fields in items:
            pipe.xadd(stream, fields)  # type: ignore[arg-type]
        pipe.execute()
    if what == "raw":
        import raw_relay

        target: Any = raw_relay.main
        argv: tuple[Any, ...] = (url, stream, group, keys.inbox("s2"), batch)
        instrument(True)  # its set-up is a client object: counted, negligible
        threading.Thread(target=target, args=argv, daemon=True).start()
    else:  # counted from the end of its set-up (config, codec, GC freeze) on
        set_up, go = threading.Event(), threading.Event()

        def ready() -> None:
            set_up.set()
            go.wait()

        argv = (str(path), "s1", url, "floor-0", ready)
        threading.Thread(target=stage, args=argv, daemon=True).start()
        set_up.wait()
        instrument(True)
        go.set()
    while not consumed(r, stream, group, n):
        time.sleep(0.2)  # few polls: their cost is counted too
    instrument(False)


def count_instructions(what: str, n: int, batch: int, trace: bool = True) -> float:
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        raise SystemExit("--instructions needs valgrind (e.g. apt install valgrind)")
    with tempfile.TemporaryDirectory() as tmp:
        argv = ["valgrind", "--tool=callgrind", "--instr-atstart=no"]
        argv += [f"--callgrind-out-file={tmp}/callgrind.out", sys.executable, __file__]
        argv += ["--one-stage", what, "--instructions", str(n), "--batch", str(batch)]
        argv += ["--traces", "on" if trace else "off"]
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
    for line in done.stderr.splitlines():
        if "Collected :" in line:
            return int(line.rsplit(":", 1)[1]) / n
    raise RuntimeError(f"no instruction count from valgrind:\n{done.stderr[-3000:]}")


def instructions(n: int, batch: int, trace: bool) -> None:
    from instructions import measure

    raw = count_instructions("raw", n, batch)
    print(f"raw relay stage              {raw:9,.0f} instructions/message", flush=True)
    floor = count_instructions("floor", n, batch, trace)
    print(
        f"floor stage 1 (forwarding)   {floor:9,.0f} instructions/message ({floor / raw:.1f}x raw)",
        flush=True,
    )
    runtime = measure("runtime", n, trace, "forward", batch)
    print(
        f"runtime forwarding stage     {runtime:9,.0f} instructions/message "
        f"({runtime / raw:.1f}x raw, {runtime / floor:.2f}x floor)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--messages", type=int, default=10_000, help="requests per drain")
    parser.add_argument("--batch", type=int, default=128, help="XREADGROUP COUNT of all three")
    parser.add_argument(
        "--instructions",
        type=int,
        metavar="N",
        help="count instructions per message of one stage draining N requests (callgrind)",
    )
    parser.add_argument(
        "--traces",
        choices=["on", "off"],
        default="on",
        help="trace records of the floor and the runtime (issue 17's acceptance: on)",
    )
    parser.add_argument("--stage", help=argparse.SUPPRESS)  # a floor stage process
    parser.add_argument("--config", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--one-stage", choices=["raw", "floor"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.stage:
        stage(args.config, args.stage, args.url)
    elif args.one_stage:
        from agent_runtime.signing import ensure_keyring
        from agent_runtime.transport.embedded import EmbeddedServer

        ensure_keyring()
        with (
            tempfile.TemporaryDirectory() as tmp,
            EmbeddedServer(Path(tmp) / "redis", persistent=False) as server,
        ):
            trace = args.traces == "on"
            one_stage(args.one_stage, server.url, args.instructions, tmp, args.batch, trace)
    elif args.instructions:
        instructions(args.instructions, args.batch, args.traces == "on")
    else:
        run(args)


if __name__ == "__main__":
    main()
