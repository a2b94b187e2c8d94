"""Pull-through mirror (tag freshness, negative cache, access times).

Revision ID: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "mirror_tags",
        sa.Column("repo_id", sa.Integer, sa.ForeignKey("repositories.id", ondelete="CASCADE"),
                  primary_key=True),
        sa.Column("name", sa.String(128), primary_key=True),
        sa.Column("checked_at", sa.Float, nullable=False),
    )
    op.create_table(
        "mirror_negative",
        sa.Column("repository", sa.String(255), primary_key=True),
        sa.Column("reference", sa.String(160), primary_key=True),
        sa.Column("expires_at", sa.Float, nullable=False),
    )
    op.create_table(
        "blob_access",
        sa.Column("digest", sa.String(160), primary_key=True),
        sa.Column("last_access", sa.Float, nullable=False),
    )


def downgrade() -> None:
    for table in ("blob_access", "mirror_negative", "mirror_tags"):
        op.drop_table(table)
