"""Prompt scoring against real SPY daily closes (data/samples), with expected values worked out by hand.

Closes used (yahoofinance-SPY-20080101-20180101.csv, bar start 00:00 UTC):
  2008-10-01 116.059998 | +1 2008-10-02 111.849998 | +5 2008-10-08 97.510002 | +20 2008-10-29 93.080002
  2010-03-01 111.889999 | +1 2010-03-02 112.199997 | +5 2010-03-08 114.269997 | +20 2010-03-29 117.32
  2010-03-08 114.269997 | +1 2010-03-09 114.459999 | +5 2010-03-15 115.489998 | +20 2010-04-06 119.040001
  2017-12-20 267.029999 | +1 2017-12-21 267.579987 | +5 2017-12-28 267.869995 | +20: not in the file (pending)
  2017-12-29 266.859985 is the file's last bar: every horizon pending.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from models.enums import AnalystKind, BarSize
from models.tables import PromptScore as PromptScoreRow
from services.bars.loader import load_bars
from services.broker.loop_owner import SyncBroker
from services.broker.memory import MemoryBroker, stock
from services.errors import InputError
from services.prompt_performance import (
    BrokerForwardBars,
    FrameForwardBars,
    closes_from,
    market_day,
    parse_day,
    score_prompts,
    stored_scores,
)
from services.repositories import llm_calls, prompt_templates, signals
from services.strategies import load_strategy_file, save_definition

ROOT = Path(__file__).resolve().parents[1]
SPY_FILE = ROOT / "data" / "samples" / "yahoofinance-SPY-20080101-20180101.csv"
STRATEGY = ROOT / "examples" / "strategies" / "spy-sma-cross.yaml"  # SPY, bar_size "1 day"
DAY = dt.date(2017, 12, 31)


@pytest.fixture(scope="module")
def spy() -> pd.DataFrame:
    return load_bars(SPY_FILE).frame


def utc(day: str) -> dt.datetime:
    return dt.datetime.fromisoformat(day).replace(tzinfo=dt.UTC)


def ret(later: float, base: float) -> float:
    return later / base - 1.0


def add_signal(
    session: Session,
    day: str,
    action: str,
    confidence: float | None,
    *,
    version: int = 1,
    call: int | None = None,
    strategy: str = "spy-sma-cross",
) -> None:
    signals.record(
        session,
        strategy_name=strategy,
        symbol="SPY",
        bar_time=utc(day),
        action=action,
        analyst=AnalystKind.LLM,
        reason="test" if action == "ABSTAIN" else "",
        confidence=confidence,
        prompt_template_name="daily-analyst",
        prompt_template_version=version,
        llm_call_id=call,
    )


def add_call(session: Session, cost: str, *, cached: bool = False) -> int:
    row = llm_calls.record(
        session,
        model="gpt-4o-mini",
        analyst=AnalystKind.LLM,
        prompt_sha256="0" * 64,
        request_json="{}",
        cost_usd=Decimal(cost),
        cached=cached,
    )
    return row.id


@pytest.fixture
def stored(session: Session) -> Iterator[Session]:
    save_definition(session, load_strategy_file(STRATEGY))
    for version in (1, 2, 3):
        prompt_templates.new_version(session, "daily-analyst", f"body {version} {{{{ symbol }}}}")
    call_a = add_call(session, "0.0008", cached=True)
    call_c = add_call(session, "0.0012")
    call_g = add_call(session, "0.0030")
    add_signal(session, "2008-10-01", "BUY", 0.62, call=call_a)  # A
    add_signal(session, "2008-10-01", "SELL", 0.85, call=call_a)  # B: same call as A, counted once
    add_signal(session, "2010-03-01", "BUY", 0.75, call=call_c)  # C
    add_signal(session, "2010-03-01", "SELL", 1.0)  # E: confidence 1.0 is in the last bucket
    add_signal(session, "2010-03-08", "SELL", 0.55)  # D
    add_signal(session, "2010-03-02", "HOLD", 0.5)
    add_signal(session, "2010-03-03", "ABSTAIN", None)
    add_signal(session, "2017-12-20", "BUY", 0.95, call=call_g)  # G: +20 pending
    add_signal(session, "2017-12-29", "BUY", 0.92)  # H: all pending
    add_signal(session, "2018-01-02", "BUY", 0.9)  # after DAY: not scored
    add_signal(session, "2010-03-01", "BUY", 0.7, version=2)
    session.flush()
    yield session


def test_scores_match_hand_computed_values(stored: Session, spy: pd.DataFrame) -> None:
    scores = score_prompts(stored, DAY, FrameForwardBars({"SPY": spy}, BarSize.DAY_1))
    assert [(s.template_name, s.template_version) for s in scores] == [("daily-analyst", v) for v in (1, 2, 3)]
    m = scores[0].metrics

    assert m["signals"] == 9
    assert m["by_action"] == {"BUY": 4, "SELL": 3, "HOLD": 1, "ABSTAIN": 1}
    assert m["abstain_rate"] == pytest.approx(1 / 9)
    assert m["directional"] == 7 and m["unscorable"] == 0

    a1, a5, a20 = ret(111.849998, 116.059998), ret(97.510002, 116.059998), ret(93.080002, 116.059998)
    c1, c5, c20 = ret(112.199997, 111.889999), ret(114.269997, 111.889999), ret(117.32, 111.889999)
    d1, d5, d20 = ret(114.459999, 114.269997), ret(115.489998, 114.269997), ret(119.040001, 114.269997)
    g1, g5 = ret(267.579987, 267.029999), ret(267.869995, 267.029999)
    # signed returns: BUY A, SELL B (= -A), BUY C, SELL E (= -C), SELL D (short), BUY G; H pending everywhere
    h1 = [a1, -a1, c1, -c1, -d1, g1]
    h5 = [a5, -a5, c5, -c5, -d5, g5]
    h20 = [a20, -a20, c20, -c20, -d20]
    assert a1 < 0 and c1 > 0 and d1 > 0 and g1 > 0  # the market fell after 2008-10-01 and rose in March 2010
    horizons = m["horizons"]
    assert horizons["1"]["scored"] == 6 and horizons["1"]["pending"] == 1
    assert horizons["1"]["hits"] == 3  # B, C, G
    assert horizons["1"]["hit_rate"] == pytest.approx(0.5)
    assert horizons["1"]["mean_return"] == pytest.approx(sum(h1) / 6)
    assert horizons["5"]["scored"] == 6 and horizons["5"]["hits"] == 3
    assert horizons["5"]["mean_return"] == pytest.approx(sum(h5) / 6)
    assert horizons["20"]["scored"] == 5 and horizons["20"]["pending"] == 2  # G and H
    assert horizons["20"]["hits"] == 2  # B, C
    assert horizons["20"]["hit_rate"] == pytest.approx(0.4)
    assert horizons["20"]["mean_return"] == pytest.approx(sum(h20) / 5)
    assert horizons["20"]["mean_return"] == pytest.approx((-d20) / 5)  # A and B cancel, C and E cancel

    buckets = {b["bucket"]: b for b in m["calibration"]}
    assert list(buckets) == ["0.0-0.5", "0.5-0.6", "0.6-0.7", "0.7-0.8", "0.8-0.9", "0.9-1.0"]
    assert buckets["0.0-0.5"]["count"] == 0 and buckets["0.0-0.5"]["hit_rate"] is None
    assert (buckets["0.5-0.6"]["count"], buckets["0.5-0.6"]["hit_rate"]) == (1, 0.0)  # D (HOLD 0.5 excluded)
    assert (buckets["0.6-0.7"]["count"], buckets["0.6-0.7"]["hit_rate"]) == (1, 0.0)  # A
    assert (buckets["0.7-0.8"]["count"], buckets["0.7-0.8"]["hit_rate"]) == (1, 1.0)  # C
    assert (buckets["0.8-0.9"]["count"], buckets["0.8-0.9"]["hit_rate"]) == (1, 1.0)  # B
    top = buckets["0.9-1.0"]  # E (1.0, miss), G (0.95, hit); H (0.92) pending
    assert (top["count"], top["pending"]) == (2, 1)
    assert top["mean_confidence"] == pytest.approx(0.975)
    assert top["hit_rate"] == pytest.approx(0.5)

    assert m["llm_calls"] == 3 and m["cached_calls"] == 1
    assert Decimal(m["llm_cost_usd"]) == Decimal("0.005")
    assert Decimal(m["cost_per_signal"]) == Decimal("0.000556")  # 0.005 / 9

    v2 = scores[1].metrics
    assert v2["signals"] == 1 and v2["horizons"]["1"]["hit_rate"] == 1.0
    assert v2["horizons"]["20"]["mean_return"] == pytest.approx(c20)
    assert v2["cost_per_signal"] == "0.000000"
    v3 = scores[2].metrics
    assert v3["signals"] == 0 and v3["abstain_rate"] is None and v3["horizons"]["1"]["hit_rate"] is None


def test_scores_are_stored_once_per_day_and_pending_resolves(stored: Session, spy: pd.DataFrame) -> None:
    # As known on 2010-03-05: nothing after that bar yet.
    early = spy[spy["timestamp"] <= utc("2010-03-05")]
    day = dt.date(2010, 3, 5)
    first = score_prompts(stored, day, FrameForwardBars({"SPY": early}))[0].metrics
    assert first["signals"] == 6  # A, B, C, E, HOLD, ABSTAIN (D is on 2010-03-08)
    assert first["horizons"]["1"] == {"scored": 4, "pending": 0, "hits": 2, "hit_rate": 0.5,
                                      "mean_return": pytest.approx(0.0)}  # fmt: skip
    assert first["horizons"]["5"]["scored"] == 2 and first["horizons"]["5"]["pending"] == 2  # C, E: 3 later bars
    assert first["horizons"]["20"]["pending"] == 2

    again = score_prompts(stored, day, FrameForwardBars({"SPY": spy}))[0].metrics
    assert again["horizons"]["5"]["pending"] == 0 and again["horizons"]["20"]["pending"] == 0
    rows = stored.scalar(select(func.count(PromptScoreRow.id)).where(PromptScoreRow.day == day))
    assert rows == 3  # one per version, replaced, not added
    kept = stored_scores(stored, day=day, template="daily-analyst")
    assert [s.template_version for s in kept] == [1, 2, 3]
    assert kept[0].metrics == again


def test_no_bar_size_is_unscorable_not_a_loss(stored: Session, spy: pd.DataFrame) -> None:
    add_signal(stored, "2010-03-01", "BUY", 0.8, version=3, strategy="deleted-strategy")
    m = score_prompts(stored, DAY, FrameForwardBars({"SPY": spy}), store=False)[2].metrics
    assert m["signals"] == 1 and m["unscorable"] == 1
    assert m["horizons"]["1"]["scored"] == 0 and m["horizons"]["1"]["hit_rate"] is None
    assert m["horizons"]["1"]["pending"] == 0 and m["calibration"][4]["pending"] == 0  # neither scored nor pending
    assert stored.scalar(select(func.count(PromptScoreRow.id))) == 0


def test_bad_horizons_are_refused(session: Session) -> None:
    with pytest.raises(InputError, match="horizons"):
        score_prompts(session, DAY, FrameForwardBars({}), horizons=(0, 5))
    with pytest.raises(InputError, match="calibration_horizon"):
        score_prompts(session, DAY, FrameForwardBars({}), horizons=(1, 5), calibration_horizon=3)


def test_closes_from_starts_at_the_signal_bar(spy: pd.DataFrame) -> None:
    assert closes_from(spy, utc("2010-03-01"), 1) == pytest.approx([111.889999, 112.199997])
    assert closes_from(spy, utc("2017-12-29"), 5) == pytest.approx([266.859985])
    assert closes_from(spy, utc("2018-01-02"), 5) == []


def test_broker_source_fetches_once_per_symbol(spy: pd.DataFrame) -> None:
    memory = MemoryBroker([stock("SPY", 756733)], {"SPY": spy})
    memory.clock.set(utc("2010-03-10"))  # bars completed up to 2010-03-09
    requests: list[str] = []
    broker = SyncBroker(lambda: memory)
    broker.connect()
    try:
        original = broker.historical_bars

        def counting(contract, request):  # type: ignore[no-untyped-def]
            requests.append(request.duration)
            return original(contract, request)

        broker.historical_bars = counting  # type: ignore[method-assign]
        source = BrokerForwardBars(broker, clock=lambda: utc("2010-03-10"))
        assert source("SPY", BarSize.DAY_1, utc("2010-03-01"), 5) == pytest.approx(
            [111.889999, 112.199997, 112.300003, 112.639999, 114.25, 114.269997]
        )
        assert source("SPY", BarSize.DAY_1, utc("2010-03-08"), 5) == pytest.approx([114.269997, 114.459999])
        assert requests == ["12 D"]  # 9 days back + 3 margin, one request for both signals
    finally:
        broker.close()


def test_unknown_contract_is_unscorable_and_asked_once(stored: Session, spy: pd.DataFrame) -> None:
    for day in ("2010-03-01", "2010-03-02"):
        signals.record(stored, strategy_name="spy-sma-cross", symbol="XYZ", bar_time=utc(day), action="BUY",
                       analyst=AnalystKind.LLM, confidence=0.8, prompt_template_name="daily-analyst",
                       prompt_template_version=3)  # fmt: skip
    memory = MemoryBroker([stock("SPY", 756733)], {"SPY": spy})
    memory.clock.set(utc("2018-01-02"))
    broker = SyncBroker(lambda: memory)
    broker.connect()
    try:
        qualified: list[str] = []
        original = broker.qualify

        def counting(spec):  # type: ignore[no-untyped-def]
            qualified.append(spec.symbol)
            return original(spec)

        broker.qualify = counting  # type: ignore[method-assign]
        scores = score_prompts(stored, DAY, BrokerForwardBars(broker, clock=lambda: utc("2018-01-02")), store=False)
    finally:
        broker.close()
    v3 = scores[2].metrics
    assert v3["signals"] == 2 and v3["unscorable"] == 2
    assert (v3["horizons"]["1"]["scored"], v3["horizons"]["1"]["pending"]) == (0, 0)
    assert qualified.count("XYZ") == 1
    assert scores[0].metrics["horizons"]["1"]["scored"] == 6  # SPY through the same broker: as from the file


def test_market_day_is_the_new_york_date() -> None:
    assert market_day(dt.datetime(2024, 3, 5, 3, 0, tzinfo=dt.UTC)) == dt.date(2024, 3, 4)  # 22:00 ET the day before
    assert market_day(dt.datetime(2024, 3, 5, 23, 0, tzinfo=dt.UTC)) == dt.date(2024, 3, 5)
    assert parse_day(None, today=dt.date(2020, 1, 2)) == dt.date(2020, 1, 2)
    with pytest.raises(InputError, match="not a date"):
        parse_day("2024-13-01")
