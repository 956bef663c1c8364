"""Worker nodes for the multi-node tests: a throw-away PostgreSQL store, environments and queued
operations inserted directly, and a node in its own OS process:

    python -m tests.nodeproc URL NODE_ID [--lease S] [--heartbeat S] [--parallel N]

The node's only handler (`touch`) records each execution as a row of `executions` in the same
database, committed before it returns (a real side effect the test can count), after a few ms of
work. SIGTERM stops the node cleanly (`Worker.stop`); SIGKILL is the crash."""

from __future__ import annotations

import argparse
import contextlib
import random
import signal
import sys
import threading
import time
from collections.abc import Iterator

import psycopg
from sqlalchemy import insert, text

from tether.engine.worker import Worker
from tether.store.db import Store
from tether.store.models import Environment, Operation, Project

EXECUTIONS = """
CREATE TABLE executions (
    op_id integer NOT NULL,
    env_id integer NOT NULL,
    node text NOT NULL,
    started double precision NOT NULL,
    finished double precision NOT NULL,
    at timestamptz NOT NULL DEFAULT clock_timestamp()
)"""


@contextlib.contextmanager
def pg_store(admin_url: str, name: str) -> Iterator[Store]:
    """A migrated store in a new database `name` on the test server, dropped afterwards."""
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    store = Store(admin_url.rsplit("/", 1)[0] + "/" + name)
    try:
        store.migrate()
        yield store
    finally:
        store.dispose()
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


def make_environments(store: Store, count: int, project: str = "nodes") -> list[int]:
    """`count` environments of one new project (rows inserted directly: no cluster needed)."""
    with store.session() as s:
        proj = Project(name=project, region="local")
        s.add(proj)
        s.flush()
        envs = [Environment(project_id=proj.id, name=f"e{i}", port=40000 + i,
                            secret_key_enc="unused") for i in range(count)]
        s.add_all(envs)
        s.flush()
        return [env.id for env in envs]


def queue_operations(store: Store, env_ids: list[int], count: int,
                     kind: str = "touch") -> list[int]:
    """`count` queued operations spread round-robin over `env_ids`; their ids, in order."""
    rows = [{"kind": kind, "environment_id": env_ids[i % len(env_ids)], "status": "queued",
             "requested_by": "test", "attempts": 0} for i in range(count)]
    with store.session() as s:
        ids = s.scalars(insert(Operation).returning(Operation.id), rows).all()
    return sorted(ids)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.nodeproc")
    parser.add_argument("url")
    parser.add_argument("node_id")
    parser.add_argument("--lease", type=float, default=15.0)
    parser.add_argument("--heartbeat", type=float, default=3.0)
    parser.add_argument("--parallel", type=int, default=4)
    parser.add_argument("--work-ms", type=float, nargs=2, default=(2.0, 6.0),
                        metavar=("MIN", "MAX"), help="how long each operation's work takes")
    args = parser.parse_args(argv)
    store = Store(args.url)

    def touch(op: Operation) -> str:
        started = time.time()
        time.sleep(random.uniform(*args.work_ms) / 1000)  # the work
        with store.engine.begin() as conn:
            conn.execute(text("INSERT INTO executions (op_id, env_id, node, started, finished) "
                              "VALUES (:op, :env, :node, :started, :finished)"),
                         {"op": op.id, "env": op.environment_id, "node": args.node_id,
                          "started": started, "finished": time.time()})
        return f"touched by {args.node_id}"

    worker = Worker(store, {"touch": touch}, max_parallel=args.parallel, node_id=args.node_id,
                    lease=args.lease, heartbeat=args.heartbeat)
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    worker.start()
    print("ready", flush=True)
    while not stopping.wait(0.2):
        pass
    worker.stop(5.0)
    store.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
