"""regions with a family

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "regions",
        sa.Column("name", sa.String(length=40), nullable=False),
        sa.Column("family", sa.String(length=20), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    # regions already in use get the family their name suggests (see catalog.infer_family)
    conn = op.get_bind()
    names = [row[0] for row in conn.execute(sa.text("SELECT DISTINCT region FROM clusters"))]
    regions = sa.table("regions", sa.column("name"), sa.column("family"),
                       sa.column("created_at", sa.DateTime(timezone=True)))
    now = sa.func.now()
    for name in names:
        family = "local" if name == "local" else ("azure" if "azure" in name else "s3")
        conn.execute(sa.insert(regions).values(name=name, family=family, created_at=now))


def downgrade() -> None:
    op.drop_table("regions")
