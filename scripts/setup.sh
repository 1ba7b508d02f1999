#!/usr/bin/env bash
# Install everything the project needs on a fresh Debian machine with Python 3.11:
# system packages (Chromium for chart PNG export, PostgreSQL 15 binaries for the tests), uv, and the
# locked Python environment in .venv. Safe to run again: it installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
if ! command -v initdb >/dev/null 2>&1 && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  need_apt+=(postgresql)
fi
if ((${#need_apt[@]})); then
  echo "setup: installing system packages: ${need_apt[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

if ! command -v uv >/dev/null 2>&1; then
  echo "setup: installing uv"
  python3.11 -m pip install -q 'uv>=0.9,<1' 2>/dev/null || python3 -m pip install -q 'uv>=0.9,<1'
fi

uv sync --locked --python 3.11 -q
echo "setup: environment ready in .venv ($(uv run python --version))"
