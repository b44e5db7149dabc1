"""A corpus of bad inputs through the CLI: each is one line naming the file or option, exit
code 2, no traceback; `--on-error skip` records the bad file and keeps the good ones; and
nothing written before is damaged by the failing command."""
from __future__ import annotations

import csv
import shutil

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
import torchvision
from safetensors.torch import save_file

from ptxssl.encoders import build_encoder, save_encoder

from .conftest import (FAST_PRETRAIN, FAST_TRANSFER, assert_ok, assert_user_error, dicoms, invoke,
                       tree_digest)
from .corpus import (BAD_DICOMS, add_siim_rows, empty_file, not_a_dicom, read_rows, truncated_dicom,
                     write_rows)


def _prepare(src, out, *extra, dataset="siim"):
    return invoke("prepare", src, "--dataset", dataset, "--out", out, "--size", 32, "--workers", 1, *extra)


def _ids(cache) -> list[str]:
    with h5py.File(cache, "r") as h5:
        return list(h5["ids"].asstr()[:])


# ---------------------------------------------------------------- broken images in prepare


@pytest.mark.parametrize("kind", list(BAD_DICOMS))
def test_prepare_stops_at_a_bad_dicom_naming_it_and_keeps_the_old_cache(kind, siim_src, siim_cache, tmp_path):
    bad = BAD_DICOMS[kind](dicoms(siim_src)[0], siim_src / "dicom-images-train")
    add_siim_rows(siim_src / "train-rle.csv", (bad.stem, "-1"))
    out = tmp_path / "cache.h5"
    shutil.copy(siim_cache, out)  # a cache the user already has, rebuilt with --overwrite
    before = tree_digest(out)
    line = assert_user_error(_prepare(siim_src, out, "--overwrite"), bad)
    assert "--on-error skip" in line
    assert tree_digest(out) == before  # the existing cache is untouched by the failed rebuild
    assert_ok(invoke("info", out))


def test_prepare_skip_records_every_bad_dicom_and_caches_the_good_ones(siim_src, tmp_path):
    good_ids = sorted(p.stem for p in dicoms(siim_src))
    folder = siim_src / "dicom-images-train" / "extra"
    folder.mkdir()
    bad = {kind: make(dicoms(siim_src)[0], folder) for kind, make in BAD_DICOMS.items()}
    bad["empty"] = empty_file(folder, "1.2.3.4.5.dcm")
    add_siim_rows(siim_src / "train-rle.csv", *[(p.stem, "-1") for p in bad.values()])
    out = tmp_path / "cache.h5"
    result = assert_ok(_prepare(siim_src, out, "--on-error", "skip"))
    assert f"{len(good_ids)} images, {len(bad)} rejected" in result.output
    assert sorted(_ids(out)) == good_ids
    rejects = pd.read_csv(f"{out}.rejects.csv", dtype=str)
    assert list(rejects.columns) == ["image_id", "path", "reason"]
    assert sorted(rejects["path"]) == sorted(str(p) for p in bad.values())
    assert sorted(rejects["image_id"]) == sorted(p.stem for p in bad.values())
    reasons = dict(zip(rejects["path"], rejects["reason"]))
    assert "truncated" in reasons[str(bad["truncated"])]
    assert "no pixel data" in reasons[str(bad["no-pixel-data"])]
    assert "not a DICOM" in reasons[str(bad["not-dicom"])]
    assert "0 bytes" in reasons[str(bad["empty"])]
    with h5py.File(out, "r") as h5:  # the kept rows are whole images, not zeros
        assert h5["images"].shape[0] == len(good_ids) and "status" not in h5
        assert (h5["images"][:].reshape(len(good_ids), -1).max(axis=1) > 0).all()


def test_prepare_zero_byte_png_stops_or_is_skipped(nih_src, tmp_path):
    bad = empty_file(nih_src / "images", "00000099_000.png")
    entry = nih_src / "Data_Entry_2017.csv"
    rows = read_rows(entry)
    write_rows(entry, rows + [["00000099_000.png", "No Finding", "0", "99", *rows[1][4:]]])
    assert_user_error(_prepare(nih_src, tmp_path / "a.h5", dataset="chestxray14"), bad, "0 bytes")
    assert not (tmp_path / "a.h5").exists()
    result = assert_ok(_prepare(nih_src, tmp_path / "b.h5", "--on-error", "skip", dataset="chestxray14"))
    assert "1 rejected" in result.output
    assert "00000099_000" not in _ids(tmp_path / "b.h5") and len(_ids(tmp_path / "b.h5")) == len(rows) - 1
    rejects = pd.read_csv(tmp_path / "b.h5.rejects.csv", dtype=str)
    assert rejects["path"].tolist() == [str(bad)]


# ---------------------------------------------------------------- label files


def _drop_column(path, name):
    rows = read_rows(path)
    k = [c.strip() for c in rows[0]].index(name)
    write_rows(path, [r[:k] + r[k + 1:] for r in rows])


def test_nih_label_file_missing_a_column(nih_src, tmp_path):
    _drop_column(nih_src / "Data_Entry_2017.csv", "Patient ID")
    assert_user_error(_prepare(nih_src, tmp_path / "c.h5", dataset="chestxray14"),
                      nih_src / "Data_Entry_2017.csv", "Patient ID")
    assert not (tmp_path / "c.h5").exists() and not (tmp_path / "c.h5.partial").exists()


def test_nih_label_file_with_a_number_for_a_finding(nih_src, tmp_path):
    entry = nih_src / "Data_Entry_2017.csv"
    rows = read_rows(entry)
    rows[3][1] = "42"
    write_rows(entry, rows)
    assert_user_error(_prepare(nih_src, tmp_path / "c.h5", dataset="chestxray14"), entry, "'42'",
                      "Finding Labels")


def test_nih_duplicate_ids_and_rows_without_image_are_reported_not_cached(nih_src, tmp_path):
    entry = nih_src / "Data_Entry_2017.csv"
    rows = read_rows(entry)
    n = len(rows) - 1
    duplicate = [rows[1][0], "Mass", *rows[1][2:]]  # same image, other findings: the first row wins
    orphan = ["00000777_000.png", "Mass", "0", "777", *rows[1][4:]]
    write_rows(entry, rows + [duplicate, orphan])
    result = assert_ok(_prepare(nih_src, tmp_path / "c.h5", dataset="chestxray14"))
    assert "1 duplicate Image Index rows were dropped" in result.output
    assert "00000777_000.png" in result.output and "no PNG" in result.output
    ids = _ids(tmp_path / "c.h5")
    assert len(ids) == len(set(ids)) == n and "00000777_000" not in ids
    with h5py.File(tmp_path / "c.h5", "r") as h5:
        names = list(h5["labels"].attrs["names"])
        first = h5["labels"][ids.index(rows[1][0][:-4]), names.index("Mass")]
    assert first == (1.0 if "Mass" in rows[1][1] else 0.0)


def test_label_file_whose_ids_match_no_image(nih_src, tmp_path):
    entry = nih_src / "Data_Entry_2017.csv"
    rows = read_rows(entry)
    write_rows(entry, [rows[0]] + [[f"9{r[0]}", *r[1:]] for r in rows[1:]])
    assert_user_error(_prepare(nih_src, tmp_path / "c.h5", dataset="chestxray14"), "no images", nih_src)


def test_siim_label_file_missing_a_column(siim_src, tmp_path):
    rle = siim_src / "train-rle.csv"
    rows = read_rows(rle)
    write_rows(rle, [["ImageId", "Mask"], *rows[1:]])
    assert_user_error(_prepare(siim_src, tmp_path / "c.h5"), rle, "EncodedPixels")


def test_siim_empty_label_file(siim_src, tmp_path):
    rle = siim_src / "train-rle.csv"
    rle.write_bytes(b"")
    assert_user_error(_prepare(siim_src, tmp_path / "c.h5"), rle)


@pytest.mark.parametrize("rle, problem", [("12 five", "non-integer"), ("4000 200", "ends at pixel"),
                                          ("3 4 5", "odd number")], ids=["text", "overrun", "odd"])
def test_siim_bad_rle_stops_naming_the_image_or_is_skipped(rle, problem, siim_src, tmp_path):
    rows = read_rows(siim_src / "train-rle.csv")
    victim = rows[1][0]
    rows[1][1] = rle
    write_rows(siim_src / "train-rle.csv", rows)
    assert_user_error(_prepare(siim_src, tmp_path / "a.h5"), victim, problem)
    assert not (tmp_path / "a.h5").exists()
    result = assert_ok(_prepare(siim_src, tmp_path / "b.h5", "--on-error", "skip"))
    assert "1 rejected" in result.output and victim not in _ids(tmp_path / "b.h5")
    assert pd.read_csv(tmp_path / "b.h5.rejects.csv", dtype=str)["image_id"].tolist() == [victim]


def test_siim_duplicate_rows_and_rows_without_image(siim_src, tmp_path):
    rle = siim_src / "train-rle.csv"
    rows = read_rows(rle)
    positive = next(r for r in rows[1:] if r[1].strip() != "-1")
    add_siim_rows(rle, tuple(positive), ("1.2.3.999", "-1"))
    result = assert_ok(_prepare(siim_src, tmp_path / "c.h5"))
    assert "1 exact duplicate CSV rows were dropped" in result.output
    assert "1.2.3.999" in result.output
    ids = _ids(tmp_path / "c.h5")
    assert len(ids) == len(set(ids)) == len(dicoms(siim_src)) and "1.2.3.999" not in ids
    # the duplicated mask is not counted twice: the cached mask equals the single-row one
    single = tmp_path / "single.h5"
    write_rows(rle, rows)
    assert_ok(_prepare(siim_src, single))
    with h5py.File(tmp_path / "c.h5", "r") as a, h5py.File(single, "r") as b:
        assert np.array_equal(a["masks"][:], b["masks"][:])


# ---------------------------------------------------------------- a cache cut short


@pytest.fixture(params=[0.5, 0.97], ids=["half", "tail"])
def cut_cache(request, siim_cache, tmp_path):
    data = siim_cache.read_bytes()
    path = tmp_path / "cut.h5"
    path.write_bytes(data[:int(len(data) * request.param)])
    return path


def test_cache_cut_short_is_refused_by_every_reader(cut_cache, tmp_path):
    assert_user_error(invoke("info", cut_cache), cut_cache)
    assert_user_error(invoke("pretrain", "--data", cut_cache, "--out", tmp_path / "p", "--max-steps", 1,
                             *FAST_PRETRAIN), cut_cache)
    assert_user_error(invoke("transfer", "--data", cut_cache, "--out", tmp_path / "t", "--epochs", 1,
                             *FAST_TRANSFER), cut_cache)
    assert_user_error(invoke("embed", "--encoder", "random", "--data", cut_cache, "--out", tmp_path / "e.h5"),
                      cut_cache)
    for folder in ("p", "t"):  # a refused run leaves no run folder behind
        assert not (tmp_path / folder).exists()
    assert not (tmp_path / "e.h5").exists()


def test_prepare_partial_file_is_not_a_cache(siim_cache, tmp_path):
    partial = tmp_path / "x.h5.partial"
    with h5py.File(partial, "w") as h5:  # what a killed prepare leaves: rows, no split yet
        h5.create_dataset("images", (4, 32, 32), np.uint8)
        h5.create_dataset("status", (4,), np.uint8)
    assert_user_error(invoke("info", partial), partial)
    assert_user_error(invoke("pretrain", "--data", partial, "--out", tmp_path / "p", *FAST_PRETRAIN), partial)


# ---------------------------------------------------------------- encoder files


@pytest.fixture(scope="module")
def resnet18_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("r18") / "encoder.safetensors"
    state = {k: v.contiguous() for k, v in torchvision.models.resnet18(weights=None).state_dict().items()}
    save_file(state, str(path))
    return path


def test_encoder_of_another_architecture(resnet18_file, siim_cache, tmp_path):
    common = ["--data", siim_cache, "--epochs", 1, *FAST_TRANSFER]
    line = assert_user_error(invoke("transfer", "--encoder", resnet18_file, "--out", tmp_path / "a", *common),
                             resnet18_file)
    assert "resnet34" in line
    assert_user_error(invoke("transfer", "--encoder", f"imagenet:{resnet18_file}", "--out", tmp_path / "b",
                             *common), resnet18_file, "resnet34")
    assert_user_error(invoke("embed", "--encoder", resnet18_file, "--data", siim_cache, "--out",
                             tmp_path / "e.h5"), resnet18_file)
    assert not any((tmp_path / n).exists() for n in ("a", "b", "e.h5"))


def test_three_channel_encoder_into_a_one_channel_run(siim_cache, tmp_path):
    save_encoder(build_encoder(3), tmp_path / "enc3", {"method": "test", "in_channels": 3, "image_size": 32})
    weights = tmp_path / "enc3" / "encoder.safetensors"
    line = assert_user_error(invoke("transfer", "--encoder", tmp_path / "enc3", "--data", siim_cache, "--out",
                                    tmp_path / "run", "--epochs", 1, *FAST_TRANSFER), weights)
    assert "--in-channels 3" in line
    assert_user_error(invoke("embed", "--encoder", weights, "--data", siim_cache, "--out", tmp_path / "e.h5"),
                      weights, "3 input channels")
    assert not (tmp_path / "run").exists()


def test_encoder_file_whose_json_disagrees_or_that_is_cut_short(siim_cache, tmp_path):
    save_encoder(build_encoder(1), tmp_path / "enc", {"method": "test", "in_channels": 3, "image_size": 32})
    weights = tmp_path / "enc" / "encoder.safetensors"
    assert_user_error(invoke("embed", "--encoder", weights, "--data", siim_cache, "--out", tmp_path / "a.h5"),
                      weights, "encoder.json")
    save_encoder(build_encoder(1), tmp_path / "cut", {"method": "test", "in_channels": 1, "image_size": 32})
    cut = tmp_path / "cut" / "encoder.safetensors"
    cut.write_bytes(cut.read_bytes()[:100_000])
    assert_user_error(invoke("transfer", "--encoder", cut, "--data", siim_cache, "--out", tmp_path / "t",
                             *FAST_TRANSFER), cut)


# ---------------------------------------------------------------- embeddings files


@pytest.mark.parametrize("command", ["cluster", "anomaly", "umap"])
def test_file_that_is_not_an_embeddings_file(command, siim_cache, tmp_path):
    text = tmp_path / "notes.h5"
    text.write_text("embeddings: see the spreadsheet\n")
    out = ["--out", tmp_path / ("plot.png" if command == "umap" else "out")]
    assert_user_error(invoke(command, text, *out), text)
    # the most likely mix-up: the cache instead of the embeddings made from it
    before = tree_digest(siim_cache)
    assert_user_error(invoke(command, siim_cache, *out), siim_cache, "embeddings")
    assert tree_digest(siim_cache) == before
    assert not (tmp_path / "out").exists() and not (tmp_path / "plot.png").exists()


# ---------------------------------------------------------------- config files


@pytest.mark.parametrize("command", ["pretrain", "transfer", "compare"])
def test_config_with_an_unknown_key(command, siim_cache, tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text(f"data: {siim_cache}\nepochs: 1\nlearning_rat: 0.1\n")
    extra = ["--encoder", "random"] if command == "compare" else []
    line = assert_user_error(invoke(command, "--config", config, "--out", tmp_path / "run", *extra),
                             config, "learning_rat")
    assert "valid keys" in line
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("text, named", [("- epochs\n- 1\n", "mapping"), ("epochs: [1\n", "YAML"),
                                         ("epochs: many\n", "epochs")], ids=["list", "syntax", "type"])
def test_config_that_is_not_a_mapping_of_options(text, named, tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text(text)
    assert_user_error(invoke("pretrain", "--config", config, "--out", tmp_path / "run"), config, named)


# ---------------------------------------------------------------- predict


@pytest.fixture
def predict_dir(raw, tmp_path):
    """Four good DICOMs and one of each bad kind (plus an empty .dcm), in a nested tree."""
    folder = tmp_path / "incoming"
    (folder / "b").mkdir(parents=True)
    good = dicoms(raw / "siim")[:4]
    for p in good:
        shutil.copy(p, folder / p.name)
    bad = [truncated_dicom(good[0], folder / "b"), not_a_dicom(folder / "b"),
           BAD_DICOMS["no-pixel-data"](good[0], folder / "b"), empty_file(folder / "b", "empty.dcm")]
    return folder, [p.stem for p in good], bad


def test_predict_stops_at_a_bad_dicom_and_keeps_the_old_submission(predict_dir, transfer_run, tmp_path):
    folder, _, bad = predict_dir
    out = tmp_path / "submission.csv"
    out.write_text("ImageId,EncodedPixels\nold,-1\n")
    before = tree_digest(out)
    first_bad = sorted(bad)[0]
    assert_user_error(invoke("predict", folder, "--model", transfer_run, "--out", out), first_bad)
    assert tree_digest(out) == before


def test_predict_skip_leaves_bad_dicoms_out_and_lists_them(predict_dir, transfer_run, tmp_path):
    folder, good_ids, bad = predict_dir
    before = tree_digest(transfer_run)
    out = tmp_path / "submission.csv"
    result = assert_ok(invoke("predict", folder, "--model", transfer_run, "--out", out, "--on-error", "skip"))
    with open(out, newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["ImageId", "EncodedPixels"]
    assert sorted(r[0] for r in rows[1:]) == sorted(good_ids)
    for p in bad:
        assert f"skipped {p}" in result.output
    assert f"{len(good_ids)} images" in result.output and f"{len(bad)} skipped" in result.output
    assert tree_digest(transfer_run) == before  # predicting never touches the model's run


def test_predict_with_a_folder_that_is_not_a_transfer_run(pretrain_run, predict_dir, tmp_path):
    folder, _, _ = predict_dir
    assert_user_error(invoke("predict", folder, "--model", pretrain_run, "--out", tmp_path / "s.csv"),
                      pretrain_run, "not a transfer run")


def test_resnet34_encoder_loads_as_a_control(siim_cache, tmp_path):
    """The happy path beside the refusals above: a real resnet34 encoder file is accepted."""
    torch.manual_seed(0)
    save_encoder(build_encoder(1), tmp_path / "enc", {"method": "test", "in_channels": 1, "image_size": 32})
    assert_ok(invoke("embed", "--encoder", tmp_path / "enc", "--data", siim_cache, "--out", tmp_path / "e.h5"))
    assert_user_error(invoke("embed", "--encoder", tmp_path / "enc", "--data", siim_cache, "--out",
                             tmp_path / "e.h5"), tmp_path / "e.h5", "--overwrite")
