"""Trust as a Beta posterior over weighted, decaying outcomes (Jøsang & Ismail 2002)."""

from __future__ import annotations

import doctest
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vmshadow.domain.outcome import DEFAULT_WEIGHTS, POLARITY, Outcome, OutcomeKind, Polarity
from vmshadow.feedback import trust as trust_module
from vmshadow.feedback.trust import DEFAULT_HALF_LIFE, decay, trust_by_recommender, trust_from_outcomes

NOW = datetime(2025, 3, 1, 12, tzinfo=UTC)
GOOD = [k for k in OutcomeKind if POLARITY[k] is Polarity.GOOD]
BAD = [k for k in OutcomeKind if POLARITY[k] is Polarity.BAD]


def outcome(n: int, kind: OutcomeKind = OutcomeKind.HITS, age_days: float = 0.0, **overrides: object) -> Outcome:
    values: dict[str, object] = {
        "id": f"out-{n}",
        "proposal_id": f"prop-{n}",
        "recommender": "deny",
        "kind": kind,
        "observed_at": NOW - timedelta(days=age_days),
        "weight": DEFAULT_WEIGHTS[kind],
    }
    values.update(overrides)
    return Outcome(**values)  # type: ignore[arg-type]


outcomes_st = st.lists(
    st.builds(
        outcome,
        n=st.integers(0, 30),
        kind=st.sampled_from(OutcomeKind),
        age_days=st.floats(0, 200, allow_nan=False),
    ),
    max_size=25,
)


def test_no_outcomes_is_the_uniform_prior() -> None:
    s = trust_from_outcomes([], NOW, recommender="deny")
    assert (s.trust, s.alpha, s.beta, s.outcomes, s.recommender, s.at) == (0.5, 1.0, 1.0, 0, "deny", NOW)


def test_no_outcomes_and_no_name_is_an_error() -> None:
    with pytest.raises(ValueError, match="no recommender"):
        trust_from_outcomes([], NOW)


def test_outcomes_of_another_recommender_are_refused() -> None:
    with pytest.raises(ValueError, match="not 'deny'"):
        trust_from_outcomes([outcome(1), outcome(2, recommender="allow")], NOW)


def test_a_fresh_good_and_a_fresh_bad_outcome_move_trust_by_the_beta_mean() -> None:
    assert trust_from_outcomes([outcome(1)], NOW).trust == pytest.approx(2 / 3)
    assert trust_from_outcomes([outcome(1, OutcomeKind.ROLLED_BACK)], NOW).trust == pytest.approx(1 / 3)
    fp = trust_from_outcomes([outcome(1, OutcomeKind.FALSE_POSITIVE)], NOW)
    assert (fp.alpha, fp.beta) == (1.0, 3.0)  # an administrator's report weighs 2


def test_neutral_outcomes_carry_no_evidence() -> None:
    s = trust_from_outcomes([outcome(1, OutcomeKind.EXPIRED), outcome(2, OutcomeKind.FINDING_CONTINUED)], NOW)
    assert (s.trust, s.outcomes) == (0.5, 0)


def test_decay_halves_each_half_life() -> None:
    assert decay(timedelta(0), DEFAULT_HALF_LIFE) == 1.0
    assert decay(DEFAULT_HALF_LIFE, DEFAULT_HALF_LIFE) == pytest.approx(0.5)
    assert decay(3 * DEFAULT_HALF_LIFE, DEFAULT_HALF_LIFE) == pytest.approx(0.125)
    with pytest.raises(ValueError, match="positive"):
        decay(timedelta(0), timedelta(0))


def test_an_old_bad_outcome_weighs_less_than_a_new_one() -> None:
    good = outcome(1)
    old_bad = trust_from_outcomes([good, outcome(2, OutcomeKind.ROLLED_BACK, age_days=60)], NOW)
    new_bad = trust_from_outcomes([good, outcome(2, OutcomeKind.ROLLED_BACK, age_days=0)], NOW)
    assert old_bad.trust > new_bad.trust
    assert old_bad.beta == pytest.approx(1 + 0.5 ** (60 / 14))


def test_outcomes_after_the_moment_asked_about_are_not_known_yet() -> None:
    future = outcome(1, observed_at=NOW + timedelta(hours=1))
    assert trust_from_outcomes([future], NOW).trust == 0.5


def test_repeated_measurements_of_one_proposal_count_once() -> None:
    many = [outcome(i, proposal_id="prop-1", age_days=i) for i in range(10)]
    assert trust_from_outcomes(many, NOW) == trust_from_outcomes([many[0]], NOW)


@given(outcomes_st, st.sampled_from(GOOD), st.integers(0, 40), st.floats(0, 200, allow_nan=False))
def test_more_good_outcomes_never_lower_trust(
    outcomes: list[Outcome], kind: OutcomeKind, n: int, age_days: float
) -> None:
    before = trust_from_outcomes(outcomes, NOW, recommender="deny").trust
    after = trust_from_outcomes([*outcomes, outcome(100 + n, kind, age_days)], NOW).trust
    same_proposal = trust_from_outcomes([*outcomes, outcome(n, kind, age_days)], NOW).trust
    assert after >= before
    assert same_proposal >= before


@given(outcomes_st, st.sampled_from(BAD), st.integers(0, 40), st.floats(0, 200, allow_nan=False))
def test_more_bad_outcomes_never_raise_trust(
    outcomes: list[Outcome], kind: OutcomeKind, n: int, age_days: float
) -> None:
    before = trust_from_outcomes(outcomes, NOW, recommender="deny").trust
    assert trust_from_outcomes([*outcomes, outcome(n, kind, age_days)], NOW).trust <= before


@given(outcomes_st)
def test_trust_is_a_probability_and_the_order_of_outcomes_does_not_matter(outcomes: list[Outcome]) -> None:
    s = trust_from_outcomes(outcomes, NOW, recommender="deny")
    assert 0.0 < s.trust < 1.0
    assert s.trust == pytest.approx(s.alpha / (s.alpha + s.beta))
    assert trust_from_outcomes(list(reversed(outcomes)), NOW, recommender="deny") == s


def test_trust_by_recommender_gives_the_prior_to_those_without_outcomes() -> None:
    got = trust_by_recommender([outcome(1), outcome(2, recommender="allow")], NOW, recommenders=["quiet"])
    assert list(got) == ["allow", "deny", "quiet"]
    assert got["quiet"].trust == 0.5
    assert got["deny"].trust == pytest.approx(2 / 3)


def test_the_docstring_examples_hold() -> None:
    assert doctest.testmod(trust_module, raise_on_error=False).failed == 0
