"""The shipped fake enforcer behaves like the contract says a real one does."""

from __future__ import annotations

import pytest

from tests.factories import T0, make_rule
from vmshadow.domain.errors import EnforcementError
from vmshadow.domain.tmr import TMRSet
from vmshadow.enforcement.recording import RecordingEnforcer
from vmshadow.ports.enforcer import Enforcer, StagedRule


def test_versions_rollback_and_counters() -> None:
    enforcer: Enforcer = RecordingEnforcer()
    assert enforcer.current() is None
    one = TMRSet(tmrs=(make_rule(1, src=make_rule().dst),))
    two = TMRSet()
    assert enforcer.apply(one, T0).version == 1
    assert enforcer.apply(two, T0).version == 2
    assert isinstance(enforcer, RecordingEnforcer)
    with pytest.raises(EnforcementError, match="not in force"):
        enforcer.record_hit("tmr-1")
    back = enforcer.rollback(1, T0)
    assert (back.version, back.tmrset) == (3, one)
    enforcer.record_hit("tmr-1", 5)
    assert enforcer.counters() == {"tmr-1": 5}
    with pytest.raises(EnforcementError, match="no version 9"):
        enforcer.rollback(9, T0)


def test_staged_rules_are_kept_with_their_counts_until_an_apply_names_others() -> None:
    enforcer = RecordingEnforcer()
    rule = make_rule(1, src=make_rule().dst)
    staged = StagedRule("prop-1", rule)
    enforcer.apply(TMRSet(), T0, [staged])
    enforcer.record_staged_hit("prop-1", 4)
    kept = enforcer.apply(TMRSet(), T0)  # None: the staged rules in force stay, with their counts
    assert kept.staged == (staged,)
    assert enforcer.staged_counters() == {"prop-1": 4}
    assert enforcer.rollback(1, T0).staged == (staged,)  # a rollback keeps the staged rules of now
    assert enforcer.staged_counters() == {"prop-1": 4}
    edited = StagedRule("prop-1", make_rule(1, src=make_rule().dst, priority=7))
    enforcer.apply(TMRSet(), T0, [edited])  # another rule under the same proposal counts from zero
    assert enforcer.staged_counters() == {"prop-1": 0}
    enforcer.apply(TMRSet(), T0, [])
    assert enforcer.staged_counters() == {}
    with pytest.raises(EnforcementError, match="not staged"):
        enforcer.record_staged_hit("prop-1")
