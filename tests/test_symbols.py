import datetime as dt
from decimal import Decimal

from typer.testing import CliRunner

from cli import common
from cli.main import app
from models.enums import SecType
from services.broker.types import ContractInfo, ContractSpec
from services.db import session_scope
from services.repositories import contracts
from services.symbols import refresh_all, resolve

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
    found = runner.invoke(app, ["symbols", "search", "s&p 500"])
    assert found.exit_code == 0 and "756733" in found.output
    assert "no cached contract" in runner.invoke(app, ["symbols", "search", "ZZZ"]).output
    stats = runner.invoke(app, ["symbols", "stats"])
    assert "entries 1" in stats.output and "misses 1" in stats.output
    common.settings.cache_clear()
