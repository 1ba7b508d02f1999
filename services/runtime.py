"""The composition root: settings, the database URL, the broker session, the LLM call store of a process (and the
bars it validated before).

Clients are never task arguments (Prefect would try to hash them into cache keys and store them as
parameters). A worker process builds them once, lazily, from settings; tests and the demo install
their own with :func:`use_runtime` (for instance a broker connected to the TWS simulator).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from services.broker.loop_owner import SyncBroker
from services.broker.port import BrokerPort
from services.broker.types import LinkStatus
from services.llm.store import DbLlmCallStore, LlmCallStore
from services.settings import Settings, load_settings

if TYPE_CHECKING:
    from services.bars.validation import ValidatedHistory

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    """What a flow run needs besides its parameters."""

    settings: Settings
    broker_factory: Callable[[], BrokerPort] | None = None  # called on the broker's own loop
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))  # the market's "now"
    _broker: SyncBroker | None = field(default=None, repr=False)
    _llm_store: LlmCallStore | None = field(default=None, repr=False)
    _validated: ValidatedHistory | None = field(default=None, repr=False)
    _validated_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)  # not the broker's
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def database_url(self) -> str:
        return self.settings.database_url()

    def runs_dir(self) -> Path:
        return self.settings.runs_dir()

    def broker(self) -> SyncBroker:
        """The broker session, built and connected on first use and REBUILT when it cannot heal by itself.

        A session that dropped reconnects in the background (``IBBroker``: unbounded, capped backoff) and is
        returned as is: its requests fail at once with ``BrokerConnectionError`` until it is back. A session
        that never connected, was closed, or whose reconnect loop ended is closed and replaced here; when the
        new one cannot connect, ``BrokerConnectionError`` propagates and the next call tries again.
        """
        with self._lock:
            current = self._broker
            if current is not None and not current.healable:
                log.warning("broker session is dead (%s, no reconnect running): rebuilding it", current.connectivity)
                self._broker = None
                with contextlib.suppress(Exception):
                    current.close()
            if self._broker is None:
                fresh = SyncBroker(self._factory())
                try:
                    fresh.connect()
                except BaseException:
                    fresh.close()
                    raise
                self._broker = fresh
            return self._broker

    def broker_status(self) -> LinkStatus | None:
        """The current session's link status without connecting (None before the first use)."""
        current = self._broker  # no lock: a connect in progress must not delay a status read
        return current.status() if current is not None else None

    def _factory(self) -> Callable[[], BrokerPort]:
        if self.broker_factory is not None:
            return self.broker_factory
        ib = self.settings.ib
        outage = timedelta(minutes=self.settings.notifications.ib_outage_minutes)

        def build() -> BrokerPort:
            from services.broker.ib_adapter import IBBroker

            return IBBroker.from_settings(ib, outage_notice_after=outage)

        return build

    def llm_store(self) -> LlmCallStore:
        if self._llm_store is None:
            self._llm_store = DbLlmCallStore(self.database_url)
        return self._llm_store

    def validated_history(self) -> ValidatedHistory:
        """The bars Great Expectations validated before in this process (step 2 checks only new bars)."""
        with self._validated_lock:
            if self._validated is None:
                from services.bars.validation import ValidatedHistory

                self._validated = ValidatedHistory()
            return self._validated

    def close(self) -> None:
        with self._lock:
            if self._broker is not None:
                self._broker.close()
                self._broker = None


_current: Runtime | None = None
_current_lock = threading.Lock()


def get_runtime() -> Runtime:
    """Return the process runtime, building it from the environment's settings on first use."""
    global _current
    with _current_lock:
        if _current is None:
            _current = Runtime(load_settings())
        return _current


@contextmanager
def use_runtime(runtime: Runtime) -> Iterator[Runtime]:
    """Install ``runtime`` for the duration of the block (tests, the demo, the replay)."""
    global _current
    with _current_lock:
        previous, _current = _current, runtime
    try:
        yield runtime
    finally:
        with _current_lock:
            _current = previous
