"""The evaluation harness's ROC-AUC and average precision (bench/detection.py), against worked values."""

from __future__ import annotations

import pytest
from bench.detection import average_precision, roc_auc


def test_scikit_learn_documentation_example() -> None:
    # scikit-learn's docs: y = [0, 0, 1, 1], scores [0.1, 0.4, 0.35, 0.8] -> ROC-AUC 0.75, AP 0.8333
    scores, labels = [0.1, 0.4, 0.35, 0.8], [False, False, True, True]
    assert roc_auc(scores, labels) == 0.75
    assert average_precision(scores, labels) == pytest.approx(0.8333, abs=1e-4)


def test_ties_perfect_and_inverted_rankings() -> None:
    assert roc_auc([0.5, 0.5], [True, False]) == 0.5
    assert average_precision([0.5, 0.5], [True, False]) == 0.5
    assert roc_auc([0.9, 0.8, 0.1], [True, True, False]) == 1.0
    assert roc_auc([0.1, 0.2, 0.9], [True, True, False]) == 0.0
    assert average_precision([0.9, 0.8, 0.1], [True, True, False]) == 1.0


def test_undefined_without_both_classes() -> None:
    assert roc_auc([0.1, 0.2], [False, False]) is None
    assert roc_auc([0.1, 0.2], [True, True]) is None
    assert average_precision([0.1], [False]) is None
