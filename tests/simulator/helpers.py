"""Helpers for the simulator tests (the log guard, a polling wait, the connect factory type)."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from ib_async import IB

Connect = Callable[..., Awaitable[IB]]
NEVER_ALLOWED = (re.compile(r"Error handling fields"), re.compile(r"^Error for "), re.compile(r"No order found"))


class _Collector(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@dataclass
class LogGuard:
    handler: _Collector
    allowed: list[re.Pattern[str]] = field(default_factory=list)

    def allow(self, pattern: str) -> None:
        self.allowed.append(re.compile(pattern))

    def messages(self) -> list[str]:
        return [r.getMessage() for r in self.handler.records]

    def unexpected(self) -> list[str]:
        bad = []
        for msg in self.messages():
            if any(p.search(msg) for p in NEVER_ALLOWED) or not any(p.search(msg) for p in self.allowed):
                bad.append(msg)
        return bad


async def eventually(predicate: Callable[[], bool], timeout_s: float = 3.0) -> None:
    """Wait until ``predicate()`` is true (polling the loop), or fail."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)
