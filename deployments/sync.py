"""Stored strategies -> Prefect deployments of the ``strategy-run`` flow (``trader deploy``).

One deployment per stored strategy, named after it, on the configured process work pool:

* schedule: the strategy's cron + IANA timezone; **active** iff the strategy is active. A deactivated
  strategy keeps its deployment, **paused** (``paused`` set and the schedule inactive: the scheduler makes no
  runs, and pausing deletes the runs it had already made); the flow itself also ends "Skipped: strategy
  inactive" for a run that still starts (a manual one, or one created before the pause);
* parameters ``{"strategy": name}`` (never secrets), tags ``strategy``, ``strategy:<name>``,
  ``symbol:<SYMBOL>`` and :data:`MANAGED_TAG` (the mark of deployments this module owns);
* ``concurrency_limit`` 1 with ``CANCEL_NEW`` (a run still going when the next cron tick fires wins);
* entrypoint ``flows/strategy.py:strategy_run`` with a ``set_working_directory`` pull step to the app
  directory (the repository root; ``/app`` in the Docker image), the same as prefect.yaml produces.

A managed deployment whose strategy was deleted is removed. Deployments without :data:`MANAGED_TAG`
(e.g. prefect.yaml's ``strategy-run/strategy-run`` template) are never touched.

Three callers, one implementation (:func:`sync_from_database`): ``trader deploy`` (everything), ``trader strategies
activate|deactivate|delete NAME`` (``only=[NAME]``, at once when the server answers) and the hourly
``strategy-sync`` flow (``deployments/maintenance.py``; it catches whatever a CLI change could not reach).
The last two pass ``app_dir=None``: an existing deployment keeps its working directory (the one ``trader deploy
--app-dir`` chose), a new one gets :data:`APP_DIR`.

Why the client API and not ``flow.from_source().deploy()``: the sync must be idempotent and testable. It
reads each deployment, compares a fingerprint of the fields it manages, and writes only on a difference
(``create_deployment`` is an upsert by flow + name), so a second run reports everything ``unchanged`` and
leaves schedules, and the runs the scheduler already created, alone. It also needs no import of the flow
module's data stack at deploy time and no ``prefect.yaml`` rewrite.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from prefect import get_client
from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas.actions import DeploymentScheduleCreate
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterTags, FlowFilter, FlowFilterName
from prefect.client.schemas.objects import ConcurrencyLimitStrategy, ConcurrencyOptions
from prefect.client.schemas.responses import DeploymentResponse
from prefect.client.schemas.schedules import CronSchedule
from prefect.exceptions import ObjectNotFound

from services.db import session_scope
from services.repositories import strategies as repo

FLOW_NAME: Final = "strategy-run"
ENTRYPOINT: Final = "flows/strategy.py:strategy_run"
MANAGED_TAG: Final = "managed:trader-deploy"
APP_DIR: Final = Path(__file__).resolve().parents[1]
PARAMETER_SCHEMA: Final[dict[str, Any]] = {
    "title": "Parameters",
    "type": "object",
    "properties": {"strategy": {"title": "strategy", "position": 0, "type": "string"}},
    "required": ["strategy"],
    "definitions": {},
}


@dataclass(frozen=True)
class DesiredDeployment:
    """What one strategy's deployment should look like."""

    name: str
    symbol: str
    cron: str
    timezone: str
    active: bool
    description: str = ""

    @property
    def tags(self) -> list[str]:
        return sorted({"strategy", f"strategy:{self.name}", f"symbol:{self.symbol}", MANAGED_TAG})

    @property
    def parameters(self) -> dict[str, Any]:
        return {"strategy": self.name}


@dataclass
class SyncReport:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    paused: list[str] = field(default_factory=list)
    resumed: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.created or self.updated or self.paused or self.resumed or self.removed)

    def groups(self) -> list[tuple[str, list[str]]]:
        """(change, deployment names) in a fixed order: created, updated, unchanged, paused, resumed, removed."""
        return [
            ("created", self.created),
            ("updated", self.updated),
            ("unchanged", self.unchanged),
            ("paused", self.paused),
            ("resumed", self.resumed),
            ("removed", self.removed),
        ]

    def change_of(self, name: str) -> str | None:
        """What happened to the deployment of strategy ``name`` (``None``: it was not part of the sync)."""
        return next((label for label, names in self.groups() if name in names), None)

    def lines(self) -> list[str]:
        return [f"{label}: {', '.join(names) if names else '-'}" for label, names in self.groups()]


def desired_from_database(database_url: str) -> list[DesiredDeployment]:
    """One desired deployment per stored strategy with a cron (active or not)."""
    with session_scope(database_url) as session:
        return [
            DesiredDeployment(
                name=row.name,
                symbol=row.symbol,
                cron=row.cron,
                timezone=row.timezone,
                active=row.active,
                description=str(row.definition.get("description") or ""),
            )
            for row in repo.list_strategies(session)
            if row.cron
        ]


def _pull_steps(app_dir: Path) -> list[dict[str, Any]]:
    return [{"prefect.deployments.steps.set_working_directory": {"directory": str(app_dir)}}]


def _app_dir_of(dep: DeploymentResponse | None) -> Path | None:
    """The working directory of an existing deployment's ``set_working_directory`` pull step, if any."""
    for step in (dep.pull_steps or []) if dep is not None else []:
        directory = step.get("prefect.deployments.steps.set_working_directory", {}).get("directory")
        if directory:
            return Path(directory)
    return None


def _fingerprint_wanted(want: DesiredDeployment, work_pool: str, app_dir: Path) -> tuple[Any, ...]:
    return (
        [(want.cron, want.timezone, want.active)],
        want.parameters,
        want.tags,
        work_pool,
        ENTRYPOINT,
        _pull_steps(app_dir),
        1,
        ConcurrencyLimitStrategy.CANCEL_NEW.value,
        want.description,
        not want.active,
    )


def _fingerprint_existing(dep: DeploymentResponse) -> tuple[Any, ...]:
    schedules = [
        (s.schedule.cron, s.schedule.timezone, s.active) if isinstance(s.schedule, CronSchedule) else (None, None, None)
        for s in dep.schedules
    ]
    limit = dep.global_concurrency_limit.limit if dep.global_concurrency_limit else None
    strategy = dep.concurrency_options.collision_strategy.value if dep.concurrency_options else None
    return (
        schedules,
        dict(dep.parameters),
        sorted(dep.tags),
        dep.work_pool_name,
        dep.entrypoint,
        list(dep.pull_steps or []),
        limit,
        strategy,
        dep.description or "",
        bool(dep.paused),
    )


def _upsert(client: SyncPrefectClient, flow_id: Any, want: DesiredDeployment, work_pool: str, app_dir: Path) -> None:
    client.create_deployment(
        flow_id=flow_id,
        name=want.name,
        schedules=[
            DeploymentScheduleCreate(schedule=CronSchedule(cron=want.cron, timezone=want.timezone), active=want.active)
        ],
        concurrency_limit=1,
        concurrency_options=ConcurrencyOptions(collision_strategy=ConcurrencyLimitStrategy.CANCEL_NEW),
        parameters=want.parameters,
        description=want.description,
        work_pool_name=work_pool,
        work_queue_name="default",
        tags=want.tags,
        path=str(app_dir),
        entrypoint=ENTRYPOINT,
        parameter_openapi_schema=PARAMETER_SCHEMA,
        paused=not want.active,
        pull_steps=_pull_steps(app_dir),
        enforce_parameter_schema=True,
    )


def managed_deployments(client: SyncPrefectClient) -> list[DeploymentResponse]:
    """Every deployment of the strategy-run flow this module owns (tagged :data:`MANAGED_TAG`)."""
    return list(
        client.read_deployments(
            flow_filter=FlowFilter(name=FlowFilterName(any_=[FLOW_NAME])),
            deployment_filter=DeploymentFilter(tags=DeploymentFilterTags(all_=[MANAGED_TAG])),
        )
    )


def sync_deployments(
    wanted: Sequence[DesiredDeployment],
    *,
    work_pool: str,
    app_dir: Path | None = APP_DIR,
    only: Collection[str] | None = None,
    client: SyncPrefectClient | None = None,
) -> SyncReport:
    """Bring the managed deployments in line with ``wanted``; write only what differs.

    ``only``: converge just these strategies' deployments (create, update, pause, resume or remove them) and
    leave every other deployment alone. ``app_dir=None``: keep an existing deployment's working directory.
    """
    if client is None:
        with get_client(sync_client=True) as own:
            return sync_deployments(wanted, work_pool=work_pool, app_dir=app_dir, only=only, client=own)
    report = SyncReport()
    keep = None if only is None else set(only)
    flow_id = client.create_flow_from_name(FLOW_NAME)
    existing = {dep.name: dep for dep in managed_deployments(client) if keep is None or dep.name in keep}
    for want in sorted(wanted, key=lambda w: w.name):
        if keep is not None and want.name not in keep:
            continue
        dep = existing.pop(want.name, None)
        if dep is None:
            try:
                dep = client.read_deployment_by_name(f"{FLOW_NAME}/{want.name}")
            except ObjectNotFound:
                dep = None
        directory = app_dir or _app_dir_of(dep) or APP_DIR
        if dep is not None and _fingerprint_existing(dep) == _fingerprint_wanted(want, work_pool, directory):
            report.unchanged.append(want.name)
            continue
        _upsert(client, flow_id, want, work_pool, directory)
        was_active = dep is not None and not dep.paused and any(s.active for s in dep.schedules)
        if not want.active and (dep is None or was_active):
            report.paused.append(want.name)
        elif dep is None:
            report.created.append(want.name)
        elif want.active and not was_active:
            report.resumed.append(want.name)
        else:
            report.updated.append(want.name)
    for name, dep in sorted(existing.items()):
        client.delete_deployment(dep.id)
        report.removed.append(name)
    return report


def sync_from_database(
    database_url: str,
    *,
    work_pool: str,
    app_dir: Path | None = APP_DIR,
    only: Collection[str] | None = None,
    client: SyncPrefectClient | None = None,
) -> SyncReport:
    """Converge the managed deployments with the stored strategies (``trader deploy``, the lifecycle commands and
    the ``strategy-sync`` flow all come here)."""
    wanted = desired_from_database(database_url)
    return sync_deployments(wanted, work_pool=work_pool, app_dir=app_dir, only=only, client=client)
