"""`ptxssl plant`: a copy of a real image folder with known QC anomalies, to score the anomaly stage.

Real archives hold flipped, rotated and inverted films, but nobody has listed which. Planting
them makes the answer key: a seeded share of the images is flipped left-right, rotated by
+-90 degrees or inverted (kinds in turn), and `qc_anomalies.csv` (image_id, anomaly; "" for a
normal film) goes beside them, where `prepare --dataset folder` reads it.

Every image, planted or not, is decoded and written the same way (8-bit PNG at its own size,
under its own relative path), so no file format, compression or bit depth tells a planted film
from a normal one; only the planted change does. Image ids (path without suffix) stay the
source's, so the source's labels CSV still matches. DICOM headers are not carried: give patient
ids through `--labels-csv` when the copy is prepared.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from ptxssl.datasets.folder import index_folder
from ptxssl.datasets.images import read_image, to_uint8
from ptxssl.datasets.qc import QC_ANOMALIES, QC_FILE, apply_anomaly
from ptxssl.errors import UserError
from ptxssl.files import atomic_path, write_csv
from ptxssl.parallel import parallel_map


def parse_kinds(text: str) -> tuple[str, ...]:
    """"flipped,inverted" -> ("flipped", "inverted"); an unknown kind is a UserError naming the valid ones."""
    kinds = tuple(k.strip() for k in text.split(",") if k.strip())
    bad = [k for k in kinds if k not in QC_ANOMALIES]
    if bad or not kinds:
        raise UserError(f"--kinds {text!r}: choose from {', '.join(QC_ANOMALIES)} (comma-separated)")
    return kinds


def _write(job: tuple[Path, Path, str, int]) -> None:
    src, dst, anomaly, seed = job
    image, _ = read_image(src)  # (H, W) in [0, 1]
    image, _ = apply_anomaly(image, [], anomaly, np.random.default_rng(seed))
    with atomic_path(dst) as tmp:
        Image.fromarray(to_uint8(image)).save(tmp, format="PNG")


def plant_anomalies(src: str | Path, out: str | Path, fraction: float = 0.15, kinds: tuple[str, ...] = QC_ANOMALIES,
                    seed: int = 0, workers: int = 2) -> dict[str, int]:
    """Write every image of `src` to `out` as PNG with `fraction` of them given a QC anomaly, and
    `out/qc_anomalies.csv`. Returns {kind: count, "images": total}."""
    if not 0 < fraction < 1:
        raise UserError(f"--fraction must be between 0 and 1 (got {fraction})")
    src, out = Path(src), Path(out)
    if out.resolve() == src.resolve() or src.resolve() in out.resolve().parents:
        raise UserError(f"--out {out}: write the copy outside {src}, so the source stays as it is")
    records = index_folder(src).records
    rng = np.random.default_rng(seed)
    anomaly = {int(i): kinds[j % len(kinds)] for j, i in enumerate(rng.permutation(len(records))[
        : max(1, round(len(records) * fraction))])}
    jobs = [(r.path, out / f"{r.image_id}.png", anomaly.get(i, ""), seed * 1_000_003 + i)
            for i, r in enumerate(records)]
    for _ in parallel_map(_write, jobs, workers):
        pass
    write_csv(out / QC_FILE, ["image_id", "anomaly"], [(r.image_id, anomaly.get(i, "")) for i, r in enumerate(records)])
    counts = {k: sum(v == k for v in anomaly.values()) for k in kinds}
    return {**counts, "images": len(records)}
