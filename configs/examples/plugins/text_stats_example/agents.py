"""Two agent types: ``WordCounter`` (user.request -> text_stats.counted) and ``Summarizer``
(text_stats.counted -> reply text_stats.summary to the requester)."""

from __future__ import annotations

import math
import re
from collections import Counter

from pydantic import BaseModel, ConfigDict, Field

from agent_runtime import Agent, MessageContext, Reject
from protocols.core import UserRequest

from .payloads import TextCounted, TextSummary, WordCount

WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)*")
SENTENCE_END = re.compile(r"[.!?]+(?:\s|$)")
DEFAULT_STOPWORDS = (
    "a",
    "an",
    "and",
    "are",
    "as",
    "at",
    "be",
    "by",
    "for",
    "in",
    "is",
    "it",
    "of",
    "on",
    "or",
    "that",
    "the",
    "this",
    "to",
    "with",
)


class WordCounterConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    top_n: int = Field(default=3, ge=1, le=50, description="most frequent words to report")
    min_length: int = Field(default=1, ge=1, description="shorter words are not ranked")
    stopwords: list[str] = Field(
        default_factory=lambda: list(DEFAULT_STOPWORDS),
        description="words never ranked (case-insensitive)",
    )


class WordCounter(Agent[WordCounterConfig]):
    """Counts words, unique words, sentences and characters; ranks the frequent words."""

    Config = WordCounterConfig
    consumes = (UserRequest,)
    produces = (TextCounted,)

    async def handle(self, ctx: MessageContext) -> None:
        assert isinstance(ctx.payload, UserRequest)
        ctx.send(self.count(ctx.payload.text))

    def count(self, text: str) -> TextCounted:
        words = [w.lower() for w in WORD.findall(text)]
        stop = {s.lower() for s in self.config.stopwords}
        ranked = Counter(w for w in words if w not in stop and len(w) >= self.config.min_length)
        top = sorted(ranked.items(), key=lambda item: (-item[1], item[0]))[: self.config.top_n]
        sentences = len(SENTENCE_END.findall(text)) or (1 if words else 0)
        return TextCounted(
            words=len(words),
            unique_words=len(set(words)),
            sentences=sentences,
            characters=len(text),
            top_words=[WordCount(word=w, count=n) for w, n in top],
        )


class SummarizerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    words_per_minute: int = Field(
        default=200, ge=50, le=2_000, description="reading speed for the reading-time estimate"
    )


class Summarizer(Agent[SummarizerConfig]):
    """Turns the counts into one sentence and replies to the requester."""

    Config = SummarizerConfig
    consumes = (TextCounted,)
    produces = (TextSummary,)

    async def handle(self, ctx: MessageContext) -> None:
        assert isinstance(ctx.payload, TextCounted)
        if ctx.message.reply_to is None:
            raise Reject("the request has no reply stream", code="no_reply_to")
        ctx.reply(self.summarize(ctx.payload))

    def summarize(self, counted: TextCounted) -> TextSummary:
        seconds = math.ceil(counted.words * 60 / self.config.words_per_minute)
        top = ", ".join(f"{w.word} ({w.count})" for w in counted.top_words) or "none"
        summary = (
            f"{counted.words} words ({counted.unique_words} unique), "
            f"{counted.sentences} sentence(s), {counted.characters} characters; "
            f"most frequent: {top}; reading time about {seconds} s"
        )
        return TextSummary(
            summary=summary,
            words=counted.words,
            sentences=counted.sentences,
            top_words=[w.word for w in counted.top_words],
            reading_seconds=seconds,
        )
