"""IB's historical-data pacing rules, on an injectable time source.

A request is a violation (error 162) if
* an identical request (same contract, end, duration, bar size, whatToShow, useRTH, formatDate) was served
  within the last 15 s;
* 6 or more requests for the same contract and whatToShow would fall within 2 s (the 6th is refused);
* more than 60 requests would fall within 10 minutes (the 61st is refused).

Only served requests count towards the windows; a refused request does not extend them.
The time source is any zero-argument callable returning seconds (``time.monotonic`` by default); tests pass a
:class:`ManualTime` and move it forwards to simulate ten minutes without waiting.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Final

IDENTICAL_WINDOW_S: Final = 15.0
BURST_WINDOW_S: Final = 2.0
BURST_LIMIT: Final = 5  # at most 5 per contract within 2 s; the 6th violates
TEN_MINUTES_S: Final = 600.0
TEN_MINUTE_LIMIT: Final = 60

TimeSource = Callable[[], float]


class ManualTime:
    """A settable time source for tests: ``t = ManualTime(); t.advance(600)``."""

    def __init__(self, start: float = 1_000.0) -> None:
        self.value = start

    def __call__(self) -> float:
        return self.value

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("time only moves forwards")
        self.value += seconds


@dataclass(frozen=True)
class PacingVerdict:
    ok: bool
    reason: str = ""


class HistoricalPacer:
    """Decides whether a historical request may be served now."""

    def __init__(self, time_source: TimeSource | None = None) -> None:
        self.time_source: TimeSource = time_source or time.monotonic
        self._all: deque[float] = deque()
        self._by_contract: dict[Hashable, deque[float]] = {}
        self._identical: dict[Hashable, float] = {}

    def check(self, identical_key: Hashable, contract_key: Hashable) -> PacingVerdict:
        """Return the verdict and, when allowed, record the request."""
        now = self.time_source()
        while self._all and now - self._all[0] >= TEN_MINUTES_S:
            self._all.popleft()
        burst = self._by_contract.setdefault(contract_key, deque())
        while burst and now - burst[0] >= BURST_WINDOW_S:
            burst.popleft()
        last = self._identical.get(identical_key)
        if last is not None and now - last < IDENTICAL_WINDOW_S:
            return PacingVerdict(False, "identical request within 15 seconds")
        if len(burst) >= BURST_LIMIT:
            return PacingVerdict(False, "6 or more requests for the same contract within 2 seconds")
        if len(self._all) >= TEN_MINUTE_LIMIT:
            return PacingVerdict(False, "more than 60 requests within 10 minutes")
        self._all.append(now)
        burst.append(now)
        self._identical[identical_key] = now
        return PacingVerdict(True)
