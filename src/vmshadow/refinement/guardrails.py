"""Guard-rails: limits no proposal passes, whatever its evidence.

- **never-block**: networks no deny may match, as source or destination (the gateway, the DNS resolver, management
  networks). A deny overlaps a never-block network when its `any`, network, VMN addresses or group networks and
  VMN addresses share an address with it. Labels (MAC-identified VMNs) are not addresses and are not considered.
- **blast radius**: a proposal may newly block at most `max_blocked_share` (default 5 %) of any VMN's recent benign
  flows, unless `override_blast_radius` is set. A flow belongs to the VMNs it names (`src_vmn`, `dst_vmn`), else to
  the VMN the TMRSet maps its address to. *Benign* flows are the recorded flows no finding cites as evidence and
  that lie outside every finding's episode. A flow is in a finding's episode when it has the finding's source
  address and protocol and was first seen from the finding's `first_seen_at` on, either up to its `observed_at` or,
  later, towards one of the targets it names: detectors cite a bounded number of flows (a 1,000-port scan cites 50)
  and an attack goes on after its finding, but those flows are the attack, not benign traffic. Earlier flows
  between the same hosts stay benign: they are what a too-wide deny would break.
- **rate cap**: at most `max_proposals` rule proposals per recommender within `rate_window`, counting the
  recommender's proposals already made in that window (`GuardContext.recent`) and those earlier in this batch
  (strongest score first). Re-proposing an id already counted is free: it merges into the existing proposal.

A refused proposal becomes an `alert` that says why (`refuse`), keeping its evidence, impact and conflicts, and
the refused rule described in its summary. That holds for the rate cap too: dropping would hide that a finding
was turned down, while an alert changes no TMR, so it needs no cap of its own. Alerts are never refused.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum

from vmshadow.domain.finding import Finding, FindingKind
from vmshadow.domain.flow import Flow
from vmshadow.domain.ids import stable_id
from vmshadow.domain.net import IPNetwork
from vmshadow.domain.proposal import Proposal, ProposalKind
from vmshadow.domain.tmr import TMR, Action, Endpoint, EndpointKind, TMRSet
from vmshadow.domain.vmn import VMNMap


@dataclass(frozen=True, slots=True)
class NeverBlock:
    """A network no deny may match, and why (shown in refusals)."""

    network: IPNetwork
    label: str = ""

    @classmethod
    def of(cls, network: str, label: str = "") -> NeverBlock:
        return cls(ipaddress.ip_network(network, strict=False), label)

    def __str__(self) -> str:
        return f"{self.network} ({self.label})" if self.label else str(self.network)


class RefusalReason(StrEnum):
    NEVER_BLOCK = "never_block"
    BLAST_RADIUS = "blast_radius"
    RATE_CAP = "rate_cap"


@dataclass(frozen=True, slots=True)
class Refusal:
    reason: RefusalReason
    message: str

    def __str__(self) -> str:
        return f"{self.reason}: {self.message}"


@dataclass(frozen=True, slots=True)
class GuardContext:
    """What the guard-rails judge a proposal against. Build it once per batch: benign flows are computed once."""

    tmrset: TMRSet
    now: datetime
    flows: Sequence[Flow] = ()
    findings: Sequence[Finding] = ()
    recent: Sequence[Proposal] = ()  # proposals already made (any recommender), for the rate cap
    _benign_per_vmn: dict[str, int] = field(init=False, repr=False, compare=False)
    _benign_flows: frozenset[Flow] = field(init=False, repr=False, compare=False)
    _vmn_map: VMNMap = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_vmn_map", self.tmrset.vmn_map)
        cited = {c for f in self.findings for c in f.community_ids}
        episodes: dict[tuple[object, int], list[Finding]] = {}
        for f in self.findings:
            episodes.setdefault((f.src_ip, f.protocol), []).append(f)
        benign: set[Flow] = set()
        per_vmn: dict[str, int] = {}
        for flow in self.flows:
            if flow.community_id in cited or any(
                _in_episode(flow, f) for f in episodes.get((flow.src_ip, flow.protocol), ())
            ):
                continue
            benign.add(flow)
            for vmn in self.vmns_of(flow):
                per_vmn[vmn] = per_vmn.get(vmn, 0) + 1
        object.__setattr__(self, "_benign_per_vmn", per_vmn)
        object.__setattr__(self, "_benign_flows", frozenset(benign))

    def vmns_of(self, flow: Flow) -> set[str]:
        vmn_map = self._vmn_map
        names = {
            flow.src_vmn or vmn_map.identify(None, flow.src_ip),
            flow.dst_vmn or vmn_map.identify(None, flow.dst_ip),
        }
        return {n for n in names if n is not None}

    def is_benign(self, flow: Flow) -> bool:
        return flow in self._benign_flows

    def benign_flows(self, vmn: str) -> int:
        return self._benign_per_vmn.get(vmn, 0)


def _in_episode(flow: Flow, finding: Finding) -> bool:
    """`flow` (same source and protocol as `finding`) is part of the finding's episode: seen while the detector
    watched it, or later towards one of the targets the finding names (for an intel match, any contact with the
    listed destination)."""
    if finding.kind is FindingKind.INTEL_MATCH and flow.dst_ip in finding.dst_ips:
        return True  # a listed destination: every contact with it is the threat, earlier ones too
    if flow.first_seen_at < finding.first_seen_at:
        return False
    return flow.first_seen_at <= finding.observed_at or flow.dst_ip in finding.dst_ips


@dataclass(frozen=True, slots=True)
class GuardRails:
    """Guard-rail settings. The never-block list is empty by default (only the deployment knows its gateway,
    resolvers and management networks); the blast-radius and rate caps apply by default."""

    never_block: tuple[NeverBlock, ...] = ()
    max_blocked_share: float = 0.05
    override_blast_radius: bool = False
    max_proposals: int = 50
    rate_window: timedelta = timedelta(hours=1)

    def __post_init__(self) -> None:
        if not 0.0 <= self.max_blocked_share <= 1.0:
            raise ValueError(f"max_blocked_share must be in [0, 1], got {self.max_blocked_share}")
        if self.max_proposals < 0:
            raise ValueError(f"max_proposals must be >= 0, got {self.max_proposals}")

    def check(self, proposal: Proposal, context: GuardContext, *, counted: Iterable[Proposal] = ()) -> list[Refusal]:
        """Every reason to refuse `proposal`; empty when it may go to review. `counted`: proposals of this batch
        already let through, for the rate cap."""
        rule = proposal.rule
        if rule is None:
            return []
        refusals = [*self._never_block(rule, context.tmrset), *self._blast_radius(rule, context)]
        refusals.extend(self._rate_cap(proposal, context, counted))
        return refusals

    def apply(self, proposals: Sequence[Proposal], context: GuardContext) -> list[Proposal]:
        """`proposals` with every refused one replaced by its alert, in the same order. The rate cap lets the
        strongest (highest score, then id) through first."""
        passed: list[Proposal] = []
        outcome: dict[int, Proposal] = {}
        for i in sorted(range(len(proposals)), key=lambda i: (-proposals[i].score, proposals[i].id)):
            p = proposals[i]
            refusals = self.check(p, context, counted=passed)
            if refusals:
                outcome[i] = refuse(p, refusals)
            else:
                outcome[i] = p
                if p.rule is not None:
                    passed.append(p)
        return [outcome[i] for i in range(len(proposals))]

    def _never_block(self, rule: TMR, tmrset: TMRSet) -> list[Refusal]:
        if rule.action is not Action.DENY:
            return []
        refusals = []
        for entry in self.never_block:
            sides = [name for name, side in (("source", rule.src), ("destination", rule.dst))
                     if _endpoint_touches(tmrset, side, entry.network)]  # fmt: skip
            if sides:
                refusals.append(
                    Refusal(
                        RefusalReason.NEVER_BLOCK,
                        f"it would deny traffic with a {' or '.join(sides)} in never-block network {entry}",
                    )
                )
        return refusals

    def _blast_radius(self, rule: TMR, context: GuardContext) -> list[Refusal]:
        if self.override_blast_radius or not context.flows:
            return []
        current = context.tmrset
        proposed = current.without(rule.id).with_tmr(rule)
        blocked: dict[str, int] = {}
        for flow in context.flows:
            if not context.is_benign(flow) or not proposed.matches(rule, flow):
                continue
            before = current.evaluate(flow, context.now).action
            if before is Action.DENY or proposed.evaluate(flow, context.now).action is not Action.DENY:
                continue
            for vmn in context.vmns_of(flow):
                blocked[vmn] = blocked.get(vmn, 0) + 1
        refusals = []
        for vmn, count in sorted(blocked.items()):
            total = context.benign_flows(vmn)
            if count > self.max_blocked_share * total:
                refusals.append(
                    Refusal(
                        RefusalReason.BLAST_RADIUS,
                        f"it would newly block {count} of {total} recent benign flows of VMN {vmn} "
                        f"({count / total:.0%}, cap {self.max_blocked_share:.0%}); an explicit override is needed",
                    )
                )
        return refusals

    def _rate_cap(self, proposal: Proposal, context: GuardContext, counted: Iterable[Proposal]) -> list[Refusal]:
        since = context.now - self.rate_window
        ids = {
            p.id
            for p in (*context.recent, *counted)
            if p.recommender == proposal.recommender and p.rule is not None and since < p.created_at <= context.now
        }
        if proposal.id in ids or len(ids) < self.max_proposals:
            return []
        return [
            Refusal(
                RefusalReason.RATE_CAP,
                f"{proposal.recommender} already made {len(ids)} rule proposals in the last {self.rate_window} "
                f"(cap {self.max_proposals})",
            )
        ]


def _endpoint_touches(tmrset: TMRSet, endpoint: Endpoint, network: IPNetwork) -> bool:
    if endpoint.kind is EndpointKind.ANY:
        return True
    if endpoint.kind is EndpointKind.NETWORK:
        return endpoint.as_network.overlaps(network)
    names: tuple[str, ...] = (endpoint.value,)
    nets: list[IPNetwork] = []
    if endpoint.kind is EndpointKind.GROUP:
        group = tmrset.group(endpoint.value)
        names = group.vmns if group is not None else ()
        nets.extend(group.networks if group is not None else ())
    vmns = [v for v in (tmrset.vmn(n) for n in names) if v is not None]
    return any(a in network for v in vmns for a in v.addresses) or any(n.overlaps(network) for n in nets)


def refuse(proposal: Proposal, refusals: Sequence[Refusal]) -> Proposal:
    """The alert a refused proposal becomes: same evidence, impact and conflicts; the reasons in its summary."""
    reasons = "; ".join(str(r) for r in refusals)
    return replace(
        proposal,
        id=stable_id("prop", ProposalKind.ALERT, "refused", proposal.id),
        kind=ProposalKind.ALERT,
        rule=None,
        summary=f"alert: refused by guard-rails ({reasons}): {proposal.summary}",
    )
