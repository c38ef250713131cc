"""hiredis packing produces the same bytes on the wire as redis-py's Python packer."""

from __future__ import annotations

import pytest
from redis.asyncio.connection import Connection
from redis.exceptions import DataError

from agent_runtime.transport.fastpack import _fast_class


@pytest.mark.parametrize(
    "args",
    [
        ("XADD", "s", "*", b"m", b"\x00\xffbytes"),
        ("XINFO GROUPS", "stream"),
        (b"CONFIG GET", b"maxmemory"),
        ("SET", "k", 12, "EX", 3.5),
        ("SADD", "k", "ünïcode", memoryview(b"mv"), bytearray(b"ba")),
    ],
)
def test_same_bytes_as_redis_py(args: tuple[object, ...]) -> None:
    plain = Connection()
    fast = _fast_class(Connection)()
    assert b"".join(fast.pack_command(*args)) == b"".join(plain.pack_command(*args))


def test_bool_is_refused_like_redis_py() -> None:
    with pytest.raises(DataError):
        _fast_class(Connection)().pack_command("SET", "k", True)
