"""Command packing through hiredis for redis-py's asyncio connections.

redis-py's synchronous client packs commands with ``hiredis.pack_command`` when hiredis is
installed; its asyncio connections still pack in Python (one ``encode`` + ``join`` per
argument), which dominates a pipelined commit of a few hundred arguments. This swaps in the
same hiredis packing on a client's connection pool. Behaviour is identical (multi-word command
names are split; ``bytes``, ``str``, ``int`` and ``float`` arguments as redis-py encodes them).

Measured gain (docs/benchmarks.md, "Speed tricks, measured"): packing a 128-message commit
with traces costs 12,036 instructions per message here against 55,721 in Python, about 23 %
of the runtime's instructions per message.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from redis.exceptions import DataError

hiredis: Any
try:
    import hiredis
except ImportError:  # pragma: no cover - hiredis is a dependency; stay correct without it
    hiredis = None


def _pack_command(self: Any, *args: Any) -> list[bytes]:
    if isinstance(args[0], str):
        args = (*args[0].encode().split(), *args[1:])
    elif b" " in args[0]:
        args = (*args[0].split(), *args[1:])
    try:
        return [hiredis.pack_command(args)]
    except TypeError:  # rare types: checked only when hiredis refuses (off the hot path)
        return [hiredis.pack_command(_coerce(args))]


def _coerce(args: tuple[Any, ...]) -> tuple[Any, ...]:
    if any(isinstance(a, bool) for a in args):
        raise DataError(
            "Invalid input of type: 'bool'. Convert to a bytes, string, int or float first."
        )
    out = tuple(bytes(a) if isinstance(a, (bytearray, memoryview)) else a for a in args)
    try:
        hiredis.pack_command(out)
    except TypeError as exc:
        raise DataError(str(exc)) from exc
    return out


@cache
def _fast_class(base: type) -> type:
    return type(f"Hiredis{base.__name__}", (base,), {"pack_command": _pack_command})


def use_hiredis_packing(client: Any) -> None:
    """Make new connections of ``client``'s pool pack commands with hiredis (no-op without
    hiredis or for clients without a single pool, such as RedisCluster)."""
    pool = getattr(client, "connection_pool", None)
    if hiredis is None or pool is None or not hasattr(pool, "connection_class"):
        return
    pool.connection_class = _fast_class(pool.connection_class)
