"""`ptxssl synth`: write procedural chest X-rays in the real datasets' on-disk formats.

Every loader, the demo and the tests then run the same code paths as on real data:
SIIM-ACR (nested DICOM + relative RLE `train-rle.csv`), NIH ChestX-ray14 (PNG +
`Data_Entry_2017.csv` + official split lists) and CheXpert (JPEG study folders + `train.csv`
/ `valid.csv`), and on request CANDID-PTX (flat `dataset/<SOPInstanceUID>.dcm` +
`Pneumothorax_reports.csv`, relative RLE like SIIM's). A few images per format get a QC anomaly (flipped, rotated, inverted), listed
in `qc_anomalies.csv` by cache id (the file path without suffix); masks follow their image so labels stay true.

Each image is drawn from its own seeded generator (seed, format, image number), so the output
is identical for a seed whatever the number of worker processes.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from pydicom.uid import generate_uid
from tqdm import tqdm

from ptxssl.datasets.dicom import write_dicom
from ptxssl.datasets.labels import CHEXPERT_OBSERVATIONS, NIH_FINDINGS
from ptxssl.datasets.qc import QC_ANOMALIES, QC_FILE, apply_anomaly
from ptxssl.datasets.phantom import Patient, render, sample_findings, sample_patient
from ptxssl.datasets.rle import encode_siim
from ptxssl.errors import UserError
from ptxssl.files import atomic_path, write_csv
from ptxssl.parallel import parallel_map

FORMATS = ("siim", "chestxray14", "chexpert", "candid")
DEFAULT_FORMATS = FORMATS[:3]  # "all": the ones every stage and the demo use
_FORMAT_ID = {name: i for i, name in enumerate(FORMATS)}

# Which NIH-style phantom findings make each CheXpert observation positive.
_CHEXPERT_FROM_NIH: dict[str, set[str]] = {
    "Enlarged Cardiomediastinum": {"Cardiomegaly"},
    "Cardiomegaly": {"Cardiomegaly"},
    "Lung Opacity": {"Atelectasis", "Consolidation", "Infiltration", "Pneumonia", "Edema",
                     "Mass", "Nodule", "Fibrosis"},
    "Lung Lesion": {"Mass", "Nodule"},
    "Edema": {"Edema"}, "Consolidation": {"Consolidation"}, "Pneumonia": {"Pneumonia"},
    "Atelectasis": {"Atelectasis"}, "Pneumothorax": {"Pneumothorax"},
    "Pleural Effusion": {"Effusion"}, "Pleural Other": {"Pleural_Thickening"},
    "Fracture": set(), "Support Devices": set(),
}


@dataclass(frozen=True)
class Job:
    """One image to render: everything a worker process needs, nothing shared."""

    fmt: str
    index: int
    patient: int
    followup: int
    pneumothorax: bool
    anomaly: str | None
    size: int
    seed: int
    out: Path
    view: str = "frontal"


def _rng(seed: int, fmt: str, *key: int) -> np.random.Generator:
    return np.random.default_rng([seed, _FORMAT_ID[fmt], *key])


def _patient(job: Job) -> Patient:
    return sample_patient(_rng(job.seed, job.fmt, 1, job.patient))


def _draw(job: Job) -> tuple[np.ndarray, list[np.ndarray], frozenset[str], np.random.Generator]:
    # findings belong to the study (shared by its frontal and lateral views), the rest to the image
    findings = sample_findings(_rng(job.seed, job.fmt, 2, job.patient, job.followup), job.pneumothorax)
    rng = _rng(job.seed, job.fmt, 0, job.index)
    ph = render(_patient(job), findings, job.size, rng, view=job.view)
    image, masks = apply_anomaly(ph.image, ph.pneumothorax, job.anomaly, rng)
    return image, masks, findings, rng


def _uid(job: Job, what: str) -> str:
    return generate_uid(entropy_srcs=[f"ptxssl-synth-{job.seed}-{job.fmt}-{job.index}-{what}"])


def _write_siim(job: Job, folder: str = "dicom-images-train", nested: bool = True) -> dict:
    """SIIM-ACR: DICOMs under study/series folders; CANDID-PTX (nested=False): flat, by SOP UID."""
    image, masks, _, rng = _draw(job)
    bits = int(rng.choice([8, 12, 16]))
    mono1 = bool(rng.random() < 0.2)
    top = 2 ** bits - 1
    pixels = np.round(image * top).astype(np.uint8 if bits <= 8 else np.uint16)
    if mono1:
        pixels = top - pixels  # MONOCHROME1 stores dense tissue as dark
    study, series, sop = _uid(job, "study"), _uid(job, "series"), _uid(job, "sop")
    path = job.out / folder / (f"{study}/{series}/{sop}.dcm" if nested else f"{sop}.dcm")
    path.parent.mkdir(parents=True, exist_ok=True)
    write_dicom(path, pixels, bits_stored=bits, monochrome1=mono1,
                patient_id=f"synth-{job.patient:05d}", study_uid=study, series_uid=series,
                sop_uid=sop, modality=str(rng.choice(["CR", "DX"])),
                view_position=str(rng.choice(["PA", "AP"], p=[0.7, 0.3])),
                pixel_spacing=(0.14 * 1024 / job.size,) * 2)
    rles = [encode_siim(m) for m in masks if m.any()] or ["-1"]
    return {"id": sop, "rles": rles}


def _write_nih(job: Job) -> dict:
    image, _, findings, rng = _draw(job)
    name = f"{job.patient + 1:08d}_{job.followup:03d}.png"
    path = job.out / "images" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        Image.fromarray(np.round(image * 255).astype(np.uint8)).save(tmp, format="PNG")
    labels = "|".join(f for f in NIH_FINDINGS if f in findings) or "No Finding"
    who = _rng(job.seed, job.fmt, 5, job.patient)  # a patient keeps sex and ages with follow-ups
    sex, age = "F" if _patient(job).female else "M", int(who.integers(18, 85)) + job.followup // 2
    return {"id": name.removesuffix(".png"), "row": [name, labels, job.followup, job.patient + 1, age, sex,
                                str(rng.choice(["PA", "AP"], p=[0.6, 0.4])), job.size, job.size,
                                0.143, 0.143]}


def _labeler_no_finding(labels: dict[str, str], findings: frozenset[str]) -> str:
    """No Finding as the CheXpert labeler sets it: "1.0", or blank (never 0 or -1).

    chexpert-labeler (Irvin et al., 2019, AAAI; stages/aggregate.py) writes No Finding = 1
    only when no mention outside Support Devices is positive or uncertain: any pathology
    observation at 1 or -1 leaves it blank. Its No Finding mention list also holds findings
    without a column of their own ("emphysema", "hernia", ...), whose positive mention
    blocks No Finding too; so does a phantom finding that maps to no CheXpert observation.
    The real CheXpert-v1.0-small train.csv agrees: No Finding is 1.0 or blank, and 1.0 in
    none of its 223,414 rows beside a positive or uncertain pathology.
    """
    pathology = [v for obs, v in labels.items() if obs not in ("No Finding", "Support Devices")]
    other = findings - set().union(*_CHEXPERT_FROM_NIH.values())  # e.g. Emphysema, Hernia
    return "" if other or any(v in ("1.0", "-1.0") for v in pathology) else "1.0"


def _chexpert_labels(findings: frozenset[str], rng: np.random.Generator) -> list[str]:
    """CheXpert's 1 / 0 / -1 / blank from the rendered findings, with realistic noise:
    some positives are uncertain (-1), most negatives are unmentioned (blank); No Finding
    then follows the labeler's rule (`_labeler_no_finding`)."""
    labels: dict[str, str] = {}
    for obs in CHEXPERT_OBSERVATIONS:
        if obs == "No Finding":
            continue
        if _CHEXPERT_FROM_NIH[obs] & findings:
            labels[obs] = "-1.0" if rng.random() < 0.1 else "1.0"
        else:
            u = rng.random()
            labels[obs] = "0.0" if u < 0.2 else "-1.0" if u < 0.23 else ""
    labels["No Finding"] = _labeler_no_finding(labels, findings)
    return [labels[obs] for obs in CHEXPERT_OBSERVATIONS]


def _write_chexpert(job: Job) -> dict:
    image, _, findings, rng = _draw(job)
    split = "valid" if job.patient % 10 == 9 else "train"
    view_n = 2 if job.view == "lateral" else 1
    rel = f"{split}/patient{job.patient + 1:05d}/study{job.followup + 1}/view{view_n}_{job.view}.jpg"
    path = job.out / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        Image.fromarray(np.round(image * 255).astype(np.uint8)).save(tmp, format="JPEG", quality=95)
    # one study = one report: the lateral view carries the labels of its frontal view
    study_rng = _rng(job.seed, job.fmt, 4, job.patient, job.followup)
    sex = "Female" if _patient(job).female else "Male"  # as drawn (breast shadows) in the image
    return {"id": rel.removesuffix(".jpg"), "split": split, "row": [
        f"CheXpert-v1.0-small/{rel}", sex,
        int(study_rng.integers(18, 90)), job.view.capitalize(),
        str(study_rng.choice(["AP", "PA"])) if job.view == "frontal" else "",
        *_chexpert_labels(findings, study_rng)]}


_WRITERS = {"siim": _write_siim, "chestxray14": _write_nih, "chexpert": _write_chexpert,
            "candid": lambda job: _write_siim(job, folder="dataset", nested=False)}


def _plan(fmt: str, count: int, size: int, seed: int, positive_fraction: float,
          anomaly_fraction: float, out: Path) -> list[Job]:
    """Who is imaged when: patients with several studies, CheXpert studies with a lateral
    view too, an exact share of positive studies and of anomalous frontal images."""
    rng = _rng(seed, fmt, 3)
    max_studies = {"siim": 2, "candid": 2, "chestxray14": 5, "chexpert": 4}[fmt]
    slots: list[tuple[int, int, str]] = []  # (patient, study, view)
    patient = 0
    while len(slots) < count:
        for study in range(int(rng.integers(1, max_studies + 1))):
            slots.append((patient, study, "frontal"))
            if fmt == "chexpert" and rng.random() < 0.2:
                slots.append((patient, study, "lateral"))
        patient += 1
    slots = slots[:count]
    studies = sorted({(p, s) for p, s, _ in slots})
    positive = {studies[i] for i in rng.permutation(len(studies))[: round(len(studies) * positive_fraction)]}
    frontal = [i for i, (_, _, view) in enumerate(slots) if view == "frontal"]
    anomaly: dict[int, str] = {}
    for j, i in enumerate(rng.permutation(frontal)[: round(count * anomaly_fraction)]):
        anomaly[int(i)] = QC_ANOMALIES[j % len(QC_ANOMALIES)]
    return [Job(fmt, i, p, s, (p, s) in positive, anomaly.get(i), size, seed, out, view)
            for i, (p, s, view) in enumerate(slots)]


def _write_tables(fmt: str, out: Path, jobs: list[Job], results: list[dict]) -> None:
    """The label files of each format, with the real headers."""
    if fmt in ("siim", "candid"):
        rows = [[r["id"], rle] for r in results for rle in r["rles"]]
        name, header = (("train-rle.csv", ["ImageId", " EncodedPixels"]) if fmt == "siim" else
                        ("Pneumothorax_reports.csv", ["SOPInstanceUID", "EncodedPixels"]))
        write_csv(out / name, header, rows)
    elif fmt == "chestxray14":
        header = ["Image Index", "Finding Labels", "Follow-up #", "Patient ID", "Patient Age",
                  "Patient Gender", "View Position", "OriginalImage[Width", "Height]",
                  "OriginalImagePixelSpacing[x", "y]"]
        write_csv(out / "Data_Entry_2017.csv", header, [r["row"] for r in results])
        test_patients = {j.patient for j in jobs if j.patient % 5 == 4}
        for name, keep in (("test_list.txt", True), ("train_val_list.txt", False)):
            names = [r["row"][0] for j, r in zip(jobs, results) if (j.patient in test_patients) == keep]
            with atomic_path(out / name) as tmp:
                tmp.write_text("".join(n + "\n" for n in names))
    else:
        header = ["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", *CHEXPERT_OBSERVATIONS]
        for split in ("train", "valid"):
            write_csv(out / f"{split}.csv", header, [r["row"] for r in results if r["split"] == split])
    anomalies = [[r["id"], j.anomaly] for j, r in zip(jobs, results) if j.anomaly]
    write_csv(out / QC_FILE, ["image_id", "anomaly"], anomalies)


def _run(job: Job) -> dict:
    return _WRITERS[job.fmt](job)


def synthesize(out: str | Path, count: int = 200, size: int = 256, positive_fraction: float = 0.3,
               seed: int = 0, formats: tuple[str, ...] = DEFAULT_FORMATS, anomaly_fraction: float = 0.06,
               workers: int = 1, progress: bool = True) -> dict[str, int]:
    """Write `count` phantom images per format under `out/<format>/`.

    Returns the number of images written per format. The label files are written last, so
    a killed run never leaves a folder whose CSV names images that are missing.
    """
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise UserError(f"--format: unknown format {unknown[0]!r}; choose from {', '.join(FORMATS)} or all")
    if count < 1 or size < 16:
        raise UserError(f"--count must be >= 1 and --size >= 16 (got {count}, {size})")
    if not 0.0 <= positive_fraction <= 1.0:
        raise UserError(f"--positive-fraction must be in [0, 1] (got {positive_fraction})")
    written = {}
    for fmt in formats:
        fmt_out = Path(out) / fmt
        jobs = _plan(fmt, count, size, seed, positive_fraction, anomaly_fraction, fmt_out)
        bar = tqdm(total=len(jobs), desc=f"synth {fmt}", unit="img", disable=not progress)
        results = []
        for r in parallel_map(_run, jobs, workers):
            results.append(r)
            bar.update()
        bar.close()
        _write_tables(fmt, fmt_out, jobs, results)
        written[fmt] = len(results)
    return written
