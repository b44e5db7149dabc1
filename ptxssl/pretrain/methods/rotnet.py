"""RotNet: predict how an image was turned — which of 4 rotations, and whether it was mirrored.

Gidaris, Singh & Komodakis 2018, "Unsupervised Representation Learning by Predicting Image
Rotations", https://arxiv.org/abs/1803.07728: a classifier on the encoder's pooled features
names the rotation (0, 90, 180, 270 degrees) applied to each image; to answer, the encoder
must learn where things are in an upright image. Here the mirrored copies count too
(`--orientations 8`, the default: the 8 symmetries of a square): on a chest film laterality
is decided by the heart, the aortic knob and the gastric bubble, and a film the wrong way
round or mirrored is a QC error (`ptxssl plant`); a global average of contrastive or
reconstruction features hardly sees it, so their anomaly scores miss flipped films. A RotNet
encoder's features are made to see it; `embed --mirror` + `anomaly --method mirror` read it.
`--invert` adds the grey scale's polarity (16 classes), the third QC error.

Each image gets one orientation per step, drawn from the step's generator (the paper fed all
four rotations of every image in the batch, 4x the compute per image), after
the mild augmentation of label training (crops of 85-100 %, rotation up to 10 degrees, small
shifts and intensity changes, never a flip).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ptxssl.engine.augment import ChestXrayAugment, label_augment
from ptxssl.engine.config import opt
from ptxssl.errors import UserError
from ptxssl.encoders import DEFAULT_ARCH
from ptxssl.pretrain.methods.base import Method, MethodConfig

ORIENTATIONS = (4, 8)


@dataclass
class RotNetConfig(MethodConfig):
    orientations: int = opt(8, "Orientations to name: 4 (the paper's rotations by 0/90/180/270 degrees) or 8 (those "
                               "of the image and of its mirror: laterality too) (RotNet).")
    invert: bool = opt(False, "Also name whether the grey scale was inverted, doubling the classes: a MONOCHROME1 film "
                              "shown as MONOCHROME2 is the third QC error `ptxssl plant` makes (RotNet).")

    def __post_init__(self) -> None:
        if self.orientations not in ORIENTATIONS:
            raise UserError(f"--orientations must be 4 or 8 (got {self.orientations}): 4 rotations, or 4 rotations "
                            "of the image and of its mirror")


def orient(x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """(N, C, S, S) images turned to orientations `k` (N,) in 0..7: rotated by 90 degrees x (k % 4)
    counter-clockwise, then mirrored left-right where k >= 4."""
    out = torch.empty_like(x)
    for o in k.unique().tolist():
        rows = k == o
        turned = torch.rot90(x[rows], o % 4, dims=(2, 3))
        out[rows] = turned.flip(3) if o >= 4 else turned
    return out


def turn(x: torch.Tensor, k: torch.Tensor, orientations: int) -> torch.Tensor:
    """(N, C, S, S) images in [0, 1] put in classes `k` (N,): orientation k % orientations, and
    the grey scale inverted (1 - x) where k >= orientations."""
    turned = orient(x, k % orientations)
    return torch.where((k >= orientations).view(-1, 1, 1, 1), 1 - turned, turned)


class RotNet(Method):
    name = "rotnet"
    title = "RotNet (rotations + mirror)"
    config_class = RotNetConfig
    paper = {"orientations": (4, "RotNet, Gidaris et al. 2018 (rotations only; 8 adds the mirror, chest films' "
                                 "laterality)")}

    def __init__(self, cfg: RotNetConfig, in_channels: int = 1, image_size: int = 64, num_classes: int = 0,
                 arch: str = DEFAULT_ARCH) -> None:
        super().__init__(cfg, in_channels, image_size, num_classes, arch)
        self.augment = ChestXrayAugment(label_augment())
        self.head = nn.Linear(self.feature_dim, cfg.orientations * (2 if cfg.invert else 1))

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, S, S) -> (N, classes) scores of each class of `turn` (0: as the image is)."""
        return self.head(self.embed(x))

    def step(self, batch: dict) -> dict[str, torch.Tensor]:
        x, g = batch["image"], batch["generator"]
        k = torch.randint(0, self.head.out_features, (x.shape[0],), generator=g).to(x.device)
        logits = self.logits(turn(self.augment(x, g), k, self.cfg.orientations))
        loss = F.cross_entropy(logits, k)
        accuracy = (logits.argmax(1) == k).float().mean()
        return {"loss": loss, "accuracy": accuracy.detach()}

    @torch.no_grad()
    def write_figures(self, batch: dict, out_dir: Path) -> list[Path]:
        from ptxssl.pretrain.figures import image_grid

        x = batch["image"][:8]
        k = torch.arange(x.shape[0], device=x.device) % self.head.out_features
        return [image_grid([x, turn(x, k, self.cfg.orientations)], Path(out_dir) / "orientations.png",
                           title="RotNet: images (top) and the classes it learns to name (bottom: 0, 1, 2, ...)")]
