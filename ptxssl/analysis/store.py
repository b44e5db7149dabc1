"""The embeddings file: what `ptxssl embed` writes and every analysis command reads.

Format (HDF5, a stable contract; a user can write one by hand with h5py):
    embeddings   (N, D) float32   encoder features, one row per image (required)
    ids          (N,) str         image ids, the same as the cache's (required)
    split        (N,) str         "train" / "val" / "test", "" if unknown
    labels       (N, K) float32   weak labels 1 / 0 / NaN (unknown); attribute `names`
    anomaly      (N,) str         QC label ("flipped", "rotated", "inverted"), "" = normal
    latent       (N, L) float32   AE latent / VAE mu (runs with a decoder)
    grid         (N, 4D) float32  the deepest map averaged over 2 x 2 cells (`embed --grid`): keeps left from right
    mirror       (N, D) float32   `embeddings` of each image's left-right mirror (`embed --mirror`)
    grid_mirror  (N, 4D) float32  `grid` of each image's mirror (`embed --grid --mirror`)
    recon_error  (N,) float32     per-image reconstruction error of an AE/VAE
    attributes   encoder, method, data, fingerprint, ptxssl_version, ... (scalars)

Strings are stored as variable-length UTF-8 (`h5py.string_dtype()`), so files made by
h5py, pandas or hand-written scripts read back the same way.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from ptxssl.errors import UserError
from ptxssl.files import atomic_path

FEATURES = ("embeddings", "latent", "grid")
MIRRORS = {"embeddings": "mirror", "grid": "grid_mirror"}  # each kind's mirror-image counterpart, if any
FINDING = "finding"  # the derived single-category view of multi-label findings (see `categories`)
_STR = h5py.string_dtype()
_MAKE_IT = "make it with `ptxssl embed`"


@dataclass
class Embeddings:
    """Per-image features and what is known about each image, row-aligned."""

    features: np.ndarray  # (N, D) float32
    ids: np.ndarray  # (N,) str
    split: np.ndarray  # (N,) str
    labels: np.ndarray | None = None  # (N, K) float32, NaN = unknown
    label_names: list[str] = field(default_factory=list)
    anomaly: np.ndarray | None = None  # (N,) str, "" = normal
    latent: np.ndarray | None = None  # (N, L) float32
    recon_error: np.ndarray | None = None  # (N,) float32
    grid: np.ndarray | None = None  # (N, 4D) float32
    mirror: np.ndarray | None = None  # (N, D): the `features` of each image's left-right mirror
    grid_mirror: np.ndarray | None = None  # (N, 4D)
    attrs: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.features)
        if self.features.ndim != 2:
            raise ValueError(f"features must be (N, D), got shape {self.features.shape}")
        for name in ("ids", "split", "labels", "anomaly", "latent", "recon_error", "grid", "mirror", "grid_mirror"):
            value = getattr(self, name)
            if value is not None and len(value) != n:
                raise ValueError(f"{name} has {len(value)} rows, features {n}")
        if self.labels is not None and self.labels.shape[1] != len(self.label_names):
            raise ValueError(f"labels has {self.labels.shape[1]} columns but {len(self.label_names)} names")

    def __len__(self) -> int:
        return len(self.features)

    def label_choices(self) -> list[str]:
        """Names `label`/`categories` accept: each weak label, and the derived views."""
        names = list(self.label_names)
        if len(names) > 1:
            names.append(FINDING)
        if self.anomaly is not None:
            names.append("anomaly")
        if (self.split != "").any():
            names.append("split")
        return names

    def default_label(self, allow_split: bool = True) -> str | None:
        """What to colour by when the user does not say: the QC anomaly labels, else the
        first weak label, else the split (when allowed), else None."""
        choices = [c for c in self.label_choices() if allow_split or c != "split"]
        return "anomaly" if "anomaly" in choices else (choices[0] if choices else None)

    def check_label(self, name: str, option: str = "--color-by") -> str:
        """`name` if it is a label of this file, else a UserError listing the valid ones."""
        choices = self.label_choices()
        if name not in choices:
            where = self.attrs.get("path", "the embeddings file")
            raise UserError(f"{option} {name!r}: no such label in {where}; choose from "
                            f"{', '.join(choices) or '(none: the file has no labels)'}")
        return name

    def label(self, name: str) -> np.ndarray:
        """The raw values of one label: a weak-label column (N,) float with NaN = unknown, or
        the `anomaly` / `split` strings."""
        self.check_label(name)
        if name == "anomaly":
            return self.anomaly
        if name == "split":
            return self.split
        if name == FINDING:
            return self.categories(FINDING)
        return self.labels[:, self.label_names.index(name)]

    def categories(self, name: str) -> np.ndarray:
        """One label as (N,) category strings, for colouring plots and for cluster metrics.

        A weak label becomes `name` / `no name` / `unknown`. `finding` summarises
        multi-label findings as one category per image: the finding's name when exactly one
        is positive, "no finding" when all are negative, "multiple" for two or more
        positives, "unknown" when a row has unknowns and no two positives. Kept as a
        separate view because cluster-vs-label agreement on one binary column rewards a
        clustering that splits off that finding alone, while `finding` asks whether
        clusters line up with the dominant finding overall.
        """
        self.check_label(name)
        if name in ("anomaly", "split"):
            values = self.anomaly if name == "anomaly" else self.split
            return np.where(values == "", "normal" if name == "anomaly" else "unknown", values).astype(str)
        if name == FINDING:
            pos = (self.labels == 1).sum(axis=1)  # (N,) positives; NaN is not 1
            unknown = np.isnan(self.labels).any(axis=1)
            first = np.asarray(self.label_names, dtype=object)[np.argmax(self.labels == 1, axis=1)]
            out = np.where(pos == 0, "no finding", first)
            out = np.where(pos >= 2, "multiple", out)
            return np.where(unknown & (pos < 2), "unknown", out).astype(str)
        column = self.label(name)
        return np.where(np.isnan(column), "unknown", np.where(column == 1, name, f"no {name}")).astype(str)


def _attr(value):
    """An HDF5-storable attribute: scalars as they are, anything else as JSON text."""
    if isinstance(value, (str, int, float, bool, np.integer, np.floating, np.bool_)):
        return value
    return json.dumps(value, default=str)


def write_embeddings(path: str | Path, emb: Embeddings) -> Path:
    """Write `emb` to `path` atomically (a killed run leaves no file that looks complete)."""
    path = Path(path)
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as h5:
        h5.create_dataset("embeddings", data=np.asarray(emb.features, np.float32))
        h5.create_dataset("ids", data=np.asarray(emb.ids, dtype=object), dtype=_STR)
        h5.create_dataset("split", data=np.asarray(emb.split, dtype=object), dtype=_STR)
        if emb.labels is not None:
            labels = h5.create_dataset("labels", data=np.asarray(emb.labels, np.float32))
            labels.attrs["names"] = list(emb.label_names)
        if emb.anomaly is not None:
            h5.create_dataset("anomaly", data=np.asarray(emb.anomaly, dtype=object), dtype=_STR)
        if emb.latent is not None:
            h5.create_dataset("latent", data=np.asarray(emb.latent, np.float32))
        if emb.recon_error is not None:
            h5.create_dataset("recon_error", data=np.asarray(emb.recon_error, np.float32))
        for name in ("grid", "mirror", "grid_mirror"):  # `mirror`: of the pooled `embeddings`, as written
            if getattr(emb, name) is not None:
                h5.create_dataset(name, data=np.asarray(getattr(emb, name), np.float32))
        for key, value in emb.attrs.items():
            if value is not None and key not in ("path", "features"):  # set by read_embeddings
                h5.attrs[key] = _attr(value)
    return path


def _read(ds: h5py.Dataset, rows: np.ndarray | None) -> np.ndarray:
    """A dataset, or the given rows of it, reading one contiguous block (h5py's fancy
    indexing is slow for many scattered rows)."""
    if ds.dtype.kind == "O" or h5py.check_string_dtype(ds.dtype):
        ds = ds.asstr()
    if rows is None:
        data = ds[()]
        return np.asarray(data, dtype=str) if data.dtype == object else data
    if not len(rows):
        block = ds[0:0]
    else:
        lo, hi = int(rows.min()), int(rows.max())
        block = ds[lo:hi + 1][rows - lo]
    return np.asarray(block, dtype=str) if block.dtype == object else block


def read_embeddings(path: str | Path, features: str = "embeddings", rows: np.ndarray | None = None) -> Embeddings:
    """Read an embeddings file; `features="latent"` puts the AE/VAE latent in `.features`.

    Args:
        path: a file written by `ptxssl embed` (or by hand, in the same format).
        features: which matrix becomes `.features`: "embeddings" or "latent".
        rows: read only these rows (indices, in the order given).

    Raises:
        UserError: the file is missing, not HDF5, not an embeddings file, or has no latent.
    """
    path = Path(path)
    if features not in FEATURES:
        raise UserError(f"--features {features!r}: choose from {', '.join(FEATURES)}")
    if not path.is_file():
        raise UserError(f"{path}: file not found; {_MAKE_IT}")
    if rows is not None:
        rows = np.asarray(rows)
        rows = np.flatnonzero(rows) if rows.dtype == bool else rows.astype(np.int64)
    try:
        h5 = h5py.File(path, "r")
    except OSError:
        raise UserError(f"{path}: not an HDF5 file; an embeddings file is needed ({_MAKE_IT})") from None
    with h5:
        missing = [name for name in ("embeddings", "ids") if name not in h5]
        if missing:
            raise UserError(f"{path}: not an embeddings file (no {' or '.join(missing)} dataset); {_MAKE_IT}")
        if features == "latent" and "latent" not in h5:
            raise UserError(f"{path}: has no latent (--features latent); embed with an AE/VAE pretrain "
                            "run dir (`ptxssl embed RUN_DIR ...`)")
        if features == "grid" and "grid" not in h5:
            raise UserError(f"{path}: has no grid features (--features grid); embed again with `ptxssl embed --grid`")
        n = h5["embeddings"].shape[0]
        if rows is not None and len(rows) and (rows.min() < 0 or rows.max() >= n):
            raise ValueError(f"rows out of range for {n} embeddings")
        get = lambda name: _read(h5[name], rows) if name in h5 else None  # noqa: E731
        split = get("split")
        attrs = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in h5.attrs.items()}
        return Embeddings(
            features=get(features).astype(np.float32, copy=False), ids=get("ids"),
            split=split if split is not None else np.full(n if rows is None else len(rows), "", dtype=str),
            labels=get("labels"),
            label_names=[str(x) for x in h5["labels"].attrs.get("names", [])] if "labels" in h5 else [],
            anomaly=get("anomaly"), latent=get("latent"), recon_error=get("recon_error"), grid=get("grid"),
            mirror=get(MIRRORS[features]) if features in MIRRORS else None, grid_mirror=get("grid_mirror"),
            attrs={**attrs, "path": str(path), "features": features})
