"""Unlabelled folder index, and the source registry `get_index`."""
from __future__ import annotations

from pathlib import Path

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
