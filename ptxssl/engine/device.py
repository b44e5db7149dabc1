"""The device inference runs on (`--device` of embed, probe, predict, rescore).

Training gets its devices from Lightning (`--accelerator`, `--devices`); the commands that only
run a trained model pick one device here. `auto` is a GPU when there is one, so a user on a GPU
machine is not left scoring 100k films on the CPU because an option defaulted to it.
"""
from __future__ import annotations

import torch

from ptxssl.errors import UserError

DEVICE_HELP = "Torch device for inference: auto (the GPU when there is one, else the CPU), cpu, cuda, cuda:1, mps."


def resolve_device(name: str = "auto") -> torch.device:
    """`name` as a torch.device; `auto` -> cuda if available, else cpu. A device this machine
    does not have is a one-line UserError naming --device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise UserError(f"--device {name!r}: not a torch device; use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and (not torch.cuda.is_available() or (device.index or 0) >= torch.cuda.device_count()):
        raise UserError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s); "
                        "use --device auto or cpu")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise UserError(f"--device {name}: Apple's MPS is not available here; use --device auto or cpu")
    if device.type not in ("cpu", "cuda", "mps"):
        raise UserError(f"--device {name}: ptxssl runs on cpu, cuda or mps")
    return device
