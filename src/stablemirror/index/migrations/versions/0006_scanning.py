"""Scanning: per-blob results, per-manifest scans, signed exemptions.

Revision ID: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

DIGEST = sa.String(160)


def upgrade() -> None:
    op.create_table(
        "scan_blobs",
        sa.Column("digest", DIGEST, primary_key=True),
        sa.Column("analyzer", sa.String(32), primary_key=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("findings", sa.Text, nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("scanned_at", sa.Float, nullable=False),
    )
    op.create_table(
        "scan_manifests",
        sa.Column("repository", sa.String(255), primary_key=True),
        sa.Column("digest", DIGEST, primary_key=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("analyzer", sa.String(32), nullable=False),
        sa.Column("findings", sa.Text, nullable=False),
        sa.Column("queued_at", sa.Float, nullable=False),
        sa.Column("claimed_at", sa.Float, nullable=True),
        sa.Column("finished_at", sa.Float, nullable=True),
        sa.Column("referrer", DIGEST, nullable=True),
        sa.Column("error", sa.Text, nullable=True),
    )
    op.create_index("ix_scan_manifests_status", "scan_manifests", ["status"])
    op.create_table(
        "scan_exemptions",
        sa.Column("repository", sa.String(255), primary_key=True),
        sa.Column("digest", DIGEST, primary_key=True),
        sa.Column("document", sa.Text, nullable=False),
        sa.Column("signature", sa.Text, nullable=False),
        sa.Column("key_id", sa.String(128), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("scan_exemptions")
    op.drop_index("ix_scan_manifests_status", "scan_manifests")
    op.drop_table("scan_manifests")
    op.drop_table("scan_blobs")
