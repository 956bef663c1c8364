"""tokens with roles, project scopes, expiry and revocation; server-side web sessions

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tokens") as batch:
        # tokens made before roles existed were all admin tokens (the only kind there was)
        batch.add_column(sa.Column("role", sa.String(length=20), nullable=False,
                                   server_default="admin"))
        batch.add_column(sa.Column("owner", sa.String(length=100), nullable=True))
        batch.add_column(sa.Column("projects", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("created_by", sa.String(length=200), nullable=True))
    # Names become unique among live tokens (`tether token revoke NAME`): every `tether up`
    # that found no valid CLI config made another token named `admin`, so number the others.
    tokens = sa.table("tokens", sa.column("id", sa.Integer), sa.column("name", sa.String))
    bind = op.get_bind()
    seen: set[str] = set()
    for token_id, name in bind.execute(sa.select(tokens.c.id, tokens.c.name)
                                       .order_by(tokens.c.id)).all():
        fresh, n = name, 1
        while fresh in seen:
            n += 1
            suffix = f"-{n}"
            fresh = name[:100 - len(suffix)] + suffix  # the column holds 100 characters
        seen.add(fresh)
        if fresh != name:
            bind.execute(tokens.update().where(tokens.c.id == token_id).values(name=fresh))
    op.create_index("uq_live_token_name", "tokens", ["name"], unique=True,
                    sqlite_where=sa.text("revoked_at IS NULL"),
                    postgresql_where=sa.text("revoked_at IS NULL"))
    op.create_table(
        "web_sessions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("secret_hash", sa.String(length=64), nullable=False),
        sa.Column("token_id", sa.Integer(), nullable=False),
        sa.Column("client", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["token_id"], ["tokens.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("secret_hash"),
    )
    op.create_index("ix_web_sessions_token_id", "web_sessions", ["token_id"])


def downgrade() -> None:
    op.drop_index("ix_web_sessions_token_id", table_name="web_sessions")
    op.drop_table("web_sessions")
    op.drop_index("uq_live_token_name", table_name="tokens")
    with op.batch_alter_table("tokens") as batch:
        for name in ("created_by", "revoked_at", "expires_at", "projects", "owner", "role"):
            batch.drop_column(name)
