"""`tether service ...`: the catalog, and the service instances of an environment through their
lifecycle: add, provision, detach, attach, remove (see SPEC.md, "Lifecycle of a service
instance"); and rotate, new credentials without downtime."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

import typer
from rich.text import Text

from tether.cli.client import DEFAULT_LIST, Client, env_path, seg
from tether.cli.common import (
    CONTEXT_SETTINGS,
    FINISHED,
    AllOpt,
    EnvArg,
    JsonOpt,
    LimitOpt,
    NoWaitOpt,
    PrefixArg,
    ProjectOpt,
    read_list,
    resolve_project,
    wait_operation,
)
from tether.cli.deploy import _follow as follow_deployment
from tether.cli.output import (
    cell,
    emit_json,
    err,
    field_line,
    hint,
    out,
    say,
    state_text,
    table,
    when,
)

#: seconds a call that queues an operation may wait for its end (see `_waited`)
WAIT_IN_CALL = 2

app = typer.Typer(help="Backing services: the catalog, and the services of an environment.",
                  epilog="Example: tether service add test postgres-18 --prefix ANALYTICS "
                         "--provision",
                  no_args_is_help=True, context_settings=CONTEXT_SETTINGS)


def _path(project: str, env: str, prefix: str | None = None) -> str:
    base = env_path(project, env) + "/services"
    return base if prefix is None else f"{base}/{seg(prefix)}"


def state_line(view: dict[str, Any], env: str) -> Text:
    """`PREFIX (service) in ENV: state — meaning`."""
    return Text.assemble((str(view["prefix"]), "bold"), f" ({view['service']}) in {env}: ",
                         state_text(view["state"]), (f" — {view['meaning']}", "dim"))


def _print_started(view: dict[str, Any], env: str) -> None:
    """What people see when an operation was queued and not waited for."""
    out.print(state_line(view, env))
    op = view.get("operation")
    if op:
        say(f"operation {op['id']} ({op['kind']}) is {op['status']}: follow it with "
            f"`tether service show {env} {view['prefix']}`")


def _waited(wait: bool) -> dict[str, Any] | None:
    """The query of a call that queues an operation the command then waits for: the API answers
    once it has ended, if that is within WAIT_IN_CALL s (most provisions take less), so the
    command needs no second request; else the spinner follows it."""
    return {"wait": WAIT_IN_CALL} if wait else None


def _finish(client: Client, view: dict[str, Any], env: str, label: str, no_wait: bool,
            refetch: Callable[[], dict[str, Any]], retry: str) -> None:
    """Wait for the operation a call queued (unless `no_wait`), then print the final instance.

    A failed operation prints its error (and `retry`, the command that retries it) and exits 1."""
    op = view.get("operation")
    if op is None or no_wait:
        if client.json_mode:
            emit_json(view)
        elif op is None:
            if view.get("message"):
                say(str(view["message"]))
            out.print(state_line(view, env))
        else:
            _print_started(view, env)
        return
    if op["status"] in FINISHED:  # the call waited for it: the view is the final one
        final, shown = op, view
    else:
        final = wait_operation(client, op, label, f"tether service show {env} {view['prefix']}")
        shown = refetch()
        shown["operation"] = final
    if client.json_mode:
        emit_json(shown)
    else:
        out.print(state_line(shown, env))
    if final["status"] == "failed":
        err.print(Text.assemble(("error: ", "bold red"),
                                f"{final['kind']} of {view['prefix']} in {env} failed: "
                                f"{final.get('error') or 'no reason recorded'}"))
        hint(f"retrying is safe: `{retry}`")
        raise typer.Exit(1)


@app.command("catalog", epilog="Example: tether service catalog --region local")
def catalog(
    region: Annotated[str | None, typer.Option(
        "--region", help="The region (default: the project's region).")] = None,
    project: ProjectOpt = None,
    json_: JsonOpt = False,
) -> None:
    """List the services you can add, in a region (default: the project's)."""
    with Client.connect(json_) as client:
        params: dict[str, Any] = {}
        if region:
            params["region"] = region
        else:
            params["project"] = resolve_project(client, project)
        offers = client.get("/catalog", params=params)
    if json_:
        emit_json(offers)
        return
    where = region or f"the region of {params['project']}"
    if not offers:
        hint(f"no services offered in {where}: an operator registers servers with "
             "`tether cluster add`")
        return
    t = table("SERVICE", "KIND", "VERSION", "REGION", "SHARED", "PRIVATE")
    for o in offers:
        t.add_row(Text(o["service"], style="bold"), cell(o["kind"]), cell(o["version"]),
                  cell(o["region"]), cell(o["shared"]), cell(o["private"]))
    out.print(t)


@app.command("add", epilog="Example: tether service add test postgres-18 --prefix ANALYTICS "
                           "--provision")
def add(
    env: EnvArg,
    service: Annotated[str, typer.Argument(
        metavar="SERVICE", help="A service of the catalog, e.g. postgres-18 or local-media.")],
    prefix: Annotated[str, typer.Option(
        "--prefix", metavar="P", help="Upper-case prefix of its variables, unique in the "
                                      "environment.")] = "DEFAULT",
    private: Annotated[bool, typer.Option(
        "--private", help="On a server of its own instead of a shared one.")] = False,
    provision: Annotated[bool, typer.Option(
        "--provision", help="Provision it now, so it can be filled before a deploy attaches "
                            "it.")] = False,
    no_wait: NoWaitOpt = False,
    project: ProjectOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Add a service to an environment; the next deploy provisions and attaches it."""
    with Client.connect(json_) as client:
        name = resolve_project(client, project)
        view = client.post(_path(name, env), {"service": service, "prefix": prefix,
                                              "private": private, "provision": provision},
                           params=_waited(provision and not no_wait))
        _finish(client, view, env, f"provisioning {prefix} in {env}", no_wait,
                lambda: client.get(_path(name, env, prefix)),
                f"tether service provision {env} {prefix} -p {name}")
    if not json_ and view.get("operation") is None:
        hint(f"Next: `tether deploy {env}` provisions and attaches it; or provision it now "
             f"with `tether service provision {env} {prefix}` to fill it first.")
    elif not json_ and not no_wait:
        hint(f"Next: `tether deploy {env}` attaches it.")


@app.command("provision", epilog="Example: tether service provision test ANALYTICS")
def provision(env: EnvArg, prefix: PrefixArg, no_wait: NoWaitOpt = False,
              project: ProjectOpt = None, json_: JsonOpt = False) -> None:
    """Provision a new service now (before a deploy), e.g. to fill it with data first."""
    with Client.connect(json_) as client:
        name = resolve_project(client, project)
        view = client.post(_path(name, env, prefix) + "/provision",
                           params=_waited(not no_wait))
        _finish(client, view, env, f"provisioning {prefix} in {env}", no_wait,
                lambda: client.get(_path(name, env, prefix)),
                f"tether service provision {env} {prefix} -p {name}")


@app.command("list", epilog="Example: tether service list test --removed; "
                             "tether service list test --all")
def list_(
    env: EnvArg,
    removed: Annotated[bool, typer.Option("--removed",
                                          help="Include removed services.")] = False,
    limit: LimitOpt = DEFAULT_LIST,
    every: AllOpt = False,
    project: ProjectOpt = None,
    json_: JsonOpt = False,
) -> None:
    """List the services of an environment with their states."""
    with Client.connect(json_) as client:
        name = resolve_project(client, project)
        instances = read_list(client, _path(name, env), limit, every, "services",
                              params={"removed": "true" if removed else "false"})
    if json_:
        emit_json(instances)
        return
    if not instances:
        hint(f"no services in {env}: add one with `tether service add {env} SERVICE` "
             "(see `tether service catalog`)")
        return
    t = table("PREFIX", "SERVICE", "STATE", "VISIBILITY", "CLUSTER", "NOTE")
    for i in instances:
        op = i.get("operation")
        note: Text
        if op:
            note = Text(f"{op['kind']} {op['status']} (operation {op['id']})", style="cyan")
        elif i.get("last_error"):
            note = Text(f"last error: {i['last_error']}", style="red")
        elif i.get("drift"):
            note = Text(f"drift: {i['drift']}", style="yellow")
        else:
            note = cell(None)
        cluster = i.get("cluster")
        t.add_row(Text(i["prefix"], style="bold"), cell(i["service"]), state_text(i["state"]),
                  cell(i["visibility"]), cell(cluster["name"] if cluster else None), note)
    out.print(t)


@app.command("show", epilog="Example: tether service show test DEFAULT --reveal")
def show(
    env: EnvArg,
    prefix: PrefixArg,
    reveal: Annotated[bool, typer.Option(
        "--reveal", help="Show the values of its variables (they are secrets).")] = False,
    project: ProjectOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Show a service: state and meaning, cluster, variables, last error and history."""
    with Client.connect(json_) as client:
        name = resolve_project(client, project)
        view = client.get(_path(name, env, prefix), params={"reveal": "true" if reveal else
                                                            "false"})
    if json_:
        emit_json(view)
        return
    say((str(view["prefix"]), "bold"), f" ({view['service']}) in {name}/{env}")
    field_line("State", Text.assemble(state_text(view["state"]), f" — {view['meaning']}"))
    field_line("Visibility", view["visibility"])
    cluster = view.get("cluster")
    field_line("Cluster", f"{cluster['name']} ({cluster['location']})" if cluster else None)
    op = view.get("operation")
    if op:
        field_line("Operation", Text(f"{op['kind']} {op['status']} (operation {op['id']}, "
                                     f"asked by {op['requested_by']})", style="cyan"))
    if view.get("last_error"):
        field_line("Last error", Text(str(view["last_error"]), style="red"))
    if view.get("drift"):
        field_line("Drift", Text(f"{view['drift']} (found {when(view.get('observed_at'))})",
                                 style="yellow"))
    variables: dict[str, str] = view.get("variables") or {}
    if variables:
        say(("Variables:", "bold"))
        width = max(len(k) for k in variables)
        for key in sorted(variables):
            say(f"  {key:<{width}}  ", variables[key])
        if not reveal:
            hint(f"values hidden: add --reveal, or use `tether project env-vars -e {env} --all`")
    else:
        field_line("Variables", Text("none yet: they exist once it is provisioned", style="dim"))
    history = view.get("history") or []
    if history:
        t = table("WHEN", "WHO", "ACTION", "FROM → TO", "DETAIL", title="History")
        for h in history:
            change = (Text.assemble(state_text(h.get("from")), " → ", state_text(h.get("to")))
                      if h.get("from") or h.get("to") else cell(None))
            t.add_row(cell(when(h.get("at"))), cell(h.get("actor")), cell(h.get("action")),
                      change, cell(h.get("detail")))
        out.print(t)


def _simple(action: str, env: str, prefix: str, project: str | None, json_: bool) -> None:
    """detach and attach: a state change that takes effect with the next deploy."""
    with Client.connect(json_) as client:
        name = resolve_project(client, project)
        view = client.post(_path(name, env, prefix) + f"/{action}")
    if json_:
        emit_json(view)
        return
    if view.get("message"):
        say(str(view["message"]))
    out.print(state_line(view, env))


@app.command("detach", epilog="Example: tether service detach test DEFAULT")
def detach(env: EnvArg, prefix: PrefixArg, project: ProjectOpt = None,
           json_: JsonOpt = False) -> None:
    """Detach a service: the next successful deploy drops its variables; its data is kept."""
    _simple("detach", env, prefix, project, json_)


@app.command("attach", epilog="Example: tether service attach test DEFAULT")
def attach(env: EnvArg, prefix: PrefixArg, project: ProjectOpt = None,
           json_: JsonOpt = False) -> None:
    """Re-attach a detached service (or cancel a pending detachment); takes effect on deploy."""
    _simple("attach", env, prefix, project, json_)


@app.command("remove", epilog="Example: tether service remove test ANALYTICS --confirm ANALYTICS")
def remove(
    env: EnvArg,
    prefix: PrefixArg,
    confirm: Annotated[str | None, typer.Option(
        "--confirm", metavar="PREFIX", help="Type the prefix again: its data is deleted for "
                                            "good.")] = None,
    no_wait: NoWaitOpt = False,
    project: ProjectOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Remove a service that is not attached, deleting its data for good."""
    with Client.connect(json_) as client:
        name = resolve_project(client, project)
        params = {"confirm": confirm} if confirm is not None else None
        view = client.delete(_path(name, env, prefix), params=params)
        _finish(client, view, env, f"removing {prefix} from {env}", no_wait,
                lambda: client.get(_path(name, env, prefix)),
                f"tether service remove {env} {prefix} --confirm {prefix} -p {name}")


@app.command("rotate", epilog="Example: tether service rotate live DEFAULT")
def rotate(env: EnvArg, prefix: PrefixArg, no_wait: NoWaitOpt = False,
           project: ProjectOpt = None, json_: JsonOpt = False) -> None:
    """Give a service new credentials without downtime: a second login is made, the environment
    is deployed with it (when its running release uses the service), then the old credentials
    are revoked. Also repairs a service whose password was changed behind Tether's back."""
    with Client.connect(json_) as client:
        name = resolve_project(client, project)
        view = client.post(_path(name, env, prefix) + "/rotate")
        op = view.get("operation")
        if op is None or no_wait:
            _finish(client, view, env, "", True, lambda: view, "")
            return
        if not json_ and view.get("message"):
            say(str(view["message"]))
        final = wait_operation(client, op, f"rotating the credentials of {prefix} in {env}",
                               f"tether service show {env} {prefix}")
        deployment = None
        if final["status"] == "succeeded" and final.get("deployment_id"):
            dep = client.get(f"/deployments/{seg(final['deployment_id'])}")
            if not json_:
                say("Deploying ", (f"{name}/{env}", "bold"), " with the new credentials "
                    f"(deployment {dep['id']})")
            deployment = follow_deployment(client, dep, f"{name}/{env}")
        shown = client.get(_path(name, env, prefix))
    shown["operation"] = final
    shown["deployment"] = deployment
    if json_:
        emit_json(shown)
    retry = f"tether service rotate {env} {prefix} -p {name}"
    if final["status"] == "failed":
        err.print(Text.assemble(("error: ", "bold red"), f"rotating the credentials of {prefix} "
                                f"in {env} failed: {final.get('error') or 'no reason recorded'}"))
        hint(f"retrying is safe: `{retry}`")
        raise typer.Exit(1)
    if deployment is not None and deployment["status"] != "succeeded":
        err.print(Text.assemble(("error: ", "bold red"), f"deployment {deployment['id']} of "
                                f"{env} failed: {deployment.get('error') or 'no reason recorded'}"))
        err.print("the previous release keeps running with the old credentials, which stay "
                  f"valid beside the new ones: fix the cause, then `tether deploy {env}` "
                  "finishes the rotation")
        raise typer.Exit(1)
    if json_:
        return
    out.print(state_line(shown, env))
    old = shown.get("retiring_logins") or []
    if old:
        err.print(Text.assemble(("warning: ", "bold yellow"), f"the old login(s) "
                                f"{', '.join(old)} of {prefix} are still valid: "
                                f"{shown.get('last_error') or 'a running release uses them'}"))
    else:
        say(("Rotated ", "green"), (prefix, "bold"), f" in {env}: it logs in as "
            f"{shown.get('login')} now, and the old credentials are revoked")


@app.command("copy", epilog="Example: tether service copy DEFAULT --from live --to test "
                            "--confirm DEFAULT")
def copy(
    prefix: PrefixArg,
    from_: Annotated[str, typer.Option("--from", metavar="ENV",
                                       help="The environment to copy the data from.")],
    to: Annotated[str, typer.Option("--to", metavar="ENV",
                                    help="The environment whose data is replaced.")],
    confirm: Annotated[str | None, typer.Option(
        "--confirm", metavar="PREFIX", help="Type the prefix again: the data of the service "
                                            "in --to is replaced.")] = None,
    no_wait: NoWaitOpt = False,
    project: ProjectOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Copy a service's data to the service of the same prefix in another environment (a
    backup of --from, kept, restored into --to)."""
    with Client.connect(json_) as client:
        name = resolve_project(client, project)
        view = client.post(_path(name, to, prefix) + "/copy",
                           {"source": from_, "confirm": confirm})
        op = view["operation"]
        if no_wait:
            if json_:
                emit_json(view)
            else:
                say(f"operation {op['id']} (copy) is {op['status']}: follow it with "
                    f"`tether backup show {view['id']}`")
            return
        final = wait_operation(client, op, f"copying {prefix} from {from_} to {to}",
                               f"tether backup show {view['id']}")
    view["operation"] = final
    if json_:
        emit_json(view)
    if final["status"] == "failed":
        if not json_:
            err.print(Text.assemble(("error: ", "bold red"), f"copying {prefix} from {from_} "
                                    f"to {to} failed: {final.get('error') or 'no reason'}"))
            hint(f"the data of {prefix} in {to} is as it was; retrying is safe")
        raise typer.Exit(1)
    if not json_:
        say(("Copied", "green"), f" {prefix} from {from_} to {to} (backup {view['id']} "
            "kept)")


@app.command("wait", epilog="Example: tether service add test postgres --provision --no-wait && "
                            "tether service wait test DEFAULT")
def wait(env: EnvArg, prefix: PrefixArg, project: ProjectOpt = None,
         json_: JsonOpt = False) -> None:
    """Wait for the operation a service has running or queued (e.g. one started with
    `--no-wait`), then show its state; exit 1 when that operation failed."""
    with Client.connect(json_) as client:
        name = resolve_project(client, project)
        view = client.get(_path(name, env, prefix))
        op = view.get("operation")
        if op is None and not json_:
            say(f"{prefix} has no operation running or queued: nothing to wait for")
        kind = str(op["kind"]) if op else "provision"
        retry = (f"tether service remove {env} {prefix} --confirm {prefix} -p {name}"
                 if kind == "remove" else f"tether service rotate {env} {prefix} -p {name}"
                 if kind == "rotate" else f"tether service provision {env} {prefix} -p {name}")
        _finish(client, view, env, f"waiting for the {kind} of {prefix} in {env}", False,
                lambda: client.get(_path(name, env, prefix)), retry)
