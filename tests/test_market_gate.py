"""The market-hours gate: pure rules over exchange_calendars, and the flow ending early in a Skipped state."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from models.strategy import StrategyDefinition
from services.strategies import load_strategy_file
from tasks.market_gate import SKIP_CLOSED, SKIP_RESET, calendar_for, in_reset_window, market_gate

REPO = Path(__file__).resolve().parents[1]
NY = ZoneInfo("America/New_York")


@pytest.fixture(scope="module")
def daily() -> StrategyDefinition:
    return load_strategy_file(REPO / "examples/strategies/spy-sma-cross.yaml")


def _variant(base: StrategyDefinition, **changes: object) -> StrategyDefinition:
    data = base.model_dump(mode="json")
    schedule = dict(data["schedule"])
    if "extended_hours" in changes:
        schedule["extended_hours"] = changes.pop("extended_hours")
    data["schedule"] = schedule
    data.update(changes)
    return StrategyDefinition.model_validate(data)


def ny(*args: int) -> datetime:
    return datetime(*args, tzinfo=NY)  # type: ignore[misc]


def test_weekend_is_closed(daily: StrategyDefinition) -> None:
    assert market_gate(daily, ny(2017, 12, 30, 16, 5)) == SKIP_CLOSED  # Saturday
    assert market_gate(daily, ny(2017, 12, 31, 12, 0)) == SKIP_CLOSED  # Sunday


def test_us_holiday_is_closed(daily: StrategyDefinition) -> None:
    assert market_gate(daily, ny(2017, 12, 25, 16, 5)) == SKIP_CLOSED  # Christmas, a Monday
    assert market_gate(daily, ny(2017, 7, 4, 11, 0)) == SKIP_CLOSED


def test_session_time_passes(daily: StrategyDefinition) -> None:
    assert market_gate(daily, ny(2017, 12, 29, 16, 5)) is None  # the cron time of the daily strategy
    assert market_gate(daily, datetime(2017, 12, 29, 21, 0, tzinfo=UTC)) is None  # the demo's clock: the close
    assert market_gate(daily, ny(2017, 12, 26, 10, 0)) is None


def test_daily_bars_before_the_open_are_closed(daily: StrategyDefinition) -> None:
    assert market_gate(daily, ny(2017, 12, 29, 9, 0)) == SKIP_CLOSED
    assert market_gate(_variant(daily, extended_hours=True), ny(2017, 12, 29, 9, 0)) is None


def test_intraday_after_hours_needs_extended_hours(daily: StrategyDefinition) -> None:
    hourly = _variant(daily, bar_size="1 hour", lookback="30 D")
    assert market_gate(hourly, ny(2017, 12, 29, 11, 35)) is None
    assert market_gate(hourly, ny(2017, 12, 29, 16, 10)) is None  # within the grace after the close
    assert market_gate(hourly, ny(2017, 12, 29, 17, 30)) == SKIP_CLOSED
    assert market_gate(hourly, ny(2017, 11, 24, 14, 0)) == SKIP_CLOSED  # early close at 13:00
    extended = _variant(hourly, extended_hours=True)
    assert market_gate(extended, ny(2017, 12, 29, 17, 30)) is None
    assert market_gate(extended, ny(2017, 12, 29, 21, 0)) == SKIP_CLOSED  # after 20:00
    assert market_gate(extended, ny(2017, 12, 30, 12, 0)) == SKIP_CLOSED  # extended hours need a session day


@pytest.mark.parametrize(
    ("when", "inside"),
    [((23, 44), False), ((23, 45), True), ((0, 0), True), ((0, 44), True), ((0, 45), False), ((12, 0), False)],
)
def test_reset_window_bounds(when: tuple[int, int], inside: bool) -> None:
    assert in_reset_window(ny(2017, 12, 27, *when)) is inside


def test_reset_window_wins_even_with_extended_hours(daily: StrategyDefinition) -> None:
    assert market_gate(_variant(daily, extended_hours=True), ny(2017, 12, 27, 23, 50)) == SKIP_RESET
    assert market_gate(daily, datetime(2017, 12, 28, 5, 0, tzinfo=UTC)) == SKIP_RESET  # 00:00 New York


def test_calendar_choice(daily: StrategyDefinition) -> None:
    assert calendar_for(daily) == "XNYS"  # ARCA
    assert calendar_for(_variant(daily, primary_exchange=None, exchange="LSE", currency="GBP")) == "XLON"
    assert calendar_for(_variant(daily, primary_exchange=None, currency="EUR")) == "XETR"


def test_forex_trades_around_the_clock_on_weekdays(daily: StrategyDefinition) -> None:
    fx = _variant(daily, sec_type="CASH", symbol="EUR", currency="USD", exchange="IDEALPRO", primary_exchange=None)
    assert market_gate(fx, ny(2017, 12, 27, 3, 0)) is None
    assert market_gate(fx, ny(2017, 12, 30, 12, 0)) == SKIP_CLOSED


def test_naive_time_is_rejected(daily: StrategyDefinition) -> None:
    from services.errors import InputError

    with pytest.raises(InputError):
        market_gate(daily, datetime(2017, 12, 29, 16, 5))


class _NoBroker:
    """A broker factory that fails the test if the gated flow ever asks for a broker (no bars, no orders)."""

    calls = 0

    def __call__(self) -> object:
        type(self).calls += 1
        raise AssertionError("the market gate must stop the run before any broker use")


@pytest.mark.prefect
@pytest.mark.slow
@pytest.mark.parametrize(
    ("now", "message"),
    [
        (datetime(2017, 12, 30, 21, 5, tzinfo=UTC), SKIP_CLOSED),  # Saturday
        (datetime(2017, 12, 25, 21, 5, tzinfo=UTC), SKIP_CLOSED),  # Christmas
        (datetime(2017, 12, 28, 4, 50, tzinfo=UTC), SKIP_RESET),  # 23:50 New York
    ],
)
def test_flow_ends_skipped_without_touching_the_broker(
    prefect_api: object, tmp_path: Path, now: datetime, message: str
) -> None:
    from sqlalchemy import func, select

    from flows.strategy import strategy_run
    from models.tables import Signal
    from services.db import init_database, session_scope
    from services.runtime import Runtime, use_runtime
    from services.settings import load_settings
    from services.strategies import save_definition

    settings = load_settings({"TRADER_DATA_DIR": str(tmp_path)})
    init_database(settings)
    with session_scope(settings.database_url()) as session:
        save_definition(session, load_strategy_file(REPO / "examples/strategies/spy-sma-cross.yaml"))
    runtime = Runtime(settings, broker_factory=_NoBroker(), clock=lambda: now)  # type: ignore[arg-type]
    with use_runtime(runtime):
        state = strategy_run("spy-sma-cross", return_state=True)
    assert state.is_completed()
    assert state.name == "Skipped"
    assert state.message == message
    assert _NoBroker.calls == 0
    with session_scope(settings.database_url()) as session:
        assert session.scalar(select(func.count()).select_from(Signal)) == 0
