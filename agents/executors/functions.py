"""Functions the ``python`` tool may call by default (each named in its ``functions`` map)."""

from __future__ import annotations

import hashlib
import re

from agents.executors.base import ToolContext, ToolError, sandboxed

MAX_BYTES = 4 * 1024 * 1024


def word_count(path: str, context: ToolContext) -> dict[str, int | str]:
    """Lines, words and bytes of a text file inside the sandbox (like ``wc``)."""
    file = sandboxed(context.sandbox, path)
    if not file.is_file():
        raise ToolError(f"{path!r} is not a regular file")
    data = file.read_bytes()[:MAX_BYTES]
    text = data.decode("utf-8", errors="replace")
    return {
        "path": path,
        "lines": text.count("\n"),
        "words": len(re.findall(r"\S+", text)),
        "bytes": len(data),
    }


def sha256(text: str) -> str:
    """Hex SHA-256 of a string."""
    return hashlib.sha256(text.encode()).hexdigest()
