"""What the "drift during a rotation" tests share (issue 8, second review, finding 8): while a
running release still logs in with a rotation's old login, the reconcile pass observes the
instance with that login accepted as valid, reports drift made by hand (history and audit) but
does not repair it (a repair would lock the old login); once a deployment finishes the rotation,
the next pass repairs it. Real servers, a real application process, no mocks.

On the previous code the pass skipped such an instance altogether: nothing was observed."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from tests.integration.rotation_app import App, instance_row, observe
from tests.plane import wait_op
from tether.actions import services
from tether.actions.common import Context
from tether.engine.reconcile import Reconciler
from tether.engine.rotation import names_of
from tether.providers.registry import get_provider
from tether.store.models import Cluster
from tether.store.records import cluster_spec


def observe_with_retiring(ctx: Context, project: str) -> tuple[str, ...]:
    """What the provider finds different, with the instance's retiring logins accepted."""
    inst = instance_row(ctx, project)
    shown = services.show(ctx, project, "test", "DEFAULT")
    with ctx.store.session() as s:
        cluster = s.get(Cluster, inst.cluster_id)
        assert cluster is not None
        spec = cluster_spec(ctx.box, cluster)
    names = replace(names_of(inst), retiring=tuple(shown["retiring_logins"]))  # type: ignore[arg-type]
    return get_provider(inst.kind).observe(spec, names).differences


def drift_during_a_rotation(ctx: Context, tmp_path: Path, name: str, kind: str,
                            logs_in: Callable[[str], bool],
                            make_drift: Callable[[str], None],
                            expected: Callable[[str], list[str]]) -> None:
    """Rotate a deployed app's DEFAULT service without finishing the rotation (its deployment
    fails: the running release keeps the old login), then: a pass finds it in sync; drift made
    by `make_drift(base)` is found (each of `expected(base)` in its words), recorded and
    audited, not repaired, and the old login still works; after a deployment that finishes the
    rotation, the next pass repairs it."""
    app = App(ctx, tmp_path, name, kind, health_timeout=8)
    added = services.add(ctx, name, "test", kind, "DEFAULT")
    app.deploy_ok()
    inst_id, base = int(added["id"]), f"tether_i{added['id']}"  # type: ignore[call-overload]
    old_dsn = app.dsn()
    app.gate.unlink()  # the rotation's deployment fails: the running release keeps the old login
    op = wait_op(ctx, services.rotate(ctx, name, "test", "DEFAULT")["operation"]["id"])  # type: ignore[index]
    assert op["status"] == "succeeded" and op["deployment_id"], op
    app.wait_deployment(int(op["deployment_id"]), expect="failed")
    new_dsn = app.dsn()
    assert services.show(ctx, name, "test", "DEFAULT")["retiring_logins"] == [base]
    reconciler = Reconciler(ctx.store, ctx.box, ctx.data_dir)

    # (a) observed, and the old login in use is no difference
    report = reconciler.run_once()
    assert inst_id in report.in_sync, report
    assert services.show(ctx, name, "test", "DEFAULT")["drift"] is None
    assert logs_in(old_dsn) and logs_in(new_dsn) and app.user() == base

    # (b) drift made by hand is reported, recorded, audited, and not repaired
    make_drift(base)
    wanted = expected(base)
    for _ in range(2):  # the second pass finds the same: nothing new audited
        report = reconciler.run_once()
        assert inst_id in report.drifted and inst_id in report.unrepaired, report
        assert inst_id not in report.repaired
    shown = services.show(ctx, name, "test", "DEFAULT")
    drift = str(shown["drift"])
    assert all(words in drift for words in wanted), (wanted, drift)
    assert (f"not repaired while a rotation's old login ({base}) is in use: deploy test to "
            "finish the rotation") in drift, drift
    found = [h for h in shown["history"] if h["action"] == "drift found"]  # type: ignore[union-attr]
    assert len(found) == 1 and all(words in str(found[0]["detail"]) for words in wanted), found
    assert found[0]["actor"] == "reconciler"
    still = observe_with_retiring(ctx, name)  # nothing was changed on the server
    assert all(any(words in difference for difference in still) for words in wanted), still
    assert logs_in(old_dsn) and app.user() == base  # the running release still logs in

    # the deployment finishes the rotation (the old login revoked); the next pass repairs
    app.gate.touch()
    app.deploy_ok()
    assert app.user() == f"{base}_1" and not logs_in(old_dsn)
    assert services.show(ctx, name, "test", "DEFAULT")["retiring_logins"] == []
    report = reconciler.run_once()
    assert inst_id in report.repaired, report
    shown = services.show(ctx, name, "test", "DEFAULT")
    assert shown["drift"] is None
    assert "drift repaired" in [h["action"] for h in shown["history"]]  # type: ignore[union-attr]
    assert observe(ctx, name) == ()
    assert logs_in(new_dsn) and not logs_in(old_dsn) and app.user() == f"{base}_1"
