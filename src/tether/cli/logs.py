"""`tether logs ENV [--follow] [--lines N]`: the output of the release an environment runs
(`heroku logs --tail`, `divio app logs`), read from its log files through the API."""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import typer
from rich.text import Text

from tether.cli.client import LONG_POLL, Client, env_path
from tether.cli.common import DEFAULT_GRACE, EnvArg, JsonOpt, ProjectOpt, resolve_project
from tether.cli.output import emit_json, hint, out, when

FollowOpt = Annotated[bool, typer.Option(
    "--follow", "-f",
    help="Keep printing new lines as the app writes them, across deploys (Ctrl-C stops). "
         "With --json: one JSON object per line.")]
LinesOpt = Annotated[int, typer.Option(
    "--lines", "-n", metavar="N", min=0, max=10000,
    help="How many of the last lines to show first.")]


def _print(entry: dict[str, Any]) -> None:
    stamp = when(entry.get("at")) if entry.get("at") else ""
    out.print(Text.assemble((stamp + " " if stamp else "", "dim"), str(entry.get("line", ""))))


def _print_json_line(answer: dict[str, Any], entry: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps({"release_id": answer.get("release_id"), **entry},
                                ensure_ascii=False) + "\n")
    sys.stdout.flush()


def _follow(client: Client, path: str, answer: dict[str, Any]) -> None:
    """Long-poll the API for the lines after the last cursor, printing them as they come."""
    release = answer.get("release_id")
    json_mode = client.json_mode
    while True:
        answer = client.get(path, params={"after": answer["cursor"], "wait": LONG_POLL},
                            timeout=LONG_POLL + DEFAULT_GRACE)
        if answer.get("release_id") != release:
            release = answer.get("release_id")
            if release is not None and not json_mode:
                hint(f"-- release {release} --")
        if answer.get("missed") and not json_mode:
            hint("-- some lines were rotated away before they could be shown --")
        for entry in answer.get("lines") or []:
            if json_mode:
                _print_json_line(answer, entry)
            else:
                _print(entry)


def logs(env: EnvArg, follow: FollowOpt = False, lines: LinesOpt = 100,
         project: ProjectOpt = None, json_: JsonOpt = False) -> None:
    """Show the output (stdout and stderr) of the release an environment runs, oldest first.

    A deployment's own log (`tether deployment show ID`) holds the app's output until the new
    release is healthy; from then on it goes to the release's log files on the Tether node
    (DATA_DIR/logs/PROJECT/ENV/, rotated by size), which this command reads. Secrets are masked.
    """
    with Client.connect(json_) as client:
        name = resolve_project(client, project)
        path = env_path(name, env) + "/logs"
        answer = client.get(path, params={"lines": lines})
        if json_ and not follow:
            emit_json(answer)
            return
        if answer.get("note") and not json_:
            hint(str(answer["note"]))
        for entry in answer.get("lines") or []:
            if json_:
                _print_json_line(answer, entry)
            else:
                _print(entry)
        if not follow:
            return
        try:
            _follow(client, path, answer)
        except KeyboardInterrupt:
            raise typer.Exit(0) from None


def register(root: typer.Typer) -> None:
    """Add `logs` to the top-level app."""
    root.command("logs", epilog="Example: tether logs test --lines 50  |  tether logs live "
                                "--follow")(logs)
