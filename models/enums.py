"""Enumerations shared by every layer.

Each enum is a ``StrEnum`` so its values are what the database, the YAML strategy files and the
CLI show. IB's own spellings are kept where the value goes on the wire (bar sizes, order types).
"""

from __future__ import annotations

from enum import StrEnum


class ExitKind(StrEnum):
    """Why a position ended: its protective stop, its take-profit target, an opposite signal, or its time limit."""

    STOP = "stop"
    TARGET = "target"
    SIGNAL = "signal"
    TIME = "time"


class RunMode(StrEnum):
    """Where an order (or a run) trades: the run's in-memory broker, a paper or live account, or a replay.

    Stored on every order (``orders.run_mode``); ``dry_run`` orders never reach a socket.
    """

    DRY_RUN = "dry_run"
    PAPER = "paper"
    LIVE = "live"
    REPLAY = "replay"


class TradingMode(StrEnum):
    """Which IB account kind the system talks to. ``live`` must be switched on explicitly."""

    PAPER = "paper"
    LIVE = "live"


class SecType(StrEnum):
    """IB security types the system supports (IB files ETFs under ``STK``)."""

    STK = "STK"
    IND = "IND"
    FUT = "FUT"
    CASH = "CASH"


class BarSize(StrEnum):
    """IB's ``barSizeSetting`` values, spelled as IB spells them."""

    SEC_1 = "1 secs"
    SEC_5 = "5 secs"
    SEC_10 = "10 secs"
    SEC_15 = "15 secs"
    SEC_30 = "30 secs"
    MIN_1 = "1 min"
    MIN_2 = "2 mins"
    MIN_3 = "3 mins"
    MIN_5 = "5 mins"
    MIN_10 = "10 mins"
    MIN_15 = "15 mins"
    MIN_20 = "20 mins"
    MIN_30 = "30 mins"
    HOUR_1 = "1 hour"
    HOUR_2 = "2 hours"
    HOUR_3 = "3 hours"
    HOUR_4 = "4 hours"
    HOUR_8 = "8 hours"
    DAY_1 = "1 day"
    WEEK_1 = "1 week"
    MONTH_1 = "1 month"


class WhatToShow(StrEnum):
    """IB historical data ``whatToShow`` values the system uses."""

    TRADES = "TRADES"
    MIDPOINT = "MIDPOINT"
    ADJUSTED_LAST = "ADJUSTED_LAST"


class BadRowPolicy(StrEnum):
    """What validation does with a bar that breaks a rule."""

    FLAG = "flag"  # keep the row, mark it, keep it out of trading decisions
    DROP = "drop"  # remove the row from the batch
    FAIL = "fail"  # reject the whole batch


class SignalAction(StrEnum):
    """The outcome of one strategy run. ABSTAIN always carries a reason."""

    BUY = "BUY"
    SELL = "SELL"
    HOLD = "HOLD"
    ABSTAIN = "ABSTAIN"


class LlmProvider(StrEnum):
    """Which LLM endpoint step 5 talks to (``TRADER_LLM__PROVIDER``); ``offline`` is the deterministic rules analyst."""

    OFFLINE = "offline"
    OPENAI = "openai"
    AZURE = "azure"
    COMPATIBLE = "compatible"  # any OpenAI-compatible base URL: Ollama, vLLM, llama.cpp server, LM Studio, proxies


class AnalystKind(StrEnum):
    """Who produced an analysis: the configured LLM, or the deterministic offline analyst."""

    LLM = "llm"
    OFFLINE = "offline"


class DecisionPolicy(StrEnum):
    """How a strategy combines its indicator rules with the LLM's view (``decision.policy``)."""

    LLM_ONLY = "llm_only"  # the LLM decides (the rules only stand in when no LLM is configured)
    RULES_ONLY = "rules_only"  # the rules decide; no LLM call
    BOTH_AGREE = "both_agree"  # BUY/SELL only when rules and LLM say the same, else HOLD
    WEIGHTED = "weighted"  # weighted vote of the rules and the LLM against a threshold


class OrderSide(StrEnum):
    BUY = "BUY"
    SELL = "SELL"


class OrderType(StrEnum):
    """IB order types the system places."""

    MARKET = "MKT"
    LIMIT = "LMT"
    STOP = "STP"
    STOP_LIMIT = "STP LMT"


class TimeInForce(StrEnum):
    DAY = "DAY"
    GTC = "GTC"


class OrderStatus(StrEnum):
    """Our order lifecycle. Transitions are in ``models.order_states``."""

    CREATED = "created"
    RISK_REJECTED = "risk_rejected"
    SUBMITTING = "submitting"  # sent or about to be sent: outcome unknown until reconciled
    SUBMITTED = "submitted"
    PARTIALLY_FILLED = "partially_filled"
    FILLED = "filled"
    CANCEL_PENDING = "cancel_pending"
    CANCELLED = "cancelled"
    REJECTED = "rejected"
    INACTIVE = "inactive"
    EXPIRED = "expired"
    ARCHIVED = "archived"


class SizingMethod(StrEnum):
    FIXED_QUANTITY = "fixed_quantity"
    FIXED_NOTIONAL = "fixed_notional"
    PERCENT_EQUITY = "percent_equity"
    RISK_BASED = "risk_based"


class ApprovalRule(StrEnum):
    """When a strategy's order waits for a person before it is sent (``approval.rule`` in the strategy document)."""

    NEVER = "never"
    ALWAYS = "always"
    LIVE_ONLY = "live_only"  # only orders that would reach the live account (trading.mode live, not a dry run)
    ABOVE_NOTIONAL = "above_notional"  # orders whose notional exceeds approval.notional_threshold
