"""Re-review on revocation: which proposals rest only on indicators their producers have withdrawn.

A deny proposed from an intel finding expires with its indicator (its TMR's `expires_at` is the indicator's
`valid_until`). A revocation ends the indicator early, and nothing in the kernel knows: so the proposals resting on
it must go back to a person. `resting_on_revoked` says which; `app/intel_revocation.py` acts on it.

A proposal rests on an indicator when one of its supporting findings is an `intel.match` finding of that
indicator (same source, type and value). It rests *only* on revoked ones when every supporting finding does: a
proposal that other evidence also supports (a scan, another still-valid indicator) stands.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from vmshadow.domain.finding import Finding
from vmshadow.domain.indicator import Indicator
from vmshadow.domain.proposal import Proposal

IndicatorKey = tuple[str, str, str]  # source, type, value


def indicator_key(indicator: Indicator) -> IndicatorKey:
    return (indicator.source, str(indicator.type), indicator.value)


def cited_indicator(finding: Finding) -> IndicatorKey | None:
    """The indicator an intel finding matched, or None for any other finding."""
    source, kind = finding.measured.get("indicator_source"), finding.measured.get("indicator_type")
    if finding.indicator is None or source is None or kind is None:
        return None
    return (str(source), str(kind), finding.indicator)


@dataclass(frozen=True, slots=True)
class RestsOnRevoked:
    proposal: Proposal
    indicators: tuple[IndicatorKey, ...]  # the revoked indicators it cites, sorted


def resting_on_revoked(
    proposals: Iterable[Proposal], findings: Mapping[str, Finding], revoked: Iterable[Indicator]
) -> list[RestsOnRevoked]:
    """The proposals every supporting finding of which matched a revoked indicator. `findings` maps finding ids to
    findings; a proposal whose findings are not all known is left alone (it cannot be judged)."""
    gone = {indicator_key(i) for i in revoked if i.revoked}
    out = []
    for proposal in proposals:
        ids = proposal.evidence.finding_ids
        if not gone or not ids or any(i not in findings for i in ids):
            continue
        cited = [cited_indicator(findings[i]) for i in ids]
        if all(key is not None and key in gone for key in cited):
            out.append(RestsOnRevoked(proposal, tuple(sorted({key for key in cited if key is not None}))))
    return out


def said(indicators: tuple[IndicatorKey, ...]) -> str:
    """`indicator evil.example (domain) from feed-a`, joined for a reason or a summary."""
    return "; ".join(f"indicator {value} ({kind}) from {source}" for source, kind, value in indicators)
