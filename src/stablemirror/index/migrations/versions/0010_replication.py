"""Replication status per rule (docs/replication.md).

Revision ID: 0010
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "replication_status",
        sa.Column("rule", sa.String(255), primary_key=True),
        sa.Column("last_started", sa.Float, nullable=True),
        sa.Column("last_finished", sa.Float, nullable=True),
        sa.Column("last_success", sa.Float, nullable=True),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.Column("last_trigger", sa.String(16), nullable=True),
        sa.Column("artifacts_copied", sa.BigInteger, nullable=False),
        sa.Column("bytes_copied", sa.BigInteger, nullable=False),
        sa.Column("pending_artifacts", sa.BigInteger, nullable=False),
        sa.Column("pending_bytes", sa.BigInteger, nullable=False),
        sa.Column("oldest_pending", sa.Float, nullable=True),
        sa.Column("current", sa.Text, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("replication_status")
