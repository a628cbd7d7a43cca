"""The store: where flows, findings, proposals, decisions, TMR versions, outcomes and trust history are kept.

One schema for SQLite and PostgreSQL. Writes are idempotent by id (a redelivered message stores nothing twice);
`save_batch` is one transaction, so an analysis is stored whole or not at all.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from vmshadow.domain.decision import Decision, TMRVersion
from vmshadow.domain.finding import Finding
from vmshadow.domain.flow import Flow
from vmshadow.domain.indicator import Indicator
from vmshadow.domain.outcome import Outcome, OutcomeKind, TrustSnapshot
from vmshadow.domain.proposal import Proposal, ProposalState

FlowKeys = tuple[str, str, str, str, str, str, str, str]
"""What threat intel matches a flow on, read without decoding the flow: (id, src_ip, dst_ip, dns_query, sni,
http_host, client_fingerprint, server_fingerprint); DPI fields the flow lacks are empty strings."""


@dataclass(frozen=True, slots=True)
class KeyFilter:
    """A coarse test a flow's keys must pass to possibly touch a listed value, for a store to apply while it
    scans (in SQL, at C speed), so the caller's exact test reads only the flows that pass. A superset: a store
    may let more through, never fewer. Addresses are compared as the store writes them (`str(address)`, the
    canonical text); anything it cannot judge from the text (zones, dotted IPv6, IPv4-mapped) passes.

    `hosts`: listed addresses. `v4_prefixes[k]`: the first k+1 octets of listed IPv4 networks, dotted with a
    trailing dot ("198.", "198.51.", "198.51.100."). `v6_prefixes[k]`: the first k+1 groups of listed IPv6
    networks, written out in full (no "::", no leading zeros) with a trailing colon ("2001:db8:0:"). `any_v4` /
    `any_v6`: a network too wide for a prefix is listed, so every address of that family passes.
    `name_suffixes`: the last two labels of listed domains (a name under a listed domain ends with them).
    `fingerprints`: listed JA3/JA4 values, lower-case.
    """

    hosts: frozenset[str] = frozenset()
    v4_prefixes: tuple[frozenset[str], frozenset[str], frozenset[str]] = (frozenset(), frozenset(), frozenset())
    v6_prefixes: tuple[frozenset[str], frozenset[str], frozenset[str], frozenset[str]] = (
        frozenset(),
        frozenset(),
        frozenset(),
        frozenset(),
    )
    any_v4: bool = False
    any_v6: bool = False
    name_suffixes: frozenset[str] = frozenset()
    fingerprints: frozenset[str] = frozenset()


class Store(Protocol):
    def save_batch(
        self,
        flows: Sequence[Flow] = (),
        findings: Sequence[Finding] = (),
        proposals: Sequence[Proposal] = (),
    ) -> None:
        """Store all of it in one transaction. Existing flows/findings are kept; proposals are upserted."""
        ...

    def flows(
        self,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        vmn: str | None = None,
        limit: int | None = None,
    ) -> list[Flow]:
        """Flows whose first packet is in [since, until), oldest first; `vmn` matches either side."""
        ...

    def count_flows(self, *, since: datetime | None = None, until: datetime | None = None) -> int:
        """Flows whose first packet is in [since, until)."""
        ...

    def flow_keys(
        self,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        candidates: KeyFilter | None = None,
    ) -> Iterator[FlowKeys]:
        """The intel-matchable fields of the flows whose first packet is in [since, until), streamed in no
        particular order (a retro-hunt over millions of archived flows decodes only those that match). With
        `candidates`, flows whose keys cannot pass it may be left out (a store that cannot filter yields all)."""
        ...

    def flows_by_id(self, ids: Sequence[str]) -> list[Flow]:
        """The stored flows with these ids (unknown ids are left out), oldest first."""
        ...

    def findings(self, *, since: datetime | None = None) -> list[Finding]: ...

    def finding_counts(self) -> dict[str, int]:
        """Findings stored per detector name."""
        ...

    def finding(self, finding_id: str) -> Finding | None: ...

    def proposal(self, proposal_id: str) -> Proposal | None: ...

    def proposals(self, *, state: ProposalState | None = None, since: datetime | None = None) -> list[Proposal]:
        """Oldest first; `since`: only those created after it (indexed: the recent ones stay cheap to read)."""
        ...

    def record_decision(self, decision: Decision, proposal: Proposal) -> None:
        """Append the decision and store the proposal's new state, in one transaction."""
        ...

    def decisions(self, proposal_id: str | None = None) -> list[Decision]:
        """Oldest first."""
        ...

    def decisions_after(self, seq: int, *, limit: int = 1000) -> list[tuple[int, Decision]]:
        """Decisions recorded after sequence number `seq` (0: from the first), oldest first, with their numbers."""
        ...

    def save_tmr_version(
        self, document: dict[str, Any], *, author: str, comment: str, created_at: datetime
    ) -> TMRVersion:
        """Store a TMRSet document as the next version number (1, 2, ...)."""
        ...

    def tmr_version(self, version: int) -> TMRVersion | None: ...

    def tmr_versions(self) -> list[TMRVersion]:
        """Oldest first."""
        ...

    def record_outcome(self, outcome: Outcome) -> bool:
        """Append an outcome about a stored proposal; False (and nothing changes) when its id is on record."""
        ...

    def outcomes(
        self,
        *,
        recommender: str | None = None,
        proposal_id: str | None = None,
        kind: OutcomeKind | None = None,
        since: datetime | None = None,
    ) -> list[Outcome]:
        """In recording order; `kind` and `since` (observed after it) narrow them (indexed together)."""
        ...

    def outcomes_after(self, seq: int, *, limit: int = 1000) -> list[tuple[int, Outcome]]:
        """Outcomes recorded after sequence number `seq` (0: from the first), in recording order, with numbers."""
        ...

    def record_trust(self, snapshot: TrustSnapshot) -> None:
        """Append a trust snapshot; one per recommender and moment (a second one for the same is ignored)."""
        ...

    def trust_history(self, recommender: str | None = None) -> list[TrustSnapshot]:
        """Oldest first."""
        ...

    def save_indicators(self, indicators: Sequence[Indicator], *, at: datetime) -> int:
        """Upsert by (type, value, source), all in one transaction; returns how many were stored."""
        ...

    def indicators(
        self, *, at: datetime | None = None, source: str | None = None, updated_since: datetime | None = None
    ) -> list[Indicator]:
        """Stored indicators; with `at`, only those valid then (not revoked, within valid_from/valid_until); with
        `updated_since`, only those stored or updated (re-sent, revoked) at or after it."""
        ...

    def expire_indicators(self, at: datetime) -> int:
        """Delete revoked indicators and those whose valid_until has passed; returns how many."""
        ...

    def close(self) -> None: ...
