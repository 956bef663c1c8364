"""A real client: Django, configured from the DSN an instance's application receives
(`dj_database_url.parse(DATABASE_URL)`), connects and runs its migrations, on MySQL/MariaDB and
on PostgreSQL.

Django's settings are global to a process, so each run is a subprocess with the DSN in its
environment only (never on its command line)."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.conftest import PgServer
from tests.integration.mysql.conftest import MySQLServer
from tether.providers.base import ClusterSpec, ResourceNames
from tether.providers.mysql import MySQLProvider
from tether.providers.postgres import PostgresProvider
from tether.redact import redact

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]

DJANGO_APP = """
import json, os
import dj_database_url

database = dj_database_url.parse(os.environ["DATABASE_URL"])
if database["ENGINE"] == "django.db.backends.mysql":
    import pymysql  # Django's MySQL backend imports MySQLdb: PyMySQL stands in for mysqlclient
    pymysql.install_as_MySQLdb()

import django
from django.conf import settings

settings.configure(
    DATABASES={"default": database},
    INSTALLED_APPS=["django.contrib.contenttypes", "django.contrib.auth"],
    USE_TZ=True,
)
django.setup()

from django.contrib.auth.models import User
from django.core.management import call_command
from django.db import connection

call_command("migrate", interactive=False, verbosity=0)
call_command("migrate", interactive=False, verbosity=0)  # again: nothing to do
User.objects.create_user("ada", email="ada@example.com", password="analytical engine")
ada = User.objects.get(username="ada")
print(json.dumps({
    "vendor": connection.vendor,
    "database": connection.settings_dict["NAME"],
    "users": User.objects.count(),
    "password_ok": ada.check_password("analytical engine"),
    "tables": sorted(connection.introspection.table_names()),
}))
"""


def run_django(dsn: str) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if k not in ("DJANGO_SETTINGS_MODULE",)}
    env["DATABASE_URL"] = dsn
    proc = subprocess.run([sys.executable, "-c", DJANGO_APP], capture_output=True, text=True,
                          timeout=180, cwd=REPO, env=env, check=False)
    assert proc.returncode == 0, redact(proc.stderr[-4000:], (dsn,))
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def check_django_result(result: dict[str, Any], vendor: str, database: str) -> None:
    assert result["vendor"] == vendor
    assert result["database"] == database
    assert result["users"] == 1 and result["password_ok"] is True
    assert {"auth_user", "auth_group", "django_content_type",
            "django_migrations"} <= set(result["tables"])


def test_django_migrates_into_a_mysql_instance(
        mysql_server: MySQLServer, mysql_cluster: ClusterSpec,
        make_mysql_names: Callable[[str], ResourceNames]) -> None:
    provider = MySQLProvider()
    names = make_mysql_names("dj")
    creds = provider.provision(mysql_cluster, names, "dj:" + secrets.token_urlsafe(18))
    dsn = provider.env_vars("DEFAULT", creds)["DATABASE_URL"]
    result = run_django(dsn)
    check_django_result(result, "mysql", names.database)
    # the tables landed in the instance's own database
    rows = mysql_server.query("SELECT TABLE_NAME FROM information_schema.TABLES "
                              "WHERE TABLE_SCHEMA = %s", (names.database,))
    assert "auth_user" in {r[0] for r in rows}


def test_django_migrates_into_a_postgres_instance(pg_server: PgServer, unique_id: str) -> None:
    provider = PostgresProvider()
    cluster = ClusterSpec(id=1, kind="postgres", region="local", url=pg_server.admin_url)
    names = ResourceNames(base=f"tether_t{unique_id}dj")
    try:
        creds = provider.provision(cluster, names, "dj:" + secrets.token_urlsafe(18))
        dsn = provider.env_vars("DEFAULT", creds)["DATABASE_URL"]
        result = run_django(dsn)
        check_django_result(result, "postgresql", names.database)
        with psycopg.connect(dsn, connect_timeout=5) as conn:
            row = conn.execute("SELECT tableowner FROM pg_tables WHERE tablename = 'auth_user'"
                               ).fetchone()
            assert row == (names.role,)
    finally:
        provider.deprovision(cluster, names)
