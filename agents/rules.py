"""The offline, deterministic ``rules`` provider: no network, no key, no cost.

It knows the default pipeline's payloads, so it lives with the default pipeline's agents (the
library never imports them); the built-in agents register it under the name ``rules``
(:data:`agents.common.PROVIDERS`).

It fills two structured-output schemas:

* :class:`~protocols.pipeline.ParsedIntent` from a request text, by the small grammar in
  docs/rules-grammar.md (clauses joined by ``and`` = parallel, ``then`` = after the previous
  group; double or single quotes protect a separator word inside a clause);
* :class:`~protocols.pipeline.PlanDraft` from the JSON of a ParsedIntent (one step per action).

Its limits are the request's: a text of up to ``MAX_REQUEST_TEXT`` characters (the limit of
``UserRequest.text``) and at most ``MAX_STEPS`` clauses; a clause's target may be as long as
the text. Same input, same output, every time. Anything outside the grammar raises
:class:`UnrecognizedRequest` (a request error: retrying cannot help).
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ValidationError

from agent_runtime.errors import LLMRequestError
from agent_runtime.llm.base import Completion, ModelT, Usage
from protocols.core import MAX_REQUEST_TEXT
from protocols.pipeline import MAX_STEPS, DraftStep, IntentAction, ParsedIntent, PlanDraft

MODEL = "rules-v1"

_SEPARATOR = re.compile(
    r"(?P<then>\s+and\s+then\s+|\s*[,;]\s*then\s+|\s+then\s+|\s*;\s*)"
    r"|(?P<and>\s+and\s+|\s*,\s+)",
    re.IGNORECASE,
)

_URL = r"(?P<target>https?://\S+)"
_CLAUSES: list[tuple[str, re.Pattern[str]]] = [
    (
        "count_words",
        re.compile(
            r"^(?:count\s+(?:the\s+)?words\s+(?:in|of)|wc)\s+(?P<target>.+)$", re.IGNORECASE
        ),
    ),
    (
        "list_files",
        re.compile(
            r"^(?:list|ls)\s+(?:(?:all\s+)?(?:the\s+)?files\s+(?:in|of|under)\s+|"
            r"(?:the\s+)?(?:directory|folder|dir)\s+)?(?P<target>[^\s]+/?)$",
            re.IGNORECASE,
        ),
    ),
    (
        "read_file",
        re.compile(
            r"^(?:read|cat|show|print)\s+(?:the\s+)?(?:file\s+)?(?P<target>.+)$", re.IGNORECASE
        ),
    ),
    (
        "run_command",
        re.compile(r"^(?:run|execute|exec)\s+(?:the\s+command\s+)?(?P<target>.+)$", re.IGNORECASE),
    ),
    (
        "fetch_url",
        re.compile(rf"^(?:fetch|get|download|curl)\s+(?:the\s+url\s+)?{_URL}$", re.IGNORECASE),
    ),
    (
        "deploy",
        re.compile(
            r"^deploy\s+(?P<target>[A-Za-z0-9][\w.\-]*)(?:\s+to\s+(?P<environment>[\w\-]+))?"
            r"(?:\s+(?:version|at)\s+(?P<version>[\w.\-]+))?$",
            re.IGNORECASE,
        ),
    ),
]


class UnrecognizedRequest(LLMRequestError):
    """The text is outside the rules grammar (see docs/rules-grammar.md)."""


class RulesProvider:
    """Implements :class:`agent_runtime.llm.base.LLMProvider` without a model."""

    name = "rules"
    #: Free and deterministic: built without options, never cached, never under a policy.
    offline = True

    def __init__(self, *, default_environment: str = "staging") -> None:
        self.default_environment = default_environment
        self._fillers: dict[type[BaseModel], Callable[[str], BaseModel]] = {
            ParsedIntent: self.parse_intent,
            PlanDraft: self.draft_plan,
        }

    async def complete(
        self, *, system: str, prompt: str, schema: type[ModelT], max_tokens: int = 1024
    ) -> Completion[ModelT]:
        filler = next((f for model, f in self._fillers.items() if issubclass(schema, model)), None)
        if filler is None:
            raise LLMRequestError(
                f"the rules provider cannot produce {schema.__name__}; it "
                "fills ParsedIntent and PlanDraft"
            )
        value = schema.model_validate(filler(prompt).model_dump())
        return Completion(value, Usage(provider=self.name, model=MODEL))

    # ------------------------------------------------------------------ intents
    def parse_intent(self, text: str) -> ParsedIntent:
        if len(text) > MAX_REQUEST_TEXT:
            raise UnrecognizedRequest(
                f"the request has {len(text):,} characters; the limit is {MAX_REQUEST_TEXT:,}"
            )
        groups = split_request(text)
        clauses = sum(len(group) for group in groups)
        if clauses > MAX_STEPS:
            raise UnrecognizedRequest(
                f"the request has {clauses} clauses; the limit is {MAX_STEPS}"
            )
        actions: list[IntentAction] = []
        previous: list[int] = []
        for group in groups:
            current: list[int] = []
            for clause in group:
                actions.append(self.parse_clause(clause, after=previous))
                current.append(len(actions) - 1)
            previous = current
        try:
            return ParsedIntent(actions=actions, confidence=1.0)
        except ValidationError as exc:
            raise UnrecognizedRequest(f"the request does not fit an intent: {exc}") from exc

    def parse_clause(self, clause: str, *, after: list[int]) -> IntentAction:
        text = clause.strip().rstrip(".")
        for action, pattern in _CLAUSES:
            match = pattern.match(text)
            if match is None:
                continue
            target = _unquote(match.group("target").strip())
            parameters = {
                k: v for k, v in match.groupdict().items() if k != "target" and v is not None
            }
            if action == "deploy":
                parameters.setdefault("environment", self.default_environment)
                parameters.setdefault("version", "latest")
            return IntentAction(
                action=action, target=target, parameters=parameters, after=list(after)
            )
        raise UnrecognizedRequest(
            f"cannot understand {clause.strip()!r}; the rules provider "
            "knows: list files in DIR, read FILE, run COMMAND, fetch URL, "
            "deploy SERVICE [to ENV] [version V], count words in FILE"
        )

    # ------------------------------------------------------------------ plans
    def draft_plan(self, prompt: str) -> PlanDraft:
        try:
            intent = ParsedIntent.model_validate_json(prompt)
        except ValidationError as exc:
            raise LLMRequestError(
                "the rules provider plans from the JSON of a ParsedIntent (the planner's prompt)"
            ) from exc
        steps = [
            DraftStep(
                id=f"s{i + 1}",
                depends_on=[f"s{d + 1}" for d in a.after],
                description=f"{a.action.replace('_', ' ')} {a.target}"[:500],
                **_tool_for(a),
            )
            for i, a in enumerate(intent.actions)
        ]
        return PlanDraft(steps=steps)


def _tool_for(action: IntentAction) -> dict[str, Any]:
    target = action.target
    if action.action == "list_files":
        return {"tool": "file_list", "args": {"path": target}}
    if action.action == "read_file":
        return {"tool": "file_read", "args": {"path": target}}
    if action.action == "count_words":
        return {"tool": "python", "args": {"function": "word_count", "kwargs": {"path": target}}}
    if action.action == "fetch_url":
        return {"tool": "http", "args": {"method": "GET", "url": target}}
    if action.action == "deploy":
        return {"tool": "deploy", "args": {"service": target, **action.parameters}}
    try:
        argv = shlex.split(target)
    except ValueError as exc:
        raise UnrecognizedRequest(f"cannot split command {target!r}: {exc}") from exc
    return {"tool": "shell", "args": {"argv": argv}}


def split_request(text: str) -> list[list[str]]:
    """``"a and b then c"`` -> ``[["a", "b"], ["c"]]``; separators inside quotes are kept."""
    masked = _mask_quotes(text)
    groups: list[list[str]] = [[]]
    start = 0
    for match in _SEPARATOR.finditer(masked):
        groups[-1].append(text[start : match.start()])
        if match.group("then"):
            groups.append([])
        start = match.end()
    groups[-1].append(text[start:])
    cleaned = [[c.strip() for c in group if c.strip()] for group in groups]
    if not any(cleaned):
        raise UnrecognizedRequest("the request is empty")
    return [group for group in cleaned if group]


def _mask_quotes(text: str) -> str:
    """``text`` with every character inside quotes replaced by ``x`` (same length)."""
    out: list[str] = []
    quote: str | None = None
    for char in text:
        if quote is None and char in "\"'":
            quote = char
        elif char == quote:
            quote = None
        elif quote is not None:
            out.append("x")
            continue
        out.append(char)
    return "".join(out)


def _unquote(target: str) -> str:
    if (
        len(target) >= 2
        and target[0] == target[-1]
        and target[0] in "\"'"
        and target[0] not in target[1:-1]
    ):
        return target[1:-1]
    return target


def intent_prompt(intent: ParsedIntent) -> str:
    """The planner's prompt: the intent as JSON (what :meth:`RulesProvider.draft_plan` reads)."""
    return json.dumps(intent.model_dump(mode="json"), sort_keys=True)
