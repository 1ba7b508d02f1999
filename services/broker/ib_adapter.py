"""The broker port over the TWS API socket with ib_async: the ONLY module that imports ib_async.

Design (docs/tws-protocol.md §2.7, §3, §4):

- One event loop owns the ``IB`` object: the loop that calls :meth:`IBBroker.connect`. Every method asserts it
  runs on that loop (an IB used from another loop silently times out). Sync callers go through
  :class:`services.broker.loop_owner.SyncBroker`. No nest_asyncio.
- ``ib.RaiseRequestErrors = True`` and an explicit timeout on every request; ib_async's exceptions and IB error
  codes become our exception tree (:mod:`services.broker.ib_errors`).
- Connectivity: ``CONNECTED`` after the startup sync; ``LOST`` on 1100 until 1101/1102; a dropped socket starts a
  reconnect loop (same clientId) that keeps trying while the broker is open: exponential backoff with jitter,
  capped at ``reconnect.max_s``, attempts unbounded (an IB Gateway restart of any length heals). ``connect()``
  itself is bounded (``reconnect.attempts`` retries): a caller learns quickly that nothing listens. While not
  connected every request fails at once with ``BrokerConnectionError``; ``place_order`` refuses unless
  ``CONNECTED``: nothing is queued. Every state change is logged (connected / disconnected since T /
  reconnected after N attempts and D s); :meth:`IBBroker.status` reports it.
- Defaults of host, port, clientId, timeouts and message pacing live in :class:`services.settings.IBSettings`
  only: build with :meth:`IBBroker.from_settings`.
- Pacing: a message limiter in front of every request and the historical limiter (60/10 min, 5 per contract in
  2 s, identical requests 15 s apart) in front of ``reqHistoricalData``; a 162 pacing violation is retried with
  backoff, then raised as ``PacingViolationError``.
- Orders carry ``orderRef`` = our idempotency key; ``place_order`` returns once IB acknowledged the order with a
  permId. An orderRef already known to IB is never sent again: its current state is returned.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import pandas as pd
from ib_async import IB, Contract, Order, RequestError

from models.bars import TIMESTAMP
from services.broker import _bars
from services.broker import _ib_convert as conv
from services.broker.ib_errors import (
    DATA_LOST_ON_RESTORE,
    LINK_LOST_CODES,
    LINK_RESTORED_CODES,
    to_exception,
)
from services.broker.pacing import (
    Backoff,
    Clock,
    HistoricalKey,
    HistoricalLimiter,
    MessageRateLimiter,
    SystemClock,
    retry_on_pacing,
)
from services.broker.types import (
    AccountValues,
    BarRequest,
    Bracket,
    BrokerOrder,
    BrokerPosition,
    Connectivity,
    ContractInfo,
    ContractSpec,
    Execution,
    LinkStatus,
    OrderRequest,
    Quote,
    SymbolMatch,
)
from services.errors import (
    BrokerConnectionError,
    ContractNotFoundError,
    DataError,
    OrderRejectedError,
    TraderError,
)
from services.events import EventKind, Resource, TraderEvent, publish
from services.settings import IBSettings

log = logging.getLogger(__name__)

_WORKING: Final = frozenset({"PreSubmitted", "Submitted", "Filled", "PendingCancel", "ValidationError"})
_DONE: Final = frozenset({"Cancelled", "ApiCancelled", "Inactive", "Filled"})
_REJECT_GRACE_S: Final = 0.25  # an Inactive/Cancelled status may precede its error code by a frame or two
_SYMBOL_SEARCHES_PER_S: Final = 1  # IB answers one reqMatchingSymbols per second (matching_symbols.html)
_HIST_CACHE_S: Final = 15.0  # identical historical requests within this window are served from the last answer
# attempts: retries of connect() (bounded); the reconnect loop after a drop retries forever, waits capped at max_s
DEFAULT_RECONNECT: Final = Backoff(attempts=3, base_s=0.5, max_s=60.0)
DEFAULT_PACING_RETRY: Final = Backoff(attempts=3, base_s=10.0, max_s=120.0)


class IBBroker:
    """:class:`services.broker.port.BrokerPort` implemented with ib_async against TWS / IB Gateway."""

    def __init__(
        self,
        host: str,
        port: int,
        client_id: int,
        account: str | None = None,
        *,
        connect_timeout_s: float,
        request_timeout_s: float,
        max_messages_per_s: int,
        order_ack_timeout_s: float = 10.0,
        hist_limiter: HistoricalLimiter | None = None,
        clock: Clock | None = None,
        reconnect: Backoff = DEFAULT_RECONNECT,
        pacing_retry: Backoff = DEFAULT_PACING_RETRY,
        auto_reconnect: bool = True,
        market_data_type: int | None = None,
        rng: random.Random | None = None,
        outage_notice_after: timedelta | None = None,
    ) -> None:
        self.host, self.port, self.client_id, self.account = host, port, client_id, account
        self.connect_timeout_s = connect_timeout_s
        self.request_timeout_s = request_timeout_s
        self.order_ack_timeout_s = order_ack_timeout_s
        self.clock: Clock = clock or SystemClock()
        self.msg_limiter = MessageRateLimiter(max_messages_per_s, clock=self.clock)
        self.symbol_limiter = MessageRateLimiter(_SYMBOL_SEARCHES_PER_S, clock=self.clock)
        self.hist_limiter = hist_limiter or HistoricalLimiter(clock=self.clock)
        self.reconnect_backoff = reconnect
        self.pacing_retry = pacing_retry
        self.auto_reconnect = auto_reconnect
        self.market_data_type = market_data_type
        self.rng = rng or random.Random()
        self.outage_notice_after = outage_notice_after  # a reconnect after at least this long is told about
        self.reconnects = 0
        self.reconnect_attempts = 0  # failed attempts in the current outage
        self.pacing_retries = 0
        self.server_version: int | None = None
        self._state = Connectivity.DISCONNECTED
        self._ib: IB | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closing = False
        self._reconnect_task: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()
        self._hist_cache: dict[tuple[Any, ...], tuple[float, pd.DataFrame]] = {}
        self.listeners: list[Callable[[Connectivity], None]] = []
        self._changed_at: datetime | None = None
        self._down_since: datetime | None = None
        self._ever_connected = False

    @classmethod
    def from_settings(cls, settings: IBSettings, **overrides: Any) -> IBBroker:
        """Build from :class:`services.settings.IBSettings` (keyword ``overrides`` win)."""
        kwargs: dict[str, Any] = {
            "host": settings.host,
            "port": settings.port,
            "client_id": settings.client_id,
            "account": settings.account.get_secret_value() if settings.account else None,
            "connect_timeout_s": settings.connect_timeout_s,
            "request_timeout_s": settings.request_timeout_s,
            "max_messages_per_s": settings.max_messages_per_s,
        }
        kwargs.update(overrides)
        if "hist_limiter" not in kwargs:
            kwargs["hist_limiter"] = HistoricalLimiter(settings.hist_requests_per_10min, clock=kwargs.get("clock"))
        return cls(**kwargs)

    # ---- connection ----

    @property
    def connectivity(self) -> Connectivity:
        return self._state

    @property
    def reconnecting(self) -> bool:
        """True while a reconnect loop runs: the session heals by itself (else a dead one stays dead)."""
        return self._reconnect_task is not None and not self._reconnect_task.done()

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.port} clientId {self.client_id}"

    def status(self) -> LinkStatus:
        """The session's state, last change, outage start, attempts and reconnects (safe from any thread)."""
        return LinkStatus(
            state=self._state,
            changed_at=self._changed_at,
            down_since=self._down_since,
            reconnecting=self.reconnecting,
            attempts=self.reconnect_attempts,
            reconnects=self.reconnects,
            server_version=self.server_version,
            endpoint=self.endpoint,
        )

    async def connect(self) -> None:
        """Connect (with bounded retries) and run ib_async's startup sync; raise ``BrokerConnectionError``."""
        self._bind_loop()
        if self._state in (Connectivity.CONNECTED, Connectivity.LOST):
            return
        if self.reconnecting:
            raise BrokerConnectionError(f"broker {self._state}: reconnecting to {self.endpoint}")
        self._closing = False
        last: BrokerConnectionError | None = None
        for attempt in range(self.reconnect_backoff.attempts + 1):
            if attempt:
                await asyncio.sleep(self.reconnect_backoff.delay(attempt - 1, self.rng))
            try:
                await self._connect_once()
                return
            except BrokerConnectionError as exc:
                last = exc
                log.warning("connect attempt %d to %s:%s failed: %s", attempt + 1, self.host, self.port, exc)
        self._set_state(Connectivity.DISCONNECTED)
        assert last is not None
        raise last

    async def close(self) -> None:
        """Disconnect and stop reconnecting; idempotent."""
        self._closing = True
        if self._reconnect_task is not None and not self._reconnect_task.done():
            self._reconnect_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reconnect_task
        if self._ib is not None:
            self._ib.disconnect()
        self._set_state(Connectivity.DISCONNECTED)

    async def wait_connected(self, timeout_s: float) -> None:
        """Wait until ``CONNECTED`` (e.g. after a drop); raise ``BrokerConnectionError`` on timeout."""
        self._check_loop()
        try:
            await self._wait(lambda: self._state is Connectivity.CONNECTED, timeout_s)
        except TimeoutError:
            raise BrokerConnectionError(f"not connected after {timeout_s:.1f}s (state {self._state})") from None

    async def _connect_once(self) -> None:
        ib = self._ib
        if ib is None:
            ib = self._ib = IB()
            ib.RaiseRequestErrors = True
            ib.errorEvent += self._on_error
            ib.disconnectedEvent += self._on_disconnected
            ib.updateEvent += self._changed.set
        self._set_state(Connectivity.CONNECTING)
        try:
            await ib.connectAsync(
                self.host,
                self.port,
                clientId=self.client_id,
                timeout=self.connect_timeout_s,
                account=self.account or "",
                raiseSyncErrors=True,
            )
        except (OSError, TimeoutError, ConnectionError) as exc:
            self._set_state(Connectivity.DISCONNECTED)
            raise BrokerConnectionError(f"cannot connect to {self.host}:{self.port}: {exc!r}") from exc
        self.server_version = ib.client.serverVersion()
        if self.market_data_type is not None:
            ib.reqMarketDataType(self.market_data_type)
        self._set_state(Connectivity.CONNECTED)

    def _on_disconnected(self) -> None:
        self._changed.set()
        if self._closing or self._state is Connectivity.DISCONNECTED:
            return
        self._set_state(Connectivity.DISCONNECTED)
        if self.auto_reconnect and self._loop is not None and not self.reconnecting:
            self._reconnect_task = self._loop.create_task(self._reconnect_loop())

    async def _reconnect_loop(self) -> None:
        """Reconnect until connected or closed: capped exponential backoff with jitter, no attempt limit."""
        started = time.monotonic()
        attempt = 0
        self.reconnect_attempts = 0
        delay = self.reconnect_backoff.delay(0, self.rng)
        try:
            while not self._closing:
                await asyncio.sleep(delay)
                if self._closing:
                    return
                try:
                    await self._connect_once()
                except BrokerConnectionError as exc:
                    attempt += 1
                    self.reconnect_attempts = attempt
                    delay = self.reconnect_backoff.delay(attempt, self.rng)
                    log.warning(
                        "reconnect attempt %d to %s failed (next in %.1fs): %s", attempt, self.endpoint, delay, exc
                    )
                    continue
                self.reconnects += 1
                self.reconnect_attempts = 0
                log.info(
                    "IB reconnected to %s after %d attempts and %.1fs",
                    self.endpoint,
                    attempt + 1,
                    time.monotonic() - started,
                )
                return
        except Exception:  # an unexpected failure ends the loop: the runtime rebuilds the session on next use
            log.exception("reconnect loop for %s ended unexpectedly", self.endpoint)
            self._set_state(Connectivity.DISCONNECTED)

    def _on_error(self, req_id: int, code: int, message: str, contract: Any) -> None:
        self._changed.set()
        if code in LINK_LOST_CODES and self._state is Connectivity.CONNECTED:
            log.warning("IB %d: %s", code, message)
            self._set_state(Connectivity.LOST)
        elif code in LINK_RESTORED_CODES and self._state is Connectivity.LOST:
            self._set_state(Connectivity.CONNECTED)
            if code in DATA_LOST_ON_RESTORE and self._loop is not None:
                self._loop.create_task(self._resubscribe())
        elif code == 1300 and self._ib is not None:
            self._ib.disconnect()

    async def _resubscribe(self) -> None:
        # 1101 "data lost": re-request account, positions and open orders (no streaming subscriptions are held).
        ib = self._ib
        if ib is None or not ib.isConnected():
            return
        try:
            await asyncio.wait_for(ib.reqPositionsAsync(), self.request_timeout_s)
            await asyncio.wait_for(ib.reqOpenOrdersAsync(), self.request_timeout_s)
            if self.account:
                await asyncio.wait_for(ib.reqAccountUpdatesAsync(self.account), self.request_timeout_s)
        except (TimeoutError, ConnectionError, RequestError) as exc:
            log.warning("re-subscription after 1101 failed: %r", exc)

    def _set_state(self, state: Connectivity) -> None:
        if state is self._state:
            return
        previous, self._state = self._state, state
        now = datetime.now(UTC)
        self._changed_at = now
        self._log_change(previous, state, now)
        self._changed.set()
        for listener in list(self.listeners):
            listener(state)

    def _log_change(self, previous: Connectivity, state: Connectivity, now: datetime) -> None:
        # CONNECTING <-> DISCONNECTED flips of a reconnect attempt are not changes an operator needs to see.
        if state is Connectivity.CONNECTED:
            if previous is Connectivity.LOST:
                log.info("IB link restored at %s (%s)", self.endpoint, _since(self._down_since, now))
            elif not self._ever_connected:
                log.info("IB connected to %s (server version %s)", self.endpoint, self.server_version)
            if self._ever_connected and self._down_since is not None:
                self._tell_outage(self._down_since, now)
            self._ever_connected = True
            self._down_since = None
        elif state is Connectivity.LOST:
            self._down_since = self._down_since or now
            log.warning("IB link lost at %s since %s (TWS <-> IB, 1100)", self.endpoint, _iso(self._down_since))
        elif state is Connectivity.DISCONNECTED and previous in (Connectivity.CONNECTED, Connectivity.LOST):
            self._down_since = self._down_since or now
            if self._closing:
                log.info("IB connection to %s closed", self.endpoint)
                return
            how = "reconnecting" if self.auto_reconnect else "no automatic reconnect"
            log.warning("IB disconnected from %s since %s (%s)", self.endpoint, _iso(self._down_since), how)

    def _tell_outage(self, down_since: datetime, now: datetime) -> None:
        threshold = self.outage_notice_after
        if threshold is None or now - down_since < threshold:
            return
        minutes = (now - down_since).total_seconds() / 60
        told = f"IB at {self.endpoint} back after {minutes:.1f} min down (since {_iso(down_since)})"
        payload = {"endpoint": self.endpoint, "down_since": _iso(down_since), "down_minutes": round(minutes, 2)}
        broker = Resource(f"trader.broker.{self.host}:{self.port}", self.endpoint)
        publish(TraderEvent(EventKind.IB_RECONNECTED, broker, told, payload))

    # ---- contracts and data ----

    async def contract_details(self, spec: ContractSpec) -> list[ContractInfo]:
        ib = await self._ready()
        await self.msg_limiter.acquire()
        try:
            details = await self._request(ib.reqContractDetailsAsync(_spec_contract(spec)))
        except ContractNotFoundError:
            return []
        return [conv.contract_info(d) for d in details]

    async def matching_symbols(self, pattern: str) -> list[SymbolMatch]:
        """``reqMatchingSymbols``, paced at one search per second besides the message limiter."""
        ib = await self._ready()
        await self.symbol_limiter.acquire()
        await self.msg_limiter.acquire()
        found = await self._request(ib.reqMatchingSymbolsAsync(pattern))
        if found is None:  # ib_async gives up after 4 s and returns None
            raise BrokerConnectionError(f"no answer from IB to the symbol search {pattern!r}")
        return [conv.symbol_match(d) for d in found]

    async def qualify(self, spec: ContractSpec) -> ContractInfo:
        found = await self.contract_details(spec)
        if spec.conid is None and len(found) > 1:
            found = [c for c in found if c.sec_type == spec.sec_type]
        if len(found) != 1:
            what = f"ambiguous ({len(found)} matches)" if found else "no security definition"
            raise ContractNotFoundError(f"{what} for {spec.symbol} {spec.sec_type} {spec.exchange} {spec.currency}")
        info = found[0]
        if spec.exchange == "SMART" and info.exchange != "SMART":
            info = replace(info, exchange="SMART")
        return info

    async def historical_bars(self, contract: ContractInfo, request: BarRequest) -> pd.DataFrame:
        """Return bars; a duration longer than IB serves for the bar size is fetched in paced chunks, newest first."""
        ib = await self._ready()
        end = request.end.astimezone(UTC) if request.end is not None else None
        chunk = _bars.max_chunk(request.bar_size)
        if chunk is None or _bars.duration_seconds(request.duration) <= _bars.duration_seconds(
            f"{chunk[0]} {chunk[1]}"
        ):
            return await self._history_once(ib, contract, request, request.duration, end)
        count, unit = _bars.duration_parts(request.duration)
        offset = _bars.parse_duration(request.duration)
        # "n D" on intraday bars means the last n weekdays up to the end's New York date (IB counts sessions)
        left = count if unit == "D" and chunk[1] == "D" else None
        target_start = pd.Timestamp(end) - offset if end is not None and left is None else None
        frames: list[pd.DataFrame] = []
        cursor = end
        while True:
            size = min(chunk[0], left) if left is not None else chunk[0]
            frame = await self._history_once(ib, contract, request, f"{size} {chunk[1]}", cursor)
            if not frame.empty:
                frames.append(frame)
            elif cursor is None:
                break
            stamps = frame[TIMESTAMP]
            if cursor is None:  # "now" at the server: anchor on the newest bar it returned
                cursor = (stamps.iloc[-1] + _bars.bar_timedelta(request.bar_size)).to_pydatetime()
                if left is None:
                    target_start = pd.Timestamp(cursor) - offset
            if chunk[1] == "D":
                cursor = _bars.end_of_weekday_before(cursor, size)
            elif not frame.empty:
                cursor = stamps.iloc[0].to_pydatetime()
            else:
                break
            if left is not None:
                left -= size
                if left <= 0:
                    break
            elif target_start is not None and pd.Timestamp(cursor) <= target_start:
                break
        if not frames:
            return conv.bars_frame([])
        out = pd.concat(frames[::-1], ignore_index=True).drop_duplicates(subset=[TIMESTAMP], keep="last")
        if target_start is not None:
            out = out[out[TIMESTAMP] >= target_start]
        return _bars.canonical(out)

    async def _history_once(
        self, ib: IB, contract: ContractInfo, request: BarRequest, duration: str, end: datetime | None
    ) -> pd.DataFrame:
        ident = (contract.conid, contract.exchange, request.what_to_show.value)
        req_key = (*ident, request.bar_size.value, duration, end, request.use_rth)
        cached = self._hist_cache.get(req_key)
        if cached is not None and end is not None and self.clock.now() - cached[0] < _HIST_CACHE_S:
            return cached[1].copy()

        async def once() -> pd.DataFrame:
            await self.hist_limiter.acquire(HistoricalKey(ident, req_key))
            await self.msg_limiter.acquire()
            started = time.monotonic()
            try:
                bars = await self._request(
                    ib.reqHistoricalDataAsync(
                        _info_contract(contract),
                        end or "",
                        duration,
                        request.bar_size.value,
                        request.what_to_show.value,
                        request.use_rth,
                        formatDate=2,
                        timeout=self.request_timeout_s,
                    ),
                    timeout_s=self.request_timeout_s + 5.0,
                )
            except DataError as exc:
                if "no data" in str(exc).lower():
                    return conv.bars_frame([])
                raise
            if not bars and time.monotonic() - started >= self.request_timeout_s * 0.99:
                raise BrokerConnectionError(f"historical request for {contract.symbol} timed out")
            return conv.bars_frame(bars)

        def note_retry(attempt: int, delay: float, exc: TraderError) -> None:
            self.pacing_retries += 1
            log.warning("pacing violation (%s); retry %d in %.1fs", exc, attempt + 1, delay)

        frame = await retry_on_pacing(
            once, backoff=self.pacing_retry, clock=self.clock, rng=self.rng, on_retry=note_retry
        )
        now = self.clock.now()
        self._hist_cache = {k: v for k, v in self._hist_cache.items() if now - v[0] < _HIST_CACHE_S}
        if end is not None:
            self._hist_cache[req_key] = (now, frame.copy())
        return frame

    async def snapshot(self, contract: ContractInfo) -> Quote:
        ib = await self._ready()
        tickers = await self._request(ib.reqTickersAsync(_info_contract(contract)))
        return conv.quote(tickers[0], datetime.now(UTC))

    # ---- orders ----

    async def place_order(self, contract: ContractInfo, request: OrderRequest) -> BrokerOrder:
        ib = self._require_ib()
        if self._state is not Connectivity.CONNECTED or not ib.isConnected():
            raise BrokerConnectionError(f"not placing {request.order_ref}: broker {self._state}")
        existing = self._find_trade(request.order_ref, None)
        if existing is not None:
            log.info("order_ref %s already known to IB; not sending again", request.order_ref)
            return conv.broker_order(existing, ib.fills())
        await self.msg_limiter.acquire()
        try:
            trade = ib.placeOrder(_info_contract(contract), _ib_order(request))
        except ConnectionError as exc:
            raise BrokerConnectionError(f"not placing {request.order_ref}: {exc}") from exc

        await self._settle([trade])
        return conv.broker_order(trade, ib.fills())

    async def place_bracket(self, contract: ContractInfo, bracket: Bracket) -> list[BrokerOrder]:
        """The entry and its children as TWS expects a bracket (bracket_order.html): children carry the entry's
        orderId as ``parentId`` and one ``ocaGroup`` (ocaType 2: the others are reduced by each fill, with
        overfill protection); ``transmit`` is False on all but the last, so TWS sends nothing before it has the
        whole bracket. An entry already known to IB is not sent again; a child it lacks is attached to it."""
        ib = self._require_ib()
        entry = bracket.entry
        if self._state is not Connectivity.CONNECTED or not ib.isConnected():
            raise BrokerConnectionError(f"not placing {entry.order_ref}: broker {self._state}")
        ib_contract = _info_contract(contract)
        parent = self._find_trade(entry.order_ref, bracket.entry_perm_id)
        missing = [c for c in bracket.children if self._find_trade(c.order_ref, None) is None]
        sent: list[Any] = []
        try:
            if parent is None:
                await self.msg_limiter.acquire()
                parent = ib.placeOrder(ib_contract, _ib_order(entry, transmit=not missing))
                sent.append(parent)
            else:
                log.info("order_ref %s already known to IB; not sending it again", entry.order_ref)
            for i, child in enumerate(missing):
                order = _ib_order(replace(child, oca_group=bracket.oca_group), transmit=i == len(missing) - 1)
                order.parentId = parent.order.orderId
                await self.msg_limiter.acquire()
                sent.append(ib.placeOrder(ib_contract, order))
        except ConnectionError as exc:
            raise BrokerConnectionError(f"not placing {entry.order_ref}: {exc}") from exc
        await self._settle(sent)
        trades = [parent, *(self._find_trade(c.order_ref, None) for c in bracket.children)]
        fills = ib.fills()
        return [conv.broker_order(t, fills) for t in trades if t is not None]

    async def _settle(self, trades: list[Any]) -> None:
        """Wait until IB acknowledged every trade (permId) or ended it; raise on a lost connection or a refusal
        (the first trade, the entry of a bracket, decides)."""
        if not trades:
            return
        ib = self._require_ib()
        ref = trades[0].order.orderRef

        def acked() -> bool:
            if not ib.isConnected():
                return True
            return all(
                t.orderStatus.status in _DONE or (bool(t.order.permId) and t.orderStatus.status in _WORKING)
                for t in trades
            )

        try:
            await self._wait(acked, self.order_ack_timeout_s)
        except TimeoutError:
            raise BrokerConnectionError(
                f"order {ref} not acknowledged within {self.order_ack_timeout_s:.1f}s; reconcile"
            ) from None
        trade = trades[0]
        if not ib.isConnected() and any(t.orderStatus.status not in _DONE for t in trades):
            raise BrokerConnectionError(f"connection lost before {ref} was acknowledged; reconcile")
        if trade.orderStatus.status in ("Cancelled", "ApiCancelled", "Inactive"):
            with contextlib.suppress(TimeoutError):
                await self._wait(lambda: conv.broker_order(trade).last_error_code is not None, _REJECT_GRACE_S)
            order = conv.broker_order(trade, ib.fills())
            code = order.last_error_code
            raise OrderRejectedError(
                f"IB rejected {ref}: {code} {order.last_error_text or trade.orderStatus.status}",
                code=code,
                order_ref=ref,
            )

    async def cancel_order(self, order_ref: str) -> BrokerOrder:
        ib = await self._ready()
        trade = self._find_trade(order_ref, None)
        if trade is None:
            raise OrderRejectedError(f"no order with order_ref {order_ref}", code=10147, order_ref=order_ref)
        if trade.isDone():
            raise OrderRejectedError(
                f"order {order_ref} is {trade.orderStatus.status}; not cancellable", code=161, order_ref=order_ref
            )
        await self.msg_limiter.acquire()
        ib.cancelOrder(trade.order)
        try:
            await self._wait(lambda: trade.orderStatus.status in _DONE, self.request_timeout_s)
        except TimeoutError:
            log.warning("cancel of %s not confirmed within %.1fs", order_ref, self.request_timeout_s)
        return conv.broker_order(trade, ib.fills())

    async def open_orders(self) -> list[BrokerOrder]:
        ib = await self._ready()
        fills = ib.fills()
        return [conv.broker_order(t, fills) for t in ib.openTrades()]

    async def completed_orders(self) -> list[BrokerOrder]:
        ib = await self._ready()
        fills = ib.fills()
        return [conv.broker_order(t, fills) for t in ib.trades() if t.isDone()]

    async def executions(self) -> list[Execution]:
        ib = await self._ready()
        return [conv.execution(f) for f in ib.fills()]

    async def positions(self) -> list[BrokerPosition]:
        ib = await self._ready()
        return [conv.position(p) for p in ib.positions() if p.position]

    async def account_values(self) -> AccountValues:
        ib = await self._ready()
        accounts = ib.managedAccounts()
        account = self.account or (accounts[0] if accounts else "")
        values = ib.accountValues(account)
        if not any(v.tag == "NetLiquidation" for v in values):
            await self.msg_limiter.acquire()
            values = await self._request(ib.accountSummaryAsync(account))
        return conv.account_values(values, account)

    async def find_order(self, order_ref: str, perm_id: int | None = None) -> BrokerOrder | None:
        ib = await self._ready()
        trade = self._find_trade(order_ref, perm_id)
        return conv.broker_order(trade, ib.fills()) if trade is not None else None

    # ---- plumbing ----

    def _find_trade(self, order_ref: str, perm_id: int | None) -> Any:
        ib = self._require_ib()
        trades = ib.trades()
        for t in trades:
            if t.order.orderRef == order_ref:
                return t
        if perm_id:
            for t in trades:
                if t.order.permId == perm_id:
                    return t
        return None

    def _bind_loop(self) -> None:
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
        elif self._loop is not loop:
            raise RuntimeError("IBBroker is bound to another event loop; use SyncBroker / LoopOwner to call it")

    def _check_loop(self) -> None:
        if self._loop is None:
            raise BrokerConnectionError("not connected (connect() was never called)")
        if asyncio.get_running_loop() is not self._loop:
            raise RuntimeError("IBBroker used from a foreign event loop; use SyncBroker / LoopOwner")

    def _require_ib(self) -> IB:
        self._check_loop()
        if self._ib is None:
            raise BrokerConnectionError("not connected")
        return self._ib

    async def _ready(self) -> IB:
        ib = self._require_ib()
        if self._state is Connectivity.DISCONNECTED or self._state is Connectivity.CONNECTING or not ib.isConnected():
            raise BrokerConnectionError(f"broker {self._state}")
        return ib

    async def _request(self, awaitable: Any, timeout_s: float | None = None) -> Any:
        timeout = timeout_s or self.request_timeout_s
        try:
            return await asyncio.wait_for(awaitable, timeout)
        except RequestError as exc:
            raise to_exception(exc.code, exc.message) from exc
        except TimeoutError as exc:
            raise BrokerConnectionError(f"no answer from IB within {timeout:.1f}s") from exc
        except ConnectionError as exc:
            raise BrokerConnectionError(str(exc)) from exc

    async def _wait(self, predicate: Callable[[], bool], timeout_s: float) -> None:
        # Waits on ib_async's update events (every processed socket read, errors, disconnects).
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while not predicate():
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError
            self._changed.clear()
            if predicate():
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)


def _iso(moment: datetime | None) -> str:
    return moment.isoformat(timespec="seconds") if moment is not None else "?"


def _since(moment: datetime | None, now: datetime) -> str:
    if moment is None:
        return "no outage"
    return f"down {(now - moment) / timedelta(seconds=1):.1f}s since {_iso(moment)}"


def _spec_contract(spec: ContractSpec) -> Contract:
    return Contract(
        conId=spec.conid or 0,
        symbol=spec.symbol.upper(),
        secType=spec.sec_type.value,
        exchange=spec.exchange,
        currency=spec.currency,
        primaryExchange=spec.primary_exchange or "",
    )


def _info_contract(info: ContractInfo) -> Contract:
    return Contract(
        conId=info.conid,
        symbol=info.symbol,
        secType=info.sec_type.value,
        exchange=info.exchange,
        currency=info.currency,
        primaryExchange=info.primary_exchange,
    )


# ocaType 2: "remaining orders are proportionately reduced in size with block" (overfill protection)
OCA_REDUCE_WITH_BLOCK: Final = 2


def _ib_order(request: OrderRequest, *, transmit: bool = True) -> Order:
    order = Order(
        action=request.side.value,
        totalQuantity=float(request.quantity),
        orderType=request.order_type.value,
        tif=request.tif.value,
        orderRef=request.order_ref,
        transmit=transmit,
    )
    if request.oca_group:
        order.ocaGroup = request.oca_group
        order.ocaType = OCA_REDUCE_WITH_BLOCK
    if request.limit_price is not None:
        order.lmtPrice = request.limit_price
    if request.trail is not None:  # TRAIL: auxPrice is the trailing amount, the stop starts at trailStopPrice
        if request.trail.amount is not None:
            order.auxPrice = request.trail.amount
        elif request.trail.percent is not None:
            order.trailingPercent = request.trail.percent
        if request.stop_price is not None:
            order.trailStopPrice = request.stop_price
    elif request.stop_price is not None:
        order.auxPrice = request.stop_price
    if request.account:
        order.account = request.account
    return order
