"""The `tether` command line: a thin client of the REST API of a control plane that `tether up`
runs. One module per command group: project, service, deploy, cluster (and up).

Exit codes: 0 success, 1 the operation failed or the server is unreachable, 2 bad input or a
refused action (usage errors included). Every command takes `--json`.
"""

from __future__ import annotations

from typing import Annotated

import typer

from tether import __version__
from tether.cli import backup, cluster, context, deploy, logs, project, service, token
from tether.cli.client import Client
from tether.cli.common import CONTEXT_SETTINGS, JsonOpt
from tether.cli.output import emit_json, say

app = typer.Typer(
    name="tether",
    help="Tether: backing services (databases, media storage, search, brokers) for your apps.",
    epilog="Example: tether up, then tether project create shop, "
           "tether service add test postgres-18, tether deploy test. "
           "Every command has --help with an example, and --json for scripts.",
    no_args_is_help=True,
    rich_markup_mode="markdown",
    pretty_exceptions_enable=False,  # never dump local variables (tokens) in a traceback
    context_settings=CONTEXT_SETTINGS,
)

try:
    from tether.cli.up import up
except ImportError:  # pragma: no cover - written separately
    pass
else:
    app.command("up")(up)

app.add_typer(project.app, name="project")
app.add_typer(service.app, name="service")
app.add_typer(backup.app, name="backup")
deploy.register(app)
logs.register(app)
app.add_typer(cluster.app, name="cluster")
app.add_typer(context.app, name="context")
app.add_typer(token.app, name="token")


def _version(value: bool) -> None:
    if value:
        print(f"tether {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option(
        "--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Tether: backing services (databases, media storage, search, brokers) for your apps."""


@app.command("status", epilog="Example: tether status --json")
def status(json_: JsonOpt = False) -> None:
    """Check the connection to the control plane: its URL, version and who you are."""
    with Client.connect(json_) as client:
        answer = client.get("/status")
        url = client.url
    if json_:
        emit_json({**answer, "url": url})
        return
    scope = answer.get("projects")
    say(("Connected", "green"), f" to Tether {answer.get('version')} at {url} as "
        f"{answer.get('actor')} ({answer.get('role', 'admin')}"
        + (f", projects {', '.join(scope)})" if scope else ")"))


def main() -> None:
    """The `tether` console script."""
    app(prog_name="tether")


if __name__ == "__main__":
    main()
