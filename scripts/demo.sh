#!/usr/bin/env bash
# The main job on a fresh machine: install everything, then run every example strategy once against the
# TWS-protocol simulator on the shipped sample data, with a local Prefect server whose UI links are printed.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
export PATH="$HOME/.local/bin:$PATH"  # where setup.sh links uv when it had to install it
export PREFECT_SERVER_ANALYTICS_ENABLED=false
uv run trader init
exec uv run trader demo "$@"
