"""What the REST API accepts, with its bounds: request bodies, path and query parameters.

Every text has a length that fits the store's column and the actions' own checks, and no
control characters where they would break something (a NUL cannot be stored in PostgreSQL, nor
passed to exec or put into an environment; a line break would split an HTTP request line or a
file path). Every integer has a range, so a 100-digit id is a 422 rather than a 500 from the
database driver. The checks that need more than a length or a character class (a project name's
form, a health path's leading slash) stay in `tether.actions`, with messages that say the fix.

The OpenAPI document states these bounds, and the answers every operation may give (`ERRORS`).
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import Path, Query
from pydantic import BaseModel, Field, StrictBool, StrictInt, StringConstraints, field_validator

from tether.actions.projects import MAX_COMMAND, MAX_HEALTH_PATH, MAX_PATH
from tether.actions.variables import MAX_VALUE
from tether.api.limits import MAX_BODY, human_size
from tether.paging import MAX_LIMIT

#: no control characters at all (names, URLs, paths)
PLAIN = r"^[^\x00-\x1f\x7f]*$"
#: anything but a NUL (commands and variable values may hold line breaks)
NO_NUL = r"^[^\x00]*$"

#: ids are the store's INTEGER columns: 32-bit in PostgreSQL (a larger number there is an error
#: of the database, not "no such id")
MAX_ID = 2**31 - 1
#: the most deployments one listing returns
MAX_PAGE = 200
#: the longest a call that queues an operation waits for its end (`?wait=`), seconds
MAX_WAIT = 60

# Lengths of the store's columns and the product's names (see tether.naming).
PROJECT_NAME = 40
REGION_NAME = 40
ENVIRONMENT_NAME = 20
PREFIX = 30
SERVICE_NAME = 60
VARIABLE_NAME = 128
CLUSTER_KIND = 30
CLUSTER_NAME = 100
REGION_FAMILY = 20
CLUSTER_URL = 2048
#: a cluster's settings: a few scalar values each (endpoints, names, numbers, flags)
MAX_SETTINGS = 50
SETTING_KEY = 64
SETTING_TEXT = 8192
#: the settings as stored (JSON)
MAX_SETTINGS_BYTES = 64 * 1024
#: a log cursor (`RELEASE.INODE.HEAD.OFFSET`, four numbers)
CURSOR = 100
TOKEN_NAME = 40


def _text(max_length: int, pattern: str = PLAIN, min_length: int = 0) -> Any:
    return StringConstraints(min_length=min_length, max_length=max_length, pattern=pattern)


# --- Path and query parameters ---------------------------------------------------------------

ProjectPath = Annotated[str, Path(min_length=1, max_length=PROJECT_NAME, pattern=PLAIN,
                                  description="the project's name", examples=["shop"])]
EnvPath = Annotated[str, Path(min_length=1, max_length=ENVIRONMENT_NAME, pattern=PLAIN,
                                      description="the environment, e.g. test or live",
                                      examples=["test"])]
PrefixPath = Annotated[str, Path(min_length=1, max_length=PREFIX, pattern=PLAIN,
                                 description="the service instance's prefix",
                                 examples=["DEFAULT"])]
NamePath = Annotated[str, Path(min_length=1, max_length=VARIABLE_NAME, pattern=PLAIN,
                                   description="the variable's name", examples=["DEBUG"])]
IdPath = Annotated[int, Path(ge=1, le=MAX_ID)]
TokenNamePath = Annotated[str, Path(min_length=1, max_length=TOKEN_NAME, pattern=PLAIN,
                                    description="the token's name", examples=["ci-deploy"])]

PageSize = Annotated[int, Query(ge=1, le=MAX_PAGE, description="at most this many, newest first")]
PageLimit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="at most this many in one page")]
LogsAfter = Annotated[int, Query(ge=0, le=MAX_ID,
                                 description="only the log lines after this line id")]
Cursor = Annotated[str | None, Query(max_length=CURSOR, pattern=PLAIN)]
RegionQuery = Annotated[str | None, Query(max_length=REGION_NAME, pattern=PLAIN)]
ProjectQuery = Annotated[str | None, Query(max_length=PROJECT_NAME, pattern=PLAIN)]
EnvQuery = Annotated[str | None, Query(max_length=ENVIRONMENT_NAME, pattern=PLAIN,
                                       description="only this environment")]
PrefixQuery = Annotated[str | None, Query(max_length=PREFIX, pattern=PLAIN,
                                          description="the service instance's prefix")]
ConfirmQuery = Annotated[str | None, Query(max_length=PREFIX, pattern=PLAIN,
                                           description="the prefix, typed again")]


# --- Request bodies ---------------------------------------------------------------------------

class ProjectIn(BaseModel):
    name: Annotated[str, _text(PROJECT_NAME, min_length=1)] = Field(examples=["shop"])
    region: Annotated[str, _text(REGION_NAME, min_length=1)] = "local"
    app_command: Annotated[str, _text(MAX_COMMAND, NO_NUL)] | None = Field(
        default=None, examples=["python app.py"])
    app_dir: Annotated[str, _text(MAX_PATH)] | None = None
    health_path: Annotated[str, _text(MAX_HEALTH_PATH, min_length=1)] = "/"
    health_timeout: Annotated[int, Field(ge=1, le=600, description="seconds")] = 30
    database: StrictBool = Field(
        default=True, description="Add a DEFAULT PostgreSQL instance (state new) to each "
        "environment when the region offers PostgreSQL; the first deploy provisions and "
        "attaches it. The answer's `database` says what was added, or why nothing was.")


class EnvironmentIn(BaseModel):
    name: Annotated[str, _text(ENVIRONMENT_NAME, min_length=1)] = Field(examples=["staging"])
    database: StrictBool = Field(
        default=True, description="Add a DEFAULT PostgreSQL instance (state new), as a new "
        "project's environments get, when the region offers PostgreSQL.")


class ProjectPatch(BaseModel):
    """The application settings to change (a field left out stays as it is; an empty
    `app_command` or `app_dir` removes it)."""

    app_command: Annotated[str, _text(MAX_COMMAND, NO_NUL)] | None = None
    health_path: Annotated[str, _text(MAX_HEALTH_PATH, min_length=1)] | None = None
    app_dir: Annotated[str, _text(MAX_PATH)] | None = None
    #: checked by the action (1 to 600 s), so its message is the one the page and CLI show
    health_timeout: Annotated[int, Field(description="seconds, 1 to 600")] | None = None


class ServiceIn(BaseModel):
    service: Annotated[str, _text(SERVICE_NAME, min_length=1)] = Field(
        examples=["postgres-18"])
    prefix: Annotated[str, _text(PREFIX, min_length=1)] = "DEFAULT"
    private: bool = False
    provision: bool = False


class BackupIn(BaseModel):
    """The services to back up (none: every service of the environment that has data)."""

    prefixes: list[Annotated[str, _text(PREFIX, min_length=1)]] = Field(
        default_factory=list, max_length=100)
    verify: StrictBool = False


class RestoreIn(BaseModel):
    """Where to restore: `to` another environment of the project (default: the backup's own),
    the file of `prefix` (needed when the backup holds several), `confirm`: the prefix again."""

    to: Annotated[str | None, _text(ENVIRONMENT_NAME, min_length=1)] = None
    prefix: Annotated[str | None, _text(PREFIX, min_length=1)] = None
    confirm: Annotated[str | None, _text(PREFIX)] = None


class ScheduleIn(BaseModel):
    """Back up every day at `at` (HH:MM, UTC); keep so many daily, weekly and monthly backups;
    verify one when the last verification is older than `verify_every_days`."""

    at: Annotated[str, _text(5, min_length=4)] = Field(examples=["03:30"])
    keep_daily: StrictInt = Field(7, ge=0, le=366)
    keep_weekly: StrictInt = Field(4, ge=0, le=520)
    keep_monthly: StrictInt = Field(12, ge=0, le=1200)
    verify_every_days: StrictInt = Field(7, ge=0, le=366)


class CopyIn(BaseModel):
    """Copy the service of the same prefix `source` environment -> this one."""

    source: Annotated[str, _text(ENVIRONMENT_NAME, min_length=1)] = Field(
        examples=["live"])
    confirm: Annotated[str | None, _text(PREFIX)] = None


class VariableIn(BaseModel):
    value: Annotated[str, _text(MAX_VALUE, NO_NUL)]


class SessionIn(BaseModel):
    token: Annotated[str, _text(200, min_length=1)] = Field(
        description="the access token to sign in with")


class TokenIn(BaseModel):
    name: Annotated[str, _text(TOKEN_NAME, min_length=1)] = Field(examples=["ci-deploy"])
    role: Annotated[str, _text(20, min_length=1)] = Field(
        examples=["developer"], description="admin, developer or viewer")
    projects: Annotated[list[Annotated[str, _text(PROJECT_NAME, min_length=1)]],
                        Field(max_length=100)] | None = Field(
        default=None, description="the projects it is granted (developer, viewer); none: "
                                  "every project")
    expires_days: Annotated[int, Field(ge=1, le=3650)] | None = Field(
        default=None, description="days until it stops working; none: never")
    owner: Annotated[str, _text(TOKEN_NAME, min_length=1)] | None = Field(
        default=None, description="who it belongs to (the audit trail names them)")


SettingScalar = (Annotated[str, _text(SETTING_TEXT, NO_NUL)]
                 | Annotated[int, Field(ge=-(2**63), le=2**63 - 1)]
                 | Annotated[float, Field(allow_inf_nan=False)]
                 | bool | None)


class ClusterIn(BaseModel):
    kind: Annotated[str, _text(CLUSTER_KIND, min_length=1)] = Field(examples=["postgres"])
    region: Annotated[str, _text(REGION_NAME, min_length=1)] = Field(examples=["local"])
    url: Annotated[str, _text(CLUSTER_URL, min_length=1)] = Field(
        examples=["postgres://admin:PASSWORD@db.example.com:5432/postgres"])
    private: bool = False
    name: Annotated[str, _text(CLUSTER_NAME, min_length=1)] | None = None
    settings: dict[Annotated[str, _text(SETTING_KEY, min_length=1)],
                   SettingScalar | Annotated[list[SettingScalar], Field(max_length=MAX_SETTINGS)]
                   ] = Field(default_factory=dict, max_length=MAX_SETTINGS,
                             description="kind-specific settings: numbers, flags, texts")
    region_family: Annotated[str, _text(REGION_FAMILY, min_length=1)] | None = Field(
        default=None, description="local, s3 or azure; only for a new region (default: from "
                                  "its name: local, *azure* -> azure, else s3)")

    @field_validator("settings")
    @classmethod
    def _settings_fit(cls, value: dict[str, Any]) -> dict[str, Any]:
        if len(json.dumps(value)) > MAX_SETTINGS_BYTES:
            raise ValueError(f"the settings take more than {MAX_SETTINGS_BYTES // 1024} KiB "
                             "as JSON: keep them to endpoints, names, numbers and flags")
        return value


# --- Answers ----------------------------------------------------------------------------------

class ErrorDetail(BaseModel):
    code: str = Field(examples=["not_found"])
    message: str = Field(description="what was wrong and how to fix it")


class ErrorBody(BaseModel):
    """Every error the API answers: `{"error": {"code", "message"}}`."""

    error: ErrorDetail


def error_doc(description: str) -> dict[str, Any]:
    """An error answer as the OpenAPI document describes it."""
    return {"model": ErrorBody, "description": description}


_error = error_doc


#: the answers any operation of the API may give besides its own success
ERRORS: dict[int | str, dict[str, Any]] = {
    400: _error("bad input, or a value the action refuses: the message says how to fix it"),
    401: _error("no token, or an invalid, revoked or expired one"),
    403: _error("the token's role or projects do not allow this"),
    404: _error("no such project, environment, instance, variable or id"),
    409: _error("refused in the current state (e.g. removing an attached instance)"),
    413: _error(f"the request body is larger than {human_size(MAX_BODY)}"),
    422: _error("a parameter or body field is missing, of the wrong type or out of bounds"),
    500: _error("the work failed on Tether's side (the message says why); retrying is safe"),
}
