"""The response_format sent to OpenAI: strict when the schema allows it, else plain."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from agent_runtime.llm.openai_provider import response_format


class Inner(BaseModel):
    default: str = Field(default="x", min_length=1, max_length=5)  # a field named "default"


class Closed(BaseModel):
    name: str = Field(min_length=1, pattern="^[a-z]+$")
    count: int = Field(ge=0, le=10)
    inner: Inner | None = None
    tags: list[str] = Field(default_factory=list, max_length=3)


class WithMap(BaseModel):
    name: str
    parameters: dict[str, str]


def _walk(node: Any) -> list[dict[str, Any]]:
    if isinstance(node, list):
        return [n for item in node for n in _walk(item)]
    if not isinstance(node, dict):
        return []
    return [node, *(n for value in node.values() for n in _walk(value))]


def test_closed_models_are_strict_without_refused_keywords() -> None:
    spec = response_format(Closed)["json_schema"]
    assert spec["strict"] is True and spec["name"] == "Closed"
    schema = spec["schema"]
    objects = [n for n in _walk(schema) if n.get("type") == "object"]
    assert objects and all(n["additionalProperties"] is False for n in objects)
    assert set(schema["required"]) == {"name", "count", "inner", "tags"}
    assert not any(k in n for n in _walk(schema) for k in ("minLength", "maxLength"))
    assert schema["properties"]["name"]["pattern"] == "^[a-z]+$"  # supported: kept
    assert "default" in schema["$defs"]["Inner"]["properties"]  # a property name stays


def test_models_with_free_form_maps_fall_back_to_non_strict() -> None:
    spec = response_format(WithMap)["json_schema"]
    assert spec["strict"] is False
    assert spec["schema"] == WithMap.model_json_schema()
