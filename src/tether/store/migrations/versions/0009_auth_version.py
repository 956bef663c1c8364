"""who a token or browser session is changes only with the tokens and web_sessions tables: a
counter that triggers bump on every write to either, so the API keeps callers across every other
write (issue 12)

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

TABLES = ("tokens", "web_sessions")


def upgrade() -> None:
    op.create_table("auth_version",
                    sa.Column("id", sa.Integer(), primary_key=True),
                    sa.Column("n", sa.BigInteger(), nullable=False))
    op.execute("INSERT INTO auth_version (id, n) VALUES (1, 0)")
    if op.get_bind().dialect.name == "postgresql":
        op.execute("""
            CREATE FUNCTION tether_auth_changed() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                UPDATE auth_version SET n = n + 1 WHERE id = 1;
                RETURN NULL;
            END $$""")
        for table in TABLES:
            op.execute(f"CREATE TRIGGER {table}_auth_changed AFTER INSERT OR UPDATE OR DELETE "
                       f"OR TRUNCATE ON {table} FOR EACH STATEMENT "
                       "EXECUTE FUNCTION tether_auth_changed()")
        return
    for table in TABLES:
        for event in ("INSERT", "UPDATE", "DELETE"):
            op.execute(f"CREATE TRIGGER {table}_auth_{event.lower()} AFTER {event} ON {table} "
                       "BEGIN UPDATE auth_version SET n = n + 1 WHERE id = 1; END")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table in TABLES:
            op.execute(f"DROP TRIGGER IF EXISTS {table}_auth_changed ON {table}")
        op.execute("DROP FUNCTION IF EXISTS tether_auth_changed()")
    else:
        for table in TABLES:
            for event in ("insert", "update", "delete"):
                op.execute(f"DROP TRIGGER IF EXISTS {table}_auth_{event}")
    op.drop_table("auth_version")
