"""End to end with the real openai client: the strategy flow on the PostgreSQL-backed Prefect server, the TWS
simulator over the socket, the LLM answered by the loopback server (tests/llm_server.py), settings from the
environment with a unique API key and a unique IB account code. Neither secret may reach the Prefect database (every
table, as text), the Prefect server's log, any artifact, our database (every table) or the run folder.

Every scan has a positive control (a value that must be found where it is searched), so an empty or unreadable
source cannot pass for a clean one.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from uuid import UUID

import psycopg2  # type: ignore[import-untyped]
import pytest
from prefect import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
from psycopg2 import sql
from sqlalchemy import select

from deployments.local_server import ServerInfo
from flows.strategy import strategy_run
from models.enums import AnalystKind
from models.tables import LlmCall, Signal
from services import strategies as store
from services.db import dispose_engines, session_scope, upgrade_schema
from services.prompt_library import seed_templates
from services.runtime import Runtime, use_runtime
from services.settings import load_settings
from simulator import SimConfig, SimServer
from tests.llm_server import LoopbackLLMServer, answer
from tests.pg import PgCluster

REPO = Path(__file__).resolve().parents[1]
PREFECT_DB = "prefect_session"  # the session server's database (tests/conftest.py prefect_api)
API_KEY = f"sk-e2e-{secrets.token_hex(16)}"
ACCOUNT = f"DU{secrets.randbelow(10**8):08d}"
MARKER = f"loopback-scripted-{secrets.token_hex(6)}"
# SPY closed 2017-12-29 at 266.86: a BUY with the analyst's own levels (risk 6.86, reward 13.14: R/R 1.9 >= 1.5)
SCRIPTED = {
    "action": "BUY",
    "confidence": 0.91,
    "reasoning": f"Trend up, RSI not overbought ({MARKER}).",
    "entry": None,
    "stop": 260.0,
    "target": 280.0,
    "horizon_bars": 5,
}

pytestmark = [pytest.mark.postgres, pytest.mark.prefect, pytest.mark.slow]


def _pg_matches(cluster: PgCluster, database: str, needles: dict[str, str]) -> dict[str, list[str]]:
    """``{needle name: [tables whose rows, cast to text, contain it]}`` over every table of ``database``.

    A row's text form renders bytea as hex, so each needle is also searched hex-encoded."""
    found: dict[str, list[str]] = {name: [] for name in needles}
    conn = psycopg2.connect(host="127.0.0.1", port=cluster.port, user="postgres", dbname=database)
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT table_schema, table_name FROM information_schema.tables "
                "WHERE table_type = 'BASE TABLE' AND table_schema NOT IN ('pg_catalog', 'information_schema')"
            )
            tables = cur.fetchall()
            assert len(tables) > 5, tables
            for schema, table in tables:
                for name, needle in needles.items():
                    cur.execute(
                        sql.SQL(
                            "SELECT EXISTS (SELECT 1 FROM {}.{} t WHERE t::text LIKE %s OR t::text LIKE %s)"
                        ).format(sql.Identifier(schema), sql.Identifier(table)),
                        (f"%{needle}%", f"%{needle.encode().hex()}%"),
                    )
                    if cur.fetchone()[0]:
                        found[name].append(f"{schema}.{table}")
    finally:
        conn.close()
    return found


@pytest.fixture
def llm() -> Iterator[LoopbackLLMServer]:
    with LoopbackLLMServer() as server:
        yield server


@pytest.fixture
def trader_db(pg_cluster: PgCluster) -> Iterator[str]:
    name = f"secrets_e2e_{secrets.token_hex(4)}"
    url, _ = pg_cluster.create_database(name)
    upgrade_schema(url)
    yield name
    dispose_engines(url)
    pg_cluster.drop_database(name)


async def test_llm_driven_run_leaks_neither_the_api_key_nor_the_account(
    prefect_api: ServerInfo,
    pg_cluster: PgCluster,
    trader_db: str,
    llm: LoopbackLLMServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data_dir = tmp_path / "trader-data"
    with SimServer.in_thread(SimConfig(data_dir=REPO / "data" / "samples", accounts=(ACCOUNT,))) as sim:
        for key, value in {
            "TRADER_LLM__API_KEY": API_KEY,
            "TRADER_LLM__BASE_URL": llm.base_url,
            "TRADER_LLM__MAX_RETRIES": "0",
            "TRADER_LLM__TIMEOUT_S": "20",
            "TRADER_IB__ACCOUNT": ACCOUNT,
            "TRADER_IB__PORT": str(sim.port),
            "TRADER_IB__CLIENT_ID": "41",
            "TRADER_DATA_DIR": str(data_dir),
            "TRADER_DATABASE__URL": pg_cluster.url(trader_db),
        }.items():
            monkeypatch.setenv(key, value)
        settings = load_settings()  # from the environment, as a deployed worker reads them
        assert settings.llm.api_key is not None and settings.llm.api_key.get_secret_value() == API_KEY
        with session_scope(settings.database_url()) as session:
            seed_templates(session)
            store.save_definition(session, store.load_strategy_file(REPO / "examples/strategies/spy-sma-cross.yaml"))
        llm.enqueue(answer(SCRIPTED))
        runtime = Runtime(settings, clock=lambda: sim.clock.now)  # the broker from settings: IBBroker.from_settings
        try:
            with use_runtime(runtime):
                sim.clock.set(datetime(2017, 12, 29, 21, 0, tzinfo=UTC))
                result = strategy_run("spy-sma-cross")
        finally:
            runtime.close()
    assert result.flow_run_id is not None

    # 1. the signal came from the LLM: one request with our key, the scripted BUY with its levels, the call row
    assert len(llm.requests) == 1 and llm.pending == 0
    assert llm.requests[0].headers["authorization"] == f"Bearer {API_KEY}"  # the real client used the key
    assert result.action == "BUY"
    with session_scope(settings.database_url()) as session:
        signal = session.scalars(select(Signal).where(Signal.flow_run_id == result.flow_run_id)).one()
        assert signal.action.value == "BUY" and signal.analyst is AnalystKind.LLM
        assert (signal.stop, signal.target) == (Decimal("260"), Decimal("280"))
        assert signal.llm_call_id is not None
        call = session.get(LlmCall, signal.llm_call_id)
        assert call is not None and call.analyst is AnalystKind.LLM and call.model == "gpt-4o-mini"
        assert not call.cached and call.error is None
        assert call.response_text is not None and MARKER in call.response_text

    secret_needles = {"api key": API_KEY, "account": ACCOUNT}
    # 2. the Prefect database, every table (control: this run's id is there)
    prefect_found = _pg_matches(pg_cluster, PREFECT_DB, {**secret_needles, "control": result.flow_run_id})
    assert "public.flow_run" in prefect_found.pop("control")
    assert prefect_found == {"api key": [], "account": []}

    # 3. our database, every table (control: the LLM's scripted reasoning is stored)
    ours = _pg_matches(pg_cluster, trader_db, {**secret_needles, "control": MARKER})
    assert "public.llm_calls" in ours.pop("control")
    assert ours == {"api key": [], "account": []}

    # 4. the Prefect server's log (control: it logged requests)
    log = (prefect_api.home / "server.log").read_bytes()
    assert b"/api/" in log or b"Uvicorn" in log or b"prefect" in log.lower()
    assert API_KEY.encode() not in log and ACCOUNT.encode() not in log

    # 5. every artifact of the run (control: the analysis artifact shows the LLM's reasoning)
    async with get_client() as client:
        artifacts = await client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[UUID(result.flow_run_id)]))
        )
    assert {a.key for a in artifacts} >= {f"spy-sma-cross-{s}" for s in ("analysis", "signal", "order")}
    texts = [f"{a.key} {a.description} {a.data} {a.metadata_}" for a in artifacts]
    assert any(MARKER in text for text in texts)
    assert [t for t in texts if API_KEY in t or ACCOUNT in t] == []

    # 6. the run folder, every file (control: the prompt file names the symbol)
    files = [p for p in data_dir.rglob("*") if p.is_file()]
    assert result.run_dir is not None and result.prompt is not None and b"SPY" in result.prompt.read_bytes()
    assert len(files) >= 3
    leaked = [p for p in files if API_KEY.encode() in p.read_bytes() or ACCOUNT.encode() in p.read_bytes()]
    assert leaked == []
