"""Every parameter and body field of the REST API, given what breaks a store or a request: a NUL,
a line break, a text longer than any column, an integer beyond the store's. The answer is never a
500, and a refusal is a 4xx in the API's error shape (issue 8, finding 4). Some of these values
are fine where they are (a line break in a variable's value): only a server error fails.

The API runs on a PostgreSQL store, which refuses such values itself (SQLite takes a NUL and
any length): whatever reaches it unchecked is a 500 there. The cases come from the OpenAPI
document, so a new route or field is covered without a new row here."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import psycopg
import pytest
from fastapi.testclient import TestClient
from psycopg import sql

from tests.conftest import PgServer
from tether.actions import clusters, projects
from tether.actions.common import Context
from tether.api.app import create_app
from tether.api.auth import create_token
from tether.crypto import SecretBox
from tether.errors import UserError
from tether.store.db import Store
from tether.store.models import Region

pytestmark = pytest.mark.integration

#: texts that must never reach the store or a request line unchecked
BAD_TEXTS = ("nul\x00byte", "line\r\nbreak", "x" * 5000)
#: integers beyond a 32-bit INTEGER column, a 64-bit one, and below every id
BAD_INTEGERS = (2**31, 2**63, 10**30, -1)
#: what a parameter of each name is when it is not the one under test
GOOD = {"project": "shop", "env": "test", "prefix": "DEFAULT", "name": "GREETING"}


@dataclass
class Api:
    client: TestClient
    doc: dict[str, Any]
    ctx: Context


@pytest.fixture(scope="module")
def api(pg_server: PgServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    database = f"tether_limits_{secrets.token_hex(4)}"
    with psycopg.connect(pg_server.admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
    store = Store(urlunsplit(urlsplit(pg_server.admin_url)._replace(path=f"/{database}")))
    try:
        store.migrate()
        data_dir: Path = tmp_path_factory.mktemp("api-limits")
        ctx = Context(store=store, box=SecretBox.from_data_dir(data_dir), data_dir=data_dir)
        with store.session() as s:
            s.add(Region(name="local", family="local"))
        projects.create_project(ctx, "shop")
        token = create_token(store, "root")
        with TestClient(create_app(ctx), raise_server_exceptions=False,
                        headers={"Authorization": f"Bearer {token}"}) as client:
            yield Api(client, client.get("/api/v1/openapi.json").json(), ctx)
    finally:
        store.dispose()
        with psycopg.connect(pg_server.admin_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(database)))


def _type(schema: dict[str, Any]) -> str:
    """The type of a parameter or field, looking through `anyOf` (optional values)."""
    if "type" in schema:
        return str(schema["type"])
    for option in schema.get("anyOf", []):
        if option.get("type") not in (None, "null"):
            return str(option["type"])
    return "object"


def _bad_values(schema: dict[str, Any]) -> tuple[Any, ...]:
    kind = _type(schema)
    if kind == "string":
        return BAD_TEXTS
    if kind == "integer":
        return BAD_INTEGERS
    if kind == "array":
        return tuple([text] for text in BAD_TEXTS)
    return ()


def _good_value(name: str, schema: dict[str, Any]) -> Any:
    if name in GOOD:
        return GOOD[name]
    if schema.get("examples"):
        return schema["examples"][0]
    return {"integer": 1, "number": 1, "boolean": False, "array": []}.get(_type(schema), "x")


def _resolve(doc: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = doc["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]]
    return schema


def _cases(doc: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any], dict[str, Any] | None,
                                                 str]]:
    """(method, path template, parameters, body, what is bad) for each bad value of each
    parameter and body field of each operation; everything else good."""
    for template, item in doc["paths"].items():
        for method, op in item.items():
            params = [p for p in op.get("parameters", []) if p["in"] in ("path", "query")]
            good = {p["name"]: _good_value(p["name"], p["schema"]) for p in params
                    if p["in"] == "path"}
            body_schema = None
            if "requestBody" in op:
                body_schema = _resolve(doc, op["requestBody"]["content"]["application/json"]
                                       ["schema"])
            good_body = None if body_schema is None else {
                field: _good_value(field, spec)
                for field, spec in body_schema.get("properties", {}).items()
                if field in body_schema.get("required", [])}
            for p in params:
                for bad in _bad_values(p["schema"]):
                    yield (method.upper(), template, {**good, p["name"]: bad}, good_body,
                           f"{p['in']} {p['name']}={bad!r:.40}")
            for field, spec in (body_schema or {}).get("properties", {}).items():
                for bad in _bad_values(spec):
                    yield (method.upper(), template, good, {**(good_body or {}), field: bad},
                           f"body {field}={bad!r:.40}")


def _request(api: Api, method: str, template: str, params: dict[str, Any],
             body: dict[str, Any] | None) -> Any:
    path = template
    query: dict[str, Any] = {}
    for name, value in params.items():
        if "{" + name + "}" in path:
            path = path.replace("{" + name + "}", quote(str(value), safe=""))
        else:
            query[name] = value
    return api.client.request(method, path, params=query, json=body)


def _error_shaped(answer: Any) -> bool:
    try:
        error = answer.json()["error"]
    except (ValueError, KeyError, TypeError):
        return False
    return isinstance(error, dict) and set(error) == {"code", "message"}


def test_no_parameter_or_field_gives_a_server_error(api: Api) -> None:
    cases = list(_cases(api.doc))
    assert len(cases) > 100, "the OpenAPI document names (nearly) no parameters"
    failures = []
    for method, template, params, body, what in cases:
        answer = _request(api, method, template, params, body)
        refused = answer.status_code >= 400
        if answer.status_code >= 500 or (refused and not _error_shaped(answer)):
            failures.append(f"{method} {template} with {what}: {answer.status_code} "
                            f"{answer.text[:200]}")
    assert failures == [], "\n".join(failures)


@pytest.mark.parametrize("name, url", [
    ("n" * 101, "file:///srv/media"),
    ("two\nlines", "file:///srv/media"),
    ("fine", "file:///srv/media\x00"),
], ids=["long-name", "line-break-in-name", "nul-in-url"])
def test_a_cluster_name_or_url_that_breaks_the_store_is_refused_in_the_action(
        api: Api, tmp_path: Path, name: str, url: str) -> None:
    """Not only through the API: a cluster file (or any caller) giving a name longer than its
    column, or a control character in the name or URL, gets a message with the fix, not an error
    of the store (or a cluster stored under a name no command can type)."""
    settings = {"base_dir": str(tmp_path), "public_url": "http://127.0.0.1:1/media/"}
    with pytest.raises(UserError, match=r"cluster (name|URL)"):
        clusters.add_cluster(api.ctx, "local-files", "local", url, name=name, settings=settings)
