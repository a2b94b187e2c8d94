"""Integrity and trust (signing policies, scrub state, quarantine).

Revision ID: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

DIGEST = sa.String(160)


def upgrade() -> None:
    op.create_table(
        "trust_policies",
        sa.Column("pattern", sa.String(255), primary_key=True),
        sa.Column("mode", sa.String(8), nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
    )
    op.create_table(
        "trust_policy_keys",
        sa.Column(
            "pattern",
            sa.String(255),
            sa.ForeignKey("trust_policies.pattern", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("role", sa.String(64), primary_key=True),
        sa.Column("key_id", sa.String(80), primary_key=True),
        sa.Column("public_key", sa.Text, nullable=False),
        sa.Column("label", sa.String(255), nullable=False),
    )
    op.create_table(
        "blob_integrity",
        sa.Column("digest", DIGEST, primary_key=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("size", sa.BigInteger),
        sa.Column("verified_at", sa.Float),
        sa.Column("stale_at", sa.Float),
        sa.Column("quarantined_at", sa.Float),
        sa.Column("quarantine_path", sa.Text),
        sa.Column("detail", sa.Text),
    )
    op.create_table(
        "worker_leases",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("holder", sa.String(128), nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False),
    )


def downgrade() -> None:
    for table in ("worker_leases", "blob_integrity", "trust_policy_keys", "trust_policies"):
        op.drop_table(table)
