"""`tether deploy ENV` (follows the deployment with its log and a progress bar),
`tether deployments ENV` and `tether deployment show ID`."""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, Progress, SpinnerColumn, TaskProgressColumn, TextColumn
from rich.text import Text

from tether.cli.client import LONG_POLL, Client, env_path, seg
from tether.cli.common import (
    CONTEXT_SETTINGS,
    DEFAULT_GRACE,
    FINISHED,
    AllOpt,
    EnvArg,
    JsonOpt,
    NoWaitOpt,
    ProjectOpt,
    read_list,
    resolve_project,
)
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

#: seconds between two looks at a deployment when the server answers at once (one that does
#: not long-poll); a server that does answers each look as soon as something is new
POLL_INTERVAL = 0.3

deployment_app = typer.Typer(help="Past deployments of an environment.", no_args_is_help=True,
                             epilog="Example: tether deployment show 12",
                             context_settings=CONTEXT_SETTINGS)


def _log_line(entry: dict[str, Any]) -> Text:
    """`HH:MM:SS line` (local time)."""
    at = when(entry.get("at"))[11:] if entry.get("at") else ""
    return Text.assemble((at + " " if at else "", "dim"), str(entry.get("line", "")))


def _follow(client: Client, dep: dict[str, Any], key: str) -> dict[str, Any]:
    """Follow a deployment until it has finished, printing new log lines (people only): each
    request long-polls (`wait`), answered when a line, the percent, the status or the end is
    new. When one brings nothing new (the wait ran out), the deployment's operation is looked
    at too: a safety net should its worker have given up without finishing it.

    Returns the final deployment with all its log lines under `logs`."""
    logs: list[dict[str, Any]] = []
    op = dep.get("operation")
    show = not client.json_mode
    progress = Progress(
        SpinnerColumn(), TextColumn("{task.description}", markup=False), BarColumn(),
        TaskProgressColumn(), console=out, transient=True) if show and out.is_terminal else None
    follow = f"tether deployment show {dep['id']}"
    try:
        if progress is not None:
            progress.start()
            task = progress.add_task(f"deploying {key}", total=100,
                                     completed=dep.get("percent") or 0)
        op_failed = False
        while True:
            after = logs[-1]["id"] if logs else 0
            seen = (dep["status"], dep.get("percent"))
            asked = time.monotonic()
            params = {"logs_after": after, "wait": LONG_POLL, "status": seen[0],
                      "percent": seen[1] or 0}
            dep = client.get(f"/deployments/{seg(dep['id'])}", params=params,
                             timeout=LONG_POLL + DEFAULT_GRACE)
            new = dep.get("logs") or []
            logs.extend(new)
            if show:
                for entry in new:
                    out.print(_log_line(entry))
            if progress is not None:
                progress.update(task, completed=dep.get("percent") or 0,
                                description=f"deploying {key} ({dep['status']})")
            if dep["status"] in FINISHED:
                break
            if op_failed:  # the worker gave up without finishing the deployment
                dep["status"], dep["success"] = "failed", False
                dep["error"] = (dep.get("error") or (op or {}).get("error")
                                or "the deployment's operation failed")
                break
            if new or (dep["status"], dep.get("percent")) != seen:
                continue
            if op:  # nothing new for a whole wait: is the deployment's operation still on?
                op = client.get(f"/operations/{seg(op['id'])}")
                op_failed = op["status"] == "failed"
                if op_failed:
                    continue  # one last look at the deployment and its log
            if time.monotonic() - asked < 1.0:  # a server that does not long-poll
                time.sleep(POLL_INTERVAL)
    except KeyboardInterrupt:
        if progress is not None:
            progress.stop()  # before the hint; stopping again below is a no-op
        hint(f"stopped following: deployment {dep['id']} goes on; see it with `{follow}`")
        raise typer.Exit(130) from None
    finally:
        if progress is not None:
            progress.stop()
    dep["logs"] = logs
    return dep


def deploy(env: EnvArg, no_wait: NoWaitOpt = False, project: ProjectOpt = None,
           json_: JsonOpt = False) -> None:
    """Deploy an environment, following its progress; exit 1 when it failed.

    A deployment provisions what is pending, rolls out a new release of the app with the new
    variables once it is healthy, and settles the services' states. When it fails, nothing
    changes: the previous release keeps running.
    """
    with Client.connect(json_) as client:
        name = resolve_project(client, project)
        dep = client.post(env_path(name, env) + "/deployments")
        key = f"{name}/{env}"
        if no_wait:
            if json_:
                emit_json(dep)
            else:
                say(f"deployment {dep['id']} of {key} is {dep['status']}: follow it with "
                    f"`tether deployment show {dep['id']}`")
            return
        if not json_:
            say(("Deploying ", ""), (key, "bold"), f" (deployment {dep['id']})")
        final = _follow(client, dep, key)
        url = None
        if final["status"] == "succeeded":
            shown = client.get(f"/projects/{seg(name)}")
            url = next((e["url"] for e in shown.get("environments", []) if e["name"] == env),
                       None)
            final["url"] = url
    if json_:
        emit_json(final)
    if final["status"] != "succeeded":
        err.print(Text.assemble(("error: ", "bold red"),
                                f"deployment {final['id']} of {key} failed: "
                                f"{final.get('error') or 'no reason recorded'}"))
        err.print("the previous release keeps running, and no service changed state")
        raise typer.Exit(1)
    if not json_:
        say(("Deployed ", "green"), (key, "bold"), f" (deployment {final['id']})",
            f": {url}" if url else "")


def deployments(
    env: EnvArg,
    limit: Annotated[int, typer.Option("--limit", metavar="N", min=1,
                                       help="How many, newest first.")] = 20,
    every: AllOpt = False,
    project: ProjectOpt = None,
    json_: JsonOpt = False,
) -> None:
    """List the past deployments of an environment, newest first."""
    with Client.connect(json_) as client:
        name = resolve_project(client, project)
        rows = read_list(client, env_path(name, env) + "/deployments", limit, every,
                         "deployments")
    if json_:
        emit_json(rows)
        return
    if not rows:
        hint(f"no deployments of {name}/{env} yet: run `tether deploy {env}`")
        return
    t = table("ID", "STATUS", "PERCENT", "BY", "STARTED", "FINISHED", "ERROR")
    t.columns[6].overflow = "fold"
    for d in rows:
        t.add_row(Text(str(d["id"]), style="bold"), state_text(d["status"]),
                  cell(f"{d.get('percent') or 0}%"), cell(d.get("requested_by")),
                  cell(when(d.get("started_at") or d.get("created_at"))),
                  cell(when(d.get("finished_at")) if d.get("finished_at") else None),
                  Text(str(d["error"]), style="red") if d.get("error") else cell(None))
    out.print(t)


@deployment_app.command("show", epilog="Example: tether deployment show 12")
def show(
    deployment_id: Annotated[int, typer.Argument(metavar="ID", help="The deployment id.")],
    json_: JsonOpt = False,
) -> None:
    """Show a deployment: its status and its whole log."""
    with Client.connect(json_) as client:
        dep = client.get(f"/deployments/{seg(deployment_id)}", params={"logs_after": 0})
    if json_:
        emit_json(dep)
        return
    say((f"Deployment {dep['id']}", "bold"), f" of {dep.get('project')}/{dep.get('environment')}")
    field_line("Status", Text.assemble(state_text(dep["status"]), f" ({dep.get('percent')}%)"))
    field_line("Asked by", dep.get("requested_by"))
    field_line("Started", when(dep.get("started_at") or dep.get("created_at")))
    field_line("Finished", when(dep.get("finished_at")) if dep.get("finished_at") else None)
    field_line("Release", dep.get("release_id"))
    if dep.get("error"):
        field_line("Error", Text(str(dep["error"]), style="red"))
    logs = dep.get("logs") or []
    if logs:
        say(("Log:", "bold"))
        for entry in logs:
            out.print(_log_line(entry))


def register(root: typer.Typer) -> None:
    """Add `deploy`, `deployments` and `deployment show` to the top-level app."""
    root.command("deploy", epilog="Example: tether deploy test  |  tether deploy live -p shop "
                                  "--json")(deploy)
    root.command("deployments", epilog="Example: tether deployments test --limit 5")(deployments)
    root.add_typer(deployment_app, name="deployment")
