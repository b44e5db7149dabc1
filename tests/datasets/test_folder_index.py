"""Unlabelled folder index, and the source registry `get_index`."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ptxssl.datasets.folder import index_folder
from ptxssl.datasets.images import IMAGE_SUFFIXES
from ptxssl.datasets.sources import SOURCES, get_index
from ptxssl.errors import UserError


def touch(root: Path, *names: str) -> None:
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).touch()


def test_every_image_under_root(tmp_path: Path) -> None:
    touch(tmp_path, "a/1.dcm", "a/b/2.DCM", "3.png", "c/4.JPG", "c/5.jpeg", "6.dicom",
          "notes.txt", "a/report.pdf", ".hidden/7.png", "a/._1.dcm")
    index = index_folder(tmp_path)
    assert index.kind == "folder" and not index.has_masks and index.label_names == []
    assert [r.image_id for r in index.records] == ["3", "6", "a/1", "a/b/2", "c/4", "c/5"]
    for r in index.records:
        assert r.labels is None and r.rles == () and r.patient_id == "" and r.split is None
        assert r.path.is_file() and r.path.relative_to(tmp_path).with_suffix("").as_posix() == r.image_id


def test_same_name_different_suffix(tmp_path: Path) -> None:
    touch(tmp_path, "x.dcm", "x.png")
    index = index_folder(tmp_path)
    assert [r.path.name for r in index.records] == ["x.dcm"]
    assert any("x" in n and "skipped" in n for n in index.notes)


def test_empty_folder(tmp_path: Path) -> None:
    touch(tmp_path, "readme.txt")
    with pytest.raises(UserError) as err:
        index_folder(tmp_path)
    assert str(tmp_path) in str(err.value) and all(s in str(err.value) for s in IMAGE_SUFFIXES)


def test_symlink_loop_is_walked_once(tmp_path: Path) -> None:
    touch(tmp_path, "a/1.png")
    (tmp_path / "a" / "loop").symlink_to(tmp_path / "a")
    assert [r.image_id for r in index_folder(tmp_path).records] == ["a/1"]


def test_registry(tmp_path: Path) -> None:
    assert set(SOURCES) == {"siim", "candid", "chestxray14", "chexpert", "folder"}
    touch(tmp_path, "1.png")
    assert [r.image_id for r in get_index("folder", tmp_path).records] == ["1"]
    with pytest.raises(UserError) as err:
        get_index("mimic", tmp_path)
    assert "mimic" in str(err.value) and all(k in str(err.value) for k in SOURCES)
    with pytest.raises(UserError, match="nowhere"):
        get_index("folder", tmp_path / "nowhere")
    with pytest.raises(UserError, match="frontal"):
        get_index("folder", tmp_path, frontal_only=True)


def test_registry_passes_options(shared_data: Path) -> None:
    index = get_index("chexpert", shared_data / "chexpert", uncertainty="ones", frontal_only=False)
    assert index.kind == "chexpert" and any("'ones'" in n for n in index.notes)
    with pytest.raises(UserError, match="uncertainty"):
        get_index("chexpert", shared_data / "chexpert", uncertainty="twos")


# --- labels for a plain folder (prepare --dataset folder --labels-csv) --------------------------

def _labelled_folder(root: Path) -> Path:
    touch(root, "png/a1.png", "png/a2.png", "png/b1.png", "png/c1.png")
    csv = root / "meta.csv"
    csv.write_text("patient_id,image_id,sex,projection,age,scanner\n"
                   "p1,a1,m,ap,61,x\np1,a2,m,pa,61,y\np2,b1,f,,40,z\np3,zz,f,pa,33,x\n")
    return csv


def test_categorical_columns_become_one_vs_rest_labels(tmp_path: Path) -> None:
    csv = _labelled_folder(tmp_path)
    index = index_folder(tmp_path / "png", labels_csv=csv)
    # numeric age is left out; two-valued columns give one label, the three-valued scanner three
    assert index.label_names == ["sex=f", "projection=ap", "scanner=x", "scanner=y", "scanner=z"]
    by_id = {r.image_id: r for r in index.records}
    np.testing.assert_array_equal(by_id["a1"].labels, [0, 1, 1, 0, 0])
    np.testing.assert_array_equal(by_id["b1"].labels[:2], [1, np.nan])  # an empty cell is unknown
    assert np.isnan(by_id["c1"].labels).all()  # an image the CSV does not name: all unknown
    assert (by_id["a1"].patient_id, by_id["a2"].patient_id, by_id["c1"].patient_id) == ("p1", "p1", "")
    assert any("3 of 4 images" in n for n in index.notes)


def test_named_columns_and_bad_label_files_are_one_line_errors(tmp_path: Path) -> None:
    csv = _labelled_folder(tmp_path)
    assert index_folder(tmp_path / "png", labels_csv=csv, label_columns="sex").label_names == ["sex=f"]
    with pytest.raises(UserError, match="lacks column"):
        index_folder(tmp_path / "png", labels_csv=csv, label_columns="height")
    other = tmp_path / "other.csv"
    other.write_text("file,sex\nx1.png,m\nx2.png,f\n")
    with pytest.raises(UserError, match="none of its file values names an image.*check --id-column"):
        index_folder(tmp_path / "png", labels_csv=other, id_column="file")
    twice = tmp_path / "twice.csv"
    twice.write_text("image_id,sex\na1,m\na1,f\n")
    with pytest.raises(UserError, match="repeats"):
        index_folder(tmp_path / "png", labels_csv=twice)


def test_real_metadata_of_the_shared_radiographs(shared_data: Path) -> None:
    root = shared_data / "mhh-covid"
    index = get_index("folder", root / "png", labels_csv=root / "data.csv")
    assert index.label_names == ["sex=f", "modality=CR", "projection=ap"]
    assert len(index.records) == 243 and all(not np.isnan(r.labels).all() for r in index.records)
    assert len({r.patient_id for r in index.records}) == 71  # patient-level splits see the real patients
