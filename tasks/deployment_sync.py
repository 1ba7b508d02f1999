"""The artifact of the ``strategy-sync`` flow: what converging the strategy deployments changed."""

from __future__ import annotations

from collections.abc import Sequence

from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.artifacts import markdown_table, publish_markdown

ARTIFACT_KEY = "strategy-sync"


@task(name="publish deployment sync", cache_policy=NO_CACHE)
def publish_sync_report(groups: Sequence[tuple[str, Sequence[str]]]) -> list[dict[str, str]]:
    """Publish one markdown artifact listing each strategy deployment and its change; return the rows.

    ``groups``: (change, deployment names), e.g. ``[("created", [...]), ("paused", [...]), ...]``.
    """
    rows = [{"deployment": f"strategy-run/{name}", "change": change} for change, names in groups for name in names]
    counts = ", ".join(f"{change} {len(names)}" for change, names in groups)
    changed = [row for row in rows if row["change"] != "unchanged"]
    markdown = "\n\n".join(
        [
            "# Strategy deployments converged with the database",
            counts,
            "## Changed",
            markdown_table(changed, ["deployment", "change"]),
            "## All",
            markdown_table(rows, ["deployment", "change"]),
        ]
    )
    publish_markdown(ARTIFACT_KEY, markdown, f"strategy-sync: {counts}")
    return rows
