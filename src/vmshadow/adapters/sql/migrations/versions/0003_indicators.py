"""Threat-intel indicators.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25

Types are spelled out here rather than imported from `tables.py`, so this migration stays what it was.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | tuple[str, ...] | None = None
depends_on: str | tuple[str, ...] | None = None

_TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "indicators",
        sa.Column("id", sa.String(), nullable=False),
        sa.Column("type", sa.String(), nullable=False),
        sa.Column("value", sa.String(), nullable=False),
        sa.Column("source", sa.String(), nullable=False),
        sa.Column("valid_until", _TIME, nullable=True),
        sa.Column("revoked", sa.Boolean(), nullable=False),
        sa.Column("updated_at", _TIME, nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_indicators"),
    )
    op.create_index("ix_indicators_value", "indicators", ["value"])
    op.create_index("ix_indicators_source", "indicators", ["source"])
    op.create_index("ix_indicators_valid_until", "indicators", ["valid_until"])


def downgrade() -> None:
    op.drop_index("ix_indicators_valid_until", table_name="indicators")
    op.drop_index("ix_indicators_source", table_name="indicators")
    op.drop_index("ix_indicators_value", table_name="indicators")
    op.drop_table("indicators")
