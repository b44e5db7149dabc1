"""Patient-level, stratified, reproducible train/val/test splits.

All images of a patient go to one split, or a model is tested on a patient it trained on
(NIH has up to 184 follow-ups of one patient). Patients are stratified by whether any of
their images is positive, so the splits' positive rates match; this matters most for SIIM
(22 % positive) at small label fractions.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ptxssl.errors import UserError

SPLITS: tuple[str, ...] = ("train", "val", "test")


def _check_fractions(fractions: Sequence[float]) -> np.ndarray:
    frac = np.asarray(fractions, dtype=float)
    if frac.shape != (3,) or (frac < 0).any() or not np.isclose(frac.sum(), 1.0, atol=1e-6):
        raise UserError(f"split fractions {tuple(fractions)} must be three non-negative numbers "
                        f"(train, val, test) that sum to 1")
    return frac


def _quota(n: int, frac: np.ndarray) -> np.ndarray:
    """Split n items by `frac` (sums to 1) with largest-remainder rounding; (len(frac),) int."""
    raw = n * frac
    q = np.floor(raw).astype(int)
    order = np.argsort(-(raw - q), kind="stable")
    q[order[: n - q.sum()]] += 1
    return q


def _patient_fixed(inv: np.ndarray, n_patients: int, fixed: np.ndarray) -> np.ndarray:
    """Per patient: the split its fixed images impose ("" if none); test > val > train."""
    out = np.full(n_patients, "", dtype="<U5")
    for split in SPLITS[::-1]:  # test first: it wins a conflict, so the test set stays clean
        hit = np.zeros(n_patients, bool)
        hit[inv[fixed == split]] = True
        out[hit & (out == "")] = split
    return out


def assign_splits(patient_ids: Sequence[str], positive: Sequence[bool] | np.ndarray,
                  fixed: Sequence[str | None] | None = None,
                  fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
                  seed: int = 0) -> np.ndarray:
    """Assign each image to "train", "val" or "test".

    Args:
        patient_ids: (N,) patient of each image; "" (or None) = the image is its own patient.
        positive: (N,) whether each image is positive (NaN counts as negative).
        fixed: (N,) an official split per image (e.g. "test" from NIH's test_list), or None.
            Fixed images keep it; their patients' other images follow. A split that occurs in
            `fixed` (other than train) is taken as complete and is not drawn from the rest:
            with a fixed test set, the rest goes to train/val in the ratio
            fractions[0]:fractions[1].
        fractions: (train, val, test), summing to 1.
        seed: the same seed and the same (patient, positive) pairs give the same splits,
            whatever the input order (patients are sorted before shuffling).

    Returns:
        (N,) str array. Every drawn split with a non-zero fraction gets at least one patient
        when there are enough patients.
    """
    frac = _check_fractions(fractions)
    ids = np.array([str(p) if p not in (None, "") else f"\0image{i}"
                    for i, p in enumerate(patient_ids)], dtype=str)
    pos = np.asarray(positive, dtype=float).reshape(-1) > 0
    fixed_list = [None] * len(ids) if fixed is None else list(fixed)
    fixed_list = ["" if f is None or f != f else str(f) for f in fixed_list]  # f != f: NaN
    if not (len(ids) == len(pos) == len(fixed_list)):
        raise ValueError(f"lengths differ: {len(ids)} patient ids, {len(pos)} positives, "
                         f"{len(fixed_list)} fixed splits")
    bad = sorted(set(fixed_list) - set(SPLITS) - {""})
    if bad:
        raise UserError(f"unknown fixed split name(s) {bad}; expected {', '.join(SPLITS)}")
    fix = np.array(fixed_list, dtype="<U5")
    if len(ids) == 0:
        return np.zeros(0, dtype="<U5")

    patients, inv = np.unique(ids, return_inverse=True)  # sorted: order-independent
    p_pos = np.bincount(inv, weights=pos, minlength=len(patients)) > 0
    p_split = _patient_fixed(inv, len(patients), fix)

    drawn = [k for k, s in enumerate(SPLITS) if frac[k] > 0 and (s == "train" or s not in fix)]
    drawn = drawn or [0]
    sub = frac[drawn] / frac[drawn].sum()
    rng = np.random.default_rng(seed)
    members: dict[int, list[int]] = {k: [] for k in drawn}
    for stratum in (False, True):
        free = np.flatnonzero((p_split == "") & (p_pos == stratum))
        free = free[rng.permutation(len(free))]
        for k, chunk in zip(drawn, np.split(free, np.cumsum(_quota(len(free), sub))[:-1])):
            members[k] += chunk.tolist()
    # small N: rounding can leave a drawn split empty; move one patient from the largest
    for k in drawn:
        if not members[k]:
            donor = max(drawn, key=lambda j: len(members[j]))
            if len(members[donor]) > 1:
                members[k].append(members[donor].pop())
    for k in drawn:
        p_split[members[k]] = SPLITS[k]

    out = p_split[inv]
    return np.where(fix != "", fix, out)
