"""credential rotation: the instance's rotation count, the secret of the login a rotation makes,
and the earlier credentials still valid until no running release uses them

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("instances") as batch:
        # instances made before rotations existed log in as their own role/user: rotation 0
        batch.add_column(sa.Column("rotations", sa.Integer(), nullable=False,
                                   server_default="0"))
        batch.add_column(sa.Column("rotation_secret_enc", sa.Text(), nullable=True))
        batch.add_column(sa.Column("retiring_credentials_enc", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("instances") as batch:
        for name in ("retiring_credentials_enc", "rotation_secret_enc", "rotations"):
            batch.drop_column(name)
