"""The message types of the text-stats example (versioned like every payload)."""

from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field

from protocols.base import Payload


class WordCount(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    word: str
    count: int = Field(ge=1)


class TextCounted(Payload):
    """Stage one's result: counts of the request text."""

    message_type: ClassVar[str] = "text_stats.counted"
    schema_version: ClassVar[int] = 1

    words: int = Field(ge=0)
    unique_words: int = Field(ge=0)
    sentences: int = Field(ge=0)
    characters: int = Field(ge=0)
    top_words: list[WordCount] = Field(default_factory=list)


class TextSummary(Payload):
    """Stage two's reply to the requester; leaves the pipeline (``terminal``)."""

    message_type: ClassVar[str] = "text_stats.summary"
    schema_version: ClassVar[int] = 1
    terminal: ClassVar[bool] = True

    summary: str
    words: int = Field(ge=0)
    sentences: int = Field(ge=0)
    top_words: list[str] = Field(default_factory=list)
    reading_seconds: int = Field(ge=0)
