"""Instructions per message of the worker's intake without I/O, counted by valgrind (callgrind):
``Codec.decode`` of a signed 424-byte envelope (HMAC verify, depth scan, envelope and payload
validation, id texts, reply_to rule) and the checks before handling as the worker runs them
(freshness and deadline on a float clock, delivery cap, hops, addressee). No event loop, no
server, no timers: the figure does not move with the machine's load, unlike
benchmarks/instructions.py, whose side loops and polls count by the second.

    .venv/bin/python benchmarks/intake_instructions.py [--root CHECKOUT] [--part decode|check|both]

``--root`` measures the code of another checkout (e.g. ``git worktree add /tmp/base HEAD~3``)
with this venv, for a before/after on the same machine.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from callgrind import collected, instrument

ROOT = Path(__file__).resolve().parent.parent
MESSAGES, WARMUP = 2000, 100
STREAM = "ar:inbox:noop"


def run(part: str) -> None:
    """In the measured process: the intake of MESSAGES envelopes, counted."""
    from agent_runtime.codec import Codec
    from agent_runtime.signing import Keyring
    from agent_runtime.worker import fate
    from protocols.base import SchemaRegistry
    from protocols.core import UserRequest
    from protocols.envelope import AgentMessage, utcnow

    codec = Codec(SchemaRegistry([UserRequest]), keyring=Keyring.of(b"k" * 32))
    entries = []
    for i in range(MESSAGES + WARMUP):
        cid = uuid.uuid4()
        message = AgentMessage(
            message_id=uuid.uuid4(),
            correlation_id=cid,
            from_agent="client",
            to_agent="noop",
            message_type="user.request",
            schema_version=1,
            payload={"text": f"benchmark request {i}"},
            timestamp=utcnow(),
            reply_to=f"ar:reply:{{{cid}}}",
        )
        entries.append(codec.encode(message, STREAM))
    rules = fate.Rules("noop", 5, max_age=3600.0, clock_skew=60.0)
    now = time.time()
    before = getattr(fate, "before_handling", None)  # None: code from before session 8

    def check(message: Any) -> fate.Fate:
        deadline = message.deadline
        if before is not None:
            seconds = fate.epoch_seconds
            left = None if deadline is None else seconds(deadline) - now
            age = now - seconds(message.timestamp)
            return before(1, rules, left, message.hops, message.to_agent, age)  # type: ignore[no-any-return]
        left = None if deadline is None else deadline.timestamp() - now
        age = now - message.timestamp.timestamp()
        return fate.fate_of(
            None, 1, rules, left=left, hops=message.hops, to_agent=message.to_agent, age=age
        )

    items: list[Any] = entries
    if part == "check":
        items = [codec.decode(fields, STREAM).message for fields in entries]

    def step(item: Any) -> object:
        if part == "decode":
            return codec.decode(item, STREAM)
        return check(item if part == "check" else codec.decode(item, STREAM).message)

    for item in items[:WARMUP]:
        step(item)
    instrument(True)
    for item in items[WARMUP:]:
        step(item)
    instrument(False)


def measure(root: Path, part: str) -> float:
    env = {**os.environ, "PYTHONHASHSEED": "0"}  # the same dict layouts every run
    return collected(__file__, ["--variant", part, "--root", str(root)], env) / MESSAGES


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--root", type=Path, default=ROOT, help="the checkout whose code runs")
    parser.add_argument("--part", choices=["decode", "check", "both"], action="append")
    parser.add_argument("--variant", choices=["decode", "check", "both"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant is not None:
        sys.path.insert(0, str(args.root.resolve()))
        run(args.variant)
        return
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        raise SystemExit("benchmarks/intake_instructions.py needs valgrind")
    for part in args.part or ["decode", "check", "both"]:
        print(f"{part:7s} {measure(args.root, part):9,.0f} instructions/message", flush=True)


if __name__ == "__main__":
    main()
