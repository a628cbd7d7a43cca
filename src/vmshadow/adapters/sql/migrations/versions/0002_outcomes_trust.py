"""Feedback: outcomes (append-only) and trust_history.

Revision ID: 0002
Revises: 0001
Create Date: 2025-11-25

Types are spelled out here rather than imported from `tables.py`, so this migration stays what it was when the
schema moves on.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | tuple[str, ...] | None = None
depends_on: str | tuple[str, ...] | None = None

_TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "outcomes",
        sa.Column("seq", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("id", sa.String(), nullable=False),
        sa.Column("proposal_id", sa.String(), nullable=False),
        sa.Column("recommender", sa.String(), nullable=False),
        sa.Column("kind", sa.String(), nullable=False),
        sa.Column("observed_at", _TIME, nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
        sa.Column("weight", sa.Float(), nullable=False),
        sa.Column("actor", sa.String(), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("seq", name="pk_outcomes"),
        sa.UniqueConstraint("id", name="uq_outcomes_id"),
        sa.ForeignKeyConstraint(["proposal_id"], ["proposals.id"], name="fk_outcomes_proposal_id_proposals"),
    )
    op.create_index("ix_outcomes_proposal_id", "outcomes", ["proposal_id"])
    op.create_index("ix_outcomes_recommender", "outcomes", ["recommender"])

    op.create_table(
        "trust_history",
        sa.Column("seq", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("recommender", sa.String(), nullable=False),
        sa.Column("at", _TIME, nullable=False),
        sa.Column("trust", sa.Float(), nullable=False),
        sa.Column("alpha", sa.Float(), nullable=False),
        sa.Column("beta", sa.Float(), nullable=False),
        sa.Column("outcomes", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("seq", name="pk_trust_history"),
        sa.UniqueConstraint("recommender", "at", name="uq_trust_history_recommender_at"),
    )
    op.create_index("ix_trust_history_recommender", "trust_history", ["recommender"])


def downgrade() -> None:
    op.drop_index("ix_trust_history_recommender", table_name="trust_history")
    op.drop_table("trust_history")
    op.drop_index("ix_outcomes_recommender", table_name="outcomes")
    op.drop_index("ix_outcomes_proposal_id", table_name="outcomes")
    op.drop_table("outcomes")
