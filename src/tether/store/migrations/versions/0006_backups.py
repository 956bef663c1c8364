"""backups: backup sets and their sealed files, schedules, and what a backup, restore or copy
operation works on (its backup set, its parameters, its progress)

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "backups",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("environment_id", sa.Integer(), sa.ForeignKey("environments.id"),
                  nullable=False),
        sa.Column("origin", sa.String(20), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("storage_cluster_id", sa.Integer(), sa.ForeignKey("clusters.id"),
                  nullable=True),
        sa.Column("requested_by", sa.String(100), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("verification", sa.String(20), nullable=True),
        sa.Column("verified_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("verification_detail", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_backups_environment_id", "backups", ["environment_id"])
    op.create_index("ix_backups_status", "backups", ["status"])
    op.create_table(
        "backup_files",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("backup_id", sa.Integer(), sa.ForeignKey("backups.id"), nullable=False),
        sa.Column("instance_id", sa.Integer(), sa.ForeignKey("instances.id"), nullable=True),
        sa.Column("prefix", sa.String(30), nullable=False),
        sa.Column("kind", sa.String(30), nullable=False),
        sa.Column("service", sa.String(60), nullable=False),
        sa.Column("format", sa.String(40), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("storage_key", sa.Text(), nullable=True),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=True),
        sa.Column("plain_sha256", sa.String(64), nullable=True),
        sa.Column("key_sealed", sa.Text(), nullable=True),
        sa.Column("summary", sa.JSON(), nullable=True),
    )
    op.create_index("ix_backup_files_backup_id", "backup_files", ["backup_id"])
    op.create_table(
        "backup_schedules",
        sa.Column("environment_id", sa.Integer(), sa.ForeignKey("environments.id"),
                  primary_key=True),
        sa.Column("at", sa.String(5), nullable=False),
        sa.Column("keep_daily", sa.Integer(), nullable=False),
        sa.Column("keep_weekly", sa.Integer(), nullable=False),
        sa.Column("keep_monthly", sa.Integer(), nullable=False),
        sa.Column("verify_every_days", sa.Integer(), nullable=False),
        sa.Column("last_run_on", sa.String(10), nullable=True),
        sa.Column("updated_by", sa.String(100), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    with op.batch_alter_table("operations") as batch:
        batch.add_column(sa.Column("backup_id", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("params", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("progress", sa.Text(), nullable=True))
        batch.create_foreign_key("fk_operations_backup_id", "backups", ["backup_id"], ["id"])
        batch.create_index("ix_operations_backup_id", ["backup_id"])


def downgrade() -> None:
    with op.batch_alter_table("operations") as batch:
        batch.drop_index("ix_operations_backup_id")
        batch.drop_constraint("fk_operations_backup_id", type_="foreignkey")
        for name in ("progress", "params", "backup_id"):
            batch.drop_column(name)
    op.drop_table("backup_schedules")
    op.drop_index("ix_backup_files_backup_id", "backup_files")
    op.drop_table("backup_files")
    op.drop_index("ix_backups_status", "backups")
    op.drop_index("ix_backups_environment_id", "backups")
    op.drop_table("backups")
