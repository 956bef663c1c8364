"""`tether context ...`: the control planes of the CLI config, one context each (like kubectl's).

`tether up` adds or updates its own context (named after its host:port) and makes it current;
these commands list them, switch between them and forget one. They never print a token.
"""

from __future__ import annotations

import os
from typing import Annotated

import typer
from rich.text import Text

from tether.cli.common import CONTEXT_SETTINGS, JsonOpt
from tether.cli.output import emit_json, fail, hint, out, say, table
from tether.config import CliConfig, ConfigError, config_path, edit_cli_config, read_cli_config

app = typer.Typer(
    help="Contexts: the control planes this CLI knows (one per `tether up`) and which one "
         "commands use.",
    epilog="Example: tether context list, then tether context use 127.0.0.1:8080. "
           "TETHER_CONTEXT=NAME picks a context for one command.",
    no_args_is_help=True, context_settings=CONTEXT_SETTINGS)

NameArg = Annotated[str, typer.Argument(
    metavar="NAME", help="A context's name, as `tether context list` shows it, e.g. "
                         "127.0.0.1:8070.")]


def _read(json_mode: bool) -> CliConfig:
    try:
        return read_cli_config()
    except ConfigError as exc:
        fail(exc.message, 2, json_mode=json_mode, code=exc.code)


def _overridden() -> None:
    """Say when the environment overrides the context commands would use."""
    names = [n for n in ("TETHER_URL", "TETHER_TOKEN", "TETHER_CONTEXT") if os.environ.get(n)]
    if names:
        hint(f"note: {', '.join(names)} set in this shell take precedence over the current "
             "context")


@app.command("list", epilog="Example: tether context list --json")
def list_(json_: JsonOpt = False) -> None:
    """List the contexts: name, URL and which one is current (marked *). Tokens are never shown."""
    config = _read(json_)
    rows = [{"name": name, "url": c.url, "current": name == config.current}
            for name, c in sorted(config.contexts.items())]
    if json_:
        emit_json(rows)
        return
    if not rows:
        hint(f"no context yet in {config_path()}: run `tether up`")
        return
    t = table("CURRENT", "NAME", "URL")
    for row in rows:
        t.add_row(Text("*", style="green bold") if row["current"] else Text(""),
                  Text(str(row["name"]), style="bold" if row["current"] else ""),
                  Text(str(row["url"])))
    out.print(t)
    _overridden()


@app.command("use", epilog="Example: tether context use 127.0.0.1:8080")
def use(name: NameArg, json_: JsonOpt = False) -> None:
    """Make NAME the current context: every later command talks to its control plane."""
    try:
        with edit_cli_config() as config:
            entry = config.get(name)
            config.current = name
    except ConfigError as exc:
        fail(exc.message, 2, json_mode=json_, code=exc.code)
    if json_:
        emit_json({"name": name, "url": entry.url, "current": True})
        return
    say("Using context ", (name, "bold"), f" ({entry.url})")
    _overridden()


@app.command("remove", epilog="Example: tether context remove 127.0.0.1:8080")
def remove(name: NameArg, json_: JsonOpt = False) -> None:
    """Forget the context NAME and its token (the control plane itself is untouched; its next
    `tether up` adds it again with a new token)."""
    try:
        with edit_cli_config() as config:
            entry = config.get(name)
            del config.contexts[name]
            was_current = config.current == name
            if was_current:
                config.current = None
    except ConfigError as exc:
        fail(exc.message, 2, json_mode=json_, code=exc.code)
    if json_:
        emit_json({"name": name, "url": entry.url, "removed": True})
        return
    say("Removed context ", (name, "bold"), f" ({entry.url})")
    if was_current and config.contexts:
        hint(f"there is no current context now: pick one with `tether context use NAME` "
             f"({config.names()})")
