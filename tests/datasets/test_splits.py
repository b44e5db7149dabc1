"""Patient-level, stratified, reproducible splits."""
from __future__ import annotations

import numpy as np
import pytest

from ptxssl.datasets.splits import assign_splits
from ptxssl.errors import UserError


def synthetic(n_patients: int = 2000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """1-6 images per patient; ~25 % of patients positive (one or more positive images)."""
    rng = np.random.default_rng(seed)
    per = rng.integers(1, 7, n_patients)
    pids = np.repeat([f"p{i:05d}" for i in range(n_patients)], per)
    sick = np.repeat(rng.random(n_patients) < 0.25, per)
    positive = sick & (rng.random(len(pids)) < 0.7)
    return pids, positive


def patient_splits(pids: np.ndarray, splits: np.ndarray) -> dict[str, set[str]]:
    return {s: set(pids[splits == s]) for s in ("train", "val", "test")}


def test_patients_disjoint_and_fractions() -> None:
    pids, pos = synthetic()
    splits = assign_splits(pids, pos)
    by = patient_splits(pids, splits)
    assert not (by["train"] & by["val"]) and not (by["train"] & by["test"]) and not (by["val"] & by["test"])
    n = {s: len(v) for s, v in by.items()}
    assert sum(n.values()) == 2000
    assert abs(n["train"] - 1600) <= 2 and abs(n["val"] - 200) <= 2 and abs(n["test"] - 200) <= 2


def test_stratified() -> None:
    pids, pos = synthetic()
    splits = assign_splits(pids, pos, seed=3)
    sick = {p for p, y in zip(pids, pos) if y}
    rates = {s: np.mean([p in sick for p in v]) for s, v in patient_splits(pids, splits).items()}
    overall = len(sick) / 2000
    assert all(abs(r - overall) < 0.01 for r in rates.values()), rates


def test_deterministic_and_order_independent() -> None:
    pids, pos = synthetic(500)
    a = assign_splits(pids, pos, seed=7)
    assert (a == assign_splits(pids, pos, seed=7)).all()
    assert (a != assign_splits(pids, pos, seed=8)).any()
    perm = np.random.default_rng(1).permutation(len(pids))
    b = assign_splits(pids[perm], pos[perm], seed=7)
    assert (b == a[perm]).all()


def test_fixed_test_split_kept() -> None:
    pids, pos = synthetic(400)
    fixed = np.array([None] * len(pids), dtype=object)
    official = (pids < "p00080") & (np.arange(len(pids)) % 2 == 0)  # some of their images
    fixed[official] = "test"
    splits = assign_splits(pids, pos, fixed=list(fixed), fractions=(0.7, 0.2, 0.1))
    assert (splits[official] == "test").all()
    test_patients = set(pids[official])
    assert all(s == "test" for p, s in zip(pids, splits) if p in test_patients)  # follow-ups follow
    assert set(pids[splits == "test"]) == test_patients                          # none drawn
    n_train = len(set(pids[splits == "train"]))
    n_val = len(set(pids[splits == "val"]))
    assert abs(n_train / (n_train + n_val) - 0.7 / 0.9) < 0.01


@pytest.mark.parametrize("pids", [[""] * 12, list("aabbccddeeff"), [""] * 3, list("abc")])
def test_small_n_every_split_non_empty(pids: list[str]) -> None:
    positive = [i % 4 == 0 for i in range(len(pids))]
    splits = assign_splits(pids, positive)
    assert set(splits) == {"train", "val", "test"}
    assert sum(s == "train" for s in splits) >= sum(s == "test" for s in splits)


def test_empty_patient_id_is_its_own_patient() -> None:
    splits = assign_splits([""] * 100, [False] * 100)
    assert 70 <= (splits == "train").sum() <= 90


def test_bad_fractions_and_fixed() -> None:
    with pytest.raises(UserError, match="sum to 1"):
        assign_splits(["a", "b"], [0, 1], fractions=(0.8, 0.1, 0.2))
    with pytest.raises(UserError, match="holdout"):
        assign_splits(["a", "b"], [0, 1], fixed=["holdout", None])
    assert assign_splits([], []).shape == (0,)
