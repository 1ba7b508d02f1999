"""Client-side pacing for IB: a message-rate limiter, a historical-request limiter and bounded backoff.

IB's rules (docs/tws-protocol.md §3.1): under 50 messages/s client -> TWS; for historical data no identical
request within 15 s, at most 5 requests per contract + exchange + tick type in 2 s (the 6th is a violation) and
at most 60 in any 10 minutes. A request that would break a rule WAITS here instead of being sent to earn a 162.
Time comes from an injectable :class:`Clock` so tests run simulated minutes in milliseconds.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from services.errors import PacingViolationError

T = TypeVar("T")


class Clock(Protocol):
    """Monotonic seconds and a sleep that advances them."""

    def now(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """Real time: ``time.monotonic`` and ``asyncio.sleep``."""

    def now(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


class ManualClock:
    """Simulated time for tests: ``sleep`` advances the clock at once (and yields to the loop)."""

    def __init__(self, start: float = 0.0) -> None:
        self._now = start
        self.slept: list[float] = []

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        self._now += seconds

    async def sleep(self, seconds: float) -> None:
        seconds = max(0.0, seconds)
        self.slept.append(seconds)
        self._now += seconds
        await asyncio.sleep(0)


class MessageRateLimiter:
    """Sliding one-second window admitting at most ``max_per_s`` messages."""

    def __init__(self, max_per_s: int = 45, *, clock: Clock | None = None, window_s: float = 1.0) -> None:
        if max_per_s < 1:
            raise ValueError("max_per_s must be >= 1")
        self.max_per_s = max_per_s
        self.window_s = window_s
        self.clock: Clock = clock or SystemClock()
        self._sent: deque[float] = deque()
        self._lock = asyncio.Lock()
        self.total_wait_s = 0.0

    async def acquire(self, n: int = 1) -> float:
        """Wait until ``n`` more messages fit in the window; return the seconds waited."""
        waited = 0.0
        async with self._lock:
            for _ in range(n):
                while True:
                    now = self.clock.now()
                    while self._sent and self._sent[0] <= now - self.window_s:
                        self._sent.popleft()
                    if len(self._sent) < self.max_per_s:
                        self._sent.append(now)
                        break
                    delay = self._sent[0] + self.window_s - now
                    waited += delay
                    await self.clock.sleep(delay)
        self.total_wait_s += waited
        return waited


@dataclass(frozen=True)
class HistoricalKey:
    """Identity of a historical request: ``contract_key`` for the per-contract rule, ``request_key`` for dedup."""

    contract_key: Hashable
    request_key: Hashable


@dataclass
class HistoricalLimiterStats:
    admitted: int = 0
    delayed: int = 0
    total_wait_s: float = 0.0
    waits: list[float] = field(default_factory=list)


class HistoricalLimiter:
    """IB historical pacing: ``max_requests`` per ``window_s``, per-contract burst limit and identical-request gap.

    ``acquire`` waits (on the injected clock) until the request may be sent, then records it. When the wait would
    exceed ``max_wait_s`` it raises ``PacingViolationError`` instead of waiting.
    """

    def __init__(
        self,
        max_requests: int = 60,
        window_s: float = 600.0,
        *,
        per_contract_max: int = 5,
        per_contract_window_s: float = 2.0,
        identical_gap_s: float = 15.0,
        max_wait_s: float | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.max_requests = max_requests
        self.window_s = window_s
        self.per_contract_max = per_contract_max
        self.per_contract_window_s = per_contract_window_s
        self.identical_gap_s = identical_gap_s
        self.max_wait_s = max_wait_s
        self.clock: Clock = clock or SystemClock()
        self.stats = HistoricalLimiterStats()
        self._sent: deque[float] = deque()
        self._per_contract: dict[Hashable, deque[float]] = {}
        self._last_identical: dict[Hashable, float] = {}
        self._lock = asyncio.Lock()

    def delay_for(self, key: HistoricalKey) -> float:
        """Return how long ``key`` must wait from now (0 when it may go at once)."""
        now = self.clock.now()
        self._expire(now)
        delay = 0.0
        if len(self._sent) >= self.max_requests:
            delay = max(delay, self._sent[len(self._sent) - self.max_requests] + self.window_s - now)
        burst = self._per_contract.get(key.contract_key)
        if burst is not None and len(burst) >= self.per_contract_max:
            delay = max(delay, burst[len(burst) - self.per_contract_max] + self.per_contract_window_s - now)
        last = self._last_identical.get(key.request_key)
        if last is not None:
            delay = max(delay, last + self.identical_gap_s - now)
        return max(0.0, delay)

    async def acquire(self, key: HistoricalKey) -> float:
        """Wait until ``key`` may be sent, record it, and return the seconds waited."""
        waited = 0.0
        async with self._lock:
            while (delay := self.delay_for(key)) > 0:
                if self.max_wait_s is not None and waited + delay > self.max_wait_s:
                    raise PacingViolationError(
                        f"historical request would wait {waited + delay:.1f}s (limit {self.max_wait_s:.1f}s)"
                    )
                waited += delay
                await self.clock.sleep(delay)
            now = self.clock.now()
            self._sent.append(now)
            self._per_contract.setdefault(key.contract_key, deque()).append(now)
            self._last_identical[key.request_key] = now
        self.stats.admitted += 1
        if waited > 0:
            self.stats.delayed += 1
            self.stats.total_wait_s += waited
            self.stats.waits.append(waited)
        return waited

    def _expire(self, now: float) -> None:
        while self._sent and self._sent[0] <= now - self.window_s:
            self._sent.popleft()
        for ck in list(self._per_contract):
            burst = self._per_contract[ck]
            while burst and burst[0] <= now - self.per_contract_window_s:
                burst.popleft()
            if not burst:
                del self._per_contract[ck]
        for rk in [rk for rk, t in self._last_identical.items() if t <= now - self.identical_gap_s]:
            del self._last_identical[rk]


@dataclass(frozen=True)
class Backoff:
    """Bounded exponential backoff with full jitter: attempt ``i`` waits ``uniform(base*2**i*(1-jitter), ...)``."""

    attempts: int = 4
    base_s: float = 1.0
    max_s: float = 30.0
    jitter: float = 0.2

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Return the wait before retry number ``attempt`` (0-based), capped at ``max_s``."""
        raw: float = min(self.max_s, self.base_s * (2.0 ** min(attempt, 64)))  # unbounded attempts: no overflow
        if self.jitter <= 0:
            return raw
        r = (rng or random).uniform(1.0 - self.jitter, 1.0 + self.jitter)
        return min(self.max_s, raw * r)


async def retry_on_pacing(
    call: Callable[[], Awaitable[T]],
    *,
    backoff: Backoff,
    clock: Clock,
    rng: random.Random | None = None,
    on_retry: Callable[[int, float, PacingViolationError], None] | None = None,
) -> T:
    """Run ``call``; on ``PacingViolationError`` wait per ``backoff`` and retry, at most ``backoff.attempts`` times."""
    attempt = 0
    while True:
        try:
            return await call()
        except PacingViolationError as exc:
            if attempt >= backoff.attempts:
                raise
            delay = backoff.delay(attempt, rng)
            if on_retry is not None:
                on_retry(attempt, delay, exc)
            attempt += 1
            await clock.sleep(delay)
