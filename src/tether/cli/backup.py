"""`tether backup ...`: back up the services of an environment, list and show backups, restore
one (into the same or another environment), upload a dump made elsewhere, download, verify,
delete. Every backup is sealed (encrypted with a key of its own, checksummed) on a storage
cluster of the project's region; a backup is listed once every file of it is stored."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.text import Text

from tether.cli.client import DEFAULT_LIST, Client, env_path, seg
from tether.cli.common import (
    CONTEXT_SETTINGS,
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
from tether.cli.output import cell, emit_json, err, fail, field_line, hint, out, say, table, when

app = typer.Typer(help="Backups of an environment's services: create, list, restore, upload, "
                       "download, verify, delete (copies: `tether service copy`).",
                  epilog="Example: tether backup create live && tether backup list && "
                         "tether backup restore 12 --to test --confirm DEFAULT",
                  no_args_is_help=True, context_settings=CONTEXT_SETTINGS)

IdArg = Annotated[int, typer.Argument(metavar="ID", min=1, help="The backup's id "
                                                               "(`tether backup list`).")]
PrefixOpt = Annotated[str | None, typer.Option(
    "--prefix", metavar="PREFIX", help="The service of the backup (needed when it holds "
                                       "several).")]
ConfirmOpt = Annotated[str | None, typer.Option(
    "--confirm", metavar="PREFIX", help="Type the prefix again: its data is replaced.")]


def mib(size: object) -> str:
    return f"{int(str(size or 0)) / (1 << 20):.1f} MiB"


def _files(view: dict[str, Any]) -> str:
    return ", ".join(str(f["prefix"]) for f in view.get("files", [])) or "-"


def _finish(client: Client, view: dict[str, Any], label: str, no_wait: bool,
            done: str) -> dict[str, Any]:
    """Wait for the operation a command queued (unless `no_wait`), exit 1 when it failed."""
    op = view.get("operation")
    if op is None:
        return view
    if no_wait:
        if client.json_mode:
            emit_json(view)
        else:
            say(f"operation {op['id']} ({op['kind']}) is {op['status']}: follow it with "
                f"`tether backup show {view['id']}`")
        raise typer.Exit(0)
    final = wait_operation(client, op, label, f"tether backup show {view['id']}")
    shown = client.get(f"/backups/{seg(view['id'])}") if view.get("status") != "deleted" \
        else view
    shown["operation"] = final
    if final["status"] == "failed":
        if client.json_mode:
            emit_json(shown)
        else:
            err.print(Text.assemble(("error: ", "bold red"),
                                    f"{label} failed: {final.get('error') or 'no reason'}"))
            hint("retrying is safe")
        raise typer.Exit(1)
    if client.json_mode:
        emit_json(shown)
    else:
        say(("Done", "green"), f": {final.get('message') or done}")
    return shown


@app.command("create", epilog="Example: tether backup create live DEFAULT --verify")
def create(env: EnvArg,
           prefixes: Annotated[list[str] | None, typer.Argument(
               metavar="[PREFIX]...", help="The services to back up (default: every service "
                                           "of ENV that has data).")] = None,
           verify: Annotated[bool, typer.Option(
               "--verify", help="Then restore the backup into a scratch copy and compare it "
                                "with what was backed up.")] = False,
           no_wait: NoWaitOpt = False, project: ProjectOpt = None,
           json_: JsonOpt = False) -> None:
    """Back up the services of an environment as one backup."""
    with Client.connect(json_) as client:
        name = resolve_project(client, project)
        view = client.post(env_path(name, env) + "/backups",
                           {"prefixes": prefixes or [], "verify": verify})
        _finish(client, view, f"backing up {_files(view)} of {name}/{env}", no_wait,
                f"backup {view['id']} is complete")


@app.command("list", epilog="Example: tether backup list live --all")
def list_(env: Annotated[str | None, typer.Argument(
              metavar="[ENV]", help="Only this environment's backups.")] = None,
          all_: Annotated[bool, typer.Option(
              "--all", help="Also backups still running, and failed ones.")] = False,
          limit: LimitOpt = DEFAULT_LIST,
          project: ProjectOpt = None, json_: JsonOpt = False) -> None:
    """The project's restorable backups, newest first (the newest N with --limit N)."""
    with Client.connect(json_) as client:
        name = resolve_project(client, project)
        params: dict[str, Any] = {"all": all_}
        if env:
            params["env"] = env
        rows = read_list(client, f"/projects/{seg(name)}/backups", limit, False, "backups",
                         params=params, more_hint="--limit N")
    if json_:
        emit_json(rows)
        return
    if not rows:
        say(f"no backups of {name}" + (f" {env}" if env else "") +
            f" yet: make one with `tether backup create {env or 'ENV'}`")
        return
    t = table("ID", "Env", "Services", "Origin", "Status", "Size", "Verified", "Created")
    for b in rows:
        t.add_row(str(b["id"]), b["environment"], _files(b), b["origin"], b["status"],
                  mib(b["size"]), cell(b.get("verification")), when(b["created_at"]))
    out.print(t)


@app.command("show", epilog="Example: tether backup show 12")
def show(backup_id: IdArg, json_: JsonOpt = False) -> None:
    """One backup: its services, files, checksums and last verification."""
    with Client.connect(json_) as client:
        b = client.get(f"/backups/{seg(backup_id)}")
    if json_:
        emit_json(b)
        return
    field_line("Backup", str(b["id"]))
    field_line("Of", f"{b['project']}/{b['environment']}")
    field_line("Origin", b["origin"])
    field_line("Status", b["status"] + (f" ({b['error']})" if b.get("error") else ""))
    field_line("Size", mib(b["size"]))
    field_line("Created", f"{when(b['created_at'])} by {b['requested_by']}")
    field_line("Verified", cell(b.get("verification") and
                                f"{b['verification']} {when(b.get('verified_at'))}: "
                                f"{b.get('verification_detail')}"))
    op = b.get("operation")
    if op:
        field_line("Operation", f"{op['id']} {op['kind']} {op['status']}"
                   + (f" — {op['progress']}" if op.get("progress") else ""))
    t = table("Service", "Kind", "Format", "Status", "Size", "SHA-256")
    for f in b["files"]:
        t.add_row(f["prefix"], f["kind"], f["format"], f["status"], mib(f["size"]),
                  cell(f.get("sha256")))
    out.print(t)


@app.command("restore", epilog="Example: tether backup restore 12 --to test --confirm DEFAULT")
def restore(backup_id: IdArg,
            to: Annotated[str | None, typer.Option(
                "--to", metavar="ENV", help="Restore into this environment of the project "
                                            "(default: the backup's own).")] = None,
            prefix: PrefixOpt = None, confirm: ConfirmOpt = None, no_wait: NoWaitOpt = False,
            json_: JsonOpt = False) -> None:
    """Replace a service's data with a backup's (the service of the same prefix)."""
    with Client.connect(json_) as client:
        view = client.post(f"/backups/{seg(backup_id)}/restore",
                           {"to": to, "prefix": prefix, "confirm": confirm})
        _finish(client, view, f"restoring backup {backup_id}", no_wait,
                f"restored backup {backup_id}")


@app.command("upload", epilog="Example: tether backup upload db.dump --to test DEFAULT "
                              "--confirm DEFAULT")
def upload(file: Annotated[Path, typer.Argument(
               metavar="FILE", exists=True, dir_okay=False, readable=True,
               help="A dump made elsewhere, e.g. with `pg_dump -Fc`.")],
           to: Annotated[str, typer.Option("--to", metavar="ENV",
                                           help="The environment of the service.")],
           prefix: PrefixArg, confirm: ConfirmOpt = None, no_wait: NoWaitOpt = False,
           project: ProjectOpt = None, json_: JsonOpt = False) -> None:
    """Restore a dump made elsewhere into a service (kept as a backup of origin upload)."""
    with Client.connect(json_) as client:
        name = resolve_project(client, project)
        if not json_:
            say(f"uploading {file.name} ({mib(file.stat().st_size)})…")
        view = client.upload(env_path(name, to) + f"/services/{seg(prefix)}/upload", file,
                             params={"confirm": confirm} if confirm is not None else None)
        _finish(client, view, f"restoring {file.name} into {prefix} in {to}", no_wait,
                f"{prefix} in {to} holds the uploaded data")


@app.command("download", epilog="Example: tether backup download 12 -o live.dump")
def download(backup_id: IdArg,
             output: Annotated[Path, typer.Option(
                 "-o", "--output", metavar="FILE", dir_okay=False,
                 help="Where to write the file (e.g. a `pg_dump -Fc` archive).")],
             prefix: PrefixOpt = None, json_: JsonOpt = False) -> None:
    """Download one service's file of a backup, as it was dumped (decrypted, checked)."""
    if output.exists():
        fail(f"{output} exists: choose another -o FILE (nothing is overwritten)", 2,
             json_mode=json_, code="exists")
    with Client.connect(json_) as client:
        size = client.download(f"/backups/{seg(backup_id)}/download", output,
                               params={"prefix": prefix} if prefix else None)
    if json_:
        emit_json({"id": backup_id, "file": str(output), "size": size})
    else:
        say(("Downloaded", "green"), f" backup {backup_id} to {output} ({mib(size)})")


@app.command("verify", epilog="Example: tether backup verify 12")
def verify(backup_id: IdArg, no_wait: NoWaitOpt = False, json_: JsonOpt = False) -> None:
    """Restore a backup into a scratch copy and compare it with what was backed up."""
    with Client.connect(json_) as client:
        view = client.post(f"/backups/{seg(backup_id)}/verify")
        _finish(client, view, f"verifying backup {backup_id}", no_wait,
                f"backup {backup_id} verified")


@app.command("delete", epilog="Example: tether backup delete 12")
def delete(backup_id: IdArg, no_wait: NoWaitOpt = False, json_: JsonOpt = False) -> None:
    """Delete a backup and its files (it is never listed or restored again)."""
    with Client.connect(json_) as client:
        view = client.delete(f"/backups/{seg(backup_id)}")
        _finish(client, view, f"deleting backup {backup_id}", no_wait,
                f"backup {backup_id} is deleted")


@app.command("schedule", epilog="Example: tether backup schedule live --at 03:30 --keep-daily 7 "
                                "--keep-weekly 4 --keep-monthly 12")
def schedule(env: EnvArg,
             at: Annotated[str | None, typer.Option(
                 "--at", metavar="HH:MM", help="Back up every day at this time (UTC).")] = None,
             keep_daily: Annotated[int, typer.Option(
                 "--keep-daily", min=0, help="Keep the newest backup of this many days.")] = 7,
             keep_weekly: Annotated[int, typer.Option(
                 "--keep-weekly", min=0, help="… of this many weeks.")] = 4,
             keep_monthly: Annotated[int, typer.Option(
                 "--keep-monthly", min=0, help="… of this many months.")] = 12,
             verify_every: Annotated[int, typer.Option(
                 "--verify-every", metavar="DAYS", min=0,
                 help="Verify a scheduled backup when the last verification is older.")] = 7,
             off: Annotated[bool, typer.Option("--off", help="Stop scheduled backups (those "
                                                             "made are kept).")] = False,
             project: ProjectOpt = None, json_: JsonOpt = False) -> None:
    """Show, set (--at) or stop (--off) an environment's daily backups and their retention."""
    with Client.connect(json_) as client:
        name = resolve_project(client, project)
        path = env_path(name, env) + "/backup-schedule"
        if off:
            view = client.delete(path)
        elif at is not None:
            view = client.put(path, {"at": at, "keep_daily": keep_daily,
                                     "keep_weekly": keep_weekly, "keep_monthly": keep_monthly,
                                     "verify_every_days": verify_every})
        else:
            view = client.get(path)
    if json_:
        emit_json(view)
    elif not view.get("enabled"):
        say(f"{name}/{env} has no scheduled backups: set them with "
            f"`tether backup schedule {env} --at 03:30`")
    else:
        say(f"{name}/{env} is backed up every day at {view['at']} UTC, keeping "
            f"{view['keep_daily']} daily, {view['keep_weekly']} weekly and "
            f"{view['keep_monthly']} monthly backups; verified every "
            f"{view['verify_every_days']} days")
