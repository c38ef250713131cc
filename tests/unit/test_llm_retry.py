"""The default retry of LLM calls: transient errors only, Retry-After, deadline."""

from __future__ import annotations

import time

import pytest

from agent_runtime.errors import LLMOutputError, LLMRateLimited, LLMRequestError, LLMUnavailable
from agent_runtime.llm.retry import DefaultRetry, llm_deadline, remaining

pytestmark = pytest.mark.anyio

FAST = DefaultRetry(attempts=3, backoff=0.001, backoff_max=0.01, jitter=0.0)


class Flaky:
    """Raises the scripted errors in order, then returns "ok"; records call times."""

    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.calls: list[float] = []

    async def __call__(self) -> str:
        self.calls.append(time.monotonic())
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


async def test_transient_errors_are_retried_until_success() -> None:
    call = Flaky(LLMUnavailable("503"), LLMRateLimited("429"))
    assert await FAST.run(call) == "ok"
    assert len(call.calls) == 3


async def test_gives_up_after_attempts_with_the_last_error() -> None:
    call = Flaky(*[LLMUnavailable(f"down {n}") for n in range(5)])
    with pytest.raises(LLMUnavailable, match="down 2"):
        await FAST.run(call)
    assert len(call.calls) == 3


@pytest.mark.parametrize(
    "error", [LLMOutputError("bad json"), LLMRequestError("400"), ValueError("bug")]
)
async def test_other_errors_are_not_retried(error: Exception) -> None:
    call = Flaky(error)
    with pytest.raises(type(error)):
        await FAST.run(call)
    assert len(call.calls) == 1


async def test_waits_at_least_retry_after() -> None:
    call = Flaky(LLMRateLimited("429", retry_after=0.2))
    assert await FAST.run(call) == "ok"
    assert call.calls[1] - call.calls[0] >= 0.2


async def test_retry_after_beyond_the_cap_is_raised_at_once() -> None:
    call = Flaky(LLMRateLimited("429", retry_after=60))
    with pytest.raises(LLMRateLimited):
        await DefaultRetry(max_retry_after=5).run(call)
    assert len(call.calls) == 1


async def test_never_sleeps_past_the_deadline() -> None:
    call = Flaky(LLMUnavailable("503"))
    with llm_deadline(0.05), pytest.raises(LLMUnavailable):
        await DefaultRetry(backoff=1.0, jitter=0.0).run(call)
    assert len(call.calls) == 1


def test_nested_deadlines_keep_the_earlier_one() -> None:
    assert remaining() is None
    with llm_deadline(10):
        with llm_deadline(100):
            left = remaining()
            assert left is not None and left <= 10
        with llm_deadline(1):
            left = remaining()
            assert left is not None and left <= 1
    assert remaining() is None
