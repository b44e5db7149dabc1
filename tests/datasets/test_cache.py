import csv
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pydicom
import pytest

from ptxssl.datasets import cache as cache_mod
from ptxssl.datasets.cache import cache_info, prepare
from ptxssl.datasets.images import letterbox_mask
from ptxssl.datasets.rle import merge_siim
from ptxssl.errors import UserError

from .conftest import SYNTH

REPO = Path(__file__).resolve().parents[2]


def _read(path):
    with h5py.File(path, "r") as h5:
        return {k: (h5[k].asstr()[:] if h5[k].dtype.kind == "O" else h5[k][:]) for k in h5}, dict(h5.attrs)


@pytest.fixture(scope="module")
def siim_cache(synth_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("cache") / "siim.h5"
    prepare(synth_root / "siim", "siim", out, size=32, workers=1, progress=False)
    return out


def test_siim_cache_layout_masks_and_splits(siim_cache, synth_root):
    data, attrs = _read(siim_cache)
    n = SYNTH["count"]
    assert data["images"].shape == data["masks"].shape == (n, 32, 32)
    assert data["images"].dtype == np.uint8 and set(np.unique(data["masks"])) <= {0, 1}
    assert attrs["kind"] == "siim" and attrs["size"] == 32
    assert set(data["split"]) == {"train", "val", "test"}
    # patient-level: no patient in two splits; patient ids come from the DICOM headers
    assert all(p.startswith("synth-") for p in data["patient_ids"])
    for p in set(data["patient_ids"]):
        assert len(set(data["split"][data["patient_ids"] == p])) == 1
    # each mask is the merged RLE rows of its image, letterboxed like the image
    rows = {}
    with open(synth_root / "siim" / "train-rle.csv", newline="") as f:
        for r in csv.DictReader(f):
            rows.setdefault(r["ImageId"], []).append(r[" EncodedPixels"])
    for i, iid in enumerate(data["ids"]):
        expected = letterbox_mask(merge_siim(rows[iid], 64, 64), 32)
        assert np.array_equal(data["masks"][i], expected)
        # the label is the source's truth: a tiny pneumothorax may vanish at 32 px, yet stays positive
        assert data["labels"][i, 0] == float(any(r != "-1" for r in rows[iid]))
    assert data["masks"].any()


def test_independent_decoder_agrees_with_cache(siim_cache, synth_root):
    check = REPO.parent / "shared" / "hooks" / "ptxcheck.py"
    if not check.exists():
        pytest.skip(f"independent checker not found at {check}")
    out = subprocess.run([sys.executable, str(check), "cache", str(siim_cache), str(synth_root / "siim")],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "mean IoU" in out.stdout


def test_nih_and_chexpert_caches_carry_labels(synth_root, tmp_path):
    prepare(synth_root / "chestxray14", "chestxray14", tmp_path / "nih.h5", size=32, workers=1, progress=False)
    data, _ = _read(tmp_path / "nih.h5")
    with open(synth_root / "chestxray14" / "Data_Entry_2017.csv", newline="") as f:
        truth = {r["Image Index"].removesuffix(".png"): r["Finding Labels"] for r in csv.DictReader(f)}
    with h5py.File(tmp_path / "nih.h5") as h5:
        names = list(h5["labels"].attrs["names"])
    for iid, row in zip(data["ids"], data["labels"]):
        assert {names[k] for k in np.flatnonzero(row == 1)} == set(truth[iid].split("|")) - {"No Finding"}
    test_list = {n.removesuffix(".png") for n in (synth_root / "chestxray14" / "test_list.txt").read_text().split()}
    assert {i for i, s in zip(data["ids"], data["split"]) if s == "test"} == test_list
    info = cache_info(tmp_path / "nih.h5")
    assert info["images"] == SYNTH["count"] and sum(info["split"].values()) == SYNTH["count"]
    prepare(synth_root / "chexpert", "chexpert", tmp_path / "chx.h5", size=32, workers=1, progress=False)
    assert cache_info(tmp_path / "chx.h5")["labels"]["Cardiomegaly"]["positive"] >= 0


def test_resume_after_interruption_gives_the_same_cache(synth_root, tmp_path, monkeypatch):
    reference = tmp_path / "ref.h5"
    prepare(synth_root / "siim", "siim", reference, size=32, workers=1, progress=False)
    calls = []
    real_decode = cache_mod._decode

    def dying_decode(task):
        if len(calls) == 10:
            raise KeyboardInterrupt  # stands in for Ctrl-C mid-run
        calls.append(task.row)
        return real_decode(task)

    monkeypatch.setattr(cache_mod, "_decode", dying_decode)
    monkeypatch.setattr(cache_mod, "_FLUSH_EVERY", 4)
    out = tmp_path / "resumed.h5"
    with pytest.raises(KeyboardInterrupt):
        prepare(synth_root / "siim", "siim", out, size=32, workers=1, progress=False)
    assert not out.exists() and Path(f"{out}.partial").exists()  # nothing looks complete
    first = list(calls)
    calls.clear()
    monkeypatch.setattr(cache_mod, "_decode", lambda t: (calls.append(t.row), real_decode(t))[1])
    prepare(synth_root / "siim", "siim", out, size=32, workers=1, progress=False)
    assert len(calls) == SYNTH["count"] - 8  # the 8 rows flushed before the interruption are kept
    assert set(calls).isdisjoint(first[:8])
    a, _ = _read(reference)
    b, _ = _read(out)
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    assert not Path(f"{out}.partial").exists()


def test_unreadable_file_stops_with_its_name_or_is_skipped_and_recorded(synth_root, tmp_path):
    import shutil
    src = tmp_path / "siim"
    shutil.copytree(synth_root / "siim", src)
    bad = sorted(src.rglob("*.dcm"))[3]
    bad.write_bytes(b"not a dicom at all")
    with pytest.raises(UserError, match=bad.name):
        prepare(src, "siim", tmp_path / "stop.h5", size=32, workers=1, progress=False)
    summary = prepare(src, "siim", tmp_path / "skip.h5", size=32, workers=1, on_error="skip", progress=False)
    assert summary["rejected"] == 1 and summary["images"] == SYNTH["count"] - 1
    with open(tmp_path / "skip.h5.rejects.csv", newline="") as f:
        (row,) = list(csv.DictReader(f))
    assert row["image_id"] == bad.stem and row["path"] == str(bad) and row["reason"]
    data, attrs = _read(tmp_path / "skip.h5")
    assert bad.stem not in set(data["ids"]) and len(data["split"]) == SYNTH["count"] - 1
    assert attrs["n"] == SYNTH["count"] - 1


def test_existing_cache_is_not_overwritten_without_the_flag(siim_cache, synth_root):
    with pytest.raises(UserError, match="--overwrite"):
        prepare(synth_root / "siim", "siim", siim_cache, size=32, progress=False)


def test_two_workers_give_the_same_cache_as_one(synth_root, tmp_path):
    prepare(synth_root / "chestxray14", "chestxray14", tmp_path / "one.h5", size=32, workers=1, progress=False)
    prepare(synth_root / "chestxray14", "chestxray14", tmp_path / "two.h5", size=32, workers=2, progress=False)
    a, _ = _read(tmp_path / "one.h5")
    b, _ = _read(tmp_path / "two.h5")
    assert all(np.array_equal(a[k], b[k]) for k in a)


def test_cache_info_rejects_a_file_that_is_not_a_cache(tmp_path):
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"\x89HDF\r\n" + b"x" * 100)
    with pytest.raises(UserError, match="junk.h5"):
        cache_info(junk)
    with pytest.raises(UserError, match="no such cache"):
        cache_info(tmp_path / "missing.h5")


def test_prepare_real_siim_sample(shared_data, tmp_path):
    summary = prepare(shared_data / "siim", "siim", tmp_path / "real.h5", size=64, workers=1, progress=False)
    assert summary["images"] == 1
    assert any("12,046" in n or "12046" in n for n in summary["notes"])
    data, _ = _read(tmp_path / "real.h5")
    ds = pydicom.dcmread(next((shared_data / "siim").rglob("*.dcm")))
    assert data["patient_ids"][0] == ds.PatientID and not data["masks"].any()
    assert 40 < data["images"][0].mean() < 220  # a real radiograph, not padding


def test_prepare_real_nih_and_dicom_folder(shared_data, tmp_path):
    summary = prepare(shared_data / "chestxray14", "chestxray14", tmp_path / "nih.h5", size=32,
                      workers=1, progress=False)
    assert summary["images"] == 2
    summary = prepare(shared_data / "dicom", "folder", tmp_path / "dcm.h5", size=32, workers=1,
                      on_error="skip", progress=False)
    with open(tmp_path / "dcm.h5.rejects.csv", newline="") as f:
        rejected = {r["image_id"]: r["reason"] for r in csv.DictReader(f)}
    # the two 10-frame MR files are not radiographs; every chest/extremity CR decodes
    assert set(rejected) == {"emri_small_RLE", "emri_small_big_endian"}
    assert all("frame" in r for r in rejected.values())
    assert summary["images"] == len(list((shared_data / "dicom").glob("*.dcm"))) - 2


def test_qc_anomaly_labels_travel_into_the_cache(synth_root, tmp_path):
    src = synth_root / "chestxray14"
    prepare(src, "chestxray14", tmp_path / "nih.h5", size=32, workers=1, progress=False)
    data, _ = _read(tmp_path / "nih.h5")
    with open(src / "qc_anomalies.csv", newline="") as f:
        truth = {r["image_id"]: r["anomaly"] for r in csv.DictReader(f)}
    assert truth, "the synthetic folder should have at least one QC anomaly"
    assert {i: a for i, a in zip(data["ids"], data["anomaly"]) if a} == truth
    assert sum(cache_info(tmp_path / "nih.h5")["anomalies"].values()) == len(truth)


def test_qc_anomaly_file_without_its_columns_is_named(synth_root, tmp_path):
    import shutil

    src = tmp_path / "nih"
    shutil.copytree(synth_root / "chestxray14", src)
    (src / "qc_anomalies.csv").write_text("id,kind\nx,flipped\n")
    with pytest.raises(UserError, match=r"qc_anomalies\.csv lacks column"):
        prepare(src, "chestxray14", tmp_path / "bad.h5", size=32, workers=1, progress=False)
