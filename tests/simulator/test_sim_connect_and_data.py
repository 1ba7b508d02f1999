"""Handshake, startup sync, contract details, historical bars and pacing, through the real ib_async client."""

from __future__ import annotations

import asyncio
import struct
from datetime import date, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
from ib_async import IB, Contract, Index, MarketOrder, RequestError, Stock

from models.enums import BarSize
from services.bars.loader import load_bars
from services.bars.resample import resample_bars
from simulator import ManualTime, SimConfig, SimServer
from simulator.catalog import EASTERN, bar_files, symbol_from_filename
from simulator.config import default_data_dir
from simulator.wire import FrameReader, encode
from tests.simulator.helpers import Connect, eventually

DATA = default_data_dir()
SYNTHETIC = DATA / "synthetic"  # generated daily series, outside the default catalog


async def test_connect_negotiates_178_and_answers_every_sync_request(sim: SimServer) -> None:
    # Every startup-sync request must be answered: an unanswered one times out and raiseSyncErrors turns that
    # into a ConnectionError (the connect time itself is a figure of benchmarks/bench_broker.py).
    ib = IB()
    try:
        await ib.connectAsync("127.0.0.1", sim.port, clientId=3, timeout=20, raiseSyncErrors=True)
        assert ib.client.serverVersion() == 178
        assert ib.managedAccounts() == ["DU1234567"]
        assert ib.isConnected()
        sync_ids = {int(f[0]) for c, f in sim.received if c == 3}
        assert {71, 61, 5, 99, 6, 76, 7} <= sync_ids
        assert sim.stats.connections == 1
    finally:
        ib.disconnect()


async def test_server_version_176_is_negotiated(pacing_time: ManualTime, connect: Connect) -> None:
    async with SimServer(SimConfig(data_dir=DATA, server_version=176, pacing_time=pacing_time)) as old:
        ib = await connect(client_id=4, server=old)
        assert ib.client.serverVersion() == 176
        [cd] = await ib.reqContractDetailsAsync(Stock("AAPL", "SMART", "USD"))
        assert cd.contract is not None and cd.contract.conId == 265598
        trade = ib.placeOrder(cd.contract, MarketOrder("BUY", 10, orderRef="v176"))
        await eventually(lambda: trade.isDone() and trade.fills[-1].commissionReport.commission > 0)
        ib.disconnect()
        again = await connect(client_id=4, server=old)  # completed orders and executions in the 176 layouts
        assert [t.order.orderRef for t in again.trades()] == ["v176"]
        assert [f.execution.orderRef for f in again.fills()] == ["v176"]
        again.disconnect()


async def test_current_time_is_the_market_clock(sim: SimServer, connect: Connect) -> None:
    ib = await connect()
    sim.clock.set("2012-06-27T15:00:00Z")
    assert await ib.reqCurrentTimeAsync() == datetime.fromisoformat("2012-06-27T15:00:00+00:00")


async def test_contract_details_for_spy_and_the_index(sim: SimServer, connect: Connect) -> None:
    ib = await connect()
    [spy] = await ib.reqContractDetailsAsync(Stock("SPY", "SMART", "USD"))
    assert spy.contract is not None
    assert (spy.contract.conId, spy.contract.primaryExchange, spy.contract.exchange) == (756733, "ARCA", "SMART")
    assert spy.longName == "SPDR S&P 500 ETF TRUST"
    assert spy.timeZoneId == "US/Eastern"
    assert spy.minTick == 0.01 and spy.sizeIncrement == 1
    assert ":0930-" in spy.liquidHours
    [spx] = await ib.reqContractDetailsAsync(Index("SPX", "CBOE", "USD"))
    assert spx.contract is not None and spx.contract.secType == "IND"
    aapl = Stock("AAPL", "SMART", "USD")
    [qualified] = await ib.qualifyContractsAsync(aapl)
    assert qualified is aapl and aapl.conId == 265598 and aapl.primaryExchange == "NASDAQ"
    by_con_id = Contract(conId=756733)
    await ib.qualifyContractsAsync(by_con_id)
    assert by_con_id.symbol == "SPY"


async def test_unknown_symbol_is_error_200(sim: SimServer, connect: Connect, ib_log) -> None:
    ib_log.allow(r"Error 200, reqId \d+: No security definition")
    ib = await connect()
    errors: list[int] = []
    ib.errorEvent += lambda _req, code, _msg, _c: errors.append(code)
    assert await ib.qualifyContractsAsync(Stock("NOPE", "SMART", "USD")) == [None]
    assert errors == [200]
    ib.RaiseRequestErrors = True
    with pytest.raises(RequestError) as info:
        await ib.reqContractDetailsAsync(Stock("SPY", "SMART", "EUR"))
    assert info.value.code == 200


def _files() -> list[Path]:
    return bar_files(DATA)


async def _fetch_all(ib: IB, sim: SimServer, pacing: ManualTime, path: Path, format_date: int) -> list:
    """Fetch every bar of one file from the simulator at its native bar size (several requests if needed)."""
    loaded = load_bars(path)
    frame = loaded.frame
    assert loaded.bar_size is not None
    contract = Stock(symbol_from_filename(path), "SMART", "USD")
    if symbol_from_filename(path) == "SPX":
        contract = Index("SPX", "CBOE", "USD")
    await ib.qualifyContractsAsync(contract)
    last = frame["timestamp"].iloc[-1]
    sim.clock.set(last + pd.Timedelta(days=1))
    bars: list = []
    if loaded.bar_size == BarSize.DAY_1:
        years = last.year - frame["timestamp"].iloc[0].year + 2
        bars = await ib.reqHistoricalDataAsync(
            contract, "", f"{years} Y", "1 day", "TRADES", False, format_date, timeout=10
        )
        return list(bars)
    days = sorted(set(pd.DatetimeIndex(frame["timestamp"]).tz_convert(EASTERN).date))
    for day in days:  # IB allows at most "1 D" of 1-min bars per request
        pacing.advance(16)
        end = f"{day:%Y%m%d} 23:59:59 US/Eastern"
        chunk = await ib.reqHistoricalDataAsync(
            contract, end, "1 D", loaded.bar_size.value, "TRADES", False, format_date, timeout=10
        )
        assert chunk, f"no bars for {path.name} on {day}"
        bars.extend(chunk)
    return bars


def _assert_round_trip(bars: list, path: Path) -> None:
    loaded = load_bars(path)
    frame = loaded.frame.sort_values("timestamp").reset_index(drop=True)
    assert len(bars) == len(frame)
    daily = loaded.bar_size == BarSize.DAY_1
    for bar, row in zip(bars, frame.itertuples(index=False), strict=True):
        ts = row.timestamp
        if daily:
            assert type(bar.date) is date and bar.date == ts.date()
        else:
            assert isinstance(bar.date, datetime) and bar.date.tzinfo is not None
            assert bar.date == ts.to_pydatetime()
        assert (bar.open, bar.high, bar.low, bar.close) == (row.open, row.high, row.low, row.close)
        assert bar.volume == row.volume
        if "wap" in frame.columns:
            assert bar.average == row.wap and bar.barCount == int(row.trade_count)


@pytest.mark.parametrize("path", _files(), ids=lambda p: p.name)
async def test_history_round_trips_every_sample_file(
    sim: SimServer, connect: Connect, pacing_time: ManualTime, path: Path
) -> None:
    ib = await connect()
    format_date = 2 if path.name.startswith("nt-") else 1
    _assert_round_trip(await _fetch_all(ib, sim, pacing_time, path, format_date), path)


async def test_history_round_trips_twenty_years_of_daily_bars(pacing_time: ManualTime, connect: Connect) -> None:
    # the shipped synthetic series (services.bars.synthetic): 5,036 daily bars served as symbol SYNTH
    path = SYNTHETIC / "SYNTH-1995-2014.csv"
    async with SimServer(SimConfig(data_dir=SYNTHETIC, pacing_time=pacing_time)) as server:
        ib = await connect(server=server)
        bars = await _fetch_all(ib, server, pacing_time, path, 1)
        assert len(bars) == 5036
        _assert_round_trip(bars, path)
        ib.disconnect()


async def test_coarser_bars_are_resampled_from_the_finest_series(sim: SimServer, connect: Connect) -> None:
    ib = await connect()
    spy = Stock("SPY", "SMART", "USD")
    await ib.qualifyContractsAsync(spy)
    sim.clock.set("2012-06-28T02:00:00Z")
    bars = await ib.reqHistoricalDataAsync(spy, "", "1 D", "1 hour", "TRADES", True, timeout=10)
    frame = load_bars(DATA / "ib-spy-5min-20120627.csv").frame
    local = pd.DatetimeIndex(frame["timestamp"]).tz_convert(EASTERN)
    minutes = local.hour * 60 + local.minute
    rth = frame[(minutes >= 570) & (minutes < 960)].reset_index(drop=True)
    expected = resample_bars(rth, BarSize.HOUR_1)
    assert [b.date for b in bars] == [t.to_pydatetime() for t in expected["timestamp"]]
    assert [b.close for b in bars] == list(expected["close"])
    assert [b.volume for b in bars] == list(expected["volume"])
    assert bars[0].date.astimezone(EASTERN).hour == 9  # 09:30-10:00 forms the first (partial) hour


async def test_bars_after_now_are_never_served(sim: SimServer, connect: Connect) -> None:
    ib = await connect()
    spy = Stock("SPY", "SMART", "USD")
    await ib.qualifyContractsAsync(spy)
    sim.clock.set("2012-06-27T14:00:00Z")  # 10:00 New York
    bars = await ib.reqHistoricalDataAsync(spy, "20121231 00:00:00 UTC", "1 D", "5 mins", "TRADES", False, timeout=10)
    assert bars and max(b.date for b in bars) + timedelta(minutes=5) <= sim.clock.now
    daily = await ib.reqHistoricalDataAsync(spy, "", "5 D", "1 day", "TRADES", True, timeout=10)
    assert daily[-1].date == date(2012, 6, 26)


async def test_adjusted_last_and_midpoint(sim: SimServer, connect: Connect) -> None:
    ib = await connect()
    spy = Stock("SPY", "SMART", "USD")
    await ib.qualifyContractsAsync(spy)
    frame = load_bars(DATA / "yahoofinance-SPY-20080101-20180101.csv").frame
    sim.clock.set("2010-01-01T00:00:00Z")
    row = frame[frame["timestamp"] == pd.Timestamp("2009-12-31T00:00:00Z")].iloc[0]
    adjusted = await ib.reqHistoricalDataAsync(spy, "", "1 M", "1 day", "ADJUSTED_LAST", True, timeout=10)
    assert adjusted[-1].date == date(2009, 12, 31)
    assert adjusted[-1].close == pytest.approx(row["adj_close"])
    assert adjusted[-1].open == pytest.approx(row["open"] * row["adj_close"] / row["close"])
    assert adjusted[-1].close < row["close"] - 1  # dividends adjusted away
    mid = await ib.reqHistoricalDataAsync(spy, "", "1 M", "1 day", "MIDPOINT", True, timeout=10)
    assert mid[-1].close == row["close"] and mid[-1].volume == -1


async def test_invalid_requests_get_ib_errors(sim: SimServer, connect: Connect, ib_log) -> None:
    ib_log.allow(r"Error 162, reqId \d+: Historical Market Data Service error message:Time length exceed max")
    ib_log.allow(r"Error 162, reqId \d+: .*Invalid duration")
    ib = await connect()
    ib.RaiseRequestErrors = True
    spy = Stock("SPY", "SMART", "USD")
    await ib.qualifyContractsAsync(spy)
    with pytest.raises(RequestError) as too_long:
        await ib.reqHistoricalDataAsync(spy, "", "1 Y", "1 min", "TRADES", True, timeout=5)
    assert too_long.value.code == 162
    with pytest.raises(RequestError) as bad_duration:
        await ib.reqHistoricalDataAsync(spy, "", "one year", "1 day", "TRADES", True, timeout=5)
    assert bad_duration.value.code == 162
    codes: list[int] = []
    ib.errorEvent += lambda _req, code, _msg, _c: codes.append(code)
    # 321 is a warning for ib_async: the request is not ended and runs into its own timeout, as against real TWS.
    bars = await ib.reqHistoricalDataAsync(spy, "", "1 D", "7 mins", "TRADES", True, timeout=0.3)
    assert list(bars) == [] and codes == [321]


async def test_pacing_violations_with_simulated_time(
    sim: SimServer, connect: Connect, pacing_time: ManualTime, ib_log
) -> None:
    ib_log.allow(r"Error 162, reqId \d+: Historical Market Data Service error message:Historical data request pacing")
    ib = await connect()
    ib.RaiseRequestErrors = True
    aapl = Stock("AAPL", "SMART", "USD")
    await ib.qualifyContractsAsync(aapl)
    sim.clock.set("2014-09-01T00:00:00Z")

    async def request(days: int) -> int:
        try:
            await ib.reqHistoricalDataAsync(aapl, "", f"{days} D", "1 day", "TRADES", True, timeout=5)
        except RequestError as exc:
            return exc.code
        return 0

    assert await request(10) == 0
    assert await request(10) == 162  # identical within 15 s
    pacing_time.advance(15)
    assert await request(10) == 0
    pacing_time.advance(15)
    assert [await request(d) for d in range(20, 26)] == [0, 0, 0, 0, 0, 162]  # 6th within 2 s
    pacing_time.advance(2)
    results = []
    for d in range(30, 90):
        results.append(await request(d))
        pacing_time.advance(2)
    # 7 served so far + 53 more = 60 in the window; the 61st within 10 minutes is refused
    assert results[:53] == [0] * 53 and set(results[53:]) == {162}
    pacing_time.advance(600)
    assert await request(200) == 0
    assert sim.stats.pacing_violations == 2 + len(results[53:])
    assert sim.stats.hist_requests == 61


async def test_snapshot_market_data(sim: SimServer, connect: Connect) -> None:
    ib = await connect()
    spy = Stock("SPY", "SMART", "USD")
    await ib.qualifyContractsAsync(spy)
    sim.clock.set("2012-06-27T17:02:00Z")  # 13:02 New York: the 12:55-13:00 bar is the last complete one
    [ticker] = await ib.reqTickersAsync(spy)
    frame = load_bars(DATA / "ib-spy-5min-20120627.csv").frame
    bar = frame[frame["timestamp"] == pd.Timestamp("2012-06-27T16:55:00Z")].iloc[0]
    assert ticker.last == pytest.approx(bar["close"])
    assert ticker.bid < ticker.last < ticker.ask
    ib.reqMarketDataType(3)
    sim.clock.set("2014-09-02T00:00:00Z")
    [delayed] = await ib.reqTickersAsync(Stock("AAPL", "SMART", "USD", conId=265598))
    assert delayed.marketDataType == 3
    assert delayed.last == pytest.approx(load_bars(DATA / "AAPL.csv").frame["close"].iloc[-1])


async def test_keep_up_to_date_streams_new_bars_on_advance(sim: SimServer, connect: Connect) -> None:
    ib = await connect()
    spy = Stock("SPY", "SMART", "USD")
    await ib.qualifyContractsAsync(spy)
    sim.clock.set("2012-06-27T15:00:00Z")
    bars = await ib.reqHistoricalDataAsync(spy, "", "1 D", "5 mins", "TRADES", True, keepUpToDate=True, timeout=10)
    assert bars[-1].date == datetime.fromisoformat("2012-06-27T14:55:00+00:00")
    before = len(bars)
    sim.clock.advance(2, symbol="SPY")
    # Barrier: the simulator pushes bar updates synchronously on advance, so they precede this reply on the socket.
    assert await ib.reqCurrentTimeAsync()
    assert len(bars) == before + 2  # the barrier sees pushed bars (what makes the negative check below valid)
    assert [b.date.minute for b in bars[-2:]] == [0, 5] and bars[-1].close == 132.99
    ib.cancelHistoricalData(bars)
    assert await ib.reqCurrentTimeAsync()  # the simulator has read the cancel (one connection, in order)
    sim.clock.advance(1, symbol="SPY")
    assert await ib.reqCurrentTimeAsync()
    assert len(bars) == before + 2


async def _raw_hello(port: int, greeting: bytes, extra: bytes = b"") -> list[list[str]]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"API\0" + struct.pack(">I", len(greeting)) + greeting + extra)
    await writer.drain()
    frames = FrameReader()
    received: list[list[str]] = []
    try:
        while len(received) < 3:
            data = await asyncio.wait_for(reader.read(4096), 1)
            if not data:
                break
            received += frames.feed(data)
    finally:
        writer.close()
    return received


async def test_raw_handshake_negotiates_and_refuses_old_clients(sim: SimServer) -> None:
    start_api = encode([71, 2, 42, ""])  # sent in the same packet as the greeting
    frames = await _raw_hello(sim.port, b"v100..200", start_api)
    assert frames[0][0] == "178" and frames[0][1].endswith(" UTC")
    assert frames[1] == ["15", "1", "DU1234567"] and frames[2] == ["9", "1", "1"]
    assert await _raw_hello(sim.port, b"v100..150") == []  # below 157: closed without a reply
