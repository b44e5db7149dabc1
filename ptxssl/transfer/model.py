"""The segmentation model: an smp UNet whose encoder (any smp arch) starts from a chosen init.

`build_unet(init, in_channels, arch)` always builds `smp.Unet(arch, encoder_weights=None, ...)`
(so the decoder is initialised the same way for every init, from the caller's torch seed) and
then copies encoder weights in from one of:

    random          the encoder as built;
    imagenet        smp's own download (HF hub `smp-hub/<arch>.imagenet`);
    imagenet:FILE   ImageNet weights on disk in a format smp's encoder for `arch` loads itself
                    (torch.save or safetensors): torchvision's state_dict for the archs smp
                    builds on torchvision (resnet*, vgg*, densenet*, mobilenet_v2), e.g.
                    `torchvision.models.resnet34(weights="IMAGENET1K_V1").state_dict()`, or
                    smp's own hub file (`model.safetensors` of smp-hub/<arch>.imagenet) for any;
    PATH            a ptxssl `encoder.safetensors` or the pretrain run folder holding one.

The arch lives with the weights: for a ptxssl encoder, `arch=None` takes the file's arch, and
an explicit other arch is a UserError; the other inits default to resnet34.

ImageNet weights reach 1 channel exactly as smp adapts them (`patch_first_conv`: summing
the RGB kernels of the first convolution), which is the 1-channel policy of
`ptxssl.pretrain.encoder`. Every path ends in the same place: a strict load into
`unet.encoder` followed by a tensor-by-tensor comparison (smp 0.6's encoder `load_state_dict`
returns None, so the comparison, not the return value, proves the weights arrived).

A trained model is saved with smp's own `save_pretrained` (config.json, model.safetensors,
README.md card) so `segmentation_models_pytorch.from_pretrained(RUN/model)` needs no
ptxssl; what only ptxssl needs goes to `RUN/ptxssl.json` (see REQUIRED_META; "arch" too).
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
from segmentation_models_pytorch.encoders._utils import patch_first_conv
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from ptxssl.errors import UserError
from ptxssl.files import write_json
from ptxssl.pretrain.encoder import (
    DEFAULT_ARCH,
    NORMALIZATION,
    build_encoder,
    check_arch,
    file_arch,
    layout,
    guess_arch,
    load_encoder,
    load_strict,
    mismatch,
    resolve_encoder_path,
    shapes_of,
    smp_build_errors,
)

MODEL_DIR, META_FILE = "model", "ptxssl.json"
# keys of ptxssl.json that prediction needs; save_model refuses a meta without them
REQUIRED_META = ("image_size", "in_channels", "normalization", "threshold", "min_area_fraction", "encoder")
# what ImageNet files carry beyond the encoder (classifier heads of torchvision / smp's sources)
_HEAD_KEYS = ("fc.", "_fc.", "classifier")


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
    if in_channels not in (1, 3):
        raise UserError(f"--in-channels must be 1 or 3 (got {in_channels})")
    arch = init_arch(init, arch)
    desc = {"init": "random", "spec": init, "source": None, "sha1": None, "in_channels": in_channels, "arch": arch}
    state = None
    # read and check the source first (a bad file fails fast), on a forked RNG: building its
    # helper encoders must not move the caller's seed, so every init gets the same decoder
    with torch.random.fork_rng(devices=[]):
        if init == "imagenet":
            state, desc["source"], desc["sha1"] = _imagenet_download(in_channels, arch)
            desc["init"] = "imagenet"
        elif init.startswith("imagenet:"):
            path = Path(init[len("imagenet:"):])
            state = _adapt_imagenet_file(_read_state_dict(path, arch), path, in_channels, arch)
            desc.update(init="imagenet", source=str(path), sha1=file_sha1(path))
        elif is_encoder_file(init):
            state, weights, meta = _ptxssl_encoder(init, in_channels, arch)
            desc.update(init="encoder", source=str(weights), sha1=file_sha1(weights),
                        method=meta.get("method"), encoder_meta=meta)
    with smp_build_errors(arch, in_channels):
        model = smp.Unet(arch, encoder_weights=None, in_channels=in_channels, classes=1)
    if state is not None:
        _load_verified(model.encoder, state, desc["source"], arch)
    return model, desc


def is_encoder_file(init: str) -> bool:
    """`init` names a ptxssl encoder file or run folder, not random / imagenet / imagenet:FILE."""
    return init not in ("random", "imagenet") and not init.startswith("imagenet:")


def init_arch(init: str, arch: str | None = None) -> str:
    """The encoder arch a UNet for `init` gets: an encoder file's own arch (an explicit other
    `arch` is a UserError naming both), else `arch`, else resnet34."""
    if not is_encoder_file(init):
        return check_arch(arch or DEFAULT_ARCH)
    if not Path(init).exists():
        raise UserError(f"--encoder {init}: not 'random', 'imagenet' or 'imagenet:FILE', and no such "
                        "encoder file or pretrain run folder")
    return file_arch(init, arch)


def unet_arch(model: smp.Unet) -> str:
    """The encoder arch of an smp model, from the config smp saves with it."""
    return str(model.config["encoder_name"])


def _imagenet_source(arch: str) -> str:
    """Where ImageNet weights that smp's `arch` encoder loads come from, for error messages."""
    repo = smp.encoders.encoders.get(arch, {}).get("pretrained_settings", {}).get("imagenet", {}).get("repo_id")
    sources = [f"model.safetensors of https://huggingface.co/{repo}"] if repo else []
    if _torchvision_based(arch):
        sources.append(f"torchvision.models.{arch}(weights='IMAGENET1K_V1').state_dict() saved with torch.save")
    return " or ".join(sources) or f"no ImageNet file format is known for {arch}"


def _torchvision_based(arch: str) -> bool:
    """smp's encoder for `arch` subclasses a torchvision model, so torchvision's keys fit it."""
    cls = smp.encoders.encoders.get(arch, {}).get("encoder")
    return cls is not None and any(c.__module__.startswith("torchvision.") for c in cls.__mro__)


def _imagenet_download(in_channels: int, arch: str) -> tuple[dict[str, torch.Tensor], str, str | None]:
    """smp's standard ImageNet path (HF hub download, then `set_in_channels`)."""
    settings = smp.encoders.encoders.get(arch, {}).get("pretrained_settings", {})
    if not arch.startswith("tu-") and "imagenet" not in settings:
        raise UserError(f"--encoder imagenet: smp has no ImageNet weights for --arch {arch} (it has: "
                        f"{', '.join(settings) or 'none'}); use --encoder random or another --arch")
    try:
        encoder = smp.encoders.get_encoder(arch, in_channels=in_channels, weights="imagenet")
    except OSError as e:  # huggingface_hub's LocalEntryNotFoundError (offline) is an OSError
        raise UserError(f"--encoder imagenet: cannot download the {arch} ImageNet weights ({type(e).__name__}); "
                        f"on a machine with network save {_imagenet_source(arch)}, and pass "
                        "--encoder imagenet:FILE") from None
    from huggingface_hub import try_to_load_from_cache

    repo, revision = settings.get("imagenet", {}).get("repo_id"), settings.get("imagenet", {}).get("revision")
    if not repo:
        return encoder.state_dict(), "smp imagenet weights", None
    cached = try_to_load_from_cache(repo, "model.safetensors", revision=revision)
    sha1 = file_sha1(Path(cached)) if isinstance(cached, str) else None
    return encoder.state_dict(), f"https://huggingface.co/{repo}/tree/{revision}", sha1


def _read_state_dict(path: Path, arch: str = DEFAULT_ARCH) -> dict[str, torch.Tensor]:
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
                        f"torchvision's {arch}().state_dict()); save model.state_dict() itself")
    return state


def _adapt_imagenet_file(state: dict[str, torch.Tensor], path: Path, in_channels: int, arch: str) -> dict:
    """ImageNet weights in a format smp's `arch` encoder loads -> an encoder state_dict for
    `in_channels`: smp's own 3-channel encoder and `load_state_dict` (which drops the
    classifier and renames old torchvision keys), then `set_in_channels(pretrained=True)`
    (= `patch_first_conv`), exactly smp's ImageNet path without the download."""
    conv = layout(arch, 3)[0]
    if conv in state and state[conv].ndim == 4 and state[conv].shape[1] != 3:
        raise UserError(f"{path}: {conv} has {state[conv].shape[1]} input channels; imagenet:FILE takes "
                        f"3-channel (RGB) ImageNet {arch} weights; for a ptxssl encoder pass the file "
                        "without 'imagenet:'")
    encoder = build_encoder(3, arch)
    own = shapes_of(encoder.state_dict())
    try:
        encoder.load_state_dict(dict(state))  # smp's override: strict, drops the classifier; mutates its argument
    except (RuntimeError, KeyError) as e:
        problem = mismatch(own, state, ignore=_HEAD_KEYS) or str(e).strip().splitlines()[0][:160]
        guess = guess_arch({k: v for k, v in state.items() if not k.startswith(_HEAD_KEYS)})
        hint = f"; they are {guess} weights: pass --arch {guess}" if guess and guess != arch else ""
        raise UserError(f"{path}: does not fit smp's {arch} encoder ({problem}); imagenet:FILE takes the "
                        f"ImageNet weights of the --arch encoder ({arch}): {_imagenet_source(arch)}{hint}") from None
    _check_arrived(encoder, state, str(path))
    encoder.set_in_channels(in_channels, pretrained=True)
    return encoder.state_dict()


def _ptxssl_encoder(init: str, in_channels: int, arch: str) -> tuple[dict, Path, dict]:
    weights = resolve_encoder_path(init)
    encoder, meta = load_encoder(weights, arch)
    if meta["in_channels"] == 1 and in_channels == 3:  # a grey encoder on raw,clahe,he input:
        patch_first_conv(encoder, 3, default_in_channels=1)  # smp's way: kernel copied, scaled 1/3
        meta = {**meta, "in_channels": 3, "adapted_from_channels": 1}
    if meta["in_channels"] != in_channels:
        raise UserError(f"{weights}: encoder has {meta['in_channels']} input channels but the UNet "
                        f"has {in_channels}; pass --in-channels {meta['in_channels']}")
    return encoder.state_dict(), weights, meta


def _load_verified(module: nn.Module, state: dict[str, torch.Tensor], source: str | None, arch: str) -> None:
    """Strict load, then prove every tensor arrived (smp 0.6 returns None from load_state_dict)."""
    problem = mismatch(shapes_of(module.state_dict()), state)
    if problem:
        raise UserError(f"{source}: does not fit a {arch} encoder ({problem}); expected {arch} weights")
    load_strict(module, state)  # raises if mismatch missed something
    _check_arrived(module, state, source)


def _check_arrived(module: nn.Module, state: dict[str, torch.Tensor], source: str | None) -> None:
    """Every tensor of `state` that `module` has under the same name now equals it."""
    own = module.state_dict()
    shared = [k for k in state if k in own]
    if not shared:
        raise RuntimeError(f"no tensor of {source} has a name in the encoder")
    for key in shared:
        if not torch.equal(own[key].cpu(), state[key].to(own[key].dtype).cpu()):
            raise RuntimeError(f"encoder tensor {key} differs from {source} after loading")


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
            ptxssl.pretrain.encoder.NORMALIZATION, "arch" to the model's encoder). Written as
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
    if meta.get("arch", unet_arch(model)) != unet_arch(model):
        raise UserError(f"{run_dir / META_FILE}: says arch {meta['arch']} but {MODEL_DIR}/config.json holds a "
                        f"{unet_arch(model)} UNet; the files do not belong together, rerun the transfer")
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
