"""One exception tree, classified by what the caller should do.

::

    TraderError
    ├── RetryableError          transient: retry with backoff, then give up as Skip
    │   ├── BrokerConnectionError   socket down, 1100 connectivity lost, connect refused
    │   ├── PacingViolationError    IB error 162 / our own limiter refused to wait
    │   └── LlmTransientError       429, 5xx, timeouts from the model endpoint
    ├── SkipError               this item cannot be processed: record why, go on with the next
    │   ├── DataError               unreadable bar file, failed validation, stale data
    │   ├── ContractNotFoundError   IB error 200
    │   ├── OrderRejectedError      IB refused the order (201, 103, ...)
    │   ├── RiskRejectedError       our risk gate said no
    │   ├── MarketClosedError       run outside the instrument's session
    │   └── StepTimeoutError        a step ran past its time limit (the run ends instead of holding a slot)
    ├── InputError              the caller's input is wrong: report every problem, exit 2
    └── StopError               needs a human: stop the run, place nothing
        ├── ConfigurationError      settings inconsistent (e.g. live mode vs paper port)
        └── TradingHaltedError      kill switch on, or max daily loss reached

Vendor exceptions (ib_async, openai, httpx) are mapped to this tree inside their adapter modules.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


class TraderError(Exception):
    """Root of every error the system raises on purpose."""


class RetryableError(TraderError):
    """Transient failure: retry with backoff; usually resolves itself."""


class BrokerConnectionError(RetryableError):
    """The broker connection is down or not yet restored."""


class PacingViolationError(RetryableError):
    """IB refused a request for pacing (error 162) or our limiter could not admit it in time."""


class LlmTransientError(RetryableError):
    """The model endpoint failed in a way that may pass (429, 5xx, timeout)."""


class SkipError(TraderError):
    """This item cannot be processed: record the reason and go on with the next one."""


class DataError(SkipError):
    """Market data unreadable, invalid or stale."""


class ContractNotFoundError(SkipError):
    """IB knows no contract for the request (error 200)."""


class OrderRejectedError(SkipError):
    """The broker rejected an order; ``code`` is IB's error code."""

    def __init__(self, message: str, *, code: int | None = None, order_ref: str | None = None):
        super().__init__(message)
        self.code = code
        self.order_ref = order_ref


class RiskRejectedError(SkipError):
    """Our risk gate refused the order; ``reasons`` names every failed check."""

    def __init__(self, reasons: Sequence[str]):
        super().__init__("; ".join(reasons))
        self.reasons = list(reasons)


class MarketClosedError(SkipError):
    """The instrument's market is closed (or inside IB's daily reset window)."""


class StepTimeoutError(SkipError):
    """A step of the run took longer than its time limit and was abandoned."""


@dataclass(frozen=True)
class Problem:
    """One problem with an input, located by a dotted field path (or a row/line)."""

    location: str
    message: str

    def __str__(self) -> str:
        return f"{self.location}: {self.message}" if self.location else self.message


class InputError(TraderError):
    """The caller's input is wrong. Carries every problem found, not only the first."""

    def __init__(self, source: str, problems: Sequence[Problem] | str):
        if isinstance(problems, str):
            problems = [Problem("", problems)]
        self.source = source
        self.problems = list(problems)
        super().__init__(self.summary())

    def summary(self) -> str:
        if len(self.problems) == 1:
            return f"{self.source}: {self.problems[0]}"
        lines = [f"{self.source}: {len(self.problems)} problems"]
        lines += [f"  - {p}" for p in self.problems]
        return "\n".join(lines)


class StopError(TraderError):
    """Needs human intervention: stop, place nothing."""


class ConfigurationError(StopError):
    """Settings are inconsistent or unsafe."""


class TradingHaltedError(StopError):
    """The kill switch is on or the max daily loss is reached."""
