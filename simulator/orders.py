"""The order desk: placeOrder / cancelOrder / global cancel, matching on clock advance, account values.

Messages go out through an :class:`Outbox` so this module never touches a socket. For every fill the desk sends,
to the owning client, ``execDetails(reqId -1) -> openOrder -> orderStatus -> commissionReport`` (the commission
report first when ``early_commission_report`` is set), then asks the outbox to push position/account updates.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Protocol

from services.market import ib_fixed_commission
from services.market.sessions import order_session, session_hours
from simulator import messages as m
from simulator.catalog import Catalog, Instrument
from simulator.clock import MarketClock
from simulator.matching import Bar, Matcher, bar_at, book_fill
from simulator.state import PlacedOrder, SimExecution, SimOrder, SimOrderStatus, SimState
from simulator.wire import UNSET_DOUBLE

Builder = Callable[[int], m.Fields]  # server version -> message fields

SUPPORTED_TYPES = frozenset({"MKT", "LMT", "STP", "STP LMT", "TRAIL"})
STOP_TYPES = frozenset({"STP", "STP LMT", "TRAIL"})  # held PreSubmitted until triggered
SUPPORTED_TIFS = frozenset({"DAY", "GTC"})
MARGIN_RATE = Decimal("0.25")
_WHAT_IF_TAGS = frozenset({"InitMarginReq", "MaintMarginReq", "EquityWithLoanValue"})


class Outbox(Protocol):
    def to_client(self, client_id: int, build: Builder) -> None: ...

    def account_changed(self, account: str, con_id: int) -> None: ...


@dataclass(frozen=True)
class PlaceRequest:
    """The parts of a placeOrder (message 3) the simulator uses."""

    order_id: int
    con_id: int
    symbol: str
    sec_type: str
    exchange: str
    currency: str
    action: str
    quantity: str
    order_type: str
    lmt_price: str
    aux_price: str
    tif: str
    account: str
    order_ref: str
    parent_id: int
    oca_group: str
    outside_rth: bool
    what_if: bool
    transmit: bool = True
    oca_type: int = 0
    trail_stop_price: str = ""
    trailing_percent: str = ""


@dataclass(frozen=True)
class _Tail:
    what_if: bool = False
    trail_stop_price: str = ""
    trailing_percent: str = ""


def _skip_place_tail(fields: list[str], version: int) -> _Tail:
    """Walk placeOrder's variable tail (client.py placeOrder): the whatIf flag and the trailing-stop fields."""
    i = 35 + 7 + (1 if version < 177 else 0)  # "", discretionaryAmt .. faPercentage [, faProfile]
    i += 24
    if fields[i - 2]:  # deltaNeutralOrderType
        i += 8
    trail_stop, trail_pct = fields[i + 2], fields[i + 3]  # continuousUpdate, referencePriceType, then these
    i += 7
    increment = fields[i - 1]
    try:
        if increment and 0 < float(increment) < float(UNSET_DOUBLE):
            i += 7
    except ValueError:
        pass
    i += 4
    if fields[i - 1]:  # hedgeType
        i += 1
    i += 4  # optOutSmartRouting .. notHeld
    if fields[i] == "1":  # deltaNeutralContract
        i += 3
    i += 1
    algo = fields[i]
    i += 1
    if algo:
        n = int(fields[i] or 0)
        i += 1 + 2 * n
    i += 1  # algoId
    return _Tail(fields[i] == "1", trail_stop, trail_pct)


def parse_place(fields: list[str], version: int) -> PlaceRequest:
    """Parse message 3 (no version field; contract at 2..13, non-BAG contracts only)."""
    try:
        tail = _skip_place_tail(fields, version)
    except (IndexError, ValueError):
        tail = _Tail()
    return PlaceRequest(
        order_id=int(fields[1]),
        con_id=int(fields[2] or 0),
        symbol=fields[3],
        sec_type=fields[4],
        exchange=fields[9],
        currency=fields[11],
        action=fields[16].upper(),
        quantity=fields[17],
        order_type=fields[18].upper(),
        lmt_price=fields[19],
        aux_price=fields[20],
        tif=fields[21].upper() or "DAY",
        account=fields[23],
        order_ref=fields[26],
        parent_id=int(fields[28] or 0),
        oca_group=fields[22],
        outside_rth=fields[33] == "1",
        what_if=tail.what_if,
        transmit=fields[27] != "0",
        oca_type=_int(fields, 46 + (1 if version < 177 else 0)),
        trail_stop_price=tail.trail_stop_price,
        trailing_percent=tail.trailing_percent,
    )


def _int(fields: list[str], index: int) -> int:
    try:
        return int(fields[index] or 0)
    except (IndexError, ValueError):
        return 0


def _decimal(text: str) -> Decimal | None:
    if not text:
        return None
    try:
        value = Decimal(text)
    except InvalidOperation:
        return None
    return value if value.is_finite() else None


def _phase(order: SimOrder) -> int:
    """When in a bar an order can trade: 0 at the open (MKT, a stop already triggered), 1 a stop, 2 a limit."""
    kind = order.order_type
    if kind == "MKT" or (kind == "STP" and order.triggered):
        return 0
    return 1 if kind in STOP_TYPES and not order.triggered else 2


class OrderDesk:
    """Accepts, matches and cancels orders against the catalog's bars; books fills into :class:`SimState`."""

    def __init__(self, state: SimState, catalog: Catalog, clock: MarketClock, matcher: Matcher, outbox: Outbox) -> None:
        self.state = state
        self.catalog = catalog
        self.clock = clock
        self.matcher = matcher
        self.outbox = outbox
        self.early_commission_report = False
        self.reject_reasons: list[str] = []
        # per clientId: orders placed with transmit=False, kept by "TWS" (not acknowledged, not worked) until an
        # order of the same bracket arrives with transmit=True and sends them all
        self.staged: dict[int, list[PlaceRequest]] = {}

    # ---- placement ---------------------------------------------------------------------------------------

    def place(self, client_id: int, req: PlaceRequest) -> bool:
        """Handle a placeOrder; return True if a new order was accepted.

        ``transmit=False`` (TWS API bracket_order.html): the order stays with "TWS", unacknowledged and not
        worked, until an order of its bracket (its parent or a sibling) arrives with ``transmit=True``; then the
        parent and every staged child go out together, parent first, and only then is anything matched.
        """
        self.state.placed.append(
            PlacedOrder(
                client_id,
                req.order_id,
                req.order_ref,
                req.action,
                str(req.quantity),
                self.clock.now,
                time.time(),
                req.transmit,
                req.parent_id,
            )
        )
        existing = self.state.order_by_client(client_id, req.order_id)
        if existing is not None and not existing.is_done:
            self._modify(existing, req)
            return False
        staged = self.staged.setdefault(client_id, [])
        if existing is not None or req.order_id < self.state.next_order_id.get(client_id, 1):
            self._error(client_id, req.order_id, 103, "Duplicate order id")
            return False
        self.state.note_order_id(client_id, req.order_id)
        if not req.transmit and not req.what_if:
            staged.append(req)
            return False
        root = req.parent_id or req.order_id
        batch = [r for r in staged if r.order_id == root or r.parent_id == root]
        self.staged[client_id] = [r for r in staged if r not in batch]
        accepted = [o for r in [*batch, req] if (o := self._accept(client_id, r)) is not None]
        for order in accepted:
            self._ack(order, self.catalog.by_con_id[order.con_id])
        for order in accepted:
            self._match_now(order, self.catalog.by_con_id[order.con_id])
        return bool(accepted)

    def _accept(self, client_id: int, req: PlaceRequest) -> SimOrder | None:
        reason = self._rejection(req)
        inst = self._instrument(req)
        if reason is None and inst is None:
            reason = "Invalid contract id" if req.con_id else "No security definition has been found for the request"
        parent = self.state.order_by_client(client_id, req.parent_id) if req.parent_id else None
        if reason is None and req.parent_id and (parent is None or (parent.is_done and parent.filled == 0)):
            reason = f"Parent order {req.parent_id} is not working"
        if reason is not None or inst is None:
            self.state.rejected.append((client_id, req.order_id, reason or ""))
            self._error(client_id, req.order_id, 201, f"Order rejected - reason:{reason}")
            return None
        order = SimOrder(
            client_id=client_id,
            order_id=req.order_id,
            perm_id=0 if req.what_if else self.state.new_perm_id(),
            con_id=inst.con_id,
            account=req.account or self.state.accounts[0],
            action=req.action,
            quantity=Decimal(req.quantity),
            order_type=req.order_type,
            lmt_price=_decimal(req.lmt_price),
            aux_price=_decimal(req.aux_price),
            tif=req.tif,
            order_ref=req.order_ref,
            outside_rth=req.outside_rth,
            parent_id=req.parent_id,
            oca_group=req.oca_group,
            placed_at=self.clock.now,
            oca_type=req.oca_type,
            placed_quantity=Decimal(req.quantity),
            parent_perm_id=parent.perm_id if parent is not None else 0,
            trail_stop_price=_decimal(req.trail_stop_price),
            trailing_percent=_decimal(req.trailing_percent),
        )
        held = order.order_type in STOP_TYPES or self._held(order)
        order.status = SimOrderStatus.PRE_SUBMITTED if held else SimOrderStatus.SUBMITTED
        if req.what_if:
            self._what_if(order, inst)
            return None
        self.state.orders[order.perm_id] = order
        if parent is not None and parent.filled > 0:
            self._cover(parent)  # attached to a (partly) filled parent: it covers what the parent holds
        return order

    def _rejection(self, req: PlaceRequest) -> str | None:
        if self.reject_reasons:
            return self.reject_reasons.pop(0)
        qty = _decimal(req.quantity)
        if qty is None or qty <= 0:
            return "The order quantity must be positive"
        if qty != qty.to_integral_value():
            return "Fractional-sized order cannot be placed via API"
        if req.action not in ("BUY", "SELL"):
            return f"Invalid action {req.action!r}"
        if req.order_type not in SUPPORTED_TYPES:
            return f"Order type {req.order_type!r} is not supported (MKT, LMT, STP, STP LMT, TRAIL)"
        if req.tif not in SUPPORTED_TIFS:
            return f"Time in force {req.tif!r} is not supported (DAY, GTC)"
        lmt, aux = _decimal(req.lmt_price), _decimal(req.aux_price)
        if req.order_type in ("LMT", "STP LMT") and (lmt is None or lmt <= 0):
            return "A limit price is required"
        if req.order_type in ("STP", "STP LMT") and (aux is None or aux <= 0):
            return "A stop price is required"
        if req.order_type == "TRAIL":
            stop, pct = _decimal(req.trail_stop_price), _decimal(req.trailing_percent)
            if (aux is None or aux <= 0) == (pct is None or not 0 < pct < 100):
                return "A trailing stop needs a trailing amount (auxPrice) or a trailingPercent"
            if stop is None or stop <= 0:
                return "A trailing stop needs its initial trailStopPrice (the simulator does not infer it)"
        if req.account and req.account not in self.state.accounts:
            return f"Account {req.account} not found"
        inst = self._instrument(req)
        if inst is not None and not inst.tradable:
            return f"{inst.symbol} is an index ({inst.sec_type}) and cannot be traded"
        return None

    def _instrument(self, req: PlaceRequest) -> Instrument | None:
        found = self.catalog.find(req.con_id, req.symbol, req.sec_type, req.currency, "")
        return found[0] if found else None

    def _what_if(self, order: SimOrder, inst: Instrument) -> None:
        """Answer a whatIf order with margin and commission estimates; nothing is stored or matched."""
        price = self.mark_price(inst.con_id) or order.lmt_price or order.aux_price or Decimal(0)
        value = order.quantity * price
        values = {k: Decimal(v) for k, v, _c in self.account_values(order.account) if k in _WHAT_IF_TAGS}
        estimate = m.WhatIf(
            init_before=values["InitMarginReq"],
            maint_before=values["MaintMarginReq"],
            equity_before=values["EquityWithLoanValue"],
            change=(value * MARGIN_RATE).quantize(Decimal("0.01")),
            commission=ib_fixed_commission(order.quantity, value),
        )
        self.outbox.to_client(order.client_id, lambda v: m.open_order(v, order, inst, estimate))

    def _modify(self, order: SimOrder, req: PlaceRequest) -> None:
        qty, lmt, aux = _decimal(req.quantity), _decimal(req.lmt_price), _decimal(req.aux_price)
        inst = self.catalog.by_con_id[order.con_id]
        if qty is None or qty < order.filled or qty <= 0:
            self._error(
                order.client_id, order.order_id, 201, "Order rejected - reason:Invalid quantity for modification"
            )
            return
        order.quantity = qty
        if lmt is not None:
            order.lmt_price = lmt
        if aux is not None:
            order.aux_price = aux
        order.tif = req.tif if req.tif in SUPPORTED_TIFS else order.tif
        self._ack(order, inst)
        self._match_now(order, inst)

    def _ack(self, order: SimOrder, inst: Instrument) -> None:
        self.outbox.to_client(order.client_id, lambda v: m.open_order(v, order, inst))
        self.outbox.to_client(order.client_id, lambda _v: m.order_status(order))

    def _send_status(self, order: SimOrder) -> None:
        self.outbox.to_client(order.client_id, lambda _v: m.order_status(order))

    def _error(self, client_id: int, req_id: int, code: int, text: str) -> None:
        self.outbox.to_client(client_id, lambda v: m.error(v, req_id, code, text))

    # ---- cancellation ------------------------------------------------------------------------------------

    def cancel(self, client_id: int, order_id: int) -> None:
        order = self.state.order_by_client(client_id, order_id)
        if order is None:
            self._error(client_id, order_id, 10147, f"OrderId {order_id} that needs to be cancelled is not found.")
            return
        if order.is_done:
            self._error(
                client_id,
                order_id,
                161,
                f"Cancel attempted when order is not in a cancellable state.  Order permId ={order.perm_id}",
            )
            return
        self._cancel(order, "Cancelled by Trader")

    def global_cancel(self) -> None:
        for order in self.state.open_orders():
            if not order.is_done:  # a parent's cancel may have taken it already
                self._cancel(order, "Cancelled by Trader")

    def _cancel(self, order: SimOrder, why: str, *, with_error: bool = True) -> None:
        """Cancel ``order``; an unfilled parent takes its children with it. The children of a partly filled
        parent stay working for the filled quantity: the position they protect exists."""
        order.status = SimOrderStatus.CANCELLED
        order.completed_at = self.clock.now
        order.completed_status = why
        self.outbox.to_client(order.client_id, lambda _v: m.order_status(order))
        if with_error:
            self._error(order.client_id, order.order_id, 202, "Order Canceled - reason:")
        if order.filled == 0:
            for child in self._children(order):
                if not child.is_done:
                    self._cancel(child, f"{why} (parent cancelled)", with_error=with_error)

    # ---- matching ----------------------------------------------------------------------------------------

    def _held(self, order: SimOrder) -> bool:
        """A child order (parentId) waits until its parent has filled something."""
        if not order.parent_id:
            return False
        parent = self.state.order_by_client(order.client_id, order.parent_id)
        return parent is not None and parent.filled == 0

    def _children(self, parent: SimOrder) -> list[SimOrder]:
        return [
            o for o in self.state.orders.values() if o.client_id == parent.client_id and o.parent_id == parent.order_id
        ]

    def _oca_peers(self, order: SimOrder) -> list[SimOrder]:
        """Open orders of ``order``'s ocaGroup other than its bracket siblings (those follow :meth:`_cover`)."""
        return [
            other
            for other in self.state.open_orders(order.client_id)
            if other is not order
            and order.oca_group
            and other.oca_group == order.oca_group
            and not (order.parent_id and other.parent_id == order.parent_id)
        ]

    def _after_fill(self, order: SimOrder, qty: Decimal) -> None:
        """One-cancels-all: ocaType 1 cancels the group on any fill; otherwise (2, 3, unset) the others are
        reduced by the filled quantity and cancelled once nothing is left. Bracket children cover what their
        parent has filled (:meth:`_cover`)."""
        for peer in self._oca_peers(order):
            if order.oca_type == 1 or order.remaining == 0 or peer.quantity - qty <= peer.filled:
                self._cancel(peer, "Cancelled (OCA)", with_error=False)
            else:
                peer.quantity -= qty
                self._ack(peer, self.catalog.by_con_id[peer.con_id])
        parent = self.state.order_by_client(order.client_id, order.parent_id) if order.parent_id else None
        if parent is not None:
            if order.oca_type == 1:
                for sibling in self._children(parent):
                    if sibling is not order and not sibling.is_done:
                        self._cancel(sibling, "Cancelled (OCA)", with_error=False)
            self._cover(parent)
        if self._children(order):
            self._cover(order)

    def _cover(self, parent: SimOrder) -> None:
        """Size the parent's open children to what the bracket still holds (the parent's fills minus the
        children's fills, at most each child's placed size) and release them: a partial parent fill is protected
        for the filled quantity only; once nothing is held the children are cancelled."""
        children = self._children(parent)
        held = parent.filled - sum((c.filled for c in children), Decimal(0))
        for child in children:
            if child.is_done:
                continue
            if held <= 0:
                self._cancel(child, "Cancelled (OCA)", with_error=False)
                continue
            quantity = min(child.placed_quantity or child.quantity, child.filled + held)
            changed = quantity != child.quantity
            child.quantity = quantity
            stop = child.order_type in STOP_TYPES and not child.triggered
            if child.status == SimOrderStatus.PRE_SUBMITTED and not stop:
                child.status = SimOrderStatus.SUBMITTED
                changed = True
            if changed:
                self._ack(child, self.catalog.by_con_id[child.con_id])

    def _match_now(self, order: SimOrder, inst: Instrument) -> None:
        last = inst.last_bar(self.clock.now)
        if last is None or order.is_done or self._held(order):
            return
        series, index = last
        bar = bar_at(series, index, inst.con_id)
        was_triggered = order.triggered
        price = self.matcher.immediate_price(order, bar)
        self._after_trigger(order, inst, was_triggered)
        if price is not None:
            self._fill(order, inst, bar, price)

    def on_advance(self, before: datetime, after: datetime) -> None:
        """Match open orders against every bar completed in ``(before, after]``, instrument by instrument."""
        by_con: dict[int, list[SimOrder]] = {}
        for order in sorted(self.state.open_orders(), key=lambda o: o.perm_id):
            by_con.setdefault(order.con_id, []).append(order)
        for con_id, orders in by_con.items():
            inst = self.catalog.by_con_id[con_id]
            for series in inst.finest_first():
                indices = series.ends_between(before, after)
                if len(indices):
                    break
            else:
                continue
            for index in indices:
                bar = bar_at(series, index, con_id)
                held = [o for o in orders if self._held(o)]
                self._match_bar(inst, bar, [o for o in orders if o not in held])
                # children released by a fill on this bar work for the rest of it (a market entry fills at the
                # open, the bar's range comes after it), as the replay checks a position's exits on its entry bar
                self._match_bar(inst, bar, [o for o in held if not self._held(o)])
        self._expire_day_orders(after)

    def _expire_day_orders(self, now: datetime) -> None:
        """A DAY order (regular hours) ends at its session's close, as at IB: once the clock reaches the close,
        after that session's last bar was matched, it is cancelled (a partly filled one keeps its fills)."""
        for order in sorted(self.state.open_orders(), key=lambda o: o.perm_id):
            if order.is_done or order.tif != "DAY" or order.outside_rth:
                continue
            hours = session_hours(order_session(order.placed_at))
            if hours is not None and hours[1] <= now:
                self._cancel(order, "Cancelled (DAY order expired)", with_error=False)

    def _match_bar(self, inst: Instrument, bar: Bar, orders: list[SimOrder]) -> None:
        """Match ``orders`` against one completed bar in the bar's time order: what fills at the open first (MKT,
        a stop triggered earlier), then stops, then limits; so a bracket's stop wins a bar that touches both its
        stop and its target (:func:`services.market.matching.bracket_exit`), and a market close at the open goes
        before a stop the bar reaches later."""
        for order in sorted(orders, key=lambda o: (_phase(o), o.perm_id)):
            if order.is_done or self._held(order):
                continue
            if order.tif == "DAY" and bar.session > order_session(order.placed_at):
                self._cancel(order, "Cancelled (DAY order expired)", with_error=False)
                continue
            if not (bar.in_rth or order.outside_rth):
                continue
            was_triggered = order.triggered
            price = self.matcher.bar_price(order, bar)
            self._after_trigger(order, inst, was_triggered)
            if price is not None:
                self._fill(order, inst, bar, price, when=bar.end)

    def _after_trigger(self, order: SimOrder, inst: Instrument, was_triggered: bool) -> None:
        if order.triggered and not was_triggered and order.status == SimOrderStatus.PRE_SUBMITTED:
            order.status = SimOrderStatus.SUBMITTED
            self.outbox.to_client(order.client_id, lambda _v: m.order_status(order))

    def _fill(self, order: SimOrder, inst: Instrument, bar: Bar, price: Decimal, when: datetime | None = None) -> None:
        qty = self.matcher.take(order, bar)
        if qty <= 0:
            return
        execution = book_fill(self.state, order, qty, price, when or self.clock.now)
        self._send_fill(order, inst, execution)
        self.outbox.account_changed(order.account, order.con_id)
        self._after_fill(order, qty)

    def _send_fill(self, order: SimOrder, inst: Instrument, ex: SimExecution) -> None:
        out = self.outbox
        if self.early_commission_report:
            out.to_client(order.client_id, lambda _v: m.commission_report(ex, inst.currency))
        out.to_client(order.client_id, lambda v: m.exec_details(v, -1, ex, inst))
        out.to_client(order.client_id, lambda v: m.open_order(v, order, inst))
        out.to_client(order.client_id, lambda _v: m.order_status(order))
        if not self.early_commission_report:
            out.to_client(order.client_id, lambda _v: m.commission_report(ex, inst.currency))

    # ---- account -----------------------------------------------------------------------------------------

    def mark_price(self, con_id: int) -> Decimal | None:
        inst = self.catalog.by_con_id.get(con_id)
        last = inst.last_bar(self.clock.now) if inst is not None else None
        if inst is None or last is None:
            return None
        series, index = last
        return bar_at(series, index, con_id).close

    def portfolio(self, account: str) -> list[tuple[Instrument, Decimal, Decimal, Decimal, Decimal]]:
        """(instrument, quantity, market price, avg cost, realized) for every position in ``account``."""
        rows = []
        for (acct, con_id), pos in sorted(self.state.positions.items()):
            if acct != account or (pos.quantity == 0 and pos.realized_pnl == 0):
                continue
            price = self.mark_price(con_id) or pos.avg_cost
            rows.append((self.catalog.by_con_id[con_id], pos.quantity, price, pos.avg_cost, pos.realized_pnl))
        return rows

    def account_values(self, account: str) -> list[tuple[str, str, str]]:
        """(tag, value, currency) with a simplified margin model: 25% initial and maintenance margin."""
        cash = self.state.cash.get(account, Decimal(0))
        market_value = Decimal(0)
        gross = Decimal(0)
        unrealized = Decimal(0)
        realized = Decimal(0)
        for _inst, qty, price, avg_cost, real in self.portfolio(account):
            market_value += qty * price
            gross += abs(qty * price)
            unrealized += qty * (price - avg_cost)
            realized += real
        net_liq = cash + market_value
        margin = (gross * MARGIN_RATE).quantize(Decimal("0.01"))
        available = net_liq - margin
        cushion = (available / net_liq).quantize(Decimal("0.0001")) if net_liq else Decimal(0)
        leverage = (gross / net_liq).quantize(Decimal("0.0001")) if net_liq else Decimal(0)
        usd = {
            "NetLiquidation": net_liq,
            "TotalCashValue": cash,
            "SettledCash": cash,
            "CashBalance": cash,
            "AccruedCash": Decimal(0),
            "BuyingPower": available * 4,
            "EquityWithLoanValue": net_liq,
            "PreviousDayEquityWithLoanValue": net_liq,
            "GrossPositionValue": gross,
            "StockMarketValue": market_value,
            "RegTEquity": net_liq,
            "RegTMargin": margin,
            "SMA": available,
            "InitMarginReq": margin,
            "MaintMarginReq": margin,
            "AvailableFunds": available,
            "ExcessLiquidity": available,
            "FullInitMarginReq": margin,
            "FullMaintMarginReq": margin,
            "FullAvailableFunds": available,
            "FullExcessLiquidity": available,
            "LookAheadInitMarginReq": margin,
            "LookAheadMaintMarginReq": margin,
            "LookAheadAvailableFunds": available,
            "LookAheadExcessLiquidity": available,
            "UnrealizedPnL": unrealized,
            "RealizedPnL": realized,
        }
        values = [("AccountType", "INDIVIDUAL", ""), ("Currency", "USD", "USD")]
        values += [(k, m.text(v.quantize(Decimal("0.01"))), "USD") for k, v in usd.items()]
        values += [
            ("Cushion", m.text(cushion), ""),
            ("Leverage", m.text(leverage), ""),
            ("DayTradesRemaining", "-1", ""),
            ("LookAheadNextChange", "0", ""),
            ("HighestSeverity", "0", ""),
        ]
        return values
