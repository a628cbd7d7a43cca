"""`ScopedDenyRecommender`: a deny TMR scoped to the offender and its targets, or an alert when evidence is weak."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from functools import partial

from vmshadow.domain.finding import SHARED_RESOLVERS, Finding, FindingKind
from vmshadow.domain.flow import Flow
from vmshadow.domain.ids import stable_id
from vmshadow.domain.net import IPAddress, PortRange, Protocol, normalize_ports
from vmshadow.domain.proposal import Evidence, Proposal, ProposalKind, ProposalState
from vmshadow.domain.tmr import TMR, Action, Endpoint, Origin, TMRSet
from vmshadow.refinement.conflicts import conflicts_of
from vmshadow.refinement.escalation import EscalationLadder, strikes
from vmshadow.refinement.guardrails import GuardContext
from vmshadow.refinement.impact import replay_impact
from vmshadow.refinement.merge import MAX_EVIDENCE_FLOWS, merge_proposals
from vmshadow.refinement.recommender import RecommendContext, Recommender, register

MAX_LISTED_PORTS = 8  # above this a scan's deny covers every port of the protocol
WIDEST_TARGET_PREFIX = 24  # horizontal targets spread wider than a /24 (v4) make the deny cover any destination
NAME_KINDS = frozenset({FindingKind.DNS_TUNNEL, FindingKind.DGA})  # judged by query names; targets are DNS servers


# Behaviour that stops (a scan, a password-guessing run) is denied for a while, longer for repeat offenders; what
# says a host is compromised (beaconing, exfiltration, tunnelling, lateral movement) is denied until someone acts.
TEMPORARY_KINDS = frozenset({FindingKind.PORT_SCAN, FindingKind.BRUTE_FORCE})
DURATION_KEY = "deny_duration_s"  # evidence.measured: how long the deny lasts, counted from its apply
STRIKES_KEY = "deny_strikes"  # evidence.measured: the offender's earlier temporary denies that went into force


@dataclass(frozen=True, slots=True)
class ScopedDenySettings:
    deny_min_score: float = 0.6  # below: an alert, not a rule
    min_trust: float = 0.2  # a recommender trusted less than this only raises alerts
    temporary_kinds: frozenset[FindingKind] = TEMPORARY_KINDS
    ladder: EscalationLadder = EscalationLadder()  # noqa: RUF009 - frozen, safely shared


def _endpoint_for(address: IPAddress, vmn: str | None, tmrset: TMRSet) -> Endpoint:
    """The VMN when the TMRSet knows it (a TMR may only name known VMNs), else the address."""
    name = vmn if vmn is not None and tmrset.vmn(vmn) is not None else tmrset.vmn_map.identify(None, address)
    return Endpoint.vmn(name) if name else Endpoint.network(address)


def _targets(finding: Finding, tmrset: TMRSet) -> Endpoint:
    if len(finding.dst_ips) == 1:
        return _endpoint_for(finding.dst_ips[0], None, tmrset)
    if not finding.dst_ips:
        return Endpoint.any()
    first = finding.dst_ips[0]
    prefix = WIDEST_TARGET_PREFIX if first.version == 4 else 64
    net = ipaddress.ip_network(f"{first}/{prefix}", strict=False)
    if all(a in net for a in finding.dst_ips):
        return Endpoint.network(net)
    return Endpoint.any()


def _ports(finding: Finding) -> tuple[PortRange, ...]:
    if finding.protocol not in (6, 17) or len(finding.dst_ports) > MAX_LISTED_PORTS:
        return ()
    return normalize_ports([PortRange.single(p) for p in finding.dst_ports])


def deny_rule(finding: Finding, tmrset: TMRSet) -> TMR | None:
    """The narrowest deny that stops what the finding saw, or None when no TMR can express it."""
    offender = _endpoint_for(finding.src_ip, finding.src_vmn, tmrset)
    protocol = Protocol.from_number(finding.protocol) or Protocol.ANY
    ports: tuple[PortRange, ...] = ()
    expires_at: datetime | None = None
    if finding.kind is FindingKind.INTEL_MATCH:
        matched = str(finding.measured.get("matched_field", ""))
        if not finding.dst_ips or matched == "dns_query":
            return None  # a name seen in DNS: the resolver is not the offender, TMRs cannot match names
        listed = Endpoint.network(finding.dst_ips[0])
        src, dst = (listed, offender) if matched == "src_ip" else (offender, listed)
        protocol = Protocol.ANY
        expires_at = indicator_expiry(finding)
    else:
        if finding.kind in NAME_KINDS:
            finding = replace(finding, dst_ips=_dns_servers(finding))
            if not finding.dst_ips:
                return None  # only shared resolvers: see `no_rule_reason`
        src, dst = offender, _targets(finding, tmrset)
        if protocol.has_ports:
            ports = _ports(finding)
    priority = min((t.priority for t in tmrset.tmrs), default=1000) - 1
    key = ("deny", src, dst, protocol, ports)
    return TMR(
        id=stable_id("tmr", *key),
        priority=priority,
        src=src,
        dst=dst,
        protocol=protocol,
        ports=ports,
        action=Action.DENY,
        origin=Origin.PROPOSAL,
        comment=f"{finding.kind}: {finding.summary}"[:200],
        expires_at=expires_at,
    )


def _shared_resolvers(finding: Finding) -> set[str]:
    return {a for a in str(finding.measured.get(SHARED_RESOLVERS, "")).split(",") if a}


def _dns_servers(finding: Finding) -> tuple[IPAddress, ...]:
    """The finding's DNS servers that are not shared resolvers: a tunnel's own endpoint can be denied, a resolver
    every lookup of the VMN goes through cannot without cutting them all."""
    shared = _shared_resolvers(finding)
    return tuple(a for a in finding.dst_ips if str(a) not in shared)


def no_rule_reason(finding: Finding) -> str:
    """Why `deny_rule` found no TMR for the finding, in words an administrator can act on."""
    shared = _shared_resolvers(finding)
    if finding.kind in NAME_KINDS and shared:
        names = finding.measured.get("parent") or finding.measured.get("examples") or "the domains"
        return (
            f"the queries go through the shared resolver {', '.join(sorted(shared))}, and a TMR cannot match query "
            f"names: block {names} at the resolver"
        )
    return "no TMR can express this finding"


def indicator_expiry(finding: Finding) -> datetime | None:
    """When the indicator behind an intel finding stops being valid: a TMR made from it expires with it."""
    value = finding.measured.get("indicator_valid_until")
    if not isinstance(value, str):
        return None
    try:
        until = datetime.fromisoformat(value)
    except ValueError:
        return None  # not a time: the rule simply does not expire
    return until if until.tzinfo is not None else None


def _spelled(duration: timedelta) -> str:
    hours, rest = divmod(int(duration.total_seconds()), 3600)
    return f"{hours} h" if not rest else f"{hours * 60 + rest // 60} min"


def _for_a_while(measured: dict[str, float | int | str]) -> str:
    seconds = measured.get(DURATION_KEY)
    if not isinstance(seconds, int):
        return ""
    return f" for {_spelled(timedelta(seconds=seconds))} (strike {int(measured.get(STRIKES_KEY, 0)) + 1})"


def _episodes(findings: Sequence[Finding]) -> list[tuple[Finding, tuple[str, ...]]]:
    """One finding per episode (detector, offender, protocol, start): the latest, carrying the whole episode's
    evidence. A growing scan raises several findings; the last one has the widest scope, and one proposal with
    all the evidence is what an administrator wants to review."""
    groups: dict[tuple[object, ...], list[Finding]] = {}
    for f in findings:
        groups.setdefault((f.detector, f.src_ip, f.protocol, f.first_seen_at, f.indicator), []).append(f)
    episodes: list[tuple[Finding, tuple[str, ...]]] = []
    for group in groups.values():
        latest = max(group, key=lambda f: (f.observed_at, f.score))
        ids = tuple(dict.fromkeys(f.id for f in group))
        cids = tuple(dict.fromkeys(c for f in reversed(group) for c in f.community_ids))
        episodes.append((replace(latest, community_ids=cids[:MAX_EVIDENCE_FLOWS]), ids))
    return episodes


@register
class ScopedDenyRecommender(Recommender):
    """Proposes `add_deny` scoped to the offender (a VMN or an outside address) and to the targets it touched:
    the single host, or the /24 that holds all of them; the ports when few, every port of the protocol when
    many. A DNS tunnel or DGA is denied towards the servers it names except shared resolvers (`SHARED_RESOLVERS`):
    through a resolver only an alert naming the domain to block there remains. Weak evidence (score below
    `deny_min_score`), low trust, a finding no TMR can express, or traffic the TMRSet already denies gives an
    `alert` instead. Each deny carries its conflicts with the TMRSet
    (`kind:tmr_id`, see `refinement.conflicts`), and the context's guard-rails turn a refused deny into an
    alert that says why (`refinement.guardrails`).
    """

    name = "refinement.scoped_deny"
    version = "1.1"

    def __init__(self, settings: ScopedDenySettings | None = None) -> None:
        self.settings = settings or ScopedDenySettings()

    def propose(self, findings: Sequence[Finding], tmrset: TMRSet, context: RecommendContext) -> list[Proposal]:
        by_cid: dict[str, list[Flow]] = {}
        for flow in context.flows:
            by_cid.setdefault(flow.community_id, []).append(flow)
        proposals = merge_proposals([self._one(f, ids, tmrset, context, by_cid) for f, ids in _episodes(findings)])
        if not any(p.rule is not None for p in proposals):
            return proposals
        guard = GuardContext(tmrset, context.now, context.flows, findings, context.recent_proposals)
        return merge_proposals(context.guard_rails.apply(proposals, guard))

    def _one(
        self,
        finding: Finding,
        finding_ids: tuple[str, ...],
        tmrset: TMRSet,
        context: RecommendContext,
        by_cid: dict[str, list[Flow]],
    ) -> Proposal:
        rule = deny_rule(finding, tmrset)
        measured = dict(finding.measured)
        if rule is not None and finding.kind in self.settings.temporary_kinds:
            rule, measured = self._temporary(rule, measured, context)
        evidence = Evidence(
            finding_ids=finding_ids,
            community_ids=finding.community_ids[:MAX_EVIDENCE_FLOWS],
            measured=measured,
        )
        reason = ""
        if rule is None:
            reason = no_rule_reason(finding)
        elif finding.kind is FindingKind.ANOMALY:
            reason = "an anomaly says something is unusual, not what to block"
        elif finding.score < self.settings.deny_min_score:
            reason = f"score {finding.score:.2f} is below {self.settings.deny_min_score}"
        elif context.trust < self.settings.min_trust:
            reason = f"recommender trust {context.trust:.2f} is below {self.settings.min_trust}"
        elif self._already_denied(finding, tmrset, context, by_cid):
            reason = "the current TMRs already deny this traffic"
        elif rule.expires_at is not None and rule.expires_at <= context.now:
            reason = f"the indicator expired at {rule.expires_at.isoformat()}"
        proposal = partial(
            Proposal,
            state=ProposalState.PROPOSED,
            recommender=self.name,
            recommender_version=self.version,
            score=finding.score,
            trust=context.trust,
            created_at=context.now,
            evidence=evidence,
        )
        if rule is None or reason:
            return proposal(
                id=stable_id("prop", ProposalKind.ALERT, finding.kind, finding.src_ip, finding.protocol),
                kind=ProposalKind.ALERT,
                summary=f"alert: {finding.summary} ({reason})",
            )
        return proposal(
            id=stable_id("prop", ProposalKind.ADD_DENY, rule.id),
            kind=ProposalKind.ADD_DENY,
            summary=f"{rule.describe()}{_for_a_while(measured)} — {finding.summary}",
            rule=rule,
            impact=replay_impact(
                tmrset, tmrset.with_tmr(rule), context.flows, context.now, added=rule, window=context.impact_window
            ),
            conflicts=tuple(c.tag for c in conflicts_of(rule, tmrset, context.now)),
        )

    def _temporary(
        self, rule: TMR, measured: dict[str, float | int | str], context: RecommendContext
    ) -> tuple[TMR, dict[str, float | int | str]]:
        """The deny for a while: the ladder's step for the offender's earlier strikes. Each strike is a rule (and
        so a proposal) of its own, since the one before may still be on record; the expiry here is provisional,
        the TM counts the duration from the apply (app/review.py)."""
        ladder = self.settings.ladder
        n = strikes(rule.src, context.past_proposals, context.now, ladder.lookback)
        duration = ladder.duration(n)
        rule = replace(
            rule,
            id=stable_id("tmr", rule.id, "strike", n) if n else rule.id,
            expires_at=context.now + duration,
            comment=f"{rule.comment} (for {_spelled(duration)}, strike {n + 1})"[:200],
        )
        return rule, {**measured, DURATION_KEY: int(duration.total_seconds()), STRIKES_KEY: n}

    @staticmethod
    def _already_denied(
        finding: Finding, tmrset: TMRSet, context: RecommendContext, by_cid: dict[str, list[Flow]]
    ) -> bool:
        seen = [f for cid in finding.community_ids for f in by_cid.get(cid, ())]
        return bool(seen) and all(tmrset.evaluate(f, context.now).action is Action.DENY for f in seen)
