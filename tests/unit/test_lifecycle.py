"""The whole lifecycle as one table: every state x whether the running release has the instance
x every user action and engine event, with its outcome or refusal. Plus the operation-waiting
dimension (a queued removal), and the messages users read."""

from __future__ import annotations

import pytest

from tether import lifecycle
from tether.lifecycle import Action, Event, Pending, State, decide

N, PR, PA, AT, PD, DE, RM = (State.NEW, State.PROVISIONING, State.PENDING_ATTACHMENT,
                             State.ATTACHED, State.PENDING_DETACHMENT, State.DETACHED,
                             State.REMOVED)
A = (Action.ADD, Action.PROVISION, Action.DETACH, Action.ATTACH, Action.REMOVE)
E = (Event.PROVISION_STARTED, Event.PROVISION_SUCCEEDED, Event.PROVISION_FAILED,
     Event.REMOVE_SUCCEEDED, Event.REMOVE_FAILED, Event.DEPLOY_SUCCEEDED, Event.DEPLOY_FAILED)

# Outcome of an action: "!" refused, "=" allowed and changes nothing, "+provision" / "+remove"
# allowed and queues that work (state unchanged unless a state follows: "PR+provision"), or the
# state entered at once. Outcome of an event: the state it leads to.
# For actions, `in_release` is whether the running release has the instance's variables; for the
# deploy events, whether the new release has them.
# (state, in_release): (ADD, PROVISION, DETACH, ATTACH, REMOVE), (PS, PO, PF, RO, RF, DO, DF)
TABLE: dict[tuple[State | None, bool], tuple[tuple[str, ...], tuple[State, ...] | None]] = {
    (None, False): (("N", "!", "!", "!", "!"), None),
    (N, False): (("!", "PR+provision", "!", "=", "+remove"), (PR, PA, N, RM, N, N, N)),
    (N, True): (("!", "PR+provision", "!", "=", "!"), (PR, PA, N, RM, N, N, N)),
    (PR, False): (("!", "=", "!", "=", "!"), (PR, PA, N, RM, PR, PR, PR)),
    (PR, True): (("!", "=", "!", "=", "!"), (PR, PA, N, RM, PR, PR, PR)),
    (PA, False): (("!", "=", "DE", "=", "+remove"), (PA, PA, PA, RM, PA, PA, PA)),
    (PA, True): (("!", "=", "PD", "=", "!"), (PA, PA, PA, RM, PA, AT, PA)),
    (AT, False): (("!", "=", "PD", "=", "!"), (AT, AT, AT, RM, AT, PA, AT)),
    (AT, True): (("!", "=", "PD", "=", "!"), (AT, AT, AT, RM, AT, AT, AT)),
    (PD, False): (("!", "=", "=", "AT", "!"), (PD, PD, PD, RM, PD, DE, PD)),
    (PD, True): (("!", "=", "=", "AT", "!"), (PD, PD, PD, RM, PD, PD, PD)),
    (DE, False): (("!", "=", "=", "PA", "+remove"), (DE, DE, DE, RM, DE, DE, DE)),
    # a release that has the variables of an instance detached while it deployed: still in use
    (DE, True): (("!", "=", "PD", "PA", "!"), (DE, DE, DE, RM, DE, PD, DE)),
    (RM, False): (("N", "!", "!", "!", "="), (RM, RM, RM, RM, RM, RM, RM)),
    (RM, True): (("N", "!", "!", "!", "="), (RM, RM, RM, RM, RM, RM, RM)),
}
SHORT = {"N": N, "PR": PR, "PA": PA, "AT": AT, "PD": PD, "DE": DE, "RM": RM}


def test_table_covers_every_state_release_action_and_event() -> None:
    assert set(TABLE) == {(None, False)} | {(s, r) for s in State for r in (False, True)}
    assert set(A) == set(Action) and set(E) == set(Event)


def _check(decision: lifecycle.Decision, expected: str, state: State | None) -> None:
    if expected == "!":
        assert not decision.allowed, decision
        if state is not None:
            assert state.value in decision.message  # a refusal names the state
        return
    assert decision.allowed, decision.message
    target, _, work = expected.partition("+")
    assert decision.operation == (work or None), decision
    if target == "=" or (not target and work):
        assert decision.target is None, decision
    else:
        assert decision.target is SHORT[target], decision


@pytest.mark.parametrize(("state", "in_release"), sorted(TABLE, key=str))
def test_actions(state: State | None, in_release: bool) -> None:
    actions, _events = TABLE[(state, in_release)]
    for action, expected in zip(A, actions, strict=True):
        _check(decide(state, action, "DEFAULT", "test", in_release=in_release), expected, state)


@pytest.mark.parametrize(("state", "in_release"),
                         sorted((k for k in TABLE if k[0] is not None), key=str))
def test_events(state: State, in_release: bool) -> None:
    _actions, events = TABLE[(state, in_release)]
    assert events is not None
    for event, expected in zip(E, events, strict=True):
        assert lifecycle.after(state, event, in_release=in_release) is expected, event


@pytest.mark.parametrize("state", [s for s in State if s is not RM])
@pytest.mark.parametrize("in_release", [False, True])
def test_a_queued_removal_refuses_every_other_action(state: State, in_release: bool) -> None:
    """Finding 9: attach was accepted while a remove of the same instance waited."""
    for action in (Action.PROVISION, Action.DETACH, Action.ATTACH):
        d = decide(state, action, "DB", "test", in_release=in_release, pending=Pending.REMOVE)
        assert not d.allowed
        assert "being removed" in d.message and "tether service wait test DB" in d.message
    again = decide(state, Action.REMOVE, "DB", "test", in_release=in_release,
                   pending=Pending.REMOVE)
    assert again.allowed and not again.changes and "already being removed" in again.message
    assert not decide(state, Action.ADD, "DB", pending=Pending.REMOVE).allowed


@pytest.mark.parametrize(("state", "in_release"), sorted(TABLE, key=str))
def test_a_queued_provision_changes_no_decision(state: State | None, in_release: bool) -> None:
    for action in A:
        plain = decide(state, action, "DB", in_release=in_release)
        assert decide(state, action, "DB", in_release=in_release,
                      pending=Pending.PROVISION) == plain


def test_detach_during_a_deploy_never_lets_data_be_deleted_under_the_release() -> None:
    """Finding 1: a `pending attachment` instance detached while a deploy started, whose new
    release got its variables, settled as `detached` and could be removed. Now it settles as
    `pending detachment`, and remove is refused while the release has it."""
    detached = decide(PA, Action.DETACH, "DB").target
    assert detached is DE
    settled = lifecycle.after(DE, Event.DEPLOY_SUCCEEDED, in_release=True)
    assert settled is PD
    refused = decide(settled, Action.REMOVE, "DB", "test", in_release=True)
    assert not refused.allowed and "deploy test first" in refused.message
    # and even if a state said otherwise, the running release having it refuses the removal
    for state in (N, PA, DE):
        assert not decide(state, Action.REMOVE, "DB", in_release=True).allowed


@pytest.mark.parametrize("state", list(State))
def test_a_failed_deployment_changes_nothing(state: State) -> None:
    for in_release in (False, True):
        assert lifecycle.after(state, Event.DEPLOY_FAILED, in_release=in_release) is state


@pytest.mark.parametrize(("state", "action", "words"), [
    (None, Action.PROVISION, ("no service", "tether service list")),
    (N, Action.DETACH, ("new", "nothing to detach", "remove")),
    (PR, Action.DETACH, ("provisioning", "wait")),
    (PR, Action.REMOVE, ("provisioning", "wait")),
    (PA, Action.DETACH, ("never attached", "data kept")),
    (AT, Action.DETACH, ("next successful deployment",)),
    (AT, Action.REMOVE, ("is attached", "detach it and deploy")),
    (PD, Action.ATTACH, ("stays attached", "cancelled")),
    (PD, Action.REMOVE, ("pending detachment", "still attached", "deploy")),
    (DE, Action.ATTACH, ("attached by the next successful deployment",)),
    (DE, Action.REMOVE, ("deleted for good",)),
    (RM, Action.ATTACH, ("removed", "add it again")),
    (RM, Action.REMOVE, ("already removed",)),
    (N, Action.ADD, ("already exists", "new", "--prefix")),
    (None, Action.ADD, ("added", "deploy")),
])
def test_messages_name_the_way_out(state: State | None, action: Action,
                                   words: tuple[str, ...]) -> None:
    message = decide(state, action, "DEFAULT", "live").message
    for word in words:
        assert word in message, (word, message)


def test_remove_refusal_names_the_way_out() -> None:
    d = decide(AT, Action.REMOVE, "DEFAULT", "live", in_release=True)
    assert not d.allowed
    assert d.message.startswith("DEFAULT is attached: detach it and deploy before removing it")


def test_what_the_next_release_gets() -> None:
    assert {s for s in State if lifecycle.takes_part(s)} == {N, PR, PA, AT}
    assert not any(lifecycle.takes_part(s, Pending.REMOVE) for s in State)


def test_meaning_for_every_state() -> None:
    assert set(lifecycle.MEANING) == set(State)
    assert {PA, AT, PD, DE} == lifecycle.FUNCTIONAL
    assert {AT, PD} == lifecycle.USABLE
