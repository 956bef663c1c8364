#!/usr/bin/env bash
# Search servers (OpenSearch 2.19.4, Elasticsearch 8.19.21 and 7.17.29) for the elasticsearch
# provider tests and `--private` search instances. Neither PyPI, npm nor Debian has a server:
# tether.servers.search runs Maven Central's integration-test zips on a JDK 17. This installs
# the JDK and Maven with apt-get when missing, then fetches and unpacks every release into the
# cache (TETHER_SEARCH_CACHE, default /var/cache/tether/search as root) once, so no test waits on
# a download. OpenSearch gets its security plugin and the analysis-common module (the jar from
# Maven Central: n-gram filters for django-haystack) installed; a cache unpacked before the
# module existed gets it added. The test fixtures (tests/integration/search/conftest.py) start servers of their own
# on free loopback ports and delete them at the end.
# TETHER_SEARCH_RELEASES limits what is fetched (e.g. "opensearch-2.19.4"; default: all).
# Measured from an empty cache on a busy 2-core machine: OpenSearch ~80 s (Maven's dependency
# plugin, 56 + 45 MB of zips and a 0.2 MB jar, the security plugin installed), each Elasticsearch zip ~20-30 s;
# ~0.5 s when everything is there. Idempotent. Needs root for apt-get.
set -euo pipefail
export PATH="/usr/local/sbin:/usr/sbin:/sbin:$PATH"
cd "$(dirname "$0")/../.."

have_jdk() {
  if [ -n "${TETHER_SEARCH_JAVA_HOME:-}" ]; then
    [ -x "$TETHER_SEARCH_JAVA_HOME/bin/java" ]
  else
    compgen -G "/usr/lib/jvm/java-17-openjdk*/bin/java" >/dev/null
  fi
}

packages=()
have_jdk || packages+=(openjdk-17-jre-headless)
command -v mvn >/dev/null 2>&1 || packages+=(maven)
if [ "${#packages[@]}" -gt 0 ]; then
  echo "search: installing ${packages[*]} with apt-get" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt_get() { apt-get -o DPkg::Lock::Timeout=300 "$@"; }
  if ! apt_get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null 2>&1; then
    apt_get update -qq
    apt_get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
  fi
fi
have_jdk
command -v mvn >/dev/null

python=.venv/bin/python
[ -x "$python" ] || python=python3
# shellcheck disable=SC2086 # a list of release names
PYTHONPATH="src${PYTHONPATH:+:$PYTHONPATH}" "$python" -m tether.servers.search fetch \
  ${TETHER_SEARCH_RELEASES:-}
