"""What every provider promises about observing and about errors, checked the same way for each
kind against its real server: `observe` follows `provision` and `deprovision`; a cluster where
nothing listens is an error that may pass (`TransientError`) from every call; a wrong admin secret
is a final `ClusterError`. Messages never hold a secret."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any

import pytest

from tether.errors import ClusterError, TransientError
from tether.providers.base import ClusterSpec, Provider, ResourceNames


def check_observe_follows_provision(provider: Provider, cluster: ClusterSpec,
                                    names: ResourceNames) -> None:
    """Nothing there before, in sync right after provision, nothing there after deprovision."""
    before = provider.observe(cluster, names)
    assert not before.exists and not before.in_sync and before.differences
    provider.provision(cluster, names, secrets.token_urlsafe(24))
    seen = provider.observe(cluster, names)
    assert seen.exists and seen.in_sync and seen.differences == ()
    provider.deprovision(cluster, names)
    assert not provider.observe(cluster, names).exists


def check_unreachable_is_transient(provider: Provider, cluster: ClusterSpec,
                                   names: ResourceNames, says: str, hidden: str) -> None:
    """Every call to a cluster where nothing listens raises a TransientError that says `says`
    and never holds `hidden` (the admin's secret)."""
    calls: list[Callable[[], Any]] = [
        lambda: provider.provision(cluster, names, "secret-" + secrets.token_hex(8)),
        lambda: provider.observe(cluster, names),
        lambda: provider.deprovision(cluster, names),
    ]
    for call in calls:
        with pytest.raises(TransientError) as err:
            call()
        assert says in err.value.message
        assert hidden not in err.value.message


def check_final(call: Callable[[], Any], says: str) -> None:
    """`call` fails with a final ClusterError (not one that may pass) that says `says`."""
    with pytest.raises(ClusterError) as err:
        call()
    assert not isinstance(err.value, TransientError)
    assert says in err.value.message
