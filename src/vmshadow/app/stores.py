"""The one way composition roots open the store for a unit of work: opened, migrated, closed afterwards."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from vmshadow.adapters.sql import open_store
from vmshadow.domain.proposal import Proposal
from vmshadow.ports.store import Store
from vmshadow.refinement.pending import PENDING_STATES


@contextmanager
def opened(db_url: str) -> Iterator[Store]:
    store: Store = open_store(db_url)
    try:
        yield store
    finally:
        store.close()


def pending_proposals(store: Store) -> list[Proposal]:
    """The proposals waiting for review (they may still go into force): what new ones are checked against."""
    return [p for state in sorted(PENDING_STATES) for p in store.proposals(state=state)]
