"""Run a trained UNet on a folder of DICOMs: a SIIM-format submission CSV and mask overlays.

Each image goes through exactly the training-time path: `read_dicom` (the reader `prepare`
uses), `letterbox` to the run's image size, the stored normalisation, the UNet, sigmoid (with
the run's test-time augmentation, ptxssl.json "tta"), and the post-processing chosen on the
validation split (ptxssl.json: threshold and minimum area, or with "postprocess": "triplet"
the top / minimum area / bottom rule). Post-processing happens at the model's resolution,
where it was tuned; the mask is then cut out of the letterbox padding and resized (nearest)
to the DICOM's own rows x columns.

CSV: `ImageId,EncodedPixels`, ImageId = the DICOM's SOPInstanceUID (the SIIM convention; the
file stem when the tag is empty), EncodedPixels = SIIM relative column-major RLE or -1.

Unreadable files: `on_error="stop"` (default) fails on the first one with its one-line
reason, since a submission missing an image is usually worse than no submission;
`on_error="skip"` leaves it out of the CSV and lists it in the returned summary (the same
choice `prepare --on-error` offers).

Overlays (optional) mirror the DICOM folder tree: DIR/a/b.dcm -> OVERLAYS/a/b.png.

Cascade (optional, `classifier=`: a `transfer --task classify` run): each image also goes
through the classifier (letterboxed to its own size, with its own TTA), and images whose
probability is below the classifier's tuned threshold get an empty mask (-1) whatever the
UNet drew (see ptxssl.transfer.cascade).

Two files with the same SOPInstanceUID (a copy with an edited header, say) both get a row; in
SIIM's format rows of one ImageId are unioned, so the summary lists such ids as duplicates.
"""
from __future__ import annotations

import csv
import io
from collections import Counter
from pathlib import Path

import h5py
import numpy as np
import torch
from PIL import Image
from scipy import ndimage
from torch.utils.data import DataLoader
from tqdm import tqdm

from ptxssl.datasets.dicom import read_dicom
from ptxssl.datasets.channels import letterbox_planes
from ptxssl.datasets.images import letterbox_shape, to_uint8
from ptxssl.datasets.torch_data import CacheDataset
from ptxssl.datasets.rle import encode_siim
from ptxssl.encoders import encoder_input, resize
from ptxssl.engine.device import autocast, inference_setup, resolve_device
from ptxssl.errors import UserError
from ptxssl.files import atomic_path, write_text
from ptxssl.transfer.metrics import POSTPROCESS_MODES, binarise, gate
from ptxssl.transfer.model import TTA_MODES, load_model, probabilities

DICOM_SUFFIXES = (".dcm", ".dicom")


def find_dicoms(folder: str | Path) -> list[Path]:
    """*.dcm / *.dicom (any case) under `folder`, recursively, in sorted order."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"{folder}: not a folder; pass the folder holding the DICOM files")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in DICOM_SUFFIXES and p.is_file())
    if not files:
        raise UserError(f"{folder}: no .dcm files found (searched subfolders too)")
    return files


@torch.no_grad()
def predict_probs(model: torch.nn.Module, images: np.ndarray, meta: dict, precision: str = "32-true") -> np.ndarray:
    """(N, S, S) letterboxed grey or (N, C, S, S) planes, [0, 1] -> (N, S, S) float32
    pneumothorax probabilities (with meta["tta"], "none" when absent), on the model's device
    in `precision` (resolved, `ptxssl.engine.device.inference_setup`)."""
    model.eval()
    device = next(model.parameters()).device
    x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
    x = (x[:, None] if x.ndim == 3 else x).to(device)
    x = encoder_input(x, None, int(meta["in_channels"]), meta["normalization"])  # (N, C, S, S)
    with autocast(device, precision):
        return probabilities(model, x, meta.get("tta", "none"))[:, 0].float().cpu().numpy()


@torch.no_grad()
def predict_cache(model: torch.nn.Module, meta: dict, data: CacheDataset, batch_size: int = 16,
                  precision: str = "32-true") -> np.ndarray:
    """Probabilities of a saved run's model for every image of `data`, in order: a UNet's
    (N, s, s) maps or a classifier's (N,) scores, at the run's size, channels and TTA.

    `data` should carry the cache's extra channels (`channels=True`): a 3-channel run gets
    the planes it was trained on, a 1-channel run the raw plane alone.
    """
    size = int(meta["image_size"])
    out = []
    for batch in DataLoader(data, batch_size=batch_size):
        x = batch["image"]  # (n, 1 or 1 + K, S, S) in [0, 1]; a grey run takes the raw plane alone
        out.append(predict_probs(model, resize(x, size).numpy(), meta, precision))
    return np.concatenate(out)


def cache_masks(data: CacheDataset, size: int, batch_size: int = 64) -> np.ndarray:
    """(N, size, size) bool truth masks of `data` (built with_masks) at a run's size (nearest),
    read from the cache's masks alone (its images are not decoded for them)."""
    rows = np.asarray(data.rows)  # increasing, as h5py's fancy indexing needs
    with h5py.File(data.path, "r") as h5:
        masks = h5["masks"]
        return np.concatenate([
            resize(torch.from_numpy(masks[rows[i:i + batch_size]]).float()[:, None], size, nearest=True)[:, 0].numpy()
            > 0.5 for i in range(0, len(rows), batch_size)] or [np.zeros((0, size, size), bool)])


def run_planes(films: list[np.ndarray], meta: dict) -> np.ndarray:
    """(H, W) films -> (n, 1 + K, S, S) in [0, 1]: letterboxed to a run's size with the extra
    channels it was trained on (ptxssl.json / classifier.json "channels"), quantised to 8 bits
    as the cache was."""
    size, names = int(meta["image_size"]), tuple(meta.get("channels", []))
    return np.stack([letterbox_planes(film, size, names) for film in films]) / np.float32(255)


def postprocess_params(meta: dict, run_dir: str | Path) -> tuple[float, float, float | None]:
    """(threshold, min_area_fraction, bottom) from ptxssl.json; bottom is None unless the run
    chose the triplet rule. Also checks meta["tta"], so a bad meta fails before any image."""
    tta, mode = meta.get("tta", "none"), meta.get("postprocess", "tuned")
    if tta not in TTA_MODES:
        raise UserError(f"{run_dir}: ptxssl.json has tta {tta!r}, which this ptxssl does not know "
                        f"({' or '.join(TTA_MODES)}); rerun the transfer or update ptxssl")
    if mode not in POSTPROCESS_MODES:
        raise UserError(f"{run_dir}: ptxssl.json has postprocess {mode!r}, which this ptxssl does not know "
                        f"({', '.join(POSTPROCESS_MODES)}); rerun the transfer or update ptxssl")
    bottom = meta.get("bottom") if mode == "triplet" else None
    if mode == "triplet" and bottom is None:
        raise UserError(f"{run_dir}: ptxssl.json says postprocess triplet but has no bottom; rerun the transfer")
    return float(meta["threshold"]), float(meta["min_area_fraction"]), None if bottom is None else float(bottom)


def unletterbox(mask: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """Undo `letterbox` for a mask: (S, S) -> (rows, cols) bool, nearest neighbour.

    Crops the region `letterbox` filled (same geometry) and samples it at each output pixel
    centre: source index = floor((i + 0.5) * inner / out), in integers so that exact ties
    (frequent with round sizes) do not depend on float rounding (Pillow's fixed-point
    nearest resize breaks them either way).
    """
    size = mask.shape[0]
    new_h, new_w = letterbox_shape(rows, cols, size)
    top, left = (size - new_h) // 2, (size - new_w) // 2
    inner = np.asarray(mask)[top:top + new_h, left:left + new_w]  # (new_h, new_w)
    r = (2 * np.arange(rows, dtype=np.int64) + 1) * new_h // (2 * rows)  # (rows,)
    c = (2 * np.arange(cols, dtype=np.int64) + 1) * new_w // (2 * cols)  # (cols,)
    return inner[r[:, None], c[None, :]] != 0


def overlay(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(H, W) grey [0, 1] + (H, W) mask -> (H, W, 3) uint8: red tint inside, red outline."""
    grey = to_uint8(image)
    rgb = np.repeat(grey[..., None], 3, axis=2).astype(np.float32)  # (H, W, 3)
    mask = mask.astype(bool)
    rgb[mask] = 0.6 * rgb[mask] + 0.4 * np.array([255.0, 0.0, 0.0])
    edge = mask & ~ndimage.binary_erosion(mask, iterations=max(1, min(mask.shape) // 256))
    rgb[edge] = (255.0, 0.0, 0.0)
    return rgb.round().astype(np.uint8)


def predict_dicoms(run_dir: str | Path, dicom_dir: str | Path, out_csv: str | Path,
                   overlays_dir: str | Path | None = None, batch_size: int = 8,
                   progress: bool = True, on_error: str = "stop", classifier: str | Path | None = None,
                   device: str = "auto", precision: str = "auto") -> dict:
    """Segment every DICOM under `dicom_dir` with the transfer run `run_dir`; with `classifier`
    (a `--task classify` run) as a cascade: images it calls negative get an empty mask.

    Returns:
        {"csv", "images" (rows written), "positive" (non-empty masks), "skipped"
        ([(file, reason)], only with on_error="skip"), "duplicates" (ImageIds written more
        than once), "overlays" (folder or None), "gated" (images the classifier called
        negative; 0 without one)}.
    Raises:
        UserError: bad run folder, no DICOMs, an unreadable DICOM (on_error="stop").
    """
    if on_error not in ("stop", "skip"):
        raise UserError(f"--on-error must be stop or skip (got {on_error!r})")
    if batch_size < 1:
        raise UserError(f"--batch-size must be >= 1 (got {batch_size})")
    device = resolve_device(device)
    precision = inference_setup(device, precision)
    model, meta = load_model(run_dir)
    model.to(device)
    gated, cls = 0, None
    if classifier is not None:  # imported here: Lightning comes with classify, and most predictions need no classifier
        from ptxssl.transfer.classify import load_classifier

        cls, cls_meta = load_classifier(classifier)
        cls.to(device)
    dicom_dir = Path(dicom_dir)
    files = find_dicoms(dicom_dir)
    threshold, area, bottom = postprocess_params(meta, run_dir)
    overlays = Path(overlays_dir) if overlays_dir is not None else None
    rows, skipped, positive = [], [], 0  # rows: (ImageId, EncodedPixels)
    bar = tqdm(total=len(files), desc="predict", unit="img", disable=not progress)
    for start in range(0, len(files), batch_size):
        batch = []  # (path, image (H, W), dicom meta)
        for path in files[start:start + batch_size]:
            try:
                batch.append((path, *read_dicom(path)))
            except UserError as e:
                if on_error == "stop":
                    bar.close()  # end the progress line, so the error gets a line of its own
                    raise
                skipped.append((str(path), str(e)))
        bar.update(len(files[start:start + batch_size]))
        if not batch:
            continue
        films = [img for _, img, _ in batch]
        masks = binarise(predict_probs(model, run_planes(films, meta), meta, precision), threshold, area, bottom)  # (n, S, S)
        if cls is not None:
            cls_probs = predict_probs(cls, run_planes(films, cls_meta), cls_meta, precision)  # (n,)
            masks = gate(masks, cls_probs, cls_meta["threshold"])
            gated += int((cls_probs < cls_meta["threshold"]).sum())
        for (path, image, info), mask in zip(batch, masks):
            full = unletterbox(mask, *image.shape)  # (rows, cols)
            image_id = info.get("sop_uid") or path.stem
            rows.append((image_id, encode_siim(full)))
            positive += bool(full.any())
            if overlays is not None:
                png = overlays / path.relative_to(dicom_dir).with_suffix(".png")  # mirrors the tree
                with atomic_path(png) as tmp:
                    Image.fromarray(overlay(image, full)).save(tmp, format="PNG")
    bar.close()
    out_csv = Path(out_csv)
    text = io.StringIO()
    csv.writer(text, lineterminator="\n").writerows([("ImageId", "EncodedPixels"), *rows])
    write_text(out_csv, text.getvalue())
    ids = Counter(image_id for image_id, _ in rows)
    return {"csv": str(out_csv), "images": len(rows), "positive": positive,
            "skipped": skipped, "duplicates": sorted(i for i, n in ids.items() if n > 1),
            "overlays": str(overlays) if overlays is not None else None, "gated": gated}
