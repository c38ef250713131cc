"""``deploy``: a simulated deployment that honours the step's idempotency key.

It records ``SERVICE@ENVIRONMENT`` in a JSON file under ``state_dir``. Running the same step
again (same idempotency key) returns the first result with ``already_applied: true`` instead
of deploying twice: the pattern a real deploy tool should follow.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import time
from pathlib import Path
from typing import Any, ClassVar

import anyio
from pydantic import Field

from agents.executors.base import ToolContext, ToolError, ToolOptions, ToolOutput, only

_NAME = re.compile(r"^[A-Za-z0-9][\w.\-]{0,63}$")


class DeployOptions(ToolOptions):
    state_dir: str | None = Field(
        default=None,
        description="where deployments are recorded (default: <tmp>/agent-runtime-deploys-<uid>)",
    )
    environments: list[str] = Field(default_factory=lambda: ["dev", "staging", "prod"])
    duration: float = Field(default=0.2, ge=0, le=600, description="simulated seconds")


class Deploy:
    """args: ``service``, ``environment``, ``version``. Output: the deployment record."""

    Options = DeployOptions
    cancellable: ClassVar[bool] = False  # a deployment is never cut halfway by a cancel

    def __init__(self, options: DeployOptions) -> None:
        self.options = options
        default = Path(tempfile.gettempdir()) / f"agent-runtime-deploys-{os.getuid()}"
        self.state_dir = Path(options.state_dir) if options.state_dir else default

    def check(self, args: dict[str, Any]) -> tuple[str, str, str]:
        only(args, "service", "environment", "version")
        values = [
            args.get("service"),
            args.get("environment", "staging"),
            args.get("version", "latest"),
        ]
        for value in values:
            if not isinstance(value, str) or not _NAME.match(value):
                raise ToolError(f"invalid deploy argument {value!r}")
        service, environment, version = values
        if environment not in self.options.environments:
            raise ToolError(f"unknown environment {environment!r}")
        return service, environment, version

    async def run(self, args: dict[str, Any], context: ToolContext) -> ToolOutput:
        service, environment, version = self.check(args)
        record_path = self.state_dir / f"{service}@{environment}.json"
        previous = await anyio.to_thread.run_sync(_load, record_path)
        if previous is not None and previous.get("idempotency_key") == context.idempotency_key:
            return ToolOutput({**previous, "already_applied": True})
        await anyio.sleep(self.options.duration)
        record = {
            "service": service,
            "environment": environment,
            "version": version,
            "idempotency_key": context.idempotency_key,
            "deployed_at": time.time(),
            "previous_version": previous.get("version") if previous else None,
        }
        await anyio.to_thread.run_sync(_store, record_path, record)
        return ToolOutput({**record, "already_applied": False})


def _load(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _store(path: Path, record: dict[str, Any]) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(record))
    tmp.replace(path)
