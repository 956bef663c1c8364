"""The lifecycle of a service instance (SPEC.md), as pure functions.

Both the actions (what a user asks) and the engine (what a deployment or an operation settles) ask
these functions; no rule about states lives anywhere else. Nothing here does I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class State(StrEnum):
    NEW = "new"
    PROVISIONING = "provisioning"
    PENDING_ATTACHMENT = "pending attachment"
    ATTACHED = "attached"
    PENDING_DETACHMENT = "pending detachment"
    DETACHED = "detached"
    REMOVED = "removed"


class Action(StrEnum):
    ADD = "add"
    PROVISION = "provision"
    DEPLOY = "deploy"
    DETACH = "detach"
    ATTACH = "attach"
    REMOVE = "remove"


#: The service works (it can be used and filled with data).
FUNCTIONAL = frozenset(
    {State.PENDING_ATTACHMENT, State.ATTACHED, State.PENDING_DETACHMENT, State.DETACHED}
)
#: The running release has the instance's variables.
USABLE = frozenset({State.ATTACHED, State.PENDING_DETACHMENT})
#: The next successful deployment gives the application these instances' variables.
IN_NEXT_RELEASE = frozenset(
    {State.NEW, State.PROVISIONING, State.PENDING_ATTACHMENT, State.ATTACHED}
)

MEANING: dict[State, str] = {
    State.NEW: "not functional; the application has no variables",
    State.PROVISIONING: "being created; not functional yet; the application has no variables",
    State.PENDING_ATTACHMENT: "functional; attached to the application by the next deployment",
    State.ATTACHED: "functional; the running application has its variables",
    State.PENDING_DETACHMENT: "functional; the running application keeps its variables until "
    "the next deployment",
    State.DETACHED: "functional, data kept; the application has no variables",
    State.REMOVED: "deleted for good; not functional",
}


@dataclass(frozen=True)
class Decision:
    """The answer to "may ACTION happen to an instance in STATE?".

    `allowed` False means refused: `message` names the state and the way out.
    When allowed, `target` is the state entered at once (None: unchanged) and `operation` names the
    work the engine must then do ("provision", "remove"), if any.
    """

    allowed: bool
    message: str
    target: State | None = None
    operation: str | None = None


def _refuse(message: str) -> Decision:
    return Decision(False, message)


def _ok(message: str, target: State | None = None, operation: str | None = None) -> Decision:
    return Decision(True, message, target, operation)


def decide(state: State | None, action: Action, prefix: str, env: str = "ENV") -> Decision:
    """Decide a user's action. `state` is None when no live instance has this prefix."""
    p = prefix
    if action is Action.ADD:
        if state is None or state is State.REMOVED:
            return _ok(f"{p} added: deploy {env} to provision and attach it", State.NEW)
        return _refuse(
            f"{p} already exists in {env} ({state}): pick another prefix with --prefix, "
            f"or remove {p} first"
        )
    if state is None:
        return _refuse(f"no service with prefix {p} in {env}: see `tether service list {env}`")
    if state is State.REMOVED:
        if action is Action.REMOVE:
            return _ok(f"{p} is already removed")
        return _refuse(f"{p} was removed and its data deleted: add it again with "
                       f"`tether service add {env} SERVICE --prefix {p}`")
    if action is Action.PROVISION:
        return _provision(state, p)
    if action is Action.DETACH:
        return _detach(state, p, env)
    if action is Action.ATTACH:
        return _attach(state, p, env)
    if action is Action.REMOVE:
        return _remove(state, p, env)
    # Deploy is asked of an environment, not of one instance: every live state takes part.
    return _ok(f"{p} takes part in the deployment", deploy_target(state, succeeded=True))


def _provision(state: State, p: str) -> Decision:
    if state is State.NEW:
        return _ok(f"{p} is being provisioned", State.PROVISIONING, "provision")
    if state is State.PROVISIONING:
        return _ok(f"{p} is already being provisioned")
    return _ok(f"{p} is already provisioned ({state})")


def _detach(state: State, p: str, env: str) -> Decision:
    if state is State.ATTACHED:
        return _ok(f"{p} will be detached by the next successful deployment of {env}",
                   State.PENDING_DETACHMENT)
    if state is State.PENDING_ATTACHMENT:
        return _ok(f"{p} was never attached: it is detached now, its data kept", State.DETACHED)
    if state in (State.PENDING_DETACHMENT, State.DETACHED):
        return _ok(f"{p} is already {state}")
    if state is State.PROVISIONING:
        return _refuse(f"{p} is provisioning: wait for it to finish, then detach it")
    return _refuse(f"{p} is new and holds no data: there is nothing to detach; "
                   f"remove it with `tether service remove {env} {p} --confirm {p}`")


def _attach(state: State, p: str, env: str) -> Decision:
    if state is State.DETACHED:
        return _ok(f"{p} will be attached by the next successful deployment of {env}",
                   State.PENDING_ATTACHMENT)
    if state is State.PENDING_DETACHMENT:
        return _ok(f"{p} stays attached: its pending detachment is cancelled", State.ATTACHED)
    return _ok(f"{p} is {state}: the next deployment of {env} attaches it"
               if state is not State.ATTACHED else f"{p} is already attached")


def _remove(state: State, p: str, env: str) -> Decision:
    if state is State.ATTACHED:
        return _refuse(f"{p} is attached: detach it and deploy before removing it "
                       f"(`tether service detach {env} {p}`, then `tether deploy {env}`)")
    if state is State.PENDING_DETACHMENT:
        return _refuse(f"{p} is pending detachment and still attached to the running release: "
                       f"deploy {env} first (`tether deploy {env}`), then remove it")
    if state is State.PROVISIONING:
        return _refuse(f"{p} is provisioning: wait for it to finish, then remove it")
    return _ok(f"{p} is being removed; its data will be deleted for good", None, "remove")


def deploy_target(state: State, *, succeeded: bool) -> State:
    """The state an instance settles in when a deployment ends.

    Rule 4: a failed deployment changes nothing."""
    if not succeeded:
        return state
    return {
        State.PENDING_ATTACHMENT: State.ATTACHED,
        State.PENDING_DETACHMENT: State.DETACHED,
        State.NEW: State.ATTACHED,
        State.PROVISIONING: State.ATTACHED,
    }.get(state, state)


def settle(state: State, *, in_release: bool) -> State:
    """Level-triggered settling after a successful deployment: compare what the new release
    really has (`in_release`: it got the instance's variables) with the state observed now.

    A state changed by the user while the deployment ran is settled by what the release really
    got: e.g. an instance detached mid-deploy whose variables the release has stays
    `pending detachment`; one re-attached mid-deploy whose variables it lacks becomes
    `pending attachment`."""
    if state in (State.ATTACHED, State.PENDING_ATTACHMENT):
        return State.ATTACHED if in_release else State.PENDING_ATTACHMENT
    if state is State.PENDING_DETACHMENT:
        return State.PENDING_DETACHMENT if in_release else State.DETACHED
    return state


def after_provision(state: State, *, succeeded: bool) -> State:
    """Where a provision ends: functional, or back to `new` with the error recorded (rule 5)."""
    if state not in (State.NEW, State.PROVISIONING):
        return state
    return State.PENDING_ATTACHMENT if succeeded else State.NEW


def after_remove(state: State, *, succeeded: bool) -> State:
    return State.REMOVED if succeeded else state


def gets_variables_next(state: State) -> bool:
    """Whether the application receives this instance's variables at its next deployment."""
    return state in IN_NEXT_RELEASE


def running_release_has(state: State) -> bool:
    return state in USABLE
