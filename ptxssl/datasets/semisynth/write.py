"""`ptxssl synth --backgrounds DIR`: real radiographs + real mask shapes -> a SIIM folder.

Each readable background (PNG/JPEG/DICOM under DIR, read as `prepare` reads them) is scaled
to --size on its longer side and written as an 8-bit MONOCHROME2 DICOM: as a negative
(pixels unchanged), as a positive (a pneumothorax rendered into a mask shape over its lung
fields), or as both with `paired`. Backgrounds that cannot be read, or whose lung fields
cannot be found (not a frontal chest film), are skipped and listed in `skipped.csv`;
`backgrounds.csv` says which background and mask shape every image came from. The label
file is written last, so a killed run never leaves a CSV naming missing images.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.uid import generate_uid
from tqdm import tqdm

from ptxssl.datasets.dicom import write_dicom
from ptxssl.datasets.images import IMAGE_SUFFIXES, letterbox_shape, read_image, resize, to_uint8
from ptxssl.datasets.indexing import require_dir, scan_files
from ptxssl.datasets.rle import encode_siim
from ptxssl.datasets.semisynth.lungs import lung_fields
from ptxssl.datasets.semisynth.render import Style, render_pneumothorax
from ptxssl.datasets.semisynth.shapes import inside_share, load_shapes, procedural_shape, real_shape
from ptxssl.errors import UserError
from ptxssl.files import write_csv
from ptxssl.parallel import parallel_map

MAX_TRIES = 30  # mask shapes drawn per positive before the background is given up
NOT_A_CHEST = "no lung fields found (not a frontal chest film, or lungs merge with the air outside)"


@dataclass(frozen=True)
class Job:
    """One background and what to make of it; everything a worker needs."""

    index: int
    path: Path
    root: Path
    kinds: tuple[str, ...]  # "negative" and/or "positive"
    size: int
    seed: int
    out: Path
    masks: str | None  # SIIM label file of real shapes; None = procedural shapes
    style: Style
    min_inside: float


def load_background(path: str | Path, size: int) -> np.ndarray:
    """A background as written: read, longer side scaled to `size`. (H, W) float32 [0, 1]."""
    image, _ = read_image(path)
    return resize(image, *letterbox_shape(*image.shape, size))


def place_shape(lungs: np.ndarray, masks: str | None, rng: np.random.Generator,
                min_inside: float) -> tuple[np.ndarray, str] | None:
    """A mask shape with at least `min_inside` of it over the lungs, and where it came from."""
    shapes = load_shapes(masks) if masks else None
    for _ in range(MAX_TRIES):
        if shapes:
            image_id, rles = shapes[int(rng.integers(len(shapes)))]
            mask, source = real_shape(image_id, rles, *lungs.shape, rng), image_id
        else:
            mask, source = procedural_shape(lungs, rng), "procedural"
        if inside_share(mask, lungs) >= min_inside:
            return mask, source
    return None


def render_job(job: Job) -> dict:
    """Render one background's images (pixels as uint8, masks) without writing them."""
    try:
        background = load_background(job.path, job.size)
    except UserError as err:
        return {"skipped": str(err)}
    lungs = lung_fields(background)
    if lungs is None:
        return {"skipped": NOT_A_CHEST}
    rng = np.random.default_rng([job.seed, 11, job.index])
    images = []
    for kind in job.kinds:
        if kind == "negative":
            images.append({"kind": kind, "pixels": to_uint8(background), "mask": None, "shape": ""})
            continue
        placed = place_shape(lungs, job.masks, rng, job.min_inside)
        if placed is None:
            return {"skipped": f"no mask shape fell {job.min_inside:.0%} inside its lung fields "
                               f"in {MAX_TRIES} tries"}
        mask, source = placed
        pixels = to_uint8(render_pneumothorax(background, mask, job.style))
        images.append({"kind": kind, "pixels": pixels, "mask": mask, "shape": source})
    return {"images": images}


def _uid(job: Job, what: str) -> str:
    return generate_uid(entropy_srcs=[f"ptxssl-semisynth-{job.seed}-{job.index}-{what}"])


def _write(job: Job) -> dict:
    result = render_job(job)
    rows = []
    for image in result.get("images", []):
        study, series, sop = (_uid(job, f"{image['kind']}-{w}") for w in ("study", "series", "sop"))
        path = job.out / "dicom-images-train" / study / series / f"{sop}.dcm"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_dicom(path, image["pixels"], bits_stored=8, monochrome1=False,
                    patient_id=f"bg-{job.index:05d}", study_uid=study, series_uid=series, sop_uid=sop,
                    pixel_spacing=(0.14 * 1024 / job.size,) * 2)
        rle = encode_siim(image["mask"]) if image["mask"] is not None else "-1"
        rows.append([sop, rle, str(job.path.relative_to(job.root)), image["kind"], image["shape"]])
    return {"rows": rows, "skipped": result.get("skipped")}


def list_backgrounds(root: Path) -> list[Path]:
    """Image files under `root`, recursively, sorted (hidden files skipped)."""
    root = require_dir(root, "--backgrounds")
    found = scan_files(root, IMAGE_SUFFIXES)
    if not found:
        raise UserError(f"--backgrounds {root}: no {'/'.join(IMAGE_SUFFIXES)} files in it")
    return [root / p for p in found]


def synthesize_on_backgrounds(out: str | Path, backgrounds: str | Path, masks: str | Path | None = None,
                              size: int = 256, positive_fraction: float = 0.3, paired: bool = False,
                              count: int | None = None, seed: int = 0, style: Style = Style(),
                              min_inside: float = 0.7, workers: int = 1, progress: bool = True) -> dict:
    """Write `out/siim/` from the radiographs under `backgrounds` (see the module docstring).

    A seeded `positive_fraction` of the backgrounds become positives and the rest negatives
    (one image each); with `paired`, every background gives a negative and a positive, which
    share a PatientID so a patient-level split keeps them together. Returns counts.
    """
    root, siim = Path(backgrounds), Path(out) / "siim"
    if not 0.0 <= positive_fraction <= 1.0:
        raise UserError(f"--positive-fraction must be in [0, 1] (got {positive_fraction})")
    if masks is not None and not Path(masks).is_file():
        raise UserError(f"--masks {masks}: file not found; pass SIIM's train-rle.csv")
    if masks is not None:
        load_shapes(str(masks))  # a bad label file fails here, not in a worker
    paths = list_backgrounds(root)
    rng = np.random.default_rng([seed, 12])
    order = rng.permutation(len(paths))[: count or len(paths)]
    positives = set(order[: round(len(order) * positive_fraction)].tolist())
    jobs = [Job(int(i), paths[i], root, ("negative", "positive") if paired else
                ("positive",) if i in positives else ("negative",), size, seed, siim,
                str(masks) if masks else None, style, min_inside) for i in sorted(order)]
    rows, skipped = [], []
    bar = tqdm(total=len(jobs), desc="synth siim on backgrounds", unit="bg", disable=not progress)
    for job, result in zip(jobs, parallel_map(_write, jobs, workers)):
        rows += result["rows"]
        if result["skipped"]:
            skipped.append([str(job.path.relative_to(root)), result["skipped"]])
        bar.update()
    bar.close()
    siim.mkdir(parents=True, exist_ok=True)
    write_csv(siim / "skipped.csv", ["background", "reason"], skipped)
    write_csv(siim / "backgrounds.csv", ["ImageId", "background", "kind", "mask_shape"],
               [[r[0], *r[2:]] for r in rows])
    write_csv(siim / "qc_anomalies.csv", ["image_id", "anomaly"], [])
    write_csv(siim / "train-rle.csv", ["ImageId", " EncodedPixels"], [r[:2] for r in rows])
    return {"images": len(rows), "positives": sum(r[3] == "positive" for r in rows),
            "backgrounds": len(jobs), "skipped": len(skipped)}
