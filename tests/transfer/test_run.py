"""`transfer()` end to end on a tiny SIIM cache: outputs, label subsets, freezing, resume."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import segmentation_models_pytorch as smp
import torch
from click.testing import CliRunner

from ptxssl.cli import cli
from ptxssl.errors import UserError
from ptxssl.datasets.dicom import read_dicom
from ptxssl.datasets.images import letterbox
from ptxssl.datasets.rle import decode_siim
from ptxssl.datasets.torch_data import CacheDataset
from ptxssl.encoders import NORMALIZATION, build_encoder, save_encoder
from ptxssl.transfer.compare import compare
from ptxssl.transfer.metrics import DEFAULT_AREA_FRACTIONS, TRIPLET_BOTTOMS, TRIPLET_TOPS, postprocess_triplet
from ptxssl.transfer.predict import predict_dicoms, unletterbox
from ptxssl.transfer.run import resolve_config, transfer
from tests.helpers import synthetic_cache
from tests.transfer.test_predict import _write_dicoms

FAST = {"image_size": 32, "batch_size": 4, "workers": 0, "epochs": 2, "patience": 0}


@pytest.fixture(scope="module")
def siim_cache(tmp_path_factory):
    """48 SIIM-format images at 32 px; 60/20/20 split so val and test have positives."""
    return synthetic_cache(tmp_path_factory.mktemp("transfer_data"), "siim", count=48, seed=2, source_size=64,
                           positive_fraction=0.5, fractions=(0.6, 0.2, 0.2))


def _run(cache, out, **kw):
    cfg = resolve_config(None, {"data": str(cache), "out": str(out), **FAST, **kw})
    return transfer(cfg, progress=False)


def test_transfer_writes_metrics_model_and_subset(siim_cache, tmp_path):
    metrics = _run(siim_cache, tmp_path / "run", label_count=10)
    run = tmp_path / "run"
    for name in ("config.yaml", "labelled.csv", "metrics.csv", "metrics.json", "test_dice.csv",
                 "ptxssl.json", "model/config.json", "model/model.safetensors"):
        assert (run / name).is_file(), name
    assert not (run / "checkpoints").exists()  # a finished run drops its ~0.3 GB training checkpoints
    assert json.loads((run / "metrics.json").read_text()) == metrics
    test = metrics["test"]
    assert 0 <= test["siim_dice"] <= 1 and 0 <= test["positive_dice"] <= 1
    # post-processing was tuned on val and recorded for predict
    meta = json.loads((run / "ptxssl.json").read_text())
    assert meta["threshold"] == metrics["val_tuned"]["threshold"] and meta["image_size"] == 32
    # the labelled subset: 10 images, stratified (both classes), all from the train split
    subset = pd.read_csv(run / "labelled.csv")
    assert len(subset) == metrics["labelled_images"] == 10 and set(subset["pneumothorax"]) == {0, 1}
    # per-image test Dice averages to the reported score
    dice = pd.read_csv(run / "test_dice.csv")["dice"]
    assert len(dice) == metrics["test_images"] and dice.mean() == pytest.approx(test["siim_dice"], abs=1e-5)
    # the saved model loads with smp alone
    model = smp.from_pretrained(str(run / "model"))
    assert isinstance(model, smp.Unet)


def test_pretrained_encoder_starts_the_unet_and_freezing_keeps_it(siim_cache, tmp_path):
    torch.manual_seed(7)
    encoder = build_encoder(1)
    save_encoder(encoder, tmp_path / "enc", {"method": "test", "in_channels": 1, "image_size": 32})
    _run(siim_cache, tmp_path / "frozen", encoder=str(tmp_path / "enc"), epochs=1, freeze_epochs=1,
         frozen_bn="as-is")
    unet = smp.from_pretrained(str(tmp_path / "frozen" / "model"))
    # frozen for the whole run with its own statistics: every encoder tensor, BatchNorm running
    # statistics included, is still the pretrained one, while the decoder learned
    for k, v in encoder.state_dict().items():
        assert torch.equal(unet.encoder.state_dict()[k], v), k
    fresh = smp.Unet("resnet34", encoder_weights=None, in_channels=1, classes=1)
    assert any(not torch.equal(a, b) for a, b in zip(unet.decoder.state_dict().values(),
                                                     fresh.decoder.state_dict().values()))


def test_a_frozen_encoder_gets_batchnorm_statistics_of_the_labelled_images_first(siim_cache, tmp_path):
    """--frozen-bn precise (the default): before the first step the frozen encoder's BatchNorm
    statistics are re-estimated on the labelled images, then stand still; the weights never move."""
    torch.manual_seed(7)
    encoder = build_encoder(1)
    save_encoder(encoder, tmp_path / "enc", {"method": "test", "in_channels": 1, "image_size": 32})
    metrics = _run(siim_cache, tmp_path / "frozen", encoder=str(tmp_path / "enc"), epochs=2, freeze_epochs=-1,
                   label_count=12)
    labelled = pd.read_csv(tmp_path / "frozen" / "labelled.csv")
    assert len(labelled) == 12 and metrics["frozen_bn"] == {"protocol": "precise", "images": 12}  # 3 batches of 4
    unet = smp.from_pretrained(str(tmp_path / "frozen" / "model"))
    own = unet.encoder.state_dict()
    for k, v in encoder.state_dict().items():
        if "running" not in k and "num_batches" not in k:
            assert torch.equal(own[k], v), k  # weights frozen
    # bn1's running mean is the mean of conv1 over the labelled images (a plain average of equal batches)
    data = CacheDataset(siim_cache, rows=np.flatnonzero(np.isin(CacheDataset(siim_cache).ids, labelled.image_id)))
    with torch.no_grad():
        x = torch.stack([data[i]["image"] for i in range(len(data))])  # (n, 1, 32, 32), the run's size
        acts = encoder.conv1((x - NORMALIZATION["mean"]) / NORMALIZATION["std"])
    # float32 means over 12 x 16 x 16 values: ~1e-6 relative; 1e-4 allows other summation orders
    torch.testing.assert_close(own["bn1.running_mean"], acts.mean(dim=(0, 2, 3)), rtol=1e-4, atol=1e-5)
    assert not torch.equal(own["bn1.running_mean"], encoder.bn1.running_mean)


def test_same_seed_same_result_and_resume_extends_a_kept_run(siim_cache, tmp_path):
    a = _run(siim_cache, tmp_path / "a", epochs=2)
    b = _run(siim_cache, tmp_path / "b", epochs=1, keep_checkpoints=True)
    assert (tmp_path / "b" / "checkpoints" / "last.ckpt").is_file()
    cfg = resolve_config(None, {"data": str(siim_cache), "out": str(tmp_path / "b"), **FAST, "epochs": 2})
    resumed = transfer(cfg, resume=True, progress=False)
    assert b["epochs_run"] == 1 and resumed["steps"] == a["steps"]
    assert resumed["test"]["siim_dice"] == pytest.approx(a["test"]["siim_dice"], abs=1e-6)
    assert not (tmp_path / "b" / "checkpoints").exists()  # the extended run was not told to keep them
    with pytest.raises(UserError, match="already holds a run"):
        _run(siim_cache, tmp_path / "a")
    # a finished run without its checkpoints cannot be extended: the error says how to keep them
    with pytest.raises(UserError, match="--keep-checkpoints"):
        transfer(resolve_config(None, {"data": str(siim_cache), "out": str(tmp_path / "a"), **FAST}),
                 resume=True, progress=False)


def test_bad_label_fraction_and_missing_cache_are_named(siim_cache, tmp_path):
    with pytest.raises(UserError, match="--label-fraction"):
        _run(siim_cache, tmp_path / "x", label_fraction=1.5)
    with pytest.raises(UserError, match="cache file not found"):
        _run(tmp_path / "nope.h5", tmp_path / "y")


def test_transfer_cli_prints_config_and_scores(siim_cache, tmp_path):
    runner = CliRunner()
    shown = runner.invoke(cli, ["transfer", "--print-config", "--data", str(siim_cache)])
    assert shown.exit_code == 0 and "loss: focal:1,dice:1" in shown.output and "lr: 0.0001" in shown.output
    res = runner.invoke(cli, ["transfer", "--data", str(siim_cache), "--out", str(tmp_path / "cli"),
                              "--image-size", "32", "--batch-size", "4", "--epochs", "1", "--workers", "0",
                              "--label-fraction", "0.5"])
    assert res.exit_code == 0, res.output
    assert "test SIIM score" in res.output and (tmp_path / "cli" / "metrics.json").is_file()
    bad = runner.invoke(cli, ["transfer", "--data", str(siim_cache), "--out", str(tmp_path / "bad"),
                              "--encoder", str(tmp_path / "missing.safetensors")])
    assert bad.exit_code == 2 and "missing.safetensors" in bad.output
    assert np.isfinite(json.loads((tmp_path / "cli" / "metrics.json").read_text())["test"]["siim_dice"])


def _hflip_probs(model, images: list[np.ndarray], size: int) -> np.ndarray:
    """Flip-TTA probabilities computed here, without ptxssl's prediction code."""
    x = torch.from_numpy(np.stack([np.rint(letterbox(im, size) * 255) / np.float32(255) for im in images]))[:, None]
    x = (x - NORMALIZATION["mean"]) / NORMALIZATION["std"]
    with torch.no_grad():
        model.eval()
        return ((torch.sigmoid(model(x)) + torch.sigmoid(model(x.flip(-1))).flip(-1)) / 2)[:, 0].numpy()


def test_competition_recipe_run_records_it_and_predict_applies_it(siim_cache, tmp_path):
    run = tmp_path / "run"
    metrics = _run(siim_cache, run, postprocess="triplet", tta="hflip", average_top_k=2, label_count=8,
                   keep_checkpoints=True)
    tuned, test = metrics["val_tuned"], metrics["test"]
    # the triplet was searched on val, on its grid, with bottom <= top, and used for test
    assert tuned["mode"] == "triplet" and tuned["threshold"] in TRIPLET_TOPS and tuned["bottom"] in TRIPLET_BOTTOMS
    assert tuned["min_area_fraction"] in DEFAULT_AREA_FRACTIONS and tuned["bottom"] <= tuned["threshold"]
    assert {k: test[k] for k in ("threshold", "min_area_fraction", "bottom")} == \
        {k: tuned[k] for k in ("threshold", "min_area_fraction", "bottom")}
    for key in ("precision", "recall", "f1"):
        assert key in test and (np.isnan(test[key]) or 0 <= test[key] <= 1)
    # the saved weights are the mean of the two best epochs' checkpoints (both epochs here)
    assert sorted(metrics["weights_from_epochs"]) == [0, 1] and metrics["best_epoch"] in (0, 1)
    ckpts = [torch.load(run / "checkpoints" / f"best-epoch={e}.ckpt", weights_only=True)["state_dict"]
             for e in (0, 1)]
    saved = smp.from_pretrained(str(run / "model")).state_dict()
    assert not torch.equal(ckpts[0]["model.decoder.blocks.0.conv1.0.weight"],
                           ckpts[1]["model.decoder.blocks.0.conv1.0.weight"])
    for key, value in saved.items():
        if value.is_floating_point():
            torch.testing.assert_close(value, (ckpts[0]["model." + key] + ckpts[1]["model." + key]) / 2)
    # predict reads the rule and the TTA from ptxssl.json ...
    meta = json.loads((run / "ptxssl.json").read_text())
    assert (meta["postprocess"], meta["tta"], meta["bottom"]) == ("triplet", "hflip", tuned["bottom"])
    files = _write_dicoms(tmp_path / "dicoms")
    images = {sop: read_dicom(path)[0] for sop, path in files.items()}
    probs = dict(zip(images, _hflip_probs(smp.from_pretrained(str(run / "model")), list(images.values()), 32)))
    # ... on its own triplet, and on one that gates out the weakest of the three images and
    # draws the others' masks at the median probability (non-trivial masks whatever was learned)
    maxima = np.sort([p.max() for p in probs.values()])
    top = float((maxima[0] + maxima[1]) / 2)
    forced = {"threshold": top, "min_area_fraction": 1 / 1024,
              "bottom": min(top, float(np.median(np.stack(list(probs.values())))))}
    for name, rule in (("own", tuned), ("forced", forced)):
        (run / "ptxssl.json").write_text(json.dumps({**meta, **{k: rule[k] for k in forced}}))
        summary = predict_dicoms(run, tmp_path / "dicoms", tmp_path / f"{name}.csv", progress=False)
        rles = pd.read_csv(tmp_path / f"{name}.csv", dtype=str).set_index("ImageId").EncodedPixels
        for sop, image in images.items():
            mask = postprocess_triplet(probs[sop], rule["threshold"], rule["min_area_fraction"], rule["bottom"])
            np.testing.assert_array_equal(decode_siim(rles[sop], *image.shape), unletterbox(mask, *image.shape))
        assert name == "own" or summary["positive"] == 2
    # results.csv of compare carries the image-level recall and F1 of each cell
    cell = tmp_path / "grid" / "runs" / "random" / "f1-s0"
    cell.mkdir(parents=True)
    for name in ("metrics.json", "test_dice.csv"):  # a finished cell: compare reads it, trains nothing
        (cell / name).write_bytes((run / name).read_bytes())
    base = resolve_config(None, {"data": str(siim_cache), **FAST})
    results = compare(base, {"random": "random"}, [1.0], [0], tmp_path / "grid", progress=False, echo=lambda _: None)
    row = pd.read_csv(tmp_path / "grid" / "results.csv").iloc[0]
    for key in ("recall", "f1"):
        assert row[key] == pytest.approx(test[key], nan_ok=True) and key in results.columns


def test_recipe_options_are_checked_and_listed(siim_cache, tmp_path):
    for option, value, message in (("postprocess", "best", "--postprocess must be tuned, fixed or triplet"),
                                   ("tta", "vflip", "--tta must be none or hflip"),
                                   ("average_top_k", -1, "--average-top-k must be 0 or more")):
        with pytest.raises(UserError, match=message):
            _run(siim_cache, tmp_path / option, **{option: value})
        assert not (tmp_path / option).exists()
    for command in ("transfer", "compare"):
        shown = CliRunner().invoke(cli, [command, "--help"])
        assert "--tta" in shown.output and "--average-top-k" in shown.output and "triplet" in shown.output


def test_max_steps_shorter_than_an_epoch_still_validates_and_finishes(siim_cache, tmp_path):
    """Issue 20: `--max-steps 3` on ~7 batches an epoch died with "EarlyStopping conditioned on
    metric val_score which is not available"; the run now stops there, validates and is scored."""
    out = tmp_path / "short"
    result = CliRunner().invoke(cli, ["transfer", "--encoder", "random", "--data", str(siim_cache), "--out", str(out),
                                      "--max-steps", "3", "--batch-size", "4", "--image-size", "32", "--workers", "0",
                                      "--patience", "2", "--no-save-model"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert not (out / "model").exists() and not (out / "ptxssl.json").exists()  # --no-save-model: scores only
    assert metrics["steps"] == 3 and metrics["best_epoch"] == 0 and metrics["weights_from_epochs"] == [0]
    assert pd.read_csv(out / "metrics.csv")["val_score"].notna().sum() == 1  # one validation, at the cut
