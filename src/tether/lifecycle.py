"""The lifecycle of a service instance (SPEC.md), as pure functions: the ONLY place that decides a
state. Nothing here does I/O.

Two questions are asked of it (and `decide_rotation`, for `tether service rotate`):

- `decide(state, action, ...)`: may a user's ACTION happen to an instance now? The answer is a
  refusal with the way out, or the state entered at once and the work the engine must then do.
- `after(state, event, ...)`: which state does an engine EVENT (a provision, a removal or a
  deployment that started, succeeded or failed) lead to?

Both take what is really true besides the recorded state: whether the running release has the
instance's variables (`in_release`), and which operation of the instance is still waiting
(`pending`). A rule that looked at the recorded state alone once let data be deleted under a
running release (a detach during a deploy whose new release had already been given the
variables); with the truth as an input, every combination has one defined outcome, and the
exhaustive table in tests/unit/test_lifecycle.py holds all of them.
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
    """What a user can ask of one instance."""

    ADD = "add"
    PROVISION = "provision"
    DETACH = "detach"
    ATTACH = "attach"
    REMOVE = "remove"


class Event(StrEnum):
    """What the engine reports about one instance."""

    PROVISION_STARTED = "provision started"
    PROVISION_SUCCEEDED = "provision succeeded"
    PROVISION_FAILED = "provision failed"
    REMOVE_SUCCEEDED = "remove succeeded"
    REMOVE_FAILED = "remove failed"
    DEPLOY_SUCCEEDED = "deploy succeeded"
    DEPLOY_FAILED = "deploy failed"


class Pending(StrEnum):
    """An operation of the instance that was queued and has not finished."""

    PROVISION = "provision"
    REMOVE = "remove"


#: The service works (it can be used and filled with data).
FUNCTIONAL = frozenset(
    {State.PENDING_ATTACHMENT, State.ATTACHED, State.PENDING_DETACHMENT, State.DETACHED}
)
#: The running release has the instance's variables (when the store knows no better).
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

    @property
    def changes(self) -> bool:
        """Whether it would change anything (a new state, or work for the engine)."""
        return self.allowed and (self.operation is not None or self.target is not None)


def _refuse(message: str) -> Decision:
    return Decision(False, message)


def _ok(message: str, target: State | None = None, operation: str | None = None) -> Decision:
    return Decision(True, message, target, operation)


def decide(state: State | None, action: Action, prefix: str, env: str = "ENV", *,
           in_release: bool = False, pending: Pending | None = None) -> Decision:
    """Decide a user's action. `state` is None when no live instance has this prefix;
    `in_release`: the running release has the instance's variables; `pending`: an operation of
    the instance waits to run (or runs)."""
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
    if pending is Pending.REMOVE:
        if action is Action.REMOVE:
            return _ok(f"{p} is already being removed")
        return _refuse(f"{p} ({state}) is being removed: its data will be deleted for good. Wait "
                       f"for it (`tether service wait {env} {p}`), then add it again with "
                       f"`tether service add {env} SERVICE --prefix {p}`")
    if action is Action.PROVISION:
        return _provision(state, p)
    if action is Action.DETACH:
        return _detach(state, p, env, in_release)
    if action is Action.ATTACH:
        return _attach(state, p, env)
    return _remove(state, p, env, in_release)


def _provision(state: State, p: str) -> Decision:
    if state is State.NEW:
        return _ok(f"{p} is being provisioned", State.PROVISIONING, "provision")
    if state is State.PROVISIONING:
        return _ok(f"{p} is already being provisioned")
    return _ok(f"{p} is already provisioned ({state})")


def _detach(state: State, p: str, env: str, in_release: bool) -> Decision:
    if state is State.ATTACHED or (in_release and state in (State.PENDING_ATTACHMENT,
                                                            State.DETACHED)):
        return _ok(f"{p} ({state}) will be detached by the next successful deployment of {env}",
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
    if state is State.ATTACHED:
        return _ok(f"{p} is already attached")
    return _ok(f"{p} is {state}: the next deployment of {env} attaches it")


def _remove(state: State, p: str, env: str, in_release: bool) -> Decision:
    if state is State.ATTACHED:
        return _refuse(f"{p} is attached: detach it and deploy before removing it "
                       f"(`tether service detach {env} {p}`, then `tether deploy {env}`)")
    if state is State.PENDING_DETACHMENT:
        return _refuse(f"{p} is pending detachment and still attached to the running release: "
                       f"deploy {env} first (`tether deploy {env}`), then remove it")
    if state is State.PROVISIONING:
        return _refuse(f"{p} is provisioning: wait for it to finish, then remove it")
    if in_release:
        return _refuse(f"{p} is {state}, but the running release of {env} still has its "
                       f"variables: detach it and deploy first (`tether service detach {env} "
                       f"{p}`, then `tether deploy {env}`)")
    return _ok(f"{p} is being removed; its data will be deleted for good", None, "remove")


def decide_rotation(state: State | None, prefix: str, env: str = "ENV", *,
                    in_release: bool = False, pending: Pending | None = None) -> Decision:
    """May the credentials of an instance be rotated now (`tether service rotate`)? Only a
    provisioned instance has credentials: it is functional, in any of its states, and no removal
    of it waits. A rotation changes no state: the operation makes new credentials; the running
    release keeps the old ones (`in_release`) until a deployment gives it the new ones, and the
    old ones are revoked then (at once when no release has them)."""
    p = prefix
    if state is None:
        return _refuse(f"no service with prefix {p} in {env}: see `tether service list {env}`")
    if state is State.REMOVED:
        return _refuse(f"{p} was removed and its data deleted: it has no credentials to rotate")
    if pending is Pending.REMOVE:
        return _refuse(f"{p} ({state}) is being removed: there is nothing left to rotate")
    if state is State.PROVISIONING:
        return _refuse(f"{p} is provisioning: it has no credentials yet; wait for it to finish, "
                       "then rotate them")
    if state is State.NEW:
        return _refuse(f"{p} is new and not provisioned: it has no credentials to rotate; "
                       f"provision it first (`tether service provision {env} {p}`)")
    if in_release:
        return _ok(f"{p} gets new credentials: {env} is deployed with them, then the old ones "
                   "are revoked", None, "rotate")
    return _ok(f"{p} gets new credentials; no running release has {p}, so the old ones are "
               "revoked at once", None, "rotate")


def after(state: State, event: Event, *, in_release: bool) -> State:
    """The state an engine event leads to.

    For the deploy events `in_release` says whether the NEW release got the instance's
    variables; for the others, whether the running release has them. Rule 4: a failed
    deployment changes nothing; rule 5: a failed provision returns to `new`."""
    if state is State.REMOVED or event in (Event.DEPLOY_FAILED, Event.REMOVE_FAILED):
        return state
    if event is Event.REMOVE_SUCCEEDED:
        return State.REMOVED  # the data is gone: that is the truth, whatever was asked
    if event is Event.PROVISION_STARTED:
        return State.PROVISIONING if state is State.NEW else state
    if event is Event.PROVISION_SUCCEEDED:
        return State.PENDING_ATTACHMENT if state in (State.NEW, State.PROVISIONING) else state
    if event is Event.PROVISION_FAILED:
        return State.NEW if state is State.PROVISIONING else state
    return _settle(state, in_release)


def _settle(state: State, in_release: bool) -> State:
    """After a successful deployment: what the new release really has decides, whatever the
    user changed while it ran. A release that has the variables of an instance the user
    detached meanwhile keeps it `pending detachment` (still attached, not removable); one that
    lacks the variables of an instance re-attached meanwhile leaves it `pending attachment`."""
    if state in (State.ATTACHED, State.PENDING_ATTACHMENT):
        return State.ATTACHED if in_release else State.PENDING_ATTACHMENT
    if state in (State.PENDING_DETACHMENT, State.DETACHED):
        return State.PENDING_DETACHMENT if in_release else State.DETACHED
    # `new` or `provisioning`: no resources yet, so a release cannot really use it; the provision
    # that runs (or the next deployment) moves it on
    return state


def takes_part(state: State, pending: Pending | None = None) -> bool:
    """Whether the next release gets this instance's variables: it is (or is about to be)
    attached, and no removal of it waits."""
    return state in IN_NEXT_RELEASE and pending is not Pending.REMOVE
