"""One stage of the raw redis-py six-stage relay (benchmarks/pipeline.py): XREADGROUP from
its stream, XADD each entry's fields to the next stream and XACK, pipelined, no decoding."""

from __future__ import annotations

import sys

import redis


def main(url: str, stream: str, group: str, out: str, count: int) -> None:
    r = redis.Redis.from_url(url)
    while True:
        reply = r.xreadgroup(group, "raw-0", {stream: ">"}, count=count, block=1000)
        for _name, items in reply or []:
            with r.pipeline(transaction=False) as pipe:
                for _entry_id, fields in items:
                    pipe.xadd(out, fields)
                pipe.xack(stream, group, *[entry_id for entry_id, _fields in items])
                pipe.execute()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]))
