"""Schema, migrations and column types, each test on SQLite and on PostgreSQL."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import inspect, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from models.enums import OrderSide, OrderStatus, OrderType, RunMode
from models.tables import Base, Fill, Order, PnlSnapshot, Signal, Strategy, TradingState
from services.db import (
    current_revision,
    head_revision,
    init_database,
    make_engine,
    schema_differences,
    session_scope,
    upgrade_schema,
)
from services.errors import ConfigurationError, InputError
from services.settings import load_settings

T0 = dt.datetime(2024, 3, 1, 14, 30, tzinfo=dt.UTC)


def _order(key: str, **overrides: object) -> Order:
    fields: dict[str, object] = {
        "idempotency_key": key,
        "symbol": "AAPL",
        "side": OrderSide.BUY,
        "quantity": Decimal("10"),
        "order_type": OrderType.LIMIT,
        "limit_price": Decimal("187.25"),
    }
    fields.update(overrides)
    return Order(**fields)


def _fill(exec_id: str) -> Fill:
    return Fill(
        exec_id=exec_id,
        symbol="AAPL",
        side=OrderSide.BUY,
        quantity=Decimal("5"),
        price=Decimal("187.25"),
        executed_at=T0,
    )


# ---------------------------------------------------------------------------------------------------------------------
# Migrations


def test_upgrade_from_empty_creates_every_table_and_is_idempotent(empty_db_url: str) -> None:
    assert current_revision(empty_db_url) is None

    first = upgrade_schema(empty_db_url)
    second = upgrade_schema(empty_db_url)

    assert first == second == head_revision() == current_revision(empty_db_url)
    tables = set(inspect(make_engine(empty_db_url)).get_table_names())
    assert set(Base.metadata.tables) <= tables
    assert "alembic_version" in tables


def test_migrations_match_the_models(db_url: str) -> None:
    assert schema_differences(db_url) == []


def test_run_mode_migration_moves_the_dry_run_key_into_the_column(empty_db_url: str) -> None:
    from alembic import command

    from services.db import alembic_config

    engine = make_engine(empty_db_url)
    with engine.begin() as conn:
        command.upgrade(alembic_config(conn), "0002")
    with engine.begin() as conn:
        for key, doc in (("a", '{"dry_run": true, "approved": true}'), ("b", '{"dry_run": false}'), ("c", None)):
            conn.execute(
                text(
                    "INSERT INTO orders (idempotency_key, symbol, side, quantity, order_type, tif, status, "
                    "filled_quantity, submit_attempts, external, risk_decision, created_at, updated_at) VALUES "
                    "(:k, 'SPY', 'BUY', 1, 'LMT', 'DAY', 'created', 0, 0, false, :d, :t, :t)"
                ),
                {"k": key, "d": doc, "t": T0},
            )
    upgrade_schema(empty_db_url)
    with session_scope(empty_db_url) as session:
        rows = {o.idempotency_key: (o.run_mode, o.risk_decision) for o in session.scalars(select(Order))}
    assert rows == {"a": (RunMode.DRY_RUN, {"approved": True}), "b": (None, {}), "c": (None, None)}
    with engine.begin() as conn:
        command.downgrade(alembic_config(conn), "0002")
        docs = dict(conn.execute(text("SELECT idempotency_key, risk_decision FROM orders")).all())
    assert {k: v if isinstance(v, dict) else __import__("json").loads(v) for k, v in docs.items()} == {
        "a": {"approved": True, "dry_run": True},
        "b": {"dry_run": False},
        "c": {"dry_run": False},
    }


def test_schema_check_detects_drift(db_url: str) -> None:
    # The check must be able to fail: drop an index the models declare.
    with make_engine(db_url).begin() as conn:
        conn.execute(text("DROP INDEX ix_orders_status"))
    diffs = schema_differences(db_url)
    assert any(d[0] == "add_index" and d[1].name == "ix_orders_status" for d in diffs)


def test_init_database_reports_created_then_current(tmp_path: Path) -> None:
    nested = tmp_path / "not" / "yet" / "there"
    settings = load_settings({}, database={"url": f"sqlite:///{nested / 'trader.db'}"})

    first = init_database(settings)
    second = init_database(settings)

    assert (nested / "trader.db").is_file()
    assert (first.action, first.previous_revision, first.revision) == ("created", None, head_revision())
    assert (second.action, second.previous_revision) == ("current", head_revision())


def test_init_database_defaults_to_the_data_dir(tmp_path: Path) -> None:
    settings = load_settings({}, data_dir=tmp_path / "data")
    report = init_database(settings)
    assert report.action == "created"
    assert (tmp_path / "data" / "trader.db").is_file()


def test_unknown_database_revision_is_a_configuration_error(empty_db_url: str) -> None:
    upgrade_schema(empty_db_url)
    with make_engine(empty_db_url).begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = 'f00dcafe'"))
    with pytest.raises(ConfigurationError, match="f00dcafe"):
        init_database(load_settings({}, database={"url": empty_db_url}))


@pytest.mark.postgres
def test_init_database_masks_the_password(pg_url: str) -> None:
    url = pg_url.replace("postgres@", "postgres:secret@")
    report = init_database(load_settings({}, database={"url": url}))
    assert "secret" not in report.url
    assert report.action == "current"


def test_sqlite_connections_enforce_foreign_keys_and_use_wal(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'x.db'}"
    with make_engine(url).connect() as conn:
        assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("PRAGMA busy_timeout")).scalar() == 10_000


# ---------------------------------------------------------------------------------------------------------------------
# Column types


@pytest.mark.parametrize(
    "value",
    [Decimal("123.45678901"), Decimal("9999999999.99999999"), Decimal("-0.00000001"), Decimal("0"), 7],
)
def test_money_round_trips_exactly(db_url: str, value: Decimal | int) -> None:
    with session_scope(db_url) as s:
        s.add(PnlSnapshot(at=T0, realized=value, unrealized=Decimal("1.5")))
    with session_scope(db_url) as s:
        row = s.scalars(select(PnlSnapshot)).one()
        assert isinstance(row.realized, Decimal)
        assert row.realized == Decimal(value)
        assert str(row.realized) == str(Decimal(value).quantize(Decimal("1e-8")))


def test_money_sums_and_compares_exactly_in_sql(db_url: str) -> None:
    with session_scope(db_url) as s:
        for amount in ("0.10000001", "0.20000002", "1234567890.12345678"):
            s.add(PnlSnapshot(at=T0, realized=Decimal(amount), unrealized=Decimal(0)))
    from sqlalchemy import func

    with session_scope(db_url) as s:
        total = s.scalar(select(func.sum(PnlSnapshot.realized)))
        above = s.scalars(select(PnlSnapshot.realized).where(PnlSnapshot.realized > Decimal("0.2"))).all()
    assert total == Decimal("1234567890.42345681")
    assert sorted(above) == [Decimal("0.20000002"), Decimal("1234567890.12345678")]


def test_quantity_keeps_six_decimals(db_url: str) -> None:
    with session_scope(db_url) as s:
        s.add(_order("q-1", quantity=Decimal("0.000001")))
    with session_scope(db_url) as s:
        assert s.scalars(select(Order.quantity)).one() == Decimal("0.000001")


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (1.5, "must be Decimal"),
        (Decimal("1.123456789"), "more than 8 decimal places"),
        (Decimal("10000000000"), "does not fit"),
        (Decimal("NaN"), "not a finite number"),
    ],
)
def test_bad_money_is_refused_and_nothing_is_stored(db_url: str, value: object, message: str) -> None:
    with pytest.raises(InputError, match=message) as info, session_scope(db_url) as s:
        s.add(PnlSnapshot(at=T0, realized=value, unrealized=Decimal(0)))
    assert info.value.problems[0].location == "pnl_snapshots"
    with session_scope(db_url) as s:
        assert s.scalars(select(PnlSnapshot)).all() == []


def test_aware_datetime_round_trips_as_utc(db_url: str) -> None:
    new_york = dt.timezone(dt.timedelta(hours=-5))
    local = dt.datetime(2024, 3, 1, 9, 30, 15, 123456, tzinfo=new_york)
    with session_scope(db_url) as s:
        s.add(PnlSnapshot(at=local, realized=Decimal(0), unrealized=Decimal(0)))
    with session_scope(db_url) as s:
        stored = s.scalars(select(PnlSnapshot.at)).one()
    assert stored == local
    assert stored.tzinfo is not None and stored.utcoffset() == dt.timedelta(0)
    assert stored == dt.datetime(2024, 3, 1, 14, 30, 15, 123456, tzinfo=dt.UTC)


def test_datetimes_compare_as_instants_in_sql(db_url: str) -> None:
    tokyo = dt.timezone(dt.timedelta(hours=9))
    with session_scope(db_url) as s:
        s.add(PnlSnapshot(at=T0, realized=Decimal(1), unrealized=Decimal(0)))
        s.add(PnlSnapshot(at=T0 + dt.timedelta(hours=1), realized=Decimal(2), unrealized=Decimal(0)))
    with session_scope(db_url) as s:
        # 23:45 in Tokyo is 14:45 UTC: only the second row is later
        later = s.scalars(
            select(PnlSnapshot.realized).where(PnlSnapshot.at > dt.datetime(2024, 3, 1, 23, 45, tzinfo=tokyo))
        )
        assert list(later) == [Decimal(2)]


def test_naive_datetime_is_refused(db_url: str) -> None:
    with pytest.raises(InputError, match="naive datetime"), session_scope(db_url) as s:
        s.add(PnlSnapshot(at=dt.datetime(2024, 3, 1, 9, 30), realized=Decimal(0), unrealized=Decimal(0)))
    with session_scope(db_url) as s:
        assert s.scalars(select(PnlSnapshot)).all() == []


def test_json_documents_keep_decimals_and_times_as_text(db_url: str) -> None:
    with session_scope(db_url) as s:
        s.add(TradingState(key="k", value={"limit": Decimal("1000.50"), "at": T0, "side": OrderSide.SELL}))
    with session_scope(db_url) as s:
        assert s.get(TradingState, "k").value == {  # type: ignore[union-attr]
            "limit": "1000.50",
            "at": "2024-03-01T14:30:00+00:00",
            "side": "SELL",
        }


def test_enums_are_stored_as_their_values(db_url: str) -> None:
    with session_scope(db_url) as s:
        s.add(_order("enum-1", status=OrderStatus.PARTIALLY_FILLED, order_type=OrderType.STOP_LIMIT))
    with make_engine(db_url).connect() as conn:
        assert conn.execute(text("SELECT status, order_type, side FROM orders")).one() == (
            "partially_filled",
            "STP LMT",
            "BUY",
        )
    with session_scope(db_url) as s:
        order = s.scalars(select(Order)).one()
        assert order.status is OrderStatus.PARTIALLY_FILLED
        assert order.tif.value == "DAY"
        assert order.filled_quantity == 0 and order.submit_attempts == 0 and order.external is False


# ---------------------------------------------------------------------------------------------------------------------
# Constraints


def test_idempotency_key_is_unique(db_url: str) -> None:
    with session_scope(db_url) as s:
        s.add(_order("strat-1:2024-03-01T14:30"))
    with pytest.raises(IntegrityError), session_scope(db_url) as s:
        s.add(_order("strat-1:2024-03-01T14:30", quantity=Decimal("3")))
    with session_scope(db_url) as s:
        assert [o.quantity for o in s.scalars(select(Order))] == [Decimal("10")]


def test_exec_id_is_unique(db_url: str) -> None:
    with session_scope(db_url) as s:
        s.add(_fill("0000e0d5.65e1e5a4.01.01"))
    with pytest.raises(IntegrityError), session_scope(db_url) as s:
        s.add(_fill("0000e0d5.65e1e5a4.01.01"))
    with session_scope(db_url) as s:
        assert len(s.scalars(select(Fill)).all()) == 1


def test_foreign_keys_are_enforced(session: Session) -> None:
    session.add(_fill("x-1"))
    session.flush()
    fill = session.scalars(select(Fill)).one()
    fill.order_id = 424242
    with pytest.raises(IntegrityError):
        session.flush()


def test_deleting_a_strategy_keeps_its_signals(db_url: str) -> None:
    with session_scope(db_url) as s:
        strategy = Strategy(name="s", definition={}, symbol="AAPL", bar_size="5 mins")
        s.add(strategy)
        s.flush()
        s.add(
            Signal(
                strategy_id=strategy.id,
                strategy_name="s",
                symbol="AAPL",
                bar_time=T0,
                action="HOLD",
                analyst="offline",
            )
        )
    with session_scope(db_url) as s:
        s.delete(s.scalars(select(Strategy)).one())
    with session_scope(db_url) as s:
        signal = s.scalars(select(Signal)).one()
        assert (signal.strategy_id, signal.strategy_name) == (None, "s")


def test_concurrent_upgrades_are_serialized(empty_db_url: str) -> None:
    import threading

    results: list[str] = []
    errors: list[BaseException] = []

    def upgrade() -> None:
        try:
            results.append(upgrade_schema(empty_db_url))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=upgrade) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert results == [head_revision()] * 3
    assert schema_differences(empty_db_url) == []


@pytest.mark.postgres
def test_create_database_helper_shares_the_session_cluster(pg_cluster: object) -> None:
    from tests.pg import create_database

    sync_url, async_url = create_database("prefect_helper_check")
    assert sync_url.startswith("postgresql+psycopg2://postgres@127.0.0.1:")
    assert async_url == sync_url.replace("+psycopg2", "+asyncpg")
    with make_engine(sync_url).connect() as conn:
        assert conn.execute(text("SELECT current_database()")).scalar() == "prefect_helper_check"
    assert f":{pg_cluster.port}/" in sync_url  # type: ignore[attr-defined]


def test_missing_postgres_binaries_fail_with_the_setup_command(monkeypatch: pytest.MonkeyPatch) -> None:
    import tests.pg as pg

    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setattr(pg, "DEBIAN_ROOT", Path("/nonexistent"))
    with pytest.raises(pg.PgSetupError, match="apt-get install -y postgresql"):
        pg.PgCluster().start()
