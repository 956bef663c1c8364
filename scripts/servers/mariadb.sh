#!/usr/bin/env bash
# MariaDB (Debian `mariadb-server` and its client) for the mysql provider tests and for
# `--private` MySQL instances. Installs the packages when `mariadbd` is missing. The test fixture
# (tests/integration/mysql/conftest.py) runs private servers of its own (mariadb-install-db +
# mariadbd on a free port with its own data dir), so the distribution's server is not wanted:
# the install runs under a policy-rc.d that forbids starting services (Docker images ship one;
# otherwise a temporary one is put in place and removed again), and when the package's scripts
# started the default server on :3306 anyway, it is stopped. A server that was already running
# before this script is left alone.
# Idempotent and fast when everything is there already. Needs root for apt-get.
set -euo pipefail
export PATH="/usr/local/sbin:/usr/sbin:/sbin:$PATH"

if command -v mariadbd >/dev/null 2>&1 && command -v mariadb-install-db >/dev/null 2>&1 \
    && command -v mariadb-admin >/dev/null 2>&1; then
  exit 0
fi

port_open() { (exec 3<>/dev/tcp/127.0.0.1/3306) 2>/dev/null; }
was_running=0
if port_open; then was_running=1; fi

policy=/usr/sbin/policy-rc.d
own_policy=0
if [ ! -e "$policy" ]; then
  # Forbid the package's scripts to start the distribution's server while we install it.
  printf '#!/bin/sh\nexit 101\n' >"$policy"
  chmod 0755 "$policy"
  own_policy=1
fi
cleanup() { if [ "$own_policy" = 1 ]; then rm -f "$policy"; fi; }
trap cleanup EXIT

echo "mariadb: installing mariadb-server and mariadb-client with apt-get" >&2
export DEBIAN_FRONTEND=noninteractive
apt_get() { apt-get -o DPkg::Lock::Timeout=300 "$@"; }
packages=(mariadb-server mariadb-client)
if ! apt_get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null 2>&1; then
  apt_get update -qq
  apt_get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
fi

if [ "$was_running" = 0 ] && port_open; then
  # The package started its own server (no policy-rc.d honoured, systemd host): stop it, our
  # fixtures run private servers and nothing should listen on :3306 for them.
  echo "mariadb: stopping the server the package started" >&2
  if command -v systemctl >/dev/null 2>&1 && systemctl is-active -q mariadb 2>/dev/null; then
    systemctl stop mariadb || true
  elif command -v service >/dev/null 2>&1; then
    service mariadb stop >/dev/null 2>&1 || true
  fi
  if port_open; then
    mariadb-admin --protocol=socket shutdown >/dev/null 2>&1 || true
  fi
fi

command -v mariadbd >/dev/null
command -v mariadb-install-db >/dev/null
