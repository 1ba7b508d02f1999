#!/usr/bin/env bash
# Install everything, then run every check CI runs: ruff, ruff format --check, mypy --strict, pytest.
# Fails when pytest collects no tests (exit code 5 is not a pass).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
export PATH="$HOME/.local/bin:$PATH"  # where setup.sh links uv when it had to install it

export PREFECT_SERVER_ANALYTICS_ENABLED=false
echo "== ruff check";          uv run ruff check .
echo "== ruff format --check"; uv run ruff format --check .
echo "== mypy --strict";       uv run mypy
echo "== pytest"
set +e
# two pytest-xdist workers (whole files per worker, each with its own PostgreSQL cluster and Prefect server): see the
# README for the measured times; TEST_WORKERS=0 (or `-n 0`) runs serially
uv run pytest -q -p no:cacheprovider -n "${TEST_WORKERS:-2}" "$@"
status=$?
set -e
if [ "$status" -eq 5 ]; then
  echo "pytest collected no tests: failing" >&2
  exit 1
fi
exit "$status"
