"""Run configuration: dataclasses whose fields are the CLI options, a YAML overlay that rejects
unknown keys, and the fully resolved config saved with every run.

Precedence: the method's defaults < the YAML file (`--config`) < options given on the
command line. Every field carries its help text, so a new method option is one field.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from ptxssl.errors import UserError
from ptxssl.files import write_text
from ptxssl.encoders import DEFAULT_ARCH
from ptxssl.engine.device import PRECISION_HELP


def opt(default: Any, help: str, **kw) -> Any:
    """A dataclass field with the help text its CLI option shows."""
    return field(default=default, metadata={"help": help, **kw})


@dataclass
class TrainConfig:
    """Options shared by every training command (devices, precision, steps, checkpoints)."""

    data: str = opt("", "Cache file written by `ptxssl prepare`.")
    out: str = opt("", "Run folder to write.")
    epochs: int = opt(10, "Passes over the training split.")
    max_steps: int = opt(-1, "Stop after this many optimizer steps (-1: no limit).")
    batch_size: int = opt(32, "Images per batch and device.")
    image_size: int = opt(0, "Train at this size (0: the cache's size; a multiple of 32).")
    in_channels: int = opt(1, "Input channels of the encoder (1 = grey, 3 = grey copied to RGB).")
    arch: str = opt(DEFAULT_ARCH, "Encoder architecture: any segmentation_models_pytorch encoder name "
                                "(resnet18, resnet34, vgg13, densenet121, efficientnet-b3, ...).")
    seed: int = opt(0, "Seed for weights, sampling and augmentation.")
    workers: int = opt(2, "DataLoader worker processes.")
    accelerator: str = opt("auto", "cpu, gpu, mps or auto (Lightning).")
    devices: str = opt("1", "Devices per node: a count, a list like 0,1, or auto.")
    strategy: str = opt("auto", "auto, ddp, ddp_spawn, ... (Lightning); ddp for several devices.")
    num_nodes: int = opt(1, "Nodes for multi-node DDP (torchrun/SLURM).")
    precision: str = opt("auto", PRECISION_HELP)
    channels_last: bool = opt(True, "Channels-last memory format for the model's convolutions (NHWC): what tensor "
                                    "cores and oneDNN want; measured faster on the CPU too (BENCHMARKS.md).")
    accumulate: int = opt(1, "Gradient accumulation: batches per optimizer step.")
    checkpoint_every: int = opt(100, "Write checkpoints/last.ckpt every N optimizer steps.")
    keep_checkpoints: bool = opt(False, "Keep checkpoints/ once the run has finished (weights with optimizer state, "
                                        "~0.3 GB at ResNet-34), so `--resume` with more --epochs or --max-steps can "
                                        "extend it; what the next stages read is in the run folder either way.")


def field_help(cls: type) -> dict[str, tuple[type, str]]:
    """{field name: (python type, help)} for a config dataclass, in declaration order."""
    types = {"int": int, "float": float, "str": str, "bool": bool}
    return {f.name: (f.type if isinstance(f.type, type) else types[f.type], f.metadata.get("help", ""))
            for f in fields(cls)}


def _coerce(name: str, value: Any, kind: type, where: str) -> Any:
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise UserError(f"{where}: {name} must be {kind.__name__}, got {value!r}")
    return value


def load_yaml(path: str | Path) -> dict:
    """A flat mapping from a YAML/JSON file; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"--config {path}: file not found")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise UserError(f"--config {path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise UserError(f"--config {path}: expected a mapping of option: value")
    return {str(k).replace("-", "_"): v for k, v in data.items()}


def resolve(classes: list[type], file: str | Path | None, overrides: dict[str, Any], label: str = "",
            preset: dict[str, Any] | None = None) -> list[Any]:
    """Build one instance per config dataclass from defaults < preset < file < overrides.

    Unknown keys in the file are an error listing the valid ones (a typo must not be ignored).
    """
    known = {name: kind for cls in classes for name, (kind, _) in field_help(cls).items()}
    values: dict[str, Any] = {k: _coerce(k, v, known[k], "preset") for k, v in (preset or {}).items()}
    if file:
        from_file = load_yaml(file)
        unknown = sorted(set(from_file) - set(known))
        if unknown:
            raise UserError(f"--config {file}: unknown key(s) {', '.join(unknown)}; "
                            f"valid keys: {', '.join(known)}")
        values.update({k: _coerce(k, v, known[k], f"--config {file}") for k, v in from_file.items()})
    given = {k: v for k, v in overrides.items() if v is not None}
    foreign = sorted(set(given) - set(known))
    if foreign:
        names = ", ".join("--" + k.replace("_", "-") for k in foreign)
        own = ", ".join("--" + k.replace("_", "-") for k in field_help(classes[-1]))
        raise UserError(f"option(s) {names} do not apply to {label or classes[-1].__name__} (its own options: {own})")
    values.update({k: _coerce(k, v, known[k], f"--{k.replace('_', '-')}") for k, v in given.items()})
    return [cls(**{k: v for k, v in values.items() if k in field_help(cls)}) for cls in classes]


def flat(*configs: Any) -> dict[str, Any]:
    """Merge config dataclasses into one flat dict (the form saved and printed)."""
    out: dict[str, Any] = {}
    for c in configs:
        out.update(dataclasses.asdict(c))
    return out


def save_yaml(path: str | Path, config: dict[str, Any]) -> None:
    """Write the resolved config so `--config path` repeats the run."""
    write_text(path, yaml.safe_dump(config, sort_keys=False))
