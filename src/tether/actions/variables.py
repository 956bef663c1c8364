"""Environment variables: the user's custom ones (editable) and everything the app receives."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from tether import lifecycle, naming, paging
from tether.access import Need
from tether.actions.common import Context, audit, find_environment
from tether.envvars import EnvVar, instance_var_names, live_instances, service_vars
from tether.errors import Conflict, NotFound, UserError
from tether.lifecycle import Pending, State
from tether.paging import ALL, Page, PageArgs
from tether.redact import mask_value
from tether.store.models import Environment, Instance, Release, Variable
from tether.store.records import pending_removals

MAX_VALUE = 32 * 1024


#: the sources whose values are secrets: masked in listings unless asked for
SECRET_SOURCES = frozenset({"service", "secret"})


def list_variables(ctx: Context, project: str | None, env_name: str,
                   include_all: bool = False, reveal: bool = True,
                   page: PageArgs = ALL) -> Page[dict[str, object]]:
    """Custom variables, or with `include_all` every variable the app gets at its next deploy
    (and the service variables it will not get, marked so), in the order of `all_vars` (a page
    of them). Without `reveal`, the values of secrets (service credentials, SECRET_KEY) are
    masked (`hidden` says which)."""
    with ctx.store.session() as s:
        env = find_environment(s, ctx, project, env_name,
                               Need.REVEAL if reveal else Need.READ)
        may_reveal = ctx.principal.may(Need.REVEAL, env.project.name)
        running: set[str] = set()
        if env.current_release_id:
            release = s.get(Release, env.current_release_id)
            running = set(release.variable_names) if release else set()
        out = Page[dict[str, object]]()
        rows, out.after = _vars_page(s, ctx, env, include_all, page)
        for var in rows:
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


#: a variable's place in the list: (section, instance id, index) — section 0 holds STAGE and
#: SECRET_KEY, 1 the services' variables by instance (in the provider's order), 2 the custom
#: ones by name (then the index is the name)
Place = tuple[int, int, int | str]


def _place_cursor(place: Place) -> str:
    return paging.encode(".".join(str(part) for part in place))


def _cursor_place(cursor: str) -> Place:
    """The place a cursor of `_place_cursor` names; any other is a UserError (a 400)."""
    key = paging.decode(cursor)
    parts = key.split(".", 2) if isinstance(key, str) else []
    try:
        section, instance = int(parts[0]), int(parts[1])
        if section in (0, 1) and 0 <= instance < 2**31:
            return section, instance, int(parts[2])
        if section == 2 and instance == 0 and parts[2]:
            return section, instance, parts[2]
    except (ValueError, IndexError):
        pass
    raise UserError(f"invalid cursor {cursor[:80]!r}: it is not one of this list")


def _vars_page(s: Session, ctx: Context, env: Environment, include_all: bool,
               page: PageArgs) -> tuple[list[EnvVar], str | None]:
    """The variables of `page` (as `all_vars` lists them; custom ones only unless
    `include_all`) and the next page's cursor. Keyset by place, so a page reads and decrypts
    only about `limit` rows: the instances after the cursor's, a batch at a time (an instance
    not yet provisioned gives none), then the custom variables after its name."""
    start: Place = _cursor_place(page.after) if page.after is not None else (-1, 0, 0)
    if not include_all and start[0] in (0, 1):
        raise UserError(f"invalid cursor {str(page.after)[:80]!r}: it is one of the list of "
                        "every variable (all=true), not of the custom ones")
    want = None if page.limit is None else page.limit + 1
    found: list[tuple[Place, EnvVar]] = []

    def full() -> bool:
        return want is not None and len(found) >= want

    if include_all:
        if start[0] <= 0:  # SECRET_KEY is decrypted only for a page that shows it
            builtins = [EnvVar("STAGE", env.name, "stage"),
                        EnvVar("SECRET_KEY", ctx.box.open(env.secret_key_enc), "secret")]
            found.extend(((0, 0, n), v) for n, v in enumerate(builtins) if (0, 0, n) > start)
        removing = pending_removals(s, env.id) if not full() else set()
        after_id = start[1] - 1 if start[0] == 1 else (-1 if start[0] < 1 else None)
        while after_id is not None and not full():
            q = (select(Instance).where(Instance.environment_id == env.id,
                                        Instance.state != State.REMOVED.value,
                                        Instance.id > after_id).order_by(Instance.id))
            # one more than a page: the first may be the cursor's, its variables seen
            batch = list(s.scalars(q if want is None else q.limit(want + 1)))
            for inst in batch:
                included = lifecycle.takes_part(State(inst.state),
                                                Pending.REMOVE if inst.id in removing else None)
                for n, (name, value) in enumerate(service_vars(ctx.box, inst).items()):
                    if (1, inst.id, n) > start:
                        found.append(((1, inst.id, n), EnvVar(name, value, "service",
                                                              inst.prefix, inst.state, included)))
            after_id = batch[-1].id if batch and want is not None else None
    if not full():
        q = select(Variable).where(Variable.environment_id == env.id).order_by(Variable.name)
        if start[0] == 2:
            q = q.where(Variable.name > start[2])
        if want is not None:
            q = q.limit(want - len(found))
        found.extend(((2, 0, v.name), EnvVar(v.name, ctx.box.open(v.value_enc), "custom"))
                     for v in s.scalars(q))
    if want is None or len(found) < want:
        return [v for _, v in found], None
    shown = found[:want - 1]
    return [v for _, v in shown], _place_cursor(shown[-1][0])


def set_variable(ctx: Context, project: str | None, env_name: str, name: str,
                 value: str) -> dict[str, object]:
    naming.check_variable_name(name)
    if len(value) > MAX_VALUE:
        raise UserError(f"the value of {name} is too long: at most {MAX_VALUE} characters")
    if "\x00" in value:  # an environment cannot hold it: every deploy would fail
        raise UserError(f"the value of {name} may not contain a NUL character")
    with ctx.store.session() as s:
        env = find_environment(s, ctx, project, env_name, Need.CHANGE)
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
        env = find_environment(s, ctx, project, env_name, Need.CHANGE)
        var = s.scalar(select(Variable).where(Variable.environment_id == env.id,
                                              Variable.name == name))
        if var is None:
            raise NotFound(f"{env.name} has no custom variable {name}: see "
                           f"`tether project env-vars -e {env.name}`")
        s.delete(var)
        audit(s, ctx.actor, "variable unset", environment_id=env.id, detail=name)
        return {"name": name, "environment": env.name,
                "message": f"{name} unset: the app loses it with the next deploy of {env.name}"}
