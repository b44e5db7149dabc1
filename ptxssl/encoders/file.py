"""The encoder file contract: `encoder.safetensors` + `encoder.json`, written and read here only.

`encoder.safetensors` holds tensors only (loading it cannot run code) and loads with
`strict=True` into `smp.Unet(arch, encoder_weights=None, in_channels=C).encoder`;
`encoder.json` beside it records method, arch, in_channels, image size, normalisation, the
data it was trained on, steps and the package version. The arch lives with the weights:
loading checks the tensors against the arch the file records, and a run that asks for
another arch is told so.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from ptxssl import __version__
from ptxssl.encoders.build import DEFAULT_ARCH, STUDY_ARCHS, build_encoder, check_arch, input_channels, layout
from ptxssl.encoders.input import NORMALIZATION
from ptxssl.errors import UserError
from ptxssl.files import atomic_path, write_json

WEIGHTS_FILE, META_FILE = "encoder.safetensors", "encoder.json"


def shapes_of(state: dict[str, torch.Tensor]) -> dict[str, torch.Size]:
    """{name: shape} of a state_dict, the form `mismatch` compares."""
    return {k: v.shape for k, v in state.items()}


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


def save_encoder(encoder: nn.Module, out_dir: str | Path, meta: dict) -> Path:
    """Write encoder.safetensors + encoder.json atomically into `out_dir`; return the weights path.

    `meta["arch"]` (default resnet34) is recorded and checked against the tensors first, so a
    file never claims an arch its weights do not fit (a bug, hence ValueError).
    """
    out_dir = Path(out_dir)
    arch = meta.get("arch", DEFAULT_ARCH)
    state = {k: v.detach().cpu().contiguous() for k, v in encoder.state_dict().items()}
    in_channels = input_channels(encoder)
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
