"""Check a pipeline config before anything starts: every problem at once, each as
``FILE:LINE: dotted.key: message``.

``agent-runtime validate`` prints them; ``worker``, ``up`` and ``run`` refuse to start on any
(exit 2). What is checked, in order:

1. the YAML itself and the pipeline's structure (unknown keys, types, limits, agent names);
2. per agent type: its class (the allow-list, an Agent subclass), its ``config:`` block
   against the class's ``Config`` (file paths in it relative to the config file), the types
   it consumes, its worker settings, its ``llm:`` block (``config.llm``) against
   :class:`~agent_runtime.llm.factory.LLMSpec`, and, for the agent types this process will
   run, the environment variable holding its provider's API key;
3. when 1 and 2 found nothing: the cross-agent checks of :meth:`Pipeline.check` (routes,
   a producer for every consumed type, a consumer for every produced one, policies).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from agent_runtime.agent import Agent
from agent_runtime.config.model import (
    CONFIG_DIR,
    AgentSpec,
    PipelineConfig,
    error_lines,
    line_index,
    python_path_problems,
    read_yaml,
    resolve_python_paths,
)
from agent_runtime.config.pipeline import Pipeline
from agent_runtime.config.registry import import_object
from agent_runtime.config.settings import WorkerSettings, with_worker_env
from agent_runtime.errors import ConfigError
from agent_runtime.llm.factory import KEY_ENV, LLMSpec

Lines = dict[tuple[Any, ...], int]


class ConfigProblems(ConfigError):
    """Several problems of one config file; ``str()`` is one line per problem."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def load_valid(path: str | Path, *, environment_for: Iterable[str] | None = ()) -> Pipeline:
    """The pipeline at ``path`` if it has no problem, else :class:`ConfigProblems`.
    ``environment_for``: agent types whose API-key variables must be set (None: all)."""
    found, pipeline = _checked(Path(path), environment_for, os.environ)
    if found or pipeline is None:
        raise ConfigProblems(found)
    return pipeline  # the one the checks built: the file is read and validated once


def problems(
    path: str | Path,
    *,
    environment_for: Iterable[str] | None = None,
    environ: Mapping[str, str] = os.environ,
) -> list[str]:
    """Every problem of the config file at ``path`` (empty: it is valid)."""
    return _checked(Path(path), environment_for, environ)[0]


def _checked(
    path: Path, environment_for: Iterable[str] | None, environ: Mapping[str, str]
) -> tuple[list[str], Pipeline | None]:
    """The problems of the config at ``path`` and, when there is none, its pipeline."""
    try:
        return _problems(path, environment_for, environ)
    except RecursionError:
        return [f"{path}: nested too deeply (or a YAML alias refers to itself)"], None


def _problems(
    path: Path, environment_for: Iterable[str] | None, environ: Mapping[str, str]
) -> tuple[list[str], Pipeline | None]:
    try:
        node, data = read_yaml(path)
    except ConfigError as exc:
        return [str(exc)], None
    check = _Check(path, line_index(node), environ)
    config: PipelineConfig | None = None
    try:
        config = PipelineConfig.model_validate(data)
    except ValidationError as exc:
        check.found += error_lines(path, exc, check.lines)
    else:
        check.found += python_path_problems(config, path, node)
    if config is not None and not check.found:
        config = resolve_python_paths(config, path)
        _extend_import_path(config.python_paths)
    agents = data.get("agents")
    for name, raw in agents.items() if isinstance(agents, dict) else []:
        wanted = environment_for is None or name in set(environment_for)
        check.agent(str(name), raw, data, config, check_env=wanted)
    pipeline: Pipeline | None = None
    if config is not None and not check.found:
        try:
            pipeline = Pipeline.build(config, source=path)
        except ConfigError as exc:
            check.found += [check.locate(line) for line in _problem_lines(exc)]
    if config is not None and not check.found:
        check.found += _environment_problems(config, environ)
    return check.found, None if check.found else pipeline


def _environment_problems(config: PipelineConfig, environ: Mapping[str, str]) -> list[str]:
    """Worker settings from ``AGENT_RUNTIME_*`` variables that are not valid on top of some
    agent type's settings from the YAML (config/settings.py)."""
    found: list[str] = []
    for spec in config.agents.values():
        try:
            base = WorkerSettings.model_validate({**config.worker.model_dump(), **spec.worker})
            with_worker_env(base, environ)
        except ValidationError:
            continue  # a YAML problem, reported with its line
        except ConfigError as exc:
            found += [line for line in str(exc).splitlines() if line not in found]
    return found


@dataclass
class _Check:
    path: Path
    lines: Lines
    environ: Mapping[str, str]

    def __post_init__(self) -> None:
        self.found: list[str] = []
        self.dotted = {".".join(map(str, key)): line for key, line in self.lines.items()}

    def at(self, key: tuple[Any, ...], message: str) -> None:
        line = next(
            (self.lines[key[:n]] for n in range(len(key), 0, -1) if key[:n] in self.lines), None
        )
        where = f"{self.path}:{line}" if line else str(self.path)
        self.found.append(f"{where}: {'.'.join(map(str, key))}: {message}")

    def locate(self, problem: str) -> str:
        """``problem`` (``dotted.key: message``) with the file:line of its longest known key."""
        key = problem.split(": ", 1)[0]
        known = [k for k in self.dotted if key == k or key.startswith(k + ".")]
        line = self.dotted[max(known, key=len)] if known else None
        return f"{self.path}:{line}: {problem}" if line else f"{self.path}: {problem}"

    def agent(
        self,
        name: str,
        raw: Any,
        data: dict[str, Any],
        config: PipelineConfig | None,
        *,
        check_env: bool,
    ) -> None:
        """The checks of one agent type whose entry has the right structure."""
        try:
            spec = AgentSpec.model_validate(raw)
        except ValidationError:
            return  # reported with the pipeline's structure
        where = ("agents", name)
        cls = self._agent_class(spec, _allowed(config, data), where)
        if cls is not None:
            agent_config = self._agent_config(cls, spec, where)
            self._consumes(cls, spec, where)
            if agent_config is not None:
                self._llm(agent_config, spec, where, check_env=check_env)
                self._account(agent_config, config, where)
        self._worker(spec, data, config, where)

    def _agent_class(
        self, spec: AgentSpec, allowed: list[str], where: tuple[Any, ...]
    ) -> type[Agent[Any]] | None:
        try:
            cls = import_object(spec.class_path, allowed)
        except ConfigError as exc:
            self.at((*where, "class"), str(exc))
            return None
        if not (isinstance(cls, type) and issubclass(cls, Agent)):
            self.at((*where, "class"), f"{spec.class_path!r} is not an Agent subclass")
            return None
        return cls

    def _agent_config(
        self, cls: type[Agent[Any]], spec: AgentSpec, where: tuple[Any, ...]
    ) -> BaseModel | None:
        context = {CONFIG_DIR: str(self.path.parent)}
        try:
            return cls.Config.model_validate(spec.config, context=context)
        except ValidationError as exc:
            self.found += error_lines(self.path, exc, self.lines, (*where, "config"))
        except ConfigError as exc:  # e.g. a policy file that cannot be read
            named = [k for k, v in spec.config.items() if isinstance(v, str) and v in str(exc)]
            self.at((*where, "config", *named[:1]), str(exc))
        return None

    def _consumes(self, cls: type[Agent[Any]], spec: AgentSpec, where: tuple[Any, ...]) -> None:
        declared = [m.message_type for m in cls.consumes]
        unknown = sorted(set(spec.consumes or []) - set(declared))
        if unknown:
            self.at(
                (*where, "consumes"),
                f"{cls.__name__} cannot handle {unknown}; it handles {declared}",
            )

    def _llm(
        self, agent_config: BaseModel, spec: AgentSpec, where: tuple[Any, ...], *, check_env: bool
    ) -> None:
        """The agent's ``llm:`` block (its Config's ``llm`` field, defaults included)."""
        block = getattr(agent_config, "llm", None)
        key = (*where, "config", "llm")
        if isinstance(block, Mapping):
            try:
                block = LLMSpec.model_validate(dict(block))
            except ValidationError as exc:
                self.found += error_lines(self.path, exc, self.lines, key)
                return
        if not isinstance(block, LLMSpec) or not check_env:
            return
        variable = KEY_ENV.get(block.provider)
        if variable and not self.environ.get(variable):
            self.at(
                (*key, "provider"),
                f"the {block.provider} provider needs the environment variable {variable}, "
                "which is not set",
            )

    def _account(
        self, agent_config: BaseModel, config: PipelineConfig | None, where: tuple[Any, ...]
    ) -> None:
        """The ``llm.account`` an agent names exists in the pipeline's ``llm.accounts`` and
        is an account of the agent's provider."""
        block = getattr(agent_config, "llm", None)
        try:
            spec = LLMSpec.model_validate(dict(block)) if isinstance(block, Mapping) else block
        except ValidationError:
            return  # reported by _llm
        if not isinstance(spec, LLMSpec) or config is None:
            return
        key = (*where, "config", "llm", "account")
        try:
            found = config.llm.account_for(spec.provider, spec.account)
        except KeyError:
            known = ", ".join(sorted(config.llm.accounts)) or "none configured"
            self.at(key, f"{spec.account!r} is not an account of llm.accounts (known: {known})")
            return
        if found is not None and found[1].provider != spec.provider:
            self.at(
                key,
                f"account {found[0]!r} is a {found[1].provider} account; this agent's "
                f"provider is {spec.provider}",
            )

    def _worker(
        self,
        spec: AgentSpec,
        data: dict[str, Any],
        config: PipelineConfig | None,
        where: tuple[Any, ...],
    ) -> None:
        if not spec.worker:
            return
        try:
            base = (
                config.worker if config else WorkerSettings.model_validate(data.get("worker") or {})
            )
        except ValidationError:
            return  # the pipeline's own worker block is reported with its structure
        try:
            WorkerSettings.model_validate({**base.model_dump(), **spec.worker})
        except ValidationError as exc:
            self.found += error_lines(self.path, exc, self.lines, (*where, "worker"))


def _allowed(config: PipelineConfig | None, data: dict[str, Any]) -> list[str]:
    if config is not None:
        return list(config.allowed_modules)
    raw = data.get("allowed_modules")
    return [m for m in raw if isinstance(m, str)] if isinstance(raw, list) else []


def _extend_import_path(paths: list[str]) -> None:
    """As a worker does (Pipeline.build): append ``python_paths`` to ``sys.path``."""
    for folder in paths:
        if folder not in sys.path:
            sys.path.append(folder)


def _problem_lines(exc: ConfigError) -> list[str]:
    """The ``dotted.key: message`` lines of a ConfigError (its header dropped)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    body = [line for line in lines if not line.endswith(":")]
    return body or lines
