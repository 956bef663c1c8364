#!/usr/bin/env bash
# Install Tether into ./.venv (idempotent). Used by scripts/up.sh and scripts/test.sh.
# Usage: scripts/install.sh [EXTRA]   e.g. scripts/install.sh test
set -euo pipefail
cd "$(dirname "$0")/.."
extra="${1:-}"

python=${PYTHON:-python3}
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "error: Tether needs Python 3.11 or newer as '$python' (set PYTHON=/path/to/python3.11)" >&2
  exit 2
fi
if ! "$python" -c 'import venv, ensurepip' 2>/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing python3-venv ..." >&2
    apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null
  else
    echo "error: python venv support is missing: install it (Debian/Ubuntu: sudo apt-get install python3-venv)" >&2
    exit 2
  fi
fi
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
stamp=".venv/.installed-${extra:-base}"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip >/dev/null
  if [ -n "$extra" ]; then
    .venv/bin/python -m pip install -q -e ".[$extra]"
  else
    .venv/bin/python -m pip install -q -e .
  fi
  touch "$stamp"
fi
# Tether's own modules compiled once (an editable install leaves them as sources): with
# PYTHONDONTWRITEBYTECODE set, as on some machines, every `tether` process would otherwise
# compile them again at each start (~2 s of CPU for `tether up` on two cores). Quick when
# nothing changed.
.venv/bin/python -m compileall -q src >/dev/null
