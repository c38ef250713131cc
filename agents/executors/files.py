"""``file_read`` and ``file_list``: read-only file access inside the executor's sandbox."""

from __future__ import annotations

from typing import Any

import anyio
from pydantic import Field

from agents.executors.base import (
    DEFAULT_DENY_GLOBS,
    ToolContext,
    ToolError,
    ToolOptions,
    ToolOutput,
    only,
    require,
    sandboxed,
)


class FileReadOptions(ToolOptions):
    max_bytes: int = Field(
        default=16 * 1024,
        ge=1,
        le=4 * 1024 * 1024,
        description="bytes returned; longer files are truncated",
    )
    deny_globs: list[str] = Field(default_factory=lambda: list(DEFAULT_DENY_GLOBS))


class FileRead:
    """args: ``path`` (relative to the sandbox). Output: the text (UTF-8, replacement chars)."""

    Options = FileReadOptions

    def __init__(self, options: FileReadOptions) -> None:
        self.options = options

    async def run(self, args: dict[str, Any], context: ToolContext) -> ToolOutput:
        only(args, "path")
        path = sandboxed(
            context.sandbox, require(args, "path", str), deny_globs=self.options.deny_globs
        )
        return await anyio.to_thread.run_sync(self._read, path)

    def _read(self, path: Any) -> ToolOutput:
        if not path.is_file():
            raise ToolError(f"{path.name!r} is not a regular file")
        with path.open("rb") as handle:
            data = handle.read(self.options.max_bytes + 1)
        truncated = len(data) > self.options.max_bytes
        text = data[: self.options.max_bytes].decode("utf-8", errors="replace")
        return ToolOutput(text, truncated=truncated)


class FileListOptions(ToolOptions):
    max_entries: int = Field(default=200, ge=1, le=10_000)
    deny_globs: list[str] = Field(default_factory=lambda: list(DEFAULT_DENY_GLOBS))


class FileList:
    """args: ``path`` (a directory relative to the sandbox). Output: sorted entries with
    name, type (file/dir/link/other) and size; denied names are left out."""

    Options = FileListOptions

    def __init__(self, options: FileListOptions) -> None:
        self.options = options

    async def run(self, args: dict[str, Any], context: ToolContext) -> ToolOutput:
        only(args, "path")
        path = sandboxed(
            context.sandbox, require(args, "path", str), deny_globs=self.options.deny_globs
        )
        return await anyio.to_thread.run_sync(self._list, path)

    def _list(self, path: Any) -> ToolOutput:
        import fnmatch

        if not path.is_dir():
            raise ToolError(f"{path.name!r} is not a directory")
        entries = []
        for child in sorted(path.iterdir(), key=lambda p: p.name):
            if any(fnmatch.fnmatch(child.name.lower(), g) for g in self.options.deny_globs):
                continue
            kind = (
                "link"
                if child.is_symlink()
                else "dir"
                if child.is_dir()
                else "file"
                if child.is_file()
                else "other"
            )
            size = child.stat().st_size if kind == "file" else None
            entries.append({"name": child.name, "type": kind, "size": size})
        truncated = len(entries) > self.options.max_entries
        return ToolOutput(entries[: self.options.max_entries], truncated=truncated)
