"""Environment variables: the user's custom ones (editable) and everything the app receives."""

from __future__ import annotations

from sqlalchemy import select

from tether import naming
from tether.access import Need
from tether.actions.common import Context, audit, get_environment, get_project
from tether.envvars import all_vars, instance_var_names, live_instances
from tether.errors import Conflict, NotFound, UserError
from tether.redact import mask_value
from tether.store.models import Release, Variable

MAX_VALUE = 32 * 1024


#: the sources whose values are secrets: masked in listings unless asked for
SECRET_SOURCES = frozenset({"service", "secret"})


def list_variables(ctx: Context, project: str | None, env_name: str,
                   include_all: bool = False, reveal: bool = True) -> list[dict[str, object]]:
    """Custom variables, or with `include_all` every variable the app gets at its next deploy
    (and the service variables it will not get, marked so). Without `reveal`, the values of
    secrets (service credentials, SECRET_KEY) are masked (`hidden` says which)."""
    with ctx.store.session() as s:
        env = get_environment(s, get_project(s, project, ctx,
                                             Need.REVEAL if reveal else Need.READ), env_name)
        may_reveal = ctx.principal.may(Need.REVEAL, env.project.name)
        running: set[str] = set()
        if env.current_release_id:
            release = s.get(Release, env.current_release_id)
            running = set(release.variable_names) if release else set()
        out = []
        for var in all_vars(s, ctx.box, env):
            if not include_all and var.source != "custom":
                continue
            # a token that may not see secret values (a viewer) sees no value in clear: custom
            # variables hold API keys as often as service credentials do
            hidden = not reveal and (var.source in SECRET_SOURCES or not may_reveal)
            out.append({
                "name": var.name,
                "value": mask_value(var.value) if hidden else var.value,
                "hidden": hidden,
                "source": var.source,
                "prefix": var.prefix,
                "state": var.state,
                "next_release": var.next_release,
                "in_running_release": var.name in running,
            })
        return out


def set_variable(ctx: Context, project: str | None, env_name: str, name: str,
                 value: str) -> dict[str, object]:
    naming.check_variable_name(name)
    if len(value) > MAX_VALUE:
        raise UserError(f"the value of {name} is too long: at most {MAX_VALUE} characters")
    if "\x00" in value:  # an environment cannot hold it: every deploy would fail
        raise UserError(f"the value of {name} may not contain a NUL character")
    with ctx.store.session() as s:
        env = get_environment(s, get_project(s, project, ctx, Need.CHANGE), env_name)
        for inst in live_instances(s, env):
            if name in instance_var_names(inst):
                raise Conflict(f"{name} is given by the service {inst.prefix} ({inst.service}): "
                               "a custom variable may not shadow it; pick another name")
        var = s.scalar(select(Variable).where(Variable.environment_id == env.id,
                                              Variable.name == name))
        if var is None:
            s.add(Variable(environment_id=env.id, name=name, value_enc=ctx.box.seal(value)))
        else:
            var.value_enc = ctx.box.seal(value)
        audit(s, ctx.actor, "variable set", environment_id=env.id, detail=name)
        return {"name": name, "environment": env.name,
                "message": f"{name} set: it reaches the app with the next deploy of {env.name}"}


def unset_variable(ctx: Context, project: str | None, env_name: str,
                   name: str) -> dict[str, object]:
    with ctx.store.session() as s:
        env = get_environment(s, get_project(s, project, ctx, Need.CHANGE), env_name)
        var = s.scalar(select(Variable).where(Variable.environment_id == env.id,
                                              Variable.name == name))
        if var is None:
            raise NotFound(f"{env.name} has no custom variable {name}: see "
                           f"`tether project env-vars -e {env.name}`")
        s.delete(var)
        audit(s, ctx.actor, "variable unset", environment_id=env.id, detail=name)
        return {"name": name, "environment": env.name,
                "message": f"{name} unset: the app loses it with the next deploy of {env.name}"}
