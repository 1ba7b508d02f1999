import datetime as dt
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from cli import common
from cli.main import app
from models.enums import SecType
from services.broker.ib_adapter import IBBroker
from services.broker.loop_owner import SyncBroker
from services.broker.memory import MemoryBroker
from services.broker.pacing import ManualClock
from services.broker.types import ContractInfo, ContractSpec
from services.db import session_scope
from services.errors import BrokerConnectionError, InputError
from services.repositories import contracts
from services.settings import IBSettings
from services.symbols import MAX_BATCH, ResolveStatus, parse_symbols, refresh_all, resolve, resolve_batch
from simulator import SimConfig, SimServer

SPY = ContractInfo(
    conid=756733,
    symbol="SPY",
    sec_type=SecType.STK,
    exchange="SMART",
    primary_exchange="ARCA",
    currency="USD",
    min_tick=Decimal("0.01"),
    long_name="SPDR S&P 500 ETF TRUST",
)


class CountingSource:
    """A fake broker: answers qualify from a dict and counts the calls."""

    def __init__(self, *known: ContractInfo):
        self.known = {c.conid: c for c in known}
        self.calls = 0

    def qualify(self, spec: ContractSpec) -> ContractInfo:
        self.calls += 1
        return self.known[spec.conid]


def test_cache_hit_miss_and_ttl(db_url):
    source = CountingSource(SPY)
    opener = lambda: session_scope(db_url)  # noqa: E731
    t0 = dt.datetime(2026, 1, 5, 15, 0, tzinfo=dt.UTC)
    ttl = dt.timedelta(days=7)
    first = resolve(opener, source, SPY.to_spec(), ttl=ttl, now=t0)
    second = resolve(opener, source, SPY.to_spec(), ttl=ttl, now=t0 + dt.timedelta(days=6))
    expired = resolve(opener, source, SPY.to_spec(), ttl=ttl, now=t0 + dt.timedelta(days=8))
    assert (first.cache_hit, second.cache_hit, expired.cache_hit) == (False, True, False)
    assert source.calls == 2
    assert second.contract == SPY
    with session_scope(db_url) as session:
        stats = contracts.stats(session)
    assert (stats.entries, stats.hits, stats.misses) == (1, 1, 2)


def test_refresh_requalifies_every_entry(db_url):
    source = CountingSource(SPY)
    opener = lambda: session_scope(db_url)  # noqa: E731
    resolve(opener, source, SPY.to_spec(), ttl=dt.timedelta(days=1))
    assert [c.symbol for c in refresh_all(opener, source)] == ["SPY"]
    assert source.calls == 2


def test_cli_search_and_stats(tmp_path, monkeypatch):
    monkeypatch.setenv("TRADER_DATA_DIR", str(tmp_path))
    common.settings.cache_clear()
    runner = CliRunner()
    assert runner.invoke(app, ["init"]).exit_code == 0
    url = common.settings().database_url()
    resolve(lambda: session_scope(url), CountingSource(SPY), SPY.to_spec(), ttl=dt.timedelta(days=1))
    found = runner.invoke(app, ["symbols", "search", "--cached", "s&p 500"])
    assert found.exit_code == 0 and "756733" in found.output
    assert "no cached contract" in runner.invoke(app, ["symbols", "search", "--cached", "ZZZ"]).output
    stats = runner.invoke(app, ["symbols", "stats"])
    assert "entries 1" in stats.output and "misses 1" in stats.output
    common.settings.cache_clear()


# ---- against IB's reply shapes: real ib_async over the socket to the TWS simulator ----


@pytest.fixture
def sim_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[SimServer]:
    monkeypatch.setenv("TRADER_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("TRADER_IB__CONNECT_TIMEOUT_S", "2")
    common.settings.cache_clear()
    with SimServer.in_thread(SimConfig(port=0, accounts=("DU1234567",))) as sim:
        monkeypatch.setenv("TRADER_IB__PORT", str(sim.port))
        yield sim
    common.settings.cache_clear()


def test_cli_search_asks_ib_and_caches_the_matches(sim_env: SimServer) -> None:
    runner = CliRunner()
    found = runner.invoke(app, ["symbols", "search", "sp"])
    assert found.exit_code == 0, found.output
    assert "SPX" in found.stdout and "756733" in found.stdout and "CFD OPT IOPT" in found.stdout
    assert "2 match(es) from IB, 2 cached" in found.stdout
    url = common.settings().database_url()
    with session_scope(url) as session:
        rows = {row.symbol: row for row in contracts.search(session, "s")}
    assert set(rows) == {"SPX", "SPY"}
    spy = rows["SPY"]
    assert (spy.conid, spy.sec_type, spy.primary_exchange, spy.long_name) == (
        756733,
        "STK",
        "ARCA",
        "SPDR S&P 500 ETF TRUST",
    )
    assert spy.details["derivative_sec_types"] == ["CFD", "OPT", "IOPT", "WAR", "BAG"]
    assert ContractInfo.from_json(spy.details).min_tick == Decimal("0.01")  # full details: step 1 can use the row
    nothing = runner.invoke(app, ["symbols", "search", "zzzz"])
    assert nothing.exit_code == 0 and "IB knows no contract matching 'zzzz'" in nothing.stdout


def test_cli_search_without_ib_shows_what_the_cache_learned(sim_env: SimServer) -> None:
    runner = CliRunner()
    assert runner.invoke(app, ["symbols", "search", "apple"]).exit_code == 0
    sim_env.refuse_connections()  # IB is gone: nothing listens on the port
    offline = runner.invoke(app, ["symbols", "search", "apple"])
    assert offline.exit_code == 0, offline.output
    assert "IB not reachable" in offline.stderr and "showing cached contracts only" in offline.stderr
    assert "265598" in offline.stdout and "APPLE INC" in offline.stdout


def test_cli_resolve_reports_each_symbol_and_fails_if_any_did(sim_env: SimServer) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["symbols", "resolve", "spy", "AAPL", "NOSUCH", "SPY"])
    assert result.exit_code == 1
    lines = {line.split()[1]: line for line in result.stdout.splitlines() if line.startswith("│ ")}
    assert "resolved" in lines["SPY"] and "756733" in lines["SPY"] and "(IB)" in lines["SPY"]
    assert "resolved" in lines["AAPL"] and "265598" in lines["AAPL"]
    assert "not found" in lines["NOSUCH"]
    assert "2 of 3 resolved" in result.stdout and result.stderr.strip() == "not resolved: NOSUCH"
    again = runner.invoke(app, ["symbols", "resolve", "SPY", "SPX", "--sec-type", "IND"])
    assert again.exit_code == 1  # SPY is no index
    ind = runner.invoke(app, ["symbols", "resolve", "SPX", "--sec-type", "ind"])
    assert ind.exit_code == 0 and "416904" in ind.stdout
    cached = runner.invoke(app, ["symbols", "resolve", "SPY"])
    assert cached.exit_code == 0 and "(cache)" in cached.stdout
    bad = runner.invoke(app, ["symbols", "resolve", "SP Y", "--sec-type", "OPT"])
    assert bad.exit_code == 2 and "--sec-type" in bad.stderr


def test_batch_resolve_waits_on_the_message_pacing(db_url: str) -> None:
    clock = ManualClock()
    with SimServer.in_thread(SimConfig(port=0, accounts=("DU1234567",))) as sim:
        settings = IBSettings(port=sim.port, client_id=9, connect_timeout_s=5, max_messages_per_s=2)
        broker = SyncBroker(lambda: IBBroker.from_settings(settings, clock=clock))
        with broker:
            results = resolve_batch(
                lambda: session_scope(db_url), broker, ["SPY", "AAPL", "SPX", "NOSUCH", "QQQ"], ttl=dt.timedelta(days=1)
            )
            ib = broker.broker
            assert isinstance(ib, IBBroker)
            waited = ib.msg_limiter.total_wait_s
    assert [(r.symbol, r.status) for r in results] == [
        ("SPY", ResolveStatus.RESOLVED),
        ("AAPL", ResolveStatus.RESOLVED),
        ("SPX", ResolveStatus.NOT_FOUND),  # an index, asked as a stock
        ("NOSUCH", ResolveStatus.NOT_FOUND),
        ("QQQ", ResolveStatus.NOT_FOUND),
    ]
    assert waited >= 1.0  # five requests at two per second: the limiter held the later ones back (simulated time)


def test_batch_resolve_reports_an_ambiguous_symbol_with_its_candidates(db_url: str) -> None:
    from dataclasses import replace

    nyse = replace(SPY, conid=999001, primary_exchange="NYSE")
    broker = SyncBroker(lambda: MemoryBroker([SPY, nyse]))
    with broker:
        [result] = resolve_batch(lambda: session_scope(db_url), broker, ["SPY"], ttl=dt.timedelta(days=1))
    assert result.status is ResolveStatus.AMBIGUOUS and not result.ok
    assert sorted(c.conid for c in result.candidates) == [756733, 999001]


class DroppingSource:
    """A fake broker whose connection drops while one symbol's details are asked for."""

    def __init__(self, dropped_on: str, *known: ContractInfo) -> None:
        self.dropped_on, self.known = dropped_on, known
        self.asked: list[str] = []

    def matching_symbols(self, pattern: str) -> list[Any]:
        return []

    def contract_details(self, spec: ContractSpec) -> list[ContractInfo]:
        self.asked.append(spec.symbol)
        if spec.symbol == self.dropped_on:
            raise BrokerConnectionError("IB dropped the connection")
        return [c for c in self.known if c.symbol == spec.symbol]


def test_batch_resolve_marks_a_broker_failure_failed_and_goes_on(db_url: str) -> None:
    source = DroppingSource("AAPL", SPY)
    results = resolve_batch(lambda: session_scope(db_url), source, ["AAPL", "SPY"], ttl=dt.timedelta(days=1))
    assert [(r.symbol, r.status) for r in results] == [("AAPL", ResolveStatus.FAILED), ("SPY", ResolveStatus.RESOLVED)]
    assert "IB dropped the connection" in results[0].error and not results[0].ok and source.asked == ["AAPL", "SPY"]


def test_bad_symbol_lists_are_refused_before_any_request() -> None:
    with pytest.raises(InputError) as caught:
        parse_symbols(["SPY", "sp y", "", "A" * 13])
    assert [p.location for p in caught.value.problems] == ["symbols[1]", "symbols[2]", "symbols[3]"]
    assert parse_symbols([" spy", "SPY", "brk.b"]) == ["SPY", "BRK.B"]
    with pytest.raises(InputError):
        parse_symbols([f"S{i}" for i in range(MAX_BATCH + 1)])
