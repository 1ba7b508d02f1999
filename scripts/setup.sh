#!/usr/bin/env bash
# Install everything the project needs on a fresh Debian 12 or 13 machine: system packages (Chromium for chart PNG
# export, PostgreSQL server binaries of any major version for the tests: Debian's `postgresql` is 15 on 12, 17 on
# 13), uv, and the locked Python 3.11 environment in .venv (uv downloads 3.11 where the system Python is another
# version). Safe to run again: it installs only what is missing. As root, the tests run the cluster as the
# `postgres` user, which Debian's package creates.
set -euo pipefail
cd "$(dirname "$0")/.."

UV_VENV="$HOME/.local/share/ibkr-trader-uv"
find_uv() {
  command -v uv 2>/dev/null || { [ -x "$HOME/.local/bin/uv" ] && echo "$HOME/.local/bin/uv"; } || true
}

need_apt=()
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
# the same rule as tests/pg.py: initdb + pg_ctl on PATH, in `pg_config --bindir` or /usr/lib/postgresql/*/bin
./scripts/find_postgres.sh >/dev/null 2>&1 || need_apt+=(postgresql)
if [ -z "$(find_uv)" ] && ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
  need_apt+=(python3-venv)  # to install uv into its own venv (Debian's system Python is externally managed)
fi
if ((${#need_apt[@]})); then
  echo "setup: installing system packages: ${need_apt[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi
bindir="$(./scripts/find_postgres.sh)"
if [ "$(id -u)" -eq 0 ] && ! id postgres >/dev/null 2>&1; then
  echo "setup: creating the postgres system user (the test cluster refuses to run as root)"
  useradd --system --home-dir /var/lib/postgresql --shell /bin/bash postgres
fi

if [ -z "$(find_uv)" ]; then
  echo "setup: installing uv into $UV_VENV (linked as ~/.local/bin/uv)"
  python3 -m venv "$UV_VENV"
  "$UV_VENV/bin/pip" install -q 'uv>=0.9,<1'
  mkdir -p "$HOME/.local/bin"
  ln -sf "$UV_VENV/bin/uv" "$HOME/.local/bin/uv"
fi
UV="$(find_uv)"
command -v uv >/dev/null 2>&1 || echo "setup: add ~/.local/bin to PATH to run uv ($UV)"

"$UV" sync --locked --python 3.11 -q
echo "setup: environment ready in .venv ($("$UV" run python --version)); PostgreSQL binaries in $bindir"
