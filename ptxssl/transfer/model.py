"""The segmentation model: an smp UNet-ResNet34 whose encoder starts from a chosen init.

`build_unet(init)` always builds `smp.Unet("resnet34", encoder_weights=None, ...)` (so the
decoder is initialised the same way for every init, from the caller's torch seed) and then
copies encoder weights in from one of:

    random          the encoder as built;
    imagenet        smp's own download (HF hub `smp-hub/resnet34.imagenet`);
    imagenet:FILE   a torchvision-format resnet34 state_dict (torch.save or safetensors),
                    e.g. `torchvision.models.resnet34(weights="IMAGENET1K_V1").state_dict()`;
    PATH            a ptxssl `encoder.safetensors` or the pretrain run folder holding one.

ImageNet weights reach 1 channel exactly as smp adapts them (`patch_first_conv`: summing
the RGB kernels of conv1), which is the 1-channel policy of `ptxssl.pretrain.encoder`.
Every path ends in the same place: a strict `load_state_dict` into `unet.encoder` followed
by a tensor-by-tensor comparison (smp 0.6's encoder `load_state_dict` returns None, so the
comparison, not the return value, proves the weights arrived).

A trained model is saved with smp's own `save_pretrained` (config.json, model.safetensors,
README.md card) so `segmentation_models_pytorch.from_pretrained(RUN/model)` needs no
ptxssl; what only ptxssl needs goes to `RUN/ptxssl.json` (see REQUIRED_META).
"""
from __future__ import annotations

import contextlib
import hashlib
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
from safetensors.torch import load_file
from torch import nn

from ptxssl.errors import UserError
from ptxssl.files import write_json
from ptxssl.pretrain.encoder import (
    ARCH,
    NORMALIZATION,
    load_encoder,
    resolve_encoder_path,
)

MODEL_DIR, META_FILE = "model", "ptxssl.json"
# keys of ptxssl.json that prediction needs; save_model refuses a meta without them
REQUIRED_META = ("image_size", "in_channels", "normalization", "threshold", "min_area_fraction", "encoder")
# {"repo_id", "revision"} of smp 0.6's hub copy; only used to name the source and find its sha1
_IMAGENET = smp.encoders.encoders[ARCH]["pretrained_settings"].get("imagenet", {})
_IMAGENET_HELP = ("download torchvision's resnet34 ImageNet weights on a machine with network "
                  "(torchvision.models.resnet34(weights='IMAGENET1K_V1').state_dict() saved with "
                  "torch.save) and pass --encoder imagenet:FILE")


def build_unet(init: str, in_channels: int = 1) -> tuple[smp.Unet, dict]:
    """A UNet-ResNet34 (1 output class, logits) with its encoder initialised from `init`.

    Args:
        init: "random", "imagenet", "imagenet:FILE", or a ptxssl encoder file / run folder.
        in_channels: 1 (grey, the ptxssl policy) or 3.
    Returns:
        the model, and a description of the init: {"init": "random" | "imagenet" | "encoder",
        "spec": init as given, "source": file path, URL or None, "sha1": of the file or None,
        "in_channels"}; for a ptxssl encoder also "method" and "encoder_meta" (its encoder.json).
    Raises:
        UserError: unknown init, offline without cached ImageNet weights, or a file that is not
            a readable state_dict of a resnet34 with `in_channels` channels.
    """
    if in_channels not in (1, 3):
        raise UserError(f"--in-channels must be 1 or 3 (got {in_channels})")
    desc = {"init": "random", "spec": init, "source": None, "sha1": None, "in_channels": in_channels}
    state = None
    # read and check the source first (a bad file fails fast), on a forked RNG: building its
    # helper encoders must not move the caller's seed, so every init gets the same decoder
    with torch.random.fork_rng(devices=[]):
        if init == "imagenet":
            state, desc["source"], desc["sha1"] = _imagenet_download(in_channels)
            desc["init"] = "imagenet"
        elif init.startswith("imagenet:"):
            path = Path(init[len("imagenet:"):])
            state = _adapt_torchvision(_read_state_dict(path), path, in_channels)
            desc.update(init="imagenet", source=str(path), sha1=file_sha1(path))
        elif init != "random":
            state, weights, meta = _ptxssl_encoder(init, in_channels)
            desc.update(init="encoder", source=str(weights), sha1=file_sha1(weights),
                        method=meta.get("method"), encoder_meta=meta)
    model = smp.Unet(ARCH, encoder_weights=None, in_channels=in_channels, classes=1)
    if state is not None:
        _load_verified(model.encoder, state, desc["source"])
    return model, desc


def _imagenet_download(in_channels: int) -> tuple[dict[str, torch.Tensor], str, str | None]:
    """smp's standard ImageNet path (HF hub download, then `set_in_channels`)."""
    try:
        encoder = smp.encoders.get_encoder(ARCH, in_channels=in_channels, weights="imagenet")
    except OSError as e:  # huggingface_hub's LocalEntryNotFoundError (offline) is an OSError
        raise UserError(f"--encoder imagenet: cannot download the ImageNet weights "
                        f"({type(e).__name__}); {_IMAGENET_HELP}") from None
    from huggingface_hub import try_to_load_from_cache

    repo, revision = _IMAGENET.get("repo_id"), _IMAGENET.get("revision")
    if not repo:
        return encoder.state_dict(), "smp imagenet weights", None
    cached = try_to_load_from_cache(repo, "model.safetensors", revision=revision)
    sha1 = file_sha1(Path(cached)) if isinstance(cached, str) else None
    return encoder.state_dict(), f"https://huggingface.co/{repo}/tree/{revision}", sha1


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """safetensors or a `torch.save`d dict of tensors, never unpickling arbitrary objects."""
    if not path.is_file():
        raise UserError(f"{path}: weights file not found; check the path after imagenet:")
    with open(path, "rb") as fh:
        head = fh.read(9)
    try:
        if head[:2] == b"PK" or head[:1] == b"\x80":  # torch.save zip or legacy pickle
            state = torch.load(path, map_location="cpu", weights_only=True)
        else:
            state = load_file(str(path))
    except (SafetensorError, OSError, RuntimeError, ValueError, EOFError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        raise UserError(f"{path}: not a readable safetensors or torch state_dict file ({first}); "
                        "re-download or re-save it") from None
    except Exception as e:  # noqa: BLE001 - weights_only refuses pickled objects with UnpicklingError
        raise UserError(f"{path}: not a plain state_dict of tensors ({type(e).__name__}); save "
                        "model.state_dict() with torch.save or safetensors") from None
    if not isinstance(state, dict) or not state or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise UserError(f"{path}: not a state_dict (expected a flat dict of name -> tensor, as "
                        "torchvision's resnet34().state_dict()); save model.state_dict() itself")
    return state


def _adapt_torchvision(state: dict[str, torch.Tensor], path: Path, in_channels: int) -> dict:
    """A torchvision resnet34 state_dict -> an encoder state_dict for `in_channels`, via smp's
    own 3-channel encoder and `set_in_channels(pretrained=True)` (= `patch_first_conv`)."""
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    conv1 = state.get("conv1.weight")
    if conv1 is not None and conv1.ndim == 4 and conv1.shape[1] != 3:
        raise UserError(f"{path}: conv1 has {conv1.shape[1]} input channels; imagenet:FILE takes "
                        "torchvision's 3-channel (RGB) resnet34 weights; for a ptxssl encoder "
                        "pass the file without 'imagenet:'")
    encoder = smp.encoders.get_encoder(ARCH, in_channels=3, weights=None)
    _load_verified(encoder, state, str(path))
    encoder.set_in_channels(in_channels, pretrained=True)
    return encoder.state_dict()


def _ptxssl_encoder(init: str, in_channels: int) -> tuple[dict, Path, dict]:
    if not Path(init).exists():
        raise UserError(f"--encoder {init}: not 'random', 'imagenet' or 'imagenet:FILE', and no such "
                        "encoder file or pretrain run folder")
    weights = resolve_encoder_path(init)
    encoder, meta = load_encoder(weights)
    if meta["in_channels"] != in_channels:
        raise UserError(f"{weights}: encoder has {meta['in_channels']} input channels but the UNet "
                        f"has {in_channels}; pass --in-channels {meta['in_channels']}")
    return encoder.state_dict(), weights, meta


def _load_verified(module: nn.Module, state: dict[str, torch.Tensor], source: str | None) -> None:
    """Strict load, then prove every tensor arrived (smp 0.6 returns None from load_state_dict)."""
    own = module.state_dict()
    problem = _mismatch(own, state)
    if problem:
        raise UserError(f"{source}: does not fit a {ARCH} encoder ({problem}); expected {ARCH} "
                        "weights (another architecture, e.g. resnet18, will not load)")
    module.load_state_dict(dict(state), strict=True)  # raises if _mismatch missed something
    own = module.state_dict()
    for key, value in state.items():
        if key.startswith("fc."):
            continue
        if not torch.equal(own[key].cpu(), value.to(own[key].dtype).cpu()):
            raise RuntimeError(f"encoder tensor {key} differs from {source} after loading")


def _mismatch(own: dict[str, torch.Tensor], state: dict[str, torch.Tensor]) -> str:
    """A short description of why `state` does not fit `own` ("" if it does)."""
    keys = {k for k in state if not k.startswith("fc.")}
    missing, unexpected = sorted(own.keys() - keys), sorted(keys - own.keys())
    shapes = [k for k in sorted(keys & own.keys()) if state[k].shape != own[k].shape]
    parts = [f"{len(missing)} missing tensors, e.g. {missing[0]}" if missing else "",
             f"{len(unexpected)} unexpected, e.g. {unexpected[0]}" if unexpected else "",
             f"{shapes[0]} is {tuple(state[shapes[0]].shape)}, expected "
             f"{tuple(own[shapes[0]].shape)}" if shapes else ""]
    return "; ".join(p for p in parts if p)


def file_sha1(path: Path) -> str:
    """Hex SHA-1 of a file's bytes (recorded so a run names exactly which weights it used)."""
    h = hashlib.sha1()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def save_model(model: smp.Unet, run_dir: str | Path, meta: dict, card: str, *,
               metrics: dict | None = None, dataset: str | None = None) -> Path:
    """Save RUN/model (smp's save_pretrained, swapped in atomically) and RUN/ptxssl.json.

    Args:
        meta: what only ptxssl needs; must hold REQUIRED_META ("normalization" defaults to
            ptxssl.pretrain.encoder.NORMALIZATION). Written as given to ptxssl.json.
        card: markdown appended to smp's model card (data, command, anything else).
        metrics, dataset: smp's card fields (default: meta["metrics"], meta["data"]).
    Returns:
        RUN/model.
    """
    run_dir = Path(run_dir)
    meta = {"normalization": dict(NORMALIZATION), **meta}
    missing = [k for k in REQUIRED_META if k not in meta]
    if missing:
        raise ValueError(f"save_model: meta lacks {missing}; load_model/predict need them")
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

    Only safetensors and JSON are read (no unpickling); a missing file is checked before smp
    is called, because smp would take an absent folder for a HF hub repo id and go online.
    """
    run_dir = Path(run_dir)
    if run_dir.name == MODEL_DIR and (run_dir / "config.json").is_file():
        run_dir = run_dir.parent
    files = [run_dir / MODEL_DIR / "config.json", run_dir / MODEL_DIR / "model.safetensors",
             run_dir / META_FILE]
    missing = [str(f.relative_to(run_dir)) for f in files if not f.is_file()]
    if missing:
        raise UserError(f"{run_dir}: not a transfer run folder (missing {', '.join(missing)}); "
                        "pass the folder `ptxssl transfer` wrote")
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
    return model.eval(), meta


def model_input(images: torch.Tensor, in_channels: int, normalization: dict) -> torch.Tensor:
    """(N, 1, H, W) grey in [0, 1] -> (N, in_channels, H, W) normalised model input.

    The one place training, evaluation and prediction turn images into UNet input: the
    stored normalisation (ptxssl.json "normalization"), and for a 3-channel model the grey
    image copied into R, G and B.
    """
    x = (images - normalization["mean"]) / normalization["std"]  # (N, 1, H, W)
    return x.expand(-1, in_channels, -1, -1) if in_channels != x.shape[1] else x


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
