"""The embeddings file contract: what is written reads back exactly, and bad files are
one-line user errors that say how to make a good one."""
from __future__ import annotations

import h5py
import numpy as np
import pytest

from ptxssl.analysis.store import Embeddings, read_embeddings, write_embeddings
from ptxssl.errors import UserError
from tests.analysis.planted import embeddings


def test_roundtrip_keeps_every_dataset_strings_nan_and_attrs(tmp_path):
    emb, _ = embeddings(n=40)
    emb.ids[3] = "ünïcode/ид"
    emb.latent = np.arange(40 * 3, dtype=np.float32).reshape(40, 3)
    emb.attrs["fingerprint"] = "abc123"
    emb.attrs["sizes"] = [32, 64]  # not a scalar: stored as JSON text
    path = write_embeddings(tmp_path / "e.h5", emb)
    back = read_embeddings(path)
    np.testing.assert_array_equal(back.features, emb.features)
    assert back.features.dtype == np.float32
    np.testing.assert_array_equal(back.ids, emb.ids)
    np.testing.assert_array_equal(back.split, emb.split)
    np.testing.assert_array_equal(back.labels, emb.labels)  # NaN compares equal here
    assert np.isnan(back.labels).sum() == np.isnan(emb.labels).sum() > 0
    assert back.label_names == ["Effusion", "Mass"]
    np.testing.assert_array_equal(back.anomaly, emb.anomaly)
    np.testing.assert_array_equal(back.latent, emb.latent)
    np.testing.assert_array_equal(back.recon_error, emb.recon_error)
    assert back.attrs["fingerprint"] == "abc123" and back.attrs["n"] == 40 and back.attrs["sizes"] == "[32, 64]"
    with h5py.File(path) as h5:  # strings are variable-length UTF-8, readable without ptxssl
        assert h5py.check_string_dtype(h5["ids"].dtype).encoding == "utf-8"
    assert [p.name for p in tmp_path.iterdir()] == ["e.h5"]  # no temporary file left behind


def test_optional_datasets_are_absent_when_none(tmp_path):
    emb = Embeddings(features=np.ones((3, 2), np.float32), ids=np.array(["a", "b", "c"]),
                     split=np.array(["train", "", "test"]))
    path = write_embeddings(tmp_path / "e.h5", emb)
    with h5py.File(path) as h5:
        assert set(h5) == {"embeddings", "ids", "split"}
    back = read_embeddings(path)
    assert back.labels is None and back.anomaly is None and back.latent is None and back.recon_error is None
    assert back.label_names == [] and back.label_choices() == ["split"]


def test_rows_selects_in_the_given_order(emb_file):
    full = read_embeddings(emb_file)
    rows = np.array([17, 3, 599, 4])
    part = read_embeddings(emb_file, rows=rows)
    np.testing.assert_array_equal(part.features, full.features[rows])
    np.testing.assert_array_equal(part.ids, full.ids[rows])
    np.testing.assert_array_equal(part.anomaly, full.anomaly[rows])
    np.testing.assert_array_equal(part.labels, full.labels[rows])


def test_latent_features_and_the_error_without_one(tmp_path, emb_file):
    emb, _ = embeddings(n=10)
    emb.latent = np.full((10, 4), 7, np.float32)
    back = read_embeddings(write_embeddings(tmp_path / "vae.h5", emb), features="latent")
    assert back.features.shape == (10, 4) and (back.features == 7).all()
    with pytest.raises(UserError, match=f"{emb_file}.*no latent.*AE/VAE"):
        read_embeddings(emb_file, features="latent")


def test_a_file_without_split_reads_as_unknown_split(bare_emb_file):
    emb = read_embeddings(bare_emb_file)
    assert (emb.split == "").all() and len(emb.split) == 600
    assert emb.label_choices() == [] and emb.default_label() is None


@pytest.mark.parametrize("kind", ["missing", "text", "other_hdf5"])
def test_not_an_embeddings_file_is_a_one_line_user_error(tmp_path, kind):
    path = tmp_path / "x.h5"
    if kind == "text":
        path.write_text("image_id,label\n")
    elif kind == "other_hdf5":
        with h5py.File(path, "w") as h5:
            h5["images"] = np.zeros((2, 4, 4), np.uint8)  # e.g. a cache passed by mistake
    with pytest.raises(UserError) as err:
        read_embeddings(path)
    message = str(err.value)
    assert str(path) in message and "ptxssl embed" in message and "\n" not in message


def test_categories_name_every_label_value():
    emb, truth = embeddings(n=60)
    effusion = emb.categories("Effusion")
    assert set(effusion) == {"Effusion", "no Effusion"} and (effusion == "Effusion").sum() == (truth == 0).sum()
    assert "unknown" in set(emb.categories("Mass"))  # NaN rows
    assert set(emb.categories("anomaly")) == {"normal", "flipped", "inverted"}
    finding = emb.categories("finding")
    assert finding[4] == "Effusion" and finding[5] == "Mass" and finding[2] == "no finding"  # truth = row % 4
    assert finding[0] == "unknown"  # Effusion, but Mass unknown: one finding or two?
    assert (finding == "multiple").sum() == 0


def test_finding_marks_two_positives_as_multiple():
    emb = Embeddings(features=np.zeros((3, 1), np.float32), ids=np.array(["a", "b", "c"]), split=np.array(["", "", ""]),
                     labels=np.array([[1, 1, np.nan], [0, 1, 0], [0, np.nan, 0]], np.float32),
                     label_names=["A", "B", "C"])
    assert emb.categories("finding").tolist() == ["multiple", "B", "unknown"]


def test_unknown_label_lists_the_valid_ones():
    emb, _ = embeddings(n=20)
    with pytest.raises(UserError, match="--color-by 'Atelectasis'.*Effusion, Mass, finding, anomaly, split"):
        emb.check_label("Atelectasis")
