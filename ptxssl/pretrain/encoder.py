"""The ResNet-34 encoder every method trains, its 1-channel policy, and the encoder file.

The encoder *is* segmentation-models-pytorch's `ResNetEncoder` (torchvision's ResNet without
`fc`/`avgpool`), so a pretrained state_dict loads key-for-key, `strict=True`, into
`smp.Unet("resnet34", encoder_weights=None, in_channels=C).encoder`.

1-channel policy (the same in every stage, recorded in encoder.json):
    images are grey in [0, 1] and normalised with ImageNet's grey statistics
    (mean 0.449, std 0.226: the means of its RGB mean/std). ImageNet weights reach 1 channel
    the way smp adapts `conv1` (summing the RGB kernels), so a grey image normalised this way
    gives an ImageNet encoder the same activations as the grey image copied into R, G and B.

Encoder file: `encoder.safetensors` (tensors only: loading it cannot run code) and
`encoder.json` beside it (method, arch, in_channels, image size, normalisation, data, steps,
package version).
"""
from __future__ import annotations

import json
from pathlib import Path

import segmentation_models_pytorch as smp
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from ptxssl import __version__
from ptxssl.errors import UserError
from ptxssl.files import atomic_path, write_json

ARCH = "resnet34"
FEATURE_DIM = 512  # channels of the deepest ResNet-34 stage
NORMALIZATION = {"mean": 0.449, "std": 0.226}
WEIGHTS_FILE, META_FILE = "encoder.safetensors", "encoder.json"


def build_encoder(in_channels: int = 1) -> nn.Module:
    """A randomly initialised smp ResNet-34 encoder (never downloads anything)."""
    if in_channels not in (1, 3):
        raise UserError(f"--in-channels must be 1 or 3 (got {in_channels})")
    return smp.encoders.get_encoder(ARCH, in_channels=in_channels, depth=5, weights=None)


def normalize(x: torch.Tensor) -> torch.Tensor:
    """[0, 1] grey images -> the encoder's input scale (see the 1-channel policy above)."""
    return (x - NORMALIZATION["mean"]) / NORMALIZATION["std"]


def deepest(encoder: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) in [0, 1] -> (N, 512, H/32, W/32): the last stage, no skip features."""
    return encoder(normalize(x))[-1]


def pooled(encoder: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) in [0, 1] -> (N, 512) global-average-pooled features."""
    return deepest(encoder, x).mean(dim=(2, 3))


def save_encoder(encoder: nn.Module, out_dir: str | Path, meta: dict) -> Path:
    """Write encoder.safetensors + encoder.json atomically into `out_dir`; return the weights path."""
    out_dir = Path(out_dir)
    weights = out_dir / WEIGHTS_FILE
    state = {k: v.detach().cpu().contiguous() for k, v in encoder.state_dict().items()}
    with atomic_path(weights) as tmp:
        save_file(state, str(tmp))
    write_json(out_dir / META_FILE, {"arch": ARCH, "normalization": NORMALIZATION,
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


def load_encoder(path: str | Path) -> tuple[nn.Module, dict]:
    """Load an encoder file strictly; a file for another architecture or channel count, or a
    truncated one, is a UserError naming the file and what does not match."""
    weights = resolve_encoder_path(path)
    meta_path = weights.with_name(META_FILE)
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as e:
        raise UserError(f"{weights}: not a readable safetensors file ({e}); re-export the encoder") from None
    conv1 = state.get("conv1.weight")
    if conv1 is None or conv1.ndim != 4:
        raise UserError(f"{weights}: not a {ARCH} encoder (no conv1.weight); expected a file written "
                        "by `ptxssl pretrain`")
    in_channels = int(conv1.shape[1])
    if meta.get("in_channels", in_channels) != in_channels:
        raise UserError(f"{weights}: conv1 has {in_channels} input channels but {META_FILE} says "
                        f"{meta['in_channels']}; the two files do not belong together")
    encoder = build_encoder(in_channels)
    try:
        encoder.load_state_dict(state, strict=True)
    except RuntimeError as e:
        first = str(e).splitlines()[1].strip() if len(str(e).splitlines()) > 1 else str(e)
        raise UserError(f"{weights}: does not fit a {ARCH} encoder ({first}); was it made for "
                        "another architecture?") from None
    return encoder, {"in_channels": in_channels, **meta}
