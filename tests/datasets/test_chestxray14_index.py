"""ChestX-ray14 index: PNGs anywhere under the folder joined to Data_Entry_2017(_v2020).csv."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ptxssl.datasets.chestxray14 import index_chestxray14, parse_findings
from ptxssl.datasets.labels import NIH_FINDINGS
from ptxssl.errors import UserError

# the original 2017 file: "OriginalImage[Width,Height]" unquoted (so it splits into two
# header cells) and a trailing comma on every line; a re-saved copy may quote it instead
COMMON = "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
HEADER_2017 = COMMON + "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y],"
HEADER_QUOTED = COMMON + '"OriginalImage[Width,Height]","OriginalImagePixelSpacing[x,y]"'
ROWS = [
    ("00000001_000.png", "Cardiomegaly", 0, 1),
    ("00000001_001.png", "Cardiomegaly|Emphysema", 1, 1),
    ("00000002_000.png", "No Finding", 0, 2),
    ("00000003_000.png", "Effusion|Pneumothorax|Hernia", 0, 3),
    ("00000004_000.png", "Mass", 0, 4),              # no image on disk
]


def write_entry(path: Path, rows=ROWS, header: str = HEADER_2017) -> Path:
    lines = [header] + [f"{n},{f},{u},{p},50,M,PA,2048,2500,0.143,0.143," for n, f, u, p in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def touch(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()


@pytest.fixture(params=[HEADER_2017, HEADER_QUOTED])
def fake_nih(tmp_path: Path, request) -> Path:
    write_entry(tmp_path / "Data_Entry_2017.csv", header=request.param)
    for i, (name, *_) in enumerate(ROWS[:4]):
        touch(tmp_path / f"images_00{i % 2 + 1}" / "images" / name)   # the release's nesting
    touch(tmp_path / "images_002" / "images" / "99999999_000.png")  # no row
    (tmp_path / "test_list.txt").write_text("00000002_000.png\n00000004_000.png\n")
    return tmp_path


def test_fake_release(fake_nih: Path) -> None:
    index = index_chestxray14(fake_nih)
    assert index.kind == "chestxray14" and index.label_names == list(NIH_FINDINGS)
    assert [r.image_id for r in index.records] == ["00000001_000", "00000001_001",
                                                   "00000002_000", "00000003_000"]
    by_id = {r.image_id: r for r in index.records}
    on = lambda r: {NIH_FINDINGS[k] for k in np.flatnonzero(r.labels)}  # noqa: E731
    assert on(by_id["00000001_001"]) == {"Cardiomegaly", "Emphysema"}
    assert on(by_id["00000003_000"]) == {"Effusion", "Pneumothorax", "Hernia"}
    assert by_id["00000002_000"].labels.tolist() == [0.0] * 14
    assert by_id["00000001_000"].patient_id == "1" and by_id["00000003_000"].patient_id == "3"
    assert [r.split for r in index.records] == [None, None, "test", None]
    assert all(r.labels.dtype == np.float32 and r.path.is_file() for r in index.records)
    notes = " ".join(index.notes)
    assert "1 of 5 rows" in notes and "00000004_000.png" in notes
    assert "1 PNGs on disk have no row" in notes and "99999999_000.png" in notes


def test_unknown_finding(tmp_path: Path) -> None:
    csv = write_entry(tmp_path / "Data_Entry_2017.csv", ROWS + [("x.png", "Effusion|Covid", 0, 9)])
    with pytest.raises(UserError, match="Covid") as err:
        index_chestxray14(tmp_path)
    assert str(csv) in str(err.value)


def test_missing_label_file(tmp_path: Path) -> None:
    touch(tmp_path / "images" / "00000001_000.png")
    with pytest.raises(UserError) as err:
        index_chestxray14(tmp_path)
    msg = str(err.value)
    assert "Data_Entry_2017.csv" in msg and "Data_Entry_2017_v2020.csv" in msg and str(tmp_path) in msg


def test_missing_columns(tmp_path: Path) -> None:
    csv = tmp_path / "Data_Entry_2017.csv"
    csv.write_text("Image Index,Labels,Patient ID\na.png,Mass,1\n")
    with pytest.raises(UserError, match="Finding Labels") as err:
        index_chestxray14(tmp_path)
    assert str(csv) in str(err.value) and "Labels" in str(err.value)


def test_parse_findings_blank_is_unknown() -> None:
    labels = parse_findings(pd.Series(["No Finding", "Mass | Hernia", ""]), Path("x.csv"))
    assert labels[0].tolist() == [0.0] * 14 and np.isnan(labels[2]).all()
    assert labels[1, NIH_FINDINGS.index("Mass")] == 1 and labels[1].sum() == 2


def expected_labels(csv: Path, name: str) -> list[float]:
    frame = pd.read_csv(csv)
    findings = frame.loc[frame["Image Index"] == name, "Finding Labels"].item().split("|")
    return [float(f in findings) for f in NIH_FINDINGS]


def test_real_csv_two_images(shared_data: Path) -> None:
    root = shared_data / "chestxray14"
    index = index_chestxray14(root)
    assert [r.image_id for r in index.records] == ["00000001_000", "00027426_000"]
    first, second = index.records
    assert {NIH_FINDINGS[k] for k in np.flatnonzero(first.labels)} == {"Cardiomegaly"}
    assert second.labels.tolist() == [0.0] * 14                       # No Finding
    for r in index.records:
        assert r.labels.tolist() == expected_labels(root / "Data_Entry_2017_v2020.csv", r.path.name)
    assert (first.patient_id, second.patient_id) == ("1", "27426")
    assert any("112,118 of 112,120 rows" in n for n in index.notes)


def test_real_csv_under_the_2017_name(tmp_path: Path, shared_data: Path) -> None:
    src = shared_data / "chestxray14"
    (tmp_path / "Data_Entry_2017.csv").symlink_to(src / "Data_Entry_2017_v2020.csv")
    (tmp_path / "images_001").mkdir()
    (tmp_path / "images_001" / "images").symlink_to(src / "images")   # a symlinked folder
    index = index_chestxray14(tmp_path)
    assert [r.image_id for r in index.records] == ["00000001_000", "00027426_000"]
    assert index.records[0].labels[NIH_FINDINGS.index("Cardiomegaly")] == 1
    (tmp_path / "Data_Entry_2017_v2020.csv").write_text("Image Index,Finding Labels,Patient ID\n")
    index = index_chestxray14(tmp_path)  # the corrected v2020 release wins, with a note
    assert index.records == [] and any("Both" in n for n in index.notes)


def test_real_csv_label_counts(shared_data: Path) -> None:
    frame = pd.read_csv(shared_data / "chestxray14" / "Data_Entry_2017_v2020.csv")
    labels = parse_findings(frame["Finding Labels"], Path("csv"))
    direct = frame["Finding Labels"].str.get_dummies(sep="|")
    assert labels.shape == (112_120, 14) and not np.isnan(labels).any()
    assert labels.sum(0).astype(int).tolist() == [int(direct[f].sum()) for f in NIH_FINDINGS]
    assert int((labels.sum(1) == 0).sum()) == int(direct["No Finding"].sum()) == 60_361
