"""Search servers Tether runs itself: OpenSearch and Elasticsearch, one node per server.

Distributions. Neither PyPI, npm nor Debian has a server; Maven Central serves the
integration-test zips (no bundled JDK, a handful of modules), fetched with
`mvn dependency:copy` into a cache (`TETHER_SEARCH_CACHE`, default /var/cache/tether/search as
root, ~/.cache/tether/search otherwise; `python -m tether.servers.search fetch` fills it ahead of
time). Each release is unpacked once into `CACHE/dist/<flavour>-<version>` (root's, read-only for
the servers; OpenSearch gets its security plugin installed there, and the analysis-common module
its zip lacks; the zips are deleted once unpacked), and every server only has a home of its own:
`config/` (a copy of the distribution's, ~100 KB, passed as OPENSEARCH_PATH_CONF /
ES_PATH_CONF), `data/`, `logs/`, `tmp/`, the pid file and the launcher's output. They run on
a JDK 17 (Debian's openjdk-17; `TETHER_SEARCH_JAVA_HOME` chooses another) with a 512 MB heap;
`TETHER_SEARCH_JAVA_OPTS` adds JVM options (the tests add `-XX:TieredStopAtLevel=1`: the C1
compiler alone halves a start on two busy cores, 27 s against 48 s for Elasticsearch 7.17, at
some cost in peak speed).

The cache is trusted by root (Maven runs the plugins in its `m2/`, init runs the security
plugin's hash tool from the unpacked release), so it is refused (`UnsafeSearchCache`) when
another user could change it: the cache root, `zips/`, `m2/`, `dist/` and every release in it
must be ours and writable by nobody else, and every dir above the root root's or ours, writable
by others only when sticky (a shared dir like /tmp is no cache root; a dir Tether makes below it,
0755, is). Maven checks checksums strictly (`-C`); the distribution's tools (`opensearch-plugin`,
`hash.sh`) run as the service account, never as root.

Tested releases (`RELEASES`): opensearch-2.19.4 (+ opensearch-security 2.19.4.0, versions must
match exactly), elasticsearch-8.19.21 and elasticsearch-7.17.29.

Analysis on OpenSearch. The integ-test zip has one module, transport-netty4: no `ngram`,
`edge_ngram`, `snowball` or language analyzers, which django-haystack's Elasticsearch backend
needs for its index. They are OpenSearch's analysis-common module, which Maven Central publishes
as a jar only (`org.opensearch.plugin:analysis-common:VERSION`, no plugin zip; the module has no
dependencies of its own); Tether adds it as `modules/analysis-common/` with the descriptor the
full distribution ships (see `_install_analysis_module`). A cache unpacked before that (a dist
dir without the module) gets the module added in place on its next use: only the jar is
fetched. Checked by tests/integration/search/test_search_clients.py (haystack on a real server).

Security is always on:
- HTTP is plain on 127.0.0.1 with basic auth; the admin (`tether_admin`, password given at
  init) is the only user: OpenSearch's internal_users.yml holds it alone (no demo users, whose
  passwords are public) and roles_mapping.yml maps `all_access` to it and to the backend role
  `admin` only; on Elasticsearch it is a file-realm user (config/users, PBKDF2 hash) with the
  built-in `superuser` role.
- Transport (the node-to-node port, also on loopback) uses TLS with certificates made for each
  server at init: a CA whose private key is thrown away once it signed the node's certificate,
  so nobody can make another certificate the node trusts. Not the demo installer's certificates:
  their keys ship with the plugin, and whoever presents a node certificate on the transport port
  acts as a cluster node, past every permission. Elasticsearch gets transport TLS the same way
  (its bootstrap check asks for it whenever security is on: certificates are what authenticate
  nodes on that port). Keys and hashes are readable by the server's user only.

Both refuse to run as root: as root, the servers run as the system user `tether-search`
(created on demand). A server daemonises (`-d`), so it outlives the Python process; the pid file
is trusted only when /proc says that pid is this server's JVM (its main class, its
`-Djava.io.tmpdir=` naming this home's tmp dir, run by the server's user), so a recycled pid, or
another user's process dressed up as the server, is never killed. What answers on the port is
taken for the server only when the listening socket is that JVM's (/proc/net/tcp{,6} against
/proc/<pid>/fd): someone else holding the port is never sent the admin's password, and a start
finding its port held fails at once (`PortTaken`).

Measured on this kind of machine (2 cores shared with other test runs, load 4-7; 512 MB heap):
from launch to an answering, healthy node, OpenSearch 2.19.4 26-45 s (restart ~26 s), RSS
~720 MB; Elasticsearch 8.19.21 60-77 s (its launcher JVM first, then the server), RSS ~740 MB;
7.17.29 20-47 s, RSS ~710 MB (an idle machine is about twice as fast). Init: OpenSearch ~6 s
(the plugin's hash tool is a JVM), Elasticsearch < 1 s. A first fetch from Maven Central: ~80 s
for OpenSearch (the dependency plugin itself first, then 56 + 45 MB of zips, the security
plugin installed), ~20-30 s for each Elasticsearch zip; each unpacked release takes 60-120 MB
once, each server's home ~1 MB before data.

Native-realm users on the Elasticsearch integ-test zips (checked on real servers, and kept
checked by tests/integration/search/test_search_servers.py): on both 8.19.21 and 7.17.29,
`PUT /_security/role/R` and `PUT /_security/user/U` fail with 400 `Unknown filter type
[pattern_capture] for [email]`: the `.security` index cannot be created, its mapping needs the
analysis-common module the zips lack (8.19.21 logs the same error at start, syncing its built-in
roles). So no role or user made through the security API exists on either version, and whether
such users isolate cannot be tested here; API keys live in the same index (on 7.17 basic they
are off as well: "api keys are not enabled"). Only the file realm (config/users, users_roles,
roles.yml, read again within ~5 s) works there, which only whoever owns the server's files can
use: the admin is such a user.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import datetime
import fcntl
import hashlib
import ipaddress
import json
import logging
import os
import pwd
import re
import secrets
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tether.errors import ClusterError
from tether.providers.base import ResourceNames
from tether.servers.common import cmdline as _cmdline
from tether.servers.common import is_root as _is_root
from tether.servers.common import pid_alive as _pid_alive
from tether.servers.common import system_account
from tether.sysaccess import first_untraversable

log = logging.getLogger("tether.servers.search")

SERVICE_USER = "tether-search"
ADMIN_USER = "tether_admin"
CLUSTER_NAME = "tether-search"
DEFAULT_HEAP_MB = 512
DEFAULT_PRIVATE = "opensearch-2.19.4"
FLAVOURS = ("opensearch", "elasticsearch")
JDK_HINT = ("install a JDK 17: apt-get install openjdk-17-jre-headless, or run "
            "scripts/servers/search.sh (TETHER_SEARCH_JAVA_HOME names another JDK)")
MAVEN_HINT = "install Maven: apt-get install maven, or run scripts/servers/search.sh"
_NAME_RE = re.compile(r"[a-z_][a-z0-9_]{0,62}")
_RELEASE_RE = re.compile(r"(?P<flavour>[a-z]+)-(?P<version>\d+\.\d+\.\d+)")
_SECRET_LINE = re.compile(r"password|passwd|hash|secret|credential", re.IGNORECASE)
_MAVEN_TIMEOUT = 900.0
ANALYSIS_MODULE = "analysis-common"
#: the analysis-common module's plugin class (its jar has one of these: the name changed across
#: OpenSearch releases)
_ANALYSIS_CLASSES = ("org.opensearch.analysis.common.CommonAnalysisPlugin",
                     "org.opensearch.analysis.common.CommonAnalysisModulePlugin",
                     "org.opensearch.analysis.common.CommonAnalysisModule")
_HTTP_TIMEOUT = 5.0


class PortTaken(ClusterError):
    """The server could not start because another program listens on its port."""


# -- releases ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Release:
    """One flavour and version of search server, e.g. opensearch 2.19.4."""

    flavour: str
    version: str

    @property
    def name(self) -> str:
        return f"{self.flavour}-{self.version}"

    def __str__(self) -> str:
        return self.name

    @property
    def opensearch(self) -> bool:
        return self.flavour == "opensearch"

    @property
    def major(self) -> int:
        return int(self.version.split(".")[0])

    @property
    def artifacts(self) -> tuple[str, ...]:
        """Maven coordinates (group:artifact:version:ext) of what the release needs: the
        distribution's zip first, then OpenSearch's security plugin, then `module_artifacts`."""
        if self.opensearch:
            return (f"org.opensearch.distribution.integ-test-zip:opensearch:{self.version}:zip",
                    f"org.opensearch.plugin:opensearch-security:{self.version}.0:zip",
                    *self.module_artifacts)
        return (f"org.elasticsearch.distribution.integ-test-zip:elasticsearch:{self.version}:zip",)

    @property
    def module_artifacts(self) -> tuple[str, ...]:
        """Jars of modules of the full distribution that the integ-test zip lacks, added to
        `modules/` of the unpacked release: OpenSearch's analysis-common (n-gram and edge n-gram
        filters, snowball and the language analyzers; django-haystack's backend needs them).
        Maven Central has no plugin zip of it, only the module's jar, which is all the module
        is (no dependencies of its own: Lucene's analysis classes are in lib/)."""
        if self.opensearch:
            return (f"org.opensearch.plugin:{ANALYSIS_MODULE}:{self.version}:jar",)
        return ()

    @property
    def program(self) -> str:
        return f"bin/{self.flavour}"

    @property
    def main_class(self) -> str:
        return ("org.opensearch.bootstrap.OpenSearch" if self.opensearch
                else "org.elasticsearch.bootstrap.Elasticsearch")

    @property
    def conf_property(self) -> str:
        """The JVM property that names the config dir on the server's command line."""
        return "-Dopensearch.path.conf=" if self.opensearch else "-Des.path.conf="

    @property
    def env_prefix(self) -> str:
        return "OPENSEARCH" if self.opensearch else "ES"

    @property
    def config_name(self) -> str:
        return f"{self.flavour}.yml"


RELEASES: tuple[Release, ...] = (
    Release("opensearch", "2.19.4"),
    Release("elasticsearch", "8.19.21"),
    Release("elasticsearch", "7.17.29"),
)


def parse_release(text: str) -> Release:
    """`opensearch-2.19.4`, `elasticsearch-8.19.21`... (`FLAVOUR-X.Y.Z`)."""
    match = _RELEASE_RE.fullmatch(text.strip())
    if match is None or match["flavour"] not in FLAVOURS:
        known = ", ".join(r.name for r in RELEASES)
        raise ClusterError(f"unknown search server release {text!r}: name one as FLAVOUR-X.Y.Z "
                           f"with FLAVOUR opensearch or elasticsearch (tested: {known})")
    return Release(match["flavour"], match["version"])


def private_release() -> Release:
    """The release private servers use: TETHER_SEARCH_PRIVATE, else OpenSearch 2.19.4."""
    return parse_release(os.environ.get("TETHER_SEARCH_PRIVATE") or DEFAULT_PRIVATE)


# -- the account, the JDK, the cache -----------------------------------------------------------


def _service_account() -> pwd.struct_passwd:
    """The system user that runs the servers when we are root (created once)."""
    return system_account(SERVICE_USER, "search servers")


def _run_as() -> pwd.struct_passwd | None:
    """The account the servers run as: `tether-search` when we are root, else ourselves."""
    return _service_account() if _is_root() else None


def _ids(account: pwd.struct_passwd | None) -> dict[str, Any]:
    if account is None:
        return {}
    return {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}


def _chown(path: Path, account: pwd.struct_passwd | None) -> None:
    if account is not None:
        os.chown(path, account.pw_uid, account.pw_gid, follow_symlinks=False)


def _chown_tree(path: Path, account: pwd.struct_passwd | None) -> None:
    """Give `path` and everything in it to `account`, children before their dir: a dir changes
    hands only once everything below it is done (its new owner could otherwise swap an entry
    for a symlink while we walk, and have us change what it leads to)."""
    if account is None:
        return
    for root, dirs, files in os.walk(path, topdown=False):
        for name in dirs + files:
            _chown(Path(root) / name, account)
    _chown(path, account)


def _read_safely(path: Path, *, limit: int = 65536, owners: tuple[int, ...] = ()) -> bytes:
    """The last `limit` bytes of `path` when it is a regular file (never through a symlink,
    never blocking on a FIFO), owned by one of `owners` if given; OSError otherwise. What root
    reads in a server's home, which its service user owns and can fill with symlinks."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(f"{path} is not a regular file")
        if owners and st.st_uid not in owners:
            raise OSError(f"{path} belongs to uid {st.st_uid}")
        f.seek(max(0, st.st_size - limit))
        return f.read(limit)


def _remove(path: Path) -> None:
    """Remove whatever `path` is (a symlink itself, never what it leads to)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif os.path.lexists(path):
        path.unlink()


def java_home() -> Path:
    """A JDK 17 home: TETHER_SEARCH_JAVA_HOME, else Debian's openjdk-17."""
    configured = os.environ.get("TETHER_SEARCH_JAVA_HOME")
    candidates = [Path(configured)] if configured else sorted(
        Path("/usr/lib/jvm").glob("java-17-openjdk*"))
    for home in candidates:
        if (home / "bin" / "java").is_file() and os.access(home / "bin" / "java", os.X_OK):
            return home.resolve()
    if configured:
        raise ClusterError(f"TETHER_SEARCH_JAVA_HOME={configured} has no bin/java: {JDK_HINT}")
    raise ClusterError(f"no JDK 17 found in /usr/lib/jvm, so Tether cannot run search "
                       f"servers: {JDK_HINT}")


def cache_root() -> Path:
    """Where distributions are fetched and unpacked (TETHER_SEARCH_CACHE)."""
    configured = os.environ.get("TETHER_SEARCH_CACHE")
    if configured:
        return Path(os.path.abspath(configured))
    if _is_root():
        return Path("/var/cache/tether/search")
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(xdg) / "tether" / "search"


class UnsafeSearchCache(ClusterError):
    """The search cache (or a dir above or in it) could be changed by another user: what it
    holds is run as root, so it is refused."""


def _unsafe_mode(st: os.stat_result) -> bool:
    """Writable by others, or by a group other than root's (root's group is root's own)."""
    return bool(st.st_mode & 0o002 or (st.st_mode & 0o020 and st.st_gid != 0))


def _cache_refusal(path: Path, why: str) -> UnsafeSearchCache:
    return UnsafeSearchCache(
        f"refusing the search server cache {path}: it {why}, so another user could put programs "
        "there that Tether would run. Set TETHER_SEARCH_CACHE to a dir of its own that Tether "
        f"makes (e.g. {'/var/cache/tether/search' if _is_root() else '~/.cache/tether/search'}"
        ", or a new dir below /tmp), or remove the dir so that Tether makes it again")


def _check_owned(path: Path, *, below: Path) -> None:
    """`path` (in the cache `below`), if it exists: not a symlink, ours, and writable by nobody
    else."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISLNK(st.st_mode):
        raise _cache_refusal(below, f"holds {path}, a symlink")
    if st.st_uid != os.geteuid():
        raise _cache_refusal(below, f"holds {path}, which belongs to uid {st.st_uid}, not to "
                                    f"the user Tether runs as (uid {os.geteuid()})")
    if _unsafe_mode(st):
        raise _cache_refusal(below, f"holds {path}, which others can write")


def _check_tree(path: Path, *, below: Path) -> None:
    """`path` and everything in it: ours and writable by nobody else (symlinks: ours)."""
    _check_owned(path, below=below)
    for dirpath, dirs, files in os.walk(path):
        for name in dirs + files:
            entry = os.path.join(dirpath, name)
            st = os.lstat(entry)
            if st.st_uid != os.geteuid() or (not stat.S_ISLNK(st.st_mode) and _unsafe_mode(st)):
                raise _cache_refusal(below, f"holds {entry}, which belongs to uid {st.st_uid} or "
                                            "others can write")


def _secure_cache(root: Path) -> Path:
    """The cache root made if missing (0755, like the dirs above it Tether makes) and checked:
    its real path returned, every dir above it root's or ours and replaceable by nobody else
    (writable by others only when sticky, like /tmp, where others cannot rename our entries), the
    root itself and the dirs Tether uses in it (`zips/`, `m2/`, `dist/` and each release dir)
    ours and writable by nobody else. What the cache holds is run by root (Maven's plugins, the
    distribution's tools), so a dir someone else could write is refused, never repaired: a
    shared dir like /tmp is no cache root, a dir of its own below it is."""
    _make_cache_dir(root)
    real = Path(os.path.realpath(root))
    for parent in reversed(real.parents):
        st = os.lstat(parent)
        if st.st_uid not in (0, os.geteuid()):
            raise _cache_refusal(real, f"is below {parent}, which belongs to uid {st.st_uid}")
        if _unsafe_mode(st) and not st.st_mode & stat.S_ISVTX:
            raise _cache_refusal(real, f"is below {parent}, which others can write (and so "
                                       "replace what is in it)")
    st = os.lstat(real)
    if not stat.S_ISDIR(st.st_mode):
        raise _cache_refusal(real, "is not a directory")
    if st.st_mode & stat.S_ISVTX:
        raise _cache_refusal(real, "is a shared sticky dir (like /tmp itself)")
    _check_owned(real, below=real)
    for name in ("zips", "m2", "dist"):
        _check_owned(real / name, below=real)
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(real / "dist"):
            _check_owned(Path(entry.path), below=real)
    return real


@contextlib.contextmanager
def _locked(root: Path, name: str) -> Iterator[None]:
    """One process at a time fetches or unpacks a release (others wait, then find it done)."""
    _make_cache_dir(root)
    fd = os.open(root / f".lock-{name}", os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_APPEND,
                 0o644)
    with os.fdopen(fd, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _make_cache_dir(path: Path) -> None:
    """Make a cache dir (and its missing parents) that the service user can traverse (0755). A
    dir that exists is left as it is (`_secure_cache` refuses one others can write): if the
    service user cannot reach it, starting a server says so."""
    missing = [p for p in (path, *path.parents) if not p.exists()]
    path.mkdir(parents=True, exist_ok=True)
    for made in missing:
        with contextlib.suppress(OSError):
            made.chmod(0o755)


def _zip_path(root: Path, coordinates: str) -> Path:
    _group, artifact, version, ext = coordinates.split(":")
    return root / "zips" / f"{artifact}-{version}.{ext}"


def _maven_env() -> dict[str, str]:
    env = dict(os.environ)
    with contextlib.suppress(ClusterError):
        env["JAVA_HOME"] = str(java_home())
    return env


def fetch(release: Release, root: Path | None = None,
          artifacts: tuple[str, ...] | None = None) -> list[Path]:
    """Download the release's zips (or only `artifacts` of them) from Maven Central into
    `root/zips` (once). Maven checks every download's checksum (`-C`: a mismatch fails)."""
    root = _secure_cache(root or cache_root())
    artifacts = release.artifacts if artifacts is None else artifacts
    paths = [_zip_path(root, coordinates) for coordinates in artifacts]
    for path in paths:
        _check_owned(path, below=root)
    if all(path.is_file() for path in paths):
        return paths
    mvn = shutil.which("mvn")
    if mvn is None:
        raise ClusterError(f"Maven (`mvn`) is missing, so Tether cannot fetch {release}: "
                           f"{MAVEN_HINT}")
    with _locked(root, release.name):
        for coordinates, path in zip(artifacts, paths, strict=True):
            if path.is_file():
                continue
            _make_cache_dir(path.parent)
            _check_owned(path.parent, below=root)
            repo = root / "m2"
            _check_tree(repo, below=root)  # Maven runs the plugins it finds there
            started = time.monotonic()
            log.info("fetching %s from Maven Central into %s", coordinates, path.parent)
            try:
                proc = subprocess.run(
                    [mvn, "-q", "-B", "-C", "dependency:copy", f"-Dmaven.repo.local={repo}",
                     f"-Dartifact={coordinates}", f"-DoutputDirectory={path.parent}"],
                    capture_output=True, text=True, check=False, timeout=_MAVEN_TIMEOUT,
                    cwd=str(root), stdin=subprocess.DEVNULL, env=_maven_env())
            except subprocess.TimeoutExpired:
                raise ClusterError(f"fetching {coordinates} from Maven Central took more than "
                                   f"{_MAVEN_TIMEOUT:.0f}s: check the network, then retry "
                                   "(scripts/servers/search.sh)") from None
            if proc.returncode != 0 or not path.is_file():
                raise ClusterError(
                    f"could not fetch {coordinates} from Maven Central (mvn exit "
                    f"{proc.returncode}): {_tail(proc.stdout + proc.stderr, 5)}; check the "
                    "network (or Maven's proxy settings), then retry")
            # the copy in Maven's own repository is not needed again: keep the disk for one
            group, artifact, version, _ext = coordinates.split(":")
            shutil.rmtree(repo.joinpath(*group.split("."), artifact, version),
                          ignore_errors=True)
            log.info("fetched %s in %.1fs", coordinates, time.monotonic() - started)
    return paths


def _extract(archive: Path, target: Path) -> None:
    """Unzip keeping the executable bits (zipfile alone drops them); everything readable by all
    and owned by whoever unpacks (root): the servers only read it."""
    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            mode = (info.external_attr >> 16) & 0o170777
            dest = Path(zf.extract(info, target))
            if stat.S_ISLNK(mode):
                link_target = zf.read(info).decode()
                dest.unlink()
                os.symlink(link_target, dest)
            elif info.is_dir():
                dest.chmod(0o755)
            else:
                dest.chmod(0o755 if mode & 0o111 else 0o644)


def _complete(release: Release, target: Path) -> bool:
    """The unpacked release has its program and every module `module_artifacts` adds."""
    return (target / release.program).is_file() and all(
        _module_jar(target, coordinates).is_file() for coordinates in release.module_artifacts)


def _module_jar(home: Path, coordinates: str) -> Path:
    _group, artifact, version, ext = coordinates.split(":")
    return home / "modules" / artifact / f"{artifact}-{version}.{ext}"


def distribution(release: Release, root: Path | None = None) -> Path:
    """The release unpacked once (fetched first if needed), with OpenSearch's security plugin
    and analysis-common module installed: `root/dist/<release>`. Unpacked into a temporary dir
    renamed at the end, so an interrupted unpack never leaves half a distribution behind. A
    release unpacked before Tether added the module (a cache of an earlier version) gets the
    module added in place: only its jar is fetched."""
    root = _secure_cache(root or cache_root())
    target = root / "dist" / release.name
    if _complete(release, target):
        _check_tree(target, below=root)
        return target
    if (target / release.program).is_file():
        _check_tree(target, below=root)
        jars = fetch(release, root, release.module_artifacts)
        with _locked(root, release.name):
            if not _complete(release, target):
                for coordinates, jar in zip(release.module_artifacts, jars, strict=True):
                    _install_analysis_module(target, coordinates, jar)
                log.info("added the modules %s to %s", ", ".join(release.module_artifacts),
                         target)
            for jar in jars:
                jar.unlink(missing_ok=True)
        return target
    zips = fetch(release, root)
    with _locked(root, release.name):
        if _complete(release, target):
            _check_tree(target, below=root)
            return target
        started = time.monotonic()
        _make_cache_dir(target.parent)
        _check_owned(target.parent, below=root)
        staging = Path(tempfile.mkdtemp(prefix=f".{release.name}-", dir=target.parent))
        try:
            _extract(zips[0], staging)
            unpacked = staging / f"{release.flavour}-{release.version}"
            if not (unpacked / release.program).is_file():
                raise ClusterError(f"{zips[0]} holds no {release.program}: delete it and fetch "
                                   "it again")
            if release.opensearch:
                _install_security_plugin(unpacked, zips[1])
            module_jars = zips[len(zips) - len(release.module_artifacts):]
            for coordinates, jar in zip(release.module_artifacts, module_jars, strict=True):
                _install_analysis_module(unpacked, coordinates, jar)
            unpacked.chmod(0o755)
            if target.exists():
                shutil.rmtree(target)  # a dir without the program: left by a broken copy
            unpacked.rename(target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        for path in zips:  # unpacked for good: the disk is worth more than a second unpack
            path.unlink(missing_ok=True)
        log.info("unpacked %s into %s in %.1fs", release, target, time.monotonic() - started)
    return target


def _install_security_plugin(home: Path, plugin_zip: Path) -> None:
    """`opensearch-plugin install` of the security plugin into the unpacked release `home` (in
    its staging dir), run as the service account when we are root: the tool and the zip are
    programs from the network, never run as root. The release is the service account's while
    the tool runs, then root's again, read-only for everyone else."""
    env = _base_env(home)
    env.update(OPENSEARCH_PATH_CONF=str(home / "config"), OPENSEARCH_JAVA_HOME=str(java_home()))
    account = _run_as()
    if account is not None:
        home.parent.chmod(0o711)  # the staging dir: traversable, not listable
        _chown_tree(home, account)
    try:
        proc = subprocess.run(
            [str(home / "bin" / "opensearch-plugin"), "install", "--batch",
             plugin_zip.resolve().as_uri()],
            capture_output=True, text=True, check=False, timeout=300, env=env, cwd="/",
            stdin=subprocess.DEVNULL, **_ids(account))
    finally:
        if account is not None:
            _take_back(home)
            home.parent.chmod(0o700)
    if proc.returncode != 0:
        raise ClusterError(f"installing the OpenSearch security plugin failed: "
                           f"{_tail(proc.stdout + proc.stderr, 8)}")
    for dirpath, dirs, files in os.walk(home):
        os.chmod(dirpath, 0o755)  # noqa: S103 - read-only program files for the servers
        for name in dirs + files:
            entry = os.path.join(dirpath, name)
            st = os.lstat(entry)
            if stat.S_ISREG(st.st_mode):  # readable by all, writable and set-id by nobody
                os.chmod(entry, (st.st_mode & 0o755) | 0o444)


def _take_back(path: Path) -> None:
    """Give `path` and everything in it to us (root) again, children before their dir: a dir
    becomes ours only once nothing in it can change any more (its old owner could otherwise swap
    an entry for a symlink while we walk)."""
    uid, gid = os.geteuid(), os.getegid()
    for dirpath, dirs, files in os.walk(path, topdown=False):
        for name in dirs + files:
            os.chown(os.path.join(dirpath, name), uid, gid, follow_symlinks=False)
    os.chown(path, uid, gid, follow_symlinks=False)


def _install_analysis_module(home: Path, coordinates: str, jar: Path) -> None:
    """Add a module of the full distribution to an unpacked release: `modules/<name>/` with the
    module's jar and the plugin descriptor the full distribution ships beside it. Not through
    `opensearch-plugin install`: it refuses a system module's name, and there is no zip.

    The upstream descriptor extends lang-painless (`extended.plugins=lang-painless`), which the
    integ-test zip lacks too; extending nothing, the module loads all the same, without only
    what needs Painless (scripted `condition` and `predicate_token_filter` filters). Made in a
    staging dir beside the release and renamed into place: the server loads every dir in
    `modules/`, so a half-made one would stop it starting."""
    _group, artifact, version, _ext = coordinates.split(":")
    try:
        with zipfile.ZipFile(jar) as zf:
            classes = set(zf.namelist())
    except (OSError, zipfile.BadZipFile) as exc:
        raise ClusterError(f"{jar} is not a readable jar ({exc}): delete it and fetch it "
                           "again") from None
    classname = next((c for c in _ANALYSIS_CLASSES if c.replace(".", "/") + ".class" in classes),
                     None)
    if classname is None:
        raise ClusterError(f"{jar} holds none of the plugin classes "
                           f"{', '.join(_ANALYSIS_CLASSES)}: not OpenSearch's {artifact} module")
    staging = Path(tempfile.mkdtemp(prefix=f".{artifact}-", dir=home.parent))
    try:
        shutil.copyfile(jar, staging / jar.name)
        (staging / "plugin-descriptor.properties").write_text(
            "description=Adds \"built in\" analyzers to OpenSearch.\n"
            f"version={version}\nname={artifact}\nclassname={classname}\n"
            f"java.version=11\nopensearch.version={version}\ncustom.foldername=\n"
            "extended.plugins=\nhas.native.controller=false\n")
        for path in staging.iterdir():
            path.chmod(0o644)
        staging.chmod(0o755)
        module = home / "modules" / artifact
        if module.exists():
            shutil.rmtree(module)  # another version's, or left by a broken copy
        staging.rename(module)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _base_env(home: Path) -> dict[str, str]:
    """A predictable environment: none of the caller's ES_*, OPENSEARCH_* or JAVA_* settings."""
    return {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8",
            "HOME": str(home)}


# -- secrets at init ---------------------------------------------------------------------------


def _es_password_hash(password: str) -> str:
    """A hash Elasticsearch's file realm reads (its `{PBKDF2}` format: PBKDF2-HMAC-SHA512,
    10,000 rounds, 32-byte salt and key, base64)."""
    salt = secrets.token_bytes(32)
    rounds = 10000
    key = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, rounds, 32)
    return (f"{{PBKDF2}}{rounds}${base64.b64encode(salt).decode()}$"
            f"{base64.b64encode(key).decode()}")


def _opensearch_password_hash(dist: Path, password: str) -> str:
    """A bcrypt hash from the security plugin's own tool (the password passes through its
    environment, never its command line), run as the service account when we are root: a
    program of the distribution, never run as root."""
    env = _base_env(dist)
    env.update(JAVA_HOME=str(java_home()), TETHER_SEARCH_ADMIN_PASSWORD=password)
    proc = subprocess.run(
        ["bash", str(dist / "plugins/opensearch-security/tools/hash.sh"), "-env",
         "TETHER_SEARCH_ADMIN_PASSWORD"],
        capture_output=True, text=True, check=False, timeout=120, env=env, cwd="/",
        stdin=subprocess.DEVNULL, **_ids(_run_as()))
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines or not lines[-1].startswith("$2"):
        raise ClusterError(f"hashing the admin password with OpenSearch's hash.sh failed "
                           f"(exit {proc.returncode}): {_tail(proc.stderr, 5)}")
    return lines[-1].strip()


NODE_DN = "CN=tether-search-node,O=Tether"


def _transport_certificates() -> tuple[bytes, bytes, bytes]:
    """(CA certificate, node certificate, node key) in PEM, for transport TLS. The CA's key is
    never written: once it signed the node's certificate nobody can sign another."""
    now = datetime.datetime.now(datetime.UTC)
    not_after = now + datetime.timedelta(days=3650)
    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ca_name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Tether"),
                         x509.NameAttribute(NameOID.COMMON_NAME, "tether-search-ca")])
    ca_cert = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
               .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(not_after)
               .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
               .add_extension(x509.KeyUsage(
                   digital_signature=False, content_commitment=False, key_encipherment=False,
                   data_encipherment=False, key_agreement=False, key_cert_sign=True,
                   crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
               .sign(ca_key, hashes.SHA256()))
    node_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    node_name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Tether"),
                           x509.NameAttribute(NameOID.COMMON_NAME, "tether-search-node")])
    node_cert = (x509.CertificateBuilder().subject_name(node_name).issuer_name(ca_name)
                 .public_key(node_key.public_key()).serial_number(x509.random_serial_number())
                 .not_valid_before(now - datetime.timedelta(minutes=5))
                 .not_valid_after(not_after)
                 .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                 .add_extension(x509.KeyUsage(
                     digital_signature=True, content_commitment=False, key_encipherment=True,
                     data_encipherment=False, key_agreement=False, key_cert_sign=False,
                     crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
                 .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                       ExtendedKeyUsageOID.CLIENT_AUTH]),
                                critical=False)
                 .add_extension(x509.SubjectAlternativeName([
                     x509.DNSName("localhost"),
                     x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
                 .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    return (ca_cert.public_bytes(pem), node_cert.public_bytes(pem),
            node_key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                   serialization.NoEncryption()))


def _write_private(path: Path, data: str | bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)


def _yaml(value: object) -> str:
    """A YAML scalar or flow list (JSON is valid YAML)."""
    return json.dumps(value)


# -- the server --------------------------------------------------------------------------------


class SearchServer:
    """One OpenSearch or Elasticsearch node with its home dir: `config/` (its own copy of the
    distribution's config, with the release's name in `config/tether-release`), `data/`,
    `logs/`, `tmp/`, the pid file and the launcher's output. HTTP on `host:port`, transport on
    `host:transport_port` (0: a free port the server picks at each start)."""

    def __init__(self, release: Release | str, home: Path, port: int, *,
                 transport_port: int = 0, host: str = "127.0.0.1",
                 heap_mb: int = DEFAULT_HEAP_MB) -> None:
        self.release = parse_release(release) if isinstance(release, str) else release
        self.home = Path(os.path.abspath(home))
        self.port = int(port)
        self.transport_port = int(transport_port)
        self.host = host
        self.heap_mb = int(heap_mb)

    def __repr__(self) -> str:
        return f"SearchServer({self.release.name!r}, {str(self.home)!r}, port={self.port})"

    # -- paths --

    @property
    def config_dir(self) -> Path:
        return self.home / "config"

    @property
    def data_dir(self) -> Path:
        return self.home / "data"

    @property
    def logs_dir(self) -> Path:
        return self.home / "logs"

    @property
    def pid_file(self) -> Path:
        return self.home / "server.pid"

    @property
    def launcher_log(self) -> Path:
        """What the launcher printed (start-up errors before the server's own log exists)."""
        return self.home / "server.out"

    @property
    def log_file(self) -> Path:
        return self.logs_dir / f"{CLUSTER_NAME}.log"

    @property
    def _run_file(self) -> Path:
        """The ports the running server was launched with (the command line of Elasticsearch
        8's server JVM does not carry its settings)."""
        return self.home / "server.run"

    @property
    def _marker(self) -> Path:
        return self.config_dir / "tether-release"

    def admin_url(self, password: str) -> str:
        return f"http://{ADMIN_USER}:{quote(password, safe='')}@{self.host}:{self.port}"

    @property
    def url(self) -> str:
        """The HTTP address without credentials."""
        return f"http://{self.host}:{self.port}"

    def initialized(self) -> bool:
        return self._marker.is_file()

    def initialized_release(self) -> Release | None:
        """The release the home was initialised with (a home keeps its release)."""
        try:
            return parse_release(_read_safely(self._marker, limit=256).decode("utf-8", "replace"))
        except (OSError, ClusterError):
            return None

    # -- init --

    def _check_traversable(self, path: Path, account: pwd.struct_passwd | None) -> None:
        if account is None:
            return
        parent = first_untraversable(path, account)
        if parent is not None:
            raise ClusterError(
                f"search servers run as the user {account.pw_name!r}, which cannot reach "
                f"{path} ({parent} is not traversable for it): choose a directory the "
                f"{account.pw_name} user can reach (e.g. under /var/lib/tether)")

    def init(self, password: str) -> None:
        """Make the home with the admin `tether_admin` and `password` (the only user), transport
        certificates of its own, the release's distribution fetched and unpacked if needed. The
        config is written into a staging dir renamed at the end, so an interrupted init never
        leaves a half-made home behind. No-op when already initialised."""
        if self.initialized():
            return
        if self.data_dir.exists() and any(self.data_dir.iterdir()):
            raise ClusterError(f"{self.data_dir} is not empty and {self.home} is not an "
                               "initialised search server: remove it or choose another dir")
        release = self.release
        dist = distribution(release)
        java_home()
        account = _run_as()
        self.home.mkdir(parents=True, exist_ok=True)
        if self.home.is_symlink():
            raise ClusterError(f"{self.home} is a symlink: choose a directory for the server")
        self._check_traversable(self.home, account)
        self._check_traversable(dist / release.program, account)
        # ours while we write in it (a home left by an earlier init may be the service user's,
        # who could swap what we write for symlinks): the service user gets it at the end
        os.chown(self.home, os.geteuid(), os.getegid(), follow_symlinks=False)
        self.home.chmod(0o750)
        staging = self.home / "config.init"
        _remove(staging)
        shutil.copytree(dist / "config", staging, symlinks=True)
        try:
            self._write_config(staging, dist, password)
            for path in (staging, *staging.rglob("*")):
                if not path.is_symlink():
                    path.chmod(0o700 if path.is_dir() else 0o600)
            _remove(self.config_dir)  # no marker: a half copy
            staging.rename(self.config_dir)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        _chown_tree(self.config_dir, account)  # once in place: nothing of it changes after
        for name in ("data", "logs", "tmp"):
            path = self.home / name
            path.mkdir(mode=0o750, exist_ok=True)
            _chown(path, account)
        _chown(self.home, account)
        log.info("initialised %s search server in %s", release, self.home)

    def _write_config(self, conf: Path, dist: Path, password: str) -> None:
        release = self.release
        ca, cert, key = _transport_certificates()
        (conf / "certs").mkdir()
        _write_private(conf / "certs" / "ca.pem", ca)
        _write_private(conf / "certs" / "node.pem", cert)
        _write_private(conf / "certs" / "node-key.pem", key)
        settings: dict[str, object] = {
            "cluster.name": CLUSTER_NAME,
            "node.name": CLUSTER_NAME,
            "path.data": str(self.data_dir),
            "path.logs": str(self.logs_dir),
            "network.host": self.host,
            "discovery.type": "single-node",
        }
        if release.opensearch:
            settings.update({
                "plugins.security.ssl.transport.pemcert_filepath": "certs/node.pem",
                "plugins.security.ssl.transport.pemkey_filepath": "certs/node-key.pem",
                "plugins.security.ssl.transport.pemtrustedcas_filepath": "certs/ca.pem",
                "plugins.security.ssl.transport.enforce_hostname_verification": False,
                "plugins.security.ssl.http.enabled": False,
                "plugins.security.allow_default_init_securityindex": True,
                "plugins.security.nodes_dn": [NODE_DN],
                "plugins.security.restapi.roles_enabled": ["all_access"],
                "plugins.security.system_indices.enabled": True,
            })
            security = conf / "opensearch-security"
            hashed = _opensearch_password_hash(dist, password)
            _write_private(security / "internal_users.yml", (
                "_meta:\n  type: \"internalusers\"\n  config_version: 2\n"
                f"{ADMIN_USER}:\n  hash: {_yaml(hashed)}\n  reserved: true\n"
                "  backend_roles:\n  - \"admin\"\n  description: \"Tether's admin\"\n"))
            _write_private(security / "roles_mapping.yml", (
                "_meta:\n  type: \"rolesmapping\"\n  config_version: 2\n"
                "all_access:\n  reserved: true\n  backend_roles:\n  - \"admin\"\n"
                f"  users:\n  - {_yaml(ADMIN_USER)}\n"
                "  description: \"Maps Tether's admin to all_access\"\n"))
        else:
            settings.update({
                "xpack.security.enabled": True,
                "xpack.security.http.ssl.enabled": False,
                "xpack.security.transport.ssl.enabled": True,
                "xpack.security.transport.ssl.verification_mode": "certificate",
                "xpack.security.transport.ssl.client_authentication": "required",
                "xpack.security.transport.ssl.key": "certs/node-key.pem",
                "xpack.security.transport.ssl.certificate": "certs/node.pem",
                "xpack.security.transport.ssl.certificate_authorities": ["certs/ca.pem"],
            })
            _write_private(conf / "users", f"{ADMIN_USER}:{_es_password_hash(password)}\n")
            _write_private(conf / "users_roles", f"superuser:{ADMIN_USER}\n")
        (conf / release.config_name).write_text(
            "# written by Tether (tether.servers.search)\n"
            + "".join(f"{name}: {_yaml(value)}\n" for name, value in settings.items()))
        self._write_jvm_options(conf / "jvm.options")
        (conf / "tether-release").write_text(release.name + "\n")

    def _write_jvm_options(self, path: Path) -> None:
        """The distribution's JVM options with paths in this home (they are relative to the
        distribution's dir, which the servers may not write), small GC logs, no heap dumps
        (one is as large as the heap, per server)."""
        lines = []
        for line in path.read_text().splitlines():
            if "HeapDumpOnOutOfMemoryError" in line or "HeapDumpPath" in line:
                continue
            line = line.replace("file=logs/", f"file={self.logs_dir}/")
            line = line.replace("-Xloggc:logs/", f"-Xloggc:{self.logs_dir}/")
            line = line.replace("ErrorFile=logs/", f"ErrorFile={self.logs_dir}/")
            line = line.replace("filecount=32,filesize=64m", "filecount=2,filesize=8m")
            lines.append(line)
        path.write_text("\n".join(lines) + "\n")

    # -- the process --

    @property
    def _tmpdir_property(self) -> str:
        """The JVM property on the server's command line that names this home (the server JVM
        of Elasticsearch 8 has no path.conf property there; every flavour has its tmpdir)."""
        return f"-Djava.io.tmpdir={self.home / 'tmp'}"

    def _is_ours(self, pid: int) -> bool:
        """This server's JVM: its main class, this home's tmp dir, and run by the server's user
        (anyone can start a process with such a command line)."""
        cmdline = _cmdline(pid)
        if not (self._tmpdir_property in cmdline
                and any(arg.endswith(self.release.main_class) for arg in cmdline)):
            return False
        try:
            owner = os.stat(f"/proc/{pid}").st_uid
        except OSError:
            return False
        return owner == _server_uid() and _pid_alive(pid)

    def _serves_port(self, pid: int) -> bool:
        """Whether the sockets listening on the server's port (on its host or any address) are
        all the JVM `pid`'s, and there is one: what answers there is the server, not someone
        holding the port (who would be sent the admin's password)."""
        listening = _listening_inodes(self.host, self.port)
        return bool(listening) and listening <= _socket_inodes(pid)

    def _port_taken(self) -> PortTaken:
        return PortTaken(f"port {self.port} on {self.host} is taken by another program (not the "
                         f"{self.release} server in {self.home}): free it or choose another "
                         "port")

    def pid(self) -> int | None:
        """The pid of the live server on this home, if any: from the pid file when /proc says
        it is this server's JVM (never a recycled pid), else by its command line (a server
        still starting, or one whose pid file is gone)."""
        try:
            pid: int | None = int(_read_safely(self.pid_file, limit=64).split()[0])
        except (OSError, ValueError, IndexError):
            pid = None
        if pid is not None and self._is_ours(pid):
            return pid
        try:
            entries = [e.name for e in os.scandir("/proc") if e.name.isdigit()]
        except OSError:
            return None
        for name in entries:
            if self._is_ours(int(name)):
                return int(name)
        return None

    def is_running(self) -> bool:
        return self.pid() is not None

    def _running_port(self) -> int | None:
        """The HTTP port the running server was launched with (from the run file, which every
        launch writes and every stop removes)."""
        try:
            run = json.loads(_read_safely(self._run_file, limit=4096))
        except (OSError, ValueError):
            return None
        if isinstance(run, dict) and isinstance(run.get("port"), int):
            return int(run["port"])
        return None

    def rss_bytes(self) -> int | None:
        """The resident memory of the running server."""
        pid = self.pid()
        if pid is None:
            return None
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        except (OSError, ValueError, IndexError):
            return None
        return None

    def _env(self) -> dict[str, str]:
        prefix = self.release.env_prefix
        jdk = str(java_home())
        env = _base_env(self.home)
        env.update({
            "JAVA_HOME": jdk,
            f"{prefix}_JAVA_HOME": jdk,
            f"{prefix}_PATH_CONF": str(self.config_dir),
            f"{prefix}_JAVA_OPTS": " ".join(filter(None, (
                f"-Xms{self.heap_mb}m -Xmx{self.heap_mb}m",
                os.environ.get("TETHER_SEARCH_JAVA_OPTS", "").strip()))),
            f"{prefix}_TMPDIR": str(self.home / "tmp"),
        })
        return env

    def start(self, timeout: float = 180.0, *, password: str | None = None) -> None:
        """Start the server on its port (no-op when it runs there already) and wait until it
        answers: HTTP up and its security in force (an anonymous request is refused with 401).
        With `password`, also wait for the cluster health to be at least yellow."""
        if not self.initialized():
            raise ClusterError(f"{self.home} is not an initialised search server: "
                               "initialise it first")
        have = self.initialized_release()
        if have is not None and have != self.release:
            raise ClusterError(f"{self.home} holds a {have} server, not {self.release}")
        deadline = time.monotonic() + timeout
        pid = self.pid()
        if pid is not None and self._running_port() == self.port:
            if self._wait_ready(pid, deadline, self.log_size()):
                if password is not None:
                    self.wait_healthy(password, max(1.0, deadline - time.monotonic()))
                return
            pid = self.pid()  # it died meanwhile: start it again
        if pid is not None:
            log.info("the search server in %s runs on another port than %s: restarting it",
                     self.home, self.port)
            self.stop()
        if _listening_inodes(self.host, self.port) or (
                self.transport_port and _listening_inodes(self.host, self.transport_port)):
            raise self._port_taken()
        dist = distribution(self.release)
        account = _run_as()
        self._check_traversable(self.home, account)
        started = time.monotonic()
        for attempt in (1, 2):
            offset = self._launch(dist, account)
            if self._wait_ready(None, deadline, offset):
                break
            tail = self.log_tail(since=offset)
            silent = not self._log_since(self.log_file, offset).strip()
            self.stop()
            if "BindException" in tail or "Address already in use" in tail:
                raise PortTaken(f"the {self.release} server in {self.home} did not start: port "
                                f"{self.port} (or its transport port) on {self.host} is taken "
                                "by another program; free it or choose another port")
            if attempt == 1 and silent and time.monotonic() < deadline:
                # its JVM went away before writing a line of its own log (seen once in a long
                # test run, not reproducible): one more launch before giving up
                log.warning("the %s server in %s went away while starting, before it logged "
                            "anything; launching it once more. The launcher's output:\n%s",
                            self.release, self.home, tail)
                continue
            raise ClusterError(f"the {self.release} server in {self.home} did not start on "
                               f"{self.host}:{self.port}; its log ends with:\n{tail}")
        log.info("%s started on %s:%s in %.1fs (%s)", self.release, self.host, self.port,
                 time.monotonic() - started, self.home)
        if password is not None:
            self.wait_healthy(password, max(1.0, deadline - time.monotonic()))

    def _launch(self, dist: Path, account: pwd.struct_passwd | None) -> int:
        """Launch the server in the background; the size its log had before (where this
        start's lines begin)."""
        offset = self.log_size()
        self.pid_file.unlink(missing_ok=True)  # stale, after a crash
        self._run_file.unlink(missing_ok=True)
        args = [str(dist / self.release.program), "-d", "-p", str(self.pid_file),
                f"-Ehttp.port={self.port}", f"-Etransport.port={self.transport_port}"]
        header = (f"--- starting {self.release} on {self.host}:{self.port} at "
                  f"{datetime.datetime.now(datetime.UTC):%Y-%m-%dT%H:%M:%SZ}")
        # the run file is written before the launch: a server still starting when this call
        # gives up is found running on its port by the next start, which waits for it instead
        # of restarting it
        run = json.dumps({"port": self.port, "transport_port": self.transport_port})
        # `sh` starts the launcher in the background and exits at once: the server is nobody's
        # child, in a session of its own. `-d` keeps the launcher's stdout open until the node
        # runs: it goes to a file, never to a pipe someone waits on. Everything written in the
        # home is written by `sh`, as the service user who owns the home (root writing there
        # would follow the symlinks that user can put in place of these files).
        script = ('umask 027; printf "%s\\n" "$2" >>"$0" && printf "%s" "$3" >"$1" || exit 1; '
                  'shift 3; "$@" </dev/null >>"$0" 2>&1 &')
        launcher = subprocess.run(
            ["/bin/sh", "-c", script, str(self.launcher_log), str(self._run_file), header, run,
             *args],
            check=False, timeout=30, env=self._env(), cwd=str(self.home), capture_output=True,
            text=True, stdin=subprocess.DEVNULL, start_new_session=True, **_ids(account))
        if launcher.returncode != 0:
            raise ClusterError(f"could not launch the search server in {self.home}: "
                               f"{_tail(launcher.stderr, 3)}")
        return offset

    def _wait_ready(self, pid: int | None, deadline: float, offset: int) -> bool:
        """Wait until the server (pid, or the one being started) refuses an anonymous request
        with 401: True. False when it is gone (it failed, or was crashing); ClusterError at the
        deadline."""
        launched = time.monotonic()
        while time.monotonic() < deadline:
            current = self.pid() if pid is None else (pid if _pid_alive(pid) else None)
            if current is None:
                # the launcher (a shell script, then Elasticsearch 8's launcher JVM) may still
                # be on its way to the server's JVM
                if pid is not None or (time.monotonic() - launched > 2
                                       and not self._launching()):
                    return False
            elif self._serves_port(current) and self._answers_401():
                return True
            time.sleep(0.25)
        raise ClusterError(f"the {self.release} server in {self.home} runs but does not answer "
                           f"on {self.host}:{self.port} after the timeout; its log ends "
                           f"with:\n{self.log_tail(since=offset)}")

    def _launching(self) -> bool:
        """Whether a launcher of this server is still running (its command line names the pid
        file or the config dir)."""
        marks = (str(self.pid_file), f"{self.release.conf_property}{self.config_dir}",
                 self._tmpdir_property)
        try:
            entries = [e.name for e in os.scandir("/proc") if e.name.isdigit()]
        except OSError:
            return False
        for name in entries:
            cmdline = _cmdline(int(name))
            if any(arg in marks for arg in cmdline) and _pid_alive(int(name)):
                return True
        return False

    def _answers_401(self) -> bool:
        try:
            response = httpx.get(self.url + "/", timeout=_HTTP_TIMEOUT)
        except httpx.HTTPError:
            return False
        return response.status_code == 401

    def wait_healthy(self, password: str, timeout: float = 120.0) -> None:
        """Wait until the admin sees the cluster health yellow or green. The password is only
        sent to the server's own JVM: PortTaken when another program listens on its port."""
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            pid = self.pid()
            if pid is None:
                raise ClusterError(f"the {self.release} server in {self.home} is not running: "
                                   "start it")
            if not self._serves_port(pid):
                if _listening_inodes(self.host, self.port):
                    raise self._port_taken()
                last = "not listening"
                time.sleep(0.5)
                continue
            try:
                response = httpx.get(
                    self.url + "/_cluster/health",
                    params={"wait_for_status": "yellow", "timeout": "2s"},
                    auth=(ADMIN_USER, password), timeout=_HTTP_TIMEOUT + 2)
            except httpx.HTTPError as exc:
                last = type(exc).__name__
            else:
                if response.status_code == 401:
                    raise ClusterError(f"the {self.release} server in {self.home} refuses the "
                                       "admin password (it was set at its first init)")
                if response.status_code == 200 and response.json().get("status") in (
                        "yellow", "green"):
                    return
                last = f"HTTP {response.status_code}"
            time.sleep(0.5)
        raise ClusterError(f"the {self.release} server in {self.home} is not healthy after "
                           f"{timeout:.0f}s ({last}); its log ends with:\n{self.log_tail()}")

    def stop(self, timeout: float = 60.0) -> None:
        """Clean shutdown (SIGTERM); SIGKILL after `timeout`. No-op when stopped."""
        pid = self.pid()
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            if not _wait_dead(pid, timeout):
                log.warning("the search server in %s did not stop in %.0fs: killing it",
                            self.home, timeout)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                if not _wait_dead(pid, 10):
                    raise ClusterError(f"the search server in {self.home} (pid {pid}) did not "
                                       "stop")
            log.info("%s stopped (%s)", self.release, self.home)
        self.pid_file.unlink(missing_ok=True)
        self._run_file.unlink(missing_ok=True)

    def destroy(self) -> None:
        """Stop the server and delete its home for good."""
        self.stop()
        if self.home.exists():
            shutil.rmtree(self.home)

    # -- logs --

    def log_size(self) -> int:
        try:
            return os.lstat(self.log_file).st_size
        except OSError:
            return 0

    def _log_since(self, path: Path, offset: int) -> str:
        """The log from `offset` (its last 64 KB at most): read only when it is a regular file of
        the server's user, never through a symlink (the home is that user's: it could make the
        log a link to a file only root may read)."""
        account = _run_as()
        owner = account.pw_uid if account is not None else os.geteuid()
        try:
            size = os.lstat(path).st_size
            data = _read_safely(path, limit=max(0, min(65536, size - offset)), owners=(owner,))
        except OSError:
            return ""
        return data.decode("utf-8", "replace")

    def log_tail(self, lines: int = 15, since: int = 0) -> str:
        """The end of the server's log (or of the launcher's output when the server wrote
        nothing since `since`), without lines that mention a password, hash or secret; Java
        stack frames are left out."""
        text = self._log_since(self.log_file, since)
        if not text.strip():
            text = self._log_since(self.launcher_log, 0)
        kept = [line for line in text.splitlines() if not line.lstrip().startswith("at ")]
        return _tail("\n".join(kept), lines)


class PrivateSearchServers:
    """Dedicated search servers, one per `--private` instance, in `base_dir/<names.base>`. The
    release is TETHER_SEARCH_PRIVATE's (default OpenSearch 2.19.4) for new servers; a server
    keeps the release it was made with. Transport ports are picked by the server at each start."""

    kind = "elasticsearch"

    def __init__(self, base_dir: Path, release: Release | str | None = None) -> None:
        self.base_dir = Path(base_dir)
        if release is None:
            self.release = private_release()
        else:
            self.release = parse_release(release) if isinstance(release, str) else release

    def server(self, names: ResourceNames, port: int) -> SearchServer:
        if not _NAME_RE.fullmatch(names.base):
            raise ClusterError(f"refusing the resource name {names.base!r}: not a plain "
                               "identifier")
        server = SearchServer(self.release, self.base_dir / names.base, port)
        made_with = server.initialized_release()
        if made_with is not None and made_with != self.release:
            server = SearchServer(made_with, server.home, port)
        return server

    def version(self) -> str:
        """The release new servers run, flavour included (e.g. "opensearch-2.19.4")."""
        return self.release.name

    def create(self, names: ResourceNames, port: int, password: str) -> str:
        """Initialise (once) and start the instance's server, wait until it is healthy; return
        its admin URL. The password only takes effect at the first init: callers persist it
        before calling."""
        server = self.server(names, port)
        server.init(password)
        server.start(password=password)
        return server.admin_url(password)

    def start(self, names: ResourceNames, port: int) -> None:
        self.server(names, port).start()

    def stop(self, names: ResourceNames, port: int) -> None:
        self.server(names, port).stop()

    def destroy(self, names: ResourceNames, port: int) -> None:
        self.server(names, port).destroy()


# -- small helpers -----------------------------------------------------------------------------


def _wait_dead(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _pid_alive(pid):
            return True
        time.sleep(0.1)
    return not _pid_alive(pid)


def _server_uid() -> int | None:
    """The uid the servers run as: the service account's when we are root (None while it does
    not exist: then no process is a server), else ours."""
    if not _is_root():
        return os.geteuid()
    try:
        return pwd.getpwnam(SERVICE_USER).pw_uid
    except KeyError:
        return None


def _proc_address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """An address as /proc/net/tcp{,6} prints it (32-bit words in host order, little-endian)."""
    raw = bytes.fromhex(text)
    raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    address = ipaddress.ip_address(raw)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _listening_inodes(host: str, port: int) -> set[int]:
    """The inodes of the TCP sockets listening on `port` on `host` or on any address (0.0.0.0,
    ::): every socket a connection to host:port may reach."""
    wanted = ipaddress.ip_address(host)
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 10 or fields[3] != "0A":  # 0A: LISTEN
                continue
            address, _, port_hex = fields[1].partition(":")
            if int(port_hex, 16) != port:
                continue
            local = _proc_address(address)
            if local == wanted or local.is_unspecified:
                found.add(int(fields[9]))
    return found


def _socket_inodes(pid: int) -> set[int]:
    """The inodes of the sockets process `pid` has open."""
    found = set()
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return found
    for fd in fds:
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            if target.startswith("socket:["):
                found.add(int(target[8:-1]))
    return found


def _tail(text: str, lines: int = 15) -> str:
    kept = [line for line in text.strip().splitlines() if not _SECRET_LINE.search(line)]
    return "\n".join(kept[-lines:]) or "(empty)"


def main(argv: list[str] | None = None) -> int:
    """`python -m tether.servers.search fetch [RELEASE...]`: fetch and unpack releases into the
    cache (all tested ones by default), so that starting a server downloads nothing."""
    parser = argparse.ArgumentParser(prog="python -m tether.servers.search")
    commands = parser.add_subparsers(dest="command", required=True)
    fetch_cmd = commands.add_parser("fetch", help="fetch and unpack releases into the cache")
    fetch_cmd.add_argument("releases", nargs="*", help="e.g. opensearch-2.19.4 (default: all "
                           "tested releases)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="search: %(message)s")
    releases = [parse_release(r) for r in args.releases] or list(RELEASES)
    try:
        for release in releases:
            started = time.monotonic()
            path = distribution(release)
            print(f"{release}: {path} ({time.monotonic() - started:.1f}s)", file=sys.stderr)
    except ClusterError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
