"""Stratified, seeded, nested label subsets and their option errors."""
from __future__ import annotations

import numpy as np
import pytest

from ptxssl.errors import UserError
from ptxssl.transfer.subset import label_subset

POSITIVE = np.arange(1000) % 5 == 0  # 200 positives (20 %), 800 negatives


@pytest.mark.parametrize("fraction", [0.01, 0.05, 0.1, 0.5, 1.0])
def test_fraction_keeps_the_positive_share(fraction):
    idx = label_subset(POSITIVE, fraction=fraction, seed=3)
    assert len(idx) == round(fraction * 1000)
    assert np.all(np.diff(idx) > 0) and idx.dtype == np.int64  # sorted, unique
    assert POSITIVE[idx].sum() == round(0.2 * len(idx))


def test_count_and_at_least_one_of_each_class():
    rare = np.zeros(100, dtype=bool)
    rare[7] = True  # 1 % positives: a proportional 10-image subset would round to 0
    idx = label_subset(rare, count=10, seed=0)
    assert len(idx) == 10 and 7 in idx
    assert len(label_subset(rare, count=2, seed=1)) == 2 and 7 in label_subset(rare, count=2, seed=1)
    only_neg = label_subset(np.zeros(10, dtype=bool), count=4)
    assert len(only_neg) == 4
    assert len(label_subset(POSITIVE, count=1)) == 1
    assert len(label_subset(POSITIVE, fraction=0.0001)) == 1  # never an empty subset


def test_seeded_and_nested():
    a = label_subset(POSITIVE, fraction=0.1, seed=0)
    np.testing.assert_array_equal(a, label_subset(POSITIVE, fraction=0.1, seed=0))
    assert not np.array_equal(a, label_subset(POSITIVE, fraction=0.1, seed=1))
    small = label_subset(POSITIVE, fraction=0.02, seed=0)
    assert set(small) <= set(a) <= set(label_subset(POSITIVE, fraction=0.5, seed=0))


@pytest.mark.parametrize("kwargs, option", [
    ({"fraction": 0.0}, "--label-fraction"), ({"fraction": 1.5}, "--label-fraction"),
    ({"fraction": -0.1}, "--label-fraction"), ({"count": 0}, "--label-count"),
    ({"count": 1001}, "--label-count"), ({"count": 2.5}, "--label-count"),
    ({}, "exactly one"), ({"fraction": 0.5, "count": 3}, "exactly one"),
])
def test_bad_options_name_the_option(kwargs, option):
    with pytest.raises(UserError, match=option) as err:
        label_subset(POSITIVE, **kwargs)
    assert "\n" not in str(err.value)
