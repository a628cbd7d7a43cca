"""Indexes for the recent records recommenders read: proposals by creation time, outcomes by kind and time.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26

`with_records` reads the proposals of the last week (repeat offenders' escalation, the rate cap) and the
false-positive reports of the last week; without these indexes both were whole-table reads.
"""

from __future__ import annotations

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | tuple[str, ...] | None = None
depends_on: str | tuple[str, ...] | None = None


def upgrade() -> None:
    op.create_index("ix_proposals_created_at", "proposals", ["created_at"])
    op.create_index("ix_outcomes_kind_observed_at", "outcomes", ["kind", "observed_at"])


def downgrade() -> None:
    op.drop_index("ix_outcomes_kind_observed_at", table_name="outcomes")
    op.drop_index("ix_proposals_created_at", table_name="proposals")
