"""What the report calls methods and encoders: read from the code and from the run, never copied.

Method titles come from the method registry (`Method.title`, `ptxssl.pretrain.methods.METHODS`):
a copy of them kept here had already drifted ("MoCo" while the method calls itself "MoCo v2"),
and a method added to the registry is named correctly without touching the report. A folder
whose method the registry does not know (a foreign or newer run) still renders, under its name.

The encoder arch comes from the files a run wrote (encoder.json, config.yaml, ptxssl.json, the
`arch` column of compare's results.csv, an embeddings file's attributes), not from the default:
`--arch` can be anything, so where no file says, the text speaks of "the same encoder".
"""
from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

from ptxssl.pretrain.methods import METHODS
from ptxssl.report.read import read_csv, read_json, read_yaml

# Page order of the pretraining runs: the registry's, which is also the order the demo runs them in.
METHOD_ORDER: tuple[str, ...] = tuple(METHODS)
DISPLAY_NAMES: dict[str, str] = {name: getattr(cls, "title", "") or name for name, cls in METHODS.items()}
RANDOM_NOTE = "{the} {encoder} with untrained random weights{bn}, the floor a learned encoder must beat"
ARCH_FAMILIES = {"resnet": "ResNet", "resnext": "ResNeXt", "densenet": "DenseNet", "vgg": "VGG",
                 "efficientnet": "EfficientNet", "mobilenet": "MobileNet", "regnet": "RegNet"}


def method_title(name: str) -> str:
    """The registry's human name of method `name` ("MoCo v2" for moco); an unknown name as is."""
    return DISPLAY_NAMES.get(name, name)


def method_rank(name: str) -> int:
    """Position of `name` in the page order; unknown methods after the known ones."""
    return METHOD_ORDER.index(name) if name in METHOD_ORDER else len(METHOD_ORDER)


def arch_title(arch: str) -> str:
    """"resnet18" -> "ResNet-18", "efficientnet-b3" -> "EfficientNet-B3"; other names as they are."""
    m = re.fullmatch(r"([a-z]+)-?([a-z]?\d+)", arch)
    return f"{ARCH_FAMILIES[m[1]]}-{m[2].upper()}" if m and m[1] in ARCH_FAMILIES else arch


def article(word: str) -> str:
    """'a' or 'an' before a printed arch name ("an EfficientNet-B3", "a ResNet-18")."""
    return "an" if word[:1].lower() in "aeiou" else "a"


def run_method(run: Path) -> str:
    """The method a pretrain run folder trained: encoder.json, else config.yaml, else the folder's name."""
    for meta in (read_json(run / "encoder.json"), read_yaml(run / "config.yaml")):
        if isinstance(meta, dict) and meta.get("method"):
            return str(meta["method"])
    return run.name


def run_arch(run: Path) -> str | None:
    """The encoder arch a run folder recorded: encoder.json and config.yaml (pretrain; config.yaml
    alone while the run is unfinished), ptxssl.json (transfer); None when none says."""
    for meta in (read_json(run / "encoder.json"), read_yaml(run / "config.yaml"), read_json(run / "ptxssl.json")):
        if isinstance(meta, dict) and meta.get("arch"):
            return str(meta["arch"])
    return None


def embeddings_attr(path: Path, key: str) -> str | None:
    """An attribute an embeddings file (`ptxssl embed`) records ("arch", "bn"); None if absent or unreadable."""
    import h5py

    try:
        with h5py.File(path, "r") as h5:
            value = h5.attrs.get(key)
    except (OSError, ValueError):
        return None
    value = value.decode() if isinstance(value, bytes) else value
    return str(value) if value else None


# what the report says of the BatchNorm protocol an embeddings file records (`embed --bn`)
BN_NOTES = {"precise": " (its BatchNorm statistics re-estimated on the train images, as for every embedding here)",
            "as-is": " (read with its BatchNorm at init, the identity: `embed --bn as-is`)"}


def shared_arch(archs: Iterable[str | None]) -> str | None:
    """The one arch the known `archs` agree on; None when none is known or they differ."""
    known = {a for a in archs if a}
    return known.pop() if len(known) == 1 else None


def demo_arch(d: Path) -> str | None:
    """The arch every run of the demo folder `d` records (pretrain runs, the compare grid), if one."""
    runs = [run_arch(p) for p in (d / "pretrain").glob("*") if p.is_dir()]
    grid = [r.get("arch") for r in read_csv(d / "compare" / "results.csv")]
    return shared_arch(runs + grid)


def random_note(arch: str | None, same: bool = True, bn: str | None = None) -> str:
    """What the `random` baseline is: the same encoder as the runs it is compared with (its arch
    printed when a file recorded it), with untrained weights, and the BatchNorm protocol its
    embeddings were read with when they record one."""
    name = arch_title(arch) if arch else "encoder"
    the = "the same" if same else (article(name) if arch else "an")
    return RANDOM_NOTE.format(the=the, encoder=name, bn=BN_NOTES.get(bn or "", ""))
