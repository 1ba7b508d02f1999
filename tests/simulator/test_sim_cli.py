"""``trader sim start`` / ``python -m simulator``: bad input is one clear line and exit 2, never a traceback."""

from __future__ import annotations

import pytest
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
