"""What the command groups share: the common options, choosing the project, and waiting for an
operation (`GET /api/v1/operations/{id}?wait=`) with a spinner."""

from __future__ import annotations

import contextlib
from typing import Annotated, Any

import typer
from rich.text import Text

from tether.cli.client import DEFAULT_LIST, LONG_POLL, Client, seg
from tether.cli.output import err, fail, hint

#: statuses of a finished operation or deployment
FINISHED = ("succeeded", "failed")
#: seconds added to a long-poll's own wait for the answer to arrive
DEFAULT_GRACE = 30.0
#: project names an error about several projects names (then "…")
SHOWN_NAMES = 10

#: `help_option_names` etc. for every Typer app of the CLI
CONTEXT_SETTINGS: dict[str, Any] = {"help_option_names": ["-h", "--help"]}

ProjectOpt = Annotated[
    str | None,
    typer.Option("--project", "-p", envvar="TETHER_PROJECT", show_envvar=False,
                 metavar="NAME",
                 help="The project to act on. Default: $TETHER_PROJECT, else the only project."),
]
JsonOpt = Annotated[
    bool, typer.Option("--json", help="Print one JSON document (for scripts) instead of text."),
]
LimitOpt = Annotated[
    int, typer.Option("--limit", metavar="N", min=1,
                      help=f"Show at most N (default {DEFAULT_LIST}).")]
AllOpt = Annotated[bool, typer.Option("--all", help="Show every one, however many.")]


def read_list(client: Client, path: str, limit: int, every: bool, what: str,
              params: dict[str, Any] | None = None, more_hint: str = "--limit N or --all"
              ) -> list[Any]:
    """A list command's rows, page after page (`--limit`, `--all`), with a note on stderr
    when more exist than were shown (`more_hint`: the options that show more; a command
    whose `--all` means something else says only `--limit N`)."""
    rows, more = client.get_list(path, params=params, limit=None if every else limit)
    if more:
        hint(f"showing the first {len(rows)} {what}: there are more ({more_hint})")
    return rows


NoWaitOpt = Annotated[
    bool, typer.Option("--no-wait",
                       help="Return at once with the operation id instead of waiting for it."),
]
EnvArg = Annotated[str, typer.Argument(metavar="ENV",
                                       help="The environment, e.g. test or live.")]
PrefixArg = Annotated[str, typer.Argument(
    metavar="PREFIX", help="The prefix of the service instance, e.g. DEFAULT or ANALYTICS.")]


def resolve_project(client: Client, name: str | None) -> str:
    """The project a command acts on: `-p/--project` (or `TETHER_PROJECT`), else the only one."""
    if name:
        return name
    projects, more = client.get_list("/projects", limit=SHOWN_NAMES)
    if len(projects) == 1:
        return str(projects[0]["name"])
    if not projects:
        fail("no project yet: create one with `tether project create NAME`", 2,
             json_mode=client.json_mode, code="no_project")
    names = ", ".join(str(p["name"]) for p in projects) + (", …" if more else "")
    fail(f"several projects exist ({names}): pick one with -p/--project NAME or set "
         "TETHER_PROJECT", 2, json_mode=client.json_mode, code="several_projects")


def wait_operation(client: Client, op: dict[str, Any], label: str, follow: str) -> dict[str, Any]:
    """Long-poll an operation until it has succeeded or failed; return its final view.

    `label` is shown next to the spinner (people only); `follow` is the command that shows the
    progress if the user stops waiting with Ctrl-C (the operation goes on regardless).
    """
    if op["status"] in FINISHED:
        return op
    def text(op: dict[str, Any]) -> Text:
        progress = op.get("progress")
        return Text(f"{label} (operation {op['id']})" + (f": {progress}" if progress else ""))

    spinner = contextlib.nullcontext() if client.json_mode else err.status(text(op))
    try:
        with spinner as status:
            while op["status"] not in FINISHED:
                op = client.get(f"/operations/{seg(op['id'])}", params={"wait": LONG_POLL},
                                timeout=LONG_POLL + DEFAULT_GRACE)
                if status is not None:
                    status.update(text(op))
    except KeyboardInterrupt:
        hint(f"stopped waiting: operation {op['id']} goes on; follow it with `{follow}`")
        raise typer.Exit(130) from None
    return op
