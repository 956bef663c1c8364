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

#: loggers whose INFO lines are noise in `tether up`'s log, kept to warnings and errors:
#: uvicorn's start and stop lines (the API's and every stable address's), and a line per HTTP
#: request of the clients the providers use to administer servers (httpx: RabbitMQ,
#: OpenSearch; the Azure SDK's request and response lines: two per request). An operator learns
#: nothing from them that Tether does not say itself, and they cost: ~0.25 ms a line here, a
#: RabbitMQ provision made twelve (3 ms), an Azure one six.
QUIET_LOGGERS = ("uvicorn.error", "httpx", "azure.core.pipeline.policies.http_logging_policy")


def configure_logging() -> None:
    """`tether up`'s log: Tether's own INFO lines and everyone's warnings, on stderr."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


def up(
    data_dir: Annotated[Path | None, typer.Option(
        "--data-dir", help="Where Tether keeps its store, keys, clusters and media "
                           "(default: $TETHER_DATA_DIR, /var/lib/tether as root, else "
                           "~/.local/share/tether).")] = None,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = DEFAULT_HOST,
    port: Annotated[int, typer.Option(help="Port of the API and the Services view.")
                    ] = DEFAULT_PORT,
    media_port: Annotated[int | None, typer.Option(
        "--media-port", envvar="TETHER_MEDIA_PORT",
        help="Port of the local media files: an origin of their own, never the API's "
             "(default: --port + 1).")] = None,
    media_url: Annotated[str | None, typer.Option(
        "--media-url", envvar="TETHER_MEDIA_URL",
        help="Public base URL of the media files when a proxy or CDN serves the media port "
             "under a host name of its own, e.g. https://media.example.com/ (default: "
             "http://HOST:MEDIA_PORT/).")] = None,
    apps_port: Annotated[int | None, typer.Option(
        "--apps-port", envvar="TETHER_APPS_PORT",
        help="Port of the front door, which reaches every environment's application by host "
             "name, ENV.PROJECT.APPS_DOMAIN (default: --port + 2).")] = None,
    apps_domain: Annotated[str, typer.Option(
        "--apps-domain", envvar="TETHER_APPS_DOMAIN",
        help="Domain of the environments' host names: `localhost` (browsers and curl resolve "
             "test.shop.localhost to this machine) or a wildcard DNS name pointing here, e.g. "
             "apps.example.com for *.apps.example.com.")] = "localhost",
    caddy_admin: Annotated[str | None, typer.Option(
        "--caddy-admin", envvar="TETHER_CADDY_ADMIN",
        help="Admin API of a Caddy to put in front of the applications, e.g. "
             "http://127.0.0.1:2019: Tether adds a route per environment (HTTPS by Caddy) to "
             "its front door, and environments' URLs become Caddy's.")] = None,
    caddy_port: Annotated[int | None, typer.Option(
        "--caddy-port", envvar="TETHER_CADDY_PORT",
        help="Port Caddy serves the applications on (default 443; 80 with --caddy-tls off).")
    ] = None,
    caddy_tls: Annotated[str, typer.Option(
        "--caddy-tls", envvar="TETHER_CADDY_TLS",
        help="Caddy's certificates: acme (public CAs, for real domains), internal (Caddy's own "
             "CA) or off (plain HTTP).")] = "acme",
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

    The media files are served on a port of their own (--media-port, default --port + 1):
    another origin than the API, so a file uploaded by an application's user can never act as
    a signed-in admin.

    Each environment's application is reached through the front door by its host name,
    http://ENV.PROJECT.localhost:8072/ (--apps-port, --apps-domain), and on a port of its own
    taken from TETHER_ENV_PORTS (default 8100-8999; `none` for the front door only; when the
    range is used up, new environments get the front door only).

    Example: tether up --data-dir ~/tether-data --port 8070

    Example: tether up --apps-domain apps.example.com --caddy-admin http://127.0.0.1:2019
    """
    from tether.frontdoor import AppsSettings
    from tether.server import serve

    console = Console(stderr=True)
    configure_logging()
    try:
        serve((data_dir or default_data_dir()).expanduser().resolve(), host, port,
              lambda m: console.print(f"[bold]tether[/] {escape(m)}", highlight=False),
              clusters, media_port=media_port, media_url=media_url,
              apps=AppsSettings(apps_port, apps_domain, caddy_admin, caddy_port, caddy_tls))
    except UserError as exc:
        console.print(f"[red]error:[/] {escape(exc.message)}")
        raise typer.Exit(2) from None
    except TetherError as exc:
        console.print(f"[red]error:[/] {escape(exc.message)}")
        raise typer.Exit(1) from None
