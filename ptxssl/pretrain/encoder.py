"""The encoder every method trains, its 1-channel policy, and the encoder file.

The encoder *is* segmentation-models-pytorch's own encoder for `--arch` (default resnet34;
any smp encoder name: resnet18, vgg13, densenet121, efficientnet-b3, ...), built by
`build_encoder` and nowhere else, so a pretrained state_dict loads key-for-key,
`strict=True`, into `smp.Unet(arch, encoder_weights=None, in_channels=C).encoder`.
Feature sizes come from the built encoder (`feature_dim`), never from a constant: a
resnet34 ends in 512 channels, a densenet121 in 1024, an efficientnet-b3 in 384.

1-channel policy (the same in every stage, recorded in encoder.json):
    images are grey in [0, 1] and normalised with ImageNet's grey statistics
    (mean 0.449, std 0.226: the means of its RGB mean/std). ImageNet weights reach 1 channel
    the way smp adapts the first convolution (summing the RGB kernels), so a grey image
    normalised this way gives an ImageNet encoder the same activations as the grey image
    copied into R, G and B.

Encoder file: `encoder.safetensors` (tensors only: loading it cannot run code) and
`encoder.json` beside it (method, arch, in_channels, image size, normalisation, data, steps,
package version). The arch lives with the weights: loading checks the tensors against the
arch the file records, and a run that asks for another arch is told so.
"""
from __future__ import annotations

import difflib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

import segmentation_models_pytorch as smp
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from ptxssl import __version__
from ptxssl.errors import UserError
from ptxssl.files import atomic_path, write_json

DEFAULT_ARCH = "resnet34"
# the encoders the pneumothorax studies used; named in errors and tried when a file's
# tensors do not fit the arch it records
STUDY_ARCHS = ("resnet18", "resnet34", "vgg13", "densenet121", "efficientnet-b3")
NORMALIZATION = {"mean": 0.449, "std": 0.226}
WEIGHTS_FILE, META_FILE = "encoder.safetensors", "encoder.json"


def check_arch(arch: str) -> str:
    """`arch` if smp knows it (its own encoders, or timm's as `tu-NAME`); otherwise a
    UserError suggesting the nearest names."""
    names = smp.encoders.get_encoder_names()
    if arch in names or (arch.startswith("tu-") and len(arch) > 3):
        return arch
    near = difflib.get_close_matches(arch, names, n=3) or list(STUDY_ARCHS)
    raise UserError(f"--arch {arch!r}: not a segmentation_models_pytorch encoder; did you mean "
                    f"{', '.join(near)}? (all names: segmentation_models_pytorch.encoders.get_encoder_names())")


def build_encoder(in_channels: int = 1, arch: str = DEFAULT_ARCH) -> nn.Module:
    """A randomly initialised smp encoder for `arch` (never downloads anything); the one place
    ptxssl builds an encoder, so pretraining, analysis and transfer share its layout."""
    if in_channels not in (1, 3):
        raise UserError(f"--in-channels must be 1 or 3 (got {in_channels})")
    with smp_build_errors(check_arch(arch), in_channels):
        return smp.encoders.get_encoder(arch, in_channels=in_channels, depth=5, weights=None)


@contextmanager
def smp_build_errors(arch: str, in_channels: int) -> Iterator[None]:
    """Turn smp's refusal to build `arch` (e.g. an encoder that only takes 3 channels) into a
    one-line UserError; used around every smp constructor ptxssl calls."""
    try:
        yield
    except (KeyError, ValueError, RuntimeError, NotImplementedError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        raise UserError(f"--arch {arch}: smp cannot build this encoder with {in_channels} input channel(s) "
                        f"({first}); choose another, e.g. {', '.join(STUDY_ARCHS)}") from None


@lru_cache(maxsize=None)
def layout(arch: str, in_channels: int = 1) -> tuple[str, dict[str, torch.Size]]:
    """(name of the input convolution's weight, {tensor name: shape}) of `arch`'s encoder.

    Built once per (arch, channels) on the meta device: names and shapes without memory or
    init cost (a real vgg13 spends ~1 s initialising the classifier smp then deletes), so
    every file check can afford it.
    """
    with torch.device("meta"):
        encoder = build_encoder(in_channels, arch)
    shapes = {k: v.shape for k, v in encoder.state_dict().items()}
    return first_conv(encoder)[0] + ".weight", shapes


def shapes_of(state: dict[str, torch.Tensor]) -> dict[str, torch.Size]:
    """{name: shape} of a state_dict, the form `mismatch` compares."""
    return {k: v.shape for k, v in state.items()}


def feature_dim(encoder: nn.Module) -> int:
    """Channels of the encoder's deepest stage: the size of `pooled` features and of every head."""
    return int(encoder.out_channels[-1])


def first_conv(encoder: nn.Module) -> tuple[str, nn.Conv2d]:
    """(name, module) of the input convolution, the one smp's `patch_first_conv` adapts to
    1 channel; its weight's second dimension is the encoder's input channel count."""
    for name, module in encoder.named_modules():
        if isinstance(module, nn.Conv2d):
            return name, module
    raise ValueError(f"{type(encoder).__name__} has no Conv2d")


def load_strict(encoder: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """`nn.Module.load_state_dict(strict=True)` on an smp encoder, bypassing the encoder's own
    override: that one drops ImageNet classifier keys and renames old torchvision keys (and
    densenet's does not even take `strict`), which is for ImageNet files, not ptxssl's."""
    nn.Module.load_state_dict(encoder, dict(state), strict=True)


def mismatch(own: dict[str, torch.Size], state: dict[str, torch.Tensor], ignore: tuple[str, ...] = ()) -> str:
    """A short description of why `state` does not fit the shapes `own` ("" if it does); keys
    starting with an `ignore` prefix (an ImageNet classifier) are left out."""
    keys = {k for k in state if not k.startswith(ignore)} if ignore else set(state)
    missing, unexpected = sorted(own.keys() - keys), sorted(keys - own.keys())
    shapes = [k for k in sorted(keys & own.keys()) if state[k].shape != own[k]]
    parts = [f"{len(missing)} missing tensors, e.g. {missing[0]}" if missing else "",
             f"{len(unexpected)} unexpected, e.g. {unexpected[0]}" if unexpected else "",
             f"{shapes[0]} is {tuple(state[shapes[0]].shape)}, expected {tuple(own[shapes[0]])}" if shapes else ""]
    return "; ".join(p for p in parts if p)


def guess_arch(state: dict[str, torch.Tensor]) -> str | None:
    """The study arch whose tensors `state` fits (any channel count), for error messages."""
    for arch in STUDY_ARCHS:
        conv, own = layout(arch)
        if own.keys() == state.keys() and all(state[k].shape == v for k, v in own.items() if k != conv):
            return arch
    return None


def normalize(x: torch.Tensor) -> torch.Tensor:
    """[0, 1] grey images -> the encoder's input scale (see the 1-channel policy above)."""
    return (x - NORMALIZATION["mean"]) / NORMALIZATION["std"]


def deepest(encoder: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) in [0, 1] -> (N, D, H/32, W/32), D = feature_dim: the last stage, no skip features."""
    return encoder(normalize(x))[-1]


def pooled(encoder: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) in [0, 1] -> (N, D) global-average-pooled features, D = feature_dim."""
    return deepest(encoder, x).mean(dim=(2, 3))


def save_encoder(encoder: nn.Module, out_dir: str | Path, meta: dict) -> Path:
    """Write encoder.safetensors + encoder.json atomically into `out_dir`; return the weights path.

    `meta["arch"]` (default resnet34) is recorded and checked against the tensors first, so a
    file never claims an arch its weights do not fit (a bug, hence ValueError).
    """
    out_dir = Path(out_dir)
    arch = meta.get("arch", DEFAULT_ARCH)
    state = {k: v.detach().cpu().contiguous() for k, v in encoder.state_dict().items()}
    in_channels = int(first_conv(encoder)[1].weight.shape[1])
    problem = mismatch(layout(arch, in_channels)[1], state)
    if problem:
        raise ValueError(f"save_encoder: the encoder is not a {arch} ({problem}); pass its arch in meta")
    weights = out_dir / WEIGHTS_FILE
    with atomic_path(weights) as tmp:
        save_file(state, str(tmp))
    write_json(out_dir / META_FILE, {"arch": arch, "normalization": NORMALIZATION,
                                     "ptxssl_version": __version__, **meta})
    return weights


def resolve_encoder_path(path: str | Path) -> Path:
    """Accept the .safetensors file or the run/export folder holding it."""
    path = Path(path)
    if path.is_dir():
        for candidate in (path / WEIGHTS_FILE, path / "export" / WEIGHTS_FILE):
            if candidate.is_file():
                return candidate
        raise UserError(f"{path}: no {WEIGHTS_FILE} in this folder; pass the file itself")
    if not path.is_file():
        raise UserError(f"{path}: encoder file not found")
    return path


def read_meta(weights: Path) -> dict:
    """encoder.json beside `weights` ({} when absent: a bare safetensors file)."""
    meta_path = weights.with_name(META_FILE)
    if not meta_path.is_file():
        return {}
    try:
        return json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{meta_path}: not valid JSON ({e}); re-export the encoder") from None


def file_arch(path: str | Path, arch: str | None = None) -> str:
    """The arch an encoder file was made for (encoder.json; a bare file: `arch` or resnet34).

    Args:
        arch: the arch the run asks for (--arch), or None to take the file's.
    Raises:
        UserError: the file records another arch than `arch`, naming both and the fix.
    """
    weights = resolve_encoder_path(path)
    recorded = read_meta(weights).get("arch")
    if arch and recorded and recorded != arch:
        raise UserError(f"{weights}: this encoder is a {recorded} but --arch is {arch}; drop --arch (the "
                        f"file's arch is used) or pass --arch {recorded}, or pretrain a {arch} encoder")
    return check_arch(recorded or arch or DEFAULT_ARCH)


def load_encoder(path: str | Path, arch: str | None = None) -> tuple[nn.Module, dict]:
    """Load an encoder file strictly into the arch it records; a file for another arch than
    `arch` (when given), another channel count, tensors that do not fit the recorded arch, or a
    truncated file, is a UserError naming the file and what does not match.

    Returns:
        the encoder, and its encoder.json with "arch" and "in_channels" filled in.
    """
    weights = resolve_encoder_path(path)
    meta = read_meta(weights)
    arch = file_arch(weights, arch)
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as e:
        raise UserError(f"{weights}: not a readable safetensors file ({e}); re-export the encoder") from None
    conv = layout(arch)[0]
    if state.get(conv) is None or state[conv].ndim != 4:
        _not_this_arch(weights, arch, "arch" in meta, state, f"no {conv}")
    in_channels = int(state[conv].shape[1])
    if meta.get("in_channels", in_channels) != in_channels:
        raise UserError(f"{weights}: {conv} has {in_channels} input channels but {META_FILE} says "
                        f"{meta['in_channels']}; the two files do not belong together")
    problem = mismatch(layout(arch, in_channels)[1], state)
    if problem:
        _not_this_arch(weights, arch, "arch" in meta, state, problem)
    encoder = build_encoder(in_channels, arch)
    load_strict(encoder, state)
    return encoder, {**meta, "arch": arch, "in_channels": in_channels}


def _not_this_arch(weights: Path, arch: str, recorded: bool, state: dict[str, torch.Tensor], problem: str) -> None:
    """The UserError for tensors that do not fit `arch`, naming the arch they do fit if it is a study arch."""
    guess = guess_arch(state)
    where = (f"the arch its {META_FILE} records" if recorded
             else f"the arch asked for (no {META_FILE} beside it; --arch, default {DEFAULT_ARCH})")
    if guess and guess != arch:
        fix = (f"they are a {guess}: correct \"arch\" in {META_FILE} to {guess} or re-export the encoder"
               if recorded else f"they are a {guess}: pass --arch {guess}")
    else:
        fix = "was it made for another architecture? re-export it with `ptxssl pretrain --arch NAME`"
    raise UserError(f"{weights}: its tensors do not fit a {arch} encoder, {where} ({problem}); {fix}")
