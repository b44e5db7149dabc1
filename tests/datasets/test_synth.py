import csv
import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest

from ptxssl.datasets.labels import CHEXPERT_OBSERVATIONS
from ptxssl.datasets.rle import decode_siim
from ptxssl.datasets.synth import _chexpert_labels, synthesize
from ptxssl.errors import UserError

from .conftest import SYNTH


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_siim_every_dicom_has_rows_and_positives_decode(synth_root):
    siim = synth_root / "siim"
    rows = _rows(siim / "train-rle.csv")
    by_id: dict[str, list[str]] = {}
    for r in rows:
        by_id.setdefault(r["ImageId"], []).append(r[" EncodedPixels"])
    dcms = list(siim.rglob("*.dcm"))
    assert len(dcms) == SYNTH["count"] == len(by_id)
    positives = 0
    for p in dcms:
        ds = pydicom.dcmread(p)
        assert p.stem == ds.SOPInstanceUID and p.parent.name == ds.SeriesInstanceUID
        assert ds.PatientID and ds.StudyInstanceUID and ds.PixelSpacing and ds.ViewPosition in ("PA", "AP")
        assert ds.pixel_array.max() < 2 ** ds.BitsStored
        rles = [x for x in by_id[ds.SOPInstanceUID] if x != "-1"]
        for rle in rles:
            assert decode_siim(rle, ds.Rows, ds.Columns).any()
        positives += bool(rles)
    assert positives == pytest.approx(SYNTH["count"] * SYNTH["positive_fraction"], abs=2)


def test_siim_writes_every_bit_depth_and_both_photometrics(tmp_path):
    synthesize(tmp_path, count=40, size=32, seed=3, formats=("siim",), progress=False)
    headers = [pydicom.dcmread(p, stop_before_pixels=True) for p in (tmp_path / "siim").rglob("*.dcm")]
    assert {h.BitsStored for h in headers} == {8, 12, 16}
    assert {h.PhotometricInterpretation for h in headers} == {"MONOCHROME1", "MONOCHROME2"}
    assert {h.Modality for h in headers} <= {"CR", "DX"}


def test_chestxray14_layout_and_patient_split_lists(synth_root):
    nih = synth_root / "chestxray14"
    rows = _rows(nih / "Data_Entry_2017.csv")
    assert len(rows) == SYNTH["count"]
    assert all((nih / "images" / r["Image Index"]).is_file() for r in rows)
    patients = {r["Patient ID"] for r in rows}
    assert len(patients) < len(rows)  # several images per patient
    test = set((nih / "test_list.txt").read_text().split())
    trainval = set((nih / "train_val_list.txt").read_text().split())
    assert test.isdisjoint(trainval) and test | trainval == {r["Image Index"] for r in rows}
    patient_of = {r["Image Index"]: r["Patient ID"] for r in rows}
    assert {patient_of[i] for i in test}.isdisjoint({patient_of[i] for i in trainval})
    assert any("|" in r["Finding Labels"] or r["Finding Labels"] != "No Finding" for r in rows)


def test_chexpert_layout_labels_and_lateral_views(tmp_path):
    synthesize(tmp_path, count=40, size=32, seed=2, formats=("chexpert",), progress=False)
    chx = tmp_path / "chexpert"
    train, valid = _rows(chx / "train.csv"), _rows(chx / "valid.csv")
    assert len(train) + len(valid) == 40 and valid
    for r in train + valid:
        assert r["Path"].startswith("CheXpert-v1.0-small/")
        assert (chx / r["Path"].split("/", 1)[1]).is_file()
        assert {r[o] for o in CHEXPERT_OBSERVATIONS} <= {"1.0", "0.0", "-1.0", ""}
    views = {r["Frontal/Lateral"] for r in train + valid}
    assert views == {"Frontal", "Lateral"}
    # a study's lateral view carries the same report as its frontal view
    by_study: dict[str, set] = {}
    for r in train + valid:
        by_study.setdefault(r["Path"].rsplit("/", 1)[0], set()).add(tuple(r[o] for o in CHEXPERT_OBSERVATIONS))
    assert all(len(v) == 1 for v in by_study.values())


# CheXpert's pathology observations: all but No Finding and Support Devices
PATHOLOGY = [o for o in CHEXPERT_OBSERVATIONS if o not in ("No Finding", "Support Devices")]


def test_chexpert_no_finding_follows_the_labeler(tmp_path):
    """No Finding = 1 never beside a positive or uncertain pathology, and is written
    where none is (unless an unmapped phantom finding, e.g. Emphysema, blocks it)."""
    synthesize(tmp_path, count=120, size=32, seed=2, formats=("chexpert",), progress=False)
    frame = pd.concat([pd.read_csv(tmp_path / "chexpert" / f"{s}.csv") for s in ("train", "valid")])
    path = frame[PATHOLOGY]
    found = path.isin([1, -1]).any(axis=1)
    uncertain_only = (path == -1).any(axis=1) & ~(path == 1).any(axis=1)
    no_finding = frame["No Finding"]
    assert uncertain_only.sum() >= 5                      # the rule is exercised on -1 rows
    assert set(no_finding.dropna()) == {1.0}              # 1 or blank, as the labeler writes
    assert not ((no_finding == 1) & found).any()
    assert (no_finding[~found] == 1).mean() >= 0.75 and (no_finding == 1).sum() >= 10


def test_chexpert_no_finding_rule_per_study():
    for k in range(200):
        labels = dict(zip(CHEXPERT_OBSERVATIONS, _chexpert_labels(frozenset(), np.random.default_rng(k))))
        found = any(labels[o] in ("1.0", "-1.0") for o in PATHOLOGY)
        assert labels["No Finding"] == ("" if found else "1.0")
    # a finding with a CheXpert column, and ones the labeler files under No Finding (emphysema, hernia)
    for findings in ({"Pneumothorax"}, {"Emphysema"}, {"Hernia"}):
        assert _chexpert_labels(frozenset(findings), np.random.default_rng(0))[0] == ""


def test_real_chexpert_no_finding_rule(shared_data):
    """The real train.csv: No Finding is 1 or blank, never 1 beside a positive or uncertain
    pathology; 6,099 rows with none are blank too (other findings, e.g. emphysema)."""
    frame = pd.read_csv(shared_data / "chexpert" / "train.csv.gz", usecols=["No Finding", *PATHOLOGY])
    found = frame[PATHOLOGY].isin([1, -1]).any(axis=1)
    no_finding = frame["No Finding"]
    assert len(frame) == 223_414 and set(no_finding.dropna()) == {1.0}
    assert int(((no_finding == 1) & found).sum()) == 0
    assert (int((~found).sum()), int((no_finding == 1).sum())) == (28_480, 22_381)


def test_qc_anomalies_listed_for_every_format(synth_root):
    for fmt in ("siim", "chestxray14", "chexpert"):
        rows = _rows(synth_root / fmt / "qc_anomalies.csv")
        assert len(rows) == round(SYNTH["count"] * 0.06)
        assert {r["anomaly"] for r in rows} <= {"flipped", "rotated", "inverted"}


def test_same_seed_same_files_any_worker_count_other_seed_differs(tmp_path):
    kw = dict(count=6, size=32, formats=("siim", "chestxray14"), progress=False)
    synthesize(tmp_path / "a", seed=5, workers=1, **kw)
    synthesize(tmp_path / "b", seed=5, workers=2, **kw)
    synthesize(tmp_path / "c", seed=6, workers=1, **kw)
    a, b, c = _digest(tmp_path / "a"), _digest(tmp_path / "b"), _digest(tmp_path / "c")
    assert a == b
    assert a["siim/train-rle.csv"] != c["siim/train-rle.csv"]


def test_bad_options_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="--format"):
        synthesize(tmp_path, formats=("dicomdir",))
    with pytest.raises(UserError, match="--positive-fraction"):
        synthesize(tmp_path, positive_fraction=1.5)
