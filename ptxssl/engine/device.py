"""The device and precision inference runs in (`--device`, `--precision` of embed, probe,
predict, rescore), and the precision training runs in (`--precision auto`).

Training gets its devices from Lightning (`--accelerator`, `--devices`); the commands that only
run a trained model pick one device here. `auto` is a GPU when there is one, so a user on a GPU
machine is not left scoring 100k films on the CPU because an option defaulted to it.
"""
from __future__ import annotations

import contextlib

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


PRECISIONS = ("auto", "32-true", "16-mixed", "bf16-mixed")
PRECISION_HELP = ("auto (bf16-mixed on GPUs that support it, 16-mixed on older ones, 32-true on the CPU), "
                  "32-true, 16-mixed or bf16-mixed.")


def resolve_precision(name: str, device: torch.device | str) -> str:
    """`--precision` as Lightning's name for it on `device`: `auto` is the field's default for the
    hardware (bf16 autocast on Ampere and newer, fp16 with loss scaling on older GPUs, float32 on
    the CPU and on Apple's MPS, where mixed precision is slower or unsupported for convolutions)."""
    if name not in PRECISIONS:
        raise UserError(f"--precision {name!r}: use {', '.join(PRECISIONS)}")
    if name != "auto":
        return name
    if torch.device(device).type == "cuda":
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return "32-true"


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """The inference side of `precision` (already resolved): torch.autocast in the matching
    dtype, or nothing for 32-true. Outputs are cast back to float32 by the callers."""
    if precision == "32-true":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if precision.startswith("bf16") else torch.float16)


def inference_setup(device: torch.device, precision: str = "auto") -> str:
    """What the inference commands (embed, probe, predict, rescore) set before running a model:
    TF32 matmuls and cuDNN autotuning on CUDA (fixed image sizes); the resolved precision."""
    if device.type == "cuda":
        torch.set_float32_matmul_precision("high")
        torch.backends.cudnn.benchmark = True
    return resolve_precision(precision, device)
