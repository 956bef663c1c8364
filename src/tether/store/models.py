"""Tables. Secrets live only in `*_enc` columns (sealed by `tether.crypto.SecretBox`)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import overload

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    return datetime.now(UTC)


@overload
def aware(moment: datetime) -> datetime: ...


@overload
def aware(moment: None) -> None: ...


def aware(moment: datetime | None) -> datetime | None:
    """A stored moment as an aware UTC datetime: SQLite gives naive datetimes back (every one
    Tether stores is UTC), PostgreSQL aware ones."""
    if moment is not None and moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment


class Base(DeclarativeBase):
    pass


class Token(Base):
    """An API token: only its SHA-256 is kept. Its role and project scope say what it may do
    (`tether.access`); a revoked or expired token is refused at once (the API keeps a token's
    principal only until the store changes: `tether.store.readcache`)."""

    __tablename__ = "tokens"
    __table_args__ = (
        Index("uq_live_token_name", "name", unique=True,
              sqlite_where=text("revoked_at IS NULL"),
              postgresql_where=text("revoked_at IS NULL")),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(20), default="admin")
    #: the person it belongs to (the audit trail names them); None: the token's name
    owner: Mapped[str | None] = mapped_column(String(100), nullable=True)
    #: the project names it is granted; None: every project
    projects: Mapped[list | None] = mapped_column(JSON, nullable=True)
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    created_by: Mapped[str | None] = mapped_column(String(200), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class WebSession(Base):
    """A browser signed in to the Services view with a token. The browser holds a random
    session id (only its SHA-256 is kept here), never the token; signing out, revoking the
    session or revoking its token ends it at once, and it expires on its own."""

    __tablename__ = "web_sessions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    secret_hash: Mapped[str] = mapped_column(String(64), unique=True)
    token_id: Mapped[int] = mapped_column(ForeignKey("tokens.id"), index=True)
    #: where it signed in from and with what (shown in the list of sessions)
    client: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class AuthVersion(Base):
    """One row whose `n` the store's triggers bump on every write to `tokens` or
    `web_sessions` (migration 0009): the API keeps who a token is until it changes
    (`Store.auth_version`), whatever else is written meanwhile."""

    __tablename__ = "auth_version"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    n: Mapped[int] = mapped_column(BigInteger)


class Node(Base):
    """A running Tether process (`tether up` or `tether worker`) sharing the store. Its heartbeat
    (`seen_at`) tells the other nodes it is alive; the operations it claimed are leased to it."""

    __tablename__ = "nodes"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    hostname: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    seen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    stopped_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class Region(Base):
    """Where things run. The family decides which media storage the region offers."""

    __tablename__ = "regions"
    name: Mapped[str] = mapped_column(String(40), primary_key=True)
    family: Mapped[str] = mapped_column(String(20))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Cluster(Base):
    __tablename__ = "clusters"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    kind: Mapped[str] = mapped_column(String(30))
    region: Mapped[str] = mapped_column(String(40))
    private: Mapped[bool] = mapped_column(Boolean, default=False)
    version: Mapped[str] = mapped_column(String(40))
    url_enc: Mapped[str] = mapped_column(Text)
    settings: Mapped[dict] = mapped_column(JSON, default=dict)
    #: run by Tether itself (the embedded default, or a dedicated server for a private instance)
    managed: Mapped[bool] = mapped_column(Boolean, default=False)
    #: the node that runs this server (embedded servers belong to the `tether up` that runs them)
    node_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    owner_instance_id: Mapped[int | None] = mapped_column(Integer, nullable=True, index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Project(Base):
    __tablename__ = "projects"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(40), unique=True)
    region: Mapped[str] = mapped_column(String(40))
    app_command: Mapped[str | None] = mapped_column(Text, nullable=True)
    app_dir: Mapped[str | None] = mapped_column(Text, nullable=True)
    health_path: Mapped[str] = mapped_column(String(200), default="/")
    health_timeout: Mapped[int] = mapped_column(Integer, default=30)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    environments: Mapped[list[Environment]] = relationship(
        back_populates="project", order_by="Environment.id"
    )


class Environment(Base):
    __tablename__ = "environments"
    __table_args__ = (UniqueConstraint("project_id", "name"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"))
    name: Mapped[str] = mapped_column(String(20))
    #: a port of its own (stable address), or None: reached through the front door only
    port: Mapped[int | None] = mapped_column(Integer, unique=True, nullable=True)
    secret_key_enc: Mapped[str] = mapped_column(Text)
    current_release_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    project: Mapped[Project] = relationship(back_populates="environments")


class Variable(Base):
    """A user's custom variable in one environment."""

    __tablename__ = "variables"
    __table_args__ = (UniqueConstraint("environment_id", "name"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    environment_id: Mapped[int] = mapped_column(ForeignKey("environments.id"))
    name: Mapped[str] = mapped_column(String(128))
    value_enc: Mapped[str] = mapped_column(Text)


class Instance(Base):
    __tablename__ = "instances"
    __table_args__ = (
        Index(
            "uq_live_prefix",
            "environment_id",
            "prefix",
            unique=True,
            sqlite_where=text("state != 'removed'"),
            postgresql_where=text("state != 'removed'"),
        ),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    environment_id: Mapped[int] = mapped_column(ForeignKey("environments.id"))
    service: Mapped[str] = mapped_column(String(60))
    kind: Mapped[str] = mapped_column(String(30))
    prefix: Mapped[str] = mapped_column(String(30))
    private: Mapped[bool] = mapped_column(Boolean, default=False)
    state: Mapped[str] = mapped_column(String(30))
    cluster_id: Mapped[int | None] = mapped_column(ForeignKey("clusters.id"), nullable=True,
                                                   index=True)
    #: the password/key chosen before provisioning, so a retry converges to the same credentials
    secret_enc: Mapped[str | None] = mapped_column(Text, nullable=True)
    credentials_enc: Mapped[str | None] = mapped_column(Text, nullable=True)
    #: how many times its credentials were rotated: the application logs in as the login of
    #: that rotation (`ResourceNames.login`)
    rotations: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    #: the password of the login a rotation asked for makes, chosen (and kept) before the
    #: provider call so a retry converges; None once its credentials are recorded
    rotation_secret_enc: Mapped[str | None] = mapped_column(Text, nullable=True)
    #: a list of earlier credentials still valid, because a running release may use them:
    #: revoked once none does (after the deployment that gives the new ones)
    retiring_credentials_enc: Mapped[str | None] = mapped_column(Text, nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    #: what the last observation found different from what Tether made (None: as it should be)
    drift: Mapped[str | None] = mapped_column(Text, nullable=True)
    observed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Deployment(Base):
    __tablename__ = "deployments"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    environment_id: Mapped[int] = mapped_column(ForeignKey("environments.id"), index=True)
    status: Mapped[str] = mapped_column(String(20), default="queued")
    percent: Mapped[int] = mapped_column(Integer, default=0)
    success: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    requested_by: Mapped[str] = mapped_column(String(100))
    release_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class DeploymentLog(Base):
    __tablename__ = "deployment_logs"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    deployment_id: Mapped[int] = mapped_column(ForeignKey("deployments.id"), index=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    line: Mapped[str] = mapped_column(Text)


class Release(Base):
    """What runs (or ran) for an environment: the variables are sealed, their names kept clear
    so `env-vars --json` can say which variables the running release has."""

    __tablename__ = "releases"
    __table_args__ = (Index("ix_releases_environment_id_status", "environment_id", "status"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    environment_id: Mapped[int] = mapped_column(ForeignKey("environments.id"))
    deployment_id: Mapped[int] = mapped_column(ForeignKey("deployments.id"))
    env_enc: Mapped[str] = mapped_column(Text)
    variable_names: Mapped[list] = mapped_column(JSON, default=list)
    command: Mapped[str | None] = mapped_column(Text, nullable=True)
    status: Mapped[str] = mapped_column(String(20), default="starting")
    #: the instances whose variables this release has (the truth for "the running release has it")
    instance_ids: Mapped[list | None] = mapped_column(JSON, nullable=True, default=list)
    #: the node, process (pid and its start time, so a reused pid is not taken for it), port and
    #: log file of the application process, so a restarted node adopts it instead of doubling it
    node_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    pid: Mapped[int | None] = mapped_column(Integer, nullable=True)
    pid_start: Mapped[str | None] = mapped_column(String(32), nullable=True)
    port: Mapped[int | None] = mapped_column(Integer, nullable=True)
    log_path: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Operation(Base):
    """A durable unit of work for the engine (provision, remove, deploy, rotate). A rotate
    operation that queued a deployment to give the application its new credentials names it
    in `deployment_id`."""

    __tablename__ = "operations"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(20))
    environment_id: Mapped[int] = mapped_column(ForeignKey("environments.id"), index=True)
    instance_id: Mapped[int | None] = mapped_column(ForeignKey("instances.id"), nullable=True,
                                                    index=True)
    deployment_id: Mapped[int | None] = mapped_column(
        ForeignKey("deployments.id"), nullable=True, index=True
    )
    status: Mapped[str] = mapped_column(String(20), default="queued", index=True)
    message: Mapped[str | None] = mapped_column(Text, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    requested_by: Mapped[str] = mapped_column(String(100))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    #: the node running it, and until when its lease holds (renewed by that node's heartbeat)
    claimed_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    lease_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    #: a retry after an error that may pass waits until `not_before`, and gives up at `deadline`
    not_before: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    deadline: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    #: the backup set a backup, restore or copy operation makes or reads
    backup_id: Mapped[int | None] = mapped_column(ForeignKey("backups.id"), nullable=True,
                                                  index=True)
    #: what else the operation needs (e.g. a restore's source file, a copy's source instance)
    params: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    #: how far it got, in words, while it runs (e.g. "DEFAULT: 120 MB dumped")
    progress: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class Backup(Base):
    """A backup set: one file per instance backed up together (`tether backup create ENV`).

    Listed as restorable only when `status` is `completed`: every file of it is stored, and its
    checksum and sealed key are recorded (`BackupFile`). A set whose operation failed or was
    interrupted is `failed` (or still `running`) and its files are deleted from storage."""

    __tablename__ = "backups"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    environment_id: Mapped[int] = mapped_column(ForeignKey("environments.id"), index=True)
    #: manual, scheduled, copy (made by `service copy`) or upload (a dump made elsewhere)
    origin: Mapped[str] = mapped_column(String(20), default="manual")
    #: running, completed, failed, deleted
    status: Mapped[str] = mapped_column(String(20), default="running", index=True)
    #: the storage cluster of the project's region that holds the files
    storage_cluster_id: Mapped[int | None] = mapped_column(ForeignKey("clusters.id"),
                                                           nullable=True)
    requested_by: Mapped[str] = mapped_column(String(100))
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    #: bytes (64-bit: backups pass 2 GiB)
    size: Mapped[int] = mapped_column(BigInteger, default=0)
    #: the last verification: passed or failed, when, and what it found
    verification: Mapped[str | None] = mapped_column(String(20), nullable=True)
    verified_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    verification_detail: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    deleted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    files: Mapped[list[BackupFile]] = relationship(order_by="BackupFile.id")


class BackupFile(Base):
    """One instance's data in a backup set: a sealed file in the set's storage (`storage_key`),
    its own key sealed by Tether's secret (`key_sealed`, never in the file), its checksums, and a
    summary of its content (counts and checksums) that a verification compares with."""

    __tablename__ = "backup_files"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    backup_id: Mapped[int] = mapped_column(ForeignKey("backups.id"), index=True)
    #: the instance it was taken from (None for an uploaded dump)
    instance_id: Mapped[int | None] = mapped_column(ForeignKey("instances.id"), nullable=True)
    prefix: Mapped[str] = mapped_column(String(30))
    kind: Mapped[str] = mapped_column(String(30))
    service: Mapped[str] = mapped_column(String(60))
    #: the engine's format (e.g. pg_dump-custom): a file restores only into a kind that reads it
    format: Mapped[str] = mapped_column(String(40))
    #: pending until the file is stored and recorded
    status: Mapped[str] = mapped_column(String(20), default="pending")
    storage_key: Mapped[str | None] = mapped_column(Text, nullable=True)
    #: bytes (64-bit: backups pass 2 GiB)
    size: Mapped[int] = mapped_column(BigInteger, default=0)
    sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    plain_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    key_sealed: Mapped[str | None] = mapped_column(Text, nullable=True)
    summary: Mapped[dict | None] = mapped_column(JSON, nullable=True)


class BackupSchedule(Base):
    """An environment's scheduled backups: every day at `at` (HH:MM, UTC), keeping the newest
    `keep_daily` days, `keep_weekly` weeks and `keep_monthly` months of scheduled backups."""

    __tablename__ = "backup_schedules"
    environment_id: Mapped[int] = mapped_column(ForeignKey("environments.id"), primary_key=True)
    at: Mapped[str] = mapped_column(String(5))
    keep_daily: Mapped[int] = mapped_column(Integer, default=7)
    keep_weekly: Mapped[int] = mapped_column(Integer, default=4)
    keep_monthly: Mapped[int] = mapped_column(Integer, default=12)
    #: verify a scheduled backup when the last verification is older than this many days
    verify_every_days: Mapped[int] = mapped_column(Integer, default=7)
    #: the last day a scheduled backup was queued for (so each day's runs once)
    last_run_on: Mapped[str | None] = mapped_column(String(10), nullable=True)
    updated_by: Mapped[str] = mapped_column(String(100))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class AuditEntry(Base):
    """Rule 7: every state change, with who asked and when. Never holds a secret."""

    __tablename__ = "audit"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    actor: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(40))
    environment_id: Mapped[int | None] = mapped_column(Integer, nullable=True, index=True)
    instance_id: Mapped[int | None] = mapped_column(Integer, nullable=True, index=True)
    from_state: Mapped[str | None] = mapped_column(String(30), nullable=True)
    to_state: Mapped[str | None] = mapped_column(String(30), nullable=True)
    detail: Mapped[str | None] = mapped_column(Text, nullable=True)
