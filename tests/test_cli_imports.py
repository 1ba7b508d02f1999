"""What the ``trader`` CLI imports before a command runs (in a fresh interpreter: this process has imported everything).

``trader --help`` and ``trader GROUP --help`` must not load the data stack: each command imports its services when it
runs. The figures (help time against ``import typer, rich``) are in benchmarks/bench_cli.py.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "samples" / "AAPL.csv"

HEAVY = ("pandas", "sqlalchemy", "prefect", "ib_async", "openai", "plotly", "great_expectations")

PROBE = """
import json, sys
argv = json.loads(sys.argv[1])
heavy = json.loads(sys.argv[2])
import cli.main
if argv:
    sys.argv = ["trader", *argv]
    try:
        cli.main.app()
    except SystemExit as exc:
        code = exc.code
    else:
        code = 0
else:
    code = None
sys.stdout.write("\\nPROBE " + json.dumps({"code": code, "loaded": [m for m in heavy if m in sys.modules]}))
"""


def probe(argv: list[str], heavy: tuple[str, ...] = HEAVY) -> dict[str, object]:
    """Import ``cli.main`` (and run ``trader ARGV``) in a new interpreter; return the exit code and heavy modules."""
    done = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(argv), json.dumps(heavy)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert "PROBE " in done.stdout, done.stderr
    result: dict[str, object] = json.loads(done.stdout.rsplit("PROBE ", 1)[1])
    result["output"] = done.stdout
    return result


def test_importing_the_cli_loads_no_data_stack() -> None:
    assert probe([])["loaded"] == []


@pytest.mark.parametrize("argv", [["--help"], ["orders", "--help"], ["strategies", "--help"], ["sim", "--help"]])
def test_help_loads_no_data_stack(argv: list[str]) -> None:
    result = probe(argv, (*HEAVY, "pydantic", "typer.rich_utils"))
    assert result["code"] == 0
    assert "Usage: trader" in str(result["output"])
    assert result["loaded"] == []


def test_a_command_imports_what_it_needs() -> None:
    # The probe sees what a command loads: ``trader data inspect`` reads the file with pandas, and needs no Prefect,
    # broker or LLM client.
    result = probe(["data", "inspect", str(SAMPLE), "--json"])
    assert result["code"] == 0, result["output"]
    assert '"rows": 127' in str(result["output"])
    loaded = result["loaded"]
    assert isinstance(loaded, list)
    assert "pandas" in loaded
    assert not {"prefect", "ib_async", "openai", "plotly"} & set(loaded)


def test_sim_clock_commands_load_no_data_stack() -> None:
    # ``trader sim status/step/advance-to`` talk JSON to a running simulator: the standard library is enough.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once the block ends
    for argv in (["sim", "status"], ["sim", "step", "3"], ["sim", "advance-to", "2012-06-27T20:00:00Z"]):
        result = probe([*argv, "--control-port", str(port)], (*HEAVY, "asyncio"))
        assert result["code"] == 1, result["output"]
        assert result["loaded"] == [], argv


def test_simulator_package_is_light_until_its_server_is_used() -> None:
    code = (
        "import sys, simulator.config, simulator;"
        "light = 'pandas' not in sys.modules;"
        "names = [getattr(simulator, n).__name__ for n in simulator.__all__];"
        "print(light, names == simulator.__all__, 'pandas' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout.split() == ["True", "True", "True"]
