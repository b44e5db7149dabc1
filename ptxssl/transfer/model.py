"""The segmentation model: an smp UNet whose encoder (any smp arch) starts from a chosen init.

`build_unet(init, in_channels, arch)` always builds `smp.Unet(arch, encoder_weights=None, ...)`
(so the decoder is initialised the same way for every init, from the caller's torch seed) and
then copies in the encoder weights `ptxssl.encoders.init_state` reads for `init` (random,
imagenet, imagenet:FILE, an encoder file or pretrain run folder), verified tensor by tensor.

A trained model is saved with smp's own `save_pretrained` (config.json, model.safetensors,
README.md card) so `segmentation_models_pytorch.from_pretrained(RUN/model)` needs no
ptxssl; what only ptxssl needs goes to `RUN/ptxssl.json` (see REQUIRED_META; "arch" too).
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import segmentation_models_pytorch as smp
import torch
from safetensors import SafetensorError

from ptxssl.encoders import NORMALIZATION, init_state, load_verified
from ptxssl.encoders.build import smp_build_errors
from ptxssl.errors import UserError
from ptxssl.files import write_json

MODEL_DIR, META_FILE = "model", "ptxssl.json"
# keys of ptxssl.json that prediction needs; save_model refuses a meta without them
REQUIRED_META = ("image_size", "in_channels", "normalization", "threshold", "min_area_fraction", "encoder")


def build_unet(init: str, in_channels: int = 1, arch: str | None = None) -> tuple[smp.Unet, dict]:
    """A UNet (1 output class, logits) on an `arch` encoder initialised from `init`.

    Args:
        init: "random", "imagenet", "imagenet:FILE", or a ptxssl encoder file / run folder.
        in_channels: 1 (grey, the ptxssl policy) or 3.
        arch: any smp encoder name; None: the encoder file's arch, or resnet34 for the other inits.
    Returns:
        the model, and a description of the init: {"init": "random" | "imagenet" | "encoder",
        "spec": init as given, "source": file path, URL or None, "sha1": of the file or None,
        "in_channels", "arch"}; for a ptxssl encoder also "method" and "encoder_meta" (its
        encoder.json).
    Raises:
        UserError: unknown init or arch, offline without cached ImageNet weights, a file made
            for another arch than `arch`, or a file that is not a readable state_dict of an
            `arch` encoder with `in_channels` channels.
    """
    state, desc = init_state(init, in_channels, arch)  # the source is read and checked first: fails fast
    with smp_build_errors(desc["arch"], in_channels):
        model = smp.Unet(desc["arch"], encoder_weights=None, in_channels=in_channels, classes=1)
    if state is not None:
        load_verified(model.encoder, state, desc["source"], desc["arch"])
    return model, desc


def unet_arch(model: smp.Unet) -> str:
    """The encoder arch of an smp model, from the config smp saves with it."""
    return str(model.config["encoder_name"])


def save_model(model: smp.Unet, run_dir: str | Path, meta: dict, card: str, *,
               metrics: dict | None = None, dataset: str | None = None) -> Path:
    """Save RUN/model (smp's save_pretrained, swapped in atomically) and RUN/ptxssl.json.

    Args:
        meta: what only ptxssl needs; must hold REQUIRED_META ("normalization" defaults to
            ptxssl.encoders.NORMALIZATION, "arch" to the model's encoder). Written as
            given to ptxssl.json.
        card: markdown appended to smp's model card (data, command, anything else).
        metrics, dataset: smp's card fields (default: meta["metrics"], meta["data"]).
    Returns:
        RUN/model.
    """
    run_dir = Path(run_dir)
    meta = {"normalization": dict(NORMALIZATION), "arch": unet_arch(model), **meta}
    missing = [k for k in REQUIRED_META if k not in meta]
    if missing:
        raise ValueError(f"save_model: meta lacks {missing}; load_model/predict need them")
    if meta["arch"] != unet_arch(model):
        raise ValueError(f"save_model: meta says arch {meta['arch']} but the model is a {unet_arch(model)} UNet")
    metrics = metrics if metrics is not None else meta.get("metrics")
    dataset = dataset if dataset is not None else meta.get("data")
    run_dir.mkdir(parents=True, exist_ok=True)
    final = run_dir / MODEL_DIR
    tmp = Path(tempfile.mkdtemp(prefix=f".{MODEL_DIR}.", suffix=".tmp", dir=run_dir))
    old = None
    try:
        model.save_pretrained(tmp, metrics=metrics, dataset=None if dataset is None else str(dataset))
        readme = tmp / "README.md"
        readme.write_text(readme.read_text() + "\n## ptxssl\n\n" + card.strip() + "\n")
        if final.exists():  # os.replace cannot overwrite a non-empty folder: move it aside first
            old = Path(tempfile.mkdtemp(prefix=f".{MODEL_DIR}.", suffix=".old", dir=run_dir))
            os.replace(final, old / MODEL_DIR)
        os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    write_json(run_dir / META_FILE, meta)
    return final


def load_model(run_dir: str | Path) -> tuple[smp.Unet, dict]:
    """Load a transfer run (RUN or RUN/model): the UNet in eval mode on the CPU, and ptxssl.json.

    smp rebuilds the UNet's arch from model/config.json; ptxssl.json's "arch" (absent in runs
    made before --arch existed: those are resnet34) must agree with it. Only safetensors and
    JSON are read (no unpickling); a missing file is checked before smp is called, because
    smp would take an absent folder for a HF hub repo id and go online.
    """
    run_dir = Path(run_dir)
    if run_dir.name == MODEL_DIR and (run_dir / "config.json").is_file():
        run_dir = run_dir.parent
    files = [run_dir / MODEL_DIR / "config.json", run_dir / MODEL_DIR / "model.safetensors",
             run_dir / META_FILE]
    missing = [str(f.relative_to(run_dir)) for f in files if not f.is_file()]
    if missing:
        raise UserError(f"{run_dir}: not a transfer run folder with a model (missing {', '.join(missing)}); "
                        "pass the folder `ptxssl transfer` wrote (a run with --no-save-model kept only its scores)")
    try:
        meta = json.loads((run_dir / META_FILE).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{run_dir / META_FILE}: not valid JSON ({e}); rerun the transfer") from None
    lacking = [k for k in REQUIRED_META if k not in meta]
    if lacking:
        raise UserError(f"{run_dir / META_FILE}: lacks {', '.join(lacking)}; rerun the transfer")
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # the hub mixin prints "Loading weights..."
            model = smp.from_pretrained(str(run_dir / MODEL_DIR))
    except (SafetensorError, OSError, RuntimeError, KeyError, ValueError, TypeError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise UserError(f"{run_dir / MODEL_DIR}: cannot load the saved model ({first}); the files "
                        "are damaged or from another model, rerun the transfer") from None
    if meta.get("arch", unet_arch(model)) != unet_arch(model):
        raise UserError(f"{run_dir / META_FILE}: says arch {meta['arch']} but {MODEL_DIR}/config.json holds a "
                        f"{unet_arch(model)} UNet; the files do not belong together, rerun the transfer")
    return model.eval(), meta


TTA_MODES = ("none", "hflip")


def probabilities(model: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, tta: str = "none") -> torch.Tensor:
    """sigmoid(model(x)), (N, C, H, W) -> (N, 1, H, W); the one place evaluation and `predict`
    turn logits into probabilities.

    tta="hflip" averages it with the flipped-back prediction on the mirrored image: training
    flips images, so both views are in-distribution, and the mean smooths out the model's
    left/right disagreements.
    """
    if tta not in TTA_MODES:
        raise ValueError(f"tta must be one of {TTA_MODES}, got {tta!r}")
    probs = torch.sigmoid(model(x))
    if tta == "hflip":
        probs = (probs + torch.sigmoid(model(x.flip(-1))).flip(-1)) / 2
    return probs
