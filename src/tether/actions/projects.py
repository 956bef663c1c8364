"""Projects and their environments."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload

from tether import catalog, naming
from tether.access import Need
from tether.actions.clusters import cluster_infos
from tether.actions.common import Context, audit, get_project, iso
from tether.actions.services import add_instance
from tether.crypto import SecretBox
from tether.errors import Conflict, UserError
from tether.frontdoor import FrontDoor
from tether.net import port_is_free
from tether.paging import ALL, Page, PageArgs, keyset
from tether.publicids import Kind, public_id
from tether.runtime import appcopy
from tether.store.models import Environment, Project, Region

DEFAULT_ENVIRONMENTS = ("test", "live")
#: the database a new project gets in each environment (Divio: "configured by default with all
#: projects"), resolved as `tether service add ENV postgres` resolves it: the newest version
DEFAULT_DATABASE_SERVICE = "postgres"
DEFAULT_DATABASE_PREFIX = "DEFAULT"
ENV_PORTS = range(8100, 9000)
ENV_PORTS_VAR = "TETHER_ENV_PORTS"


def env_ports() -> range:
    """The ports environments' stable addresses are taken from: `TETHER_ENV_PORTS` (`FIRST-LAST`,
    e.g. `8100-8999`), else `ENV_PORTS`; `none` for no port of their own (the front door reaches
    them by host name). Two control planes on one machine need ranges apart."""
    raw = os.environ.get(ENV_PORTS_VAR, "").strip()
    if not raw:
        return ENV_PORTS
    if raw.lower() == "none":
        return range(0)
    first, sep, last = raw.partition("-")
    if sep and first.strip().isdigit() and last.strip().isdigit():
        ports = range(int(first), int(last) + 1)
        if ports.start >= 1024 and ports.stop <= 65536 and len(ports) > 0:
            return ports
    raise UserError(f"{ENV_PORTS_VAR}={raw!r} is not a port range: write FIRST-LAST, e.g. "
                    "8100-8999 (ports 1024-65535), or none")


def _free_env_port(s: Session, ctx: Context) -> int | None:
    """A port of its own for a new environment; None (the front door only) when the range is
    `none` or used up and a front door is open, so the range is no cap on environments."""
    ports = env_ports()
    if ports:
        used = set(s.scalars(select(Environment.port).where(Environment.port.is_not(None))))
        for port in ports:
            if port not in used and port_is_free(port):
                return port
    if ctx.front_door is not None:
        return None
    if not ports:
        raise UserError(f"{ENV_PORTS_VAR}=none, but no front door is open to reach environments "
                        "by host name: give a port range, e.g. 8100-8999")
    raise UserError(f"no free port left for a new environment address ({ports.start}-"
                    f"{ports.stop - 1}): remove unused projects, or widen {ENV_PORTS_VAR}")


def environment_view(env: Environment, box: SecretBox, project: str,
                     door: FrontDoor | None = None) -> dict[str, object]:
    """An environment; `url` is its own port's address if it has one, else the front door's
    (`front_door_url` is always the latter when a front door is open)."""
    by_host = door.url_for(project, env.name) if door is not None else None
    return {
        "id": env.id,
        "uuid": public_id(box, Kind.ENVIRONMENT, env.id),
        "name": env.name,
        "port": env.port,
        "url": f"http://127.0.0.1:{env.port}" if env.port is not None else by_host,
        "front_door_url": by_host,
        "current_release_id": env.current_release_id,
    }


def project_view(project: Project, box: SecretBox,
                 door: FrontDoor | None = None) -> dict[str, object]:
    return {
        "id": project.id,
        "uuid": public_id(box, Kind.PROJECT, project.id),
        "name": project.name,
        "region": project.region,
        "app_command": project.app_command,
        "app_dir": project.app_dir,
        "health_path": project.health_path,
        "health_timeout": project.health_timeout,
        "created_at": iso(project.created_at),
        "environments": [environment_view(e, box, project.name, door)
                         for e in project.environments],
    }


def _add_environment(s: Session, ctx: Context, project: Project, name: str) -> Environment:
    env = Environment(
        project_id=project.id,
        name=naming.check_environment_name(name),
        port=_free_env_port(s, ctx),
        secret_key_enc=ctx.box.seal(secrets.token_urlsafe(48)),
    )
    s.add(env)
    s.flush()
    audit(s, ctx.actor, "environment created", environment_id=env.id,
          detail=f"{project.name}/{name}")
    return env


#: the longest app command, app directory and health path accepted (stored and returned by
#: every project listing: a 50 MB command would be too)
MAX_COMMAND = 4096
MAX_PATH = 1024
#: the store's column for the health path holds 200 characters
MAX_HEALTH_PATH = 200


def _check_health_path(path: str) -> None:
    """A path Tether puts into an HTTP request line: control characters or spaces there would
    split or corrupt the request (a CR/LF would even add headers)."""
    if not path.startswith("/"):
        raise UserError(f"invalid health path {path!r}: it must start with / (e.g. /health)")
    if len(path) > MAX_HEALTH_PATH or any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F
                                          for c in path):
        raise UserError(f"invalid health path {path[:80]!r}: at most {MAX_HEALTH_PATH} "
                        "characters, without spaces or control characters (encode them, "
                        "e.g. %20)")


def _check_app_text(what: str, value: str | None, limit: int) -> None:
    """An app command or directory: it reaches exec and the file system, where a NUL cannot."""
    if value is None:
        return
    if len(value) > limit:
        raise UserError(f"the {what} is too long: at most {limit} characters")
    if "\x00" in value:
        raise UserError(f"the {what} may not contain a NUL character")
    if what == "app directory" and any(c in value for c in "\r\n"):
        raise UserError(f"the {what} may not contain line breaks")


def _check_app_dir(data_dir: Path, value: str | None) -> None:
    """An app directory: each release runs from its own copy of it (runtime/appcopy.py), made
    on this machine, so it must be a directory here, and never hold Tether's secrets."""
    _check_app_text("app directory", value, MAX_PATH)
    if not value:
        return
    if not os.path.isabs(value):
        raise UserError(f"the app directory {value[:200]!r} is not an absolute path: give the "
                        "full path, e.g. /srv/shop")
    if not os.path.isdir(value):
        raise UserError(f"the app directory {value[:200]} does not exist or is not a directory "
                        "on the machine Tether runs on: create it, or give another --app-dir")
    real, data = Path(value).resolve(), Path(data_dir).resolve()
    if real.is_relative_to(data):
        raise UserError(f"the app directory {value[:200]} is inside Tether's data dir {data}: "
                        "keep the application's files elsewhere, e.g. /srv/shop")
    if data.is_relative_to(real):
        raise UserError(f"the app directory {value[:200]} holds Tether's data dir {data}, whose "
                        "secrets each release's copy would hold: give the application's own "
                        "directory")
    refused = appcopy.refused_location(value, data)
    if refused:
        raise UserError(f"the app directory {value[:200]} is refused: {refused}, and each "
                        "release's copy would give its files to the app: give the "
                        "application's own directory, e.g. /srv/shop")


def _add_default_database(s: Session, ctx: Context, project: Project,
                          environments: list[Environment]) -> dict[str, object]:
    """A `DEFAULT` PostgreSQL instance (state `new`) in each of `environments`, added by the
    same rules as `tether service add ENV postgres`; the first deploy of each environment
    provisions and attaches it. A region that offers no shared PostgreSQL is no error: the
    project is made without, and the answer says why."""
    try:
        offer = catalog.resolve(cluster_infos(s), project.region, DEFAULT_DATABASE_SERVICE,
                                private=False)
    except UserError:
        return {"service": None, "prefix": DEFAULT_DATABASE_PREFIX, "environments": [],
                "reason": f"region {project.region} offers no shared PostgreSQL, so the project "
                          f"has no {DEFAULT_DATABASE_PREFIX} database: register a cluster "
                          f"(`tether cluster add postgres --region {project.region} --url "
                          "URL`), then `tether service add ENV postgres`"}
    for env in environments:
        add_instance(s, ctx, env, offer.service, DEFAULT_DATABASE_PREFIX)
    return {"service": offer.service, "prefix": DEFAULT_DATABASE_PREFIX,
            "environments": [e.name for e in environments], "reason": None}


def create_project(
    ctx: Context,
    name: str,
    region: str = "local",
    app_command: str | None = None,
    app_dir: str | None = None,
    health_path: str = "/",
    health_timeout: int = 30,
    *,
    database: bool = False,
) -> dict[str, object]:
    """A project with the environments test and live; with `database`, a `DEFAULT`
    PostgreSQL instance in each, in the same transaction (the product's default: the API and
    the CLI ask for it unless told not to). The answer's `database` says what was added: null
    when not asked for; `service` null, with the `reason`, when the region offers none."""
    ctx.require(Need.CREATE_PROJECT)
    naming.check_project_name(name)
    _check_health_path(health_path)
    _check_app_text("app command", app_command, MAX_COMMAND)
    _check_app_dir(ctx.data_dir, app_dir)
    if not 1 <= health_timeout <= 600:
        raise UserError("invalid health timeout: use 1 to 600 seconds")
    with ctx.store.session() as s:
        regions = set(s.scalars(select(Region.name)))
        if region not in regions:
            known = ", ".join(sorted(regions)) or "none yet"
            raise UserError(
                f"unknown region {region!r}: regions with clusters are {known} "
                f"(register one with `tether cluster add KIND --region {region} --url URL`)"
            )
        if s.scalar(select(Project).where(Project.name == name)):
            raise Conflict(f"a project named {name} exists already: pick another name")
        project = Project(name=name, region=region, app_command=app_command or None,
                          app_dir=app_dir, health_path=health_path,
                          health_timeout=health_timeout)
        s.add(project)
        s.flush()
        environments = [_add_environment(s, ctx, project, env_name)
                        for env_name in DEFAULT_ENVIRONMENTS]
        try:
            s.flush()
        except IntegrityError as exc:
            raise Conflict(f"a project named {name} exists already: pick another name") from exc
        added = _add_default_database(s, ctx, project, environments) if database else None
        s.refresh(project)
        view = project_view(project, ctx.box, ctx.front_door)
        view["database"] = added
        return view


def add_environment(ctx: Context, project: str | None, name: str, *,
                    database: bool = False) -> dict[str, object]:
    """Another environment of a project beside test and live (e.g. staging): its own address,
    `SECRET_KEY`, variables and services; with `database`, a `DEFAULT` PostgreSQL instance as a
    new project's environments get (the answer's `database` says what was added, or why
    nothing was). Like every environment it runs nothing until its first deploy."""
    naming.check_environment_name(name)
    with ctx.store.session() as s:
        proj = get_project(s, project, ctx, Need.CHANGE)
        taken = Conflict(f"project {proj.name} has an environment {name} already: pick another "
                         "name")
        if s.scalar(select(Environment.id).where(Environment.project_id == proj.id,
                                                 Environment.name == name)) is not None:
            raise taken
        try:
            env = _add_environment(s, ctx, proj, name)
        except IntegrityError as exc:  # added by a concurrent call
            raise taken from exc
        added = _add_default_database(s, ctx, proj, [env]) if database else None
        view = environment_view(env, ctx.box, proj.name, ctx.front_door)
        view["database"] = added
        return view


def list_projects(ctx: Context, page: PageArgs = ALL) -> Page[dict[str, object]]:
    """The projects the token may see, by name (a page of them)."""
    with ctx.store.session() as s:
        # the environments of all projects in one more query, not one per project
        query = select(Project).options(selectinload(Project.environments))
        if ctx.principal.projects is not None:
            query = query.where(Project.name.in_(sorted(ctx.principal.projects)))
        rows, after = keyset(s, query, Project.name, page)
        return Page([project_view(p, ctx.box, ctx.front_door) for p in rows], after)


def show_project(ctx: Context, name: str | None) -> dict[str, object]:
    with ctx.store.session() as s:
        return project_view(get_project(s, name, ctx), ctx.box, ctx.front_door)


def update_project(ctx: Context, name: str | None, app_command: str | None = None,
                   health_path: str | None = None, app_dir: str | None = None,
                   health_timeout: int | None = None) -> dict[str, object]:
    """Change the application settings (None: unchanged; an empty command or directory removes
    it), checked by the same rules and messages as `create_project`; they take effect with the
    next deploy of each environment."""
    if app_command is not None:
        _check_app_text("app command", app_command, MAX_COMMAND)
    if health_path is not None:
        _check_health_path(health_path)
    if app_dir is not None:
        _check_app_dir(ctx.data_dir, app_dir)
    if health_timeout is not None and not 1 <= health_timeout <= 600:
        raise UserError("invalid health timeout: use 1 to 600 seconds")
    with ctx.store.session() as s:
        project = get_project(s, name, ctx, Need.CHANGE)
        if app_command is not None:
            project.app_command = app_command if app_command.strip() else None
        if health_path is not None:
            project.health_path = health_path
        if app_dir is not None:
            project.app_dir = app_dir or None
        if health_timeout is not None:
            project.health_timeout = health_timeout
        audit(s, ctx.actor, "project updated", detail=project.name)
        return project_view(project, ctx.box, ctx.front_door)
