"""The notification outbox: per-endpoint delivery rows and endpoint leases
(docs/notifications.md).

Revision ID: 0011
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "notification_deliveries",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("endpoint", sa.String(64), nullable=False),
        sa.Column("event_id", sa.String(64), nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_at", sa.Float, nullable=False),
        sa.Column("last_error", sa.Text, nullable=True),
    )
    op.create_index("ix_notification_deliveries_endpoint_id", "notification_deliveries",
                    ["endpoint", "id"])
    op.create_table(
        "notification_leases",
        sa.Column("endpoint", sa.String(64), primary_key=True),
        sa.Column("owner", sa.String(255), nullable=True),
        sa.Column("expires", sa.Float, nullable=True),
    )


def downgrade() -> None:
    op.drop_table("notification_leases")
    op.drop_index("ix_notification_deliveries_endpoint_id", "notification_deliveries")
    op.drop_table("notification_deliveries")
