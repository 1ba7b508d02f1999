from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from simulator.config import default_data_dir
from tests.broker.harness import Harness, MemoryHarness, SocketHarness


class IBLogGuard(logging.Handler):
    """Collects ERROR records from ``ib_async.*``; the test fails on any that it did not expect."""

    def __init__(self) -> None:
        super().__init__(level=logging.ERROR)
        self.records: list[logging.LogRecord] = []
        self.allowed: list[re.Pattern[str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def allow(self, *patterns: str) -> None:
        """Expect ERROR records matching any of ``patterns`` (e.g. ``r"Error 201\\b"``)."""
        self.allowed += [re.compile(p) for p in patterns]

    def unexpected(self) -> list[str]:
        messages = [r.getMessage() for r in self.records]
        return [m for m in messages if not any(p.search(m) for p in self.allowed)]


@pytest.fixture
def ib_log() -> Iterator[IBLogGuard]:
    guard = IBLogGuard()
    logger = logging.getLogger("ib_async")
    logger.addHandler(guard)
    try:
        yield guard
    finally:
        logger.removeHandler(guard)
    bad = guard.unexpected()
    assert not bad, f"unexpected ERROR records from ib_async: {bad}"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return default_data_dir()


HarnessFactory = Callable[..., Awaitable[Harness]]


@pytest.fixture(params=["memory", "socket"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def make_harness(kind: str, ib_log: IBLogGuard, data_dir: Path) -> AsyncIterator[HarnessFactory]:
    """Build a harness of this test's kind; ``participation`` caps fills per bar (None = unlimited)."""
    made: list[Harness] = []

    async def make(participation: Decimal | None = None) -> Harness:
        h: MemoryHarness | SocketHarness
        h = SocketHarness(data_dir, participation) if kind == "socket" else MemoryHarness(data_dir, participation)
        made.append(h)
        await h.start()
        return h

    try:
        yield make
    finally:
        for h in made:
            await h.aclose()


@pytest.fixture
async def harness(make_harness: HarnessFactory) -> Harness:
    return await make_harness()
