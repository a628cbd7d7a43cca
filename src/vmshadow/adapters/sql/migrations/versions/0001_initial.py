"""The initial schema: flows, findings, proposals, decisions, tmr_versions.

Revision ID: 0001
Revises:
Create Date: 2025-11-25

Types are spelled out here rather than imported from `tables.py`, so this migration stays what it was when the
schema moves on. `DateTime(timezone=True)` is timestamptz on PostgreSQL; on SQLite the store writes UTC text.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | tuple[str, ...] | None = None
depends_on: str | tuple[str, ...] | None = None

_TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "flows",
        sa.Column("id", sa.String(), nullable=False),
        sa.Column("community_id", sa.String(), nullable=False),
        sa.Column("first_seen_at", _TIME, nullable=False),
        sa.Column("last_seen_at", _TIME, nullable=False),
        sa.Column("src_ip", sa.String(), nullable=False),
        sa.Column("src_port", sa.Integer(), nullable=False),
        sa.Column("dst_ip", sa.String(), nullable=False),
        sa.Column("dst_port", sa.Integer(), nullable=False),
        sa.Column("protocol", sa.Integer(), nullable=False),
        sa.Column("src_vmn", sa.String(), nullable=True),
        sa.Column("dst_vmn", sa.String(), nullable=True),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_flows"),
    )
    for column in ("community_id", "first_seen_at", "src_vmn", "dst_vmn"):
        op.create_index(f"ix_flows_{column}", "flows", [column])

    op.create_table(
        "findings",
        sa.Column("id", sa.String(), nullable=False),
        sa.Column("kind", sa.String(), nullable=False),
        sa.Column("severity", sa.String(), nullable=False),
        sa.Column("detector", sa.String(), nullable=False),
        sa.Column("observed_at", _TIME, nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_findings"),
    )
    op.create_index("ix_findings_observed_at", "findings", ["observed_at"])

    op.create_table(
        "proposals",
        sa.Column("id", sa.String(), nullable=False),
        sa.Column("kind", sa.String(), nullable=False),
        sa.Column("state", sa.String(), nullable=False),
        sa.Column("recommender", sa.String(), nullable=False),
        sa.Column("created_at", _TIME, nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_proposals"),
    )
    op.create_index("ix_proposals_state", "proposals", ["state"])

    op.create_table(
        "decisions",
        sa.Column("seq", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("id", sa.String(), nullable=False),
        sa.Column("proposal_id", sa.String(), nullable=False),
        sa.Column("from_state", sa.String(), nullable=False),
        sa.Column("to_state", sa.String(), nullable=False),
        sa.Column("actor", sa.String(), nullable=False),
        sa.Column("decided_at", _TIME, nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("before", sa.JSON(), nullable=True),
        sa.Column("after", sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint("seq", name="pk_decisions"),
        sa.UniqueConstraint("id", name="uq_decisions_id"),
        sa.ForeignKeyConstraint(["proposal_id"], ["proposals.id"], name="fk_decisions_proposal_id_proposals"),
    )
    op.create_index("ix_decisions_proposal_id", "decisions", ["proposal_id"])

    op.create_table(
        "tmr_versions",
        sa.Column("version", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("created_at", _TIME, nullable=False),
        sa.Column("author", sa.String(), nullable=False),
        sa.Column("comment", sa.Text(), nullable=False),
        sa.Column("document", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("version", name="pk_tmr_versions"),
    )


def downgrade() -> None:
    op.drop_table("tmr_versions")
    op.drop_index("ix_decisions_proposal_id", table_name="decisions")
    op.drop_table("decisions")
    op.drop_index("ix_proposals_state", table_name="proposals")
    op.drop_table("proposals")
    op.drop_index("ix_findings_observed_at", table_name="findings")
    op.drop_table("findings")
    for column in ("community_id", "first_seen_at", "src_vmn", "dst_vmn"):
        op.drop_index(f"ix_flows_{column}", table_name="flows")
    op.drop_table("flows")
