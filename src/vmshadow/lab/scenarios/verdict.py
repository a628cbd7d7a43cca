"""Judging a scenario from what the SAE stored: the findings of the expected kind against the offender, the
proposals built on them, and whether a proposal is a deny scoped to the offender (or an alert)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from vmshadow.domain.finding import Finding, FindingKind
from vmshadow.domain.proposal import Proposal, ProposalKind
from vmshadow.lab.state import LabHost


def offender_findings(findings: Sequence[Finding], kind: FindingKind, offender: LabHost) -> list[Finding]:
    """Findings of `kind` whose offender is the VMN (by name, or by address when the VMN was not identified)."""
    return [
        f for f in findings
        if f.kind is kind and (f.src_vmn == offender.name or (f.src_vmn is None and f.src_ip == offender.address.ip))
    ]  # fmt: skip


def proposals_for(proposals: Sequence[Proposal], findings: Sequence[Finding]) -> list[Proposal]:
    """Proposals citing any of `findings` as evidence."""
    ids = {f.id for f in findings}
    return [p for p in proposals if ids.intersection(p.evidence.finding_ids)]


def scoped_to(proposal: Proposal, offender: LabHost) -> bool:
    """A deny whose source side is the offender itself (its VMN or its single address), nothing wider."""
    rule = proposal.rule
    return (
        proposal.kind is ProposalKind.ADD_DENY
        and rule is not None
        and rule.action.value == "deny"
        and rule.src.value in (offender.name, f"{offender.address.ip}/32", str(offender.address.ip))
    )


def created_between(proposals: Sequence[Proposal], start: datetime, end: datetime) -> list[Proposal]:
    return [p for p in proposals if start <= p.created_at <= end]
