# Inbound mapping from ib_async objects to our types. Works on the vendor objects by attribute only and never
# imports ib_async (services/broker/ib_adapter.py stays the only importer). Pure functions, unit-testable with
# plain stand-in objects.
from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Final

import pandas as pd

from models.bars import TIMESTAMP
from models.enums import OrderSide, OrderType, SecType, TimeInForce
from services.broker import _bars
from services.broker.ib_errors import map_order_status
from services.broker.types import (
    AccountValues,
    BrokerOrder,
    BrokerPosition,
    ContractInfo,
    Execution,
    Quote,
    SymbolMatch,
)

UNSET_DOUBLE: Final = 1.7976931348623157e308
UNSET_INTEGER: Final = 2**31 - 1
_EXEC_SIDE: Final[dict[str, OrderSide]] = {"BOT": OrderSide.BUY, "SLD": OrderSide.SELL, "BUY": OrderSide.BUY}
_ACCOUNT_TAGS: Final[dict[str, str]] = {
    "NetLiquidation": "net_liquidation",
    "BuyingPower": "buying_power",
    "AvailableFunds": "available_funds",
    "TotalCashValue": "total_cash",
}


def dec(value: Any) -> Decimal | None:
    """Return ``value`` as a Decimal, or None for IB's unset markers, NaN, empty or unparsable values."""
    if value is None or value == "":
        return None
    if isinstance(value, Decimal):
        return None if value.is_nan() else value
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value) or value >= UNSET_DOUBLE:
            return None
        return Decimal(int(value)) if value.is_integer() else Decimal(repr(value))
    if isinstance(value, int) and value == UNSET_INTEGER:
        return None
    try:
        return Decimal(str(value))
    except InvalidOperation:
        return None


def aware_utc(value: datetime | date) -> datetime:
    """Return a UTC datetime; a bare date is that session date at 00:00 UTC (the canonical daily label)."""
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return datetime(value.year, value.month, value.day, tzinfo=UTC)


def symbol_match(description: Any) -> SymbolMatch:
    """Map an ib_async ``ContractDescription`` (a ``reqMatchingSymbols`` answer)."""
    c = description.contract
    return SymbolMatch(
        conid=int(c.conId),
        symbol=str(c.symbol),
        sec_type=str(c.secType),
        primary_exchange=str(c.primaryExchange or ""),
        currency=str(c.currency or ""),
        derivative_sec_types=tuple(str(t) for t in (description.derivativeSecTypes or ())),
        description=str(getattr(c, "description", "") or ""),
        issuer_id=str(getattr(c, "issuerId", "") or ""),
    )


def contract_info(details: Any) -> ContractInfo:
    """Map an ib_async ``ContractDetails``."""
    c = details.contract
    return ContractInfo(
        conid=int(c.conId),
        symbol=c.symbol,
        sec_type=SecType(c.secType),
        exchange=c.exchange,
        primary_exchange=c.primaryExchange or "",
        currency=c.currency,
        min_tick=dec(details.minTick) or Decimal("0.01"),
        size_increment=dec(details.sizeIncrement) or Decimal(1),
        long_name=details.longName,
        time_zone_id=details.timeZoneId,
        trading_hours=details.tradingHours,
        liquid_hours=details.liquidHours,
        local_symbol=c.localSymbol,
        trading_class=c.tradingClass,
        multiplier=str(c.multiplier or ""),
        valid_exchanges=details.validExchanges,
        order_types=details.orderTypes,
        industry=details.industry,
        category=details.category,
    )


def bars_frame(bars: Iterable[Any]) -> pd.DataFrame:
    """Map ib_async ``BarData`` to the canonical frame (bar start, UTC; daily bars at the session date 00:00)."""
    rows = [
        {
            TIMESTAMP: aware_utc(b.date),
            "open": float(b.open),
            "high": float(b.high),
            "low": float(b.low),
            "close": float(b.close),
            "volume": float(b.volume),
            "wap": float(b.average),
            "trade_count": float(b.barCount),
        }
        for b in bars
    ]
    if not rows:
        empty = pd.DataFrame({TIMESTAMP: pd.Series([], dtype="datetime64[ns, UTC]")})
        for col in ("open", "high", "low", "close", "volume"):
            empty[col] = pd.Series([], dtype="float64")
        return empty
    frame = _bars.canonical(pd.DataFrame(rows))
    for col in ("wap", "trade_count"):  # IB sends -1 when it has no value (e.g. MIDPOINT, files without it)
        frame[col] = frame[col].where(frame[col] >= 0)
        if frame[col].isna().all():
            frame = frame.drop(columns=col)
    return frame


def _last_error(trade: Any) -> tuple[int | None, str | None]:
    for entry in reversed(getattr(trade, "log", [])):
        if entry.errorCode:
            return int(entry.errorCode), entry.message
    return None, None


def broker_order(trade: Any, fills: Sequence[Any] = ()) -> BrokerOrder:
    """Map an ib_async ``Trade`` (live, open or completed). ``fills`` helps completed orders without a status."""
    o, st, c = trade.order, trade.orderStatus, trade.contract
    quantity = dec(o.totalQuantity) or Decimal(0)
    own_fills = [f for f in fills if f.execution.permId == o.permId and o.permId] or list(trade.fills)
    filled = dec(st.filled) or Decimal(0)
    completed_qty = dec(getattr(o, "filledQuantity", None))
    if completed_qty is not None and completed_qty > filled:
        filled = completed_qty
    fill_qty = sum((dec(f.execution.shares) or Decimal(0) for f in own_fills), Decimal(0))
    if fill_qty > filled:
        filled = fill_qty
    avg = dec(st.avgFillPrice) if st.avgFillPrice else None
    if avg is None and fill_qty > 0:
        value = sum(((dec(f.execution.shares) or 0) * (dec(f.execution.price) or 0) for f in own_fills), Decimal(0))
        avg = value / fill_qty
    code, text = _last_error(trade)
    remaining = quantity - filled
    if st.status not in ("Filled", "Cancelled", "ApiCancelled", "Inactive") and st.remaining:
        remaining = dec(st.remaining) or remaining
    return BrokerOrder(
        order_ref=o.orderRef or "",
        order_id=int(o.orderId) or None,
        perm_id=int(o.permId) or None,
        client_id=int(o.clientId) if o.clientId or o.orderId else None,
        ib_status=st.status,
        status=map_order_status(st.status, filled, error_code=code),
        filled=filled,
        remaining=max(Decimal(0), remaining),
        avg_fill_price=avg,
        symbol=c.symbol,
        conid=int(c.conId),
        side=OrderSide(o.action),
        quantity=quantity,
        order_type=OrderType(o.orderType),
        limit_price=_order_price(o.lmtPrice) if o.orderType in ("LMT", "STP LMT") else None,
        stop_price=_order_price(o.auxPrice) if o.orderType in ("STP", "STP LMT") else None,
        tif=TimeInForce(o.tif) if o.tif in TimeInForce.__members__.values() else TimeInForce.DAY,
        account=o.account or None,
        last_error_code=code,
        last_error_text=text,
        parent_order_id=int(o.parentId) or None,
        parent_perm_id=int(o.parentPermId or 0) or None,
        oca_group=o.ocaGroup or "",
    )


def execution(fill: Any) -> Execution:
    """Map an ib_async ``Fill``; commission is None until its report arrived."""
    e, c, report = fill.execution, fill.contract, fill.commissionReport
    has_report = bool(report.execId)
    return Execution(
        exec_id=e.execId,
        perm_id=int(e.permId) or None,
        order_id=int(e.orderId) or None,
        order_ref=e.orderRef or "",
        conid=int(c.conId),
        symbol=c.symbol,
        side=_EXEC_SIDE.get(e.side, OrderSide.SELL),
        quantity=dec(e.shares) or Decimal(0),
        price=dec(e.price) or Decimal(0),
        time=aware_utc(e.time),
        commission=dec(report.commission) if has_report else None,
        realized_pnl=dec(report.realizedPNL) if has_report and report.realizedPNL else None,
        account=e.acctNumber or None,
    )


def position(p: Any) -> BrokerPosition:
    """Map an ib_async ``Position``."""
    return BrokerPosition(
        account=p.account,
        conid=int(p.contract.conId),
        symbol=p.contract.symbol,
        quantity=dec(p.position) or Decimal(0),
        avg_cost=dec(p.avgCost) or Decimal(0),
    )


def account_values(values: Iterable[Any], account: str, currency: str = "USD") -> AccountValues:
    """Pick the headline tags (in ``currency``, else ``BASE``) out of ib_async ``AccountValue`` rows."""
    picked: dict[str, Decimal | None] = {}
    extra: dict[str, str] = {}
    for v in values:
        if account and v.account and v.account != account:
            continue
        if v.currency not in (currency, "BASE", ""):
            continue
        name = _ACCOUNT_TAGS.get(v.tag)
        if name is not None and (name not in picked or v.currency == currency):
            picked[name] = dec(v.value)
        elif name is None:
            extra[v.tag] = v.value
    return AccountValues(account=account, currency=currency, extra=extra, **picked)


def quote(ticker: Any, now: datetime) -> Quote:
    """Map an ib_async ``Ticker`` snapshot (NaN and unset fields become None)."""
    when = getattr(ticker, "time", None)
    return Quote(
        time=aware_utc(when) if isinstance(when, datetime) else now,
        bid=_price(ticker.bid),
        ask=_price(ticker.ask),
        last=_price(ticker.last),
        close=_price(ticker.close),
    )


def _order_price(value: Any) -> Decimal | None:
    d = dec(value)
    return d if d is not None and d != 0 else None


def _price(value: Any) -> Decimal | None:
    d = dec(value)
    return d if d is not None and d > 0 else None
