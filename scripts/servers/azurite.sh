#!/usr/bin/env bash
# Azurite (npm `azurite`), the Azure Blob emulator the azure-blob tests run against. Installed into
# .test-servers/azurite/ under the repository (git-ignored, nothing global); the test fixture
# (tests/integration/azure/conftest.py) starts .test-servers/azurite/node_modules/.bin/azurite-blob.
# Idempotent: does nothing when it is there already. Installs Node.js with apt when npm is missing.
set -euo pipefail
cd "$(dirname "$0")/../.."
dest=.test-servers/azurite
if [ -x "$dest/node_modules/.bin/azurite-blob" ]; then
  exit 0
fi
if ! command -v npm >/dev/null 2>&1; then
  echo "azurite: installing Node.js and npm with apt-get" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq nodejs npm >/dev/null
fi
echo "azurite: npm install azurite into $dest" >&2
mkdir -p "$dest"
npm install --prefix "$dest" --no-audit --no-fund --loglevel=error azurite@3 >&2
test -x "$dest/node_modules/.bin/azurite-blob"
