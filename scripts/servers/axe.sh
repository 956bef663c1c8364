#!/usr/bin/env bash
# axe-core (npm) for the accessibility checks of the browser tests (tests/web/axe.py): the
# pinned version into build/axe/ (git-ignored), from the npm registry with npm itself. Idempotent
# and instant when that version is there; installs Debian's npm first if it is missing (root).
set -euo pipefail
cd "$(dirname "$0")/../.."

VERSION=4.14.1
DIR=build/axe
PKG="$DIR/node_modules/axe-core/package.json"

if [ -f "$PKG" ] && grep -q "\"version\": \"$VERSION\"" "$PKG"; then
  exit 0
fi
if ! command -v npm >/dev/null; then
  echo "axe: installing npm with apt-get" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get -o DPkg::Lock::Timeout=300 update -qq
  apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends npm >/dev/null
fi
echo "axe: installing axe-core $VERSION into $DIR" >&2
mkdir -p "$DIR"
npm install --prefix "$DIR" --no-save --no-package-lock --no-audit --no-fund --silent \
  "axe-core@$VERSION"
test -f "$DIR/node_modules/axe-core/axe.min.js"
