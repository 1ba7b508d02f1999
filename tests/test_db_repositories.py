"""Repositories, each test on SQLite and on PostgreSQL."""

from __future__ import annotations

import datetime as dt
import threading
from decimal import Decimal

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from models.enums import AnalystKind, BarSize, SignalAction
from models.tables import CacheStat, PromptTemplate, Signal
from services.db import make_engine, session_factory, session_scope
from services.errors import InputError, StopError
from services.repositories import contracts, llm_calls, prompt_templates, signals, strategies, trading_state
from services.repositories.strategies import StrategySpec

T0 = dt.datetime(2024, 3, 1, 14, 30, tzinfo=dt.UTC)
DAY = dt.timedelta(days=1)


def _spec(name: str = "aapl-momentum", **overrides: object) -> StrategySpec:
    fields: dict[str, object] = {
        "name": name,
        "symbol": "aapl",
        "bar_size": "5 mins",
        "definition": {"name": name, "risk": {"max_position": "100"}},
        "cron": "*/5 13-20 * * 1-5",
        "timezone": "America/New_York",
    }
    fields.update(overrides)
    return StrategySpec(**fields)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------------------------------
# Strategies


def test_strategy_crud(session: Session) -> None:
    created = strategies.create(session, _spec())
    assert created.id is not None
    assert (created.symbol, created.bar_size, created.active) == ("AAPL", BarSize.MIN_5, True)

    strategies.create(session, _spec("spy-daily", symbol="SPY", bar_size="1 day", cron=None))
    assert [s.name for s in strategies.list_strategies(session)] == ["aapl-momentum", "spy-daily"]

    before = created.updated_at
    updated = strategies.update(
        session, _spec(bar_size="15 mins", prompt_template_name="swing", prompt_template_version=2)
    )
    assert updated.id == created.id
    assert (updated.bar_size, updated.prompt_template_version) == (BarSize.MIN_15, 2)
    assert updated.updated_at >= before

    strategies.set_active(session, "spy-daily", False)
    assert [s.name for s in strategies.list_strategies(session, active_only=True)] == ["aapl-momentum"]

    assert strategies.delete(session, "spy-daily") is True
    assert strategies.delete(session, "spy-daily") is False
    session.commit()

    fetched = strategies.get_by_name(session, "aapl-momentum")
    assert fetched is not None and fetched.definition == {"name": "aapl-momentum", "risk": {"max_position": "100"}}
    assert strategies.get_by_name(session, "spy-daily") is None


def test_strategy_upsert_reports_created_then_updated(session: Session) -> None:
    first, created = strategies.upsert(session, _spec())
    second, created_again = strategies.upsert(session, _spec(symbol="MSFT"))
    assert (created, created_again) == (True, False)
    assert first.id == second.id and second.symbol == "MSFT"


def test_strategy_name_is_unique(session: Session) -> None:
    strategies.create(session, _spec())
    with pytest.raises(InputError, match="already exists"):
        strategies.create(session, _spec())


def test_strategy_bad_input_lists_every_problem(session: Session) -> None:
    with pytest.raises(InputError) as info:
        strategies.create(session, _spec(name=" ", bar_size="7 mins", timezone="Mars/Olympus", conid=-1))
    assert {p.location for p in info.value.problems} == {"name", "bar_size", "timezone", "conid"}
    assert strategies.list_strategies(session) == []


def test_missing_strategy_is_an_input_error(session: Session) -> None:
    with pytest.raises(InputError, match="no strategy named 'nope'"):
        strategies.set_active(session, "nope", True)
    with pytest.raises(InputError, match="no strategy named 'nope'"):
        strategies.update(session, _spec("nope"))


# ---------------------------------------------------------------------------------------------------------------------
# Prompt templates


def test_prompt_template_versions(session: Session) -> None:
    v1 = prompt_templates.create(session, "swing", "Analyse {{ symbol }}.", "first")
    v2 = prompt_templates.new_version(session, "swing", "Analyse {{ symbol }} on {{ bar_size }}.")
    same = prompt_templates.new_version(session, "swing", "Analyse {{ symbol }} on {{ bar_size }}.")

    assert (v1.version, v2.version) == (1, 2)
    assert same.id == v2.id
    assert v2.body_sha256 == prompt_templates.body_sha256("Analyse {{ symbol }} on {{ bar_size }}.")
    assert prompt_templates.latest(session, "swing") is v2
    assert prompt_templates.get(session, "swing", 1) is v1
    assert prompt_templates.get(session, "swing", 3) is None
    assert [t.version for t in prompt_templates.versions(session, "swing")] == [1, 2]
    assert prompt_templates.new_version(session, "fresh", "x").version == 1
    assert list(prompt_templates.names(session)) == ["fresh", "swing"]
    with pytest.raises(InputError, match="already exists"):
        prompt_templates.create(session, "swing", "other")


def test_prompt_template_is_immutable_once_used(db_url: str) -> None:
    with session_scope(db_url) as s:
        template = prompt_templates.create(s, "swing", "v1 body")
        prompt_templates.update_body(s, "swing", 1, "v1 body, fixed before first use")
        prompt_templates.mark_used(s, template, at=T0)
        prompt_templates.mark_used(s, template, at=T0 + DAY)  # the first use stays

    with pytest.raises(InputError, match="immutable"), session_scope(db_url) as s:
        prompt_templates.update_body(s, "swing", 1, "sneaky edit")

    with session_scope(db_url) as s:
        stored = prompt_templates.require(s, "swing", 1)
        assert stored.body == "v1 body, fixed before first use"
        assert stored.body_sha256 == prompt_templates.body_sha256(stored.body)
        assert stored.first_used_at == T0
        # the same body again is not a change
        assert prompt_templates.update_body(s, "swing", 1, stored.body) is stored


def test_prompt_template_version_is_unique_in_the_database(session: Session) -> None:
    from sqlalchemy.exc import IntegrityError

    prompt_templates.create(session, "swing", "a")
    session.add(PromptTemplate(name="swing", version=1, body="b", body_sha256="0" * 64))
    with pytest.raises(IntegrityError):
        session.flush()


# ---------------------------------------------------------------------------------------------------------------------
# Contract cache


def _put_aapl(session: Session, fetched_at: dt.datetime = T0) -> None:
    contracts.put(
        session,
        conid=265598,
        symbol="AAPL",
        sec_type="STK",
        currency="USD",
        primary_exchange="NASDAQ",
        details={"long_name": "APPLE INC", "min_tick": Decimal("0.01"), "time_zone_id": "US/Eastern"},
        fetched_at=fetched_at,
    )


def test_contract_cache_ttl_hits_misses_and_stats(session: Session) -> None:
    ttl = dt.timedelta(days=7)
    assert contracts.get(session, 265598, ttl, now=T0) is None  # miss: empty
    _put_aapl(session)

    by_conid = contracts.get(session, 265598, ttl, now=T0 + DAY)  # hit
    by_symbol = contracts.get(session, "aapl", ttl, sec_type="STK", currency="usd", now=T0 + DAY)  # hit
    assert by_conid is not None and by_conid is by_symbol
    assert by_conid.details["min_tick"] == "0.01" and by_conid.long_name == "APPLE INC"
    assert contracts.get(session, "AAPL", ttl, currency="EUR", now=T0) is None  # miss: no EUR listing
    assert contracts.get(session, 265598, ttl, now=T0 + 8 * DAY) is None  # miss: stale

    stats = contracts.stats(session)
    assert (stats.entries, stats.hits, stats.misses) == (1, 2, 3)
    assert stats.hit_rate == pytest.approx(0.4)
    assert stats.oldest == T0

    _put_aapl(session, fetched_at=T0 + 8 * DAY)  # refresh replaces, never duplicates
    refreshed = contracts.get(session, 265598, ttl, now=T0 + 9 * DAY)
    assert refreshed is not None and refreshed.fetched_at == T0 + 8 * DAY  # the refresh, inside its TTL: a hit
    after = contracts.stats(session)
    assert (after.entries, after.hits, after.misses) == (1, 3, 3)
    assert session.get(CacheStat, contracts.CACHE_NAME) is not None


def test_contract_cache_stats_when_empty(session: Session) -> None:
    stats = contracts.stats(session)
    assert (stats.entries, stats.hits, stats.misses, stats.hit_rate, stats.oldest) == (0, 0, 0, None, None)


def test_contract_search_by_symbol_and_long_name(session: Session) -> None:
    _put_aapl(session)
    contracts.put(
        session,
        conid=756733,
        symbol="SPY",
        sec_type="STK",
        currency="USD",
        details={"long_name": "SPDR S&P 500 ETF TRUST"},
    )
    contracts.put(
        session, conid=4815747, symbol="NVDA", sec_type="STK", currency="USD", details={"long_name": "NVIDIA CORP"}
    )
    contracts.put(session, conid=1, symbol="APL_X", sec_type="STK", currency="USD")

    assert [c.symbol for c in contracts.search(session, "apple")] == ["AAPL"]
    assert [c.symbol for c in contracts.search(session, "s&p")] == ["SPY"]
    assert [c.symbol for c in contracts.search(session, "nvda")] == ["NVDA"]
    assert [c.symbol for c in contracts.search(session, "_")] == ["APL_X"]  # LIKE wildcards are literal
    assert contracts.search(session, "zzz") == []


def test_contract_cache_rejects_bad_input(session: Session) -> None:
    with pytest.raises(InputError) as info:
        contracts.put(session, conid=0, symbol="", sec_type="STK", currency="USD", fetched_at=dt.datetime(2024, 1, 1))
    assert {p.location for p in info.value.problems} == {"conid", "symbol", "fetched_at"}
    with pytest.raises(InputError, match="ttl"):
        contracts.get(session, 1, dt.timedelta(seconds=-1))


# ---------------------------------------------------------------------------------------------------------------------
# LLM calls


def _call(session: Session, cost: str, at: dt.datetime, **overrides: object) -> None:
    fields: dict[str, object] = {
        "model": "gpt-4o-mini",
        "analyst": AnalystKind.LLM,
        "prompt_sha256": "a" * 64,
        "request_json": "{}",
        "response_text": '{"action": "HOLD"}',
        "cost_usd": Decimal(cost),
        "created_at": at,
    }
    fields.update(overrides)
    llm_calls.record(session, **fields)  # type: ignore[arg-type]


def test_llm_spent_since_sums_exactly(session: Session) -> None:
    _call(session, "0.00012345", T0 - dt.timedelta(seconds=1))
    _call(session, "0.10000001", T0)
    _call(session, "0.20000002", T0 + dt.timedelta(hours=3))
    _call(session, "0", T0 + dt.timedelta(hours=4), cached=True)

    assert llm_calls.spent_since(session, T0) == Decimal("0.30000003")
    assert llm_calls.spent_since(session, T0 - DAY) == Decimal("0.30012348")
    assert llm_calls.spent_since(session, T0 + DAY) == Decimal(0)
    paris = dt.timezone(dt.timedelta(hours=1))
    assert llm_calls.spent_since(session, dt.datetime(2024, 3, 1, 16, 0, tzinfo=paris)) == Decimal("0.20000002")
    with pytest.raises(InputError, match="naive"):
        llm_calls.spent_since(session, dt.datetime(2024, 3, 1))


def test_llm_find_cached_returns_newest_success(session: Session) -> None:
    _call(session, "0.01", T0, cache_key="k1", response_text="old")
    _call(session, "0.01", T0 + DAY, cache_key="k1", response_text="new")
    _call(session, "0", T0 + 2 * DAY, cache_key="k1", response_text=None, error="timeout")
    _call(session, "0.01", T0, cache_key="k2", response_text="other")

    found = llm_calls.find_cached(session, "k1")
    assert found is not None and found.response_text == "new"
    assert llm_calls.find_cached(session, "missing") is None


def test_llm_record_rejects_float_cost(session: Session) -> None:
    with pytest.raises(InputError, match="cost_usd"):
        _call(session, "0", T0, cost_usd=0.01)
    assert llm_calls.recent(session) == []


# ---------------------------------------------------------------------------------------------------------------------
# Signals


def test_signals_record_and_list_by_strategy(session: Session) -> None:
    strategy = strategies.create(session, _spec())
    for minutes, action in ((0, SignalAction.HOLD), (5, SignalAction.BUY), (10, SignalAction.ABSTAIN)):
        signals.record(
            session,
            strategy_name="aapl-momentum",
            symbol="AAPL",
            bar_time=T0 + dt.timedelta(minutes=minutes),
            action=action,
            analyst=AnalystKind.OFFLINE,
            reason="stale data" if action is SignalAction.ABSTAIN else "",
            entry=Decimal("187.25") if action is SignalAction.BUY else None,
            confidence=0.7,
        )
    signals.record(session, strategy_name="other", symbol="SPY", bar_time=T0, action="HOLD", analyst="llm")

    listed = signals.list_for_strategy(session, "aapl-momentum")
    assert [s.action for s in listed] == [SignalAction.ABSTAIN, SignalAction.BUY, SignalAction.HOLD]
    assert all(s.strategy_id == strategy.id for s in listed)
    assert listed[1].entry == Decimal("187.25")
    assert [
        s.action for s in signals.list_for_strategy(session, "aapl-momentum", since=T0 + dt.timedelta(minutes=5))
    ] == [
        SignalAction.ABSTAIN,
        SignalAction.BUY,
    ]
    latest = signals.latest_for_strategy(session, "aapl-momentum")
    assert latest is not None and latest.reason == "stale data"
    other = session.scalars(select(Signal).where(Signal.strategy_name == "other")).one()
    assert other.strategy_id is None


def test_signal_bad_input_lists_every_problem(session: Session) -> None:
    with pytest.raises(InputError) as info:
        signals.record(
            session,
            strategy_name="s",
            symbol="AAPL",
            bar_time=dt.datetime(2024, 3, 1, 14, 30),
            action=SignalAction.ABSTAIN,
            analyst=AnalystKind.LLM,
            confidence=1.5,
            stop=Decimal("-1"),
        )
    assert {p.location for p in info.value.problems} == {"bar_time", "reason", "confidence", "stop"}


# ---------------------------------------------------------------------------------------------------------------------
# Trading state


def test_kill_switch(db_url: str) -> None:
    with session_scope(db_url) as s:
        assert trading_state.get_kill_switch(s).engaged is False
        with pytest.raises(InputError, match="reason"):
            trading_state.set_kill_switch(s, True)
        trading_state.set_kill_switch(s, True, "broker outage", changed_by="ops", now=T0)

    with session_scope(db_url) as s:
        state = trading_state.get_kill_switch(s)
        assert (state.engaged, state.reason, state.changed_at, state.changed_by) == (True, "broker outage", T0, "ops")
        trading_state.set_kill_switch(s, False, now=T0 + DAY)

    with session_scope(db_url) as s:
        state = trading_state.get_kill_switch(s)
        assert (state.engaged, state.changed_at) == (False, T0 + DAY)


def test_daily_loss_trip_is_per_day(session: Session) -> None:
    day = dt.date(2024, 3, 1)
    trip = trading_state.trip_daily_loss(session, day, Decimal("1012.50"), Decimal("1000"), now=T0)
    again = trading_state.trip_daily_loss(session, day, Decimal("2000"), Decimal("1000"), now=T0 + DAY)

    assert again == trip
    stored = trading_state.daily_loss_trip(session, day)
    assert stored is not None and (stored.loss, stored.limit, stored.tripped_at) == (
        Decimal("1012.50"),
        Decimal("1000"),
        T0,
    )
    assert trading_state.daily_loss_trip(session, day + dt.timedelta(days=1)) is None
    assert trading_state.reset_daily_loss(session) is True
    assert trading_state.daily_loss_trip(session, day) is None


def test_malformed_daily_loss_trip_stops_trading(session: Session) -> None:
    trading_state.set_value(session, trading_state.DAILY_LOSS_KEY, {"day": "2024-03-01"})
    with pytest.raises(StopError, match="malformed"):
        trading_state.daily_loss_trip(session, dt.date(2024, 3, 1))


# ---------------------------------------------------------------------------------------------------------------------
# Concurrency


def test_concurrent_cache_counting_loses_no_update(db_url: str) -> None:
    factory = session_factory(make_engine(db_url))
    with session_scope(factory) as s:
        _put_aapl(s, fetched_at=dt.datetime.now(dt.UTC))
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            for _ in range(10):
                with session_scope(factory) as s:
                    contracts.get(s, 265598, dt.timedelta(days=1))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert errors == []
    with session_scope(factory) as s:
        assert contracts.stats(s).hits == 40
