"""Published evaluation protocols as presets, and the data choices they fix.

A protocol is a YAML file in `ptxssl/transfer/protocols/` — where it comes from, the grid
(fractions, seeds) and the transfer options it fixes — so a second protocol is a second
file, not a branch in the code. `compare --protocol NAME` starts from it; options given on
top still apply, and the run then records how it departs from the protocol.

The data choices protocols make (a fresh split of the images, K folds by patient, a
class-balanced training set) are options of every transfer run and live here too.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import yaml

from ptxssl.datasets.cache import read_cache
from ptxssl.errors import UserError
from ptxssl.engine.config import load_yaml

PROTOCOL_DIR = Path(__file__).parent / "protocols"
SPLITS = ("train", "val", "test")


def protocol_names() -> list[str]:
    return sorted(p.stem for p in PROTOCOL_DIR.glob("*.yaml"))


def load_protocol(name: str) -> dict:
    """{"name", "about", "fractions", "seeds", "transfer": {option: value}, "published": ...}."""
    path = PROTOCOL_DIR / f"{name}.yaml"
    if not path.is_file():
        raise UserError(f"--protocol {name!r}: unknown; choose from {', '.join(protocol_names())}")
    return {"name": name, **yaml.safe_load(path.read_text())}


def departures(protocol: dict, cfg, fractions: list[float], seeds: list[int]) -> list[str]:
    """How a resolved run differs from the protocol, one "what: run (protocol: value)" each."""
    out = [f"{key} {getattr(cfg, key)!r} (protocol: {value!r})" for key, value in protocol["transfer"].items()
           if getattr(cfg, key) != value]
    for name, ours in (("fractions", fractions), ("seeds", seeds)):
        if list(ours) != list(protocol[name]):
            out.append(f"{name} {ours} (protocol: {protocol[name]})")
    return out + [f"{key}: {text}" for key, text in protocol.get("fixed_by_ptxssl", {}).items()]


def check_protocol_keys(protocol: dict, config_class: type) -> None:
    """A preset naming an option that does not exist is a packaging bug: fail loudly."""
    known = {f.name for f in dataclasses.fields(config_class)}
    unknown = sorted(set(protocol["transfer"]) - known)
    if unknown:
        raise UserError(f"protocol {protocol['name']}: unknown transfer option(s) {', '.join(unknown)}")


def split_rows(cache: str | Path, resplit: str = "", seed: int = 0) -> dict[str, np.ndarray]:
    """Cache rows of train / val / test: the cache's own (patient-level) split, or with
    `resplit` ("0.7,0.15,0.15") a seeded split of the images themselves, as protocols that
    split unique images do."""
    with read_cache(cache) as h5:
        split = h5["split"].asstr()[:]
    if not resplit:
        return {s: np.flatnonzero(split == s) for s in SPLITS}
    try:
        fractions = [float(x) for x in resplit.split(",")]
    except ValueError:
        fractions = []
    if len(fractions) != 3 or min(fractions) <= 0 or abs(sum(fractions) - 1) > 1e-6:
        raise UserError(f"--resplit {resplit!r}: give train,val,test fractions > 0 that sum to 1, "
                        "e.g. 0.7,0.15,0.15")
    order = np.random.default_rng([seed, 21]).permutation(len(split))
    cuts = np.round(np.cumsum(fractions)[:2] * len(split)).astype(int)
    return {s: np.sort(part) for s, part in zip(SPLITS, np.split(order, cuts))}


def run_splits(cfg) -> dict[str, np.ndarray]:
    """The train / val / test rows a transfer config asks for: K folds, a fresh split, or the cache's."""
    if cfg.folds:
        return fold_rows(cfg.data, cfg.folds, cfg.fold, cfg.split_seed)
    return split_rows(cfg.data, cfg.resplit, cfg.split_seed)


def fold_rows(cache: str | Path, folds: int, fold: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Cache rows of train / val / test for fold `fold` of a K-fold cross-validation.

    Patients are dealt into `folds` folds, shuffled by `seed` within each class (a patient is
    positive when any of their images has a non-empty mask), so every fold holds about the
    same share of positives and no patient spans two folds. Fold `fold` is the test split,
    the next one (cyclically) the validation split, the rest train.
    """
    if folds < 3 or not 0 <= fold < folds:
        raise UserError(f"--folds must be >= 3 and --fold in 0..folds-1 (got folds {folds}, fold {fold}): "
                        "one fold tests, one validates, the rest train")
    with read_cache(cache) as h5:
        patients = h5["patient_ids"].asstr()[:]
        positive = h5["masks"][:].reshape(len(patients), -1).any(axis=1)
    ids, index = np.unique(patients, return_inverse=True)
    sick = np.zeros(len(ids), bool)
    np.logical_or.at(sick, index, positive)
    rng = np.random.default_rng([seed, 23])
    of_patient = np.empty(len(ids), int)
    for group in (np.flatnonzero(sick), np.flatnonzero(~sick)):
        of_patient[rng.permutation(group)] = np.arange(len(group)) % folds
    of_image = of_patient[index]
    val = (fold + 1) % folds
    return {"train": np.flatnonzero((of_image != fold) & (of_image != val)),
            "val": np.flatnonzero(of_image == val), "test": np.flatnonzero(of_image == fold)}


def balanced_subset(positive: np.ndarray, seed: int = 0) -> np.ndarray:
    """Sorted indices of every positive plus as many negatives, drawn by `seed` (all of the
    negatives when they are fewer)."""
    positive = np.asarray(positive, bool)
    negatives = np.random.default_rng([seed, 22]).permutation(np.flatnonzero(~positive))
    return np.sort(np.concatenate([np.flatnonzero(positive), negatives[: int(positive.sum())]]))


def run_rows(run_dir: str | Path, cache: str | Path, split: str) -> np.ndarray:
    """Cache rows of `split` as the run saw them: its config.yaml's --resplit / --folds, else
    (or without a config.yaml) the cache's own split."""
    if split not in SPLITS:
        raise UserError(f"split must be one of {', '.join(SPLITS)} (got {split!r})")
    path = Path(run_dir) / "config.yaml"
    saved = load_yaml(path) if path.is_file() else {}
    cfg = SimpleNamespace(data=str(cache), resplit=saved.get("resplit", ""), folds=saved.get("folds", 0),
                          fold=saved.get("fold", 0), split_seed=saved.get("split_seed", 0))
    return run_splits(cfg)[split]


def run_batch_size(run_dir: str | Path, default: int = 16) -> int:
    """The batch size a run trained and scored with (its config.yaml; `default` without one).

    Scoring a saved run again in the same batches repeats its own scoring exactly: float32
    convolutions sum in an order that depends on the batch size, so other batches move
    probabilities by ~1e-6 and can flip a pixel that sits on the threshold.
    """
    path = Path(run_dir) / "config.yaml"
    return int((load_yaml(path) if path.is_file() else {}).get("batch_size", default))
