"""The store's schema, for both SQLite and PostgreSQL.

Each table keeps the columns queries filter and sort on, plus the object's JSON form from `domain.codec` (the one
spelling of every field). Decisions have no codec form, so they are stored as plain columns. Changing anything
here needs a new migration in `migrations/versions/`; a contract test fails when the two drift apart.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
)

# Deterministic constraint and index names, so migrations can name what they create and later drop.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_name)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING_CONVENTION)


def utc(value: datetime) -> datetime:
    """`value` in UTC; a naive time is refused because nobody can tell which zone it meant."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"naive datetime {value.isoformat()} given to the store; times must be timezone-aware")
    return value if value.tzinfo is UTC else value.astimezone(UTC)


class UtcDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC in and out: timestamptz on PostgreSQL, naive-UTC text on SQLite (which has no zones)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        value = utc(value)
        # SQLite's DATETIME text drops the offset anyway; make it explicit that the stored text is UTC.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


flows = Table(
    "flows",
    metadata,
    Column("id", String, primary_key=True),
    Column("community_id", String, nullable=False, index=True),
    Column("first_seen_at", UtcDateTime, nullable=False, index=True),
    Column("last_seen_at", UtcDateTime, nullable=False),
    Column("src_ip", String, nullable=False),
    Column("src_port", Integer, nullable=False),
    Column("dst_ip", String, nullable=False),
    Column("dst_port", Integer, nullable=False),
    Column("protocol", Integer, nullable=False),
    Column("src_vmn", String, nullable=True, index=True),
    Column("dst_vmn", String, nullable=True, index=True),
    Column("data", JSON, nullable=False),
    # what threat intel matches on, as columns so a retro-hunt reads them without decoding `data` (migration 0004)
    Column("dns_query", String, nullable=False, server_default=""),
    Column("sni", String, nullable=False, server_default=""),
    Column("http_host", String, nullable=False, server_default=""),
    Column("client_fingerprint", String, nullable=False, server_default=""),
    Column("server_fingerprint", String, nullable=False, server_default=""),
)

findings = Table(
    "findings",
    metadata,
    Column("id", String, primary_key=True),
    Column("kind", String, nullable=False),
    Column("severity", String, nullable=False),
    Column("detector", String, nullable=False),
    Column("observed_at", UtcDateTime, nullable=False, index=True),
    Column("data", JSON, nullable=False),
)

proposals = Table(
    "proposals",
    metadata,
    Column("id", String, primary_key=True),
    Column("kind", String, nullable=False),
    Column("state", String, nullable=False, index=True),
    Column("recommender", String, nullable=False),
    Column("created_at", UtcDateTime, nullable=False, index=True),  # recent proposals: escalation, rate cap
    Column("data", JSON, nullable=False),
)

# Append-only: the store never updates or deletes a decision. `seq` gives the order they were recorded in.
decisions = Table(
    "decisions",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("id", String, nullable=False, unique=True),
    Column("proposal_id", String, ForeignKey("proposals.id"), nullable=False, index=True),
    Column("from_state", String, nullable=False),
    Column("to_state", String, nullable=False),
    Column("actor", String, nullable=False),
    Column("decided_at", UtcDateTime, nullable=False),
    Column("reason", Text, nullable=False),
    Column("before", JSON(none_as_null=True), nullable=True),
    Column("after", JSON(none_as_null=True), nullable=True),
)

tmr_versions = Table(
    "tmr_versions",
    metadata,
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("author", String, nullable=False),
    Column("comment", Text, nullable=False),
    Column("document", JSON, nullable=False),
)

# Append-only, like decisions: what happened after a proposal was applied, the evidence trust is computed from.
outcomes = Table(
    "outcomes",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("id", String, nullable=False, unique=True),
    Column("proposal_id", String, ForeignKey("proposals.id"), nullable=False, index=True),
    Column("recommender", String, nullable=False, index=True),
    Column("kind", String, nullable=False),
    Column("observed_at", UtcDateTime, nullable=False),
    Column("value", Float, nullable=False),
    Column("weight", Float, nullable=False),
    Column("actor", String, nullable=False),
    Column("detail", Text, nullable=False),
    Index("ix_outcomes_kind_observed_at", "kind", "observed_at"),  # recent reports of one kind
)

# Every trust snapshot computed, so the history can be shown; one per recommender and moment.
trust_history = Table(
    "trust_history",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("recommender", String, nullable=False, index=True),
    Column("at", UtcDateTime, nullable=False),
    Column("trust", Float, nullable=False),
    Column("alpha", Float, nullable=False),
    Column("beta", Float, nullable=False),
    Column("outcomes", Integer, nullable=False),
    UniqueConstraint("recommender", "at", name="uq_trust_history_recommender_at"),
)

# Threat-intel indicators, one row per (type, value, source); `valid_until` and `revoked` drive expiry.
indicators = Table(
    "indicators",
    metadata,
    Column("id", String, primary_key=True),
    Column("type", String, nullable=False),
    Column("value", String, nullable=False, index=True),
    Column("source", String, nullable=False, index=True),
    Column("valid_until", UtcDateTime, nullable=True, index=True),
    Column("revoked", Boolean, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    Column("data", JSON, nullable=False),
)
