"""Wall time of one codec call, signed and unsigned, on a 379-byte envelope (best of 7 x
20,000 calls): what envelope signing adds per entry written (encode) and read (decode).

    .venv/bin/python benchmarks/codec_signing.py
"""

from __future__ import annotations

import sys
import timeit
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agent_runtime.codec import Codec
from agent_runtime.signing import Keyring
from protocols.base import SchemaRegistry
from protocols.core import UserRequest
from protocols.envelope import AgentMessage, utcnow

STREAM = "ar:inbox:noop"


def main() -> None:
    registry = SchemaRegistry([UserRequest])
    message = AgentMessage(
        message_id=uuid.uuid4(),
        correlation_id=uuid.uuid4(),
        from_agent="client",
        to_agent="noop",
        message_type="user.request",
        schema_version=1,
        payload={"text": "benchmark request 1"},
        timestamp=utcnow(),
    )
    plain, signed = Codec(registry), Codec(registry, keyring=Keyring.of(b"k" * 32))
    unsigned_fields, signed_fields = plain.encode(message, STREAM), signed.encode(message, STREAM)
    print("envelope bytes", len(unsigned_fields[b"m"]))
    calls = [
        ("encode unsigned", lambda: plain.encode(message, STREAM)),
        ("encode signed", lambda: signed.encode(message, STREAM)),
        ("decode unsigned", lambda: plain.decode(unsigned_fields, STREAM)),
        ("decode signed", lambda: signed.decode(signed_fields, STREAM)),
    ]
    for name, call in calls:
        best = min(timeit.repeat(call, number=20_000, repeat=7)) / 20_000
        print(f"{name:16s} {best * 1e6:6.2f} us")


if __name__ == "__main__":
    main()
