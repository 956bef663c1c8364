"""The search servers Tether runs (tether.servers.search), for real: security in force on every
release (anonymous and wrong passwords refused, the admin alone), transport TLS with the server's
own certificates, and the lifecycle of a private server through `PrivateSearchServers` (create,
idempotent create, a crash by SIGKILL, a stale pid file naming another process left alone,
start again with the data kept and the instance's DSN working, destroy leaving nothing, no
password in its logs). No mocks.

The security tests share the session's servers (conftest.py); the lifecycle test runs one
OpenSearch server of its own (two JVM starts).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

import httpx
import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from tests.conftest import world_traversable_tmpdir
from tests.integration.search.conftest import SearchNode
from tether.errors import ClusterError
from tether.net import free_port, port_is_free
from tether.providers.base import ClusterSpec, ResourceNames
from tether.providers.elasticsearch import ElasticsearchProvider, search_url
from tether.providers.registry import private_servers
from tether.servers.common import cmdline
from tether.servers.search import (
    ADMIN_USER,
    SERVICE_USER,
    PortTaken,
    PrivateSearchServers,
    SearchServer,
    distribution,
    java_home,
    parse_release,
)

pytestmark = pytest.mark.integration

SERVERS = ("opensearch_server", "elasticsearch8_server", "elasticsearch7_server")


@pytest.fixture(params=SERVERS)
def search_node(request: pytest.FixtureRequest) -> SearchNode:
    node: SearchNode = request.getfixturevalue(request.param)
    return node


def _is_opensearch(node: SearchNode) -> bool:
    answer = node.request("GET", "/")
    return answer.status_code == 200 and \
        answer.json().get("version", {}).get("distribution") == "opensearch"


def test_security_is_in_force(search_node: SearchNode) -> None:
    """Anonymous, unknown and wrong-password requests are refused (401); the admin is served,
    with every right, and the server is the release it says."""
    assert httpx.get(search_node.url + "/_cluster/health", timeout=30).status_code == 401
    assert httpx.get(search_node.url + "/", timeout=30).status_code == 401
    wrong = search_node.request("GET", "/_cluster/health",
                                auth=(search_node.user, search_node.password + "x"))
    assert wrong.status_code == 401
    assert search_node.request("GET", "/_cluster/health",
                               auth=("admin", "admin")).status_code == 401  # the demo admin
    health = search_node.request("GET", "/_cluster/health")
    assert health.status_code == 200, health.text
    assert health.json()["status"] in ("green", "yellow")
    if _is_opensearch(search_node):
        who = search_node.request("GET", "/_plugins/_security/authinfo").json()
        assert who["user_name"] == search_node.user
        assert "all_access" in who["roles"]
    else:
        who = search_node.request("GET", "/_security/_authenticate").json()
        assert who["username"] == search_node.user
        assert who["roles"] == ["superuser"]
        assert who["authentication_realm"]["type"] == "file"
    if search_node.server is not None:
        release = search_node.server.release
        nodes = search_node.request("GET", "/_nodes/_local").json()["nodes"]
        assert [n["version"] for n in nodes.values()] == [release.version]
        assert _is_opensearch(search_node) == release.opensearch


@pytest.mark.parametrize("fixture", ["elasticsearch8_server", "elasticsearch7_server"])
def test_elasticsearch_zips_cannot_make_api_users(fixture: str,
                                                  request: pytest.FixtureRequest) -> None:
    """Why the provider offers no Elasticsearch version (recorded in tether.servers.search):
    on the integ-test zips, roles and users made through the security API fail, the security
    index needing the analysis module they lack. Should a build here make them, this test fails
    and those versions can be tested for isolation and offered."""
    node: SearchNode = request.getfixturevalue(fixture)
    if node.server is None:
        pytest.skip("a reused server: not necessarily an integ-test build")
    role = node.request("PUT", "/_security/role/tether_probe", json={
        "cluster": ["monitor"], "indices": [{"names": ["p", "p-*"], "privileges": ["all"]}]})
    user = node.request("PUT", "/_security/user/tether_probe", json={
        "password": "probe-password-1", "roles": ["tether_probe"]})
    for answer in (role, user):
        assert answer.status_code == 400, answer.text
        assert "Unknown filter type [pattern_capture]" in answer.text
    assert node.request("GET", "/_security/role/tether_probe").json() == {}


def test_opensearch_has_the_admin_alone(opensearch_server: SearchNode) -> None:
    """No demo user (their passwords are public): the admin is the only internal user, and
    all_access goes to it (and the backend role `admin`) only."""
    users = opensearch_server.request("GET", "/_plugins/_security/api/internalusers")
    assert users.status_code == 200, users.text
    if opensearch_server.server is not None:
        assert set(users.json()) == {ADMIN_USER}
    mapping = opensearch_server.request(
        "GET", "/_plugins/_security/api/rolesmapping/all_access").json()["all_access"]
    assert mapping["backend_roles"] == ["admin"]
    assert mapping["users"] == [opensearch_server.user]
    assert mapping["hosts"] == []


def _transport_port(node: SearchNode) -> int:
    nodes = node.request("GET", "/_nodes/_local/transport").json()["nodes"]
    (info,) = nodes.values()
    return int(info["transport"]["publish_address"].rsplit(":", 1)[1])


def test_transport_uses_the_servers_own_certificates(search_node: SearchNode) -> None:
    """The transport port speaks TLS with a certificate from the server's own CA (not the
    security plugin's demo CA, whose key is public), and no CA key is kept to sign another;
    the node's key is readable by the server's user only."""
    server = search_node.server
    if server is None:
        pytest.skip("a reused server: its certificates are not Tether's")
    port = _transport_port(search_node)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
            context.wrap_socket(raw) as tls:
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    cert = x509.load_der_x509_certificate(der)
    issuer = cert.issuer.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    assert issuer == "tether-search-ca"
    ca = x509.load_pem_x509_certificate((server.config_dir / "certs" / "ca.pem").read_bytes())
    assert cert.issuer == ca.subject
    cert.verify_directly_issued_by(ca)
    keys = [p.name for p in server.home.rglob("*.pem") if b"PRIVATE KEY" in p.read_bytes()]
    assert keys == ["node-key.pem"]
    assert (server.config_dir / "certs" / "node-key.pem").stat().st_mode & 0o077 == 0


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    """Another process, alive for the test: what a stale pid file may name."""
    proc = subprocess.Popen(["sleep", "600"])
    yield proc
    proc.kill()
    proc.wait()


@pytest.fixture
def private_base() -> Iterator[Path]:
    base = world_traversable_tmpdir("tether-test-search-private-")
    yield base
    shutil.rmtree(base, ignore_errors=True)


def _files_mention(home: Path, secret: str) -> list[str]:
    found = []
    for path in home.rglob("*"):
        if path.is_file() and not path.is_symlink():
            data = path.read_bytes()
            if secret.encode() in data or quote(secret, safe="").encode() in data:
                found.append(str(path.relative_to(home)))
    return found


def _wait_for_pid(server: SearchServer, timeout: float = 120) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pid = server.pid()
        if pid is not None:
            return pid
        time.sleep(0.2)
    raise AssertionError(f"no server JVM in {server.home} after {timeout}s")


def _listens(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except OSError:
        return False
    return True


def test_private_search_server_lifecycle(private_base: Path, unique_id: str,
                                         sleeper: subprocess.Popen[bytes]) -> None:
    """create → served with security on; create again changes nothing; a crash of the server
    (its JVM killed with SIGKILL, its pid file left behind) is undone by the start `tether up`
    makes of its private servers (tether.engine.private): the instance's DSN works again, with
    its data; a pid file naming another process is neither taken for the server nor killed; a
    start that times out leaves the server starting and the next start waits for it; the
    password is in no file of the home; destroy stops it in order and leaves nothing, twice.
    (The crash takes the place of an orderly stop: two JVM starts, not three.)"""
    servers = PrivateSearchServers(private_base, "opensearch-2.19.4")
    assert servers.kind == "elasticsearch"
    assert servers.version() == "opensearch-2.19.4"
    names = ResourceNames(base=f"tether_s{unique_id}")
    port = free_port()
    password = "pw:" + unique_id + "/x y"
    server = servers.server(names, port)
    try:
        url = servers.create(names, port, password)
        assert url == f"http://{ADMIN_USER}:{quote(password, safe='')}@127.0.0.1:{port}"
        node = SearchNode(release="opensearch-2.19.4", admin_url=url, url=server.url,
                          user=ADMIN_USER, password=password, server=server)
        assert httpx.get(server.url + "/", timeout=30).status_code == 401
        assert node.request("GET", "/", auth=(ADMIN_USER, "wrong")).status_code == 401
        stored = node.request("PUT", "/keep-1/_doc/1?refresh=true", json={"kept": unique_id})
        assert stored.status_code == 201, stored.text
        pid = server.pid()
        assert pid is not None
        rss = server.rss_bytes()
        assert rss is not None and rss < 1536 * 2**20  # a 512 MB heap: ~750 MB measured

        assert servers.create(names, port, password) == url  # idempotent: the same server
        assert server.pid() == pid

        # an instance on it, as the engine provisions a private one: its DSN works
        spec = ClusterSpec(id=2, kind="elasticsearch", region="local", url=url, private=True)
        dsn = urlsplit(search_url(ElasticsearchProvider().provision(
            spec, names, "inst:" + secrets.token_urlsafe(18))))
        instance = (unquote(dsn.username or ""), unquote(dsn.password or ""))
        notes = f"{server.url}/{names.base}-notes"
        made = httpx.put(notes + "/_doc/1?refresh=true", json={"note": unique_id},
                         auth=instance, timeout=30)
        assert made.status_code == 201, made.text

        # a crash: the JVM killed with SIGKILL; its pid file stays behind
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while (server.is_running() or _listens(port)) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not server.is_running()
        assert not _listens(port)  # (bound in TIME_WAIT for a while: no port_is_free here)
        assert server.pid_file.read_text().strip() == str(pid)  # stale

        server.pid_file.write_text(f"{sleeper.pid}\n")  # stale, naming another process
        assert server.pid() is None
        servers.stop(names, port)
        assert sleeper.poll() is None, "stop killed a process that is not the server"

        # a start that gives up before the server answers leaves it starting; the next start
        # waits for that server instead of launching another (2 s: no OpenSearch answers so
        # soon; 8 s did on a fast machine)
        with pytest.raises(ClusterError, match="does not answer"):
            server.start(timeout=2)
        starting = _wait_for_pid(server)
        assert starting != sleeper.pid
        # what `tether up` does for each of its private servers when it starts
        private_servers("elasticsearch", private_base).start(names, port)
        assert server.pid() == starting
        server.wait_healthy(password)  # its shards recovered after the crash
        kept = node.request("GET", "/keep-1/_doc/1")
        assert kept.status_code == 200, kept.text
        assert kept.json()["_source"] == {"kept": unique_id}
        note = httpx.get(notes + "/_doc/1", auth=instance, timeout=30)  # the DSN works again
        assert note.status_code == 200, note.text
        assert note.json()["_source"] == {"note": unique_id}
        servers.start(names, port)  # running: a no-op
        assert server.is_running()

        assert _files_mention(server.home, password) == []
        assert password not in server.log_tail(500)
    finally:
        servers.destroy(names, port)
    assert not server.home.exists()
    assert not server.is_running()
    assert port_is_free(port)
    assert sleeper.poll() is None
    servers.destroy(names, port)  # gone already: fine
    assert list(private_base.iterdir()) == []


def test_private_servers_release_setting(monkeypatch: pytest.MonkeyPatch,
                                         private_base: Path) -> None:
    """OpenSearch 2.19.4 by default, TETHER_SEARCH_PRIVATE chooses another release (flavour in
    the version string); a server keeps the release it was made with."""
    monkeypatch.delenv("TETHER_SEARCH_PRIVATE", raising=False)
    assert PrivateSearchServers(private_base).version() == "opensearch-2.19.4"
    monkeypatch.setenv("TETHER_SEARCH_PRIVATE", "elasticsearch-8.19.21")
    servers = PrivateSearchServers(private_base)
    assert servers.version() == "elasticsearch-8.19.21"
    names = ResourceNames(base="tether_kept")
    home = private_base / names.base / "config"
    home.mkdir(parents=True)
    (home / "tether-release").write_text("elasticsearch-7.17.29\n")
    assert servers.server(names, free_port()).release == parse_release("elasticsearch-7.17.29")
    monkeypatch.setenv("TETHER_SEARCH_PRIVATE", "solr-9.0.0")
    with pytest.raises(ClusterError, match="opensearch or elasticsearch"):
        PrivateSearchServers(private_base)
    with pytest.raises(ClusterError, match="plain identifier"):
        servers.server(ResourceNames(base="../etc"), free_port())


def test_errors_say_how_to_fix(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TETHER_SEARCH_JAVA_HOME", str(tmp_path))
    with pytest.raises(ClusterError, match="apt-get install openjdk-17-jre-headless"):
        java_home()
    monkeypatch.delenv("TETHER_SEARCH_JAVA_HOME")
    server = SearchServer("opensearch-2.19.4", tmp_path / "none", free_port())
    with pytest.raises(ClusterError, match="initialise it first"):
        server.start()
    assert not server.is_running()
    server.destroy()  # nothing there: fine


def test_cache_unpacks_once_in_a_dir_of_its_own(monkeypatch: pytest.MonkeyPatch,
                                               tmp_path: Path) -> None:
    """A release is unpacked once, executable bits kept, its zip deleted after; the cache (a dir
    Tether makes below a shared sticky dir such as /tmp, which stays as it is) and the dirs it
    makes are 0755."""
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    cache = shared / "cache"
    monkeypatch.setenv("TETHER_SEARCH_CACHE", str(cache))
    release = parse_release("elasticsearch-7.17.29")
    # makes the cache, then fails: no mvn on this PATH
    with pytest.raises(ClusterError, match="Maven"), monkeypatch.context() as m:
        m.setenv("PATH", str(tmp_path))
        distribution(release)
    assert cache.stat().st_mode & 0o7777 == 0o755
    zips = cache / "zips"
    zips.mkdir()
    archive = zips / "elasticsearch-7.17.29.zip"
    with zipfile.ZipFile(archive, "w") as zf:  # a stand-in: no download in this test
        program = zipfile.ZipInfo("elasticsearch-7.17.29/bin/elasticsearch")
        program.external_attr = 0o100755 << 16
        zf.writestr(program, "#!/bin/sh\n")
        zf.writestr("elasticsearch-7.17.29/config/elasticsearch.yml", "")
    dist = distribution(release)
    assert dist == cache / "dist" / "elasticsearch-7.17.29"
    assert (dist / "bin" / "elasticsearch").stat().st_mode & 0o777 == 0o755
    assert (dist / "config" / "elasticsearch.yml").stat().st_mode & 0o777 == 0o644
    assert (cache / "dist").stat().st_mode & 0o777 == 0o755
    assert shared.stat().st_mode & 0o7777 == 0o1777
    assert not archive.exists()
    assert distribution(release) == dist  # once: nothing to fetch again


def _plant_opensearch(dist: Path, mark: Path) -> None:
    """What a local user would put in a cache they can write: a "complete" OpenSearch dist whose
    hash tool (run at init) records that it ran."""
    (dist / "bin").mkdir(parents=True)
    (dist / "bin" / "opensearch").write_text("")
    (dist / "config" / "opensearch-security").mkdir(parents=True)
    (dist / "config" / "jvm.options").write_text("")
    module = dist / "modules" / "analysis-common"
    module.mkdir(parents=True)
    (module / "analysis-common-2.19.4.jar").write_text("")
    tools = dist / "plugins" / "opensearch-security" / "tools"
    tools.mkdir(parents=True)
    (tools / "hash.sh").write_text(f"#!/bin/bash\nid -u > {mark}\necho '$2y$12$x'\n")
    (tools / "hash.sh").chmod(0o755)


def _give(path: Path, user: str) -> None:
    entry = pwd.getpwnam(user)
    for item in (path, *path.rglob("*")):
        os.chown(item, entry.pw_uid, entry.pw_gid, follow_symlinks=False)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root: the files of another user")
def test_a_cache_others_can_write_is_refused(monkeypatch: pytest.MonkeyPatch,
                                            unique_id: str) -> None:
    """What the cache holds is run by root, so a cache root, a dir above it or a dir in it that
    another user could write (or owns) is refused, and nothing planted there runs: a dist in a
    cache writable by all, a dist dir (or zips/ dir) of another user in root's cache, a shared
    sticky dir as the cache root, a cache below a dir writable by all."""
    base = world_traversable_tmpdir("tether-test-search-cache-")
    mark = base / "hash-ran"
    release = parse_release("opensearch-2.19.4")
    try:
        cases: list[tuple[str, Path]] = []
        open_cache = base / "open"  # root's, writable by all
        _plant_opensearch(open_cache / "dist" / release.name, mark)
        open_cache.chmod(0o777)
        cases.append(("others can write", open_cache))

        theirs = base / "theirs"  # root's and 0755, the dist dir in it someone else's
        _plant_opensearch(theirs / "dist" / release.name, mark)
        _give(theirs / "dist" / release.name, "nobody")
        cases.append(("belongs to uid", theirs))

        sticky = base / "sticky"  # like /tmp itself
        _plant_opensearch(sticky / "dist" / release.name, mark)
        sticky.chmod(0o1777)
        cases.append(("shared sticky dir", sticky))

        below = base / "below-open"  # the cache root is fine, the dir above it is not
        _plant_opensearch(below / "cache" / "dist" / release.name, mark)
        below.chmod(0o777)
        cases.append(("which others can write", below / "cache"))

        for expected, cache in cases:
            monkeypatch.setenv("TETHER_SEARCH_CACHE", str(cache))
            server = SearchServer(release, base / f"home-{unique_id}", free_port())
            try:
                server.init("pw-" + unique_id)
            except ClusterError as exc:
                error = str(exc)
            else:
                error = "(init succeeded)"
            assert not mark.exists(), f"a planted hash.sh ran as uid {mark.read_text()} ({cache})"
            assert "refusing the search server cache" in error
            assert expected in error
            assert "TETHER_SEARCH_CACHE" in error
            assert not server.initialized()

        zipped = base / "zipped"  # root's cache, a zips/ dir of someone else's
        (zipped / "zips").mkdir(parents=True)
        for name in ("opensearch-2.19.4.zip", "opensearch-security-2.19.4.0.zip",
                     "analysis-common-2.19.4.jar"):
            (zipped / "zips" / name).write_text("")
        _give(zipped / "zips", "nobody")
        monkeypatch.setenv("TETHER_SEARCH_CACHE", str(zipped))
        with pytest.raises(ClusterError, match="belongs to uid"):
            distribution(release)
        assert not (zipped / "dist" / release.name).exists()
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def es7_home(unique_id: str) -> Iterator[tuple[SearchServer, Path]]:
    """An initialised Elasticsearch 7.17 home (its init runs no JVM), never started; and a dir
    of root's beside it for files only root may read."""
    base = world_traversable_tmpdir("tether-test-search-home-")
    server = SearchServer("elasticsearch-7.17.29", base / f"es_{unique_id}", free_port())
    private = base / "root-only"
    private.mkdir(mode=0o700)
    try:
        server.init("pw-" + unique_id)
        yield server, private
    finally:
        server.destroy()
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root: a home of the service user")
def test_root_never_follows_the_service_users_symlinks(
        es7_home: tuple[SearchServer, Path]) -> None:
    """The home is the service user's, who can put symlinks where the launcher's output and the
    server's log go: a start neither writes through them (as root) nor shows what they lead to
    in its errors or the log tail. The config is the service user's only once in place."""
    server, private = es7_home
    account = pwd.getpwnam(SERVICE_USER)
    assert server.home.stat().st_uid == account.pw_uid
    assert {p.stat().st_uid for p in (server.config_dir, *server.config_dir.rglob("*"))} == \
        {account.pw_uid}
    secret = private / "secret"
    token = secrets.token_hex(8)
    content = f"root-only-{token}\nline two\n"
    secret.write_text(content)
    secret.chmod(0o600)
    for link in (server.launcher_log, server.log_file):
        link.unlink(missing_ok=True)
        link.symlink_to(secret)
        os.chown(link, account.pw_uid, account.pw_gid, follow_symlinks=False)
    with pytest.raises(ClusterError) as err:
        server.start(timeout=20)
    assert secret.read_text() == content, "root wrote through the service user's symlink"
    assert token not in str(err.value)
    assert token not in server.log_tail(500)
    assert not server.is_running()


_SQUATTER = """
import http.server, sys
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        print("request", self.path, self.headers.get("Authorization"), flush=True)
        self.send_response(401)
        self.send_header("WWW-Authenticate", 'Basic realm="x"')
        self.send_header("Content-Length", "0")
        self.end_headers()
    def log_message(self, *args):
        pass
server = http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Handler)
print("listening", flush=True)
server.serve_forever()
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root: processes of other users")
def test_the_password_goes_to_the_servers_jvm_only(es7_home: tuple[SearchServer, Path],
                                                   unique_id: str) -> None:
    """Another user holding the server's port and answering 401 like a secured server is not
    taken for the server: start fails at once saying the port is taken, waiting for health sends
    the admin's password nowhere, and the listener never sees it. A process of another user
    with the server's command line is not taken for the server either (nor killed)."""
    server, _private = es7_home
    password = "pw-" + unique_id
    squatter = subprocess.Popen(["/usr/bin/python3", "-c", _SQUATTER, str(server.port)],
                                user="nobody", stdout=subprocess.PIPE, text=True)
    impostor = subprocess.Popen(
        ["/usr/bin/python3", "-c", "import time; time.sleep(600)",
         f"-Djava.io.tmpdir={server.home / 'tmp'}", server.release.main_class],
        user="nobody")
    try:
        assert squatter.stdout is not None
        assert squatter.stdout.readline().strip() == "listening"
        assert httpx.get(server.url + "/", timeout=10).status_code == 401  # it looks secured

        server.pid_file.write_text(f"{impostor.pid}\n")
        assert server.pid() is None
        server.stop()
        assert impostor.poll() is None, "stop killed another user's process"

        with pytest.raises(PortTaken, match=f"port {server.port} on 127.0.0.1 is taken"):
            server.start(timeout=30, password=password)
        with pytest.raises(ClusterError):
            server.wait_healthy(password, timeout=3)
    finally:
        for proc in (squatter, impostor):
            proc.kill()
        seen = squatter.communicate(timeout=10)[0]
        impostor.wait()
    auth = [line for line in seen.splitlines() if line.startswith("request")
            and not line.endswith(" None")]
    assert auth == [], "the listener was sent credentials"
    assert "Basic" not in seen


def _kill_its_jvm_once(server: SearchServer, stop: threading.Event) -> list[int]:
    """SIGKILL the first JVM of `server` (its command line names the pid file) as soon as it
    appears, before it writes its log; the pids killed."""
    killed: list[int] = []

    def watch() -> None:
        while not stop.is_set() and not killed:
            for entry in os.scandir("/proc"):
                if not entry.name.isdigit():
                    continue
                args = cmdline(int(entry.name))
                if args and args[0].endswith("java") and str(server.pid_file) in args:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(int(entry.name), signal.SIGKILL)
                        killed.append(int(entry.name))
                    return
            time.sleep(0.01)

    threading.Thread(target=watch, daemon=True).start()
    return killed


def test_a_jvm_gone_before_its_first_log_line_is_launched_once_more(
        es7_home: tuple[SearchServer, Path], caplog: pytest.LogCaptureFixture) -> None:
    """A server whose JVM goes away while starting, before it wrote a line of its own log (seen
    once in a full test run: the launcher's warnings, then nothing), is launched once more
    rather than failing the start; the warning says so. (A JVM that logged why it failed, or
    a taken port, fails at once: the other tests here.)"""
    server, _private = es7_home
    stop = threading.Event()
    killed = _kill_its_jvm_once(server, stop)
    try:
        with caplog.at_level("WARNING", logger="tether.servers.search"):
            server.start(timeout=150)
    finally:
        stop.set()
    assert killed, "the watcher never saw the server's JVM"
    pid = server.pid()
    assert pid is not None and pid not in killed
    assert httpx.get(server.url + "/", timeout=10).status_code == 401
    assert any("went away while starting" in r.getMessage() for r in caplog.records)
