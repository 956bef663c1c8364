"""Round trips of the engine's hot path (issue 12): a provision and a removal each end their
operation in the same transaction that records the instance's final state (one commit, and no
moment where the state says done while the operation still runs), and take a small, fixed number
of statements and commits."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

from tests.plane import APP_COMMAND, local_plane
from tether.actions import deployments, projects, services
from tether.actions.common import Context
from tether.engine.core import Engine
from tether.providers.local_files import LocalFilesProvider
from tether.store.models import Instance

pytestmark = pytest.mark.integration


class Recorder:
    """Every statement and commit on the store, with the thread that made it."""

    def __init__(self, ctx: Context) -> None:
        self.entries: list[tuple[str, str]] = []
        self.on = False
        engine = ctx.store.engine
        event.listen(engine, "before_cursor_execute", self._statement)
        event.listen(engine, "commit", self._commit)

    def _statement(self, _conn: object, _cursor: object, statement: str, *_args: object) -> None:
        if self.on:
            self.entries.append((threading.current_thread().name, " ".join(statement.split())))

    def _commit(self, _conn: object) -> None:
        if self.on:
            self.entries.append((threading.current_thread().name, "COMMIT"))

    def transactions(self, thread_prefix: str) -> list[list[str]]:
        """The statements of one kind of thread, cut at each commit (committed ones only)."""
        done: list[list[str]] = []
        current: list[str] = []
        for thread, statement in self.entries:
            if thread != thread_prefix and not (thread_prefix.endswith("-")
                                            and thread.startswith(thread_prefix)):
                continue
            if statement == "COMMIT":
                done.append(current)
                current = []
            else:
                current.append(statement)
        return [t for t in done if t]


@pytest.fixture
def world(tmp_path: Path) -> Iterator[tuple[Context, Engine, Recorder]]:
    with local_plane(tmp_path) as ctx:
        engine = Engine(ctx.store, ctx.box, ctx.data_dir)
        ctx.notify = engine.notify
        engine.start()
        try:
            projects.create_project(ctx, "shop", database=False)
            yield ctx, engine, Recorder(ctx)
        finally:
            engine.stop()


def run(ctx: Context, engine: Engine, recorder: Recorder, operation_id: int) -> dict[str, object]:
    generation = engine.worker.generation
    while True:
        op = deployments.get_operation(ctx, operation_id)  # on this thread: not counted
        if op["status"] in ("succeeded", "failed"):
            recorder.on = False
            return op
        engine.worker.wait_for_change(generation, 5.0)
        generation = engine.worker.generation


def test_the_final_state_and_the_operations_end_commit_together(
        world: tuple[Context, Engine, Recorder]) -> None:
    ctx, engine, recorder = world
    warm = services.add(ctx, "shop", "test", "local-media", prefix="WARM", provision=True)
    run(ctx, engine, recorder, warm["operation"]["id"])  # caches warmed
    for prefix in ("MEDIA", "FILES"):
        recorder.entries.clear()
        recorder.on = True
        view = services.add(ctx, "shop", "test", "local-media", prefix=prefix, provision=True)
        op_id = view["operation"]["id"]
        assert run(ctx, engine, recorder, op_id)["status"] == "succeeded"
        handler = recorder.transactions(f"tether-op-{op_id}")
        # the plan (state provisioning, cluster, secret), then the result with the operation
        assert len(handler) == 2, handler
        last = handler[-1]
        assert any(s.startswith("UPDATE instances SET state=") for s in last), last
        assert any(s.startswith("UPDATE operations SET status=") for s in last), last
        assert sum(len(t) for t in handler) <= 6, handler
        # the worker's claim: one statement in one transaction (besides its looks for work)
        claims = [t for t in recorder.transactions("tether-worker")
                  if any(s.startswith("UPDATE operations SET status=") for s in t)]
        assert len(claims) == 1 and len(claims[0]) == 2, claims

    recorder.entries.clear()
    recorder.on = True
    removing = services.remove(ctx, "shop", "test", "MEDIA", confirm="MEDIA")
    op_id = removing["operation"]["id"]
    assert run(ctx, engine, recorder, op_id)["status"] == "succeeded"
    last = recorder.transactions(f"tether-op-{op_id}")[-1]
    assert any(s.startswith("UPDATE instances SET") and "state=" in s for s in last), last
    assert any(s.startswith("UPDATE operations SET status=") for s in last), last


def test_a_deploy_that_provisions_on_its_way_is_not_ended_by_the_provision(
        world: tuple[Context, Engine, Recorder]) -> None:
    """A deploy provisions its new instances itself: the provision's result must not end the
    deploy's operation (it did, for a moment of this change: the deploy read `succeeded` while
    its instance was still `pending attachment`)."""
    ctx, engine, recorder = world
    projects.update_project(ctx, "shop", app_command=APP_COMMAND)
    services.add(ctx, "shop", "test", "local-media", prefix="MEDIA")
    recorder.entries.clear()
    recorder.on = True
    dep = deployments.deploy(ctx, "shop", "test")
    op_id = dep["operation"]["id"]
    assert run(ctx, engine, recorder, op_id)["status"] == "succeeded"
    assert services.show(ctx, "shop", "test", "MEDIA")["state"] == "attached"
    # the operation's end is the deploy thread's last write, after the provision's result
    done = recorder.transactions(f"tether-op-{op_id}")
    ends = [i for i, t in enumerate(done)
            if any(s.startswith("UPDATE operations SET status=") for s in t)]
    assert ends == [len(done) - 1], done


def test_provisioning_a_new_instance_writes_it_once_a_transaction(
        world: tuple[Context, Engine, Recorder]) -> None:
    """A deploy provisions the `new` instances it attaches: the plan reads the project and the
    cluster before it changes the state, so the instance is written by one UPDATE, not two
    (the old order flushed the state before the cluster's look-up)."""
    ctx, engine, recorder = world
    for prefix in ("WARM", "NEW"):
        added = services.add(ctx, "shop", "test", "local-media", prefix=prefix)
        recorder.entries.clear()
        recorder.on = prefix == "NEW"
        engine.provision_instance(int(added["id"]), "alice")  # as a deploy does, on its thread
    recorder.on = False
    plan, result = recorder.transactions(threading.current_thread().name)
    assert [s for s in plan if s.startswith("UPDATE instances")] == [
        next(s for s in plan if s.startswith("UPDATE instances"))], plan
    assert any("state=" in s and "cluster_id=" in s for s in plan), plan
    assert sum(s.startswith("UPDATE instances") for s in result) == 1, result


def test_a_waited_add_takes_few_statements_on_each_step(
        world: tuple[Context, Engine, Recorder]) -> None:
    """`POST …/services?wait=` on the request's thread (issue 12's provisioning benchmark): the
    add, which claims its operation as it queues it (`Worker.claim_in`) and makes the handler's
    plan there, the handler run by `Worker.run_here`, and the answer. Old main: 10 statements to
    add, a claim transaction of 2, two transactions of 9 in the handler and 6 to answer (the
    project and its environment looked up one after the other, the instance, environment and
    project of the plan one by one, the answer finding everything by name again; the result
    written after reading the instance again). Then 12 to add: the clusters read twice, to
    resolve the service and to choose its cluster, and the instance inserted as `new` then
    updated to `provisioning`. Then 10: the plan's cluster and secret written by an UPDATE of
    the instance just inserted, and each audit entry inserted by the ORM's unit of work with
    its id returned; and 2 to answer (the instance's other unfinished operations asked
    apart). Then 9: the environment, the live instance of the prefix and the custom variables
    read one after the other."""
    ctx, engine, recorder = world
    # as the API calls it: the loop is not told, the operation is claimed as it is queued
    waited = dataclasses.replace(ctx, notify=lambda: None, claim=engine.worker.claim_in)
    for prefix in ("WARM", "MEDIA"):
        recorder.entries.clear()
        recorder.on = prefix == "MEDIA"
        added = services.add(waited, "shop", "test", "local-media", prefix=prefix,
                             provision=True)
        assert added["operation"]["status"] == "running"
        op_id = added["operation"]["id"]
        ran, answer = engine.worker.run_here(
            op_id, lambda p=prefix, o=op_id: services.after_operation(ctx, "shop", "test", p, o))
        recorder.on = False
        assert ran and answer is not None
    assert answer["state"] == "pending attachment"
    assert answer["operation"]["status"] == "succeeded"
    # the plan (state, cluster, secret) is made in the add's transaction too: no transaction
    # of its own before the provider's call
    add, result, answering = recorder.transactions(threading.current_thread().name)
    # the instance is written once in the state the provision leads to, not added then moved
    assert not any(s.startswith("UPDATE instances SET state=") for s in add), add
    # the clusters are read once: the service is resolved and the cluster chosen from them
    assert sum(s.startswith("SELECT clusters.") for s in add) == 1, add
    assert any(s.startswith("UPDATE operations SET status=") for s in add), add
    # the claim is a plain UPDATE: the session's operation is given what it wrote, no entity
    # is returned and loaded again
    assert not any("RETURNING" in s for s in add if s.startswith("UPDATE operations")), add
    # the plan (cluster, secret) is written with the instance: one INSERT, no UPDATE of it
    assert not any(s.startswith("UPDATE instances") for s in add), add
    # the environment, its project, the live instance of the prefix and the custom variables
    # in one statement, then the clusters
    assert add[0].startswith("SELECT environments.") and "variables" in add[0], add
    assert add[1].startswith("SELECT clusters."), add
    assert len(add) <= 7, add
    # audit entries are plain INSERTs made at once (no unit of work, no id returned)
    audits = [s for s in add + result if s.startswith("INSERT INTO audit")]
    assert len(audits) == 3 and not any("RETURNING" in s for s in audits), audits
    assert len(result) <= 3, result
    # the answer: the operation, its instance and what else of it waits in one statement
    assert len(answering) == 1, answering


def test_a_result_for_an_instance_changed_meanwhile_follows_the_rules(
        world: tuple[Context, Engine, Recorder], monkeypatch: pytest.MonkeyPatch) -> None:
    """A provision's result is written as a compare-and-set on `provisioning` (no read
    first); when the instance left `provisioning` during the provider's call, the result is
    recorded from the state it has then, as the rules say, credentials included."""
    ctx, engine, _recorder = world
    added = services.add(ctx, "shop", "test", "local-media", prefix="MEDIA")
    real = LocalFilesProvider.provision

    def provision(self: LocalFilesProvider, *args: Any) -> Any:
        creds = real(self, *args)
        with ctx.store.session() as s:  # moved back meanwhile (as a recovery might)
            inst = s.get(Instance, added["id"])
            assert inst is not None and inst.state == "provisioning"
            inst.state = "new"
        return creds

    monkeypatch.setattr(LocalFilesProvider, "provision", provision)
    engine.provision_instance(int(added["id"]), "alice")
    shown = services.show(ctx, "shop", "test", "MEDIA")
    assert shown["state"] == "pending attachment"
    assert shown["variables"] and set(shown["variables"]) == set(
        LocalFilesProvider.var_names("MEDIA"))  # the credentials were recorded
    assert [(h["from"], h["to"]) for h in shown["history"]][-1] == ("new", "pending attachment")


def test_a_drift_pass_records_an_instance_in_sync_in_one_transaction(
        world: tuple[Context, Engine, Recorder]) -> None:
    """The drift pass, for an instance found as it should be (most instances, most passes),
    checks that it is still idle and records the observation in one transaction. Old main took
    two (the check, then the record): 20,000 transactions a pass over 10,000 instances, each
    taking the GIL from the requests served meanwhile."""
    ctx, engine, recorder = world
    for prefix in ("A", "B", "C"):
        added = services.add(ctx, "shop", "test", "local-media", prefix=prefix, provision=True)
        operation = added["operation"]
        assert isinstance(operation, dict)
        assert run(ctx, engine, recorder, int(operation["id"]))["status"] == "succeeded"
    recorder.entries.clear()
    recorder.on = True
    report = engine.reconciler.run_once()
    recorder.on = False
    assert sorted(report.in_sync) == sorted(report.observed) and len(report.in_sync) == 3, report
    done = recorder.transactions(threading.current_thread().name)
    records = [t for t in done if any(s.startswith("UPDATE instances SET drift=") for s in t)]
    assert len(records) == 3, done
    # the idle check is in the recording transaction, and there is no other per instance
    assert all(any("FROM operations" in s for s in t) for t in records), records
    assert len(done) <= len(records) + 2, done  # + the pass's own reads (targets, retired)
    for prefix in ("A", "B", "C"):
        assert services.show(ctx, "shop", "test", prefix)["observed_at"] is not None
