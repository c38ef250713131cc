"""Redis ACL users, one per agent type: least privilege for every worker process.

Each agent type gets a user ``PREFIX-AGENT`` that may

* read, ack, claim and inspect only its own inbox (all its shards) and create its group there;
* XADD (and nothing else) to the inboxes of the agent types it publishes to;
* XADD to its own dead-letter stream;
* write replies, trace records and per-request state (``P:reply:*``, ``P:tracelog:*``,
  ``P:req:*``: any request, since any request may reach it), the shared deadline index, the
  sweep lock, circuit breakers, the fleet rate limits and the LLM response cache;
* keep its own de-duplication sets, commit marks and heartbeats; read every heartbeat (the
  deadline sweep asks whether an agent type has live workers);
* run scripts (``EVAL``/``EVALSHA``): every ``redis.call`` inside a script is checked against
  the same rules, so a script can do nothing its caller could not.

No user gets ``@admin`` or ``@dangerous`` commands (``KEYS``, ``FLUSH*``, ``CONFIG``, ``DEBUG``,
``INFO``, ``CLIENT KILL``, ...); no pub/sub channels. The rules use ACL selectors (Redis 7.0+,
Valkey): a command is allowed when one selector allows both it and every key it names.

The keyspace map is :mod:`agent_runtime.transport.keys`; the commands are those the worker's
transport sends (see docs/security.md, "Redis users (ACL)")."""

from __future__ import annotations

import hashlib
import os
import re
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from agent_runtime.transport.connect import connect
from agent_runtime.transport.keys import Keys

#: Admin user of the embedded server ``up`` starts (the CLI's connection).
ADMIN_USER = "agent-runtime-admin"

# Keyless commands every connection needs: redis-py's handshake (HELLO, AUTH, CLIENT SETINFO
# -- Redis >= 7.2 only, hence the category, not the name -- SETNAME, ID), PING, transactions,
# the server clock. What @connection holds that is @admin/@dangerous (CLIENT KILL, LIST,
# PAUSE, NO-EVICT, ...) the trailing -@admin -@dangerous takes away again.
_CONNECTION = ("@connection", "time", "multi", "exec", "discard", "unwatch")
_OWN_INBOX = (
    "xreadgroup",
    "xack",
    "xautoclaim",
    "xclaim",
    "xpending",
    "xinfo|groups",
    "xinfo|consumers",
    "xinfo|stream",
    "xgroup|create",
    "xgroup|createconsumer",
    "xgroup|delconsumer",  # consumer hygiene (transport/consumers.py): idle, nothing pending
    "xlen",
    "xrange",
    "xtrim",
    "type",
)
_APPEND = ("xadd", "type")
_REQUEST = (
    "xadd",
    "rpush",
    "lrange",
    "ltrim",
    "llen",
    "expire",
    "pexpire",
    "set",
    "get",
    "del",
    "unlink",
    "exists",
    "type",
    "ttl",
    "pttl",
    "watch",
    "hset",
    "hget",
    "hgetall",
    "hmget",
    "hdel",
    "hincrby",
    "hincrbyfloat",
    "hsetnx",
)
_FLEET = ("zadd", "zrem", "zrangebyscore", "zrange", "set", "get", "del", "pexpire", "expire")
#: Its own schedule (agent_runtime/transport/schedule.py: add, remove, claim, settle, list).
_OWN_SCHEDULE = ("zadd", "zrem", "zrangebyscore", "zscore")
_OWN_MARKS = ("sadd", "smismember", "sismember", "expire", "set", "get", "del", "exists")
_READ = ("get", "mget", "exists")
_BREAKERS = (
    "hgetall",
    "hget",
    "hmget",
    "hset",
    "hincrby",
    "hincrbyfloat",
    "hdel",
    "expire",
    "exists",
)
_CACHE = ("get", "set")
_RATE_LIMITS = (  # transport/ratelimit.py's scripts
    "zadd",
    "zrange",
    "zrangebyscore",
    "zremrangebyscore",
    "zscore",
    "hget",
    "hmget",
    "hset",
    "hdel",
    "hincrby",
    "hgetall",
    "pexpire",
    "expire",
)
_SCRIPTS = ("eval", "evalsha", "script|load", "script|exists")
_NEVER = ("-@admin", "-@dangerous")


@dataclass(frozen=True)
class AclUser:
    """One Redis user: name, password and rules (``ACL SETUSER`` arguments after the name)."""

    name: str
    password: str
    rules: tuple[str, ...]

    def file_line(self) -> str:
        """This user as a line of an ACL file (the password only as its SHA-256)."""
        digest = hashlib.sha256(self.password.encode()).hexdigest()
        return " ".join(("user", self.name, "on", f"#{digest}", *self.rules))

    def setuser_args(self) -> list[str]:
        return [self.name, "reset", "on", f">{self.password}", *self.rules]


def user_name(keys: Keys, agent: str) -> str:
    return f"{keys.prefix}-{agent}"


def _selector(commands: Iterable[str], patterns: Iterable[str]) -> str:
    keys = " ".join(patterns)
    allowed = " ".join(f"+{c}" for c in dict.fromkeys(commands))
    return f"({keys} {allowed} {' '.join(_NEVER)})"


def _inbox_patterns(keys: Keys, agent: str) -> list[str]:
    return [f"~{keys.inbox(agent)}", f"~{keys.inbox(agent)}:*"]


def agent_rules(
    keys: Keys, agent: str, targets: Iterable[str], reply_streams: Iterable[str] = ()
) -> tuple[str, ...]:
    """The ACL rules of ``agent``'s user: ``targets`` are the agent types it publishes to;
    ``reply_streams`` the pipeline's allow-listed reply streams outside the prefix."""
    p = keys.prefix
    consumers = f"{agent}-"  # worker.loop.default_consumer_name
    outputs = [
        pattern for target in sorted(set(targets)) for pattern in _inbox_patterns(keys, target)
    ]
    request = [f"~{p}:reply:*", f"~{p}:tracelog:*", f"~{p}:req:*", f"~{keys.reports()}"]
    request += [f"~{_glob_escape(stream)}" for stream in reply_streams]
    fleet = [f"~{keys.deadlines()}", f"~{keys.sweep_lock()}"]
    marks = [f"~{p}:done:{agent}:*", f"~{p}:commit:{consumers}*", f"~{p}:hb:{agent}:*"]
    breakers, cache = [f"~{keys.breaker('*')}"], [f"~{keys.llm_cache('*')}"]
    limits = [f"~{p}:ratelimit:*"]
    own_inbox, dlq = _inbox_patterns(keys, agent), [f"~{keys.dlq(agent)}"]
    schedule = [f"~{keys.schedule(agent)}"]
    everything = [
        *own_inbox,
        *outputs,
        *dlq,
        *request,
        *fleet,
        *schedule,
        *marks,
        *breakers,
        *cache,
    ]
    everything += limits
    selectors = [
        _selector(_OWN_INBOX, own_inbox),
        _selector(("xadd", "xlen", "type"), dlq),
        _selector(_REQUEST, request),
        _selector(_FLEET, fleet),
        _selector(_OWN_SCHEDULE, schedule),
        _selector(_OWN_MARKS, marks),
        _selector(_READ, [f"%R~{keys.heartbeat_pattern()}"]),
        _selector(_BREAKERS, breakers),
        _selector(_CACHE, cache),
        _selector(_RATE_LIMITS, limits),
        _selector(_SCRIPTS, dict.fromkeys(everything)),
    ]
    if outputs:
        selectors.insert(1, _selector(_APPEND, outputs))
    root = ["resetkeys", "resetchannels", "-@all", *(f"+{c}" for c in _CONNECTION), *_NEVER]
    return (*root, *selectors)


def admin_rules() -> tuple[str, ...]:
    return ("~*", "&*", "+@all")


def agent_users(
    keys: Keys,
    targets: Mapping[str, Iterable[str]],
    passwords: PasswordStore,
    reply_streams: Iterable[str] = (),
) -> list[AclUser]:
    """One user per agent type; ``targets`` maps each agent type to those it publishes to."""
    streams = tuple(reply_streams)
    return [
        AclUser(
            user_name(keys, agent),
            passwords.get(user_name(keys, agent)),
            agent_rules(keys, agent, to, streams),
        )
        for agent, to in targets.items()
    ]


def _glob_escape(text: str) -> str:
    """``text`` as a literal ACL key pattern (glob characters escaped). A name with
    whitespace cannot be written in an ACL rule: refused."""
    if any(ch.isspace() for ch in text):
        raise ValueError(f"{text[:80]!r}: a key name with whitespace cannot go in an ACL rule")
    return re.sub(r"([*?\\[\]])", r"\\\1", text)


def render_file(users: Iterable[AclUser], *, disable_default: bool = True) -> str:
    """An ACL file (``aclfile`` in redis.conf, then ``ACL LOAD``). It holds password hashes
    only; the default user is switched off unless ``disable_default`` is False."""
    lines = []  # an ACL file has no comments: every line is a user
    if disable_default:
        lines.append("user default off resetkeys resetchannels -@all")
    lines += [user.file_line() for user in users]
    return "\n".join(lines) + "\n"


class PasswordStore:
    """Random passwords kept one file per user (mode 0600) in a private directory; a user's
    password is made on first use and read back afterwards."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def get(self, user: str) -> str:
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        path = self.directory / user
        try:
            return path.read_text().strip()
        except FileNotFoundError:
            pass
        password = secrets.token_urlsafe(32)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(password + "\n")
        return password


def with_credentials(url: str, user: str, password: str) -> str:
    """``url`` with ``user``/``password`` in its authority (any earlier ones replaced)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ValueError("not a URL")
    authority, slash, path = rest.partition("/")
    host = authority.rpartition("@")[2]
    creds = f"{quote(user, safe='')}:{quote(password, safe='')}@"
    return f"{scheme}://{creds}{host}{slash}{path}"


async def install_users(url: str, users: Iterable[AclUser], admin: AclUser) -> None:
    """Create (or reset) the ``admin`` user and ``users`` on the server at ``url`` (whose user
    may run ``ACL SETUSER``), then switch the default user off: from then on only the users
    made here can connect (``admin`` for the operator's commands). Two round trips: every
    ``ACL SETUSER`` in one pipeline, then, only once all of them succeeded, the default user
    switched off (a refused rule leaves the server as it was reachable, not locked)."""
    connection = connect(url)
    try:
        redis = connection.redis
        batch = redis.pipeline(transaction=False)
        for user in (admin, *users):
            batch.execute_command("ACL", "SETUSER", *user.setuser_args())
        await batch.execute()  # raises the first refusal
        await redis.execute_command("ACL", "SETUSER", "default", "resetpass", "off")
    finally:
        await connection.redis.aclose()
