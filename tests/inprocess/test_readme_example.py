"""The README's TestPipeline example ("Writing your own agent", step 6) runs as written: the
python block that uses TestPipeline is extracted and its test function is run."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30)]


def readme_example() -> str:
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    [block] = [b for b in blocks if "TestPipeline(" in b]
    return "\n".join(line.removeprefix("   ") for line in block.splitlines())


async def test_readme_test_pipeline_example_passes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)  # the example names its config relative to the repository root
    namespace: dict[str, Any] = {}
    exec(compile(readme_example(), "README.md", "exec"), namespace)
    await namespace["test_text_stats_end_to_end"]()
