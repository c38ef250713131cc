"""The reply reader's reconnect backoff: jittered, doubling to a cap, reset after a success."""

from __future__ import annotations

from agent_runtime.transport.replies import Backoff


def test_delays_double_to_the_cap_within_their_jitter() -> None:
    low, high = Backoff(base=0.05, cap=1.0, rng=lambda: 0.0), Backoff(0.05, 1.0, lambda: 1.0)
    lows = [low.next() for _ in range(8)]
    highs = [high.next() for _ in range(8)]
    assert highs == [0.05, 0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0]
    assert lows == [h / 2 for h in highs]


def test_reset_starts_again_from_the_base() -> None:
    backoff = Backoff(base=0.05, cap=1.0, rng=lambda: 1.0)
    for _ in range(10):
        backoff.next()
    backoff.reset()
    assert backoff.next() == 0.05
