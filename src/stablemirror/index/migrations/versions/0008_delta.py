"""Delta transfer: local chunk table, indexed blobs, weight layers by manifest.

Revision ID: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

DIGEST = sa.String(160)


def upgrade() -> None:
    op.create_table(
        "delta_chunks",
        sa.Column("digest", DIGEST, primary_key=True),
        sa.Column("offset", sa.BigInteger, primary_key=True),
        sa.Column("length", sa.Integer, nullable=False),
        sa.Column("hash", sa.LargeBinary(32), nullable=False),
        sa.Column("params", sa.String(64), nullable=False),
    )
    op.create_index("ix_delta_chunks_hash", "delta_chunks", ["hash"])
    op.create_table(
        "delta_indexed",
        sa.Column("digest", DIGEST, primary_key=True),
        sa.Column("params", sa.String(64), nullable=False),
        sa.Column("chunks", sa.Integer, nullable=False),
        sa.Column("indexed_at", sa.Float, nullable=False),
    )
    op.create_table(
        "delta_layers",
        sa.Column("digest", DIGEST, primary_key=True),
        sa.Column("repository", sa.String(255), nullable=False),
        sa.Column("manifest", DIGEST, nullable=False),
        sa.Column("manifest_media_type", sa.String(255), nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("seen_at", sa.Float, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("delta_layers")
    op.drop_table("delta_indexed")
    op.drop_index("ix_delta_chunks_hash", "delta_chunks")
    op.drop_table("delta_chunks")
