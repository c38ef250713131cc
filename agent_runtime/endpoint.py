"""What a client needs to publish to one entry agent type -- keys, routing to the entry's
inbox shards, its worker settings (trace, size cap), the request deadline and the payload
schemas -- read from the pipeline file alone, without importing any agent class.

    client = Client.connect(url, entry="intent_parser", schemas=["protocols.pipeline"])

A :class:`~agent_runtime.config.pipeline.Pipeline` imports every agent class of the config
(and with them their SDKs and tools); a web app or a script that only publishes requests and
reads replies needs none of that. The payload models come from ``schemas``: modules (every
payload model defined in them) or ``module:Class`` paths, imported only from ``protocols`` or
the config's ``allowed_modules`` (the same allow-list as agent classes), or model classes
given directly. ``user.request`` and the runtime's ``request.failed`` are always known.
"""

from __future__ import annotations

import importlib
import inspect
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from agent_runtime.codec import Codec
from agent_runtime.config.model import PipelineConfig, load_config
from agent_runtime.config.registry import import_object, split_path
from agent_runtime.config.routing import Routing
from agent_runtime.config.settings import WorkerSettings
from agent_runtime.errors import ConfigError, ImportNotAllowedError
from agent_runtime.signing import Keyring, load_keyring, no_key_error
from protocols.base import Payload, SchemaRegistry
from protocols.core import RequestFailed, UserRequest

#: where payload models may always be imported from (the runtime's own message schemas)
SCHEMA_PREFIXES = ("protocols",)
DEFAULT_CONFIG = "configs/default.yaml"

Schema = str | type[Payload]


@dataclass(frozen=True)
class Endpoint:
    """A pipeline seen from a client that publishes to ``entry`` (duck-types the parts of
    :class:`~agent_runtime.config.pipeline.Pipeline` that :class:`~agent_runtime.client.Client`
    uses)."""

    config: PipelineConfig
    entry: str
    schemas: SchemaRegistry
    routing: Routing
    source: Path | None = None

    @classmethod
    def load(
        cls,
        entry: str,
        config: str | Path | PipelineConfig | None = None,
        schemas: Iterable[Schema] = (),
    ) -> Endpoint:
        """``config``: a pipeline file (default ``$AGENT_RUNTIME_CONFIG`` or
        configs/default.yaml) or a PipelineConfig. ConfigError when ``entry`` is not one of
        its agent types or a schema cannot be imported (or is not allow-listed)."""
        source: Path | None = None
        if not isinstance(config, PipelineConfig):
            source = Path(config or os.environ.get("AGENT_RUNTIME_CONFIG") or DEFAULT_CONFIG)
            config = load_config(source)
        if entry not in config.agents:
            raise ConfigError(
                f"entry {entry!r} is not an agent type of the pipeline "
                f"({', '.join(config.agents) or 'none'})"
            )
        registry = SchemaRegistry([UserRequest, RequestFailed])
        for schema in schemas:
            for model in _models(schema, config.allowed_modules):
                registry.register(model)  # ValueError: another model has its type and version
        # what the entry is sent: its config's ``consumes``, else a user.request (the entry's
        # other types are unknown without its class: list them under agents.ENTRY.consumes)
        consumes = config.agents[entry].consumes or [UserRequest.message_type]
        shards = {entry: config.agents[entry].shards}
        routing = Routing(config.keys, {t: entry for t in consumes}, shards)
        return cls(config, entry, registry, routing, source)

    def worker_settings(self, agent: str) -> WorkerSettings:
        return self.config.worker_settings(agent)

    def keyring(self) -> Keyring | None:
        """As Pipeline.keyring: the signing keys, None with ``signing: off``."""
        if not self.config.signing:
            return None
        ring = load_keyring()
        if ring is None:
            raise no_key_error()
        return ring

    def codec(self, agent: str | None = None) -> Codec:
        settings = self.worker_settings(agent or self.entry)
        return Codec(
            self.schemas,
            keyring=self.keyring(),
            max_bytes=settings.max_message_bytes,
            keys=self.config.keys,
            reply_streams=self.config.reply_streams,
        )


def _models(schema: Schema, allowed: Iterable[str]) -> list[type[Payload]]:
    """The payload models ``schema`` names (a model, ``module:Class``, or a module: every
    model defined in it), importing only from SCHEMA_PREFIXES and ``allowed``."""
    if isinstance(schema, type):
        if not issubclass(schema, Payload):
            raise ConfigError(f"{schema!r} is not a payload model (protocols.base.Payload)")
        return [schema]
    prefixes = (*SCHEMA_PREFIXES, *allowed)
    if ":" in schema:
        module_name, _ = split_path(schema)
        _check_allowed(module_name, schema, prefixes)
        found = import_object(schema, prefixes)
        return _models(found, allowed)
    split_path(schema + ":_")  # a dotted module name, or ConfigError
    _check_allowed(schema, schema, prefixes)
    try:
        module = importlib.import_module(schema)
    except ImportError as exc:
        raise ConfigError(f"cannot import schema module {schema!r}: {exc}") from exc
    models = [
        obj
        for _, obj in inspect.getmembers(module, inspect.isclass)
        if issubclass(obj, Payload)
        and obj.__module__ == module.__name__
        and bool(vars(obj).get("message_type"))  # a concrete model, not a base class
    ]
    if not models:
        raise ConfigError(f"schema module {schema!r} defines no payload model")
    return models


def _check_allowed(module: str, path: str, prefixes: tuple[str, ...]) -> None:
    # the built-in agents package is not a schema source: importing it is what this avoids
    if not any(module == p or module.startswith(p + ".") for p in prefixes):
        raise ImportNotAllowedError(
            f"refusing to import schema {path!r}: module {module!r} is not under "
            f"{', '.join(prefixes)} (add its package to 'allowed_modules' in the config)"
        )
