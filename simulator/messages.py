"""Server -> client message layouts, as ib_async 2.1.0's decoder reads them (server versions 157-178).

Each builder returns the list of fields of one message (message id first). Layouts follow
``ib_async/decoder.py``; EXACT-arity messages (tickPrice 7, commissionReport 8, position 16, updatePortfolio 20,
nextValidId 3, managedAccounts 3) must not gain or lose a field.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal

from simulator.catalog import Instrument, trading_hours
from simulator.state import SimExecution, SimOrder
from simulator.wire import UNSET_DOUBLE, Field, fmt, ib_time

Fields = list[Field]

ORDER_TYPES = "ACTIVETIM,AD,ADJUST,ALERT,ALLOC,DAY,GAT,GTC,GTD,IOC,LMT,MKT,MOC,STP,STPLMT,WHATIF"


def next_valid_id(order_id: int) -> Fields:
    return [9, 1, order_id]


def managed_accounts(accounts: Sequence[str]) -> Fields:
    return [15, 1, ",".join(accounts)]


def error(server_version: int, req_id: int, code: int, message: str) -> Fields:
    fields: Fields = [4, 2, req_id, code, message]
    if server_version >= 166:
        fields.append("")  # advancedOrderRejectJson
    return fields


def current_time(epoch: int) -> Fields:
    return [49, 1, epoch]


def contract_details(server_version: int, req_id: int, inst: Instrument, exchange: str, today: date) -> Fields:
    """Message 10. Below 164 it carries a version field and mdSizeMultiplier, and no size fields."""
    head: Fields = [10] if server_version >= 164 else [10, 8]
    fields: Fields = [
        *head,
        req_id,
        inst.symbol,
        inst.sec_type,
        "",  # lastTradeDate
        0,  # strike
        "",  # right
        exchange,
        inst.currency,
        inst.local_symbol,
        inst.symbol if inst.sec_type == "IND" else "NMS",  # marketName
        inst.symbol,  # tradingClass
        inst.con_id,
        inst.min_tick,
    ]
    if server_version < 164:
        fields.append(1)  # mdSizeMultiplier
    fields += [
        "",  # multiplier
        ORDER_TYPES,
        inst.valid_exchanges,
        1,  # priceMagnifier
        0,  # underConId
        inst.long_name,
        inst.primary_exchange,
        "",  # contractMonth
        inst.industry,
        inst.category,
        "",  # subcategory
        inst.time_zone_id,
        trading_hours(today, extended=inst.sec_type != "IND"),
        trading_hours(today, extended=False),
        "",  # evRule
        "",  # evMultiplier
        0,  # numSecIds
        1,  # aggGroup
        "",  # underSymbol
        "",  # underSecType
        "26",  # marketRuleIds
        "",  # realExpirationDate
        "ETF" if inst.symbol == "SPY" else ("COMMON" if inst.sec_type == "STK" else ""),
    ]
    if server_version == 163:
        fields.append(inst.size_increment)
    if server_version >= 164:
        fields += [inst.size_increment, inst.size_increment, inst.size_increment]
    return fields


def contract_details_end(req_id: int) -> Fields:
    return [52, 1, req_id]


def symbol_samples(server_version: int, req_id: int, found: Sequence[Instrument]) -> Fields:
    """Message 79 (reqMatchingSymbols' answer): per contract conId, symbol, secType, primaryExchange, currency,
    the count and list of derivative sec types, then (>= 176) description and issuerId."""
    fields: Fields = [79, req_id, len(found)]
    for inst in found:
        kinds = inst.derivative_sec_types
        fields += [inst.con_id, inst.symbol, inst.sec_type, inst.primary_exchange, inst.currency, len(kinds), *kinds]
        if server_version >= 176:
            fields += [inst.long_name, ""]
    return fields


def historical_data(req_id: int, start: str, end: str, rows: Sequence[Sequence[str]]) -> Fields:
    fields: Fields = [17, req_id, start, end, len(rows)]
    for row in rows:
        fields.extend(row)
    return fields


def tick_price(req_id: int, tick_type: int, price: float, size: float) -> Fields:
    return [1, 6, req_id, tick_type, price, size, 0]


def tick_size(req_id: int, tick_type: int, size: float) -> Fields:
    return [2, 6, req_id, tick_type, size]


def market_data_type(req_id: int, data_type: int) -> Fields:
    return [58, 1, req_id, data_type]


def tick_snapshot_end(req_id: int) -> Fields:
    return [57, 1, req_id]


def _contract11(inst: Instrument, *, primary: bool = False) -> Fields:
    """conId..tradingClass without primaryExchange (11 fields; ``primary`` puts it in place of exchange)."""
    return [
        inst.con_id,
        inst.symbol,
        inst.sec_type,
        "",
        0,
        "",
        "",
        inst.primary_exchange if primary else inst.exchange,
        inst.currency,
        inst.local_symbol,
        inst.symbol,
    ]


def _price(value: Decimal | None) -> Field:
    return value if value is not None else Decimal(0)


@dataclass(frozen=True)
class WhatIf:
    """The order-state block of a whatIf answer: 9 margin values (before, change, after) and the commission."""

    init_before: Decimal
    maint_before: Decimal
    equity_before: Decimal
    change: Decimal
    commission: Decimal

    def margin_fields(self) -> Fields:
        after = self.init_before + self.change
        equity_after = self.equity_before - self.commission
        return [
            self.init_before,
            self.maint_before,
            self.equity_before,
            self.change,
            self.change,
            -self.commission,
            after,
            self.maint_before + self.change,
            equity_after,
        ]


def open_order(server_version: int, order: SimOrder, inst: Instrument, what_if: WhatIf | None = None) -> Fields:
    """Message 5 for a plain STK order (no combo, scale, hedge, algo, conditions or peg): 135 fields at 178."""
    fields: Fields = [5, order.order_id, *_contract11(inst)]
    fields += [
        order.action,
        order.quantity,
        order.order_type,
        _price(order.lmt_price),
        _price(order.aux_price),
        order.tif,
        order.oca_group,
        order.account,
        "O",  # openClose
        0,  # origin: customer
        order.order_ref,
        order.client_id,
        order.perm_id,
        order.outside_rth,
        False,  # hidden
        0,  # discretionaryAmt
        "",  # goodAfterTime
        "",  # sharesAllocation (ignored)
        "",  # faGroup
        "",  # faMethod
        "",  # faPercentage
    ]
    if server_version < 177:
        fields.append("")  # faProfile
    fields += [
        "",  # modelCode
        "",  # goodTillDate
        "",  # rule80A
        "",  # percentOffset
        "",  # settlingFirm
        0,  # shortSaleSlot
        "",  # designatedLocation
        -1,  # exemptCode
        0,  # auctionStrategy
        "",  # startingPrice
        "",  # stockRefPrice
        "",  # delta
        "",  # stockRangeLower
        "",  # stockRangeUpper
        "",  # displaySize
        False,  # blockOrder
        False,  # sweepToFill
        False,  # allOrNone
        "",  # minQty
        order.oca_type or 3,  # ocaType (3 when the client left it unset)
        False,  # eTradeOnly
        False,  # firmQuoteOnly
        "",  # nbboPriceCap
        order.parent_id,
        0,  # triggerMethod
        "",  # volatility
        0,  # volatilityType
        "None",  # deltaNeutralOrderType: TWS sends the string "None", so the 8-field block follows
        "",  # deltaNeutralAuxPrice
        "",  # deltaNeutralConId
        "",  # deltaNeutralSettlingFirm
        "",  # deltaNeutralClearingAccount
        "",  # deltaNeutralClearingIntent
        "",  # deltaNeutralOpenClose
        False,  # deltaNeutralShortSale
        "",  # deltaNeutralShortSaleSlot
        "",  # deltaNeutralDesignatedLocation
        False,  # continuousUpdate
        0,  # referencePriceType
        "",  # trailStopPrice
        "",  # trailingPercent
        "",  # basisPoints
        "",  # basisPointsType
        "",  # comboLegsDescrip
        0,  # numComboLegs
        0,  # numOrderComboLegs
        0,  # numSmartComboParams
        "",  # scaleInitLevelSize
        "",  # scaleSubsLevelSize
        "",  # scalePriceIncrement (unset: no scale block)
        "",  # hedgeType
        False,  # optOutSmartRouting
        "",  # clearingAccount
        "",  # clearingIntent
        False,  # notHeld
        0,  # dncPresent
        "",  # algoStrategy
        False,  # solicited
        what_if is not None,  # whatIf
        order.status.value,
        *(what_if.margin_fields() if what_if else [""] * 9),  # margin before/change/after
        what_if.commission if what_if else "",  # commission
        what_if.commission if what_if else "",  # minCommission
        what_if.commission if what_if else "",  # maxCommission
        inst.currency if what_if else "",  # commissionCurrency
        "",  # warningText
        False,  # randomizeSize
        False,  # randomizePrice
        0,  # numConditions
        "",  # adjustedOrderType
        "",  # triggerPrice
        "",  # trailStopPrice
        "",  # lmtPriceOffset
        "",  # adjustedStopPrice
        "",  # adjustedStopLimitPrice
        "",  # adjustedTrailingAmount
        0,  # adjustableTrailingUnit
        "",  # softDollarTier name
        "",  # softDollarTier val
        "",  # softDollarTier displayName
        "",  # cashQty
        False,  # dontUseAutoPriceForHedge
        False,  # isOmsContainer
        False,  # discretionaryUpToLimitPrice
        False,  # usePriceMgmtAlgo
    ]
    if server_version >= 159:
        fields.append("")  # duration
    if server_version >= 160:
        fields.append("")  # postToAts
    if server_version >= 162:
        fields.append(False)  # autoCancelParent
    if server_version >= 170:
        fields += ["", "", "", "", ""]  # minTradeQty, minCompeteSize, competeAgainstBestOffset, midOffsets
    return fields


def completed_order(server_version: int, order: SimOrder, inst: Instrument) -> Fields:
    """Message 101: like openOrder without orderId/clientId, shorter middle, completion tail."""
    fields: Fields = [101, *_contract11(inst)]
    fields += [
        order.action,
        order.quantity,
        order.order_type,
        _price(order.lmt_price),
        _price(order.aux_price),
        order.tif,
        order.oca_group,
        order.account,
        "O",  # openClose
        0,  # origin
        order.order_ref,
        order.perm_id,
        order.outside_rth,
        False,  # hidden
        0,  # discretionaryAmt
        "",  # goodAfterTime
        "",  # faGroup
        "",  # faMethod
        "",  # faPercentage
    ]
    if server_version < 177:
        fields.append("")  # faProfile
    fields += [
        "",  # modelCode
        "",  # goodTillDate
        "",  # rule80A
        "",  # percentOffset
        "",  # settlingFirm
        0,  # shortSaleSlot
        "",  # designatedLocation
        -1,  # exemptCode
        "",  # startingPrice
        "",  # stockRefPrice
        "",  # delta
        "",  # stockRangeLower
        "",  # stockRangeUpper
        "",  # displaySize
        False,  # sweepToFill
        False,  # allOrNone
        "",  # minQty
        order.oca_type or 3,  # ocaType (3 when the client left it unset)
        0,  # triggerMethod
        "",  # volatility
        0,  # volatilityType
        "None",  # deltaNeutralOrderType -> 4-field block follows
        "",  # deltaNeutralAuxPrice
        "",  # deltaNeutralConId
        False,  # deltaNeutralShortSale
        "",  # deltaNeutralShortSaleSlot
        "",  # deltaNeutralDesignatedLocation
        False,  # continuousUpdate
        0,  # referencePriceType
        "",  # trailStopPrice
        "",  # trailingPercent
        "",  # comboLegsDescrip
        0,  # numComboLegs
        0,  # numOrderComboLegs
        0,  # numSmartComboParams
        "",  # scaleInitLevelSize
        "",  # scaleSubsLevelSize
        "",  # scalePriceIncrement
        "",  # hedgeType
        "",  # clearingAccount
        "",  # clearingIntent
        False,  # notHeld
        0,  # dncPresent
        "",  # algoStrategy
        False,  # solicited
        order.status.value,
        False,  # randomizeSize
        False,  # randomizePrice
        0,  # numConditions
        "",  # trailStopPrice
        "",  # lmtPriceOffset
        "",  # cashQty
        False,  # dontUseAutoPriceForHedge
        False,  # isOmsContainer
        "",  # autoCancelDate
        order.filled,
        0,  # refFuturesConId
        False,  # autoCancelParent
        "",  # shareholder
        False,  # imbalanceOnly
        False,  # routeMarketableToBbo
        order.parent_perm_id or "",  # parentPermId
        ib_time(order.completed_at, inst.time_zone_id) if order.completed_at else "",
        order.completed_status,
    ]
    if server_version >= 170:
        fields += ["", "", "", "", ""]
    return fields


def completed_orders_end() -> Fields:
    return [102]


def open_order_end() -> Fields:
    return [53, 1]


def order_status(order: SimOrder) -> Fields:
    return [
        3,
        order.order_id,
        order.status.value,
        order.filled,
        order.remaining,
        order.avg_fill_price,
        order.perm_id,
        order.parent_id,
        order.last_fill_price,
        order.client_id,
        order.why_held,
        "",  # mktCapPrice
    ]


def exec_details(server_version: int, req_id: int, ex: SimExecution, inst: Instrument) -> Fields:
    fields: Fields = [
        11,
        req_id,
        ex.order_id,
        *_contract11(inst),
        ex.exec_id,
        ib_time(ex.time, inst.time_zone_id),
        ex.account,
        inst.primary_exchange,  # execution venue
        ex.side,
        ex.shares,
        ex.price,
        ex.perm_id,
        ex.client_id,
        0,  # liquidation
        ex.cum_qty,
        ex.avg_price,
        ex.order_ref,
        "",  # evRule
        "",  # evMultiplier
        "",  # modelCode
        2,  # lastLiquidity: removed liquidity
    ]
    if server_version >= 178:
        fields.append(False)  # pendingPriceRevision
    return fields


def exec_details_end(req_id: int) -> Fields:
    return [55, 1, req_id]


def commission_report(ex: SimExecution, currency: str = "USD") -> Fields:
    realized: Field = ex.realized_pnl if ex.realized_pnl is not None else UNSET_DOUBLE
    return [59, 1, ex.exec_id, ex.commission, currency, realized, UNSET_DOUBLE, ""]


def position(account: str, inst: Instrument, quantity: Decimal, avg_cost: Decimal) -> Fields:
    return [61, 3, account, *_contract11(inst), quantity, avg_cost]


def position_end() -> Fields:
    return [62, 1]


def account_value(key: str, value: str, currency: str, account: str) -> Fields:
    return [6, 2, key, value, currency, account]


def portfolio_value(
    inst: Instrument,
    account: str,
    quantity: Decimal,
    market_price: Decimal,
    avg_cost: Decimal,
    realized: Decimal,
) -> Fields:
    market_value = quantity * market_price
    unrealized = market_value - quantity * avg_cost
    return [
        7,
        8,
        *_contract11(inst, primary=True),
        quantity,
        market_price,
        market_value,
        avg_cost,
        unrealized,
        realized,
        account,
    ]


def account_time(now: datetime) -> Fields:
    return [8, 1, f"{now:%H:%M}"]


def account_download_end(account: str) -> Fields:
    return [54, 1, account]


def account_update_multi(req_id: int, account: str, key: str, value: str, currency: str) -> Fields:
    return [73, 1, req_id, account, "", key, value, currency]


def account_update_multi_end(req_id: int) -> Fields:
    return [74, 1, req_id]


def account_summary(req_id: int, account: str, tag: str, value: str, currency: str) -> Fields:
    return [63, 1, req_id, account, tag, value, currency]


def account_summary_end(req_id: int) -> Fields:
    return [64, 1, req_id]


def text(value: Decimal) -> str:
    return fmt(value)
