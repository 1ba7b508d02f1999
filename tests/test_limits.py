"""Global rate limits, strictly: ``tasks.market_gate.limited`` (no API -> no limit; a missing limit on a
configured server -> ConfigurationError naming ``trader bootstrap``), the LLM backend wrapper (only real requests
take ``llm-calls``), and two warm workers in two processes sharing ``ib-historical`` (counted at the simulator)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prefect import get_client
from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas.actions import GlobalConcurrencyLimitUpdate
from prefect.settings import PREFECT_API_URL, temporary_settings
from pydantic import SecretStr

from deployments.bootstrap import bootstrap
from deployments.sync import desired_from_database, sync_deployments
from services.errors import ConfigurationError
from services.llm.prompts import RenderedPrompt
from services.llm.reply import LlmReply
from services.settings import LLMSettings, Settings, load_settings
from simulator import SimConfig, SimServer
from tasks.analysis import RateLimitedBackend, _backend
from tasks.market_gate import IB_HISTORICAL, LLM_CALLS, limited, prefect_api_configured
from tests.prefect_server import prefect_server
from tests.test_warm_worker import MARKET_NOW, POOL, REPO, trader_settings, warm_contract_cache

PROMPT = RenderedPrompt(text="hello", sha256="0" * 64)


class FakeChat:
    """A chat backend that records when each request arrived."""

    model = "fake-model"

    def __init__(self) -> None:
        self.calls: list[float] = []

    def complete(self, prompt: RenderedPrompt, chart_png: bytes | None) -> LlmReply:
        self.calls.append(time.monotonic())
        return LlmReply(
            text='{"action": "HOLD"}',
            refusal=None,
            model=self.model,
            prompt_tokens=1,
            completion_tokens=1,
            latency_ms=1,
            attempts=1,
            finish_reason="stop",
        )

    def request_json(self, prompt: RenderedPrompt, chart_png: bytes | None) -> str:
        return '{"model": "fake-model"}'


def test_without_a_prefect_api_no_limit_is_taken(monkeypatch: pytest.MonkeyPatch) -> None:
    # No server contacted, no ephemeral server started: both would go through these two, which now fail loudly.
    # (The cost of a no-op limit is a figure of benchmarks/bench_flow.py.)
    import prefect.concurrency.sync
    from prefect.server.api.server import SubprocessASGIServer

    touched: list[str] = []
    monkeypatch.setattr(prefect.concurrency.sync, "rate_limit", lambda *a, **k: touched.append("rate_limit"))
    monkeypatch.setattr(SubprocessASGIServer, "start", lambda *a, **k: touched.append("ephemeral server"))
    entered = 0
    with temporary_settings({PREFECT_API_URL: None}):
        assert not prefect_api_configured()
        for _ in range(20):
            with limited(IB_HISTORICAL):
                entered += 1
    assert entered == 20 and touched == []
    # The same patched call is reached as soon as an API is configured: the check above can fail.
    with temporary_settings({PREFECT_API_URL: "http://127.0.0.1:9/api"}), limited(IB_HISTORICAL):
        pass
    assert touched == ["rate_limit"]


def test_the_offline_analyst_gets_no_llm_backend() -> None:
    assert _backend(LLMSettings()) is None
    assert _backend(LLMSettings(api_key=SecretStr("  "))) is None
    backend = _backend(LLMSettings(api_key=SecretStr("sk-test")))
    assert isinstance(backend, RateLimitedBackend) and backend.model == LLMSettings().model


@pytest.fixture(scope="module")
def api_url(pg_cluster: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with prefect_server(pg_cluster, tmp_path_factory.mktemp("limits-prefect"), "prefect_limits") as server:
        yield server.api_url


@pytest.fixture(scope="module")
def client(api_url: str) -> Iterator[SyncPrefectClient]:
    with get_client(sync_client=True) as sync_client:
        yield sync_client


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("limits-trader")


def _set_limit(client: SyncPrefectClient, name: str, limit: int, decay: float) -> None:
    client.update_global_concurrency_limit(
        name, GlobalConcurrencyLimitUpdate(limit=limit, slot_decay_per_second=decay, active=True)
    )


@pytest.mark.postgres
@pytest.mark.prefect
@pytest.mark.slow
def test_a_missing_limit_is_an_error_naming_trader_bootstrap(client: SyncPrefectClient, data_dir: Path) -> None:
    settings = load_settings({"TRADER_DATA_DIR": str(data_dir)})
    bootstrap(settings, client)
    client.delete_global_concurrency_limit_by_name(LLM_CALLS)
    fake = FakeChat()
    backend = RateLimitedBackend(fake)
    assert backend.request_json(PROMPT, None)  # building the request takes no slot
    with pytest.raises(ConfigurationError, match=r"'llm-calls' does not exist: run `trader bootstrap`"):
        backend.complete(PROMPT, None)
    assert fake.calls == []  # never an unthrottled call
    assert bootstrap(settings, client).created == [f"limit {LLM_CALLS}"]


@pytest.mark.postgres
@pytest.mark.prefect
@pytest.mark.slow
def test_llm_requests_take_the_llm_calls_rate_limit(client: SyncPrefectClient, data_dir: Path) -> None:
    bootstrap(load_settings({"TRADER_DATA_DIR": str(data_dir)}), client)
    _set_limit(client, LLM_CALLS, 1, 1.0)  # one request, then one per second
    fake = FakeChat()
    backend = RateLimitedBackend(fake)
    for _ in range(3):
        reply = backend.complete(PROMPT, None)
        assert reply.text == '{"action": "HOLD"}'
    gaps = [b - a for a, b in zip(fake.calls, fake.calls[1:], strict=False)]
    assert len(fake.calls) == 3 and min(gaps) > 0.5, gaps  # unthrottled they would be microseconds apart


class TimedFrames(list[tuple[int, list[str]]]):
    """``sim.received`` that also stamps every reqHistoricalData frame (msg id 20) on arrival."""

    def __init__(self) -> None:
        super().__init__()
        self.hist_times: list[float] = []

    def append(self, item: tuple[int, list[str]]) -> None:
        if item[1][:1] == ["20"]:
            self.hist_times.append(time.monotonic())
        super().append(item)


WORKER = """
import sys
from datetime import datetime
from deployments.warm_worker import serve_warm
from services.broker.ib_adapter import IBBroker
from services.settings import load_settings
from services.runtime import Runtime, use_runtime

port, client_id, now = int(sys.argv[1]), int(sys.argv[2]), datetime.fromisoformat(sys.argv[3])
settings = load_settings()
factory = lambda: IBBroker.from_settings(settings.ib, port=port, client_id=client_id)
runtime = Runtime(settings, broker_factory=factory, clock=lambda: now)
with use_runtime(runtime):
    try:
        stats = serve_warm("trader-pool", concurrency=4, poll_seconds=0.5, reconcile_at_start=False)
    finally:
        runtime.close()
print(f"claimed={stats.claimed} completed={stats.completed} failed={stats.failed}", flush=True)
"""


def _start_worker(
    api_url: str, settings: Settings, database_url: str, sim_port: int, client_id: int, home: Path
) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "TRADER_"))}
    env |= {
        "PREFECT_API_URL": api_url,
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_LOGGING_LEVEL": "WARNING",
        "TRADER_DATA_DIR": str(settings.data_dir),
        "TRADER_DATABASE__URL": database_url,
    }
    return subprocess.Popen(
        [sys.executable, "-c", WORKER, str(sim_port), str(client_id), MARKET_NOW.isoformat()],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


@pytest.mark.postgres
@pytest.mark.prefect
@pytest.mark.slow
def test_two_workers_share_the_ib_historical_rate_limit(
    pg_cluster: Any, api_url: str, client: SyncPrefectClient, tmp_path: Path
) -> None:
    burst, limit, decay = 8, 2, 1.0
    database_url, _ = pg_cluster.create_database("trader_limits")  # two processes write: PostgreSQL
    settings = trader_settings(tmp_path / "trader", database_url, strategies=burst)
    bootstrap(settings, client)
    _set_limit(client, IB_HISTORICAL, limit, decay)
    sync_deployments(desired_from_database(settings.database_url()), work_pool=POOL, client=client)
    names = [f"burst-{i:02d}" for i in range(burst)]

    with SimServer.in_thread(SimConfig(data_dir=REPO / "data" / "samples", now=MARKET_NOW)) as sim:
        warm_contract_cache(settings, sim.port, 60)
        frames = TimedFrames()
        sim.received = frames
        workers = [
            _start_worker(api_url, settings, database_url, sim.port, 61 + i, tmp_path / f"home-{i}") for i in range(2)
        ]
        try:
            runs = [
                client.create_flow_run_from_deployment(client.read_deployment_by_name(f"strategy-run/{name}").id)
                for name in names
            ]
            deadline = time.monotonic() + 120
            states = []
            while time.monotonic() < deadline:
                states = [client.read_flow_run(run.id).state for run in runs]
                if all(s is not None and s.is_final() for s in states):
                    break
                assert all(w.poll() is None for w in workers), workers[0].stdout or ""
                time.sleep(0.5)
        finally:
            outputs = []
            for worker in workers:
                worker.send_signal(signal.SIGTERM)
                try:
                    out, _ = worker.communicate(timeout=60)
                except subprocess.TimeoutExpired:
                    worker.kill()
                    out, _ = worker.communicate()
                outputs.append(out)
        times = sorted(frames.hist_times)

    report = "\n".join(o[-3000:] for o in outputs)
    assert all(s is not None and s.is_completed() for s in states), f"{[s and s.name for s in states]}\n{report}"
    claimed = [int(o.rsplit("claimed=", 1)[1].split()[0]) for o in outputs]
    assert sum(claimed) == burst and all(c > 0 for c in claimed), f"each worker must run some: {claimed}\n{report}"
    assert len(times) >= burst, times
    # Token bucket: in any window [t_i, t_j] at most `limit` + decay * (t_j - t_i) requests (+1 s for the way
    # between the server's grant and the simulator on a busy box). Unthrottled, all 8 arrive within about a second
    # (8 > 2 + 1/s * 2 s), so this fails without the limit.
    worst = max(
        (j - i + 1) - (limit + decay * (times[j] - times[i] + 1.0))
        for i in range(len(times))
        for j in range(i, len(times))
    )
    spread = times[-1] - times[0]
    assert worst <= 0, (
        f"rate limit exceeded by {worst:.2f} requests; arrivals {[round(t - times[0], 2) for t in times]}"
    )
    assert spread >= (burst - limit) / decay - 1.0, spread
    assert len(times) == burst == sim.stats.hist_requests  # one request per run: no pacing retries
