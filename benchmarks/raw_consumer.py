"""The baseline: a raw redis-py XREADGROUP/XACK loop (hiredis parser), no decoding."""

from __future__ import annotations

import sys

import redis


def main(url: str, stream: str, group: str, count: int) -> None:
    r = redis.Redis.from_url(url)
    while True:
        reply = r.xreadgroup(group, "raw-0", {stream: ">"}, count=count, block=1000)
        for _name, items in reply or []:
            r.xack(stream, group, *[entry_id for entry_id, _fields in items])


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]))
