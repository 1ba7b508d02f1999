"""Golden-frame checks: the simulator's layouts decoded by ib_async's own Decoder, field counts as documented."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from ib_async import IB

from simulator import messages as m
from simulator.catalog import KNOWN_SYMBOLS, Instrument
from simulator.state import SimExecution, SimOrder, SimOrderStatus
from simulator.wire import FrameReader, encode
from tests.simulator.helpers import LogGuard

NOW = datetime(2012, 6, 27, 15, 0, tzinfo=UTC)


def _spy() -> Instrument:
    k = KNOWN_SYMBOLS["SPY"]
    return Instrument(k.con_id, k.symbol, k.sec_type, k.primary_exchange, k.long_name)


def _order() -> SimOrder:
    return SimOrder(
        client_id=7,
        order_id=42,
        perm_id=1_000_000_042,
        con_id=756733,
        account="DU1234567",
        action="BUY",
        quantity=Decimal(300),
        order_type="LMT",
        lmt_price=Decimal("132.80"),
        aux_price=None,
        tif="GTC",
        order_ref="intent-1",
        outside_rth=False,
        parent_id=0,
        placed_at=NOW,
        status=SimOrderStatus.SUBMITTED,
    )


def _wire(fields: m.Fields) -> list[str]:
    """Encode and decode one frame exactly as it travels over the socket."""
    [decoded] = FrameReader().feed(encode(fields))
    return decoded


def _ib(version: int) -> IB:
    ib = IB()
    ib.client.decoder.serverVersion = version
    ib.wrapper.clientId = 7
    return ib


@pytest.mark.parametrize(("version", "size"), [(178, 135), (176, 136)])
async def test_open_order_layout_decodes(version: int, size: int) -> None:
    frame = _wire(m.open_order(version, _order(), _spy()))
    assert len(frame) == size
    ib = _ib(version)
    ib.client.decoder.interpret(frame)
    [trade] = ib.wrapper.trades.values()
    assert trade.order.orderRef == "intent-1" and trade.order.permId == 1_000_000_042
    assert (trade.order.lmtPrice, trade.order.totalQuantity, trade.order.tif) == (132.80, 300.0, "GTC")
    assert trade.orderStatus.status == "Submitted" and trade.contract.conId == 756733


# 96/97 plus the 4-field delta-neutral block that follows TWS's "None" deltaNeutralOrderType
@pytest.mark.parametrize(("version", "size"), [(178, 100), (176, 101)])
async def test_completed_order_layout_decodes(version: int, size: int) -> None:
    order = _order()
    order.status = SimOrderStatus.FILLED
    order.filled = Decimal(300)
    order.completed_at = NOW
    order.completed_status = "Filled"
    frame = _wire(m.completed_order(version, order, _spy()))
    assert len(frame) == size
    ib = _ib(version)
    ib.wrapper.startReq("completedOrders")
    ib.client.decoder.interpret(frame)
    [trade] = ib.wrapper._results["completedOrders"]
    assert trade.order.orderRef == "intent-1" and trade.order.filledQuantity == 300
    assert trade.orderStatus.status == "Filled" and trade.order.permId == 1_000_000_042


@pytest.mark.parametrize("version", [176, 178])
async def test_exec_details_and_commission_decode(version: int) -> None:
    ex = SimExecution(
        exec_id="0000e0d5.3b9aca2a.01.01",
        perm_id=1_000_000_042,
        order_id=42,
        client_id=7,
        con_id=756733,
        account="DU1234567",
        side="BOT",
        shares=Decimal(300),
        price=Decimal("132.80"),
        time=NOW,
        cum_qty=Decimal(300),
        avg_price=Decimal("132.80"),
        order_ref="intent-1",
        commission=Decimal("1.5"),
        realized_pnl=None,
    )
    ib = _ib(version)
    ib.wrapper.startReq(5)
    ib.client.decoder.interpret(_wire(m.exec_details(version, 5, ex, _spy())))
    ib.client.decoder.interpret(_wire(m.commission_report(ex)))
    [fill] = ib.wrapper._results[5]
    assert fill.execution.time == NOW and fill.execution.orderRef == "intent-1"
    assert fill.execution.shares == 300 and fill.execution.price == 132.80
    assert fill.commissionReport.commission == 1.5 and fill.commissionReport.realizedPNL == 0.0
    assert len(_wire(m.commission_report(ex))) == 8


def test_exact_arity_messages() -> None:
    spy = _spy()
    assert len(_wire(m.position("DU1", spy, Decimal(1), Decimal(2)))) == 16
    assert len(_wire(m.portfolio_value(spy, "DU1", Decimal(1), Decimal(2), Decimal(2), Decimal(0)))) == 20
    assert len(_wire(m.tick_price(1, 4, 1.5, 100))) == 7
    assert len(_wire(m.next_valid_id(1))) == 3 and len(_wire(m.managed_accounts(["DU1", "DU2"]))) == 3


def test_the_log_guard_catches_silent_decoder_errors(ib_log: LogGuard) -> None:
    ib = _ib(178)
    ib.client.decoder.interpret(["1", "6", "1", "4", "1.5"])  # tickPrice needs exactly 7 fields
    assert any("Error handling fields" in msg for msg in ib_log.unexpected())
    ib_log.allow(r"Error handling fields")
    assert ib_log.unexpected()  # decoder errors can never be allowed
    ib_log.handler.records.clear()  # this test provoked it on purpose


@pytest.mark.parametrize(("version", "size"), [(178, 3 + 2 * 13), (175, 3 + 2 * 11)])
async def test_symbol_samples_layout_decodes(version: int, size: int) -> None:
    k = KNOWN_SYMBOLS["SPX"]
    spx = Instrument(k.con_id, k.symbol, k.sec_type, k.primary_exchange, k.long_name)
    frame = _wire(m.symbol_samples(version, 9, [spx, _spy()]))
    assert len(frame) == size  # two contracts of 6 fields + 5 derivative types (+ description, issuerId >= 176)
    ib = _ib(version)
    answer = ib.wrapper.startReq(9)
    ib.client.decoder.interpret(frame)
    first, second = answer.result()
    assert (first.contract.conId, first.contract.symbol, first.contract.secType) == (416904, "SPX", "IND")
    assert (second.contract.primaryExchange, second.contract.currency) == ("ARCA", "USD")
    assert second.derivativeSecTypes == ["CFD", "OPT", "IOPT", "WAR", "BAG"]
    assert second.contract.description == ("SPDR S&P 500 ETF TRUST" if version >= 176 else "")
