"""Benchmark: time from the API call to `pending attachment` for N PostgreSQL instances on the
shared embedded cluster, against the same SQL statements issued directly with psycopg, in the
same run and on the same server.

Usage: .venv/bin/python benchmarks/provision.py [-n 30]
Writes benchmarks/results/provision.json and prints a Markdown table (copied into the README).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import psycopg
from psycopg import sql

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from tether.crypto import SecretBox  # noqa: E402
from tether.net import free_port  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "provision.json"


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


def _timed(fn: Callable[..., None], *args: object) -> float:
    t0 = time.perf_counter()
    fn(*args)
    return (time.perf_counter() - t0) * 1000


def _tether_provision(client: httpx.Client, prefix: str) -> None:
    """The API call, then wait (long-poll) until the instance is pending attachment."""
    r = client.post("/projects/bench/environments/test/services",
                    json={"service": "postgres", "prefix": prefix, "provision": True})
    r.raise_for_status()
    op = r.json()["operation"]
    while op["status"] not in ("succeeded", "failed"):
        op = client.get(f"/operations/{op['id']}", params={"wait": 30}).json()
    assert op["status"] == "succeeded", op


def raw_drop(admin_url: str, name: str) -> None:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
            sql.Identifier(name)))
        conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", type=int, default=30, help="instances per side")
    args = parser.parse_args()

    base = Path(tempfile.mkdtemp(prefix="tether-bench-"))
    os.chmod(base, 0o755)  # noqa: S103 - the embedded PostgreSQL's system user must traverse it
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TETHER_")}
    env["XDG_CONFIG_HOME"] = str(base / "config")
    up = subprocess.Popen([str(Path(sys.executable).parent / "tether"), "up", "--data-dir",
                           str(base / "data"), "--port", str(port)], env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        config = base / "config" / "tether" / "config.json"
        deadline = time.monotonic() + 60
        while not config.exists() or not _healthy(url):
            if time.monotonic() > deadline or up.poll() is not None:
                raise SystemExit("tether up did not start")
            time.sleep(0.2)
        token = json.loads(config.read_text())["token"]
        box = SecretBox.from_data_dir(base / "data")
        state = json.loads((base / "data" / "embedded-postgres.json").read_text())
        admin_url = (f"postgres://postgres:{box.open(state['password_enc'])}@127.0.0.1:"
                     f"{state['port']}/postgres")

        client = httpx.Client(base_url=url + "/api/v1", timeout=60,
                              headers={"Authorization": f"Bearer {token}"})
        client.post("/projects", json={"name": "bench"}).raise_for_status()
        tether_ms: list[float] = []
        raw_ms: list[float] = []
        for i in range(args.n):
            # interleave the two sides, alternating which goes first, so that drift on the VM
            # (CREATE DATABASE time wanders a lot here) hits both alike
            sides = [lambda i=i: raw_ms.append(_timed(raw_provision, admin_url, f"bench_raw_{i}",
                                                      f"pw-{i}-{os.urandom(8).hex()}")),
                     lambda i=i: tether_ms.append(_timed(_tether_provision, client, f"B{i}"))]
            for side in sides if i % 2 == 0 else reversed(sides):
                side()
        for i in range(args.n):
            raw_drop(admin_url, f"bench_raw_{i}")
            client.delete(f"/projects/bench/environments/test/services/B{i}",
                          params={"confirm": f"B{i}"}).raise_for_status()
    finally:
        up.send_signal(signal.SIGINT)
        up.wait(60)
        subprocess.run(["rm", "-rf", str(base)], check=False)

    result = {
        "benchmark": "provision postgres to pending attachment",
        "n": args.n,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python "
                   f"{platform.python_version()}",
        "date": time.strftime("%Y-%m-%d"),
        "tether_ms": {"median": statistics.median(tether_ms), "p95": percentile(tether_ms, .95)},
        "raw_ms": {"median": statistics.median(raw_ms), "p95": percentile(raw_ms, .95)},
    }
    paired = [t - r for t, r in zip(tether_ms, raw_ms, strict=True)]
    result["overhead_ms_median"] = result["tether_ms"]["median"] - result["raw_ms"]["median"]
    result["overhead_ms_paired_median"] = statistics.median(paired)
    result["ratio_median"] = result["tether_ms"]["median"] / result["raw_ms"]["median"]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    t, r = result["tether_ms"], result["raw_ms"]
    print(f"| side | median ms | p95 ms |\n|---|---|---|\n"
          f"| Tether (API call → pending attachment) | {t['median']:.1f} | {t['p95']:.1f} |\n"
          f"| raw psycopg (same statements) | {r['median']:.1f} | {r['p95']:.1f} |\n"
          f"\noverhead {result['overhead_ms_median']:.1f} ms (difference of the medians), "
          f"{result['overhead_ms_paired_median']:.1f} ms (median of paired differences), ratio "
          f"{result['ratio_median']:.2f} (n={args.n}); written to {RESULTS.relative_to(ROOT)}")
    return 0


def _healthy(url: str) -> bool:
    try:
        return httpx.get(url + "/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


if __name__ == "__main__":
    raise SystemExit(main())
