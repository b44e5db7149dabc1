import h5py
import pytest
import torch
from torch.utils.data import DataLoader

from ptxssl.datasets.cache import prepare
from ptxssl.datasets.torch_data import CacheDataset
from ptxssl.errors import UserError


@pytest.fixture(scope="module")
def cache(synth_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("td") / "siim.h5"
    prepare(synth_root / "siim", "siim", out, size=32, workers=1, progress=False)
    return out


def test_two_dataloader_workers_read_every_row_exactly(cache):
    ds = CacheDataset(cache, with_masks=True)
    seen = {}
    for batch in DataLoader(ds, batch_size=5, num_workers=2, shuffle=True):
        for row, img, mask in zip(batch["index"], batch["image"], batch["mask"]):
            seen[int(row)] = (img, mask)
    with h5py.File(cache) as h5:
        images, masks = h5["images"][:], h5["masks"][:]
    assert sorted(seen) == list(range(len(images)))
    for row, (img, mask) in seen.items():
        assert img.shape == (1, 32, 32) and img.dtype == torch.float32
        assert torch.equal(img[0], torch.from_numpy(images[row]).float() / 255)
        assert torch.equal(mask[0], torch.from_numpy(masks[row]).float())


def test_split_filter_and_rows(cache):
    with h5py.File(cache) as h5:
        split = h5["split"].asstr()[:]
    train = CacheDataset(cache, split="train")
    assert len(train) == (split == "train").sum()
    assert set(split[train.rows]) == {"train"}
    both = CacheDataset(cache, split=["val", "test"])
    assert len(both) + len(train) == len(split)
    sub = CacheDataset(cache, split="train", rows=train.rows[:3])
    assert list(sub.rows) == list(train.rows[:3])
    assert "labels" in train[0] and train[0]["labels"].shape == (1,)


def test_bad_split_and_missing_masks_are_user_errors(cache, synth_root, tmp_path):
    with pytest.raises(UserError, match="unknown split"):
        CacheDataset(cache, split="validation")
    prepare(synth_root / "chestxray14", "chestxray14", tmp_path / "nih.h5", size=32, workers=1, progress=False)
    with pytest.raises(UserError, match="no masks"):
        CacheDataset(tmp_path / "nih.h5", with_masks=True)
