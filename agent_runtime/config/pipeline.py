"""A loaded pipeline: the config plus the agent classes it names, their typed configs, the
schema registry and the routing table. ``Pipeline.load(path)`` is what ``validate`` checks
and what every worker process builds on start."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from agent_runtime.agent import Agent
from agent_runtime.codec import Codec
from agent_runtime.config.model import (
    CONFIG_DIR,
    ENTRY_TYPES,
    PipelineConfig,
    load_config,
    shadowing,
)
from agent_runtime.config.registry import import_object
from agent_runtime.config.routing import Routing
from agent_runtime.errors import ConfigError
from agent_runtime.policies.errors import policy_problems
from agent_runtime.signing import Keyring, load_keyring, no_key_error, worker_env
from protocols.base import Payload, SchemaRegistry
from protocols.core import RequestFailed, UserRequest


@dataclass(frozen=True)
class AgentType:
    name: str
    cls: type[Agent[Any]]
    config: BaseModel
    consumes: list[str]


@dataclass(frozen=True)
class Pipeline:
    config: PipelineConfig
    agents: dict[str, AgentType]
    schemas: SchemaRegistry
    routing: Routing
    source: Path | None = None

    @classmethod
    def load(cls, path: str | Path) -> Pipeline:
        return cls.build(load_config(path), source=Path(path))

    @classmethod
    def build(cls, config: PipelineConfig, source: Path | None = None) -> Pipeline:
        _extend_import_path(config.python_paths)
        agents = {name: _agent_type(config, name, source) for name in config.agents}
        schemas = SchemaRegistry([UserRequest, RequestFailed])
        for agent in agents.values():
            for model in (*agent.cls.consumes, *agent.cls.produces):
                _register(schemas, model, agent.name)
        routing = config.routing({a.name: a.consumes for a in agents.values()})
        pipeline = cls(config, agents, schemas, routing, source)
        pipeline.check()
        return pipeline

    def check(self) -> None:
        """Cross-agent checks: routes name known agents, every consumed type has a producer."""
        problems: list[str] = []
        produced = set(ENTRY_TYPES)
        for agent in self.agents.values():
            produced.update(m.message_type for m in agent.cls.produces)
        for name, spec in self.config.agents.items():
            for message_type, target in spec.routes.items():
                if target not in self.agents:
                    problems.append(
                        f"agents.{name}.routes.{message_type}: unknown agent {target!r}"
                    )
        for name, spec in self.config.agents.items():
            problems += policy_problems(
                f"agents.{name}.policies", spec.policies, self.config.allowed_modules
            )
        for agent in self.agents.values():
            for message_type in agent.consumes:
                if message_type not in produced:
                    problems.append(
                        f"agents.{agent.name}: consumes {message_type!r} but no agent produces it"
                    )
            for model in agent.cls.produces:
                if model.message_type not in self.routing.table and not _terminal(model):
                    problems.append(
                        f"agents.{agent.name}: produces {model.message_type!r} but no "
                        "agent consumes it and no route names one"
                    )
        if problems:
            raise ConfigError("invalid pipeline:\n  " + "\n  ".join(problems))

    def worker_settings(self, agent: str) -> Any:
        return self.config.worker_settings(agent)

    def warnings(self) -> list[str]:
        """Insecure choices of the config, for ``status`` and ``health`` to show."""
        if self.config.signing:
            return []
        return [
            "signing: off -- envelopes are neither signed nor verified; any client that can "
            "write to Redis can inject or alter messages (docs/security.md)"
        ]

    def keyring(self) -> Keyring | None:
        """The signing keys (agent_runtime/signing.py), None with ``signing: off``;
        ConfigError when signing is on and there is no key."""
        if not self.config.signing:
            return None
        ring = load_keyring()
        if ring is None:
            raise no_key_error()
        return ring

    def codec(self, agent: str | None = None) -> Codec:
        """The pipeline's codec, for workers and clients alike: signed and verifying unless
        the config says ``signing: off`` (no key then is a ConfigError); ``agent``'s message
        size cap (else the pipeline's default)."""
        settings = self.worker_settings(agent) if agent else self.config.worker_defaults()
        return Codec(
            self.schemas,
            keyring=self.keyring(),
            max_bytes=settings.max_message_bytes,
            keys=self.config.keys,
            reply_streams=self.config.reply_streams,
        )


def signing_env(pipeline: Pipeline) -> dict[str, str]:
    """The environment ``up``/``run`` give their workers for envelope signing (the key file
    created in the runtime directory when there is no key); nothing with ``signing: off``."""
    return worker_env() if pipeline.config.signing else {}


def _extend_import_path(paths: list[str]) -> None:
    """Append the config's ``python_paths`` to ``sys.path`` (appended, so they never shadow
    installed packages); the allow-list still decides what may be imported from them. A
    folder that would shadow agent_runtime, agents or protocols is refused (ConfigError)."""
    refused = [line for entry in paths for line in shadowing(Path(entry).resolve())]
    if refused:
        raise ConfigError("python_paths:\n" + "\n".join(f"  {line}" for line in refused))
    for entry in paths:
        folder = str(Path(entry).resolve())
        if folder not in sys.path:
            sys.path.append(folder)


def _terminal(model: type[Payload]) -> bool:
    """Payloads that leave the pipeline (replies, reports) set ``terminal = True``."""
    return bool(getattr(model, "terminal", False))


def _agent_type(config: PipelineConfig, name: str, source: Path | None) -> AgentType:
    spec = config.agents[name]
    try:
        cls = import_object(spec.class_path, config.allowed_modules)
    except ConfigError as exc:
        raise type(exc)(f"agents.{name}.class: {exc}") from exc  # keeps ImportNotAllowedError
    if not (isinstance(cls, type) and issubclass(cls, Agent)):
        raise ConfigError(f"agents.{name}.class: {spec.class_path!r} is not an Agent subclass")
    try:
        # file paths in an agent's config are relative to the config file (config_path)
        context = {CONFIG_DIR: str(source.parent)} if source is not None else None
        agent_config = cls.Config.model_validate(spec.config, context=context)
    except ValidationError as exc:
        raise ConfigError(f"agents.{name}.config ({cls.__name__}.Config): {exc}") from exc
    declared = [m.message_type for m in cls.consumes]
    consumes = spec.consumes if spec.consumes is not None else declared
    unknown = sorted(set(consumes) - set(declared))
    if unknown:
        raise ConfigError(
            f"agents.{name}.consumes: {cls.__name__} cannot handle {unknown}; it handles {declared}"
        )
    if not consumes:
        raise ConfigError(f"agents.{name}: {cls.__name__} consumes no message type")
    return AgentType(name, cls, agent_config, list(consumes))


def _register(schemas: SchemaRegistry, model: type[Payload], agent: str) -> None:
    try:
        schemas.register(model)
    except ValueError as exc:
        raise ConfigError(f"agents.{agent}: {exc}") from exc
