"""Crash during backup and during restore (issue 10): a real `tether up` on the embedded default
(PostgreSQL, backups kept on the embedded local-files storage, in `<data dir>/media-backups`)
ended by SIGKILL from inside at each crash point of `tether.engine.backups`, then started again
on the same data dir (one chain of starts, each armed at the next point, like tests/crash.py):

- `backup.dumped` (the sealed file in staging, not yet stored) and `backup.stored` (in the
  storage, not yet recorded): the interrupted backup is run again after the restart and
  completes, with the data it was asked for;
- `restore.fetched` (the file fetched into staging, before pg_restore): the restore is run
  again and the target holds the backup's data, its app's DSN logs in and may write.

After every restart, once the operations converged: nothing is listed that cannot be restored
(every listed backup is restored and the table compared with what it was taken of), no backup is
left running or failed, the staging dir is empty, and the storage holds exactly the recorded
files (no file without a record, no record without its file)."""

from __future__ import annotations

import contextlib
import shutil
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from sqlalchemy import func, select

from tests.conftest import world_traversable_tmpdir
from tests.crash import CrashRun, Provider
from tether.store.models import Backup, BackupFile, Operation

pytestmark = pytest.mark.e2e

Rows = list[tuple[Any, ...]]


class BackupCrashRun(CrashRun):
    """The chain's checks, on top of the crash matrix's process handling."""

    def __init__(self, base: Path) -> None:
        super().__init__(base, Provider("postgres", "postgres", embedded=True))
        #: what each backup was taken of (backup id -> the rows of `items`)
        self.expected: dict[int, Rows] = {}
        self._dsn: dict[str, str] = {}
        self._began = self._last = time.monotonic()

    def step(self, name: str) -> None:
        """Print how long a link of the chain took (shown when the test fails, or with -s)."""
        now = time.monotonic()
        print(f"{name}: {now - self._last:.1f} s (total {now - self._began:.1f} s)", flush=True)
        self._last = now

    def dsn(self, env: str) -> str:
        """The DSN the app of `env` gets (its variables at the next deploy; a restore keeps
        the instance's credentials, so it is read once)."""
        if env not in self._dsn:
            self._dsn[env] = self.tether.ok("project", "env-vars", "-e", env, "--all", "--get",
                                            "DEFAULT_DATABASE_DSN", "-p",
                                            self.project).out.strip()
        return self._dsn[env]

    def fill(self, env: str, label: str, rows: int) -> Rows:
        with psycopg.connect(self.dsn(env), autocommit=True) as conn:
            conn.execute("DROP TABLE IF EXISTS items")
            conn.execute("CREATE TABLE items (id serial PRIMARY KEY, label text, data bytea)")
            conn.execute("INSERT INTO items (label, data) SELECT %s || i, "
                         "decode(md5(%s || i), 'hex') FROM generate_series(1, %s) AS i",
                         (label, label, rows))
        return self.content(env)

    def content(self, env: str) -> Rows:
        """The rows of `items`, read with the app's DSN (so that DSN logs in)."""
        with psycopg.connect(self.dsn(env), autocommit=True) as conn:
            return list(conn.execute("SELECT id, label, data FROM items ORDER BY id").fetchall())

    def usable(self, env: str) -> None:
        """The app's DSN logs in and may write the restored table (it owns what it restored)."""
        with psycopg.connect(self.dsn(env), autocommit=True) as conn:
            conn.execute("INSERT INTO items (label) VALUES ('written after restore')")
            conn.execute("DELETE FROM items WHERE label = 'written after restore'")

    def backup_id(self, answer: Any) -> int:
        """The id of the backup a `trigger`ed create made: from its answer, or (when the crash
        came before the answer) the newest in the store, read while `tether up` is down."""
        if answer is not None:
            return int(answer["id"])
        store, _ = self._store()
        try:
            with store.session() as s:
                newest = s.scalar(select(func.max(Backup.id)))
        finally:
            store.dispose()
        assert newest is not None, "the crash came before the backup was recorded"
        return int(newest)

    def restore_answer(self, backup_id: int, *extra: str) -> Any:
        """`backup restore` into live (the CLI's restore takes no --project: ids are global);
        None when the armed crash came before the API's answer."""
        result = self.tether.cli("backup", "restore", str(backup_id), "--to", "live",
                                 "--confirm", "DEFAULT", "--json", *extra)
        if result.code == 0:
            return result.json()
        assert result.code == 1 and "unreachable" in result.out + result.err, result
        return None

    def held_upload(self, env: str) -> threading.Event:
        """An upload of a dump into `env`'s DEFAULT that sends its first bytes and then waits
        (until the returned event is set): while it waits, its sealed file is being written
        in staging, as any upload's is while a crash hits. Returns once that file is there."""
        release = threading.Event()

        def body() -> Iterator[bytes]:
            yield b"PGDMP" + b"\0" * 1024  # what `check_plain` wants to see first
            release.wait(120)

        def send() -> None:
            url = (f"{self.tether.url}/api/v1/projects/{self.project}/environments/{env}"
                   "/services/DEFAULT/upload")
            with contextlib.suppress(httpx.HTTPError):  # the crash ends it
                httpx.put(url, params={"confirm": "DEFAULT"}, content=body(), timeout=120,
                          headers={"Authorization": f"Bearer {self.tether.token()}"})

        threading.Thread(target=send, daemon=True).start()
        staging = self.tether.data_dir / "backups" / "staging"
        deadline = time.monotonic() + 30
        while not (staging.is_dir() and any(p.name.startswith("upload-")
                                           for p in staging.iterdir())):
            assert time.monotonic() < deadline, "the upload never reached staging"
            time.sleep(0.1)
        return release

    def operations(self, kind: str) -> list[Operation]:
        store, _ = self._store()
        try:
            with store.session() as s:
                found = list(s.scalars(select(Operation).where(Operation.kind == kind)
                                       .order_by(Operation.id)))
                s.expunge_all()
                return found
        finally:
            store.dispose()

    def wait_operations(self, timeout: float = 120) -> None:
        """Every backup and restore operation finished; each one succeeded."""
        deadline = time.monotonic() + timeout
        while True:
            ops = self.operations("backup") + self.operations("restore")
            if all(op.status in ("succeeded", "failed") for op in ops):
                break
            if time.monotonic() > deadline:
                raise AssertionError(f"unfinished: {[(o.id, o.kind, o.status) for o in ops]}"
                                     f"\n{self.tether.log_tail()}")
            time.sleep(0.2)
        failed = [(o.id, o.kind, o.error) for o in ops if o.status != "succeeded"]
        assert not failed, failed

    def resumed(self, kind: str) -> Operation:
        """The newest `kind` operation ran (at least) twice: cut by the crash, run again."""
        op = self.operations(kind)[-1]
        assert op.status == "succeeded" and op.attempts >= 2, (op.id, op.status, op.attempts)
        return op

    def check_leftovers(self) -> None:
        """No staging file, and the storage holds exactly the recorded files."""
        staging = self.tether.data_dir / "backups" / "staging"
        left = sorted(p.name for p in staging.iterdir()) if staging.exists() else []
        assert left == [], f"left in staging: {left}"
        root = self.tether.data_dir / "media-backups"
        on_disk = sorted(p.relative_to(root).as_posix() for p in root.rglob("*")
                         if not p.is_dir()) if root.exists() else []
        store, _ = self._store()
        try:
            with store.session() as s:
                recorded = sorted(str(f.storage_key) for f in s.scalars(
                    select(BackupFile).where(BackupFile.status == "stored")))
        finally:
            store.dispose()
        assert on_disk == recorded, (on_disk, recorded)

    def check_listed(self, restore: bool = True) -> None:
        """Every backup made is completed (none left running or failed) and listed; each
        listed one restores what it was taken of."""
        store, _ = self._store()
        try:
            with store.session() as s:
                statuses = {b.id: b.status for b in s.scalars(select(Backup))}
        finally:
            store.dispose()
        assert statuses == dict.fromkeys(self.expected, "completed"), statuses
        listed = self.ok("backup", "list")
        assert sorted(b["id"] for b in listed) == sorted(self.expected), listed
        assert all(b["restorable"] and all(f["status"] == "stored" for f in b["files"])
                   for b in listed), listed
        if not restore:
            return
        for b in listed:
            answer = self.restore_answer(int(b["id"]))
            assert answer is not None and answer["operation"]["status"] == "succeeded", answer
            assert self.content("live") == self.expected[int(b["id"])], b["id"]
            self.usable("live")


def test_backup_and_restore_survive_sigkill_at_each_crash_point() -> None:
    base = world_traversable_tmpdir("tether-bkcrash-")
    run = BackupCrashRun(base)
    try:
        # 1. a backup cut after its file was dumped into staging, before it was stored
        run.start("backup.dumped")
        run.step("first start")
        run.tether.ok("project", "create", run.project, "--app-command",
                      f"{sys.executable} examples/hello/app.py", "--health-path", "/health",
                      "--no-database")
        for env in ("test", "live"):  # the two environments' operations run side by side
            run.ok("service", "add", env, "postgres", "--prefix", "DEFAULT", "--provision",
                   "--no-wait")
        for env in ("test", "live"):
            assert run.ok("service", "wait", env, "DEFAULT")["state"] == "pending attachment"
        run.step("project with DEFAULT provisioned in test and live")
        one = run.fill("test", "one", 300)
        # an upload into live is streaming when the crash hits: its staging file must go too
        release = run.held_upload("live")
        first = run.backup_id(run.trigger("backup", "create", "test", "--no-wait"))
        run.expected[first] = one
        run.crashed()
        release.set()
        run.step("backup.dumped")

        # 2. it is run again after the restart and completes (with nothing to restore yet:
        # restores would reach this start's armed point); then a restore into live cut after
        # the file was fetched, before pg_restore ran (live's data changed first, so only the
        # restore brings `one` back)
        run.start("restore.fetched")
        run.wait_operations()
        run.resumed("backup")
        run.check_leftovers()
        run.check_listed(restore=False)
        run.fill("live", "changed", 7)
        run.restore_answer(first, "--no-wait")
        run.crashed()
        run.step("restore.fetched")

        # 3. the restore is run again: live holds the backup's data and its DSN logs in; then a
        # backup cut after its file was stored, before it was recorded
        run.start("backup.stored")
        run.wait_operations()
        run.resumed("restore")
        assert run.content("live") == one
        run.usable("live")
        run.check_leftovers()
        run.check_listed()
        two = run.fill("test", "two", 500)
        assert two != one
        second = run.backup_id(run.trigger("backup", "create", "test", "--no-wait"))
        run.expected[second] = two
        run.crashed()
        run.step("backup.stored")

        # 4. it completes (its file stored again under the same key, no second file): every
        # listed backup restores what it was taken of
        run.start(None)
        run.wait_operations()
        run.resumed("backup")
        run.check_leftovers()
        run.check_listed()
        run.check_leftovers()  # the restores' staging files are gone too
        run.stop()
        run.step("converged")
    finally:
        run.clean_up()
        shutil.rmtree(base, ignore_errors=True)
