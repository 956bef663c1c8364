"""`tether cluster ...`: the real servers Tether administers (operators)."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.text import Text

from tether.cli.client import DEFAULT_LIST, Client
from tether.cli.common import CONTEXT_SETTINGS, AllOpt, JsonOpt, LimitOpt, read_list
from tether.cli.output import cell, emit_json, err, fail, hint, out, say, table

#: seconds to let the server check a new cluster (it connects to it with the admin URL)
ADD_TIMEOUT = 120.0

app = typer.Typer(help="Clusters: the real servers Tether provisions services on (operators).",
                  epilog="Example: tether cluster list",
                  no_args_is_help=True, context_settings=CONTEXT_SETTINGS)


def _settings(pairs: list[str], json_mode: bool) -> dict[str, Any]:
    """`KEY=VALUE` pairs; a VALUE that is JSON (a number, true, a list) is decoded."""
    settings: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            fail(f"invalid --setting {pair!r}: use KEY=VALUE, e.g. --setting "
                 "endpoint=https://s3.example.com", 2, json_mode=json_mode, code="bad_request")
        try:
            settings[key] = json.loads(value)
        except ValueError:
            settings[key] = value
    return settings


@app.command("add", epilog="Example: tether cluster add postgres --region local --url "
                           "postgres://admin:PASSWORD@db.example.com:5432/postgres")
def add(
    kind: Annotated[str, typer.Argument(
        metavar="KIND", help="postgres, mysql, rabbitmq, elasticsearch, s3, azure-blob or "
                             "local-files (`tether cluster kinds` lists them with their "
                             "settings).")],
    region: Annotated[str, typer.Option("--region", metavar="R",
                                        help="The region it serves, e.g. local.")],
    url: Annotated[str, typer.Option(
        "--url", metavar="URL", envvar="TETHER_CLUSTER_URL",
        help="Its admin URL with credentials (or set TETHER_CLUSTER_URL, to keep the password "
             "out of the shell history). Never shown again.")],
    private: Annotated[bool, typer.Option(
        "--private", help="Reserve it for one service instance instead of sharing it.")] = False,
    name: Annotated[str | None, typer.Option(
        "--name", metavar="N", help="A name for it (default: KIND-REGION-NUMBER).")] = None,
    setting: Annotated[list[str] | None, typer.Option(
        "--setting", metavar="KEY=VALUE", help="A kind-specific setting; repeat for more.")
    ] = None,
    region_family: Annotated[str | None, typer.Option(
        "--region-family", metavar="F",
        help="For a new region: local, s3 or azure, which decides the media storage it offers "
             "(default: from its name: local; *azure* -> azure; else s3).")] = None,
    json_: JsonOpt = False,
) -> None:
    """Register a server Tether may administer; it is checked with the admin URL first."""
    body: dict[str, Any] = {"kind": kind, "region": region, "url": url, "private": private,
                            "settings": _settings(setting or [], json_),
                            "region_family": region_family}
    if name:
        body["name"] = name
    with Client.connect(json_) as client:
        if json_:
            cluster = client.post("/clusters", body, timeout=ADD_TIMEOUT)
        else:
            with err.status(Text(f"checking the {kind} cluster…")):
                cluster = client.post("/clusters", body, timeout=ADD_TIMEOUT)
    if json_:
        emit_json(cluster)
        return
    say(("Added cluster ", ""), (cluster["name"], "bold"),
        f": {cluster['kind']} {cluster['version']} in {cluster['region']} "
        f"({cluster['visibility']}) at {cluster['location']}")
    hint(f"`tether service catalog --region {cluster['region']}` lists what it offers.")


@app.command("list", epilog="Example: tether cluster list --json; tether cluster list --all")
def list_(limit: LimitOpt = DEFAULT_LIST, every: AllOpt = False,
          json_: JsonOpt = False) -> None:
    """List the clusters (never their credentials), oldest first."""
    with Client.connect(json_) as client:
        clusters = read_list(client, "/clusters", limit, every, "clusters")
    if json_:
        emit_json(clusters)
        return
    if not clusters:
        hint("no clusters: add one with `tether cluster add KIND --region R --url URL`")
        return
    t = table("ID", "NAME", "KIND", "VERSION", "REGION", "VISIBILITY", "LOCATION", "MANAGED",
              "OWNER")
    for c in clusters:
        owner = c.get("owner_instance_id")
        t.add_row(cell(c["id"]), Text(c["name"], style="bold"), cell(c["kind"]),
                  cell(c["version"]), cell(c["region"]), cell(c["visibility"]),
                  cell(c["location"]), cell(c.get("managed")),
                  cell(f"instance {owner}" if owner else None))
    out.print(t)


@app.command("kinds", epilog="Example: tether cluster kinds --json")
def kinds_(json_: JsonOpt = False) -> None:
    """List the kinds of cluster Tether can administer, with their service names, settings and
    variables; a kind whose client library is missing here is shown as disabled, with why."""
    with Client.connect(json_) as client:
        kinds = client.get("/kinds")
    if json_:
        emit_json(kinds)
        return
    t = table("KIND", "SERVICE", "WHAT", "SETTINGS", "VARIABLES", "PRIVATE")
    for k in kinds:
        if not k["available"]:
            t.add_row(Text(k["kind"], style="bold"), cell(None),
                      Text(f"disabled: {k['disabled_reason']}", style="red"), cell(None),
                      cell(None), cell(None))
            continue
        service = f"{k['service']}-N" if k["versioned"] else k["service"]
        t.add_row(Text(k["kind"], style="bold"), cell(service), cell(k["title"]),
                  cell(", ".join(k["settings"]) or None),
                  cell(", ".join(v.replace("{P}", "PREFIX") for v in k["variables"])),
                  cell("run by Tether" if k["private_servers"] else "registered"))
    out.print(t)
