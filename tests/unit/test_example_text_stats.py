"""The plug-in example (configs/examples/text_stats.yaml): the config validates from anywhere,
and its two agents, run on the shipped harness, count and summarize as documented."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import pytest

from agent_runtime.testing import AgentHarness
from protocols.core import UserRequest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "configs" / "examples" / "text_stats.yaml"


@pytest.fixture(scope="module")
def pipeline() -> Any:
    from agent_runtime.config.pipeline import Pipeline

    return Pipeline.load(EXAMPLE)  # python_paths makes text_stats_example importable


def test_example_classes_live_outside_the_builtin_packages(pipeline: Any) -> None:
    assert set(pipeline.agents) == {"counter", "summarizer"}
    for agent in pipeline.agents.values():
        assert agent.cls.__module__ == "text_stats_example.agents"
        assert Path(importlib.import_module(agent.cls.__module__).__file__ or "").is_relative_to(
            ROOT / "configs" / "examples" / "plugins"
        )
    assert pipeline.routing.agent_for("user.request") == "counter"
    assert pipeline.routing.agent_for("text_stats.counted") == "summarizer"


async def run(harness: AgentHarness, payload: Any) -> Any:
    outputs = await harness.handle(payload)
    assert len(outputs) == 1
    return outputs[0]


@pytest.mark.anyio
async def test_counter_counts_and_ranks(pipeline: Any) -> None:
    counter = AgentHarness(pipeline.agents["counter"].cls, config={"top_n": 2, "min_length": 2})
    out = await run(
        counter, UserRequest(text="Redis streams carry messages. Workers read redis streams! A b")
    )
    assert out.message.message_type == "text_stats.counted"
    assert out.message.payload == {
        "words": 10,
        "unique_words": 8,
        "sentences": 2,
        "characters": 61,
        "top_words": [{"word": "redis", "count": 2}, {"word": "streams", "count": 2}],
    }


@pytest.mark.anyio
async def test_counter_handles_text_without_words(pipeline: Any) -> None:
    counter = AgentHarness(pipeline.agents["counter"].cls)
    out = await run(counter, UserRequest(text="... ?!"))
    assert out.message.payload["words"] == 0
    assert out.message.payload["top_words"] == []


@pytest.mark.anyio
async def test_summarizer_replies_to_the_requester(pipeline: Any) -> None:
    payloads = importlib.import_module("text_stats_example.payloads")
    counted = payloads.TextCounted(
        words=400,
        unique_words=120,
        sentences=20,
        characters=2400,
        top_words=[{"word": "redis", "count": 9}],
    )
    summarizer = AgentHarness(pipeline.agents["summarizer"].cls, config={"words_per_minute": 200})
    message = summarizer.message_for(counted)
    out = await summarizer.handle(counted, message=message)
    assert [o.stream for o in out] == [message.reply_to]
    assert out[0].message.message_type == "text_stats.summary"
    assert out[0].message.payload == {
        "summary": "400 words (120 unique), 20 sentence(s), 2400 characters; most frequent: "
        "redis (9); reading time about 120 s",
        "words": 400,
        "sentences": 20,
        "top_words": ["redis"],
        "reading_seconds": 120,
    }


def test_counter_config_is_validated(pipeline: Any) -> None:
    with pytest.raises(ValueError, match="top_n"):
        AgentHarness(pipeline.agents["counter"].cls, config={"top_n": 0})
