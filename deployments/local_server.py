"""A local Prefect server for the demo and the tests: start it detached, find it again, stop it.

The server keeps running after the command that started it, so the UI links printed by the demo
open. Its state lives in ``<data dir>/prefect`` (``PREFECT_HOME``) unless a database URL is given.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import httpx

from services.errors import ConfigurationError

DEFAULT_PORT: Final = 4200
STARTUP_TIMEOUT_S: Final = 120.0


@dataclass(frozen=True)
class ServerInfo:
    api_url: str
    ui_url: str
    pid: int | None
    home: Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _healthy(api_url: str) -> bool:
    try:
        return httpx.get(f"{api_url}/health", timeout=2.0).status_code == 200
    except httpx.HTTPError:
        return False


def server_env(home: Path, port: int, database_url: str | None = None) -> dict[str, str]:
    """Environment for a server subprocess (and its clients) rooted at ``home``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env |= {
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_UI_API_URL": f"http://127.0.0.1:{port}/api",
        "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
        "PREFECT_SERVER_API_HOST": "127.0.0.1",
        "PREFECT_SERVER_API_PORT": str(port),
        "PREFECT_LOGGING_LEVEL": "WARNING",
    }
    if database_url:
        env["PREFECT_SERVER_DATABASE_CONNECTION_URL"] = database_url
    return env


def start_server(
    home: Path,
    *,
    port: int | None = None,
    database_url: str | None = None,
    timeout_s: float = STARTUP_TIMEOUT_S,
    extra_env: Mapping[str, str] | None = None,
) -> ServerInfo:
    """Start ``prefect server start`` detached and wait until ``/api/health`` answers.

    ``extra_env`` adds server settings (e.g. ``PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS``)."""
    home.mkdir(parents=True, exist_ok=True)
    existing = find_server(home)
    if existing is not None:
        return existing
    port = port or (DEFAULT_PORT if _port_free(DEFAULT_PORT) else free_port())
    env = server_env(home, port, database_url) | dict(extra_env or {})
    log = (home / "server.log").open("ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    api_url = f"http://127.0.0.1:{port}/api"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ConfigurationError(f"Prefect server exited with code {proc.returncode}; see {home / 'server.log'}")
        if _healthy(api_url):
            (home / "server.pid").write_text(f"{proc.pid} {port}\n")
            return ServerInfo(api_url, f"http://127.0.0.1:{port}", proc.pid, home)
        time.sleep(0.5)
    proc.terminate()
    raise ConfigurationError(f"Prefect server did not become healthy in {timeout_s:.0f} s; see {home / 'server.log'}")


def find_server(home: Path) -> ServerInfo | None:
    """Return the server started from ``home`` if it is still healthy."""
    pid_file = home / "server.pid"
    if not pid_file.exists():
        return None
    try:
        pid_text, port_text = pid_file.read_text().split()
        pid, port = int(pid_text), int(port_text)
    except ValueError:
        return None
    api_url = f"http://127.0.0.1:{port}/api"
    if not _healthy(api_url):
        return None
    return ServerInfo(api_url, f"http://127.0.0.1:{port}", pid, home)


def _alive(pid: int) -> bool:
    """Whether ``pid`` still runs; reaps it when it is our own exited child (else it would linger as a zombie)."""
    try:
        reaped, _ = os.waitpid(pid, os.WNOHANG)
        if reaped == pid:
            return False
    except ChildProcessError:
        pass  # not our child: fall back to a signal probe
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def stop_server(home: Path, *, timeout_s: float = 20.0) -> bool:
    """Stop the server started from ``home``; return whether one was running."""
    pid_file = home / "server.pid"
    if not pid_file.exists():
        return False
    try:
        pid = int(pid_file.read_text().split()[0])
    except (ValueError, IndexError):
        pid_file.unlink()
        return False
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        pid_file.unlink()
        return False
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not _alive(pid):
            break
        time.sleep(0.2)
    else:
        os.killpg(pid, signal.SIGKILL)
    pid_file.unlink(missing_ok=True)
    return True
