"""``trader demo``: the main job on the embedded defaults.

Starts (or reuses) a local Prefect server, the TWS-protocol simulator on the shipped sample data,
stores the example strategies, runs each strategy flow once against the simulator, and prints the
signal, its reason and where to look: the Prefect UI link of the run, the chart and the prompt.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from cli.common import cli_errors, console, settings

if TYPE_CHECKING:
    from simulator import SimServer

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples" / "strategies"
SAMPLES = REPO / "data" / "samples"


def _prepare_database() -> list[str]:
    from services import strategies as store
    from services.db import init_database, session_scope
    from services.prompt_library import seed_templates

    init_database(settings())
    names: list[str] = []
    with session_scope(settings().database_url()) as session:
        seed_templates(session)
        for path in sorted(EXAMPLES.glob("*.yaml")):
            definition = store.load_strategy_file(path)
            store.save_definition(session, definition)
            names.append(definition.name)
    return names


def _ensure_prefect_server() -> str:
    """Return the UI base URL; start a local server under the data dir unless PREFECT_API_URL is set."""
    from deployments.local_server import start_server

    configured = os.environ.get("PREFECT_API_URL")
    if configured:
        return settings().prefect.ui_url or configured.removesuffix("/api")
    info = start_server(settings().ensure_data_dir() / "prefect")
    os.environ["PREFECT_API_URL"] = info.api_url
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    return info.ui_url


@cli_errors
def demo(
    data_dir: Annotated[Path, typer.Option(help="Bar files the simulator serves.")] = SAMPLES,
) -> None:
    """Run every example strategy once against the simulator and print signals and links."""
    names = _prepare_database()
    console.print(f"database: {settings().database_url()}")
    ui_url = _ensure_prefect_server()
    console.print(f"Prefect UI: {ui_url}")
    from deployments.bootstrap import bootstrap  # the global limits the tasks take strictly (safe to run twice)

    bootstrap(settings())

    # Imported after PREFECT_API_URL is set, so the flows talk to that server.
    from flows.strategy import strategy_run
    from services.broker.ib_adapter import IBBroker
    from services.runtime import Runtime, use_runtime
    from simulator import SimConfig, SimServer

    with SimServer.in_thread(SimConfig(data_dir=data_dir)) as sim:
        console.print(f"TWS simulator on 127.0.0.1:{sim.port} serving {data_dir}")
        ib = settings().ib
        runtime = Runtime(
            settings(),
            broker_factory=lambda: IBBroker.from_settings(ib, host="127.0.0.1", port=sim.port),
            clock=lambda: sim.clock.now,
        )
        llm = settings().llm
        offline = llm.resolved_provider == "offline"
        analyst = "OFFLINE analyst (no LLM configured)" if offline else f"LLM {llm.model} via {llm.resolved_provider}"
        console.print(f"analyst: {analyst}\n")
        with use_runtime(runtime):
            try:
                for name in names:
                    _point_clock_at_latest_bar(sim, name)
                    result = strategy_run(name)
                    if result is None:  # the market gate ended the run early
                        console.print(f"[bold]{name}[/bold]: skipped (market closed at the simulator's clock)")
                        continue
                    link = f"{ui_url}/runs/flow-run/{result.flow_run_id}"
                    console.print(f"[bold]{name}[/bold]: {result.action}")
                    console.print(f"  reason: {result.reason}", markup=False)
                    console.print(f"  run:    {link}")
                    if result.order is not None:
                        order = result.order
                        mode = "dry-run" if order.dry_run else "paper"
                        detail = f" ({'; '.join(order.reasons)})" if order.reasons else ""
                        console.print(f"  order:  #{order.order_id} {order.status} [{mode}]{detail}", markup=False)
                    if result.chart_png:
                        console.print(f"  chart:  {result.chart_png}  (interactive: {result.chart_html})")
                    if result.prompt:
                        console.print(f"  prompt: {result.prompt}")
            finally:
                runtime.close()
    console.print(f"\nThe Prefect server keeps running at {ui_url} (stop it with `trader server stop`).")


def _point_clock_at_latest_bar(sim: SimServer, strategy: str) -> None:
    """Set the simulator's market clock just before the close of the symbol's latest daily session."""
    from models.enums import BarSize
    from services import strategies as store
    from services.db import session_scope

    with session_scope(settings().database_url()) as session:
        definition = store.get_definition(session, strategy)
    for instrument in sim.catalog:
        if instrument.symbol == definition.symbol:
            series = instrument.series.get(BarSize.DAY_1)
            if series is not None:
                # Five minutes before the last session's close, as the examples' cron (15:50/15:55 ET):
                # the decision uses the completed daily bars, the order goes in while the market is open.
                sim.clock.set(series.last_end - timedelta(minutes=5))
            return
