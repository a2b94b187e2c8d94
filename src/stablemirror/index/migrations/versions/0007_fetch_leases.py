"""Fetch leases: one upstream transfer per blob across mirror replicas.

Revision ID: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "fetch_leases",
        sa.Column("digest", sa.String(160), primary_key=True),
        sa.Column("owner", sa.String(512), nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("fetch_leases")
