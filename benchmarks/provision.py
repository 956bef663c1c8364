"""Benchmark: time from the API call to `pending attachment`, per provider, against the same
raw calls on the same server, in the same run, interleaved.

- postgres: Tether's embedded shared cluster; the baseline is the provider's exact SQL statements
  written out by hand with psycopg (a new admin connection each, as the provider does).
- rabbitmq, s3 (SeaweedFS), azure-blob (Azurite), mysql (MariaDB), elasticsearch (OpenSearch
  2.19.4 with its security plugin): servers started here with the test suite's own runners; the
  baseline is the provider module called directly (its HTTP/SQL calls to the server, no API,
  store or worker), so the difference is Tether's own overhead.

The API is called twice per round, with two clients: httpx (as the CLI calls it) and Python's
own `http.client`, whose own cost is small: the second is Tether's time with as little of the
client library's as possible. Each provider's row records the machine's speed before and after
it (`calibration_ms`: a fixed Python loop; ~250 ms when this VM is quiet).

For postgres a further side, in the same run and interleaved too: the way many teams script this
today, an Ansible playbook of the `community.postgresql` collection (`postgresql_user`,
`postgresql_db`, `postgresql_privs`), run with `ansible-playbook` once per instance (the
`ansible` package from PyPI, pinned, installed into build/bench-ansible on first use; --ansible N
instances, 0 to leave it out).

Usage: .venv/bin/python benchmarks/provision.py [-n 30] [--kinds postgres,rabbitmq,s3,...]
Writes benchmarks/results/provision.json (the rows of kinds not measured in this run are kept from
the file, each with its date) and prints a Markdown table (copied into the README).
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import platform
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import httpx
import psycopg
from psycopg import sql

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))

from tether.crypto import SecretBox  # noqa: E402
from tether.net import free_port  # noqa: E402
from tether.providers.base import ClusterSpec, ResourceNames  # noqa: E402
from tether.providers.registry import get_provider  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "provision.json"
KINDS = ("postgres", "rabbitmq", "s3", "azure-blob", "mysql", "elasticsearch")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(q * (len(ordered) - 1))))
    return ordered[k]


def raw_provision(admin_url: str, name: str, password: str) -> None:
    """The SQL statements the PostgreSQL provider issues, written out by hand: one admin
    connection; look-ups; the role with a SCRAM verifier computed client-side; the database;
    CONNECT for the role alone."""
    role = sql.Identifier(name)
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute("SET statement_timeout = '120s'")
        conn.execute("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = %s",
                     (name,)).fetchone()
        conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (name,)).fetchone()
        verifier = conn.pgconn.encrypt_password(password.encode(), name.encode(),
                                                b"scram-sha-256").decode()
        conn.execute(sql.SQL("CREATE ROLE {} WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE "
                             "NOREPLICATION NOBYPASSRLS PASSWORD {}").format(
            role, sql.Literal(verifier)))
        conn.execute("SELECT rolsuper, rolcreaterole, rolcreatedb FROM pg_roles "
                     "WHERE rolname = current_user").fetchone()
        conn.execute("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = %s",
                     (name,)).fetchone()
        conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(role, role))
        conn.execute(sql.SQL("REVOKE CONNECT, TEMPORARY ON DATABASE {} FROM PUBLIC").format(role))
        conn.execute(sql.SQL("GRANT CONNECT, TEMPORARY ON DATABASE {} TO {}").format(role, role))


ANSIBLE = "ansible==12.3.0"  # ansible-core 2.19 with community.postgresql 4.2
ANSIBLE_VENV = ROOT / "build" / "bench-ansible"
PLAYBOOK = """\
- hosts: localhost
  connection: local
  gather_facts: false
  vars:
    login: &login
      login_host: "{{ host }}"
      login_port: "{{ port }}"
      login_user: "{{ admin_user }}"
      login_password: "{{ admin_password }}"
  tasks:
    - community.postgresql.postgresql_user:
        <<: *login
        name: "{{ name }}"
        password: "{{ password }}"
        role_attr_flags: LOGIN,NOSUPERUSER,NOCREATEDB,NOCREATEROLE
        state: "{{ state }}"
      when: state == "present"
    - community.postgresql.postgresql_db:
        <<: *login
        name: "{{ name }}"
        owner: "{{ name if state == 'present' else omit }}"
        state: "{{ state }}"
    - community.postgresql.postgresql_privs:
        <<: *login
        database: "{{ name }}"
        type: database
        privs: CONNECT,TEMPORARY
        roles: PUBLIC
        state: absent
      when: state == "present"
    - community.postgresql.postgresql_user:
        <<: *login
        name: "{{ name }}"
        state: absent
      when: state == "absent"
"""


def ansible_playbook() -> Path:
    """`ansible-playbook` of a venv holding the pinned `ansible` package (made on first use)."""
    binary = ANSIBLE_VENV / "bin" / "ansible-playbook"
    if not (ANSIBLE_VENV / ".installed").exists():
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(ANSIBLE_VENV)], check=True)
        subprocess.run([str(ANSIBLE_VENV / "bin" / "pip"), "install", "-q",
                        "--disable-pip-version-check", ANSIBLE, "psycopg2-binary>=2.9"],
                       check=True)
        (ANSIBLE_VENV / ".installed").write_text(ANSIBLE + "\n")
    return binary


def ansible_side(admin_url: str, workdir: Path) -> tuple[Callable[[int], None],
                                                         Callable[[int], None]]:
    """Provision and drop `bench_ans_{i}` with one `ansible-playbook` run each."""
    playbook = ansible_playbook()
    (workdir / "play.yml").write_text(PLAYBOOK)
    url = urlsplit(admin_url)
    login = {"host": url.hostname, "port": url.port, "admin_user": url.username,
             "admin_password": unquote(url.password or "")}
    env = {**os.environ, "ANSIBLE_LOCALHOST_WARNING": "False", "ANSIBLE_NOCOLOR": "1",
           "ANSIBLE_PYTHON_INTERPRETER": str(ANSIBLE_VENV / "bin" / "python"),
           "ANSIBLE_HOME": str(workdir / "home")}

    def play(i: int, state: str) -> None:
        extra = workdir / f"vars-{i}-{state}.json"
        extra.write_text(json.dumps({**login, "name": f"bench_ans_{i}", "state": state,
                                     "password": f"pw-{i}-{os.urandom(8).hex()}"}))
        done = subprocess.run([str(playbook), "-i", "localhost,", str(workdir / "play.yml"),
                               "-e", f"@{extra}"], env=env, capture_output=True, text=True,
                              check=False)
        extra.unlink()
        if done.returncode != 0:
            raise SystemExit(f"ansible-playbook failed:\n{done.stdout[-2000:]}")

    return (lambda i: play(i, "present")), (lambda i: play(i, "absent"))


def _timed(fn: Callable[..., None], *args: object) -> float:
    t0 = time.perf_counter()
    fn(*args)
    return (time.perf_counter() - t0) * 1000


def raw_drop(admin_url: str, name: str) -> None:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
            sql.Identifier(name)))
        conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))


@dataclass
class Target:
    """One provider's side of the run: where Tether provisions, and the baseline."""

    kind: str
    region: str
    service: str
    raw: Callable[[int], None]
    raw_cleanup: Callable[[int], None]
    baseline: str


def _provider_baseline(kind: str, spec: ClusterSpec) -> tuple[Callable[[int], None],
                                                                Callable[[int], None]]:
    provider = get_provider(kind)

    def raw(i: int) -> None:
        provider.provision(spec, ResourceNames(f"bench_raw_{i}"), secrets.token_urlsafe(24))

    def cleanup(i: int) -> None:
        provider.deprovision(spec, ResourceNames(f"bench_raw_{i}"))

    return raw, cleanup


@contextlib.contextmanager
def _target(kind: str, client: httpx.Client, admin_pg: str) -> Iterator[Target]:
    """Start the server of `kind` (only while it is measured, so idle servers do not load the
    2 cores), register it with Tether, yield the target."""
    if kind == "postgres":
        yield Target(kind, "local", "postgres",
                     lambda i: raw_provision(admin_pg, f"bench_raw_{i}",
                                             f"pw-{i}-{os.urandom(8).hex()}"),
                     lambda i: raw_drop(admin_pg, f"bench_raw_{i}"),
                     "the provider's SQL statements by hand (psycopg)")
        return
    with _start(kind) as (url, settings, region, family):
        client.post("/clusters", json={"kind": kind, "region": region, "url": url,
                                       "settings": settings, "region_family": family,
                                       "name": f"bench-{kind}"}).raise_for_status()
        spec = ClusterSpec(id=0, kind=kind, region=region, url=url, settings=settings)
        raw, cleanup = _provider_baseline(kind, spec)
        service = {"s3": "s3-media", "azure-blob": "azure-blob-media",
                   "elasticsearch": "opensearch"}.get(kind, kind)
        yield Target(kind, region, service, raw, cleanup, "the provider module called directly")


@contextlib.contextmanager
def _start(kind: str) -> Iterator[tuple[str, dict[str, Any], str, str]]:
    """A real server of `kind`, run by the test suite's own runner (tests/integration/KIND)."""
    if kind == "rabbitmq":
        from tests.integration.rabbitmq.conftest import RabbitNode, _script

        node = RabbitNode(_script("rabbitmq-server") or "", _script("rabbitmqctl") or "")
        node.start()
        try:
            yield node.admin_url, {"amqp_host": "127.0.0.1", "amqp_port": node.amqp_port}, \
                "local", "local"
        finally:
            node.stop()
    elif kind == "s3":
        from tests.integration.s3.conftest import SeaweedFS, weed_binary

        weed = SeaweedFS(weed_binary() or "weed")
        weed.start()
        try:
            yield weed.server.url, {"endpoint_scheme": "http"}, "bench-s3", "s3"
        finally:
            weed.stop()
    elif kind == "azure-blob":
        from tests.integration.azure.conftest import Azurite, azurite_binary

        azurite = Azurite(azurite_binary() or "azurite-blob")
        azurite.start()
        try:
            yield azurite.url, {}, "bench-azure", "azure"
        finally:
            azurite.stop()
    elif kind == "mysql":
        from tests.conftest import world_traversable_tmpdir

        from tether.servers.mariadb import PrivateMariaDBServers

        home = world_traversable_tmpdir("tether-bench-mysql-")
        servers, names, port = PrivateMariaDBServers(home), ResourceNames("bench_srv"), free_port()
        try:
            yield servers.create(names, port, secrets.token_urlsafe(18)), {}, "local", "local"
        finally:
            servers.destroy(names, port)
            subprocess.run(["rm", "-rf", str(home)], check=False)
    elif kind == "elasticsearch":
        from tests.search import _search_node

        with contextlib.contextmanager(_search_node)("opensearch-2.19.4",
                                                     "TETHER_TEST_OPENSEARCH_URL") as node:
            yield node.admin_url, {}, "local", "local"
    else:
        raise SystemExit(f"unknown kind {kind}")


def _tether_provision(client: httpx.Client, project: str, service: str, prefix: str) -> None:
    """The API call, answered once the instance is pending attachment (`wait`, as the CLI
    calls it), long-polling the operation should the wait run out."""
    r = client.post(f"/projects/{project}/environments/test/services", params={"wait": 30},
                    json={"service": service, "prefix": prefix, "provision": True})
    r.raise_for_status()
    op = r.json()["operation"]
    while op["status"] not in ("succeeded", "failed"):
        op = client.get(f"/operations/{op['id']}", params={"wait": 30}).json()
    assert op["status"] == "succeeded", op


class LeanClient:
    """The same API call over Python's own `http.client` (one kept-alive connection): a client
    whose own cost is small (~0.3 ms a call here, against ~1 ms more for httpx, which the CLI
    uses), so that what it measures is the API's time rather than the client library's."""

    def __init__(self, url: str, token: str) -> None:
        parts = urlsplit(url)
        self.conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port,
                                               timeout=60)
        self.headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    def call(self, method: str, path: str, body: Any = None) -> Any:
        for again in (True, False):
            try:
                self.conn.request(method, "/api/v1" + path, headers=self.headers,
                                  body=None if body is None else json.dumps(body))
                answer = self.conn.getresponse()
                break
            except (BrokenPipeError, ConnectionResetError, http.client.RemoteDisconnected):
                # the server closed the kept-alive connection after a pause (its keep-alive
                # timeout, e.g. while the next server started): once more on a new one
                self.conn.close()
                if not again:
                    raise
        data = answer.read()
        if answer.status >= 300:
            raise RuntimeError(f"{method} {path}: {answer.status} {data[:300]!r}")
        return json.loads(data)

    def provision(self, project: str, service: str, prefix: str) -> None:
        """`_tether_provision` over this client."""
        op = self.call("POST", f"/projects/{project}/environments/test/services?wait=30",
                       {"service": service, "prefix": prefix, "provision": True})["operation"]
        while op["status"] not in ("succeeded", "failed"):
            op = self.call("GET", f"/operations/{op['id']}?wait=30")
        assert op["status"] == "succeeded", op


def calibration_ms() -> float:
    """The machine's speed at the moment: a fixed pure-Python loop (~250 ms when this VM is
    quiet, up to ~600 ms in its slow spells), so that runs of different minutes compare."""
    t0 = time.perf_counter()
    # at a module's top level (its names a dict's, as in the figures of the README)
    exec("x = 0\nfor i in range(3_000_000):\n    x += i", {})  # noqa: S102 - a fixed loop
    return (time.perf_counter() - t0) * 1000


def _summary(tether_ms: list[float], raw_ms: list[float]) -> dict[str, Any]:
    paired = [t - r for t, r in zip(tether_ms, raw_ms, strict=True)]
    t_med, r_med = statistics.median(tether_ms), statistics.median(raw_ms)
    return {
        "tether_ms": {"median": t_med, "p95": percentile(tether_ms, .95)},
        "raw_ms": {"median": r_med, "p95": percentile(raw_ms, .95)},
        "overhead_ms_median": t_med - r_med,
        "overhead_ms_paired_median": statistics.median(paired),
        "ratio_median": t_med / r_med,
    }


def _measure(client: httpx.Client, lean: LeanClient, target: Target, n: int,
             ansible: tuple[int, Callable[[int], None], Callable[[int], None]] | None = None,
             ) -> dict[str, Any]:
    project = f"bench-{target.kind}"
    client.post("/projects", json={"name": project, "region": target.region,
                                   "database": False}).raise_for_status()
    tether_ms: list[float] = []
    lean_ms: list[float] = []
    raw_ms: list[float] = []
    ansible_ms: list[float] = []
    calibration = [calibration_ms()]
    lean.call("GET", "/status")  # its connection open before the first timed call
    try:
        for i in range(n):
            # interleave the sides, rotating which goes first, so that drift on the VM
            # (CREATE DATABASE time wanders a lot here) hits all alike
            sides = [lambda i=i: raw_ms.append(_timed(target.raw, i)),
                     lambda i=i: tether_ms.append(_timed(_tether_provision, client, project,
                                                         target.service, f"B{i}")),
                     lambda i=i: lean_ms.append(_timed(lean.provision, project,
                                                       target.service, f"L{i}"))]
            if ansible is not None and i < ansible[0]:
                sides.append(lambda i=i: ansible_ms.append(_timed(ansible[1], i)))
            shift = i % len(sides)
            for side in sides[shift:] + sides[:shift]:
                side()
    finally:
        for i in range(len(raw_ms)):
            target.raw_cleanup(i)
        if ansible is not None:
            for i in range(len(ansible_ms)):
                ansible[2](i)
        calibration.append(calibration_ms())
        for side, done in (("B", tether_ms), ("L", lean_ms)):
            for i in range(len(done)):
                client.delete(f"/projects/{project}/environments/test/services/{side}{i}",
                              params={"confirm": f"{side}{i}"}).raise_for_status()
    row = {"kind": target.kind, "n": n, "baseline": target.baseline,
           "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
           "calibration_ms": {"before": calibration[0], "after": calibration[-1]},
           "client": "httpx (as the CLI)", **_summary(tether_ms, raw_ms),
           "lean_client": {"client": "http.client", **_summary(lean_ms, raw_ms)}}
    if ansible_ms:
        row["ansible"] = {
            "what": f"ansible-playbook, community.postgresql ({ANSIBLE}), one run per instance",
            "n": len(ansible_ms),
            "ms": {"median": statistics.median(ansible_ms),
                   "p95": percentile(ansible_ms, .95)},
            "tether_to_ansible": statistics.median(tether_ms) / statistics.median(ansible_ms),
        }
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", type=int, default=30, help="instances per side and provider")
    parser.add_argument("--kinds", default=",".join(KINDS),
                        help=f"comma-separated, from {', '.join(KINDS)}")
    parser.add_argument("--ansible", type=int, default=10, metavar="N",
                        help="postgres: also time N instances made by an Ansible playbook "
                             "(0: not)")
    args = parser.parse_args()
    kinds = [k for k in args.kinds.split(",") if k]

    base = Path(tempfile.mkdtemp(prefix="tether-bench-"))
    os.chmod(base, 0o755)  # noqa: S103 - the embedded PostgreSQL's system user must traverse it
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TETHER_")}
    env["XDG_CONFIG_HOME"] = str(base / "config")
    up = subprocess.Popen([str(Path(sys.executable).parent / "tether"), "up", "--data-dir",
                           str(base / "data"), "--port", str(port)], env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    rows: list[dict[str, Any]] = []
    try:
        config = base / "config" / "tether" / "config.json"
        deadline = time.monotonic() + 60
        while not config.exists() or not _healthy(url):
            if time.monotonic() > deadline or up.poll() is not None:
                raise SystemExit("tether up did not start")
            time.sleep(0.2)
        token = next(c["token"] for c in json.loads(config.read_text())["contexts"].values()
                     if c["url"] == url)
        box = SecretBox.from_data_dir(base / "data")
        state = json.loads((base / "data" / "embedded-postgres.json").read_text())
        admin_pg = (f"postgres://postgres:{box.open(state['password_enc'])}@127.0.0.1:"
                    f"{state['port']}/postgres")
        client = httpx.Client(base_url=url + "/api/v1", timeout=60,
                              headers={"Authorization": f"Bearer {token}"})
        lean = LeanClient(url, token)
        for kind in kinds:
            with _target(kind, client, admin_pg) as target:
                third = None
                if kind == "postgres" and args.ansible > 0:
                    third = (min(args.ansible, args.n), *ansible_side(admin_pg, base))
                rows.append(_measure(client, lean, target, args.n, third))
            print(f"{kind}: done", file=sys.stderr)
    finally:
        up.send_signal(signal.SIGINT)
        up.wait(60)
        subprocess.run(["rm", "-rf", str(base)], check=False)

    result = {
        "benchmark": "provision to pending attachment, Tether vs raw calls",
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python "
                   f"{platform.python_version()}",
        "date": time.strftime("%Y-%m-%d"),
        "store": "sqlite",
        "providers": rows,
    }
    measured = {r["kind"] for r in rows}
    with contextlib.suppress(FileNotFoundError, ValueError, KeyError):
        earlier = json.loads(RESULTS.read_text())["providers"]
        rows += [r for r in earlier if r["kind"] not in measured]
    rows.sort(key=lambda r: KINDS.index(r["kind"]) if r["kind"] in KINDS else len(KINDS))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print("| provider | n | Tether median / p95 ms | raw median / p95 ms | overhead ms "
          "(medians; paired) | ratio | with http.client: Tether median ms; overhead ms "
          "(medians; paired) | calibration ms |\n|---|---|---|---|---|---|---|---|")
    for r in rows:
        t, w = r["tether_ms"], r["raw_ms"]
        lean_row, cal = r.get("lean_client"), r.get("calibration_ms")
        print(f"| {r['kind']} | {r['n']} | {t['median']:.1f} / {t['p95']:.1f} | "
              f"{w['median']:.1f} / {w['p95']:.1f} | {r['overhead_ms_median']:.1f}; "
              f"{r['overhead_ms_paired_median']:.1f} | {r['ratio_median']:.2f} | "
              + (f"{lean_row['tether_ms']['median']:.1f}; "
                 f"{lean_row['overhead_ms_median']:.1f}; "
                 f"{lean_row['overhead_ms_paired_median']:.1f}" if lean_row else "-")
              + " | " + (f"{cal['before']:.0f} → {cal['after']:.0f}" if cal else "-") + " |")
    for r in rows:
        if "ansible" in r:
            a = r["ansible"]
            print(f"\n{r['kind']}: Ansible ({a['n']} runs) median {a['ms']['median']:.1f} ms, "
                  f"p95 {a['ms']['p95']:.1f} ms; Tether takes {a['tether_to_ansible']:.3f} of it")
    print(f"\nwritten to {RESULTS.relative_to(ROOT)}")
    return 0


def _healthy(url: str) -> bool:
    try:
        return httpx.get(url + "/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


if __name__ == "__main__":
    raise SystemExit(main())
