"""`tether up`: run the control plane in the foreground."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from tether.config import DEFAULT_HOST, DEFAULT_PORT, default_data_dir
from tether.errors import TetherError, UserError


def up(
    data_dir: Annotated[Path | None, typer.Option(
        "--data-dir", help="Where Tether keeps its store, keys, clusters and media "
                           "(default: $TETHER_DATA_DIR, /var/lib/tether as root, else "
                           "~/.local/share/tether).")] = None,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = DEFAULT_HOST,
    port: Annotated[int, typer.Option(help="Port of the API and media files.")] = DEFAULT_PORT,
    clusters: Annotated[Path | None, typer.Option(
        "--clusters", envvar="TETHER_CLUSTERS_FILE",
        help="A TOML file of clusters to register at start (default: DATA_DIR/clusters.toml "
             "when it exists).")] = None,
) -> None:
    """Start the control plane on its embedded default: API, worker, an embedded PostgreSQL
    cluster and local media storage in region `local`.

    Ctrl-C (SIGINT) or SIGTERM stops everything it started, in order: the API, the operations
    and applications, the embedded servers, the store (forced after 30 s). A second signal
    while stopping does not cut the stop short.

    Example: tether up --data-dir ~/tether-data --port 8070
    """
    from tether.server import serve

    console = Console(stderr=True)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    # uvicorn's own start and stop lines (the API's and every stable address's) are noise here
    logging.getLogger("uvicorn.error").setLevel(logging.WARNING)
    try:
        serve((data_dir or default_data_dir()).expanduser().resolve(), host, port,
              lambda m: console.print(f"[bold]tether[/] {escape(m)}", highlight=False),
              clusters)
    except UserError as exc:
        console.print(f"[red]error:[/] {escape(exc.message)}")
        raise typer.Exit(2) from None
    except TetherError as exc:
        console.print(f"[red]error:[/] {escape(exc.message)}")
        raise typer.Exit(1) from None
