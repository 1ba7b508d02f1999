"""``python -m simulator start [--port 7497] [--data DIR] [--now ISO]``: the same as ``trader sim start``."""

from cli.sim import app

if __name__ == "__main__":
    app(prog_name="python -m simulator")
