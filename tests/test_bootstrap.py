"""Paired bootstrap intervals: they cover a known shift, and the vectorised AUROC is sklearn's."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from ptxssl.bootstrap import auroc_difference, auroc_rows, paired_bootstrap


def test_paired_bootstrap_interval_covers_the_shift_and_excludes_zero():
    rng = np.random.default_rng(0)
    diff = 0.1 + 0.05 * rng.normal(size=400)
    lo, hi = paired_bootstrap(diff)
    assert lo < 0.1 < hi and lo > 0.09 and hi < 0.11
    lo, hi = paired_bootstrap(0.05 * rng.normal(size=400))
    assert lo < 0 < hi


def test_auroc_rows_equal_sklearn_with_ties_and_nan_for_one_class():
    rng = np.random.default_rng(1)
    labels = rng.random((20, 30)) < 0.3
    scores = np.round(rng.random((20, 30)), 1)  # coarse: many ties
    scores[3] = 0.5  # a row of all ties
    labels[5] = False  # a one-class row
    got = auroc_rows(labels, scores)
    for row in range(20):
        if row == 5:
            assert np.isnan(got[row])
        else:
            assert got[row] == pytest.approx(roc_auc_score(labels[row], scores[row]))


def test_auroc_difference_finds_a_better_scorer_and_not_a_copy():
    rng = np.random.default_rng(2)
    labels = rng.random(300) < 0.3
    strong = labels + rng.normal(0, 0.5, (3, 300))  # 3 seeds each
    weak = labels + rng.normal(0, 2.0, (3, 300))
    diff, lo, hi = auroc_difference(labels, strong, weak)
    expected = np.mean([roc_auc_score(labels, s) for s in strong]) - np.mean([roc_auc_score(labels, w) for w in weak])
    assert diff == pytest.approx(expected) and 0 < lo < diff < hi
    diff, lo, hi = auroc_difference(labels, strong, strong)
    assert diff == lo == hi == 0


def test_auroc_difference_over_findings_pairs_each_finding_with_its_own_labels():
    """One label row per finding: the difference is the mean of the per-finding sklearn AUROC
    differences, and the interval excludes zero for a scorer that is better on every finding."""
    rng = np.random.default_rng(1)
    labels = rng.random((3, 600)) < np.array([[0.1], [0.3], [0.5]])  # (findings, images)
    good = labels + rng.normal(0, 0.7, labels.shape)
    poor = labels + rng.normal(0, 2.0, labels.shape)
    diff, lo, hi = auroc_difference(labels, good, poor)
    expected = np.mean([roc_auc_score(y, g) - roc_auc_score(y, p) for y, g, p in zip(labels, good, poor)])
    assert diff == pytest.approx(expected)
    assert 0 < lo < diff < hi
    shuffled = auroc_difference(labels[:, rng.permutation(600)], good, poor)[0]
    assert abs(shuffled) < 0.1  # labels of other images: no difference left
