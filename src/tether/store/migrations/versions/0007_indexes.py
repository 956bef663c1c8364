"""indexes on the columns lists and look-ups filter by (issue 12): an operation's instance and
deployment, an environment's deployments, releases by environment and status, a cluster's
instances, an environment's audit entries, a private cluster's owner

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03
"""

from __future__ import annotations

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

#: (index name, table, columns)
INDEXES = (
    ("ix_operations_instance_id", "operations", ["instance_id"]),
    ("ix_operations_deployment_id", "operations", ["deployment_id"]),
    ("ix_deployments_environment_id", "deployments", ["environment_id"]),
    ("ix_releases_environment_id_status", "releases", ["environment_id", "status"]),
    ("ix_instances_cluster_id", "instances", ["cluster_id"]),
    ("ix_audit_environment_id", "audit", ["environment_id"]),
    ("ix_clusters_owner_instance_id", "clusters", ["owner_instance_id"]),
)


def upgrade() -> None:
    for name, table, columns in INDEXES:
        op.create_index(name, table, columns)


def downgrade() -> None:
    for name, table, _ in reversed(INDEXES):
        op.drop_index(name, table_name=table)
