"""Which instances may have their credentials rotated (`lifecycle.decide_rotation`): every state x
whether the running release has the instance x a removal waiting, from one table."""

from __future__ import annotations

from typing import Any

import pytest

from tether.engine.rotation import _used
from tether.lifecycle import Pending, State, decide_rotation
from tether.providers.base import Credentials
from tether.providers.registry import get_provider

# state -> allowed (without a removal waiting); a rotation never changes the state
ALLOWED = {
    None: False,
    State.NEW: False,
    State.PROVISIONING: False,
    State.PENDING_ATTACHMENT: True,
    State.ATTACHED: True,
    State.PENDING_DETACHMENT: True,
    State.DETACHED: True,
    State.REMOVED: False,
}


def test_the_table_covers_every_state() -> None:
    assert set(ALLOWED) == {None, *State}


@pytest.mark.parametrize("state", list(ALLOWED), ids=str)
@pytest.mark.parametrize("in_release", [False, True])
@pytest.mark.parametrize("pending", [None, Pending.PROVISION, Pending.REMOVE])
def test_rotation_is_allowed_for_provisioned_instances_only(
        state: State | None, in_release: bool, pending: Pending | None) -> None:
    decision = decide_rotation(state, "DEFAULT", "live", in_release=in_release, pending=pending)
    allowed = ALLOWED[state] and pending is not Pending.REMOVE
    assert decision.allowed is allowed, decision
    if not allowed:
        if state is not None:
            assert state.value in decision.message  # a refusal names the state
        return
    assert decision.target is None and decision.operation == "rotate"
    if in_release:  # the running release uses it: deployed with the new ones, then revoked
        assert "deployed" in decision.message and "then the old ones" in decision.message
    else:
        assert "revoked at once" in decision.message


def test_a_new_instance_is_told_how_to_get_credentials_first() -> None:
    decision = decide_rotation(State.NEW, "ANALYTICS", "test")
    assert "`tether service provision test ANALYTICS`" in decision.message


@pytest.mark.parametrize(("kind", "creds"), [
    ("postgres", {"user": "tether_i7", "password": "p" * 8 + "Q-_x" * 6, "host": "db.internal",
                  "port": 5432, "database": "tether_i7"}),
    ("mysql", {"user": "tether_i7", "password": "m" * 8 + "Q-_x" * 6, "host": "db.internal",
               "port": 3306, "database": "tether_i7"}),
    ("rabbitmq", {"user": "tether_i7", "password": "r" * 8 + "Q-_x" * 6, "host": "mq.internal",
                  "port": 5672, "vhost": "tether_i7"}),
])
def test_old_credentials_stay_in_use_after_their_server_moved(kind: str,
                                                              creds: dict[str, Any]) -> None:
    """Third review, finding 2: the same server registered again at a new address rewrites the
    stored host and port without a deploy; the running release still logs in with the old
    login, so a rotation must not revoke it at once (it compared whole DSNs)."""
    release = get_provider(kind).env_vars("DEFAULT", Credentials(creds))
    moved = dict(creds, host="10.0.0.5", port=int(creds["port"]) + 1)
    assert _used(kind, "DEFAULT", creds, [release])
    assert _used(kind, "DEFAULT", moved, [release])
    other = dict(creds, password="z" * 32)  # another login's credentials are not in use
    assert not _used(kind, "DEFAULT", other, [release])
    assert not _used(kind, "DEFAULT", moved, [])
