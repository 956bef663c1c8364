"""Benchmark (issue 12): does the API stay flat as the fleet grows, and how fast is `env-vars`?

Against a real `tether up` started here (its own data dir, SQLite store, embedded PostgreSQL and
local media), two sub-benchmarks, chosen with --benchmarks:

- latency: seeds, through the REST API (parallel requests on kept-alive connections), projects
  with ten environments each (test and live, and eight more added with `POST
  …/environments`: 1,000 environments are 100 projects, the issue's shape) and 10 real, cheap
  instances in each: one `local-media` storage provisioned by the worker (a real directory),
  nine `postgres-18` databases left `new`. At 10, 1,000 and
  10,000 instances in total (seed, measure, seed more, measure again) it times, sequentially on
  one kept-alive httpx connection (as the CLI) and interleaved, the REST calls the CLI makes for
  `tether service list ENV` (a page of 100), `tether service show ENV PREFIX`, `tether project
  env-vars -e ENV --all` (computed each time, never a kept answer: see rps) and `tether project
  list` (the first page of 100), each against an
  environment and instance drawn at random from those seeded (also at 100 instances; the
  projects list's first page of 100 is full at 10,000). The claim: flat, p99 at the largest stage
  within 2x of p99 at the smallest.
- rps: requests per second of `env-vars --all` of a 10-service environment against a bare ASGI
  hello-world served by the same stack (uvicorn, httptools, the plain asyncio loop, one process)
  on the same host, by the same client at the same concurrency, interleaved in the same run. Aim: at
  least 50 % of the hello-world's rate. The client is a minimal HTTP/1.1 one on kept-alive
  connections (httpx's own CPU time would cap both sides on 2 cores); the server's CPU time per
  request is recorded too, the figure that other work on the machine does not skew.

Usage:
  .venv/bin/python benchmarks/scale.py                      # the issue's 10,000 instances
  .venv/bin/python benchmarks/scale.py --instances 2000     # a quick try (stages 10, 20, 200, 2000)
  .venv/bin/python benchmarks/scale.py --benchmarks rps

Writes benchmarks/results/scale.json and benchmarks/results/scale.png (the plot needs matplotlib:
`.venv/bin/pip install -e '.[bench]'` or `.venv/bin/pip install matplotlib`). Every request loop
is bounded in count and time and sends traffic only to 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import platform
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from tether.net import free_port  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "scale.json"
PLOT = ROOT / "benchmarks" / "results" / "scale.png"
BENCHMARKS = ("latency", "rps")
#: each project's environments: the two a project is made with, and eight added
ENVS = ("test", "live", *(f"stage{n}" for n in range(1, 9)))
MADE_WITH = 2
PER_ENV = 10
DATABASES = [f"DB{i}" for i in range(1, PER_ENV)]  # postgres-18, left new
MEDIA = "MEDIA"  # local-media, provisioned
ENDPOINTS = ("service list", "service show", "env-vars --all", "project list")
#: the projects on the first page of the projects list (the CLI's default --limit): below 2,000
#: instances the page is not full yet, so it grows with the fleet whatever the server does
FULL_PAGE = 100

#: a bare ASGI application: what a request costs the server stack alone
HELLO = """
import sys, uvicorn

async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", b"18")]})
    await send({"type": "http.response.body", "body": b'{"hello": "world"}'})

uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning",
            lifespan="off", loop="asyncio")
"""


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(q * (len(ordered) - 1))))
    return ordered[k]


def load() -> str:
    """The machine's load averages (`uptime`): other work on the 2 cores skews every figure."""
    return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()


def env_of(index: int) -> tuple[str, str]:
    """Environment number `index` of the seeded fleet: (project, environment)."""
    return f"p{index // len(ENVS):04d}", ENVS[index % len(ENVS)]


def env_path(index: int) -> str:
    project, env = env_of(index)
    return f"/projects/{project}/environments/{env}"


class Seeder:
    """Seeds environments through the REST API with `concurrency` requests under way at once
    (httpx's pool keeps their connections alive)."""

    def __init__(self, url: str, token: str, concurrency: int) -> None:
        self.url, self.token, self.concurrency = url, token, concurrency
        self.seeded = 0  # environments filled so far (0 .. seeded-1)
        self.seconds = 0.0
        self.requests = 0

    def seed(self, envs: int) -> None:
        if envs > self.seeded:
            t0 = time.perf_counter()
            asyncio.run(self._seed(range(self.seeded, envs)))
            self.seconds += time.perf_counter() - t0
            self.seeded = envs

    async def _seed(self, indexes: range) -> None:
        limits = httpx.Limits(max_connections=self.concurrency,
                              max_keepalive_connections=self.concurrency)
        async with httpx.AsyncClient(base_url=self.url + "/api/v1", timeout=120, limits=limits,
                                     headers={"Authorization": f"Bearer {self.token}"}) as c:
            sem = asyncio.Semaphore(self.concurrency)

            async def request(method: str, path: str, **kw: Any) -> dict[str, Any]:
                async with sem:
                    r = await c.request(method, path, **kw)
                    self.requests += 1
                if r.status_code >= 400:
                    raise SystemExit(f"{method} {path}: {r.status_code} {r.text[:300]}")
                answer: dict[str, Any] = r.json()
                return answer

            projects = sorted({env_of(i)[0] for i in indexes if i % len(ENVS) == 0})
            await asyncio.gather(*(request("POST", "/projects", json={
                "name": p, "database": False}) for p in projects))
            await asyncio.gather(*(request("POST", f"/projects/{p}/environments", json={
                "name": name, "database": False}) for p in projects for name in ENVS[MADE_WITH:]))

            async def fill(index: int) -> dict[str, Any]:
                base = env_path(index) + "/services"
                media = await request("POST", base, json={"service": "local-media",
                                                          "prefix": MEDIA, "provision": True})
                await asyncio.gather(*(request("POST", base, json={
                    "service": "postgres-18", "prefix": p}) for p in DATABASES))
                return media["operation"]

            ops = await asyncio.gather(*(fill(i) for i in indexes))

            async def finished(op: dict[str, Any]) -> None:
                deadline = time.monotonic() + 600
                while op["status"] not in ("succeeded", "failed"):
                    if time.monotonic() > deadline:
                        raise SystemExit(f"operation {op['id']} did not finish in 600 s")
                    op = await request("GET", f"/operations/{op['id']}", params={"wait": 30})
                if op["status"] != "succeeded":
                    raise SystemExit(f"provisioning local media failed: {op}")

            await asyncio.gather(*(finished(op) for op in ops))


def measure_latency(client: httpx.Client, envs: int, samples: int, rng: random.Random,
                    server_pid: int) -> dict[str, dict[str, float]]:
    """`samples` timed calls of each endpoint, round-robin, on random seeded environments; then
    per endpoint a block of `samples` calls for the server's CPU time per call, which other
    work on the machine skews far less than the wall-clock times."""
    fresh = itertools.count()
    calls: dict[str, Callable[[], httpx.Response]] = {
        "service list": lambda: client.get(env_path(rng.randrange(envs)) + "/services",
                                           params={"removed": "false", "limit": 100}),
        "service show": lambda: client.get(
            env_path(rng.randrange(envs)) + "/services/"
            + rng.choice([MEDIA, *DATABASES]), params={"reveal": "false"}),
        # computed each time: a query the API has not seen is not answered from its kept
        # pages (those are what the rps benchmark measures); unknown parameters are ignored
        "env-vars --all": lambda: client.get(env_path(rng.randrange(envs)) + "/variables",
                                             params={"all": "true", "reveal": "false",
                                                     "limit": 100, "n": next(fresh)}),
        "project list": lambda: client.get("/projects", params={"limit": 100}),
    }
    for call in calls.values():  # warm up (first-call imports, caches, connection)
        for _ in range(5):
            call().raise_for_status()
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(samples):
        for name, call in calls.items():
            t0 = time.perf_counter()
            r = call()
            times[name].append((time.perf_counter() - t0) * 1000)
            r.raise_for_status()
    cpu: dict[str, float] = {}
    for name, call in calls.items():
        before = cpu_seconds(server_pid)
        for _ in range(samples):
            call().raise_for_status()
        cpu[name] = (cpu_seconds(server_pid) - before) * 1000 / samples
    return {name: {"p50_ms": round(statistics.median(ms), 2),
                   "p99_ms": round(percentile(ms, .99), 2),
                   "mean_ms": round(statistics.fmean(ms), 2), "n": len(ms),
                   "server_cpu_ms": round(cpu[name], 2)}
            for name, ms in times.items()}


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process `pid` so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class RawConnection:
    """A kept-alive HTTP/1.1 connection that sends one prepared GET again and again and reads
    each answer by its Content-Length: a client that costs far less CPU than the server it
    measures (httpx spends ~3 ms of CPU a request here, which on 2 shared cores would cap both
    sides alike and hide the server's own cost)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 request: bytes) -> None:
        self.reader, self.writer, self.request = reader, writer, request

    @classmethod
    async def open(cls, url: str, headers: dict[str, str],
                   params: dict[str, str]) -> RawConnection:
        u = httpx.URL(url).copy_merge_params(params)
        reader, writer = await asyncio.open_connection(u.host, u.port)
        lines = [f"GET {u.raw_path.decode()} HTTP/1.1", f"Host: {u.host}:{u.port}",
                 *(f"{k}: {v}" for k, v in headers.items())]
        return cls(reader, writer, ("\r\n".join(lines) + "\r\n\r\n").encode())

    async def get(self) -> None:
        self.writer.write(self.request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = head.split(b" ", 2)[1]
        length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")[1:]
                       if line.lower().startswith(b"content-length:")), None)
        if length is None:
            raise SystemExit(f"an answer without Content-Length: {head[:200]!r}")
        body = await self.reader.readexactly(length)
        if status != b"200":
            raise SystemExit(f"GET answered {status.decode()}: {body[:300]!r}")

    def close(self) -> None:
        self.writer.close()


async def _rate(url: str, headers: dict[str, str], params: dict[str, str], concurrency: int,
                seconds: float, max_requests: int, server_pid: int) -> dict[str, float]:
    """Requests per second of GET `url` with `concurrency` kept-alive connections, each sending
    its next request when the last is answered, for `seconds` (or `max_requests`, whichever
    comes first); also the CPU time per request of the server and of this client."""
    conns = [await RawConnection.open(url, headers, params) for _ in range(concurrency)]
    try:
        for conn in conns:  # warm up each connection
            await conn.get()
        done = 0
        server0, client0 = cpu_seconds(server_pid), time.process_time()
        t0 = time.perf_counter()
        end = t0 + seconds

        async def worker(conn: RawConnection) -> None:
            nonlocal done
            while time.perf_counter() < end and done < max_requests:
                done += 1
                await conn.get()

        await asyncio.gather(*(worker(c) for c in conns))
        elapsed = time.perf_counter() - t0
        server, client = cpu_seconds(server_pid) - server0, time.process_time() - client0
    finally:
        for conn in conns:
            conn.close()
    return {"requests": done, "seconds": round(elapsed, 2), "rps": round(done / elapsed, 1),
            "server_cpu_ms_per_request": round(server * 1000 / done, 3),
            "client_cpu_ms_per_request": round(client * 1000 / done, 3)}


def measure_rps(api: str, token: str, tether_pid: int, concurrency: int, seconds: float,
                rounds: int) -> dict[str, Any]:
    port = free_port()
    hello = subprocess.Popen([sys.executable, "-c", HELLO, str(port)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    hello_url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 30
        while not _healthy(hello_url):
            if time.monotonic() > deadline or hello.poll() is not None:
                raise SystemExit("the hello-world server did not start")
            time.sleep(0.1)
        sides: dict[str, tuple[str, dict[str, str], dict[str, str], int]] = {
            "hello-world": (hello_url, {}, {}, hello.pid),
            "env-vars --all": (api + env_path(0) + "/variables",
                               {"Authorization": f"Bearer {token}"},
                               {"all": "true", "reveal": "false", "limit": "100"}, tether_pid),
            # the floor of any API call: FastAPI's routing and the token's look-up in the store
            "status": (api + "/status", {"Authorization": f"Bearer {token}"}, {}, tether_pid),
        }
        runs: dict[str, list[dict[str, float]]] = {name: [] for name in sides}
        for i in range(rounds):  # interleaved, alternating which goes first
            order = list(sides) if i % 2 == 0 else list(reversed(sides))
            for name in order:
                url, headers, params, pid = sides[name]
                runs[name].append(asyncio.run(_rate(url, headers, params, concurrency, seconds,
                                                    200_000, pid)))
    finally:
        hello.send_signal(signal.SIGINT)
        try:
            hello.wait(10)
        except subprocess.TimeoutExpired:
            hello.kill()
    total = {name: sum(r["requests"] for r in rs) / sum(r["seconds"] for r in rs)
             for name, rs in runs.items()}
    cpu = {name: statistics.median(r["server_cpu_ms_per_request"] for r in rs)
           for name, rs in runs.items()}
    return {"concurrency": concurrency, "seconds_per_run": seconds, "rounds": rounds,
            "runs": runs, "rps": {k: round(v, 1) for k, v in total.items()},
            "ratio": round(total["env-vars --all"] / total["hello-world"], 3),
            # what the server alone could serve on one core: the figure the shared client and
            # the other work on the machine do not cap
            "server_cpu_ms_per_request": cpu,
            "cpu_bound_ratio": round(cpu["hello-world"] / cpu["env-vars --all"], 3),
            "status_ratio": round(total["status"] / total["hello-world"], 3),
            "environment": "10 services: 1 local-media (provisioned), 9 postgres-18 (new)",
            "server": "uvicorn (httptools, asyncio loop), one process, both sides"}


def plot(result: dict[str, Any]) -> bool:
    """scale.png: p50 and p99 per endpoint against the number of instances (log x)."""
    try:
        import matplotlib
    except ImportError:
        print("no plot: matplotlib is missing — install it with "
              "`.venv/bin/pip install -e '.[bench]'` (or `.venv/bin/pip install matplotlib`)",
              file=sys.stderr)
        return False
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stages = result["latency"]["stages"]
    xs = [s["instances"] for s in stages]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.4), sharex=True)
    for ax, key, title in ((axes[0], "p50_ms", "p50 latency"), (axes[1], "p99_ms", "p99 latency"),
                           (axes[2], "server_cpu_ms", "server CPU time")):
        for name in ENDPOINTS:
            ax.plot(xs, [s["endpoints"][name][key] for s in stages], marker="o", label=name)
        ax.set_xscale("log")
        ax.set_xlabel("instances in total")
        ax.set_ylabel("ms")
        ax.set_ylim(bottom=0)
        ax.set_title(f"{title} per REST call")
        ax.grid(True, alpha=.3)
    axes[0].legend(fontsize=8)
    rps = result.get("rps")
    note = (f"env-vars --all: {rps['rps']['env-vars --all']:.0f} req/s, "
            f"{rps['ratio'] * 100:.0f}% of a bare ASGI hello-world "
            f"({rps['rps']['hello-world']:.0f} req/s)" if rps else "")
    fig.suptitle(f"Tether API latency as the fleet grows (SQLite store, {result['machine']})"
                 + (f"\n{note}" if note else ""), fontsize=10)
    fig.tight_layout()
    PLOT.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(PLOT, dpi=110)
    plt.close(fig)
    return True


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--benchmarks", default=",".join(BENCHMARKS),
                        help=f"comma-separated, from {', '.join(BENCHMARKS)}")
    parser.add_argument("--instances", type=int, default=10_000,
                        help="instances at the last stage (10 per environment, 10 "
                             "environments per project); the stages are 10, 1/100 and 1/10 of "
                             "this, 10,000 (the first page of projects just full) and this")
    parser.add_argument("--samples", type=int, default=300,
                        help="timed calls per endpoint and stage")
    parser.add_argument("--concurrency", type=int, default=16,
                        help="requests under way at once, seeding and in the rps runs")
    parser.add_argument("--rps-seconds", type=float, default=8.0,
                        help="length of one rps run")
    parser.add_argument("--rps-rounds", type=int, default=4,
                        help="rps runs per side, interleaved")
    args = parser.parse_args()
    chosen = [b for b in args.benchmarks.split(",") if b]
    if not chosen or set(chosen) - set(BENCHMARKS):
        parser.error(f"--benchmarks: use names from {', '.join(BENCHMARKS)}")
    if args.instances < 100 or args.instances % (PER_ENV * len(ENVS)):
        parser.error(f"--instances: at least 100, a multiple of {PER_ENV * len(ENVS)} "
                     f"({PER_ENV} per environment, {len(ENVS)} environments per project)")
    if args.samples < 10 or args.concurrency < 1 or args.rps_seconds <= 0 or args.rps_rounds < 1:
        parser.error("--samples at least 10, --concurrency, --rps-seconds and --rps-rounds "
                     "positive")
    stages = sorted({max(PER_ENV, n // PER_ENV * PER_ENV) for n in (
        PER_ENV, args.instances // 100, args.instances // 10, args.instances,
        min(FULL_PAGE * len(ENVS) * PER_ENV, args.instances))})

    base = Path(tempfile.mkdtemp(prefix="tether-bench-scale-"))
    os.chmod(base, 0o755)  # noqa: S103 - the embedded PostgreSQL's system user must traverse it
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TETHER_")}
    env["XDG_CONFIG_HOME"] = str(base / "config")
    env["TETHER_ENV_PORTS"] = os.environ.get("TETHER_ENV_PORTS", "none")
    up = subprocess.Popen([str(Path(sys.executable).parent / "tether"), "up", "--data-dir",
                           str(base / "data"), "--port", str(port),
                           "--media-port", str(free_port()), "--apps-port", str(free_port())],
                          env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    result: dict[str, Any] = {
        "benchmark": "API latency as the fleet grows; env-vars rps against a bare ASGI app",
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python "
                   f"{platform.python_version()}",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "store": "sqlite",
        "load_before": load(),
        "note": "the machine may be shared: load_before and load_after say how busy it was",
    }
    try:
        config = base / "config" / "tether" / "config.json"
        deadline = time.monotonic() + 90
        while not config.exists() or not _healthy(url + "/healthz"):
            if time.monotonic() > deadline or up.poll() is not None:
                raise SystemExit("tether up did not start")
            time.sleep(0.2)
        token = next(c["token"] for c in json.loads(config.read_text())["contexts"].values()
                     if c["url"] == url)
        seeder = Seeder(url, token, args.concurrency)
        client = httpx.Client(base_url=url + "/api/v1", timeout=60,
                              headers={"Authorization": f"Bearer {token}"})
        rng = random.Random(12)
        if "latency" in chosen:
            rows = []
            for instances in stages:
                envs = instances // PER_ENV
                seeder.seed(envs)
                print(f"{instances} instances seeded ({seeder.seconds:.0f} s so far); "
                      "measuring", file=sys.stderr)
                rows.append({"instances": instances, "environments": envs,
                             "projects": -(-envs // len(ENVS)), "load": load(),
                             "endpoints": measure_latency(client, envs, args.samples, rng,
                                                          up.pid)})
            first, last = rows[0]["endpoints"], rows[-1]["endpoints"]
            result["latency"] = {
                "samples": args.samples,
                "seeding": {"instances": seeder.seeded * PER_ENV,
                            "seconds": round(seeder.seconds, 1),
                            "requests": seeder.requests,
                            "instances_per_second": round(seeder.seeded * PER_ENV
                                                          / seeder.seconds, 1),
                            "concurrency": args.concurrency},
                "stages": rows,
                "p99_last_over_first": {n: round(last[n]["p99_ms"] / first[n]["p99_ms"], 2)
                                        for n in ENDPOINTS},
            }
            full = next((r for r in rows if r["projects"] >= FULL_PAGE), None)
            if full is not None and full is not rows[-1]:
                result["latency"]["project_list_p99_last_over_first_full_page"] = {
                    "first_full_page_at": full["instances"],
                    "ratio": round(last["project list"]["p99_ms"]
                                   / full["endpoints"]["project list"]["p99_ms"], 2)}
            result["latency"]["flat"] = all(v <= 2 for v in
                                            result["latency"]["p99_last_over_first"].values())
        if "rps" in chosen:
            seeder.seed(1)
            print("measuring requests per second", file=sys.stderr)
            result["rps"] = measure_rps(url + "/api/v1", token, up.pid, args.concurrency,
                                        args.rps_seconds, args.rps_rounds)
        client.close()
    finally:
        up.send_signal(signal.SIGINT)
        try:
            up.wait(120)
        except subprocess.TimeoutExpired:
            up.kill()
        subprocess.run(["rm", "-rf", str(base)], check=False)
    result["load_after"] = load()

    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    if "latency" in result:
        print("| instances | " + " | ".join(f"{n} p50 / p99 ms (server CPU ms)"
                                            for n in ENDPOINTS) + " |")
        print("|---" * (len(ENDPOINTS) + 1) + "|")
        for row in result["latency"]["stages"]:
            print(f"| {row['instances']} | " + " | ".join(
                f"{row['endpoints'][n]['p50_ms']:.1f} / {row['endpoints'][n]['p99_ms']:.1f} "
                f"({row['endpoints'][n]['server_cpu_ms']:.1f})" for n in ENDPOINTS) + " |")
        print("p99 last/first:", result["latency"]["p99_last_over_first"],
              "flat" if result["latency"]["flat"] else "NOT flat")
        if "project_list_p99_last_over_first_full_page" in result["latency"]:
            print("project list, p99 last / first with a full first page:",
                  result["latency"]["project_list_p99_last_over_first_full_page"])
    if "rps" in result:
        r = result["rps"]
        print(f"rps: env-vars --all {r['rps']['env-vars --all']}, hello-world "
              f"{r['rps']['hello-world']}, ratio {r['ratio']:.2f}; server CPU ms per request "
              f"{r['server_cpu_ms_per_request']}, ratio {r['cpu_bound_ratio']:.2f}")
    if "latency" in result and plot(result):
        print(f"plot: {PLOT.relative_to(ROOT)}")
    print(f"written to {RESULTS.relative_to(ROOT)}")
    return 0


def _healthy(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


if __name__ == "__main__":
    raise SystemExit(main())
