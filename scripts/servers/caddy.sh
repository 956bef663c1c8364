#!/usr/bin/env bash
# Caddy (Debian's `caddy`, 2.6) for the tests of Tether driving a real proxy through Caddy's admin
# API (tests/integration/test_caddy.py). The test fixture runs a Caddy of its own (`caddy run`
# with an admin endpoint and data dir of its own on free ports), so the distribution's service is
# not wanted: the install runs under a policy-rc.d that forbids starting services, and a service
# the package's scripts started anyway is stopped. Idempotent and fast when Caddy is there.
# Needs root for apt-get.
set -euo pipefail
export PATH="/usr/local/sbin:/usr/sbin:/sbin:$PATH"

if command -v caddy >/dev/null 2>&1; then
  exit 0
fi

policy=/usr/sbin/policy-rc.d
own_policy=0
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' >"$policy"
  chmod 0755 "$policy"
  own_policy=1
fi
cleanup() { if [ "$own_policy" = 1 ]; then rm -f "$policy"; fi; }
trap cleanup EXIT

echo "caddy: installing caddy with apt-get" >&2
export DEBIAN_FRONTEND=noninteractive
apt_get() { apt-get -o DPkg::Lock::Timeout=300 "$@"; }
if ! apt_get install -y -qq --no-install-recommends caddy >/dev/null 2>&1; then
  apt_get update -qq
  apt_get install -y -qq --no-install-recommends caddy >/dev/null
fi
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet caddy 2>/dev/null; then
  systemctl stop caddy || true
  systemctl disable caddy >/dev/null 2>&1 || true
fi
caddy version >&2
