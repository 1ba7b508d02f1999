"""``trader sim start`` / ``python -m simulator``: bad input is one clear line and exit 2, never a traceback."""

from __future__ import annotations

import asyncio
import re
import signal
import sys
from datetime import UTC, datetime

import pytest
from ib_async import IB
from typer.testing import CliRunner

from cli.sim import app


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["start", "--data", "/nonexistent/bars"], "data directory does not exist"),
        (["start", "--now", "2012-06-27"], "has no timezone"),
        (["start", "--now", "yesterday-ish"], "not an ISO timestamp"),
        (["start", "--server-version", "150"], "server_version must be 157..178"),
        (["start", "--participation", "2"], "partial_fill_participation"),
    ],
)
def test_bad_input_exits_2_with_a_message(args: list[str], message: str) -> None:
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output


async def test_python_m_simulator_serves_until_ctrl_c() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "simulator", "start", "--port", "0", "--now", "2012-06-27T15:00:00Z",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    assert proc.stdout is not None
    try:
        first = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
        match = re.search(r"listening on 127\.0\.0\.1:(\d+)", first)
        assert match, first
        ib = IB()
        await ib.connectAsync("127.0.0.1", int(match.group(1)), clientId=1, timeout=5)
        assert await ib.reqCurrentTimeAsync() == datetime(2012, 6, 27, 15, tzinfo=UTC)
        ib.disconnect()
    finally:
        proc.send_signal(signal.SIGINT)
        output = (await asyncio.wait_for(proc.stdout.read(), 10)).decode()
        await proc.wait()
    assert proc.returncode == 0
    assert "SPY" in output and "simulator stopped" in output
