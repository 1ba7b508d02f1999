"""Database tables (SQLAlchemy 2 typed ORM). No I/O here: engines and sessions live in ``services.db``.

Conventions:

* Every datetime column is :class:`UTCDateTime`: timezone-aware in and out, stored as UTC, naive input refused.
* Money and prices are :class:`ExactDecimal` ``(18, 8)`` (up to 9,999,999,999.99999999), quantities ``(18, 6)``:
  ``Decimal`` in and out, never float. PostgreSQL stores ``NUMERIC(p, s)``; SQLite (which would keep only 15
  significant digits of a ``NUMERIC``) stores a scaled ``BIGINT`` (value x 10^scale), exact, sortable and summable
  in SQL. Precision 18 is what fits a 64-bit integer, so both backends accept exactly the same values. A value with
  more decimal places than the column's scale, or too large, is refused (nothing is rounded silently).
* Enums are stored as their string values (``VARCHAR``, no native enum type, no CHECK constraint), so adding a
  member needs no migration.
* Ratios (confidence, risk/reward) are floats: they are estimates, not money.
* Constraint and index names follow :data:`NAMING_CONVENTION`, so migrations can address them on both backends.

Schema changes need a new Alembic revision in ``models/migrations/versions`` (the test suite fails when the
models and the migrations disagree).
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import Any, Final

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Numeric,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy import Enum as SAEnum
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator, TypeEngine

from models.enums import AnalystKind, BarSize, OrderSide, OrderStatus, OrderType, RunMode, SignalAction, TimeInForce

NAMING_CONVENTION: Final[dict[str, str]] = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

PRICE_PRECISION: Final = 18
PRICE_SCALE: Final = 8
QUANTITY_PRECISION: Final = 18
QUANTITY_SCALE: Final = 6


def utc_now() -> dt.datetime:
    """Return the current time, timezone-aware in UTC."""
    return dt.datetime.now(dt.UTC)


# ---------------------------------------------------------------------------------------------------------------------
# Column types


class UTCDateTime(TypeDecorator[dt.datetime]):
    """A timezone-aware datetime stored as UTC; naive datetimes are refused with ``ValueError``.

    PostgreSQL: ``TIMESTAMP WITH TIME ZONE``. SQLite: ISO text of the UTC wall time (sorts correctly).
    Values come back aware, in UTC, whatever the input's zone was (the same instant).
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if not isinstance(value, dt.datetime):
            raise TypeError(f"expected a timezone-aware datetime, got {type(value).__name__}: {value!r}")
        if value.tzinfo is None or value.tzinfo.utcoffset(value) is None:
            raise ValueError(f"naive datetime {value.isoformat()} refused: attach a timezone (UTC inside)")
        value = value.astimezone(dt.UTC)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC)


class ExactDecimal(TypeDecorator[Decimal]):
    """An exact ``Decimal`` with fixed precision and scale, on both backends.

    Accepts ``Decimal``, ``int`` or a numeric ``str``; refuses ``float`` (``TypeError``), NaN/infinity, values with
    more than ``scale`` decimal places and values with more than ``precision - scale`` integer digits
    (``ValueError``). Returns ``Decimal`` quantized to ``scale`` places (``Decimal("1")`` comes back as
    ``Decimal("1.00000000")``, which compares equal).
    """

    impl = Numeric
    cache_ok = True

    def __init__(self, precision: int, scale: int) -> None:
        if not 0 <= scale <= precision <= 18:
            raise ValueError(f"ExactDecimal({precision}, {scale}): need 0 <= scale <= precision <= 18")
        super().__init__(precision=precision, scale=scale, asdecimal=True)
        self.precision = precision
        self.scale = scale
        self._quantum = Decimal(1).scaleb(-scale)
        self._limit = Decimal(10) ** (precision - scale)

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(BigInteger())
        return dialect.type_descriptor(Numeric(self.precision, self.scale, asdecimal=True))

    def coerce(self, value: object) -> Decimal:
        """Return ``value`` as a ``Decimal`` at this column's scale, or raise if it does not fit exactly."""
        if isinstance(value, bool | float):
            raise TypeError(f"{value!r} is a {type(value).__name__}: money and quantities must be Decimal")
        if isinstance(value, Decimal):
            number = value
        elif isinstance(value, int | str):
            try:
                number = Decimal(value)
            except InvalidOperation as exc:
                raise ValueError(f"{value!r} is not a decimal number") from exc
        else:
            raise TypeError(f"expected Decimal, got {type(value).__name__}: {value!r}")
        if not number.is_finite():
            raise ValueError(f"{value!r} is not a finite number")
        quantized = number.quantize(self._quantum)
        if quantized != number:
            raise ValueError(f"{number} has more than {self.scale} decimal places: quantize it before storing")
        if abs(quantized) >= self._limit:
            raise ValueError(f"{number} does not fit NUMERIC({self.precision}, {self.scale})")
        return quantized

    def process_bind_param(self, value: object, dialect: Dialect) -> Any:
        if value is None:
            return None
        number = self.coerce(value)
        if dialect.name == "sqlite":
            return int(number.scaleb(self.scale))  # |value| < 10**18 < 2**63 by the precision limit
        return number

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        if value is None:
            return None
        if dialect.name == "sqlite":
            if isinstance(value, float):  # only reachable for rows written by other tools
                return Decimal(repr(value)).scaleb(-self.scale).quantize(self._quantum)
            return Decimal(int(value)).scaleb(-self.scale).quantize(self._quantum)
        return Decimal(value).quantize(self._quantum)


def Price() -> ExactDecimal:
    """Prices and money: ``NUMERIC(18, 8)``."""
    return ExactDecimal(PRICE_PRECISION, PRICE_SCALE)


def Quantity() -> ExactDecimal:
    """Share / contract quantities: ``NUMERIC(18, 6)``."""
    return ExactDecimal(QUANTITY_PRECISION, QUANTITY_SCALE)


def JsonDoc() -> TypeEngine[Any]:
    """A JSON document: ``JSONB`` on PostgreSQL, ``JSON`` (text) elsewhere."""
    return JSON().with_variant(JSONB(), "postgresql")


def StrEnumColumn(enum: type[StrEnum], length: int = 32) -> SAEnum:
    """A ``StrEnum`` stored as its value in a ``VARCHAR(length)``, returned as the enum member."""
    return SAEnum(
        enum,
        native_enum=False,
        create_constraint=False,
        length=length,
        values_callable=lambda members: [m.value for m in members],
        validate_strings=True,
    )


# ---------------------------------------------------------------------------------------------------------------------
# Base


class Base(DeclarativeBase):
    """Declarative base of every table; ``Base.metadata`` is what Alembic compares against."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def _created() -> Mapped[dt.datetime]:
    return mapped_column(UTCDateTime(), default=utc_now, nullable=False)


def _updated() -> Mapped[dt.datetime]:
    return mapped_column(UTCDateTime(), default=utc_now, onupdate=utc_now, nullable=False)


# ---------------------------------------------------------------------------------------------------------------------
# Contracts


class Contract(Base):
    """Cached IB contract details, keyed by conid."""

    __tablename__ = "contracts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    conid: Mapped[int] = mapped_column(BigInteger, unique=True, nullable=False)
    symbol: Mapped[str] = mapped_column(String(32), index=True, nullable=False)
    sec_type: Mapped[str] = mapped_column(String(8), nullable=False)
    exchange: Mapped[str] = mapped_column(String(32), nullable=False, default="SMART")
    primary_exchange: Mapped[str | None] = mapped_column(String(32))
    currency: Mapped[str] = mapped_column(String(8), nullable=False)
    local_symbol: Mapped[str | None] = mapped_column(String(64))
    long_name: Mapped[str | None] = mapped_column(String(256))
    details: Mapped[dict[str, Any]] = mapped_column(JsonDoc(), nullable=False, default=dict)
    fetched_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), nullable=False, default=utc_now)


class CacheStat(Base):
    """Hit and miss counters of a named cache (e.g. ``contracts``)."""

    __tablename__ = "cache_stats"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    hits: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    misses: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)


# ---------------------------------------------------------------------------------------------------------------------
# Strategies and prompts


class Strategy(Base):
    """A strategy definition: the full validated document plus the fields the scheduler queries."""

    __tablename__ = "strategies"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True, nullable=False)
    definition: Mapped[dict[str, Any]] = mapped_column(JsonDoc(), nullable=False)
    symbol: Mapped[str] = mapped_column(String(32), nullable=False)
    conid: Mapped[int | None] = mapped_column(BigInteger)
    bar_size: Mapped[BarSize] = mapped_column(StrEnumColumn(BarSize, 16), nullable=False)
    cron: Mapped[str | None] = mapped_column(String(128))
    timezone: Mapped[str] = mapped_column(String(64), nullable=False, default="UTC")
    prompt_template_name: Mapped[str | None] = mapped_column(String(128))
    prompt_template_version: Mapped[int | None] = mapped_column(Integer)
    active: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    created_at: Mapped[dt.datetime] = _created()
    updated_at: Mapped[dt.datetime] = _updated()


class PromptTemplate(Base):
    """One version of a prompt template. Immutable once ``first_used_at`` is set."""

    __tablename__ = "prompt_templates"
    __table_args__ = (UniqueConstraint("name", "version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), nullable=False)
    version: Mapped[int] = mapped_column(Integer, nullable=False)
    body: Mapped[str] = mapped_column(Text, nullable=False)
    body_sha256: Mapped[str] = mapped_column(String(64), nullable=False)
    description: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = _created()
    first_used_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())


class PromptScore(Base):
    """Daily quality metrics of one prompt template version."""

    __tablename__ = "prompt_scores"
    __table_args__ = (UniqueConstraint("day", "template_name", "template_version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    day: Mapped[dt.date] = mapped_column(Date, nullable=False)
    template_name: Mapped[str] = mapped_column(String(128), nullable=False)
    template_version: Mapped[int] = mapped_column(Integer, nullable=False)
    metrics: Mapped[dict[str, Any]] = mapped_column(JsonDoc(), nullable=False, default=dict)
    updated_at: Mapped[dt.datetime] = _updated()


# ---------------------------------------------------------------------------------------------------------------------
# LLM calls and signals


class LlmCall(Base):
    """One request to the model endpoint (or a cache hit), with its cost."""

    __tablename__ = "llm_calls"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model: Mapped[str] = mapped_column(String(128), nullable=False)
    analyst: Mapped[AnalystKind] = mapped_column(StrEnumColumn(AnalystKind, 16), nullable=False)
    prompt_sha256: Mapped[str] = mapped_column(String(64), nullable=False)
    cache_key: Mapped[str | None] = mapped_column(String(128), index=True)
    request_json: Mapped[str] = mapped_column(Text, nullable=False)
    response_text: Mapped[str | None] = mapped_column(Text)
    prompt_tokens: Mapped[int | None] = mapped_column(Integer)
    completion_tokens: Mapped[int | None] = mapped_column(Integer)
    cost_usd: Mapped[Decimal] = mapped_column(Price(), nullable=False, default=Decimal(0))
    latency_ms: Mapped[int | None] = mapped_column(Integer)
    cached: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    error: Mapped[str | None] = mapped_column(Text)
    strategy_name: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utc_now, nullable=False, index=True)


class Signal(Base):
    """The outcome of one strategy run."""

    __tablename__ = "signals"
    __table_args__ = (
        Index("ix_signals_strategy_id_bar_time", "strategy_id", "bar_time"),
        Index("ix_signals_strategy_name_bar_time", "strategy_name", "bar_time"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    strategy_id: Mapped[int | None] = mapped_column(ForeignKey("strategies.id", ondelete="SET NULL"))
    strategy_name: Mapped[str] = mapped_column(String(128), nullable=False)
    symbol: Mapped[str] = mapped_column(String(32), nullable=False)
    bar_time: Mapped[dt.datetime] = mapped_column(UTCDateTime(), nullable=False)
    action: Mapped[SignalAction] = mapped_column(StrEnumColumn(SignalAction, 16), nullable=False)
    confidence: Mapped[float | None] = mapped_column(Float)
    entry: Mapped[Decimal | None] = mapped_column(Price())
    stop: Mapped[Decimal | None] = mapped_column(Price())
    target: Mapped[Decimal | None] = mapped_column(Price())
    risk_reward: Mapped[float | None] = mapped_column(Float)
    reason: Mapped[str] = mapped_column(Text, nullable=False, default="")
    analyst: Mapped[AnalystKind] = mapped_column(StrEnumColumn(AnalystKind, 16), nullable=False)
    prompt_template_name: Mapped[str | None] = mapped_column(String(128))
    prompt_template_version: Mapped[int | None] = mapped_column(Integer)
    flow_run_id: Mapped[str | None] = mapped_column(String(64))
    llm_call_id: Mapped[int | None] = mapped_column(ForeignKey("llm_calls.id", ondelete="SET NULL"))
    details: Mapped[dict[str, Any]] = mapped_column(JsonDoc(), nullable=False, default=dict)
    created_at: Mapped[dt.datetime] = _created()


# ---------------------------------------------------------------------------------------------------------------------
# Orders, fills, positions


class Order(Base):
    """One order through its lifecycle. ``idempotency_key`` is also sent to IB as ``orderRef``."""

    __tablename__ = "orders"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    idempotency_key: Mapped[str] = mapped_column(String(128), unique=True, nullable=False)
    signal_id: Mapped[int | None] = mapped_column(ForeignKey("signals.id", ondelete="SET NULL"))
    strategy_id: Mapped[int | None] = mapped_column(ForeignKey("strategies.id", ondelete="SET NULL"), index=True)
    strategy_name: Mapped[str | None] = mapped_column(String(128))
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("orders.id", ondelete="SET NULL"))
    symbol: Mapped[str] = mapped_column(String(32), nullable=False)
    conid: Mapped[int | None] = mapped_column(BigInteger)
    side: Mapped[OrderSide] = mapped_column(StrEnumColumn(OrderSide, 8), nullable=False)
    quantity: Mapped[Decimal] = mapped_column(Quantity(), nullable=False)
    order_type: Mapped[OrderType] = mapped_column(StrEnumColumn(OrderType, 16), nullable=False)
    limit_price: Mapped[Decimal | None] = mapped_column(Price())
    stop_price: Mapped[Decimal | None] = mapped_column(Price())  # a TRAIL: its initial stop (trailStopPrice)
    trail_amount: Mapped[Decimal | None] = mapped_column(Price())  # a TRAIL's distance: an amount per share ...
    trail_percent: Mapped[Decimal | None] = mapped_column(Price())  # ... or a percent of the price
    tif: Mapped[TimeInForce] = mapped_column(StrEnumColumn(TimeInForce, 8), nullable=False, default=TimeInForce.DAY)
    status: Mapped[OrderStatus] = mapped_column(
        StrEnumColumn(OrderStatus, 32), nullable=False, default=OrderStatus.CREATED, index=True
    )
    ib_order_id: Mapped[int | None] = mapped_column(Integer)
    ib_perm_id: Mapped[int | None] = mapped_column(BigInteger, index=True)
    ib_client_id: Mapped[int | None] = mapped_column(Integer)
    filled_quantity: Mapped[Decimal] = mapped_column(Quantity(), nullable=False, default=Decimal(0))
    avg_fill_price: Mapped[Decimal | None] = mapped_column(Price())
    commission: Mapped[Decimal | None] = mapped_column(Price())
    realized_pnl: Mapped[Decimal | None] = mapped_column(Price())
    error_code: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    risk_decision: Mapped[dict[str, Any] | None] = mapped_column(JsonDoc())
    submit_attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    last_submit_error: Mapped[str | None] = mapped_column(Text)
    external: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    # dry_run / paper / live (models.enums.RunMode); NULL: sent to a socket broker before run modes were recorded
    # (migration 0003), or adopted from the broker
    run_mode: Mapped[RunMode | None] = mapped_column(StrEnumColumn(RunMode, 16))
    flow_run_id: Mapped[str | None] = mapped_column(String(64))
    # the signal's validity: no send (first or retry) at or after this instant; the order then ends ``expired``
    expires_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    # the price a market order is judged at by the risk gate (a limit order uses its limit price)
    reference_price: Mapped[Decimal | None] = mapped_column(Price())
    # a person's go-ahead (strategy ``approval`` rule): {"state": "pending"|"approved"|"rejected"|"timed_out",
    # "rule", "deadline", "by", "at", "reason", "flow_run_id"}; None: the order needed none. A pending order is
    # never sent (services.orders.approval).
    approval: Mapped[dict[str, Any] | None] = mapped_column(JsonDoc())
    created_at: Mapped[dt.datetime] = _created()
    updated_at: Mapped[dt.datetime] = _updated()
    submitted_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    terminal_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    archived_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())


class OrderEvent(Base):
    """Audit trail: one row per status transition of an order."""

    __tablename__ = "order_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("orders.id", ondelete="CASCADE"), index=True, nullable=False)
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), nullable=False, default=utc_now)
    from_status: Mapped[OrderStatus | None] = mapped_column(StrEnumColumn(OrderStatus, 32))
    to_status: Mapped[OrderStatus] = mapped_column(StrEnumColumn(OrderStatus, 32), nullable=False)
    detail: Mapped[str | None] = mapped_column(Text)


class Fill(Base):
    """One execution reported by IB. A correction names the replacing ``exec_id`` in ``superseded_by``."""

    __tablename__ = "fills"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    exec_id: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    order_id: Mapped[int | None] = mapped_column(ForeignKey("orders.id", ondelete="SET NULL"), index=True)
    ib_perm_id: Mapped[int | None] = mapped_column(BigInteger, index=True)
    conid: Mapped[int | None] = mapped_column(BigInteger)
    symbol: Mapped[str] = mapped_column(String(32), nullable=False)
    side: Mapped[OrderSide] = mapped_column(StrEnumColumn(OrderSide, 8), nullable=False)
    quantity: Mapped[Decimal] = mapped_column(Quantity(), nullable=False)
    price: Mapped[Decimal] = mapped_column(Price(), nullable=False)
    commission: Mapped[Decimal | None] = mapped_column(Price())
    realized_pnl: Mapped[Decimal | None] = mapped_column(Price())
    executed_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), nullable=False, index=True)
    superseded_by: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = _created()


class Position(Base):
    """Current position per contract, as rebuilt from fills and reconciled with IB."""

    __tablename__ = "positions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    conid: Mapped[int] = mapped_column(BigInteger, unique=True, nullable=False)
    symbol: Mapped[str] = mapped_column(String(32), nullable=False)
    quantity: Mapped[Decimal] = mapped_column(Quantity(), nullable=False, default=Decimal(0))
    avg_cost: Mapped[Decimal] = mapped_column(Price(), nullable=False, default=Decimal(0))
    realized_pnl: Mapped[Decimal] = mapped_column(Price(), nullable=False, default=Decimal(0))
    commissions: Mapped[Decimal] = mapped_column(Price(), nullable=False, default=Decimal(0))
    updated_at: Mapped[dt.datetime] = _updated()


class PnlSnapshot(Base):
    """Account P&L at one instant, for the P&L chart."""

    __tablename__ = "pnl_snapshots"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), nullable=False, index=True)
    realized: Mapped[Decimal] = mapped_column(Price(), nullable=False)
    unrealized: Mapped[Decimal] = mapped_column(Price(), nullable=False)
    equity: Mapped[Decimal | None] = mapped_column(Price())


# ---------------------------------------------------------------------------------------------------------------------
# Operations


class TradingState(Base):
    """Key/value operational state (kill switch, daily-loss trip), JSON values."""

    __tablename__ = "trading_state"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[dict[str, Any]] = mapped_column(JsonDoc(), nullable=False)
    updated_at: Mapped[dt.datetime] = _updated()


class KillSwitchEvent(Base):
    """History of the kill switch: every engage and release, who, why and when (``trader halt --history``)."""

    __tablename__ = "kill_switch_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), nullable=False, default=utc_now)
    engaged: Mapped[bool] = mapped_column(Boolean, nullable=False)
    reason: Mapped[str | None] = mapped_column(Text)
    changed_by: Mapped[str | None] = mapped_column(String(128))
    ended_orders: Mapped[int] = mapped_column(Integer, nullable=False, default=0)


class ReplayRun(Base):
    """One replay (backtest) of a strategy over stored bars."""

    __tablename__ = "replay_runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    strategy_name: Mapped[str] = mapped_column(String(128), nullable=False, index=True)
    params: Mapped[dict[str, Any]] = mapped_column(JsonDoc(), nullable=False, default=dict)
    metrics: Mapped[dict[str, Any]] = mapped_column(JsonDoc(), nullable=False, default=dict)
    created_at: Mapped[dt.datetime] = _created()
