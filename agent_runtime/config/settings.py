"""Worker delivery settings (batching, concurrency, reclaim, delivery cap, retention) and
request settings (default deadline, deadline sweep)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from agent_runtime.errors import ConfigError


class WorkerSettings(BaseModel):
    """How one agent type's workers consume. Every field has a production default; a pipeline
    sets ``defaults:`` and each agent may override any field."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # 512: LLM- and HTTP-bound agents wait, they do not compute. Measured (issue 17,
    # benchmarks/concurrency.py, docs/benchmarks.md): one process with handlers awaiting 100 ms
    # handles 245 msg/s at 32 and 3,540 at 512; an in-flight handler costs about 16 KB, so
    # 512 of them about 8 MB. CPU-bound agents (and ones that start subprocesses) lower it.
    concurrency: int = Field(
        default=512, ge=1, le=10_000, description="in-flight handlers per worker process"
    )
    batch_size: int = Field(default=128, ge=1, le=10_000, description="XREADGROUP COUNT")
    block_ms: int = Field(default=1_000, ge=1, le=60_000, description="XREADGROUP BLOCK")
    max_deliveries: int = Field(
        default=5,
        ge=1,
        le=1_000,
        description="deliveries before a failing message is dead-lettered",
    )
    handler_timeout: float = Field(
        default=60.0, gt=0, description="seconds one handler attempt may run"
    )
    reclaim_idle: float = Field(
        default=120.0,
        gt=0,
        description="seconds an entry of another consumer must be idle "
        "before it is reclaimed (> lease interval)",
    )
    reclaim_interval: float = Field(default=10.0, gt=0, description="seconds between reclaim scans")
    lease_interval: float | None = Field(
        default=None,
        gt=0,
        description="seconds between lease renewals of in-flight "
        "entries (default reclaim_idle / 4)",
    )
    retry_backoff: float = Field(
        default=1.0, ge=0, description="first redelivery delay after a failure, doubles"
    )
    retry_backoff_max: float = Field(
        default=60.0, ge=0, description="longest redelivery delay (the doubling stops there)"
    )
    done_ttl: int = Field(
        default=24 * 3600,
        ge=60,
        description="de-duplication window: a handled message id is "
        "remembered for at least this long (up to twice)",
    )
    max_age: float | None = Field(
        default=None,
        gt=0,
        description="seconds after its timestamp (on the Redis server's clock) a message is "
        "dead-lettered 'stale' instead of handled (default: 3600 or done_ttl if shorter); at "
        "most done_ttl, so a replayed entry can never outlive de-duplication",
    )
    clock_skew: float = Field(
        default=60.0,
        ge=0,
        le=3600,
        description="seconds a message's timestamp may lie ahead of the Redis server's "
        "clock before it is dead-lettered 'clock_skew'",
    )
    max_message_bytes: int = Field(
        default=256 * 1024,
        ge=1_024,
        le=64 * 1024 * 1024,
        description="largest envelope accepted or published (bytes); larger ones are dead-lettered",
    )
    retention: float = Field(
        default=3600.0, ge=0, description="seconds acknowledged entries stay in the inbox"
    )
    trim_interval: float = Field(
        default=30.0, gt=0, description="seconds between inbox trims (see retention)"
    )
    dlq_maxlen: int = Field(
        default=100_000, ge=100, description="dead letters kept per agent type (oldest dropped)"
    )
    trace: bool = Field(default=True, description="write a per-request trace record")
    trace_ttl: int = Field(default=24 * 3600, ge=60, description="seconds a trace is kept")
    heartbeat_interval: float = Field(
        default=5.0, gt=0, description="seconds between a worker's heartbeats (health, status)"
    )
    drain_timeout: float = Field(
        default=30.0, ge=0, description="seconds in-flight handlers get on SIGTERM"
    )
    consumer_idle_remove: float | None = Field(
        default=3600.0,
        gt=0,
        description="seconds a consumer of the group may go without reading before a worker "
        "removes it -- only if it owns no pending entries (consumers of gone workers: "
        "autoscaling churn); null: never",
    )
    consumer_sweep_interval: float = Field(
        default=60.0, gt=0, description="seconds between two removals of idle consumers"
    )

    @model_validator(mode="after")
    def _lease_below_reclaim(self) -> WorkerSettings:
        if self.lease_interval is not None and self.lease_interval * 2 > self.reclaim_idle:
            raise ValueError(
                "lease_interval must be at most half of reclaim_idle, or a live "
                "handler's entry could be reclaimed"
            )
        return self

    @model_validator(mode="after")
    def _consumer_idle_above_reads(self) -> WorkerSettings:
        idle = self.consumer_idle_remove
        if idle is not None and idle * 1000 <= 2 * self.block_ms:
            raise ValueError(
                "consumer_idle_remove must be longer than two reads (2 x block_ms), or live "
                "workers' consumers would be removed between their reads"
            )
        return self

    @model_validator(mode="after")
    def _max_age_within_dedup(self) -> WorkerSettings:
        if self.max_age is not None and self.max_age > self.done_ttl:
            raise ValueError(
                f"max_age ({self.max_age:g}s) must not exceed done_ttl ({self.done_ttl}s): a "
                "message older than the de-duplication window could be replayed and run again"
            )
        return self

    @property
    def freshness(self) -> float:
        """The effective ``max_age``."""
        return self.max_age if self.max_age is not None else min(3600.0, float(self.done_ttl))

    @property
    def lease_every(self) -> float:
        return self.lease_interval or self.reclaim_idle / 4


class RequestSettings(BaseModel):
    """Request defaults and the fleet's deadline sweep (``requests:`` in a pipeline file)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    deadline: float = Field(
        default=300.0,
        gt=0,
        le=30 * 24 * 3600,
        description="seconds a request may take when its publisher gives no timeout; past it "
        "the requester gets request.failed (expired / no_consumer)",
    )
    sweep_interval: float = Field(
        default=0.5,
        gt=0,
        le=10,
        description="seconds between deadline sweeps of each worker (one of them runs it)",
    )
    sweep_batch: int = Field(
        default=100, ge=1, le=10_000, description="overdue requests answered per sweep round"
    )


#: Every worker setting can also be set in the environment: ``AGENT_RUNTIME_`` + the field
#: name in capitals (``AGENT_RUNTIME_CONCURRENCY=64``). The names are generated from
#: WorkerSettings, so none is forgotten. The environment wins over the YAML (the pipeline's
#: ``worker:`` and ``agents.NAME.worker:``): an operator tunes a deployed worker without
#: editing its config. An empty value counts as unset.
WORKER_ENV_PREFIX = "AGENT_RUNTIME_"


def worker_env_name(field: str) -> str:
    return WORKER_ENV_PREFIX + field.upper()


#: environment variable -> WorkerSettings field
WORKER_ENV: dict[str, str] = {worker_env_name(f): f for f in WorkerSettings.model_fields}


def worker_env(environ: Mapping[str, str] | None = None) -> dict[str, str | None]:
    """The worker settings the environment sets: field -> its raw value (``none`` or
    ``null``: None, for the settings where null means off)."""
    env = os.environ if environ is None else environ
    found: dict[str, str | None] = {}
    for name, field in WORKER_ENV.items():
        value = env.get(name, "").strip()
        if value:
            found[field] = None if value.lower() in ("none", "null") else value
    return found


def with_worker_env(
    settings: WorkerSettings, environ: Mapping[str, str] | None = None
) -> WorkerSettings:
    """``settings`` with what the environment sets on top (checked as the YAML is: a bad
    value is a ConfigError naming the variable, one line per problem)."""
    from_env = worker_env(environ)
    if not from_env:
        return settings
    try:
        return WorkerSettings.model_validate({**settings.model_dump(), **from_env})
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            field = str(error["loc"][0]) if error["loc"] else ""
            source = (
                f"{worker_env_name(field)}={from_env[field]!r}"
                if field in from_env
                else f"worker settings with {', '.join(map(worker_env_name, from_env))}"
            )
            lines.append(f"{source}: {error['msg']}")
        raise ConfigError("\n".join(lines)) from None


def worker_env_docs() -> list[tuple[str, str, Any]]:
    """(variable, description, default) for every worker setting, for the docs and --help."""
    rows = []
    for field, info in WorkerSettings.model_fields.items():
        rows.append((worker_env_name(field), info.description or field, info.default))
    return rows
