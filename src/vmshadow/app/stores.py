"""The one way composition roots open the store for a unit of work: opened, migrated, closed afterwards."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from vmshadow.adapters.sql import open_store
from vmshadow.ports.store import Store


@contextmanager
def opened(db_url: str) -> Iterator[Store]:
    store: Store = open_store(db_url)
    try:
        yield store
    finally:
        store.close()
