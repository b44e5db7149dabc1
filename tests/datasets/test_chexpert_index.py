"""CheXpert index: labels 1/0/-1/blank with an uncertainty policy, frontal filtering."""
from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ptxssl.datasets.chexpert import UNCERTAINTY, index_chexpert, parse_labels
from ptxssl.datasets.labels import CHEXPERT_OBSERVATIONS as OBS
from ptxssl.errors import UserError

PREFIX = "CheXpert-v1.0-small"


def csv_text(rows: list[tuple[str, str, dict[str, str]]]) -> str:
    """rows: (path, Frontal/Lateral, {observation: "1.0"/"0.0"/"-1.0"}); others blank."""
    lines = [",".join(["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", *OBS])]
    for path, view, labels in rows:
        lines.append(",".join([path, "Female", "68", view, "AP", *(labels.get(o, "") for o in OBS)]))
    return "\n".join(lines) + "\n"


TRAIN = [
    (f"{PREFIX}/train/patient00001/study1/view1_frontal.jpg", "Frontal",
     {"Pneumothorax": "1.0", "Edema": "-1.0", "Cardiomegaly": "0.0"}),
    (f"{PREFIX}/train/patient00001/study1/view2_lateral.jpg", "Lateral", {"Pneumothorax": "1.0"}),
    (f"{PREFIX}/train/patient00002/study1/view1_frontal.jpg", "Frontal", {"No Finding": "1.0"}),
    (f"{PREFIX}/train/patient00003/study1/view1_frontal.jpg", "Frontal", {"Edema": "1.0"}),  # no file
]
VALID = [(f"{PREFIX}/valid/patient64541/study1/view1_frontal.jpg", "Frontal", {"Edema": "1.0"})]


def make(root: Path, image_root: Path, gz: bool = False) -> Path:
    """Label files in `root`, images under `image_root` (root itself, or root/PREFIX)."""
    root.mkdir(parents=True, exist_ok=True)
    for name, rows in (("train", TRAIN), ("valid", VALID)):
        text = csv_text(rows)
        if gz:
            with gzip.open(root / f"{name}.csv.gz", "wt") as f:
                f.write(text)
        else:
            (root / f"{name}.csv").write_text(text)
    for path, _, _ in TRAIN[:3] + VALID:
        file = image_root / path.split("/", 1)[1]
        file.parent.mkdir(parents=True, exist_ok=True)
        file.touch()
    return root


@pytest.mark.parametrize("layout", ["inside", "above"])
def test_fake_release(tmp_path: Path, layout: str) -> None:
    # inside: root is CheXpert-v1.0-small itself (Path's first component stripped);
    # above: root holds CheXpert-v1.0-small/ (Path used as is)
    if layout == "inside":
        root = make(tmp_path / PREFIX, tmp_path / PREFIX)
    else:
        make(tmp_path / "labels", tmp_path / PREFIX)
        root = tmp_path
        for f in (tmp_path / "labels").iterdir():
            f.rename(root / f.name)
    index = index_chexpert(root)
    pre = "" if layout == "inside" else f"{PREFIX}/"
    assert [r.image_id for r in index.records] == [
        f"{pre}train/patient00001/study1/view1_frontal",
        f"{pre}train/patient00002/study1/view1_frontal",
        f"{pre}valid/patient64541/study1/view1_frontal"]
    assert [r.patient_id for r in index.records] == ["patient00001", "patient00002", "patient64541"]
    assert [r.split for r in index.records] == [None, None, "test"]
    assert all(r.path.is_file() and r.labels.dtype == np.float32 for r in index.records)
    first = dict(zip(OBS, index.records[0].labels.tolist()))
    assert first["Pneumothorax"] == 1 and first["Edema"] == 0 and first["Cardiomegaly"] == 0
    assert sum(first.values()) == 1                                  # blanks -> 0
    notes = " ".join(index.notes)
    assert "1 rows of train.csv have no image" in notes and "patient00003" in notes
    assert "1 lateral views skipped" in notes


@pytest.mark.parametrize("policy, expected", [("zeros", 0.0), ("ones", 1.0), ("ignore", np.nan)])
def test_uncertainty_policies(tmp_path: Path, policy: str, expected: float) -> None:
    index = index_chexpert(make(tmp_path, tmp_path, gz=True), uncertainty=policy)
    edema = index.records[0].labels[OBS.index("Edema")]
    assert edema == expected or (np.isnan(expected) and np.isnan(edema))
    assert index.records[0].labels[OBS.index("Pneumothorax")] == 1.0


def test_lateral_views_kept_on_request(tmp_path: Path) -> None:
    lateral = tmp_path / "train" / "patient00001" / "study1" / "view2_lateral.jpg"
    make(tmp_path, tmp_path)
    lateral.touch()
    ids = [r.image_id for r in index_chexpert(tmp_path, frontal_only=False).records]
    assert "train/patient00001/study1/view2_lateral" in ids and len(ids) == 4


def test_bad_inputs(tmp_path: Path) -> None:
    make(tmp_path, tmp_path)
    with pytest.raises(UserError, match="uncertainty") as err:
        index_chexpert(tmp_path, uncertainty="maybe")
    assert all(p in str(err.value) for p in UNCERTAINTY) and "maybe" in str(err.value)
    (tmp_path / "train.csv").write_text("Path,Frontal/Lateral,Edema\nx.jpg,Frontal,1.0\n")
    with pytest.raises(UserError, match="Pneumothorax") as err:
        index_chexpert(tmp_path)
    assert str(tmp_path / "train.csv") in str(err.value)
    (tmp_path / "train.csv").write_text(csv_text([("a/b.jpg", "Frontal", {"Edema": "2.0"})]))
    with pytest.raises(UserError, match="Edema"):
        index_chexpert(tmp_path)
    (tmp_path / "train.csv").rename(tmp_path / "train" / "train.csv")
    with pytest.raises(UserError, match="train.csv") as err:
        index_chexpert(tmp_path)
    assert str(tmp_path) in str(err.value) and "subfolder 'train'" in str(err.value)


def test_real_csv_has_no_images(shared_data: Path) -> None:
    index = index_chexpert(shared_data / "chexpert")
    assert index.records == []
    notes = " ".join(index.notes)
    assert "223,414 rows" in notes and "32,387 lateral" in notes
    assert "191,027 rows of train.csv.gz have no image" in notes


def test_real_csv_label_parsing(shared_data: Path) -> None:
    """Every one of the 223,414 rows, each policy, against a direct pandas count."""
    frame = pd.read_csv(shared_data / "chexpert" / "train.csv.gz")
    assert len(frame) == 223_414
    raw = frame[list(OBS)]
    for policy in UNCERTAINTY:
        labels = parse_labels(frame, policy)
        assert labels.shape == (223_414, 14) and labels.dtype == np.float32
        for k, obs in enumerate(OBS):
            n_pos, n_neg = int((raw[obs] == 1).sum()), int((raw[obs] == 0).sum())
            n_unc, n_blank = int((raw[obs] == -1).sum()), int(raw[obs].isna().sum())
            assert n_pos + n_neg + n_unc + n_blank == 223_414
            col = labels[:, k]
            assert int(np.isnan(col).sum()) == (n_unc if policy == "ignore" else 0)
            assert int((col == 1).sum()) == n_pos + (n_unc if policy == "ones" else 0)
            assert int((col == 0).sum()) == n_neg + n_blank + (n_unc if policy == "zeros" else 0)
    pneumo = frame["Pneumothorax"].value_counts(dropna=False)
    assert (pneumo[1.0], pneumo[0.0], pneumo[-1.0]) == (19_448, 56_341, 3_145)
