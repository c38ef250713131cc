"""The pipeline config (YAML) and process settings from the environment.

Every mapping rejects unknown keys; errors name the file and line of the offending key.
Environment: ``AGENT_RUNTIME_REDIS_URL`` overrides ``redis_url``. Envelopes are signed unless
``signing: off``; the keys come from the environment or the key file (agent_runtime/signing.py).
"""

from __future__ import annotations

import importlib.machinery
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from agent_runtime.config.limits import LLMFleet, MessageLimits
from agent_runtime.config.routing import Routing
from agent_runtime.config.settings import RequestSettings, WorkerSettings, with_worker_env
from agent_runtime.errors import ConfigError
from agent_runtime.policies.config import PolicySet
from agent_runtime.transport.keys import Keys
from protocols.envelope import AGENT_NAME_PATTERN, MESSAGE_TYPE_PATTERN

#: Message types published from outside the pipeline (client, CLI): they need no producer.
#: ``approval.decision`` comes from ``agent-runtime approve/reject``.
ENTRY_TYPES = frozenset({"user.request", "approval.decision"})
#: A config file larger than this is refused unread (a pipeline config is a few KiB).
MAX_CONFIG_BYTES = 1 << 20
#: Key of the validation context holding the config file's folder (see :func:`config_path`).
CONFIG_DIR = "config_dir"
_NAME = re.compile(AGENT_NAME_PATTERN)
_TYPE = re.compile(MESSAGE_TYPE_PATTERN)
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")


class AgentSpec(BaseModel):
    """One agent type of the pipeline."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    class_path: str = Field(alias="class", description="'package.module:ClassName'")
    consumes: list[str] | None = Field(
        default=None, description="message types it consumes (default: the class's)"
    )
    routes: dict[str, str] = Field(
        default_factory=dict,
        description="message type -> agent type, for outputs whose consumer is ambiguous",
    )
    replicas: int = Field(default=1, ge=0, le=1_000)
    shards: int = Field(default=1, ge=1, le=1_024)
    worker: dict[str, Any] = Field(
        default_factory=dict, description="overrides of the pipeline's worker defaults"
    )
    policies: PolicySet = Field(default_factory=PolicySet)
    rate_limit: MessageLimits | None = Field(
        default=None,
        description="messages per second the whole fleet of this type starts handling "
        "(shared in Redis; a message waits for its place within its deadline)",
    )
    secrets: list[str] | None = Field(
        default=None,
        description="restricted environment variables this agent type's processes receive "
        "from the supervisor (AGENT_RUNTIME_*KEY* variables and every name some agent type "
        "lists here go only to the types that list them; default: the agent class's own "
        "'secrets', e.g. the approval private key for the safety checker)",
    )
    config: dict[str, Any] = Field(default_factory=dict)

    @field_validator("secrets")
    @classmethod
    def _env_names(cls, value: list[str] | None) -> list[str] | None:
        for item in value or []:
            if not _ENV_NAME.match(item):
                raise ValueError(f"{item!r} is not an environment variable name")
        return value

    @field_validator("consumes")
    @classmethod
    def _types(cls, value: list[str] | None) -> list[str] | None:
        for item in value or []:
            if not _TYPE.match(item):
                raise ValueError(f"{item!r} is not a dotted message type like 'plan.created'")
        return value


class RedisTls(BaseModel):
    """``redis_tls:``: TLS to a ``rediss://`` server (agent_runtime/transport/tls.py; the
    ``AGENT_RUNTIME_REDIS_TLS_*`` variables override it). Paths are relative to the file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    ca_file: str | None = Field(default=None, description="CA bundle the server is checked with")
    cert_file: str | None = Field(default=None, description="client certificate (mutual TLS)")
    key_file: str | None = Field(default=None, description="the client certificate's key")
    check_hostname: bool | None = Field(default=None, description="default true")


class PipelineConfig(BaseModel):
    """A whole pipeline file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    redis_url: str | None = None
    redis_tls: RedisTls = Field(default_factory=RedisTls)
    key_prefix: str = Field(default="ar", pattern=r"^[A-Za-z0-9_\-]{1,32}$")
    allowed_modules: list[str] = Field(default_factory=list)
    python_paths: list[str] = Field(
        default_factory=list,
        description="directories, relative to the config file, appended to sys.path before the "
        "agent classes are imported (only modules under allowed_modules are imported)",
    )
    worker: WorkerSettings = Field(default_factory=WorkerSettings)
    reply_streams: list[str] = Field(
        default_factory=list,
        description="streams besides the request's own P:reply:{CID} that a message may name "
        "as reply_to (anything else is dead-lettered 'invalid'); none may lie under key_prefix",
    )
    requests: RequestSettings = Field(default_factory=RequestSettings)
    signing: bool = Field(
        default=True,
        description="HMAC-sign every envelope and refuse unsigned ones (default on); 'off' "
        "lets any Redis client inject messages (status and health then warn)",
    )
    llm: LLMFleet = Field(
        default_factory=LLMFleet,
        description="LLM provider accounts and their fleet rate limits (config/limits.py)",
    )
    agents: dict[str, AgentSpec]

    @field_validator("agents")
    @classmethod
    def _names(cls, value: dict[str, AgentSpec]) -> dict[str, AgentSpec]:
        if not value:
            raise ValueError("a pipeline needs at least one agent")
        for name in value:
            if not _NAME.match(name):
                raise ValueError(f"agent name {name!r} must match {AGENT_NAME_PATTERN}")
        return value

    @model_validator(mode="after")
    def _reply_streams_outside_runtime_keys(self) -> PipelineConfig:
        own = f"{self.key_prefix}:"
        for stream in self.reply_streams:
            if not stream or len(stream) > 512 or stream.startswith(own):
                raise ValueError(
                    f"reply_streams: {stream[:80]!r} must be 1-512 characters and outside the "
                    f"runtime's own keys ({own}*): a reply must never land in an inbox or a "
                    "dead-letter stream"
                )
        return self

    @property
    def keys(self) -> Keys:
        return Keys(self.key_prefix)

    def worker_settings(self, agent: str) -> WorkerSettings:
        """``agent``'s settings: the defaults, the pipeline's ``worker:``, the agent's own
        ``worker:``, then the ``AGENT_RUNTIME_*`` environment (config/settings.py)."""
        overrides = self.agents[agent].worker
        if not overrides:
            return with_worker_env(self.worker)
        try:
            merged = WorkerSettings.model_validate({**self.worker.model_dump(), **overrides})
        except ValidationError as exc:
            raise ConfigError(f"agents.{agent}.worker: {exc}") from exc
        return with_worker_env(merged)

    def worker_defaults(self) -> WorkerSettings:
        """The pipeline's ``worker:`` with the environment on top (no agent's overrides)."""
        return with_worker_env(self.worker)

    def routing(self, consumes: dict[str, list[str]]) -> Routing:
        """The routing table given what each agent consumes (see pipeline.Pipeline)."""
        table: dict[str, str] = {}
        for agent, types in consumes.items():
            for message_type in types:
                table.setdefault(message_type, agent)
        for spec in self.agents.values():
            table.update(spec.routes)
        shards = {name: spec.shards for name, spec in self.agents.items()}
        return Routing(self.keys, table, shards)


def config_path(value: str, info: ValidationInfo) -> str:
    """A file path of an agent's ``config:`` block, relative to the config file's folder
    (the ``config_dir`` of the validation context, which ``Pipeline.load`` passes); without a
    context (a config built in code, the test harness) relative to the working directory."""
    base = (info.context or {}).get(CONFIG_DIR)
    if base is None or Path(value).is_absolute():
        return value
    return str(Path(base) / value)


def load_config(path: str | Path) -> PipelineConfig:
    """Read and validate a pipeline YAML file. Raises ConfigError with file:line context, one
    line per problem."""
    path = Path(path)
    node, data = read_yaml(path)
    try:
        config = PipelineConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_errors(path, exc, line_index(node))) from exc
    problems = python_path_problems(config, path, node)
    if problems:
        raise ConfigError("\n".join(problems))
    return resolve_python_paths(config, path)


def read_yaml(path: Path) -> tuple[yaml.Node | None, dict[str, Any]]:
    """The document's node tree (for line numbers) and its data, which must be a mapping."""
    try:
        with path.open("rb") as file:
            raw = file.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror}") from exc
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: larger than {MAX_CONFIG_BYTES:,} bytes; not a pipeline config")
    try:
        text = raw.decode()
        node, data = _parse(text)
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    except RecursionError as exc:
        raise ConfigError(f"{path}: nested too deeply") from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{where}: invalid YAML: {problem}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping")
    return node, data


def python_path_problems(config: PipelineConfig, path: Path, node: yaml.Node | None) -> list[str]:
    """``python_paths`` entries that are not existing directories (relative to the config
    file's folder)."""
    lines = line_index(node)
    problems = []
    for i, entry in enumerate(config.python_paths):
        folder = (path.parent / entry).resolve()
        if not entry.strip() or not folder.is_dir():
            line = lines.get(("python_paths", i))
            where = f"{path}:{line}" if line else str(path)
            problems.append(
                f"{where}: python_paths.{i}: {entry!r} is not a directory "
                f"(resolved to {folder}; paths are relative to the config file)"
            )
            continue
        for found in shadowing(folder):
            line = lines.get(("python_paths", i))
            where = f"{path}:{line}" if line else str(path)
            problems.append(f"{where}: python_paths.{i}: {found}")
    return problems


#: Top-level packages of the runtime that no plug-in folder may define: a folder on
#: ``python_paths`` holding one would be imported instead of the real one (under an editable
#: install the built-ins are found only after ``sys.path``).
RESERVED_PACKAGES = ("agent_runtime", "agents", "protocols")


def shadowing(folder: str | Path) -> list[str]:
    """Why ``folder`` may not go on ``sys.path``: each module or package in it named like one
    of :data:`RESERVED_PACKAGES` (a package folder, with or without ``__init__.py``, or a
    module file of any importable suffix). Empty when it shadows nothing."""
    folder = Path(folder)
    suffixes = set(importlib.machinery.all_suffixes())
    found = []
    for name in RESERVED_PACKAGES:
        hits = [folder / name] if (folder / name).is_dir() else []
        hits += [folder / f"{name}{suffix}" for suffix in sorted(suffixes)]
        hits = [hit for hit in hits if hit.exists()]
        if hits:
            found.append(
                f"{hits[0]} would shadow the built-in package {name!r}; plug-in packages may "
                f"not be named {', '.join(RESERVED_PACKAGES)} (rename it, e.g. my_{name}, and "
                "name it in allowed_modules)"
            )
    return found


def resolve_python_paths(config: PipelineConfig, path: Path) -> PipelineConfig:
    """``python_paths`` made absolute (relative to the config file's folder)."""
    resolved = [str((path.parent / entry).resolve()) for entry in config.python_paths]
    return config.model_copy(update={"python_paths": resolved}) if resolved else config


def _parse(text: str) -> tuple[yaml.Node | None, Any]:
    """The document's node tree and its data (what ``yaml.compose`` and ``yaml.safe_load``
    return), parsed once: the data is built from the tree. Parsing is most of a worker's
    config load (~59 M instructions per parse of configs/default.yaml; docs/benchmarks.md
    "Issue 17: start time"). A document with a merge key (``<<``) is parsed twice as before:
    building its data rewrites the tree's mappings, whose lines :func:`line_index` reads."""
    if "<<" in text:
        return yaml.compose(text, Loader=yaml.SafeLoader), yaml.safe_load(text)
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        return node, (loader.construct_document(node) if node is not None else None)
    finally:
        loader.dispose()


def line_index(node: yaml.Node | None, prefix: tuple[Any, ...] = ()) -> dict[tuple[Any, ...], int]:
    """Map each key path of a YAML document to its 1-based line."""
    index: dict[tuple[Any, ...], int] = {}
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            path = (*prefix, key_node.value)
            index[path] = key_node.start_mark.line + 1
            index.update(line_index(value_node, path))
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            index[(*prefix, i)] = item.start_mark.line + 1
            index.update(line_index(item, (*prefix, i)))
    return index


def error_lines(
    path: Path,
    exc: ValidationError,
    lines: dict[tuple[Any, ...], int],
    prefix: tuple[Any, ...] = (),
) -> list[str]:
    """One ``FILE:LINE: dotted.key: message`` per error of ``exc`` (its locations taken
    under ``prefix``; the line is the nearest enclosing key's that the YAML has)."""
    out = []
    for error in exc.errors():
        loc = (*prefix, *("class" if p == "class_path" else p for p in error["loc"]))
        line = next((lines[loc[:n]] for n in range(len(loc), 0, -1) if loc[:n] in lines), None)
        where = f"{path}:{line}" if line else str(path)
        dotted = ".".join(str(p) for p in loc) or "<root>"
        message = "unknown key" if error["type"] == "extra_forbidden" else error["msg"]
        out.append(f"{where}: {dotted}: {message}")
    return out


def _format_errors(path: Path, exc: ValidationError, lines: dict[tuple[Any, ...], int]) -> str:
    return "\n".join(error_lines(path, exc, lines))
