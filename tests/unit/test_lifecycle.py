"""Every state x every action: allowed with its result, or refused with a message that names the
state and the way out."""

from __future__ import annotations

import pytest

from tether import lifecycle
from tether.lifecycle import Action, State, decide

N, PR, PA, AT, PD, DE, RM = (State.NEW, State.PROVISIONING, State.PENDING_ATTACHMENT,
                             State.ATTACHED, State.PENDING_DETACHMENT, State.DETACHED,
                             State.REMOVED)
OK, NO = True, False

# (state, action) -> (allowed, state entered at once or None for unchanged, operation, words
# the message must contain). The deploy column gives the state after a *successful* deploy.
TABLE: dict[tuple[State | None, Action], tuple[bool, State | None, str | None, tuple[str, ...]]] = {
    (None, Action.ADD): (OK, N, None, ("added", "deploy")),
    (None, Action.PROVISION): (NO, None, None, ("no service", "tether service list")),
    (None, Action.DEPLOY): (NO, None, None, ("no service",)),
    (None, Action.DETACH): (NO, None, None, ("no service",)),
    (None, Action.ATTACH): (NO, None, None, ("no service",)),
    (None, Action.REMOVE): (NO, None, None, ("no service",)),
    (N, Action.ADD): (NO, None, None, ("already exists", "new", "--prefix")),
    (N, Action.PROVISION): (OK, PR, "provision", ("provisioned",)),
    (N, Action.DEPLOY): (OK, AT, None, ("deployment",)),
    (N, Action.DETACH): (NO, None, None, ("new", "nothing to detach", "remove")),
    (N, Action.ATTACH): (OK, None, None, ("new", "next deployment")),
    (N, Action.REMOVE): (OK, None, "remove", ("removed", "deleted for good")),
    (PR, Action.ADD): (NO, None, None, ("already exists", "provisioning")),
    (PR, Action.PROVISION): (OK, None, None, ("already being provisioned",)),
    (PR, Action.DEPLOY): (OK, AT, None, ("deployment",)),
    (PR, Action.DETACH): (NO, None, None, ("provisioning", "wait")),
    (PR, Action.ATTACH): (OK, None, None, ("provisioning", "next deployment")),
    (PR, Action.REMOVE): (NO, None, None, ("provisioning", "wait")),
    (PA, Action.ADD): (NO, None, None, ("already exists", "pending attachment")),
    (PA, Action.PROVISION): (OK, None, None, ("already provisioned", "pending attachment")),
    (PA, Action.DEPLOY): (OK, AT, None, ("deployment",)),
    (PA, Action.DETACH): (OK, DE, None, ("never attached", "data kept")),
    (PA, Action.ATTACH): (OK, None, None, ("pending attachment", "next deployment")),
    (PA, Action.REMOVE): (OK, None, "remove", ("deleted for good",)),
    (AT, Action.ADD): (NO, None, None, ("already exists", "attached")),
    (AT, Action.PROVISION): (OK, None, None, ("already provisioned", "attached")),
    (AT, Action.DEPLOY): (OK, AT, None, ("deployment",)),
    (AT, Action.DETACH): (OK, PD, None, ("next successful deployment",)),
    (AT, Action.ATTACH): (OK, None, None, ("already attached",)),
    (AT, Action.REMOVE): (NO, None, None, ("is attached", "detach it and deploy")),
    (PD, Action.ADD): (NO, None, None, ("already exists", "pending detachment")),
    (PD, Action.PROVISION): (OK, None, None, ("already provisioned", "pending detachment")),
    (PD, Action.DEPLOY): (OK, DE, None, ("deployment",)),
    (PD, Action.DETACH): (OK, None, None, ("already pending detachment",)),
    (PD, Action.ATTACH): (OK, AT, None, ("stays attached", "cancelled")),
    (PD, Action.REMOVE): (NO, None, None, ("pending detachment", "still attached", "deploy")),
    (DE, Action.ADD): (NO, None, None, ("already exists", "detached")),
    (DE, Action.PROVISION): (OK, None, None, ("already provisioned", "detached")),
    (DE, Action.DEPLOY): (OK, DE, None, ("deployment",)),
    (DE, Action.DETACH): (OK, None, None, ("already detached",)),
    (DE, Action.ATTACH): (OK, PA, None, ("attached by the next successful deployment",)),
    (DE, Action.REMOVE): (OK, None, "remove", ("deleted for good",)),
    (RM, Action.ADD): (OK, N, None, ("added",)),
    (RM, Action.PROVISION): (NO, None, None, ("removed", "add it again")),
    (RM, Action.DEPLOY): (NO, None, None, ("removed", "add it again")),
    (RM, Action.DETACH): (NO, None, None, ("removed", "add it again")),
    (RM, Action.ATTACH): (NO, None, None, ("removed", "add it again")),
    (RM, Action.REMOVE): (OK, None, None, ("already removed",)),
}


def test_table_covers_every_state_and_action() -> None:
    assert set(TABLE) == {(s, a) for s in [None, *State] for a in Action}


@pytest.mark.parametrize(("state", "action"), sorted(TABLE, key=str))
def test_decision(state: State | None, action: Action) -> None:
    allowed, target, operation, words = TABLE[(state, action)]
    d = decide(state, action, "DEFAULT", "test")
    assert d.allowed is allowed, d.message
    assert d.operation == operation
    if action is not Action.DEPLOY:
        assert d.target == target
    elif allowed:
        assert lifecycle.deploy_target(state, succeeded=True) == target  # type: ignore[arg-type]
    for word in words:
        assert word in d.message, (word, d.message)
    if not allowed and state is not None:
        assert state.value in d.message  # a refusal names the state


@pytest.mark.parametrize("state", list(State))
def test_failed_deployment_changes_nothing(state: State) -> None:
    assert lifecycle.deploy_target(state, succeeded=False) is state


def test_remove_refusal_names_the_way_out() -> None:
    d = decide(AT, Action.REMOVE, "DEFAULT", "live")
    assert not d.allowed
    assert d.message.startswith("DEFAULT is attached: detach it and deploy before removing it")


@pytest.mark.parametrize(
    ("state", "in_release", "expected"),
    [(AT, True, AT), (AT, False, PA), (PA, True, AT), (PA, False, PA), (PD, False, DE),
     (PD, True, PD), (DE, False, DE), (N, False, N), (RM, False, RM)],
)
def test_settle_by_what_the_release_really_has(state: State, in_release: bool,
                                               expected: State) -> None:
    assert lifecycle.settle(state, in_release=in_release) is expected


@pytest.mark.parametrize("state", list(State))
def test_provision_outcomes(state: State) -> None:
    ok = lifecycle.after_provision(state, succeeded=True)
    failed = lifecycle.after_provision(state, succeeded=False)
    if state in (N, PR):
        assert (ok, failed) == (PA, N)
    else:
        assert ok is failed is state


def test_meaning_for_every_state() -> None:
    assert set(lifecycle.MEANING) == set(State)
    assert {PA, AT, PD, DE} == lifecycle.FUNCTIONAL
    assert {AT, PD} == lifecycle.USABLE
