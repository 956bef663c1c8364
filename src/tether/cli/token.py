"""`tether token ...`: the people and scripts that may use Tether, each with a named token, a
role (admin, developer, viewer), an optional project scope and expiry (admins only)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.text import Text

from tether.cli.client import DEFAULT_LIST, Client, seg
from tether.cli.common import CONTEXT_SETTINGS, AllOpt, JsonOpt, LimitOpt, read_list
from tether.cli.output import cell, emit_json, hint, out, plain, say, table, when

app = typer.Typer(
    help="Tokens: who may use Tether, with which role (admin, developer, viewer), for which "
         "projects, until when. Admins only.",
    epilog="Example: tether token create ci --role developer --project shop --expires 90",
    no_args_is_help=True, context_settings=CONTEXT_SETTINGS)


@app.command("create", epilog="Examples: tether token create alice-laptop --role developer "
                              "--project shop --owner alice; tether token create dashboards "
                              "--role viewer --expires 30")
def create(
    name: Annotated[str, typer.Argument(metavar="NAME",
                                        help="A name for it, unique among live tokens.")],
    role: Annotated[str, typer.Option(
        "--role", metavar="ROLE",
        help="admin (everything), developer (services, deploys, variables of its projects) or "
             "viewer (reads, without secret values).")],
    project: Annotated[list[str] | None, typer.Option(
        "--project", "-p", metavar="P",
        help="A project it is granted; repeat for more (default: every project).")] = None,
    expires: Annotated[int | None, typer.Option(
        "--expires", metavar="DAYS", min=1, max=3650,
        help="Days until it stops working (default: never).")] = None,
    owner: Annotated[str | None, typer.Option(
        "--owner", metavar="WHO", help="Who it belongs to: the audit trail names them "
                                       "(default: the token's name).")] = None,
    json_: JsonOpt = False,
) -> None:
    """Make a token. Its secret is printed once: store it now (e.g. in TETHER_TOKEN)."""
    body = {"name": name, "role": role, "projects": project or None, "expires_days": expires,
            "owner": owner}
    with Client.connect(json_) as client:
        made = client.post("/tokens", body)
    if json_:
        emit_json(made)
        return
    scope = ", ".join(made["projects"]) if made.get("projects") else "every project"
    say(("Created token ", ""), (made["name"], "bold"),
        f" ({made['role']}, {scope}"
        + (f", expires {when(made['expires_at'])}" if made.get("expires_at") else "") + ")")
    hint("its secret, shown this once (use it as TETHER_TOKEN or sign in with it):")
    plain(made["token"])


@app.command("list", epilog="Example: tether token list --revoked; tether token list --all")
def list_(
    revoked: Annotated[bool, typer.Option("--revoked",
                                          help="Show revoked tokens too.")] = False,
    limit: LimitOpt = DEFAULT_LIST,
    every: AllOpt = False,
    json_: JsonOpt = False,
) -> None:
    """List the tokens (never their secrets), oldest first."""
    with Client.connect(json_) as client:
        tokens = read_list(client, "/tokens", limit, every, "tokens",
                           params={"revoked": revoked})
    if json_:
        emit_json(tokens)
        return
    t = table("NAME", "ROLE", "PROJECTS", "OWNER", "STATUS", "EXPIRES", "CREATED BY", "CREATED")
    for tok in tokens:
        t.add_row(Text(tok["name"], style="bold"), cell(tok["role"]),
                  cell(", ".join(tok["projects"]) if tok.get("projects") else "all"),
                  cell(tok["owner"]), cell(tok["status"]), cell(when(tok.get("expires_at"))),
                  cell(tok.get("created_by")), cell(when(tok.get("created_at"))))
    out.print(t)


@app.command("revoke", epilog="Example: tether token revoke alice-laptop")
def revoke(
    name: Annotated[str, typer.Argument(metavar="NAME", help="The token's name.")],
    json_: JsonOpt = False,
) -> None:
    """Revoke a token: refused from its very next call on, its browser sessions ended."""
    with Client.connect(json_) as client:
        revoked = client.delete(f"/tokens/{seg(name)}")
    if json_:
        emit_json(revoked)
        return
    say(("Revoked token ", ""), (revoked["name"], "bold"),
        ": it is refused from now on, and its browser sessions are over")
    if revoked.get("message"):
        hint(revoked["message"])
