"""Every Redis key, stream and group name used by agent-runtime: the keyspace map.

All names start with a configurable prefix (default ``ar``). Per-request keys carry the
correlation id as a Redis Cluster hash tag (``{<cid>}``) so every key of one request lives in
one slot; agent inboxes are independent keys (each command touches one key, or one slot).

======================================  ==========  ==========================================
key                                     type        what
======================================  ==========  ==========================================
``P:inbox:AGENT``                       stream      inbox of an agent type (shard 0)
``P:inbox:AGENT:N``                     stream      inbox shard N (N >= 1) when sharded
``P:dlq:AGENT``                         stream      dead letters of an agent type
``P:done:AGENT:BUCKET``                  set         ids of messages done in that time bucket (TTL)
``P:hb:AGENT:CONSUMER``                 string      worker heartbeat (TTL), JSON
``P:reply:{CID}``                       stream      replies for one request (TTL)
``P:tracelog:{CID}``                    list        per-request trace: JSON records (TTL)
``P:req:{CID}:*``                       various     per-request state (plans, approvals, cost)
``P:req:{CID}:outcome``                 string      the request's terminal outcome guard (TTL):
                                                    set NX by whoever writes its terminal reply
``P:deadlines``                         zset        open requests by deadline (ms), member
                                                    ``CID REPLY_STREAM``; swept by the fleet
``P:sweep:lock``                        string      lock of the deadline sweep (TTL)
``P:schedule:AGENT``                    zset        messages an agent type scheduled for itself
                                                    (score: due time in server ms; member: the
                                                    message, JSON); swept by its own workers
``P:req:{CID}:cancel``                  string      ``open`` once a tool of the request started,
                                                    the cancellation record (JSON) once it was
                                                    cancelled (TTL)
``P:commit:CONSUMER:TOKEN``             string      a commit's applied mark (TTL): a replayed
                                                    commit is refused
``P:reports``                           stream      every final report (capped)
``P:breaker:NAME``                      hash        shared circuit-breaker state
``P:llmcache:HASH``                     string      LLM response cache (TTL)
``P:gw:idem:HASH``                      string      gateway: correlation id an Idempotency-Key
                                                    (hashed with the token name) maps to (TTL)
``P:gw:rate:TOKEN:WINDOW``              string      gateway: calls of a token in a window (TTL)
``P:ratelimit:{NAME}:METER``            zset        a fleet rate limit's entries by end time
                                                    (ms); ``...:METER:w`` hash: their weights
======================================  ==========  ==========================================

The consumer group of an agent type's inbox is named after the agent type.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Keys:
    """Builds key names under one prefix. Pass one instance around; never build names inline."""

    prefix: str = "ar"

    def inbox(self, agent: str, shard: int = 0) -> str:
        return (
            f"{self.prefix}:inbox:{agent}" if shard == 0 else f"{self.prefix}:inbox:{agent}:{shard}"
        )

    def inboxes(self, agent: str, shards: int) -> list[str]:
        return [self.inbox(agent, n) for n in range(shards)]

    def group(self, agent: str) -> str:
        return agent

    def dlq(self, agent: str) -> str:
        return f"{self.prefix}:dlq:{agent}"

    def done(self, agent: str, bucket: int) -> str:
        """De-duplication set: ids of messages ``agent`` finished in time bucket ``bucket``
        (epoch seconds // done_ttl). Two SMISMEMBER per batch, one SADD per commit."""
        return f"{self.prefix}:done:{agent}:{bucket}"

    def heartbeat(self, agent: str, consumer: str) -> str:
        return f"{self.prefix}:hb:{agent}:{consumer}"

    def heartbeat_pattern(self) -> str:
        return f"{self.prefix}:hb:*"

    def reply(self, correlation_id: str) -> str:
        return f"{self.prefix}:reply:{{{correlation_id}}}"

    def trace(self, correlation_id: str) -> str:
        """The request's trace: a list of JSON records, one per published/handled/dead-lettered
        message (a list, not a stream: a new stream preallocates ~4 KB per request). Named
        ``tracelog`` so it never meets a stream-typed ``P:trace:{CID}`` left by an older
        version (those expire within their TTL, 24 h by default; nothing reads them)."""
        return f"{self.prefix}:tracelog:{{{correlation_id}}}"

    def request_state(self, correlation_id: str, name: str) -> str:
        return f"{self.prefix}:req:{{{correlation_id}}}:{name}"

    def outcome(self, correlation_id: str) -> str:
        """The terminal-outcome guard of a request: ``SET NX`` by the one writer of its
        terminal reply (success or ``request.failed``); a second writer finds it set and writes
        nothing, so a request gets exactly one terminal reply."""
        return self.request_state(correlation_id, "outcome")

    def deadlines(self) -> str:
        """Open requests by deadline (sorted set, score = deadline in epoch ms, member
        ``"CID REPLY_STREAM"``): the fleet's deadline sweep answers the ones nobody did."""
        return f"{self.prefix}:deadlines"

    def sweep_lock(self) -> str:
        return f"{self.prefix}:sweep:lock"

    def schedule(self, agent: str) -> str:
        """Messages ``agent`` scheduled for itself (sorted set, score = due time in server
        epoch ms): its workers' schedule sweep publishes each to its inbox when due."""
        return f"{self.prefix}:schedule:{agent}"

    def cancel(self, correlation_id: str) -> str:
        """The request's cancellation guard: ``open`` once a tool of it started, the
        cancellation record once ``agent-runtime cancel`` recorded it."""
        return self.request_state(correlation_id, "cancel")

    def commit_mark(self, consumer: str, token: str) -> str:
        """Set by a commit script when it applied commit ``token``: a replay is refused."""
        return f"{self.prefix}:commit:{consumer}:{token}"

    def reports(self) -> str:
        return f"{self.prefix}:reports"

    def breaker(self, name: str) -> str:
        return f"{self.prefix}:breaker:{name}"

    def rate_limit(self, name: str, meter: str) -> str:
        """A rate limit's entry log; every meter of one limit shares a Cluster slot."""
        return f"{self.prefix}:ratelimit:{{{name}}}:{meter}"

    def llm_cache(self, digest: str) -> str:
        return f"{self.prefix}:llmcache:{digest}"

    def inbox_pattern(self) -> str:
        return f"{self.prefix}:inbox:*"

    def dlq_pattern(self) -> str:
        return f"{self.prefix}:dlq:*"

    def gateway_idempotency(self, digest: str) -> str:
        """The correlation id an HTTP ``Idempotency-Key`` maps to (``digest``: SHA-256 hex of
        the token name and the key, so a client's key text never becomes a key name)."""
        return f"{self.prefix}:gw:idem:{digest}"

    def gateway_rate(self, token: str, window: int) -> str:
        """Calls a gateway token made in fixed window ``window`` (epoch seconds // length)."""
        return f"{self.prefix}:gw:rate:{token}:{window}"
