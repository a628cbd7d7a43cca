"""`LeastPrivilegeRecommender`: the narrow allows that cover a VMN's observed legitimate traffic."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime

from vmshadow.domain.finding import Finding
from vmshadow.domain.flow import Flow
from vmshadow.domain.ids import stable_id
from vmshadow.domain.net import PortRange, Protocol, format_ports, normalize_ports
from vmshadow.domain.proposal import Evidence, Proposal, ProposalKind, ProposalState
from vmshadow.domain.tmr import TMR, Action, Endpoint, EndpointKind, Origin, TMRSet
from vmshadow.domain.vmn import VMNMap
from vmshadow.refinement.conflicts import conflicts_of
from vmshadow.refinement.guardrails import GuardContext
from vmshadow.refinement.impact import Replay
from vmshadow.refinement.merge import MAX_EVIDENCE_FLOWS, merge_proposals
from vmshadow.refinement.recommender import Input, RecommendContext, Recommender, as_alert, register

DEFAULT = "default"  # how evidence names the default action as the deciding rule


@dataclass(frozen=True, slots=True)
class LeastPrivilegeSettings:
    min_flows: int = 3  # legitimate flows to one destination and port before an allow covers it
    max_port_ranges: int = 8  # more (after merging adjacent ports): the allow covers every port of the protocol
    min_trust: float = 0.2  # a recommender trusted less than this only raises alerts

    def __post_init__(self) -> None:
        if self.min_flows < 1:
            raise ValueError(f"min_flows must be at least 1, got {self.min_flows}")


def is_broad(tmr: TMR) -> bool:
    """An allow that names no source or no destination, or leaves every port open (protocol `any`, or tcp/udp
    without ports): a VMN under it may send more than it needs."""
    open_ports = tmr.protocol is Protocol.ANY or (tmr.protocol.has_ports and not tmr.ports)
    return tmr.src.kind is EndpointKind.ANY or tmr.dst.kind is EndpointKind.ANY or open_ports


@dataclass(slots=True)
class _Allow:
    """One narrow allow being built: what it covers and the flows that show it is used."""

    src: Endpoint
    dst: Endpoint
    protocol: Protocol
    ports: tuple[PortRange, ...]
    flows: list[Flow] = field(default_factory=list)
    deciders: set[str] = field(default_factory=set)  # TMR ids (or DEFAULT) deciding those flows now


def _endpoint(tmrset: TMRSet, vmn_map: VMNMap, vmn: str | None, flow: Flow, src: bool) -> Endpoint:
    address = flow.src_ip if src else flow.dst_ip
    name = vmn if vmn is not None and tmrset.vmn(vmn) is not None else vmn_map.identify(None, address)
    return Endpoint.vmn(name) if name is not None else Endpoint.network(address)


def fitting_group(tmrset: TMRSet, endpoints: Iterable[Endpoint]) -> str | None:
    """The first group (by name) whose members are exactly the `endpoints` seen: its VMNs are the VMN endpoints,
    every host endpoint lies in one of its networks, and each of its networks holds a host seen. A group that would
    also admit VMNs or networks nobody used is not least privilege."""
    seen = list(endpoints)
    vmns = {e.value for e in seen if e.kind is EndpointKind.VMN}
    hosts = [e.as_network.network_address for e in seen if e.kind is EndpointKind.NETWORK]
    for group in sorted(tmrset.groups, key=lambda g: g.name):
        if set(group.vmns) != vmns:
            continue
        if all(any(h in n for n in group.networks) for h in hosts) and all(
            any(h in n for h in hosts) for n in group.networks
        ):
            return group.name
    return None


def _group_sides(tmrset: TMRSet, allows: list[_Allow], src_side: bool) -> list[_Allow]:
    """Allows that differ only in one side merged into one naming a group, where a group fits that side."""
    buckets: dict[tuple[object, ...], list[_Allow]] = {}
    for a in allows:
        key = (a.dst if src_side else a.src, a.protocol, a.ports)
        buckets.setdefault(key, []).append(a)
    merged: list[_Allow] = []
    for bucket in buckets.values():
        group = fitting_group(tmrset, [a.src if src_side else a.dst for a in bucket])
        if group is None:
            merged.extend(bucket)
            continue
        first = bucket[0]
        one = _Allow(
            Endpoint.group(group) if src_side else first.src,
            first.dst if src_side else Endpoint.group(group),
            first.protocol,
            first.ports,
        )
        for a in bucket:
            one.flows.extend(a.flows)
            one.deciders |= a.deciders
        merged.append(one)
    return merged


@register
class LeastPrivilegeRecommender(Recommender):
    """Proposes `add_allow` for least privilege: for each VMN whose recorded legitimate flows are decided by a
    broad allow (see `is_broad`) or by a default action (allow or deny), the narrow allows that cover them.

    Legitimate flows are the recorded flows of the impact window that no finding cites and that lie outside every
    finding's episode (the guard-rails' *benign* flows). One allow per source VMN, destination (a VMN, else the
    host address) and protocol, listing the ports seen at least `min_flows` times (every port when more than
    `max_port_ranges` ranges). Group-aware: allows that differ only in destination (then in source) become one
    naming an existing group whose members are exactly those seen (`fitting_group`). Each allow goes just ahead of
    the broad allow it narrows, or after every TMR when only the default decided its flows. Score grows with the
    flows seen (n / (n + min_flows)); evidence is the flows (no findings). Applying the allows changes nothing under
    a broad allow (impact 0) and lets the flows through under a default deny; the broad allow can then be narrowed.
    Low trust gives alerts; the guard-rails apply. It reads the whole window whatever the batch holds, so it runs
    on a schedule rather than on every batch of findings (`per_batch = False`).
    """

    name = "refinement.least_privilege"
    version = "1.0"
    needs = frozenset({Input.FLOWS, Input.VMNS})
    kinds = frozenset({ProposalKind.ADD_ALLOW, ProposalKind.ALERT})
    per_batch = False  # it reads the whole window, not the batch: ~9 s for 20,000 flows and 100 allows

    def __init__(self, settings: LeastPrivilegeSettings | None = None) -> None:
        self.settings = settings or LeastPrivilegeSettings()

    def propose(self, findings: Sequence[Finding], tmrset: TMRSet, context: RecommendContext) -> list[Proposal]:
        if not context.flows or not tmrset.vmns:
            return []
        guard = GuardContext(tmrset, context.now, context.flows, findings, context.recent_proposals)
        replay = Replay(tmrset, context.flows, context.now, context.impact_window)
        allows = self._observed(tmrset, guard, replay)
        allows = _group_sides(tmrset, _group_sides(tmrset, allows, src_side=False), src_side=True)
        proposals = merge_proposals([self._one(a, tmrset, context, replay) for a in allows])
        # an added allow never newly blocks: the blast radius has nothing to count, so the guard-rails (never-block
        # judges denies, the rate cap counts proposals) need no flows; that saves a replay per proposal
        return merge_proposals(context.guard_rails.apply(proposals, replace(guard, flows=())))

    def _observed(self, tmrset: TMRSet, guard: GuardContext, replay: Replay) -> list[_Allow]:
        """Per (source VMN, destination, protocol): the legitimate flows of the window under a broad allow or a
        default (the replay's verdicts, computed once and reused for the impact)."""
        by_tmr = {t.id: t for t in tmrset.tmrs}
        vmn_map = tmrset.vmn_map  # built on each access: once here
        seen: dict[tuple[Endpoint, Endpoint, Protocol], dict[int, list[tuple[Flow, str]]]] = {}
        for i, flow in enumerate(replay.flows):
            protocol = Protocol.from_number(flow.protocol)
            src = _endpoint(tmrset, vmn_map, flow.src_vmn, flow, src=True)
            if protocol is None or src.kind is not EndpointKind.VMN or not guard.is_benign(flow):
                continue
            verdict = replay.verdict(i)
            if verdict.tmr_id is not None and (verdict.action is Action.DENY or not is_broad(by_tmr[verdict.tmr_id])):
                continue  # an administrator's deny stands; a narrow allow is least privilege already
            port = flow.dst_port if protocol.has_ports else -1
            key = (src, _endpoint(tmrset, vmn_map, flow.dst_vmn, flow, src=False), protocol)
            seen.setdefault(key, {}).setdefault(port, []).append((flow, verdict.tmr_id or DEFAULT))
        allows = []
        for (src, dst, protocol), by_port in seen.items():
            used = {p: f for p, f in by_port.items() if len(f) >= self.settings.min_flows}
            if not used:
                continue
            ports = normalize_ports([PortRange.single(p) for p in used if p >= 0])
            if len(ports) > self.settings.max_port_ranges:
                ports = ()
            allow = _Allow(src, dst, protocol, ports)
            for pairs in used.values():
                allow.flows.extend(f for f, _ in pairs)
                allow.deciders.update(d for _, d in pairs)
            allows.append(allow)
        return allows

    def _rule(self, allow: _Allow, tmrset: TMRSet) -> TMR:
        broad = [t.priority for t in tmrset.tmrs if t.id in allow.deciders]
        # just ahead of the broad allow it narrows; after every TMR when only the default decided (nothing else moves)
        last = max((t.priority for t in tmrset.tmrs), default=999) + 1
        priority = min(broad) - 1 if broad else last
        key = ("allow", allow.src, allow.dst, allow.protocol, allow.ports)
        return TMR(
            id=stable_id("tmr", *key),
            priority=priority,
            src=allow.src,
            dst=allow.dst,
            protocol=allow.protocol,
            ports=allow.ports,
            action=Action.ALLOW,
            origin=Origin.PROPOSAL,
            comment=f"least privilege for {allow.src}: {len(allow.flows)} legitimate flows"[:200],
        )

    def _one(self, allow: _Allow, tmrset: TMRSet, context: RecommendContext, replay: Replay) -> Proposal:
        rule = self._rule(allow, tmrset)
        flows = sorted(allow.flows, key=_flow_order)
        n = len(flows)
        deciders = ", ".join(sorted(allow.deciders))
        proposal = Proposal(
            id=stable_id("prop", ProposalKind.ADD_ALLOW, rule.id),
            kind=ProposalKind.ADD_ALLOW,
            state=ProposalState.PROPOSED,
            recommender=self.name,
            recommender_version=self.version,
            score=n / (n + self.settings.min_flows),
            trust=context.trust,
            created_at=context.now,
            summary=(
                f"least privilege for {allow.src}: {rule.describe()} covers {n} legitimate flows "
                f"(ports {format_ports(allow.ports)}) now decided by {deciders}"
            ),
            rule=rule,
            evidence=Evidence(
                community_ids=tuple(dict.fromkeys(f.community_id for f in flows))[:MAX_EVIDENCE_FLOWS],
                measured={"flows": n, "decided_by": deciders},
            ),
            impact=replay.impact(rule),
            conflicts=tuple(c.tag for c in conflicts_of(rule, tmrset, context.now)),
        )
        if context.trust < self.settings.min_trust:
            return as_alert(proposal, f"recommender trust {context.trust:.2f} is below {self.settings.min_trust}")
        return proposal


def _flow_order(flow: Flow) -> tuple[datetime, str]:
    return flow.first_seen_at, flow.community_id
