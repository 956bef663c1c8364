"""Schemathesis (PyPI) against the OpenAPI document of a real `tether up` (issue 8): every
operation, with generated valid and invalid requests and stateful sequences, authenticated as an
admin. No answer may be a server error, and every answer must be what the document says (status
code, content type, headers, body schema); invalid input must be refused.

The one check left out is `positive_data_acceptance`: the document cannot say everything the
API refuses with a 400 and a message (a project name's form, a region that does not exist, a
service not offered there), so "valid for the schema" does not mean "accepted".

It runs on both stores: SQLite (the default) and PostgreSQL, which is stricter (a text longer
than its column, or a NUL in one, is an error there, where SQLite takes it).

The numbers of a run (operations, requests, failures) are printed, for the README. (It runs in
the test group beside the end-to-end one, which is the longer of the two.)"""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx
import psycopg
import pytest
from psycopg import sql

from tests.conftest import PgServer
from tests.e2e.conftest import BIN, Tether, new_tether, tether  # noqa: F401 - the fixture

pytestmark = pytest.mark.e2e

HOOKS = Path(__file__).with_name("schemathesis_hooks.py")
CHECKS_LEFT_OUT = "positive_data_acceptance"
#: the run's bounds: examples per operation and phase, and a time budget it ends within
MAX_EXAMPLES = 10
MAX_SECONDS = 60


@pytest.fixture(scope="module")
def tether_on_postgres(pg_server: PgServer) -> Iterator[Tether]:
    """A `tether up` whose store is a database of its own on the test PostgreSQL server."""
    database = f"tether_st_{secrets.token_hex(4)}"
    with psycopg.connect(pg_server.admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
    store = urlunsplit(urlsplit(pg_server.admin_url)._replace(path=f"/{database}"))
    t = new_tether("tether-st-pg-", {"TETHER_DATABASE_URL": store})
    try:
        t.start()
        yield t
    finally:
        t.stop()
        shutil.rmtree(t.data_dir.parent, ignore_errors=True)
        with psycopg.connect(pg_server.admin_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(database)))


def _admin_token(t: Tether, http: httpx.Client) -> tuple[str, str]:
    """A fresh admin token of the run's own (name, secret), made through the API."""
    name = f"schemathesis-{secrets.token_hex(4)}"
    made = http.post("/api/v1/tokens", json={"name": name, "role": "admin"})
    assert made.status_code == 201, made.text
    return name, str(made.json()["token"])


@pytest.mark.parametrize("store", ["sqlite", "postgres"])
def test_schemathesis_finds_no_server_error_and_no_answer_unlike_the_document(
        store: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    plane: Tether = request.getfixturevalue("tether" if store == "sqlite"
                                             else "tether_on_postgres")
    with httpx.Client(base_url=plane.url, timeout=30,
                      headers={"Authorization": f"Bearer {plane.token()}"}) as http:
        keep = [str(t["name"]) for t in http.get("/api/v1/tokens").json()]
        name, token = _admin_token(plane, http)
    report = tmp_path / "report.json"
    env = {**plane.env, "SCHEMATHESIS_HOOKS": str(HOOKS),
           "TETHER_ST_KEEP_TOKENS": ",".join([*keep, name])}
    started = time.monotonic()
    run = subprocess.run(
        [str(BIN / "st"), "run", f"{plane.url}/api/v1/openapi.json",
         "--header", f"Authorization: Bearer {token}",
         "--checks", "all", "--exclude-checks", CHECKS_LEFT_OUT,
         "--max-examples", str(MAX_EXAMPLES), "--max-time", str(MAX_SECONDS),
         # one worker: CPython 3.11's ast is not thread-safe and hypothesis parses lambdas'
         # source while generating ("SystemError: AST constructor recursion depth mismatch"
         # failed a run with two)
         "--workers", "1", "--seed", "8", "--generation-database", "none",
         "--request-timeout", "30", "--no-color", "--output-truncate", "true",
         "--report", "json", "--report-json-path", str(report)],
        env=env, cwd=tmp_path, capture_output=True, text=True,
        timeout=MAX_SECONDS + 120, check=False)
    took = time.monotonic() - started
    assert report.exists(), run.stdout[-6000:] + run.stderr[-3000:]
    result = json.loads(report.read_text())
    ops, cases = result["operations"], result["test_cases"]
    print(f"\nschemathesis {result['schemathesis_version']} ({store} store): "
          f"{ops['tested']}/{ops['total']} "
          f"operations, {cases['generated']} requests in {took:.0f} s, "
          f"{cases['unique_failures']} failures, {len(result['errors'])} errors "
          f"(checks: all but {CHECKS_LEFT_OUT})")
    assert result["failures"] == [] and result["errors"] == [], run.stdout[-12000:]
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-3000:]
    assert ops["tested"] == ops["total"] > 20, ops
    # sign-in answers 401 to every wrong token by design (it is how it says no): when the run's
    # time budget gives it only well-formed bodies, schemathesis calls that "missing auth"
    missing = set(result["warnings"].get("missing_auth") or []) - {"POST /api/v1/sessions"}
    assert missing == set(), result["warnings"]
    # the run authenticated throughout: its token and the admin's still work
    for secret in (token, plane.token()):
        status = httpx.get(plane.url + "/api/v1/status", timeout=30,
                           headers={"Authorization": f"Bearer {secret}"})
        assert status.status_code == 200, status.text
