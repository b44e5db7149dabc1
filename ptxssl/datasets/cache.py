"""`ptxssl prepare`: one pass over a raw dataset into an HDF5 cache that every stage reads.

Cache format (a stable contract; README "Cache format"):
    images      (N, S, S) uint8     letterboxed to S x S (aspect kept, zero padding)
    ids         (N,) str            file path without suffix (SIIM: SOPInstanceUID; NIH: file stem)
    patient_ids (N,) str            from the label file or the DICOM header
    split       (N,) str            "train" / "val" / "test", patient-level, stratified
    masks       (N, S, S) uint8     0/1 pneumothorax masks (SIIM-style sources only)
    labels      (N, K) float32      1 / 0 / NaN (unknown); attribute `names` (sources with labels)
    attributes  kind, size, source, n, label_names, notes, fingerprint, ptxssl_version

Decoding runs in worker processes; the main process is the only HDF5 writer. The cache is
built in `<out>.partial` and renamed when complete, so a cache that exists is whole; a killed
run resumes from the rows already flushed to the partial file.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import json
import os
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
from tqdm import tqdm

from ptxssl import __version__
from ptxssl.datasets.channels import letterbox_planes, parse_channels
from ptxssl.datasets.images import letterbox_mask, read_image
from ptxssl.datasets.records import Index, Record
from ptxssl.datasets.rle import merge_siim
from ptxssl.datasets.sources import get_index
from ptxssl.datasets.splits import assign_splits
from ptxssl.errors import UserError
from ptxssl.files import sha1_text, write_csv
from ptxssl.parallel import parallel_map

ON_ERROR = ("stop", "skip")
_FLUSH_EVERY = 256
_STR = h5py.string_dtype()
_TODO, _DONE, _REJECTED = 0, 1, 2


@dataclass(frozen=True)
class _Task:
    row: int
    record: Record
    size: int
    masks: bool
    rle: str = "siim"
    channels: tuple[str, ...] = ()  # extra channels beside the raw image (see channels.py)


def _decode(task: _Task) -> tuple[int, np.ndarray | None, np.ndarray | None, str, str]:
    """Worker: (row, image, mask, patient id from the header, error message or "")."""
    rec = task.record
    try:
        image, meta = read_image(rec.path)  # (H, W) float32 in [0, 1]
        mask = None
        if task.masks:
            mask = letterbox_mask(merge_siim(rec.rles, *image.shape, image_id=rec.image_id, variant=task.rle), task.size)
        pixels = letterbox_planes(image, task.size, task.channels)  # (1 + K, S, S) uint8
        return task.row, pixels, mask, meta.get("patient_id", ""), ""
    except UserError as e:
        return task.row, None, None, "", str(e)


def _fingerprint(index: Index, size: int, channels: tuple[str, ...]) -> str:
    return sha1_text(index.kind, str(index.root.resolve()), str(size), ",".join(channels),
                     *[r.image_id for r in index.records])


def _open_partial(path: Path, index: Index, size: int, channels: tuple[str, ...]) -> h5py.File:
    """Reopen a partial cache of the same job, or start a fresh one."""
    fp = _fingerprint(index, size, channels)
    if path.exists():
        try:
            h5 = h5py.File(path, "a")
            if h5.attrs.get("fingerprint") == fp and "status" in h5:
                return h5
            h5.close()
        except OSError:
            pass  # cut short by a kill before its first flush: start over
        path.unlink()
    n = len(index.records)
    h5 = h5py.File(path, "w")
    h5.attrs.update(fingerprint=fp, kind=index.kind, size=size, source=str(index.root.resolve()),
                    n=n, ptxssl_version=__version__, notes=json.dumps(index.notes))
    h5.create_dataset("images", (n, size, size), np.uint8, chunks=(1, size, size))
    if channels:
        extra = h5.create_dataset("channels", (n, len(channels), size, size), np.uint8,
                                  chunks=(1, len(channels), size, size))
        extra.attrs["names"] = list(channels)
    if index.has_masks:
        h5.create_dataset("masks", (n, size, size), np.uint8, chunks=(1, size, size), compression="lzf")
    h5.create_dataset("ids", data=[r.image_id for r in index.records], dtype=_STR)
    h5.create_dataset("patient_ids", data=[r.patient_id for r in index.records], dtype=_STR)
    if index.label_names:
        labels = h5.create_dataset("labels", data=np.stack([r.labels for r in index.records]).astype(np.float32))
        labels.attrs["names"] = index.label_names
    h5.attrs["label_names"] = json.dumps(index.label_names)
    if index.has_anomaly_labels:
        h5.create_dataset("anomaly", data=[r.anomaly for r in index.records], dtype=_STR)
    h5.create_dataset("status", (n,), np.uint8, fillvalue=_TODO)
    h5.create_dataset("reasons", (n,), _STR)
    return h5


def _fill(h5: h5py.File, index: Index, size: int, workers: int, on_error: str, progress: bool,
          channels: tuple[str, ...]) -> None:
    status = h5["status"][:]
    tasks = [_Task(i, r, size, index.has_masks, index.rle, channels) for i, r in enumerate(index.records) if status[i] == _TODO]
    bar = tqdm(total=len(index.records), initial=len(index.records) - len(tasks), desc="prepare",
               unit="img", disable=not progress)
    pending: list[tuple[int, int]] = []
    workers = workers if len(tasks) >= 32 else 1
    for row, image, mask, patient, error in parallel_map(_decode, tasks, workers, chunksize=16, ordered=False):
        if error:
            if on_error == "stop":
                bar.close()  # end the progress line, so the error gets a line of its own
                raise UserError(f"{error} (pass --on-error skip to record unreadable files in a "
                                "rejects CSV and go on)")
            h5["reasons"][row] = error
            pending.append((row, _REJECTED))
        else:
            h5["images"][row] = image[0]
            if len(image) > 1:
                h5["channels"][row] = image[1:]
            if mask is not None:
                h5["masks"][row] = mask
            if patient and not index.records[row].patient_id:
                h5["patient_ids"][row] = patient
            pending.append((row, _DONE))
        bar.update()
        if len(pending) >= _FLUSH_EVERY:
            _commit(h5, pending)
    _commit(h5, pending)
    bar.close()


def _commit(h5: h5py.File, pending: list[tuple[int, int]]) -> None:
    """Mark rows done only after their pixels are on disk, so a resume never trusts lost rows."""
    h5.flush()
    for row, state in pending:
        h5["status"][row] = state
    h5.flush()
    pending.clear()


def _positive(h5: h5py.File, keep: np.ndarray) -> np.ndarray:
    """What to stratify splits by: pneumothorax where known, else any finding."""
    if "labels" not in h5:
        return np.zeros(int(keep.sum()), bool)
    labels = h5["labels"][:][keep]
    names = list(h5["labels"].attrs["names"])
    cols = labels[:, [names.index("Pneumothorax")]] if "Pneumothorax" in names else labels
    return np.nan_to_num(cols).max(axis=1) > 0


def _finalise(h5: h5py.File, path: Path, out: Path, index: Index, seed: int,
              fractions: tuple[float, float, float]) -> int:
    """Assign splits, drop rejected rows, and move the complete cache into place."""
    status = h5["status"][:]
    keep = status == _DONE
    reasons = h5["reasons"].asstr()[:]
    patients = h5["patient_ids"].asstr()[:]
    ids = h5["ids"].asstr()[:]
    patients = np.where(patients == "", ids, patients)
    fixed = [r.split for r, k in zip(index.records, keep) if k]
    split = assign_splits(list(patients[keep]), _positive(h5, keep), fixed=fixed,
                          fractions=fractions, seed=seed)
    rejected = [(ids[i], str(index.records[i].path), reasons[i]) for i in np.flatnonzero(status == _REJECTED)]
    if rejected:
        write_csv(f"{out}.rejects.csv", ["image_id", "path", "reason"], rejected)
    if not keep.any():
        raise UserError(f"no readable image in {index.root}; see {out}.rejects.csv")
    del h5["status"], h5["reasons"]
    if rejected:  # copy the good rows into a compact file; rename it into place below
        compact = path.with_suffix(".compact")
        with h5py.File(compact, "w") as dst:
            dst.attrs.update(dict(h5.attrs))
            for name, ds in h5.items():
                rows = np.flatnonzero(keep)
                shape = (len(rows), *ds.shape[1:])
                new = dst.create_dataset(name, shape, ds.dtype, chunks=ds.chunks, compression=ds.compression)
                new.attrs.update(dict(ds.attrs))
                for start in range(0, len(rows), 1024):
                    new[start:start + 1024] = ds[rows[start:start + 1024]]
            dst.attrs["n"] = len(rows)
            dst.create_dataset("split", data=list(split), dtype=_STR)
        h5.close()
        os.replace(compact, path)
    else:
        h5.create_dataset("split", data=list(split), dtype=_STR)
        h5.close()
    os.replace(path, out)
    return len(rejected)


def prepare(src: str | Path, dataset: str, out: str | Path, size: int = 256, workers: int = 2,
            on_error: str = "stop", seed: int = 0, fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
            overwrite: bool = False, progress: bool = True, channels: str | tuple[str, ...] = "raw",
            **index_options) -> dict:
    """Build `out` from the raw dataset in `src`; resume a killed run of the same job.

    `channels` "raw,clahe,he" also stores contrast-equalised copies (see channels.py).
    Returns a summary: the images written, those rejected, and the index's notes.
    """
    extra = parse_channels(channels)
    out = Path(out)
    if on_error not in ON_ERROR:
        raise UserError(f"--on-error must be one of {', '.join(ON_ERROR)} (got {on_error!r})")
    if size < 16:
        raise UserError(f"--size must be at least 16 (got {size})")
    if out.exists() and not overwrite:
        raise UserError(f"{out} already exists; pass --overwrite to rebuild it")
    index = get_index(dataset, Path(src), **index_options)
    if not index.records:
        raise UserError(f"no images of the {dataset} label file were found under {src}: "
                        + " ".join(index.notes))
    partial = Path(f"{out}.partial")
    out.parent.mkdir(parents=True, exist_ok=True)
    h5 = _open_partial(partial, index, size, extra)
    try:
        _fill(h5, index, size, workers, on_error, progress, extra)
        n_rejected = _finalise(h5, partial, out, index, seed, fractions)
    finally:
        if h5.id.valid:
            h5.close()
    return {"images": len(index.records) - n_rejected, "rejected": n_rejected, "notes": index.notes}


@contextmanager
def read_cache(path: str | Path) -> Iterator[h5py.File]:
    """Open a cache for reading; an unreadable, truncated or foreign file is a UserError naming it."""
    try:
        h5 = h5py.File(path, "r")
    except OSError as e:
        raise UserError(f"{path}: not a readable ptxssl cache ({e}); rebuild it with `ptxssl prepare`") from None
    with h5:
        try:
            yield h5
        except KeyError as e:
            raise UserError(f"{path}: not a ptxssl cache (no {e} in it); rebuild it with `ptxssl prepare`") from None


def cache_channels(path: str | Path) -> list[str]:
    """The extra channels a cache stores beside the raw image ([] for a raw-only cache)."""
    with read_cache(path) as h5:
        return list(h5["channels"].attrs["names"]) if "channels" in h5 else []


def cache_info(path: str | Path) -> dict:
    """Counts, image size, split sizes and label balance of a cache (what `ptxssl info` prints)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such cache file (make one with `ptxssl prepare`)")
    try:
        h5 = h5py.File(path, "r")
    except OSError as e:
        raise UserError(f"{path}: not a readable HDF5 cache ({e}); rebuild it with `ptxssl prepare`") from None
    with h5:
        if "images" not in h5 or "split" not in h5:
            raise UserError(f"{path}: not a ptxssl cache (no images/split); rebuild it with `ptxssl prepare`")
        split = h5["split"].asstr()[:]
        info = {"path": str(path), "kind": h5.attrs["kind"], "images": int(h5["images"].shape[0]),
                "size": int(h5.attrs["size"]), "source": h5.attrs["source"],
                "split": {s: int((split == s).sum()) for s in ("train", "val", "test")},
                "patients": len(set(h5["patient_ids"].asstr()[:]))}
        info["masks"] = "masks" in h5
        info["channels"] = ["raw", *h5["channels"].attrs["names"]] if "channels" in h5 else ["raw"]
        if "labels" in h5:
            labels = h5["labels"][:]
            info["labels"] = {name: {"positive": int((labels[:, k] == 1).sum()),
                                     "unknown": int(np.isnan(labels[:, k]).sum())}
                              for k, name in enumerate(h5["labels"].attrs["names"])}
        if "anomaly" in h5:
            names, counts = np.unique(h5["anomaly"].asstr()[:], return_counts=True)
            info["anomalies"] = {str(a): int(c) for a, c in zip(names, counts) if a}
        info["notes"] = json.loads(h5.attrs.get("notes", "[]"))
    return info
