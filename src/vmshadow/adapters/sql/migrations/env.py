"""Alembic environment. Run programmatically by `vmshadow.adapters.sql.store.upgrade`, which passes its own
connection in `config.attributes["connection"]` (so SQLite gets the store's pragmas and PostgreSQL its search_path).
Without one it connects to `sqlalchemy.url`; offline mode (`--sql`) renders the DDL for that URL's dialect.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from vmshadow.adapters.sql.tables import metadata

config = context.config


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        # SQLite cannot ALTER most things; batch mode rebuilds the table instead.
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


def run_offline() -> None:
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    from vmshadow.adapters.sql.store import make_engine

    url = config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("alembic: no connection given and no sqlalchemy.url set")
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            _run(conn)
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
