#!/usr/bin/env bash
# The first of the README's two commands: install Tether and start it on its embedded default
# (API + worker + embedded PostgreSQL + local media). Extra arguments go to `tether up`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install.sh
# The applications get tether up's PATH: the quick start's `python` is this venv's (with psycopg).
export PATH="$PWD/.venv/bin:$PATH"
exec .venv/bin/tether up "$@"
