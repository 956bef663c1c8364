#!/usr/bin/env bash
# RabbitMQ (Debian `rabbitmq-server`) for the rabbitmq provider tests. Installs the package when
# `rabbitmq-server` is missing and enables the management plugin (the HTTP API Tether administers
# through) offline, without a running node. The test fixture (tests/integration/rabbitmq/
# conftest.py) starts a node of its own on free loopback ports with its own data dir and stops it,
# so the package's own service is not needed: when this script installs the package and the
# package's scripts started the default node (`rabbit@HOST` on :5672, guest/guest), it stops it
# again. A node that was already running before this script is left alone.
# Idempotent and fast when everything is there already. Needs root for apt-get.
set -euo pipefail

plugin_enabled() {
  local file=/etc/rabbitmq/enabled_plugins
  [ -f "$file" ] && grep -q 'rabbitmq_management[],. ]' "$file"
}

installed_now=0
if ! command -v rabbitmq-server >/dev/null 2>&1 && [ ! -x /usr/sbin/rabbitmq-server ]; then
  echo "rabbitmq: installing rabbitmq-server with apt-get" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt_get() { apt-get -o DPkg::Lock::Timeout=300 "$@"; }
  if ! apt_get install -y -qq --no-install-recommends rabbitmq-server >/dev/null 2>&1; then
    apt_get update -qq
    apt_get install -y -qq --no-install-recommends rabbitmq-server >/dev/null
  fi
  installed_now=1
fi
export PATH="/usr/sbin:/usr/lib/rabbitmq/bin:$PATH"

if ! plugin_enabled; then
  echo "rabbitmq: enabling the management plugin (offline)" >&2
  rabbitmq-plugins enable --offline rabbitmq_management >/dev/null
fi

if [ "$installed_now" = 1 ]; then
  # Where the package's scripts started its default node (systemd hosts; containers usually
  # forbid it), stop it: nothing here uses it, and it would listen with guest/guest on :5672.
  if (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null; then
    echo "rabbitmq: stopping the node the package started" >&2
    if command -v systemctl >/dev/null 2>&1 && systemctl is-active -q rabbitmq-server 2>/dev/null
    then
      systemctl stop rabbitmq-server || true
    elif command -v service >/dev/null 2>&1; then
      service rabbitmq-server stop >/dev/null 2>&1 || true
    fi
    # and the epmd it started; epmd refuses to quit while any node is still registered
    epmd -kill >/dev/null 2>&1 || true
  fi
fi
command -v rabbitmq-server >/dev/null
