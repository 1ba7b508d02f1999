#!/usr/bin/env bash
# Print the directory holding both initdb and pg_ctl of one PostgreSQL install (any major version), or explain
# what was searched and exit 1. The same rule as tests/pg.py find_bindir, in the same order:
#   1. PATH: initdb's directory, if pg_ctl is beside it;  2. `pg_config --bindir`;
#   3. /usr/lib/postgresql/<version>/bin (Debian: 15 on Debian 12, 17 on Debian 13), highest version first.
# Usage: scripts/find_postgres.sh [DEBIAN_ROOT]   (default /usr/lib/postgresql; the argument is for tests)
set -euo pipefail
# external commands: find and sort only (when the Debian root exists)
root="${1:-/usr/lib/postgresql}"
has_server() { [ -f "$1/initdb" ] && [ -x "$1/initdb" ] && [ -f "$1/pg_ctl" ] && [ -x "$1/pg_ctl" ]; }

if initdb="$(command -v initdb 2>/dev/null)" && has_server "${initdb%/*}"; then
  echo "${initdb%/*}"
  exit 0
fi
searched="PATH ($PATH)"
if pg_config="$(command -v pg_config 2>/dev/null)"; then
  bindir="$("$pg_config" --bindir 2>/dev/null || true)"
  if [ -n "$bindir" ] && has_server "$bindir"; then
    echo "$bindir"
    exit 0
  fi
  searched="$searched; $pg_config --bindir (${bindir:-no answer})"
else
  searched="$searched; pg_config --bindir (no pg_config on PATH)"
fi
candidates=()
if [ -d "$root" ]; then
  # version directories, numerically highest first (17 before 16 before 15 before 9.6)
  while IFS= read -r version; do
    [ -d "$root/$version/bin" ] && candidates+=("$root/$version/bin")
  done < <(find "$root" -mindepth 1 -maxdepth 1 -type d -printf '%f\n' | sort -t. -k1,1nr -k2,2nr)
fi
for candidate in "${candidates[@]}"; do
  if has_server "$candidate"; then
    echo "$candidate"
    exit 0
  fi
done
listed="none"
((${#candidates[@]})) && listed="$(IFS=,; echo "${candidates[*]}")"
echo "no PostgreSQL server binaries (initdb and pg_ctl) in: $searched; $root/*/bin ($listed)" >&2
exit 1
