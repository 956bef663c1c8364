from __future__ import annotations

from urllib.parse import unquote, urlsplit

import pytest

from tether import naming
from tether.catalog import ClusterInfo, offers, resolve
from tether.crypto import SecretBox
from tether.errors import UserError
from tether.redact import redact


@pytest.mark.parametrize("prefix", ["DEFAULT", "A", "ANALYTICS_2", "X" * 30])
def test_valid_prefixes(prefix: str) -> None:
    assert naming.check_prefix(prefix) == prefix


@pytest.mark.parametrize("prefix", ["", "default", "1DB", "_X", "A-B", "X" * 31, "A B", "É"])
def test_invalid_prefixes_say_how_to_fix(prefix: str) -> None:
    with pytest.raises(UserError, match="upper-case letters"):
        naming.check_prefix(prefix)


def test_resource_names_come_from_the_id_only() -> None:
    assert naming.resource_names(42).base == "tether_i42"
    assert naming.resource_names(42).database == naming.resource_names(42).role


def test_database_dsn_encodes_credentials() -> None:
    dsn = naming.database_dsn("postgres", "u", "p@ss:/w?rd", "127.0.0.1", 5432, "db")
    parts = urlsplit(dsn)
    assert parts.scheme == "postgres"
    assert unquote(parts.password or "") == "p@ss:/w?rd"
    assert (parts.hostname, parts.port, parts.path) == ("127.0.0.1", 5432, "/db")


def test_database_vars_default_gets_database_url() -> None:
    assert naming.database_vars("DEFAULT", "x") == {"DEFAULT_DATABASE_DSN": "x",
                                                    "DATABASE_URL": "x"}
    assert naming.database_vars("ANALYTICS", "x") == {"ANALYTICS_DATABASE_DSN": "x"}


def test_file_storage_dsn() -> None:
    dsn = naming.file_storage_dsn("/data/media/tether_i3", "http://127.0.0.1:8070/media/t/")
    assert dsn == "file:///data/media/tether_i3/?url=http%3A%2F%2F127.0.0.1%3A8070%2Fmedia%2Ft%2F"


@pytest.mark.parametrize("name", ["STAGE", "SECRET_KEY", "PORT", "1X", "A-B"])
def test_reserved_or_bad_variable_names(name: str) -> None:
    with pytest.raises(UserError):
        naming.check_variable_name(name)


def test_redact_masks_known_secrets_and_url_passwords() -> None:
    text = "failed for postgres://bob:s3cr%2Ft@h:1/db and raw s3cr/t"
    out = redact(text, ["s3cr/t"])
    assert "s3cr" not in out
    assert "postgres://bob:***@h:1/db" in out


def test_secret_box_round_trip_and_key_file_mode(tmp_path) -> None:  # type: ignore[no-untyped-def]
    box = SecretBox.from_data_dir(tmp_path)
    sealed = box.seal({"password": "hunter2"})
    assert "hunter2" not in sealed
    assert SecretBox.from_data_dir(tmp_path).open(sealed) == {"password": "hunter2"}
    assert (tmp_path / "secret.key").stat().st_mode & 0o777 == 0o600


CLUSTERS = [
    ClusterInfo(1, "pg15", "postgres", "local", "15.4", False, None),
    ClusterInfo(2, "pg18", "postgres", "local", "18.6", False, None),
    ClusterInfo(3, "media", "local-files", "local", "1", False, None),
    ClusterInfo(4, "pg-eu", "postgres", "eu-aws", "16.1", False, None),
    ClusterInfo(5, "owned", "postgres", "local", "14.1", True, 99),
]


def test_catalog_is_derived_from_the_region_clusters() -> None:
    names = [o.service for o in offers(CLUSTERS, "local")]
    assert names == ["local-media", "postgres-15", "postgres-18"]
    assert [o.service for o in offers(CLUSTERS, "eu-aws")] == ["postgres-16"]


def test_resolve_family_name_picks_newest_and_refusal_lists_offers() -> None:
    assert resolve(CLUSTERS, "local", "postgres", False).service == "postgres-18"
    with pytest.raises(UserError, match="offers local-media, postgres-15, postgres-18"):
        resolve(CLUSTERS, "local", "mysql-10", False)
    with pytest.raises(UserError, match="no private option"):
        resolve(CLUSTERS, "local", "local-media", True)
