"""Initial schema: repositories, blobs, manifests, references, tags, uploads.

Revision ID: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

DIGEST = sa.String(160)


def _repo_fk() -> sa.Column[int]:
    return sa.Column(
        "repo_id",
        sa.Integer,
        sa.ForeignKey("repositories.id", ondelete="CASCADE"),
        primary_key=True,
    )


def upgrade() -> None:
    op.create_table(
        "repositories",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(255), nullable=False, unique=True),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_table(
        "blobs",
        sa.Column("digest", DIGEST, primary_key=True),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("pushed_at", sa.Float, nullable=False),
    )
    op.create_table(
        "repo_blobs",
        _repo_fk(),
        sa.Column("digest", DIGEST, primary_key=True),
        sa.Column("linked_at", sa.Float, nullable=False),
    )
    op.create_index("ix_repo_blobs_digest", "repo_blobs", ["digest"])
    op.create_table(
        "manifests",
        _repo_fk(),
        sa.Column("digest", DIGEST, primary_key=True),
        sa.Column("media_type", sa.String(255), nullable=False),
        sa.Column("artifact_type", sa.String(255)),
        sa.Column("subject", DIGEST),
        sa.Column("annotations", sa.Text),
        sa.Column("size", sa.Integer, nullable=False),
        sa.Column("content", sa.LargeBinary, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_index("ix_manifests_subject", "manifests", ["repo_id", "subject"])
    op.create_table(
        "manifest_refs",
        _repo_fk(),
        sa.Column("manifest_digest", DIGEST, primary_key=True),
        sa.Column("ref_digest", DIGEST, primary_key=True),
        sa.Column("kind", sa.String(8), nullable=False),
    )
    op.create_index("ix_manifest_refs_ref", "manifest_refs", ["ref_digest"])
    op.create_table(
        "tags",
        _repo_fk(),
        sa.Column("name", sa.String(128), primary_key=True),
        sa.Column("manifest_digest", DIGEST, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
    )
    op.create_table(
        "uploads",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column(
            "repo_id",
            sa.Integer,
            sa.ForeignKey("repositories.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("created_at", sa.Float, nullable=False),
    )


def downgrade() -> None:
    for table in (
        "uploads",
        "tags",
        "manifest_refs",
        "manifests",
        "repo_blobs",
        "blobs",
        "repositories",
    ):
        op.drop_table(table)
