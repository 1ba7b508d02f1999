"""CPU seconds by component, read from /proc (Linux): where a run's cost goes.

Shared by ``benchmarks/bench_cost.py`` and ``scripts/load_test.py``. Two snapshots (``start`` and ``stop``); no
sampling thread. A process tree's CPU is the sum over its live processes of ``utime + stime + cutime + cstime``
(fields 14-17 of ``/proc/<pid>/stat``): a child that ended and was reaped by a parent in the tree (a PostgreSQL
backend whose connection closed, a uvicorn helper) is still counted, through its parent's ``cutime``.

Components:

- ``prefect server``: the tree of the server's pid (``prefect server start`` and its children);
- ``postgres``: the tree of the cluster's postmaster (every backend: the Prefect database and the trader's);
- ``chromium``: this process's child processes that are not the server (the chart renderer: kaleido's headless
  Chromium and its helpers), plus this process's own ``cutime`` (children that ended);
- ``worker``: this process (the warm worker: every thread, the flow runs, the broker client), minus the named
  threads below;
- named threads (e.g. ``simulator``: the in-process TWS simulator, IB's side, not ours), from
  ``/proc/self/task/<tid>/stat``;
- ``other``: the rest of the box (from ``/proc/stat``): it shows how loaded the machine was.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

SERVER = "prefect server"
POSTGRES = "postgres"
CHROMIUM = "chromium"
WORKER = "worker"
OTHER = "other"


def _hz() -> int:
    return os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _stat_fields(path: str) -> list[str] | None:
    try:
        text = Path(path).read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[1].split()  # fields after the command name; [0] is field 3 (state)


def postmaster_pid(data_dir: Path) -> int:
    """The postmaster's pid from ``<data_dir>/postmaster.pid`` (first line)."""
    return int((data_dir / "postmaster.pid").read_text().split()[0])


def thread_id(name: str) -> int | None:
    """The native id of the live Python thread called ``name`` (e.g. ``tws-simulator``), if any."""
    for thread in threading.enumerate():
        if thread.name == name:
            return thread.native_id
    return None


class CpuMeter:
    """CPU seconds per component between :meth:`start` and :meth:`stop` (see the module docstring)."""

    def __init__(self, server_pid: int, postmaster: int | None = None, threads: dict[str, int] | None = None) -> None:
        self.server_pid = server_pid
        self.postmaster = postmaster
        self.threads = dict(threads or {})
        self.available = Path("/proc/self/stat").exists()
        self._hz = _hz()
        self._start: dict[str, float] = {}

    def _box_busy(self) -> float:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
        values = [int(v) for v in fields]
        idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
        guest = sum(values[8:10]) if len(values) > 9 else 0  # guest time is already inside user/nice
        return (sum(values) - idle - guest) / self._hz

    def snapshot(self) -> dict[str, float]:
        """Cumulative CPU seconds per component now."""
        me = os.getpid()
        procs: dict[int, tuple[int, float, float]] = {}  # pid -> (ppid, own, own + reaped children)
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            fields = _stat_fields(f"/proc/{entry}/stat")
            if fields is None:
                continue
            own = (int(fields[11]) + int(fields[12])) / self._hz
            children = (int(fields[13]) + int(fields[14])) / self._hz
            procs[int(entry)] = (int(fields[1]), own, own + children)
        roots = {self.server_pid: SERVER, me: CHROMIUM}
        if self.postmaster:
            roots[self.postmaster] = POSTGRES
        totals = {SERVER: 0.0, POSTGRES: 0.0, CHROMIUM: 0.0, WORKER: 0.0}
        for pid, (_, own, whole) in procs.items():
            if pid == me:
                totals[WORKER] += own
                totals[CHROMIUM] += whole - own
                continue
            seen, ancestor = 0, pid
            while ancestor > 1 and ancestor not in roots and seen < 64:
                ancestor = procs.get(ancestor, (0, 0.0, 0.0))[0]
                seen += 1
            if ancestor in roots:
                totals[roots[ancestor]] += whole
        for name, tid in self.threads.items():
            fields = _stat_fields(f"/proc/{me}/task/{tid}/stat")
            value = (int(fields[11]) + int(fields[12])) / self._hz if fields else 0.0
            totals[name] = value
            totals[WORKER] -= value
        totals[OTHER] = self._box_busy() - sum(totals.values())
        return totals

    def start(self) -> None:
        """Take the baseline now (CPU used before is not counted)."""
        if self.available:
            self._start = self.snapshot()

    def stop(self) -> dict[str, float]:
        """CPU seconds per component since :meth:`start`."""
        if not self.available:
            return {}
        end = self.snapshot()
        return {name: max(0.0, value - self._start.get(name, 0.0)) for name, value in end.items()}
