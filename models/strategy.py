"""The strategy definition: a validated document (YAML or JSON) that is also stored as a DB row.

Validation collects every problem with its field path (pydantic does the field-level work; the
cross-field checks below add theirs), so a broken file is fixed in one round trip.
"""

from __future__ import annotations

import importlib
import re
from datetime import UTC, datetime
from decimal import Decimal
from functools import cache
from typing import Annotated, Any, Final, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from models.bars import FIXED_BAR_SECONDS, SECONDS_PER_DAY
from models.enums import (
    ApprovalRule,
    BarSize,
    DecisionPolicy,
    OrderType,
    SecType,
    SizingMethod,
    TimeInForce,
    WhatToShow,
)
from models.rule_expr import Condition, RuleSyntaxError, parse_condition

NAME_PATTERN: Final = r"^[a-z0-9][a-z0-9-]{1,62}$"
SYMBOL_PATTERN: Final = r"^[A-Z0-9.]{1,12}$"

_SECONDS: Final = {"S": 1, "D": 86_400, "W": 7 * 86_400, "M": 30 * 86_400, "Y": 365 * 86_400}
_DURATION_RE: Final = re.compile(r"^(\d+) ([SDWMY])$")

# Longest lookback a single IB historical request may ask for, per bar size (IB "historical data
# limitations", step-size table). Longer lookbacks would need several paced requests.
MAX_DURATION_SECONDS: Final[dict[BarSize, int]] = {
    BarSize.SEC_1: 1_800,
    BarSize.SEC_5: 3_600,
    BarSize.SEC_10: 14_400,
    BarSize.SEC_15: 14_400,
    BarSize.SEC_30: 28_800,
    BarSize.MIN_1: 86_400 * 10,
    BarSize.MIN_2: 86_400 * 10,
    BarSize.MIN_3: 86_400 * 30,
    BarSize.MIN_5: 86_400 * 30,
    BarSize.MIN_10: 86_400 * 30,
    BarSize.MIN_15: 86_400 * 30,
    BarSize.MIN_20: 86_400 * 30,
    BarSize.MIN_30: 86_400 * 90,
    BarSize.HOUR_1: 86_400 * 365,
    BarSize.HOUR_2: 86_400 * 365,
    BarSize.HOUR_3: 86_400 * 365,
    BarSize.HOUR_4: 86_400 * 365,
    BarSize.HOUR_8: 86_400 * 365,
    BarSize.DAY_1: 86_400 * 365 * 30,
    BarSize.WEEK_1: 86_400 * 365 * 30,
    BarSize.MONTH_1: 86_400 * 365 * 30,
}

# Bar lengths for lookback arithmetic: a week is 7 days, a month approximated as 30.
BAR_SECONDS: Final[dict[BarSize, int]] = {
    **FIXED_BAR_SECONDS,
    BarSize.WEEK_1: 7 * SECONDS_PER_DAY,
    BarSize.MONTH_1: 30 * SECONDS_PER_DAY,
}


def duration_seconds(duration: str) -> int:
    """Return the length of an IB duration string such as ``"1 Y"`` or ``"3600 S"``; raise ValueError."""
    match = _DURATION_RE.match(duration)
    if match is None:
        raise ValueError(f"{duration!r} is not an IB duration like '30 D', '1 Y', '3600 S'")
    return int(match.group(1)) * _SECONDS[match.group(2)]


@cache
def talib_function_info(name: str) -> dict[str, Any] | None:
    """Return TA-Lib's own metadata for a function name, or None when TA-Lib has no such function."""
    talib: Any = importlib.import_module("talib")
    if name not in talib.get_functions():
        return None
    abstract: Any = importlib.import_module("talib.abstract")
    info: dict[str, Any] = abstract.Function(name).info
    return info


class _Doc(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class IndicatorSpec(_Doc):
    """One TA-Lib function with its parameters; ``alias`` names its output column(s)."""

    function: str = Field(description="TA-Lib function name, e.g. SMA, RSI, MACD, BBANDS, ATR.")
    params: dict[str, float | int] = Field(default_factory=dict)
    alias: str | None = Field(default=None, pattern=r"^[a-z][a-z0-9_]{0,40}$")

    @field_validator("function")
    @classmethod
    def _known_function(cls, value: str) -> str:
        name = value.upper()
        if talib_function_info(name) is None:
            raise ValueError(f"TA-Lib has no function {value!r}")
        return name

    @model_validator(mode="after")
    def _known_params(self) -> IndicatorSpec:
        info = talib_function_info(self.function)
        assert info is not None  # checked by the field validator
        allowed = dict(info["parameters"])
        unknown = sorted(set(self.params) - set(allowed))
        if unknown:
            raise ValueError(
                f"{self.function} has no parameter(s) {', '.join(unknown)} (it takes {', '.join(allowed) or 'none'})"
            )
        coerced: dict[str, float | int] = {}
        for key, value in self.params.items():
            if key.endswith("period") and int(value) < 1:
                raise ValueError(f"{self.function}.{key} must be >= 1, got {value}")
            # TA-Lib checks types strictly: give each parameter the type of its default.
            if isinstance(allowed[key], float):
                coerced[key] = float(value)
            elif float(value) != int(value):
                raise ValueError(f"{self.function}.{key} must be a whole number, got {value}")
            else:
                coerced[key] = int(value)
        object.__setattr__(self, "params", coerced)
        return self

    @property
    def column_prefix(self) -> str:
        if self.alias:
            return self.alias
        period = self.params.get("timeperiod")
        return f"{self.function.lower()}_{int(period)}" if period is not None else self.function.lower()

    def output_columns(self) -> list[tuple[str, str]]:
        """Return ``(talib output, column name)`` per output: ``prefix`` alone, or ``prefix_output`` for several."""
        info = talib_function_info(self.function)
        assert info is not None  # checked by the field validator
        outputs: list[str] = list(info["output_names"])
        prefix = self.column_prefix
        return [(out, prefix if len(outputs) == 1 else f"{prefix}_{out}") for out in outputs]

    @property
    def warmup_bars(self) -> int:
        """Bars TA-Lib needs before the first value (a safe upper bound from the period params)."""
        periods = [int(v) for k, v in self.params.items() if k.endswith("period")]
        info = talib_function_info(self.function) or {}
        periods += [int(v) for k, v in dict(info.get("parameters", {})).items() if k.endswith("period")]
        return max(periods, default=1) * 3


MAX_TIMEFRAMES: Final = 3
# Lookbacks tried, shortest first, when a timeframe gives none: the first one that serves the indicators' warm-up.
_TIMEFRAME_LOOKBACKS: Final = ("5 D", "10 D", "30 D", "60 D", "90 D", "6 M", "1 Y", "2 Y", "5 Y", "10 Y", "20 Y")
_RTH_SECONDS: Final = 23_400  # 09:30-16:00


def estimated_bars(bar_size: BarSize, lookback: str, *, use_rth: bool) -> int:
    """Trading bars a lookback gives (weekdays only; 6.5 h sessions when ``use_rth``; 252 days, 52 weeks or 12
    months a year). An estimate for sizing a request, not a count of IB's answer."""
    seconds = duration_seconds(lookback)
    if bar_size is BarSize.MONTH_1:
        return seconds * 12 // (365 * SECONDS_PER_DAY)
    if bar_size is BarSize.WEEK_1:
        return seconds * 52 // (365 * SECONDS_PER_DAY)
    weekdays = seconds * 252 // (365 * SECONDS_PER_DAY)
    if bar_size is BarSize.DAY_1:
        return weekdays
    session = _RTH_SECONDS if use_rth else SECONDS_PER_DAY
    return weekdays * max(1, session // BAR_SECONDS[bar_size])


class Timeframe(_Doc):
    """A higher timeframe the strategy looks at besides its main bars (context: the chart gets a pane, the prompt a
    section). Written as a bar size (``"1 day"``) or a mapping; without a lookback the shortest that serves the
    indicators' warm-up is used; without indicators the strategy's own are computed on these bars."""

    bar_size: BarSize
    lookback: str | None = Field(default=None, description="IB duration string; default: enough for the warm-up.")
    indicators: list[IndicatorSpec] | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_bar_size(cls, value: Any) -> Any:
        return {"bar_size": value} if isinstance(value, str) else value

    @field_validator("lookback")
    @classmethod
    def _valid_duration(cls, value: str | None) -> str | None:
        if value is not None:
            duration_seconds(value)
        return value


class PromptRef(_Doc):
    template: str = Field(pattern=NAME_PATTERN)
    version: int = Field(ge=1)


class Schedule(_Doc):
    cron: str
    timezone: str = "America/New_York"
    extended_hours: bool = Field(default=False, description="Allow runs outside regular trading hours.")

    @field_validator("cron")
    @classmethod
    def _valid_cron(cls, value: str) -> str:
        from croniter import CroniterBadDateError, croniter

        if len(value.split()) != 5 or not croniter.is_valid(value):
            raise ValueError(f"{value!r} is not a 5-field cron expression")
        try:  # valid fields can still name no date at all ("0 12 31 2 *": 31 February)
            croniter(value, datetime(2000, 1, 1, tzinfo=UTC)).get_next(datetime)
        except CroniterBadDateError:
            raise ValueError(f"{value!r} never fires (no date matches it)") from None
        return value

    @field_validator("timezone")
    @classmethod
    def _valid_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{value!r} is not an IANA timezone") from None
        return value


class Sizing(_Doc):
    method: SizingMethod
    quantity: Decimal | None = Field(default=None, gt=0, description="fixed_quantity: shares per order")
    notional: Decimal | None = Field(default=None, gt=0, description="fixed_notional: currency per order")
    percent: Decimal | None = Field(default=None, gt=0, le=100, description="percent_equity: % of net liquidation")
    risk_fraction: Decimal | None = Field(
        default=None, gt=0, le=Decimal("0.1"), description="risk_based: fraction of equity risked to the stop"
    )
    atr_period: int = Field(default=14, ge=1, description="risk_based: ATR period when the signal has no stop")
    atr_multiple: Decimal = Field(default=Decimal("2"), gt=0)

    @model_validator(mode="after")
    def _method_has_its_parameter(self) -> Sizing:
        needed = {
            SizingMethod.FIXED_QUANTITY: "quantity",
            SizingMethod.FIXED_NOTIONAL: "notional",
            SizingMethod.PERCENT_EQUITY: "percent",
            SizingMethod.RISK_BASED: "risk_fraction",
        }[self.method]
        if getattr(self, needed) is None:
            raise ValueError(f"sizing method {self.method.value} needs '{needed}'")
        return self


class TrailingStop(_Doc):
    """The bracket's protective stop as a trailing stop (IB TRAIL): it follows the price by ``amount`` (currency
    per share) or ``percent`` (of the price), exactly one, and never moves back."""

    amount: Decimal | None = Field(default=None, gt=0)
    percent: Decimal | None = Field(default=None, gt=0, lt=100)

    @model_validator(mode="after")
    def _one_of(self) -> TrailingStop:
        if (self.amount is None) == (self.percent is None):
            raise ValueError("trailing_stop needs 'amount' or 'percent' (exactly one)")
        return self


class Risk(_Doc):
    max_position: Decimal = Field(gt=0, description="Max absolute position in the symbol (shares).")
    max_notional_per_order: Decimal = Field(gt=0)
    max_orders_per_day: int = Field(default=4, ge=1)
    sizing: Sizing
    order_type: Literal[OrderType.MARKET, OrderType.LIMIT] = OrderType.LIMIT
    tif: TimeInForce = TimeInForce.DAY
    limit_timeout_minutes: int = Field(default=30, ge=1, description="Cancel an unfilled DAY limit after this.")
    stop_loss_pct: Decimal | None = Field(default=None, gt=0, lt=100, description="Used when the analysis has none.")
    take_profit_pct: Decimal | None = Field(default=None, gt=0, description="Used when the analysis has none.")
    allow_short: bool = False
    order_expiry_bars: int = Field(
        default=1,
        ge=1,
        le=1000,
        description="An order may be sent (first time or retried) only until this many bars after its signal's "
        "bar closed; then it ends 'expired' with the reason.",
    )
    trailing_stop: TrailingStop | None = Field(
        default=None,
        description="Off when omitted: the bracket's stop is a fixed STP. Set: a TRAIL starting at the signal's "
        "stop (else the entry less the trail) that follows the price.",
    )
    max_holding_bars: int | None = Field(
        default=None,
        ge=1,
        le=10_000,
        description="Time exit (off when omitted): a position held this many bars (its entry's bar included) is "
        "closed by a market order at the next bar's open, whatever the signal; its bracket is cancelled.",
    )


class SignalRules(_Doc):
    """Filters applied to the analysis before it becomes a BUY or SELL."""

    min_confidence: Decimal = Field(default=Decimal("0.55"), ge=0, le=1)
    min_risk_reward: Decimal = Field(default=Decimal("1.5"), ge=0)
    max_data_age_bars: int = Field(default=3, ge=1, description="ABSTAIN when the newest bar is older than this.")


# Names a rule may read besides the indicator columns (the newest usable bar's close).
RULE_PRICE_NAMES: Final = ("close",)
DEFAULT_RULES_THRESHOLD: Final = 1 / 3


class Rule(_Doc):
    """One indicator rule: when ``when`` holds on the newest usable bar, it votes ``action`` with ``weight``.

    Rules sharing a ``group`` are alternatives (e.g. "RSI < 30 -> BUY" and "RSI > 70 -> SELL"): the group counts
    once, with its largest weight, in the total the vote is divided by.
    """

    when: str = Field(description="Condition in the rule language, e.g. 'sma_fast > sma_slow and rsi_14 < 70'.")
    action: Literal["BUY", "SELL"]
    weight: float = Field(default=1.0, gt=0, le=1000)
    name: str | None = Field(default=None, max_length=60, description="Label in reasons (default: the condition).")
    group: str | None = Field(default=None, max_length=60)

    @field_validator("when")
    @classmethod
    def _parses(cls, value: str) -> str:
        try:
            return parse_condition(value).source
        except RuleSyntaxError as exc:
            raise ValueError(f"rule {value!r}: {exc}") from None

    @property
    def label(self) -> str:
        return self.name or self.when

    @property
    def condition(self) -> Condition:
        return parse_condition(self.when)  # cached by source text

    @property
    def names(self) -> frozenset[str]:
        return self.condition.names


class Decision(_Doc):
    """How the signal combines the indicator rules and the LLM (see ``services/decision.py``).

    ``rules`` empty: the offline analyst's rules (trend, RSI, Bollinger Bands, MACD over the strategy's indicators).
    Without an LLM configured every policy falls back to the rules (the run is labelled offline).
    """

    policy: DecisionPolicy = DecisionPolicy.LLM_ONLY
    rules: list[Rule] = Field(default_factory=list)
    rules_threshold: float = Field(
        default=DEFAULT_RULES_THRESHOLD,
        gt=0,
        le=1,
        description="The rules say BUY at score >= this, SELL at <= -this (score -1..1).",
    )
    llm_weight: float = Field(default=1.0, gt=0, le=1000, description="weighted: the LLM's weight (x its confidence).")
    threshold: float = Field(default=0.5, gt=0, le=1, description="weighted: |combined score| needed for BUY/SELL.")


class LlmOptions(_Doc):
    """How step 5 uses the LLM for this strategy (the endpoint itself is ``TRADER_LLM__*``)."""

    vision: bool = Field(
        default=True, description="Send the chart image (only to a model that reads images: TRADER_LLM__VISION)."
    )
    daily_budget_usd: Decimal | None = Field(
        default=None,
        ge=0,
        allow_inf_nan=False,
        description="This strategy's LLM spend per UTC day, checked besides the global TRADER_LLM__DAILY_BUDGET_USD.",
    )


class Approval(_Doc):
    """Whether an order of the strategy waits for a person (Prefect UI form or ``trader approve``) before it is sent.

    While it waits the strategy run is Paused; approve sends it (the risk gate runs again at that moment), reject
    or no answer within ``timeout_minutes`` ends the order unsent and the run Completed "not approved: ...".
    """

    rule: ApprovalRule = ApprovalRule.NEVER
    notional_threshold: Decimal | None = Field(
        default=None, gt=0, description="above_notional: orders above this notional (quantity x price) wait."
    )
    timeout_minutes: float = Field(
        default=15, gt=0, le=7 * 24 * 60, description="No decision within this: the order is not sent."
    )

    @model_validator(mode="after")
    def _threshold_with_its_rule(self) -> Approval:
        if self.rule is ApprovalRule.ABOVE_NOTIONAL and self.notional_threshold is None:
            raise ValueError("approval rule above_notional needs 'notional_threshold'")
        if self.rule is not ApprovalRule.ABOVE_NOTIONAL and self.notional_threshold is not None:
            raise ValueError(f"'notional_threshold' only applies to the above_notional rule, not {self.rule.value}")
        return self


class StrategyDefinition(_Doc):
    """A complete, validated strategy document."""

    name: str = Field(pattern=NAME_PATTERN)
    description: str = ""
    symbol: str = Field(pattern=SYMBOL_PATTERN)
    conid: int = Field(gt=0, description="IB contract id.")
    sec_type: SecType = SecType.STK
    exchange: str = "SMART"
    primary_exchange: str | None = None
    currency: str = Field(default="USD", pattern=r"^[A-Z]{3}$")
    bar_size: BarSize
    lookback: str = Field(description="IB duration string, e.g. '1 Y', '30 D'.")
    what_to_show: WhatToShow = WhatToShow.TRADES
    use_rth: bool = True
    indicators: Annotated[list[IndicatorSpec], Field(min_length=1)]
    timeframes: list[Timeframe] = Field(
        default_factory=list, description=f"Up to {MAX_TIMEFRAMES} higher bar sizes as context."
    )
    prompt: PromptRef
    schedule: Schedule
    risk: Risk
    rules: SignalRules = Field(default_factory=SignalRules)
    approval: Approval = Field(default_factory=Approval)
    decision: Decision = Field(default_factory=Decision)
    llm: LlmOptions = Field(default_factory=LlmOptions)
    active: bool = True

    @field_validator("lookback")
    @classmethod
    def _valid_duration(cls, value: str) -> str:
        duration_seconds(value)
        return value

    @model_validator(mode="after")
    def _cross_checks(self) -> StrategyDefinition:
        problems: list[str] = []
        lookback = duration_seconds(self.lookback)
        limit = MAX_DURATION_SECONDS[self.bar_size]
        if lookback > limit:
            problems.append(f"lookback {self.lookback!r} exceeds IB's limit for {self.bar_size.value!r} bars")
        # Lenient for the warm-up (calendar time for intraday bars; daily bars ~252 a year): a document is refused
        # only when the lookback is clearly too short.
        bars = lookback // BAR_SECONDS[self.bar_size]
        if self.bar_size is BarSize.DAY_1:
            bars = lookback * 252 // (365 * 86_400)
        warmup = max(spec.warmup_bars for spec in self.indicators)
        if bars < warmup:
            problems.append(f"lookback {self.lookback!r} gives ~{bars} bars; the indicators need ~{warmup}")
        holding = self.risk.max_holding_bars
        bars = estimated_bars(self.bar_size, self.lookback, use_rth=self.use_rth)  # trading time: what IB returns
        if holding is not None and bars <= holding:
            # a live run counts the bars held in the bars it fetched: with fewer, the time exit could never come due
            problems.append(
                f"risk.max_holding_bars {holding} needs a lookback of more than {holding} bars; lookback "
                f"{self.lookback!r} gives ~{bars}: lengthen it"
            )
        prefixes = [spec.column_prefix for spec in self.indicators]
        duplicates = sorted({p for p in prefixes if prefixes.count(p) > 1})
        if duplicates:
            problems.append(f"indicators produce duplicate columns {duplicates}: give them distinct aliases")
        problems += self._unknown_rule_names()
        if self.risk.sizing.notional is not None and self.risk.sizing.notional > self.risk.max_notional_per_order:
            problems.append("risk.sizing.notional exceeds risk.max_notional_per_order")
        problems += self._timeframe_problems()
        if problems:
            raise ValueError("\n".join(problems))
        if self.timeframes:  # fill in the default lookbacks: the stored document says what is fetched
            object.__setattr__(self, "timeframes", [self._with_lookback(tf) for tf in self.timeframes])
        return self

    def rule_names(self) -> list[str]:
        """Names a rule may read: ``close`` and every indicator column of this strategy."""
        return [*RULE_PRICE_NAMES, *(name for spec in self.indicators for _, name in spec.output_columns())]

    def _unknown_rule_names(self) -> list[str]:
        known = set(self.rule_names())
        problems = []
        for i, rule in enumerate(self.decision.rules):
            unknown = sorted(rule.names - known)
            if unknown:
                problems.append(
                    f"decision.rules[{i}] ({rule.when!r}) reads unknown name(s) {', '.join(map(repr, unknown))}: "
                    f"known are {', '.join(sorted(known))}"
                )
        return problems

    def timeframe_indicators(self, timeframe: Timeframe) -> list[IndicatorSpec]:
        return timeframe.indicators if timeframe.indicators is not None else self.indicators

    def _timeframe_problems(self) -> list[str]:
        problems: list[str] = []
        if len(self.timeframes) > MAX_TIMEFRAMES:
            problems.append(f"timeframes: at most {MAX_TIMEFRAMES}, got {len(self.timeframes)}")
        sizes = [tf.bar_size for tf in self.timeframes]
        if len(set(sizes)) != len(sizes):
            problems.append("timeframes: each bar size at most once")
        for i, tf in enumerate(self.timeframes):
            where = f"timeframes[{i}] ({tf.bar_size.value})"
            if BAR_SECONDS[tf.bar_size] <= BAR_SECONDS[self.bar_size]:
                problems.append(f"{where}: must be a higher timeframe than the main bars ({self.bar_size.value})")
                continue
            specs = self.timeframe_indicators(tf)
            if not specs:
                problems.append(f"{where}: indicators must not be empty (omit them to use the strategy's)")
                continue
            warmup = max(spec.warmup_bars for spec in specs)
            if tf.lookback is None:
                if self._default_lookback(tf.bar_size, warmup) is None:
                    problems.append(f"{where}: no lookback within IB's limit gives the ~{warmup} bars needed")
                continue
            if duration_seconds(tf.lookback) > MAX_DURATION_SECONDS[tf.bar_size]:
                problems.append(f"{where}: lookback {tf.lookback!r} exceeds IB's limit for the bar size")
            bars = estimated_bars(tf.bar_size, tf.lookback, use_rth=self.use_rth)
            if bars < warmup:
                problems.append(f"{where}: lookback {tf.lookback!r} gives ~{bars} bars; the indicators need ~{warmup}")
        return problems

    def _default_lookback(self, bar_size: BarSize, warmup: int) -> str | None:
        for lookback in _TIMEFRAME_LOOKBACKS:
            if duration_seconds(lookback) > MAX_DURATION_SECONDS[bar_size]:
                return None
            if estimated_bars(bar_size, lookback, use_rth=self.use_rth) >= warmup:
                return lookback
        return None

    def _with_lookback(self, tf: Timeframe) -> Timeframe:
        if tf.lookback is not None:
            return tf
        warmup = max(spec.warmup_bars for spec in self.timeframe_indicators(tf))
        return tf.model_copy(update={"lookback": self._default_lookback(tf.bar_size, warmup)})
