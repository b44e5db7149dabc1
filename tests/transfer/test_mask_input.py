"""`--task classify --mask-input`: the published cascade's classifier reads [UNet map, image, image]
through a frozen UNet, saved inside its own run folder."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import roc_auc_score

from ptxssl.errors import UserError
from ptxssl.encoders import NORMALIZATION, first_conv
from ptxssl.transfer.cascade import cascade_scores
from ptxssl.transfer.classify import load_classifier
from ptxssl.transfer.model import build_unet, load_model
from ptxssl.transfer.run import resolve_config, transfer
from tests.transfer.test_predict import _save
from tests.transfer.test_run import FAST, siim_cache  # noqa: F401 - the shared 48-image cache fixture


def _unet_with_statistics(seed: int) -> torch.nn.Module:
    """A random UNet whose BatchNorm statistics are not the defaults (so drift would show)."""
    torch.manual_seed(seed)
    unet = build_unet("random")[0]
    for m in unet.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    return unet.eval()


def test_mask_input_classifier_reads_the_frozen_unets_map(siim_cache, tmp_path):  # noqa: F811
    seg = _save(_unet_with_statistics(0), tmp_path / "seg", threshold=0.5)
    cls = tmp_path / "cls"
    metrics = transfer(resolve_config(None, {"data": str(siim_cache), "out": str(cls), **FAST, "task": "classify",
                                             "mask_input": str(seg)}), progress=False)
    meta = json.loads((cls / "classifier.json").read_text())
    assert meta["mask_input"]["run"] == str(seg) and meta["encoder_channels"] == 3 and meta["in_channels"] == 1
    model, _ = load_classifier(cls)
    # the UNet inside the classifier is the trained one, weights and BatchNorm statistics unchanged
    unet, _ = load_model(seg)
    saved = model.mask_model.state_dict()
    for key, value in unet.state_dict().items():
        assert torch.equal(saved[key], value), key
    # the encoder's input is [UNet probability map, image, image] on one scale
    seen = {}
    first_conv(model.encoder)[1].register_forward_hook(lambda m, args, out: seen.update(x=args[0]))
    x = (torch.rand(2, 1, 32, 32) - NORMALIZATION["mean"]) / NORMALIZATION["std"]
    with torch.no_grad():
        model(x)
        prob = torch.sigmoid(unet(x))
    assert seen["x"].shape == (2, 3, 32, 32)
    torch.testing.assert_close(seen["x"][:, :1], (prob - NORMALIZATION["mean"]) / NORMALIZATION["std"])
    torch.testing.assert_close(seen["x"][:, 1:], x.expand(-1, 2, -1, -1))
    # cascade_scores reads the saved classifier the way the run scored it (its batch size too): same test AUROC
    scores = pd.read_csv(cls / "test_scores.csv")
    assert metrics["test"]["image_auroc"] == pytest.approx(roc_auc_score(scores.label, scores.probability))
    got = cascade_scores(seg, cls, siim_cache)
    assert got["classifier"]["image_auroc"] == pytest.approx(metrics["test"]["image_auroc"], abs=1e-6)
    assert not np.isnan(got["cascade"]["siim_dice"])


def test_mask_input_errors_name_the_option(siim_cache, tmp_path):  # noqa: F811
    base = {"data": str(siim_cache), **FAST}
    with pytest.raises(UserError, match="--mask-input is for --task classify"):
        transfer(resolve_config(None, {**base, "out": str(tmp_path / "a"), "mask_input": str(tmp_path)}))
    with pytest.raises(UserError, match=f"{tmp_path / 'nothing'}: not a transfer run folder"):
        transfer(resolve_config(None, {**base, "out": str(tmp_path / "b"), "task": "classify",
                                       "mask_input": str(tmp_path / "nothing")}))
    seg3 = _save(build_unet("random", in_channels=3)[0].eval(), tmp_path / "seg3", threshold=0.5)
    with pytest.raises(UserError, match="must both be 1"):
        transfer(resolve_config(None, {**base, "out": str(tmp_path / "c"), "task": "classify",
                                       "mask_input": str(seg3)}))
