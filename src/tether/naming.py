"""Names: prefixes, resource names, environment variable names, DSNs.

Resource names on clusters are derived from the instance id only, never from user input, so
they are always safe identifiers (still always quoted where used).
"""

from __future__ import annotations

import re
from urllib.parse import quote

from tether.errors import UserError
from tether.providers.base import ResourceNames

PREFIX_RE = re.compile(r"[A-Z][A-Z0-9_]{0,29}")
PROJECT_RE = re.compile(r"[a-z][a-z0-9-]{0,39}")
ENV_RE = re.compile(r"[a-z][a-z0-9-]{0,19}")
VARIABLE_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
RESERVED_VARIABLES = frozenset({"STAGE", "SECRET_KEY", "PORT"})


def check_prefix(prefix: str) -> str:
    if not PREFIX_RE.fullmatch(prefix):
        raise UserError(
            f"invalid prefix {prefix!r}: use 1-30 characters, upper-case letters, digits and "
            "underscores, starting with a letter (e.g. DEFAULT, ANALYTICS)"
        )
    return prefix


def check_project_name(name: str) -> str:
    if not PROJECT_RE.fullmatch(name):
        raise UserError(
            f"invalid project name {name!r}: use 1-40 lower-case letters, digits and '-', "
            "starting with a letter (e.g. my-shop)"
        )
    return name


def check_environment_name(name: str) -> str:
    if not ENV_RE.fullmatch(name):
        raise UserError(
            f"invalid environment name {name!r}: use 1-20 lower-case letters, digits and '-', "
            "starting with a letter (e.g. test, live, staging)"
        )
    return name


def check_variable_name(name: str) -> str:
    if not VARIABLE_RE.fullmatch(name):
        raise UserError(
            f"invalid variable name {name!r}: use letters, digits and underscores, "
            "not starting with a digit (e.g. DJANGO_DEBUG)"
        )
    if name in RESERVED_VARIABLES:
        raise UserError(f"{name} is set by Tether for every environment: pick another name")
    return name


def resource_names(instance_id: int) -> ResourceNames:
    """The stable names of an instance's resources on its cluster."""
    return ResourceNames(base=f"tether_i{int(instance_id)}")


def database_dsn(scheme: str, user: str, password: str, host: str, port: int, name: str) -> str:
    """`scheme://USER:PASSWORD@HOST:PORT/NAME`, with user and password URL-encoded."""
    return f"{scheme}://{quote(user, safe='')}:{quote(password, safe='')}@{host}:{port}/{name}"


def database_vars(prefix: str, dsn: str) -> dict[str, str]:
    """`{P}_DATABASE_DSN`, and `DATABASE_URL` for the DEFAULT prefix (Divio conventions)."""
    out = {f"{prefix}_DATABASE_DSN": dsn}
    if prefix == "DEFAULT":
        out["DATABASE_URL"] = dsn
    return out


def file_storage_dsn(directory: str, public_url: str) -> str:
    """`file:///ABSOLUTE/DIR/?url=URL-ENCODED-PUBLIC-URL`."""
    path = directory if directory.endswith("/") else directory + "/"
    return f"file://{quote(path)}?url={quote(public_url, safe='')}"


def storage_vars(prefix: str, dsn: str) -> dict[str, str]:
    return {f"{prefix}_STORAGE_DSN": dsn}
