"""an environment's own port is optional (issue 12): the front door reaches every environment by
its host name, so environments beyond the port range (or every one, with TETHER_ENV_PORTS=none)
have no port of their own

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("environments") as batch:
        batch.alter_column("port", existing_type=sa.Integer(), nullable=True)


def downgrade() -> None:
    # environments without a port cannot go back: the old schema had no place for them
    with op.batch_alter_table("environments") as batch:
        batch.alter_column("port", existing_type=sa.Integer(), nullable=False)
