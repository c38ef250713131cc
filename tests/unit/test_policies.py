"""Policy logic without a server: config validation, error families, the retry/timeout runner,
deadline handling and the fates of what the middleware reports (breakers: tests/integration)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import anyio
import pytest
import structlog
from pydantic import ValidationError

from agent_runtime.errors import (
    BreakerOpen,
    ConfigError,
    DeadlineExceeded,
    LLMRateLimited,
    LLMRequestError,
    LLMUnavailable,
    Reject,
    Retry,
)
from agent_runtime.policies import (
    CallStats,
    DeliveryScope,
    Policy,
    PolicySet,
    PolicySpec,
    delivery_scope,
    error_matcher,
    is_transient,
)
from agent_runtime.testing import AgentHarness
from agent_runtime.worker.delivery import HandlerFailed, PolicyMiddleware
from agent_runtime.worker.fate import Fate, Rules, fate_of
from protocols.core import UserRequest
from protocols.envelope import utcnow
from tests.fixtures.agents import Echo

pytestmark = pytest.mark.anyio


class Flaky:
    """Fails ``failures`` times with ``error``, then returns ``value``."""

    def __init__(self, failures: int, error: Exception, value: str = "ok") -> None:
        self.failures = failures
        self.error = error
        self.value = value
        self.calls = 0

    async def __call__(self, suffix: str = "") -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error
        return self.value + suffix


def policy(**spec: Any) -> Policy:
    parsed = PolicySpec.model_validate(spec)
    return Policy("test", parsed, retryable=error_matcher(parsed.retry.retry_on))


FAST = {"backoff": 0, "jitter": 0}


# ------------------------------------------------------------------ config
def test_unknown_policy_keys_are_rejected() -> None:
    with pytest.raises(ValidationError, match="retyr"):
        PolicySet.model_validate({"retyr": {}})
    with pytest.raises(ValidationError, match="fail_maxx"):
        PolicySet.model_validate({"calls": {"tool.http": {"breaker": {"fail_maxx": 3}}}})
    with pytest.raises(ValidationError, match="neither an error family"):
        PolicySet.model_validate({"retry": {"retry_on": ["flaky stuff"]}})


def test_unlisted_calls_get_a_breaker_named_after_the_call() -> None:
    policies = PolicySet.model_validate({"calls": {"tool.http": {"retry": {"attempts": 5}}}})
    assert policies.for_call("tool.http").retry.attempts == 5
    assert policies.for_call("tool.http").breaker is None
    default = policies.for_call("llm.anthropic")
    assert default.breaker is not None and default.breaker.name is None
    assert policies.breaker is None  # a handler has no breaker unless configured
    assert policies.retry.attempts == 1  # ...and no in-process retries: the worker redelivers


def test_dotted_error_paths_obey_the_allow_list() -> None:
    matches = error_matcher(["agent_runtime.errors:LLMRequestError"])
    assert matches(LLMRequestError("bad request"))
    assert not matches(ValueError("x"))
    with pytest.raises(ConfigError, match="allowed"):
        error_matcher(["json:JSONDecodeError"])
    assert error_matcher(["json:JSONDecodeError"], ["json"])(ValueError("x")) is False


# ------------------------------------------------------------------ error families
class HTTPStatusError(Exception):
    def __init__(self, status_code: int) -> None:
        super().__init__(status_code)
        self.status_code = status_code


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (TimeoutError(), True),
        (ConnectionResetError(), True),
        (LLMUnavailable("down"), True),
        (LLMRateLimited("429", retry_after=1), True),
        (LLMRequestError("400"), False),
        (HTTPStatusError(503), True),
        (HTTPStatusError(429), True),
        (HTTPStatusError(404), False),
        (ValueError("bad input"), False),
    ],
)
def test_transient_family(error: Exception, transient: bool) -> None:
    assert is_transient(error) is transient


def test_control_signals_and_refusals_are_never_retried() -> None:
    anything = error_matcher(["any"])
    assert anything(ValueError())
    for signal in (Retry(), Reject("no"), BreakerOpen("b", 1.0), DeadlineExceeded("late")):
        assert not anything(signal)


# ------------------------------------------------------------------ runner
async def test_fails_twice_then_succeeds_with_attempts_counted() -> None:
    flaky = Flaky(2, ConnectionError("reset"))
    stats = CallStats()
    assert await policy(retry={"attempts": 3, **FAST}).run(flaky, "!", stats=stats) == "ok!"
    assert (stats.attempts, stats.failures, flaky.calls) == (3, 2, 3)


async def test_gives_up_after_attempts_and_raises_the_last_error() -> None:
    flaky = Flaky(5, LLMUnavailable("down"))
    stats = CallStats()
    with pytest.raises(LLMUnavailable):
        await policy(retry={"attempts": 3, **FAST}).run(flaky, stats=stats)
    assert stats.attempts == 3 and flaky.calls == 3


async def test_non_retryable_errors_fail_at_once() -> None:
    flaky = Flaky(1, LLMRequestError("400 bad request"))
    with pytest.raises(LLMRequestError):
        await policy(retry={"attempts": 5, **FAST}).run(flaky)
    assert flaky.calls == 1


async def test_an_inner_policy_s_exhausted_error_is_not_retried_again() -> None:
    inner_flaky = Flaky(100, ConnectionError("down"))
    inner = policy(retry={"attempts": 3, **FAST})
    outer = policy(retry={"attempts": 3, **FAST})
    with pytest.raises(ConnectionError):
        await outer.run(inner.run, inner_flaky)
    assert inner_flaky.calls == 3  # not 3 x 3


async def test_attempt_timeout_cancels_and_retries() -> None:
    finished = []

    async def hangs() -> None:
        await anyio.sleep(30)
        finished.append(True)

    stats = CallStats()
    with pytest.raises(TimeoutError):
        await policy(retry={"attempts": 2, **FAST}, timeout={"attempt": 0.05}).run(
            hangs, stats=stats
        )
    assert stats.attempts == 2 and finished == []


async def test_retry_after_is_honoured_and_a_long_one_is_left_to_the_worker() -> None:
    waits: list[float] = []
    p = policy(retry={"attempts": 3, **FAST, "backoff_max": 5})
    p_wait = p._wait

    def spy(state: Any) -> float:
        waits.append(p_wait(state))
        return 0.0

    p._wait = spy  # type: ignore[method-assign]
    assert await p.run(Flaky(1, LLMRateLimited("429", retry_after=2.5))) == "ok"
    assert waits == [2.5]
    too_long = Flaky(1, LLMRateLimited("429", retry_after=60))
    with pytest.raises(LLMRateLimited):
        await p.run(too_long)
    assert too_long.calls == 1


async def test_no_sleep_or_attempt_past_the_deadline() -> None:
    flaky = Flaky(5, ConnectionError("down"))
    p = policy(retry={"attempts": 5, "backoff": 10, "jitter": 0, "backoff_max": 10})
    with (
        delivery_scope(DeliveryScope(deadline=anyio.current_time() + 1.0)),
        pytest.raises(ConnectionError),
    ):
        await p.run(flaky)
    assert flaky.calls == 1  # a 10 s backoff would end past the 1 s deadline
    with (
        delivery_scope(DeliveryScope(deadline=anyio.current_time() - 1)),
        pytest.raises(DeadlineExceeded),
    ):
        await p.run(flaky)
    assert flaky.calls == 1


async def test_the_deadline_cuts_a_hanging_call() -> None:
    async def hangs() -> None:
        await anyio.sleep(30)

    with (
        delivery_scope(DeliveryScope(deadline=anyio.current_time() + 0.05)),
        pytest.raises(DeadlineExceeded),
    ):
        await policy(timeout={"total": 60}).run(hangs)


async def test_total_timeout_covers_every_attempt() -> None:
    async def hangs() -> None:
        await anyio.sleep(30)

    stats = CallStats()
    with pytest.raises(TimeoutError):
        await policy(retry={"attempts": 50, **FAST}, timeout={"attempt": 0.02, "total": 0.2}).run(
            hangs, stats=stats
        )
    assert 1 < stats.attempts < 50


# ------------------------------------------------------------------ middleware
class FakeClock:
    """A Redis clock stand-in: deadlines relative to the real monotonic clock."""

    async def deadline_of(self, message: Any) -> float | None:
        if message.deadline is None:
            return None
        return anyio.current_time() + (message.deadline - utcnow()).total_seconds()


class Ctx:
    """The part of MessageContext the middleware uses."""

    def __init__(self, deadline_in: float | None = None) -> None:
        deadline = None if deadline_in is None else utcnow() + timedelta(seconds=deadline_in)
        self.message = AgentHarness(Echo).message_for(UserRequest(text="x"), deadline=deadline)
        self.cleared = 0
        self.log = structlog.get_logger()

    def clear_outputs(self) -> None:
        self.cleared += 1


RULES = Rules("echo", max_deliveries=5)


def middleware(**spec: Any) -> PolicyMiddleware:
    return PolicyMiddleware(policy(**spec), FakeClock())  # type: ignore[arg-type]


async def test_middleware_retries_the_handler_with_fresh_outputs() -> None:
    ctx = Ctx()
    flaky = Flaky(2, ConnectionError("down"))
    await middleware(retry={"attempts": 3, **FAST}).handle(ctx, lambda c: flaky())  # type: ignore[arg-type]
    assert flaky.calls == 3 and ctx.cleared == 3


async def fate_after(mw: PolicyMiddleware, ctx: Ctx, handler: Any) -> Fate:
    """Run ``handler`` through the middleware; the fate the worker then decides from its
    report (the middleware decides no fates itself)."""
    try:
        await mw.handle(ctx, handler)  # type: ignore[arg-type]
    except HandlerFailed as report:
        return fate_of(report.error, 1, RULES, left=report.left, failed=report.failed)
    except (Reject, Retry) as signal:
        return fate_of(signal, 1, RULES)
    raise AssertionError("the handler succeeded")


async def test_middleware_expires_late_messages() -> None:
    async def never(ctx: Any) -> None:
        raise AssertionError("must not run")

    fate = await fate_after(middleware(), Ctx(deadline_in=-1), never)
    assert fate.action == "dead" and fate.reason == "expired"

    async def hangs(ctx: Any) -> None:
        await anyio.sleep(30)

    fate = await fate_after(middleware(), Ctx(deadline_in=0.1), hangs)
    assert fate.action == "dead" and fate.reason == "expired"


async def test_a_deadline_beyond_the_handler_timeout_gets_no_cancel_scope(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The worker's watchdog cuts every call at handler_timeout: a deadline further away needs
    no scope of its own (nested policies still see it); a nearer one still cuts the call."""
    from agent_runtime.policies.clock import current_scope
    from agent_runtime.worker import delivery

    plain = policy(retry={"attempts": 1})  # the lean path: only the deadline around the call
    cut = PolicyMiddleware(plain, FakeClock(), handler_timeout=1.0)  # type: ignore[arg-type]
    seen: list[float | None] = []

    async def notes_the_deadline(ctx: Any) -> None:
        scope = current_scope()
        seen.append(None if scope is None else scope.remaining())

    real_within = delivery._within
    scoped: list[int] = []

    async def counting_within(*args: Any) -> None:
        scoped.append(1)
        await real_within(*args)

    monkeypatch.setattr(delivery, "_within", counting_within)
    await cut.handle(Ctx(deadline_in=30), notes_the_deadline)  # type: ignore[arg-type]
    assert scoped == [] and seen[0] is not None and 20 < seen[0] <= 30

    async def hangs(ctx: Any) -> None:
        await anyio.sleep(30)

    fate = await fate_after(cut, Ctx(deadline_in=0.1), hangs)
    assert scoped == [1] and fate.action == "dead" and fate.reason == "expired"


async def test_open_breaker_delays_without_counting_unless_the_work_failed() -> None:
    async def refused(ctx: Any) -> None:
        raise BreakerOpen("dep", 2.0)

    fate = await fate_after(middleware(), Ctx(), refused)
    assert fate.action == "retry" and fate.counted is False
    assert 2.0 <= fate.delay <= fate.delay + fate.jitter <= 2.5

    calls = []

    async def fails_then_refused(ctx: Any) -> None:
        calls.append(1)
        if len(calls) == 1:
            raise ConnectionError("down")
        raise BreakerOpen("dep", 2.0)

    fate = await fate_after(middleware(retry={"attempts": 3, **FAST}), Ctx(), fails_then_refused)
    assert fate.action == "retry" and fate.counted is True  # it really failed once in this delivery


async def test_breaker_open_past_the_deadline_expires_at_once() -> None:
    async def refused(ctx: Any) -> None:
        raise BreakerOpen("dep", 30.0)

    fate = await fate_after(middleware(), Ctx(deadline_in=5), refused)
    assert fate.action == "dead" and fate.reason == "expired"


async def test_rate_limit_beyond_backoff_max_becomes_a_delayed_redelivery() -> None:
    async def limited(ctx: Any) -> None:
        raise LLMRateLimited("429", retry_after=45)

    fate = await fate_after(middleware(), Ctx(), limited)
    assert fate.action == "retry" and fate.delay == 45 and fate.counted is True


def test_validate_reports_error_paths_outside_the_allow_list(tmp_path: Any) -> None:
    from agent_runtime.config.pipeline import Pipeline

    path = tmp_path / "pipeline.yaml"
    path.write_text(
        "allowed_modules: [tests.fixtures]\n"
        "agents:\n"
        "  echo:\n"
        "    class: tests.fixtures.agents:Echo\n"
        "    policies:\n"
        "      calls:\n"
        "        tool.x: {retry: {retry_on: ['json:JSONDecodeError']}}\n"
        "  sink:\n"
        "    class: tests.fixtures.agents:Sink\n"
    )
    with pytest.raises(ConfigError, match=r"agents\.echo\.policies\.calls\.tool\.x\.retry"):
        Pipeline.load(path)
