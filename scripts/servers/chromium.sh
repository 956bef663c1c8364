#!/usr/bin/env bash
# Chromium (Debian `chromium`) for the browser tests in tests/web/: Playwright (PyPI) drives it
# through `executable_path=/usr/bin/chromium`, so `playwright install` (which downloads a browser
# build of its own) is never needed. Installs the package only when /usr/bin/chromium is missing,
# refreshing the package lists only then. Idempotent and instant when Chromium is there.
# Needs root for apt-get.
set -euo pipefail

if [ -x /usr/bin/chromium ]; then
  exit 0
fi
echo "chromium: installing chromium with apt-get" >&2
export DEBIAN_FRONTEND=noninteractive
apt_get() { apt-get -o DPkg::Lock::Timeout=300 "$@"; }
apt_get update -qq
apt_get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
test -x /usr/bin/chromium
