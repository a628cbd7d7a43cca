"""The shipped fake enforcer behaves like the contract says a real one does."""

from __future__ import annotations

import pytest

from tests.factories import T0, make_rule
from vmshadow.domain.errors import EnforcementError
from vmshadow.domain.tmr import TMRSet
from vmshadow.enforcement.recording import RecordingEnforcer
from vmshadow.ports.enforcer import Enforcer


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
