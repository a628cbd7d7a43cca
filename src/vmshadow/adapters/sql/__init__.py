"""The SQL store: SQLite (embedded mode) and PostgreSQL (distributed mode), one schema, migrated with Alembic."""

from vmshadow.adapters.sql.store import SqlStore, open_store, upgrade

__all__ = ["SqlStore", "open_store", "upgrade"]
