"""Benchmark: ``trader`` start-up (help of the app and of three groups) and ``trader sim start`` time to listen.

    uv run python benchmarks/bench_cli.py [--runs 7]

Every case is a new process of this checkout's virtualenv. Each round runs the baseline,
``python -c "import typer, rich"``, right before every case, so the ratio compares runs under the same load (on a
shared 2-core box the neighbours move the absolute figures a lot). Wall times are min / median / max over the
rounds; ``cpu`` is the median user+system CPU of the child process.

``sim start`` is measured twice: *listen* is when the port accepts a TCP connection (the simulator binds before it
imports pandas and loads the bar files), *ready* is when it answers the API handshake (``API\\0`` + version range),
i.e. when a client gets its first reply; the process is killed after each run.

Bytecode: by default the children write and reuse ``.pyc`` files (in a temporary ``PYTHONPYCACHEPREFIX``, warmed
up first), as an installed CLI does. ``--no-bytecode-cache`` compiles every module from source on every start, as
with ``PYTHONDONTWRITEBYTECODE=1`` and no ``__pycache__`` (this workplace's shell sets that variable; pandas then
costs seconds, not a fraction of one).

Goals: ``trader --help`` and ``trader GROUP --help`` within 1 s and under 3x the baseline; ``sim start`` listening
within 3 s. Figures go to the README (Command line section).
"""

from __future__ import annotations

import argparse
import os
import resource
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
TRADER = str(Path(sys.executable).with_name("trader"))
BASELINE = [PYTHON, "-c", "import typer, rich"]
HELP_CASES = {
    "trader --help": [TRADER, "--help"],
    "trader orders --help": [TRADER, "orders", "--help"],
    "trader strategies --help": [TRADER, "strategies", "--help"],
    "trader sim --help": [TRADER, "sim", "--help"],
}
DEADLINE_S = 120.0
ENV = dict(os.environ)  # the children's environment (bytecode settings from the command line)
HANDSHAKE = b"API\0" + struct.pack(">I", len(b"v157..178")) + b"v157..178"


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_once(argv: list[str]) -> tuple[float, float]:
    """Wall and CPU seconds of one run of ``argv`` (its output discarded; a failure stops the benchmark)."""
    cpu0, t0 = _children_cpu(), time.perf_counter()
    subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=True, cwd=ROOT, env=ENV)
    return time.perf_counter() - t0, _children_cpu() - cpu0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _until(condition: Callable[[], bool], proc: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not condition():
        if proc.poll() is not None:
            raise RuntimeError(f"trader sim start exited ({proc.returncode}) before it {what}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"trader sim start: not {what} after {DEADLINE_S} s")
        time.sleep(0.005)  # polling interval of the probe, not a wait for a result


def sim_start_once() -> tuple[float, float]:
    """Seconds from spawning ``trader sim start`` until its port accepts, and until it answers the handshake."""
    port = free_port()
    t0 = time.perf_counter()
    argv = [TRADER, "sim", "start", "--port", str(port)]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, cwd=ROOT, env=ENV)
    conn: list[socket.socket] = []

    def accepts() -> bool:
        try:
            conn.append(socket.create_connection(("127.0.0.1", port), timeout=1))
        except OSError:
            return False
        return True

    try:
        _until(accepts, proc, "listened")
        listen = time.perf_counter() - t0
        sock = conn[0]
        sock.sendall(HANDSHAKE)
        sock.settimeout(DEADLINE_S)
        first = sock.recv(4)  # the length prefix of the server-version message
        ready = time.perf_counter() - t0
        sock.close()
        if len(first) != 4:
            raise RuntimeError("trader sim start closed the connection instead of answering the handshake")
    finally:
        proc.kill()
        proc.wait(30)
    return listen, ready


def summary(samples: list[float]) -> str:
    return f"min {min(samples):.3f}  median {statistics.median(samples):.3f}  max {max(samples):.3f} s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="rounds per case (default 7)")
    parser.add_argument("--no-bytecode-cache", action="store_true", help="compile every module on every start")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-cli-pycache-") as prefix:
        ENV["PYTHONPYCACHEPREFIX"] = prefix  # never the checkout's or the venv's __pycache__
        if args.no_bytecode_cache:
            ENV["PYTHONDONTWRITEBYTECODE"] = "1"
        else:
            ENV.pop("PYTHONDONTWRITEBYTECODE", None)
        mode = "no bytecode cache" if args.no_bytecode_cache else "bytecode cached"
        for argv in [BASELINE, *HELP_CASES.values()]:  # warm the file (and bytecode) caches
            run_once(argv)
        sim_start_once()
        measure(args.runs, mode)


def measure(runs: int, mode: str) -> None:
    print(f"trader start-up ({mode}), {runs} rounds; baseline = python -c 'import typer, rich' before each case")
    print(f"{'case':<26} {'wall':<44} {'cpu':>8}   {'baseline wall (median)':>22}  ratio (wall, cpu)")
    base_all: list[float] = []
    for name, argv in HELP_CASES.items():
        walls, cpus, base_walls, base_cpus = [], [], [], []
        for _ in range(runs):
            bw, bc = run_once(BASELINE)
            w, c = run_once(argv)
            base_walls.append(bw)
            base_cpus.append(bc)
            walls.append(w)
            cpus.append(c)
        base_all += base_walls
        ratio_wall = statistics.median(walls) / statistics.median(base_walls)
        ratio_cpu = statistics.median(cpus) / statistics.median(base_cpus)
        print(
            f"{name:<26} {summary(walls):<44} {statistics.median(cpus):>6.3f} s   "
            f"{statistics.median(base_walls):>20.3f} s  {ratio_wall:.2f}x, {ratio_cpu:.2f}x"
        )
    listens, readies, base_walls = [], [], []
    for _ in range(runs):
        base_walls.append(run_once(BASELINE)[0])
        listen, ready = sim_start_once()
        listens.append(listen)
        readies.append(ready)
    base = statistics.median(base_walls)
    print(
        f"{'trader sim start: listen':<26} {summary(listens):<44} {'':>8}   {base:>20.3f} s  "
        f"{statistics.median(listens) / base:.2f}x"
    )
    print(
        f"{'trader sim start: ready':<26} {summary(readies):<44} {'':>8}   {base:>20.3f} s  "
        f"{statistics.median(readies) / base:.2f}x"
    )
    print(f"baseline over all help rounds: {summary(base_all)}")


if __name__ == "__main__":
    main()
