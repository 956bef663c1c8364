"""The variables an environment's application gets: STAGE, SECRET_KEY, one set per instance that
is (or is about to be) attached, and the user's custom variables. Asked by the actions (to show
them) and by the engine (to start a release), so both always agree."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from tether import lifecycle
from tether.crypto import SecretBox
from tether.lifecycle import Pending, State
from tether.providers.base import Credentials
from tether.providers.registry import get_provider, provider_class
from tether.store.models import Environment, Instance, Variable
from tether.store.records import pending_removals


@dataclass(frozen=True)
class EnvVar:
    name: str
    value: str
    source: str  # "stage", "secret", "service", "custom"
    prefix: str | None = None
    state: str | None = None
    #: whether the application gets it at its next deployment
    next_release: bool = True


def service_vars(box: SecretBox, instance: Instance) -> dict[str, str]:
    """The variables one provisioned instance gives (empty before it is provisioned)."""
    return vars_of(instance, box.open(instance.credentials_enc))


def vars_of(instance: Instance, creds: dict[str, Any] | None) -> dict[str, str]:
    """`service_vars` of credentials opened already (`box.open(instance.credentials_enc)`)."""
    if not creds:
        return {}
    return get_provider(instance.kind).env_vars(instance.prefix, Credentials(creds))


def instance_var_names(instance: Instance) -> list[str]:
    """Names an instance gives, known even before it is provisioned (for shadowing checks)."""
    return provider_class(instance.kind).var_names(instance.prefix)


def live_instances(s: Session, env: Environment) -> list[Instance]:
    return list(
        s.scalars(
            select(Instance)
            .where(Instance.environment_id == env.id, Instance.state != State.REMOVED.value)
            .order_by(Instance.id)
        )
    )


def custom_vars(s: Session, box: SecretBox, env: Environment) -> dict[str, str]:
    rows = s.scalars(select(Variable).where(Variable.environment_id == env.id).order_by(
        Variable.name))
    return {v.name: box.open(v.value_enc) for v in rows}


def all_vars(s: Session, box: SecretBox, env: Environment) -> list[EnvVar]:
    """Every variable, with where it comes from. Service variables of instances that are not in
    the next release are listed too (next_release False) so users can see what detaching drops."""
    out = [
        EnvVar("STAGE", env.name, "stage"),
        EnvVar("SECRET_KEY", box.open(env.secret_key_enc), "secret"),
    ]
    removing = pending_removals(s, env.id)
    for inst in live_instances(s, env):
        included = lifecycle.takes_part(State(inst.state),
                                        Pending.REMOVE if inst.id in removing else None)
        for name, value in service_vars(box, inst).items():
            out.append(EnvVar(name, value, "service", inst.prefix, inst.state, included))
    out.extend(EnvVar(k, v, "custom") for k, v in custom_vars(s, box, env).items())
    return out


def release_env(s: Session, box: SecretBox, env: Environment) -> dict[str, str]:
    """What the next release is started with."""
    return {v.name: v.value for v in all_vars(s, box, env) if v.next_release}
