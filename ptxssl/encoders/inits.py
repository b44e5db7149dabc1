"""Encoder initialisations, one registry: `init_encoder(init, in_channels, arch)`.

    random          the encoder as built (`build_encoder`, from the caller's torch seed);
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
the RGB kernels of the first convolution), the 1-channel policy of `ptxssl.encoders.input`.
Every path ends in the same place: a strict load followed by a tensor-by-tensor comparison
(smp 0.6's encoder `load_state_dict` returns None, so the comparison, not the return value,
proves the weights arrived). `init_state` gives the weights without building the target, so
the UNet (transfer) builds its own encoder + decoder from the caller's seed for every init.
"""
from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import segmentation_models_pytorch as smp
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from segmentation_models_pytorch.encoders._utils import patch_first_conv
from torch import nn

from ptxssl.encoders.build import DEFAULT_ARCH, build_encoder, check_arch, check_channels, layout
from ptxssl.encoders.file import (file_arch, guess_arch, load_encoder, load_strict, mismatch,
                                  resolve_encoder_path, shapes_of)
from ptxssl.errors import UserError
from ptxssl.files import file_sha1

# what ImageNet files carry beyond the encoder (classifier heads of torchvision / smp's sources)
_HEAD_KEYS = ("fc.", "_fc.", "classifier")
State = dict[str, torch.Tensor]


def _random(arg: str, in_channels: int, arch: str) -> tuple[State | None, dict]:
    return None, {"init": "random"}


def _imagenet(arg: str, in_channels: int, arch: str) -> tuple[State | None, dict]:
    state, source, sha1 = _imagenet_download(in_channels, arch)
    return state, {"init": "imagenet", "source": source, "sha1": sha1}


def _imagenet_file(arg: str, in_channels: int, arch: str) -> tuple[State | None, dict]:
    path = Path(arg)
    state = _adapt_imagenet_file(_read_state_dict(path, arch), path, in_channels, arch)
    return state, {"init": "imagenet", "source": str(path), "sha1": file_sha1(path)}


def _encoder_file(arg: str, in_channels: int, arch: str) -> tuple[State | None, dict]:
    state, weights, meta = _ptxssl_encoder(arg, in_channels, arch)
    return state, {"init": "encoder", "source": str(weights), "sha1": file_sha1(weights),
                   "method": meta.get("method"), "encoder_meta": meta}


# name -> (arg, in_channels, arch) -> (encoder state_dict or None for "as built", description);
# "imagenet:" takes a file after the colon, "path" is any other value (a file or run folder)
INITS: dict[str, Callable[[str, int, str], tuple[State | None, dict]]] = {
    "random": _random,
    "imagenet": _imagenet,
    "imagenet:": _imagenet_file,
    "path": _encoder_file,
}


def parse_init(init: str) -> tuple[str, str]:
    """"imagenet:w.pth" -> ("imagenet:", "w.pth"); "random" -> ("random", ""); a path -> ("path", path)."""
    if init in ("random", "imagenet"):
        return init, ""
    if init.startswith("imagenet:"):
        return "imagenet:", init[len("imagenet:"):]
    return "path", init


def is_encoder_file(init: str) -> bool:
    """`init` names a ptxssl encoder file or run folder, not random / imagenet / imagenet:FILE."""
    return parse_init(init)[0] == "path"


def parse_encoders(specs: list[str]) -> dict[str, str]:
    """["random", "vae=runs/vae", "imagenet:w.pth"] -> {name: init}, the --encoder values of
    `compare` and `probe`: a name is given (NAME=INIT) or taken from the init (a file's run folder);
    names become folder names and table rows, so they are unique and path-safe."""
    encoders: dict[str, str] = {}
    for spec in specs:
        name, init = spec.split("=", 1) if "=" in spec and not spec.startswith("imagenet:") else ("", spec)
        name = name or _default_name(init)
        if not re.fullmatch(r"[\w.-]+", name):
            raise UserError(f"--encoder {spec!r}: name {name!r} may hold letters, digits, '.', '_', '-' only; "
                            "write NAME=INIT")
        if name in encoders:
            raise UserError(f"--encoder {spec!r}: the name {name!r} is used twice; write NAME=INIT")
        encoders[name] = init
    return encoders


def _default_name(init: str) -> str:
    if not is_encoder_file(init):
        return init.split(":")[0]
    path = Path(init)
    return (path.parent.name if path.suffix == ".safetensors" else path.name) or "encoder"


def init_arch(init: str, arch: str | None = None) -> str:
    """The encoder arch `init` gives: an encoder file's own arch (an explicit other `arch` is a
    UserError naming both), else `arch`, else resnet34."""
    if not is_encoder_file(init):
        return check_arch(arch or DEFAULT_ARCH)
    if not Path(init).exists():
        raise UserError(f"--encoder {init}: not 'random', 'imagenet' or 'imagenet:FILE', and no such encoder "
                        "file or pretrain run folder")
    return file_arch(init, arch)


def init_state(init: str, in_channels: int = 1, arch: str | None = None) -> tuple[State | None, dict]:
    """The encoder weights `init` names (None: keep the weights as built) and a description.

    Read on a forked RNG: building the helper encoders must not move the caller's seed, so
    whatever is built next (a UNet's decoder) starts from the same random numbers for every init.

    Returns:
        (state_dict or None, {"init": "random" | "imagenet" | "encoder", "spec": init as given,
        "source": file path, URL or None, "sha1": of the file or None, "in_channels", "arch"};
        for a ptxssl encoder also "method" and "encoder_meta" (its encoder.json)).
    Raises:
        UserError: unknown init or arch, offline without cached ImageNet weights, a file made
            for another arch than `arch`, or a file that is not a readable state_dict of an
            `arch` encoder with `in_channels` channels.
    """
    check_channels(in_channels)
    arch = init_arch(init, arch)
    kind, arg = parse_init(init)
    with torch.random.fork_rng(devices=[]):
        state, found = INITS[kind](arg, in_channels, arch)
    return state, {"init": "random", "spec": init, "source": None, "sha1": None, "in_channels": in_channels,
                   "arch": arch, **found}


def init_encoder(init: str, in_channels: int = 1, arch: str | None = None) -> tuple[nn.Module, dict]:
    """An `arch` encoder (`build_encoder`, from the caller's seed) with the weights `init`
    names, verified tensor by tensor, and `init_state`'s description."""
    state, desc = init_state(init, in_channels, arch)
    encoder = build_encoder(in_channels, desc["arch"])
    if state is not None:
        load_verified(encoder, state, desc["source"], desc["arch"])
    return encoder, desc


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


def load_verified(module: nn.Module, state: dict[str, torch.Tensor], source: str | None, arch: str) -> None:
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
