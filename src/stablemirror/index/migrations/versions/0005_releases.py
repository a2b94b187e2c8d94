"""Release channels: channels, history, version pulls, mirror channel resolutions.

Revision ID: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def _repo_id(primary_key: bool) -> "sa.Column[int]":
    return sa.Column("repo_id", sa.Integer, sa.ForeignKey("repositories.id", ondelete="CASCADE"),
                     primary_key=primary_key, nullable=False)


def upgrade() -> None:
    op.create_table(
        "release_channels", _repo_id(True),
        sa.Column("name", sa.String(128), primary_key=True),
        sa.Column("entries", sa.Text, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
        sa.Column("updated_by", sa.String(255), nullable=False),
    )
    op.create_table(
        "release_history",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        _repo_id(False),
        sa.Column("channel", sa.String(128), nullable=False),
        sa.Column("time", sa.Float, nullable=False),
        sa.Column("actor", sa.String(255), nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("from_entries", sa.Text, nullable=False),
        sa.Column("to_entries", sa.Text, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("forced", sa.Boolean, nullable=False),
    )
    op.create_index("ix_release_history_channel", "release_history",
                    ["repo_id", "channel", "id"])
    op.create_table(
        "release_pulls", _repo_id(True),
        sa.Column("version", sa.String(128), primary_key=True),
        sa.Column("pulls", sa.BigInteger, nullable=False),
        sa.Column("last_pulled_at", sa.Float, nullable=False),
    )
    op.create_table(
        "mirror_channel_resolutions",
        sa.Column("repository", sa.String(255), primary_key=True),
        sa.Column("tag", sa.String(128), primary_key=True),
        sa.Column("identity", sa.String(255), primary_key=True),
        sa.Column("digest", sa.String(160), nullable=False),
        sa.Column("resolved_at", sa.Float, nullable=False),
    )


def downgrade() -> None:
    op.drop_index("ix_release_history_channel", "release_history")
    for table in ("mirror_channel_resolutions", "release_pulls", "release_history",
                  "release_channels"):
        op.drop_table(table)
