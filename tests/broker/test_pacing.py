import random

import pytest

from services.broker.pacing import (
    Backoff,
    HistoricalKey,
    HistoricalLimiter,
    ManualClock,
    MessageRateLimiter,
    retry_on_pacing,
)
from services.errors import PacingViolationError


def key(i: int, contract: str = "SPY") -> HistoricalKey:
    return HistoricalKey(contract_key=(contract, "TRADES"), request_key=(contract, i))


async def test_61st_request_in_ten_minutes_waits_for_the_window() -> None:
    clock = ManualClock()
    limiter = HistoricalLimiter(clock=clock)
    sent_at: list[float] = []
    for i in range(61):
        # spread over distinct contracts so only the 60-per-10-min rule binds
        await limiter.acquire(key(i, contract=f"C{i}"))
        sent_at.append(clock.now())
        clock.advance(1.0)
    assert sent_at[59] == 59.0
    # the 61st may only go once the first (t=0) has left the 600 s window
    assert sent_at[60] == pytest.approx(600.0)
    assert limiter.stats.delayed == 1
    assert limiter.stats.waits == [pytest.approx(540.0)]
    # no 10-minute window holds more than 60 requests
    assert all(sum(1 for t in sent_at if s - 600 < t <= s) <= 60 for s in sent_at)


async def test_sixth_request_for_one_contract_within_two_seconds_waits() -> None:
    clock = ManualClock()
    limiter = HistoricalLimiter(clock=clock)
    for i in range(5):
        assert await limiter.acquire(key(i)) == 0.0
    waited = await limiter.acquire(key(5))
    assert waited == pytest.approx(2.0)
    # another contract is not affected
    assert await limiter.acquire(key(0, contract="QQQ")) == 0.0


async def test_identical_request_waits_fifteen_seconds() -> None:
    clock = ManualClock()
    limiter = HistoricalLimiter(clock=clock)
    await limiter.acquire(key(1))
    clock.advance(4.0)
    assert await limiter.acquire(key(1)) == pytest.approx(11.0)


async def test_limiter_refuses_to_wait_beyond_max_wait() -> None:
    clock = ManualClock()
    limiter = HistoricalLimiter(max_requests=2, window_s=600, clock=clock, max_wait_s=10)
    await limiter.acquire(key(1, "A"))
    await limiter.acquire(key(2, "B"))
    with pytest.raises(PacingViolationError):
        await limiter.acquire(key(3, "C"))
    assert clock.now() == 0.0


async def test_message_rate_limiter_keeps_under_rate() -> None:
    clock = ManualClock()
    limiter = MessageRateLimiter(45, clock=clock)
    stamps = []
    for _ in range(100):
        await limiter.acquire()
        stamps.append(clock.now())
    assert all(sum(1 for t in stamps if s - 1.0 < t <= s) <= 45 for s in stamps)
    assert stamps[-1] == pytest.approx(2.0)


def test_backoff_is_bounded_and_jittered() -> None:
    b = Backoff(attempts=5, base_s=1.0, max_s=8.0, jitter=0.2)
    rng = random.Random(7)
    delays = [b.delay(i, rng) for i in range(6)]
    assert 0.8 <= delays[0] <= 1.2
    assert 1.6 <= delays[1] <= 2.4
    assert all(d <= 8.0 for d in delays)
    assert Backoff(jitter=0).delay(3) == 8.0


async def test_retry_on_pacing_retries_then_gives_up() -> None:
    clock = ManualClock()
    calls = 0

    async def flaky() -> str:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise PacingViolationError("162 pacing violation")
        return "ok"

    assert await retry_on_pacing(flaky, backoff=Backoff(attempts=3, jitter=0), clock=clock) == "ok"
    assert clock.slept == [1.0, 2.0]

    async def always() -> str:
        raise PacingViolationError("162 pacing violation")

    with pytest.raises(PacingViolationError):
        await retry_on_pacing(always, backoff=Backoff(attempts=2, jitter=0), clock=clock)
