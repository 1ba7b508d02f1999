"""DST fall-back in New York (first Sunday of November: 2026-11-01, 02:00 EDT -> 01:00 EST, a 25-hour day).

1. Strategy schedules: ``services.strategies.next_run_times`` (what ``trader strategies show`` prints) against UTC
   times worked out by hand, and against Prefect's own ``CronSchedule`` built the way ``deployments/sync.py`` builds
   the deployment's schedule (the dates the Prefect scheduler creates runs for). No run is duplicated or missing.
2. The risk gate's trading day (``services.orders.context.trading_day_start``): midnight New York, whose UTC instant
   moves from 04:00 to 05:00 across the change; orders-per-day counts only the orders since then.

Hand rule: EDT = UTC-4 until 2026-11-01 06:00 UTC (02:00 EDT), EST = UTC-5 after.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from prefect.client.schemas.schedules import CronSchedule as ClientCronSchedule
from prefect.server.schemas.schedules import CronSchedule as ServerCronSchedule
from sqlalchemy.orm import Session

from models.enums import OrderSide, OrderType
from models.strategy import StrategyDefinition
from services.orders.context import gather_context, session_open, trading_day_start
from services.repositories import orders as orders_repo
from services.settings import TradingSettings
from services.strategies import load_strategy_file, next_run_times, parse_strategy

REPO = Path(__file__).resolve().parents[1]
NEW_YORK = "America/New_York"


def utc(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC)


def strategy(cron: str) -> StrategyDefinition:
    doc = load_strategy_file(REPO / "examples" / "strategies" / "spy-sma-cross.yaml").model_dump(mode="json")
    doc["schedule"] = {"cron": cron, "timezone": NEW_YORK}
    return parse_strategy(doc)


def prefect_dates(definition: StrategyDefinition, after: dt.datetime, count: int) -> list[dt.datetime]:
    """The scheduler's dates strictly after ``after`` for the deployment schedule sync.py creates."""
    client = ClientCronSchedule(cron=definition.schedule.cron, timezone=definition.schedule.timezone)
    server = ServerCronSchedule(**client.model_dump(exclude_unset=False))
    dates = asyncio.run(server.get_dates(n=count + 1, start=after + dt.timedelta(microseconds=1)))
    return [d.astimezone(dt.UTC) for d in dates if d > after][:count]


# (cron, after, expected UTC run times), all by hand
CASES = [
    pytest.param(
        "55 15 * * 1-5",  # the shipped spy-sma-cross schedule: 15:55 New York on weekdays
        utc("2026-10-29T21:00"),  # Thursday 17:00 EDT
        ["2026-10-30T19:55", "2026-11-02T20:55", "2026-11-03T20:55"],  # Fri 15:55 EDT, Mon/Tue 15:55 EST
        id="weekday-1555",
    ),
    pytest.param(
        "30 1 * * *",  # daily inside the repeated hour: 01:30 happens twice on 2026-11-01
        utc("2026-10-31T00:00"),
        ["2026-10-31T05:30", "2026-11-01T05:30", "2026-11-02T06:30"],  # once on the 1st: its first (EDT) pass
        id="daily-0130-repeated",
    ),
    pytest.param(
        "30 1 * * *",
        utc("2026-11-01T06:10"),  # 01:10 EST, inside the second pass: the 01:30 of the 1st already ran
        ["2026-11-02T06:30", "2026-11-03T06:30"],
        id="daily-0130-from-second-pass",
    ),
    pytest.param(
        "30 2 * * *",  # after the change: 02:30 exists once, in EST
        utc("2026-10-31T00:00"),
        ["2026-10-31T06:30", "2026-11-01T07:30", "2026-11-02T07:30"],
        id="daily-0230",
    ),
    pytest.param(
        "0 * * * *",  # hourly: every new wall hour, so 01:00 runs once (EDT) and 02:00 EST comes 2 h later
        utc("2026-11-01T03:30"),  # 23:30 EDT on the 31st
        ["2026-11-01T04:00", "2026-11-01T05:00", "2026-11-01T07:00", "2026-11-01T08:00"],
        id="hourly",
    ),
]


@pytest.mark.parametrize(("cron", "after", "expected"), CASES)
def test_runs_across_fall_back_by_hand_and_as_prefect_schedules_them(
    cron: str, after: dt.datetime, expected: list[str]
) -> None:
    definition = strategy(cron)
    ours = next_run_times(definition, count=len(expected), after=after)
    assert [t.astimezone(dt.UTC) for t in ours] == [utc(e) for e in expected]
    assert all(str(t.tzinfo) == NEW_YORK for t in ours)  # shown in the schedule's zone
    assert prefect_dates(definition, after, len(expected)) == [utc(e) for e in expected]


def test_fall_back_week_has_one_run_per_weekday_none_twice_none_missing() -> None:
    definition = strategy("55 15 * * 1-5")
    runs = next_run_times(definition, count=10, after=utc("2026-10-25T12:00"))  # Sunday before
    local = [r.astimezone(ZoneInfo(NEW_YORK)) for r in runs]
    days = [r.date() for r in local]
    assert len(set(days)) == len(days) == 10
    assert days == [dt.date(2026, 10, d) for d in (26, 27, 28, 29, 30)] + [
        dt.date(2026, 11, d) for d in (2, 3, 4, 5, 6)
    ]
    assert {(r.hour, r.minute) for r in local} == {(15, 55)}
    offsets = [r.utcoffset() for r in local]
    assert offsets == [dt.timedelta(hours=-4)] * 5 + [dt.timedelta(hours=-5)] * 5
    assert [r.astimezone(dt.UTC) for r in runs] == prefect_dates(definition, utc("2026-10-25T12:00"), 10)


@pytest.mark.parametrize(
    ("now", "day_start"),
    [
        ("2026-11-01T03:59", "2026-10-31T04:00"),  # 23:59 EDT on Saturday the 31st
        ("2026-11-01T04:00", "2026-11-01T04:00"),  # midnight EDT: the 25-hour Sunday starts
        ("2026-11-01T05:30", "2026-11-01T04:00"),  # 01:30 EDT, first pass
        ("2026-11-01T06:30", "2026-11-01T04:00"),  # 01:30 EST, second pass: still the same day
        ("2026-11-02T04:59", "2026-11-01T04:00"),  # 23:59 EST on Sunday: 24 h 59 min after its start
        ("2026-11-02T05:00", "2026-11-02T05:00"),  # midnight EST: Monday starts at 05:00 UTC
        ("2026-11-02T20:55", "2026-11-02T05:00"),  # Monday's 15:55 EST run
    ],
)
def test_trading_day_start_on_the_fall_back_days(now: str, day_start: str) -> None:
    assert trading_day_start(utc(now)) == utc(day_start)


def test_session_open_on_either_side_of_the_change() -> None:
    assert session_open(utc("2026-10-30T19:55")) == utc("2026-10-30T13:30")  # Friday 09:30 EDT
    assert session_open(utc("2026-11-02T20:55")) == utc("2026-11-02T14:30")  # Monday 09:30 EST
    assert session_open(utc("2026-11-01T18:00")) == utc("2026-11-01T04:00")  # Sunday: no session, midnight


def test_orders_per_day_counts_from_midnight_est_on_the_monday(session: Session) -> None:
    created = {
        "friday-run": "2026-10-30T19:55",  # Friday 15:55 EDT
        "sunday-late": "2026-11-02T04:30",  # Sunday 23:30 EST: counted at 04:00 UTC (EDT midnight) or UTC midnight
        "monday-midnight": "2026-11-02T05:00",  # Monday 00:00 EST
        "monday-open": "2026-11-02T14:35",  # Monday 09:35 EST
        "monday-run": "2026-11-02T20:55",  # the order being sent now (the gate leaves it out of its own count)
    }
    rows = {}
    for key, when in created.items():
        rows[key] = orders_repo.create(
            session,
            key=f"dst-{key}",
            symbol="SPY",
            side=OrderSide.BUY,
            quantity=Decimal(1),
            order_type=OrderType.MARKET,
            strategy_name="dst-check",
        )
        rows[key].created_at = utc(when)
    session.flush()
    context = gather_context(
        session,
        trading=TradingSettings(),
        account=None,
        order=rows["monday-run"],
        definition=None,
        strategy_problem=None,
        now=utc("2026-11-02T20:55"),  # Monday's scheduled run, 15:55 EST
        broker_is_simulated=True,
        marks={},
    )
    assert context.orders_today == 2  # monday-midnight and monday-open only
