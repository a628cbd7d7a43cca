"""The DPI fields threat intel matches on, as plain columns of `flows`.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25

A retro-hunt scans millions of archived flows for listed addresses and names; reading five JSON fields per row
cost ~10 us a row on SQLite (one JSON parse of the whole flow), the plain columns a fraction of it. Existing rows
are filled from their JSON form. Types are spelled out here rather than imported from `tables.py`.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | tuple[str, ...] | None = None
depends_on: str | tuple[str, ...] | None = None

KEY_FIELDS = ("dns_query", "sni", "http_host", "client_fingerprint", "server_fingerprint")


def upgrade() -> None:
    with op.batch_alter_table("flows") as batch:
        for name in KEY_FIELDS:
            batch.add_column(sa.Column(name, sa.String(), nullable=False, server_default=""))
    postgres = op.get_bind().dialect.name == "postgresql"
    for name in KEY_FIELDS:
        value = f"coalesce(data->>'{name}', '')" if postgres else f"coalesce(json_extract(data, '$.{name}'), '')"
        op.execute(f"UPDATE flows SET {name} = {value}")  # noqa: S608 - fixed names only


def downgrade() -> None:
    with op.batch_alter_table("flows") as batch:
        for name in reversed(KEY_FIELDS):
            batch.drop_column(name)
