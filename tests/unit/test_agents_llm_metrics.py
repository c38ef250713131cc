"""LLM-backed agents book each call's tokens and cost in the worker's Prometheus metrics
(``runtime.metrics``), by provider and model."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from agent_runtime.agent import Services
from agent_runtime.llm.base import Completion, Usage
from agent_runtime.observability.metrics import Metrics
from agent_runtime.testing import AgentHarness
from agents.intent_parser import IntentParser
from protocols.core import UserRequest

GOOD = {"actions": [{"action": "read_file", "target": "a.txt"}], "confidence": 0.9}


class ScriptedLLM:
    name = "scripted"

    def __init__(self, *answers: Any) -> None:
        self.answers = list(answers)

    async def complete(
        self, *, system: str, prompt: str, schema: type[Any], max_tokens: int = 1024
    ) -> Completion[Any]:
        usage = Usage("anthropic", "claude-x", input_tokens=120, output_tokens=30, cost_usd=0.002)
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return Completion(schema.model_validate(answer), usage)


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


def test_llm_tokens_and_cost_are_exported_by_provider_and_model() -> None:
    metrics = Metrics()
    for _ in range(2):
        harness = AgentHarness(
            IntentParser, services=Services(llm=ScriptedLLM(GOOD), metrics=metrics)
        )
        outputs = anyio.run(harness.handle, UserRequest(text="read a.txt"))
        assert [o.message.message_type for o in outputs] == ["intent.parsed"]
    labels = {"provider": "anthropic", "model": "claude-x"}
    assert sample(metrics, "agent_runtime_llm_tokens_total", **labels, kind="input") == 240
    assert sample(metrics, "agent_runtime_llm_tokens_total", **labels, kind="output") == 60
    assert sample(metrics, "agent_runtime_llm_cost_usd_total", **labels) == pytest.approx(0.004)
    assert sample(metrics, "agent_runtime_llm_calls_total", **labels, cached="false") == 2


def test_agents_without_metrics_still_run() -> None:
    harness = AgentHarness(IntentParser, services=Services(llm=ScriptedLLM(GOOD)))
    outputs = anyio.run(harness.handle, UserRequest(text="read a.txt"))
    assert [o.message.message_type for o in outputs] == ["intent.parsed"]
