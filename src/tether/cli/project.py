"""`tether project ...`: create, list and show projects, and their environment variables."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.text import Text

from tether.cli.client import DEFAULT_LIST, Client, env_path, seg
from tether.cli.common import (
    CONTEXT_SETTINGS,
    AllOpt,
    JsonOpt,
    LimitOpt,
    ProjectOpt,
    read_list,
    resolve_project,
)
from tether.cli.output import (
    cell,
    emit_json,
    fail,
    field_line,
    hint,
    out,
    plain,
    say,
    state_text,
    table,
    when,
)

app = typer.Typer(help="Projects (applications) and their environments and variables.",
                  epilog="Example: tether project create shop --app-command 'python app.py'",
                  no_args_is_help=True, context_settings=CONTEXT_SETTINGS)


@app.command("create", epilog="Examples: tether project create shop --app-command "
                              "'python app.py' --health-path /health  (a DEFAULT PostgreSQL "
                              "in test and live)  |  tether project create tools "
                              "--no-database  (no database)")
def create(
    name: Annotated[str, typer.Argument(help="The project name, e.g. shop.")],
    region: Annotated[str | None, typer.Option(
        "--region", help="Where it runs, e.g. local (default: local).")] = None,
    app_command: Annotated[str | None, typer.Option(
        "--app-command", metavar="CMD",
        help="The command that runs the application; it gets PORT and the variables.")] = None,
    health_path: Annotated[str | None, typer.Option(
        "--health-path", metavar="PATH",
        help="The path that answers 2xx when the app is healthy (default: /).")] = None,
    health_timeout: Annotated[int | None, typer.Option(
        "--health-timeout", metavar="S",
        help="Seconds a new release may take to become healthy (default: 30).")] = None,
    app_dir: Annotated[Path | None, typer.Option(
        "--app-dir", metavar="DIR",
        help="The directory the app command runs in (default: the current directory).")] = None,
    no_database: Annotated[bool, typer.Option(
        "--no-database",
        help="Do not add the DEFAULT PostgreSQL database to test and live.")] = False,
    json_: JsonOpt = False,
) -> None:
    """Create a project, with the environments test and live, and a DEFAULT PostgreSQL
    database in each when the region offers PostgreSQL (`new`: the first deploy provisions
    and attaches it)."""
    body: dict[str, Any] = {"name": name,
                            "app_dir": str((app_dir or Path.cwd()).expanduser().resolve())}
    if no_database:
        body["database"] = False
    for key, value in (("region", region), ("app_command", app_command),
                       ("health_path", health_path), ("health_timeout", health_timeout)):
        if value is not None:
            body[key] = value
    with Client.connect(json_) as client:
        project = client.post("/projects", body)
    if json_:
        emit_json(project)
        return
    say(("Created project ", ""), (project["name"], "bold"),
        f" in region {project['region']} with environments "
        + ", ".join(e["name"] for e in project["environments"]) + ".")
    for env in project["environments"]:
        say(f"  {env['name']}: {env['url']}")
    first = project["environments"][0]["name"] if project["environments"] else "test"
    database = project.get("database")
    if database and database.get("service"):
        say(f"{database['prefix']}: {database['service']} in "
            + " and ".join(database["environments"])
            + ", provisioned and attached by the first deploy; --no-database to create a "
              "project without.")
        hint(f"Next: `tether deploy {first}`; `tether service catalog` lists the other services "
             "you can add.")
        return
    if database and database.get("reason"):
        say(f"No database added: {database['reason']}.")
    hint(f"Next: `tether service catalog` lists the services you can add, e.g. "
         f"`tether service add {first} postgres`; then `tether deploy {first}`.")


@app.command("list", epilog="Example: tether project list --json; tether project list --all")
def list_(limit: LimitOpt = DEFAULT_LIST, every: AllOpt = False,
          json_: JsonOpt = False) -> None:
    """List the projects, by name."""
    with Client.connect(json_) as client:
        projects = read_list(client, "/projects", limit, every, "projects")
    if json_:
        emit_json(projects)
        return
    if not projects:
        hint("no project yet: create one with `tether project create NAME`")
        return
    t = table("NAME", "REGION", "ENVIRONMENTS", "APP COMMAND")
    for p in projects:
        t.add_row(Text(p["name"], style="bold"), cell(p["region"]),
                  cell(", ".join(e["name"] for e in p["environments"])), cell(p["app_command"]))
    out.print(t)


@app.command("show", epilog="Example: tether project show -p shop")
def show(project: ProjectOpt = None, json_: JsonOpt = False) -> None:
    """Show a project: its application settings and its environments with their addresses."""
    with Client.connect(json_) as client:
        name = resolve_project(client, project)
        shown = client.get(f"/projects/{seg(name)}")
    if json_:
        emit_json(shown)
        return
    say((shown["name"], "bold"))
    field_line("Region", shown["region"], 16)
    field_line("App command", shown["app_command"], 16)
    field_line("App dir", shown["app_dir"], 16)
    field_line("Health check", f"GET {shown['health_path']} within {shown['health_timeout']} s",
               16)
    field_line("Created", when(shown["created_at"]), 16)
    t = table("ENVIRONMENT", "URL", "RUNNING RELEASE")
    for env in shown["environments"]:
        release = env["current_release_id"]
        t.add_row(Text(env["name"], style="bold"), cell(env["url"]),
                  cell(release) if release else Text("none: not deployed yet", style="dim"))
    out.print(t)


@app.command("add-env", epilog="Examples: tether project add-env staging  |  tether project "
                               "add-env preview --no-database -p shop")
def add_env(
    name: Annotated[str, typer.Argument(
        metavar="ENV", help="The new environment's name, e.g. staging (lower case).")],
    no_database: Annotated[bool, typer.Option(
        "--no-database", help="Do not add the DEFAULT PostgreSQL database to it.")] = False,
    project: ProjectOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Add an environment beside test and live, with its own address, SECRET_KEY, variables
    and services, and a DEFAULT PostgreSQL database unless --no-database (`new`: its first
    deploy provisions and attaches it)."""
    with Client.connect(json_) as client:
        owner = resolve_project(client, project)
        env = client.post(f"/projects/{seg(owner)}/environments",
                          {"name": name, "database": not no_database})
    if json_:
        emit_json(env)
        return
    say(("Added environment ", ""), (env["name"], "bold"), f" to {owner}: {env['url']}")
    database = env.get("database")
    if database and database.get("service"):
        say(f"{database['prefix']}: {database['service']}, provisioned and attached by its "
            "first deploy.")
    elif database and database.get("reason"):
        say(f"No database added: {database['reason']}.")
    hint(f"Next: `tether deploy {env['name']}`.")


@app.command("update", epilog="Example: tether project update --app-command 'gunicorn app:app'")
def update(
    app_command: Annotated[str | None, typer.Option(
        "--app-command", metavar="CMD",
        help="The new application command ('' removes it: deploys are then refused).")] = None,
    health_path: Annotated[str | None, typer.Option(
        "--health-path", metavar="PATH", help="The new health check path.")] = None,
    health_timeout: Annotated[int | None, typer.Option(
        "--health-timeout", metavar="S",
        help="Seconds a new release may take to become healthy.")] = None,
    app_dir: Annotated[Path | None, typer.Option(
        "--app-dir", metavar="DIR", help="The directory the app command runs in.")] = None,
    project: ProjectOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Change a project's application settings: command, health check, directory (used from
    the next deploy)."""
    body: dict[str, Any] = {
        k: v for k, v in (("app_command", app_command), ("health_path", health_path),
                          ("health_timeout", health_timeout),
                          ("app_dir", str(app_dir.expanduser().resolve()) if app_dir else None))
        if v is not None}
    with Client.connect(json_) as client:
        if not body:
            fail("nothing to change: pass --app-command, --health-path, --health-timeout "
                 "and/or --app-dir", 2, json_mode=json_, code="bad_request")
        name = resolve_project(client, project)
        shown = client.patch(f"/projects/{seg(name)}", body)
    if json_:
        emit_json(shown)
        return
    say(("Updated ", ""), (shown["name"], "bold"),
        ": it takes effect with the next deploy of each environment.")


def _source(var: dict[str, Any]) -> Text:
    """Where a variable comes from, e.g. `service DEFAULT (attached)`."""
    source = var.get("source")
    if source == "service":
        return Text.assemble(f"service {var.get('prefix')} (", state_text(var.get("state")), ")")
    return Text(str(source or "-"), style="" if source == "custom" else "dim")


def _find(variables: list[dict[str, Any]], name: str) -> dict[str, Any] | None:
    """The variable `name`, preferring the one the app gets at its next deploy."""
    found = [v for v in variables if v["name"] == name]
    found.sort(key=lambda v: not v.get("next_release", True))
    return found[0] if found else None


@app.command("env-vars", epilog="Examples: tether project env-vars -e test --all [--reveal]  |  "
                                "tether project env-vars --set DEBUG 1  |  "
                                "tether project env-vars --get DATABASE_URL")
def env_vars(
    env: Annotated[str, typer.Option("--env", "-e", metavar="ENV",
                                     help="The environment.")] = "test",
    all_: Annotated[bool, typer.Option(
        "--all", help="Every variable the app gets at its next deploy (services, STAGE, "
                      "SECRET_KEY, custom), with its source and whether the running release "
                      "has it.")] = False,
    reveal: Annotated[bool, typer.Option(
        "--reveal", help="With --all: show the values of secrets (service credentials, "
                         "SECRET_KEY), masked otherwise.")] = False,
    get: Annotated[str | None, typer.Option(
        "--get", metavar="NAME", help="Print the value of one variable alone (its real value: "
                                      "you asked for it by name).")] = None,
    set_: Annotated[tuple[str, str] | None, typer.Option(
        "--set", metavar="NAME VALUE", help="Set a custom variable (from the next deploy).")
    ] = None,
    unset: Annotated[str | None, typer.Option(
        "--unset", metavar="NAME", help="Remove a custom variable (from the next deploy).")
    ] = None,
    limit: LimitOpt = DEFAULT_LIST,
    project: ProjectOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Show or change an environment's variables (custom ones by default; --all: every one the
    app gets, secrets masked unless --reveal)."""
    if sum(x is not None for x in (get, set_, unset)) > 1:
        fail("use one of --get, --set and --unset at a time", 2, json_mode=json_,
             code="bad_request")
    with Client.connect(json_) as client:
        name = resolve_project(client, project)
        base = env_path(name, env) + "/variables"
        if set_ is not None:
            _print_change(client.put(f"{base}/{seg(set_[0])}", {"value": set_[1]}), json_)
            return
        if unset is not None:
            _print_change(client.delete(f"{base}/{seg(unset)}"), json_)
            return
        params = {"all": "true" if all_ or get else "false",
                  "reveal": "true" if reveal or get is not None else "false"}
        # --get looks through every page; a listing shows the first --limit N
        variables = read_list(client, base, limit, get is not None, "variables",
                              params=params, more_hint="--limit N")
    if get is not None:
        var = _find(variables, get)
        if var is None:
            fail(f"{env} has no variable {get}: see `tether project env-vars -e {env} --all`",
                 2, json_mode=json_, code="not_found")
        if json_:
            emit_json(var)
        else:
            plain(str(var["value"]))
        return
    if json_:
        emit_json(variables)
        return
    if not all_:
        if not variables:
            hint(f"no custom variables in {env}: set one with "
                 f"`tether project env-vars -e {env} --set NAME VALUE`; "
                 "--all shows every variable")
        for var in sorted(variables, key=lambda v: v["name"]):
            plain(f"{var['name']}={var['value']}")
        return
    t = table("NAME", "VALUE", "SOURCE", "NEXT DEPLOY", "RUNNING")
    t.columns[0].no_wrap = True
    t.columns[1].overflow = "fold"
    for var in variables:
        dim = "" if var.get("next_release", True) else "dim"
        t.add_row(Text(var["name"], style=dim or "bold"), Text(str(var["value"]), style=dim),
                  _source(var), cell(var.get("next_release")), cell(var.get("in_running_release")))
    out.print(t)
    if any(var.get("hidden") for var in variables):
        hint("secret values are masked: add --reveal to show them, or --get NAME for one")
    if any(not v.get("next_release", True) for v in variables):
        hint("NEXT DEPLOY no: the service is being detached (or is detached), so the next "
             "deploy does not give the app these variables")


def _print_change(answer: dict[str, Any], json_mode: bool) -> None:
    if json_mode:
        emit_json(answer)
    else:
        say(str(answer.get("message") or f"{answer.get('name')} changed"))


@app.command("history", epilog="Examples: tether project history -e live  |  "
                               "tether project history -e test --service DEFAULT --all")
def history(
    env: Annotated[str, typer.Option("--env", "-e", metavar="ENV",
                                     help="The environment.")] = "test",
    service: Annotated[str | None, typer.Option(
        "--service", metavar="PREFIX",
        help="Only this service's entries (also of a removed one with the same prefix).")
    ] = None,
    limit: LimitOpt = DEFAULT_LIST,
    every: AllOpt = False,
    project: ProjectOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Show an environment's history, newest first: who changed its services, variables and
    deploys, and when."""
    with Client.connect(json_) as client:
        name = resolve_project(client, project)
        rows = read_list(client, env_path(name, env) + "/history", limit, every, "entries",
                         params={"prefix": service} if service else None)
    if json_:
        emit_json(rows)
        return
    if not rows:
        hint(f"no history in {env} yet")
        return
    t = table("WHEN", "WHO", "ACTION", "SERVICE", "STATE", "DETAIL")
    for e in rows:
        moved = f"{e['from'] or '-'} -> {e['to']}" if e.get("to") else None
        t.add_row(cell(when(e["at"])), cell(e["actor"]), Text(e["action"], style="bold"),
                  cell(e.get("prefix")), cell(moved), cell(e.get("detail")))
    out.print(t)
