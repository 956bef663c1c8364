"""How the CLI prints: rich for people, exactly one JSON document for scripts (`--json`).

Everything a user or a server wrote (names, values, messages) is printed as `rich.text.Text`, never
as markup, so a `[` in a value cannot change the output. Long lines are not wrapped (soft wrap), so
a DSN or an error message can be copied and grepped whole.
"""

from __future__ import annotations

import json
import os
import sys
from datetime import UTC, datetime
from typing import Any, NoReturn

import typer
from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text


def _width(stream: Any) -> int | None:
    """Terminals: their width. Pipes and files: wide, so tables are not cut (`COLUMNS` wins)."""
    if os.environ.get("COLUMNS") or (hasattr(stream, "isatty") and stream.isatty()):
        return None
    return PIPE_WIDTH


#: width of tables written to a pipe or a file
PIPE_WIDTH = 200
#: stdout: results
out = Console(soft_wrap=True, highlight=False, width=_width(sys.stdout))
#: stderr: errors, hints, spinners
err = Console(stderr=True, soft_wrap=True, highlight=False, width=_width(sys.stderr))

#: colours of the states of instances, operations and deployments
STATE_STYLES: dict[str, str] = {
    "new": "blue",
    "provisioning": "cyan",
    "pending attachment": "yellow",
    "attached": "green",
    "pending detachment": "yellow",
    "detached": "dim",
    "removed": "dim",
    "queued": "yellow",
    "running": "cyan",
    "succeeded": "green",
    "failed": "red",
    "stopped": "dim",
}


def emit_json(doc: Any) -> None:
    """Print one JSON document to stdout (plain: no colours, no wrapping)."""
    sys.stdout.write(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def fail(message: str, exit_code: int, *, json_mode: bool, code: str = "error") -> NoReturn:
    """Report an error and exit: `error: MESSAGE` on stderr, and with `--json` also
    `{"error": {"code", "message"}}` on stdout, so scripts always get one JSON document."""
    if json_mode:
        emit_json({"error": {"code": code, "message": message}})
    err.print(Text.assemble(("error: ", "bold red"), message))
    raise typer.Exit(exit_code)


def say(*parts: str | Text | tuple[str, str]) -> None:
    """Print a line to stdout from plain strings, `Text` or `(text, style)` pairs."""
    out.print(Text.assemble(*parts))


def hint(message: str) -> None:
    """A tip on stderr (so stdout stays clean for pipes)."""
    err.print(Text(message, style="dim"))


def plain(line: str) -> None:
    """Print a value exactly as it is (e.g. `NAME=value`), for pipes and copy-paste."""
    sys.stdout.write(line + "\n")


def state_text(state: str | None) -> Text:
    """A coloured state, e.g. attached in green."""
    if not state:
        return Text("-", style="dim")
    return Text(state, style=STATE_STYLES.get(state, ""))


def cell(value: Any) -> Text:
    """A table cell from any value: `-` for None, yes/no for booleans."""
    if value is None or value == "":
        return Text("-", style="dim")
    if isinstance(value, bool):
        return Text("yes" if value else "no", style="" if value else "dim")
    return Text(str(value))


def when(value: str | None) -> str:
    """An API timestamp (ISO 8601, UTC when naive) in local time, to the second."""
    if not value:
        return "-"
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return value
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def table(*columns: str, title: str | None = None) -> Table:
    """A plain table with bold headers; add columns beyond these with `add_column`."""
    t = Table(box=box.SIMPLE_HEAD, header_style="bold", title=title, title_justify="left",
              pad_edge=False)
    for name in columns:
        t.add_column(name, overflow="fold")
    return t


def field_line(label: str, value: str | Text, width: int = 12) -> None:
    """`Label:      value`, aligned, for detail views."""
    text = value if isinstance(value, Text) else cell(value)
    out.print(Text.assemble((f"{label + ':':<{width}}", "bold"), text))
