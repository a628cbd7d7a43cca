"""Fixtures that run every contract test on SQLite (a temporary file) and on PostgreSQL.

PostgreSQL: the server at $VMSHADOW_TEST_POSTGRES_URL (default below). The session works in a schema of its own,
``vms_test_<random>``, emptied before each test and dropped at the end, whether the tests passed or not. An
unreachable server fails the postgres tests: CI has one, so a skip would only hide a broken setup.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from vmshadow.adapters.sql import SqlStore, open_store

POSTGRES_URL = os.environ.get("VMSHADOW_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")

FreshUrl = Callable[[], str]


class PostgresSchema:
    """One schema for the whole session; `fresh()` empties it and returns a URL whose search_path is it."""

    def __init__(self, admin: Engine, name: str) -> None:
        self.admin = admin
        self.name = name

    def fresh(self) -> str:
        with self.admin.begin() as conn:
            conn.exec_driver_sql(f"DROP SCHEMA IF EXISTS {self.name} CASCADE")
            conn.exec_driver_sql(f"CREATE SCHEMA {self.name}")
        url = make_url(POSTGRES_URL).update_query_dict({"options": f"-csearch_path={self.name}"})
        return url.render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def postgres_schema() -> Iterator[PostgresSchema]:
    admin = create_engine(POSTGRES_URL)
    problem = None
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
    except OperationalError as e:
        problem = str(e.orig)
    if problem is not None:  # failed outside the except block, so the report shows this message, not a traceback
        admin.dispose()
        pytest.fail(
            f"PostgreSQL is not reachable at {make_url(POSTGRES_URL).render_as_string()}: {problem}\n"
            "The store contract runs on PostgreSQL too. Start the server, set VMSHADOW_TEST_POSTGRES_URL, "
            'or deselect these tests with -m "not postgres".',
            pytrace=False,
        )
    schema = PostgresSchema(admin, f"vms_test_{secrets.token_hex(4)}")
    try:
        yield schema
    finally:
        with admin.begin() as conn:
            conn.exec_driver_sql(f"DROP SCHEMA IF EXISTS {schema.name} CASCADE")
        admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def fresh_url(request: pytest.FixtureRequest, tmp_path: Path) -> FreshUrl:
    """Makes an empty database and returns its URL; every call starts from nothing again."""
    if request.param == "sqlite":
        counter = iter(range(1_000_000))
        return lambda: f"sqlite:///{tmp_path / f'store-{next(counter)}.db'}"
    schema: PostgresSchema = request.getfixturevalue("postgres_schema")
    return schema.fresh


@pytest.fixture
def store(fresh_url: FreshUrl) -> Iterator[SqlStore]:
    s = open_store(fresh_url())
    try:
        yield s
    finally:
        s.close()
