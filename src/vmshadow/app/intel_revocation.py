"""Re-review on revocation: proposals resting only on revoked indicators go back to a person.

    rereview_revoked(store, revoked_indicators, now)   # -> Rereview(rejected=[...], alerts=[...])

- not in the kernel (`proposed`, `edited`, `approved`): rejected at once by `vmshadow (intel)`, the reason naming
  the revoked indicators (an audited decision, like any other);
- in the kernel (`staged` or approved while staged: counting; `applied`: enforcing): vmshadow never takes a rule
  out on its own, so an alert is proposed instead, asking an administrator to roll it back or reject it. One
  alert per proposal, ever: a person who dismissed it is not asked again.

`IntelRefresh` calls it with each look's revoked indicators (app/intel_refresh.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from vmshadow.app.review import counting_in_kernel
from vmshadow.app.stores import pending_proposals
from vmshadow.domain.finding import Finding
from vmshadow.domain.ids import stable_id
from vmshadow.domain.indicator import Indicator
from vmshadow.domain.proposal import Evidence, Proposal, ProposalKind, ProposalState
from vmshadow.intel.revocation import RestsOnRevoked, resting_on_revoked, said
from vmshadow.ports.store import Store
from vmshadow.review.lifecycle import decide

REVOKER = "vmshadow (intel)"
RECOMMENDER = "intel.revocation"  # the alerts' author: a notice, never a rule
_S = ProposalState
WITHDRAWN = frozenset({_S.PROPOSED, _S.EDITED, _S.APPROVED})  # nobody enforced them yet (others: an alert)


@dataclass(frozen=True, slots=True)
class Rereview:
    rejected: list[Proposal] = field(default_factory=list)
    alerts: list[Proposal] = field(default_factory=list)


def rereview_revoked(store: Store, revoked: Sequence[Indicator], now: datetime) -> Rereview:
    """Act on the proposals that rest only on the revoked ones among `revoked` (see the module doc)."""
    gone = [i for i in revoked if i.revoked]
    if not gone:
        return Rereview()
    waiting = [*pending_proposals(store), *store.proposals(state=_S.APPLIED)]  # every state but the final ones
    candidates = [p for p in waiting if p.kind is not ProposalKind.ALERT]
    findings: dict[str, Finding] = {}
    for p in candidates:
        for finding_id in p.evidence.finding_ids:
            found = store.finding(finding_id)
            if found is not None:
                findings[finding_id] = found
    out = Rereview()
    for rests in resting_on_revoked(candidates, findings, gone):
        reason = f"{said(rests.indicators)}: revoked by its producer"
        p = rests.proposal
        if p.state in WITHDRAWN and not counting_in_kernel(p, store.decisions(p.id)):
            moved, decision = decide(p, _S.REJECTED, actor=REVOKER, at=now, reason=reason)
            store.record_decision(decision, moved)
            out.rejected.append(moved)
            continue
        alert = _alert(rests, reason, now)
        if store.proposal(alert.id) is None:
            store.save_batch(proposals=[alert])
            out.alerts.append(alert)
    return out


def _alert(rests: RestsOnRevoked, reason: str, now: datetime) -> Proposal:
    p = rests.proposal
    action = "roll it back" if p.state is _S.APPLIED else "reject it"
    return Proposal(
        id=stable_id("prop", RECOMMENDER, p.id),
        kind=ProposalKind.ALERT,
        state=_S.PROPOSED,
        recommender=RECOMMENDER,
        recommender_version="1",
        score=p.score,
        trust=1.0,  # a fact from the producer, not a guess
        created_at=now,
        summary=f"proposal {p.id} ({p.state}) rests on {reason}; review it ({action} if nothing else supports it)",
        evidence=Evidence(
            finding_ids=p.evidence.finding_ids,
            community_ids=p.evidence.community_ids,
            measured={"proposal_id": p.id, "revoked_indicators": len(rests.indicators)},
        ),
    )
