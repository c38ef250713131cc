"""Dotted-path imports ("package.module:Class"), only from an allow-list of module prefixes.

Built-in agents (``agents``) and tools (``agents.executors``) are always allowed; anything else
must be listed under ``allowed_modules`` in the pipeline config. Nothing outside the list is
ever imported, so a config file cannot make a worker execute arbitrary modules.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Iterable
from typing import Any

from agent_runtime.errors import ConfigError, ImportNotAllowedError

BUILTIN_PREFIXES = ("agents",)
_DOTTED = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*(:[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*)?$")


def split_path(path: str) -> tuple[str, str]:
    """``"pkg.mod:Attr"`` or ``"pkg.mod.Attr"`` -> (module, attribute path)."""
    if not _DOTTED.match(path):
        raise ConfigError(f"{path!r} is not a dotted path like 'package.module:ClassName'")
    if ":" in path:
        module, attr = path.split(":", 1)
    else:
        module, _, attr = path.rpartition(".")
        if not module:
            raise ConfigError(f"{path!r} names no module; write 'package.module:ClassName'")
    return module, attr


def is_allowed(module: str, prefixes: Iterable[str]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in (*BUILTIN_PREFIXES, *prefixes))


def import_object(path: str, allowed: Iterable[str]) -> Any:
    """Import ``path`` if its module is under an allowed prefix; raise a clear error if not."""
    allowed = tuple(allowed)
    module_name, attr = split_path(path)
    if not is_allowed(module_name, allowed):
        listed = ", ".join((*BUILTIN_PREFIXES, *allowed))
        raise ImportNotAllowedError(
            f"refusing to import {path!r}: module {module_name!r} is not under an allowed "
            f"prefix ({listed}); add its package to 'allowed_modules' in the config"
        )
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"cannot import module {module_name!r} for {path!r}: {exc}") from exc
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ConfigError(f"module {module_name!r} has no attribute {attr!r}") from None
    return obj
