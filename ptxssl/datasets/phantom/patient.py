"""What one image shows: a patient (anatomy and acquisition habits) and their findings."""
from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType

import numpy as np

PREVALENCE = MappingProxyType({  # per-image probability of each finding, drawn independently
    "Atelectasis": 0.12, "Cardiomegaly": 0.08, "Effusion": 0.14, "Infiltration": 0.18, "Mass": 0.07,
    "Nodule": 0.08, "Pneumonia": 0.05, "Consolidation": 0.07, "Edema": 0.06, "Emphysema": 0.06,
    "Fibrosis": 0.05, "Pleural_Thickening": 0.06, "Hernia": 0.05,
})


@dataclass(frozen=True)
class Patient:
    """Per-patient anatomy and acquisition habits: what stays the same across one patient's
    follow-up images (each image then adds a small jitter of position and exposure)."""

    seed: int             # the vessel tree: identical markings on every follow-up
    female: bool          # breast shadows over the lung bases
    scale: float          # thorax size in the frame
    shift: tuple[float, float]  # (x, y) thorax offset in the frame, image units
    rotation: float       # degrees, in-plane
    lung_width: float     # ~1
    lung_height: float    # ~1
    ctr: float            # cardiothoracic ratio (heart width / thorax width)
    dome: float           # v of the right (image-left) dome, the higher one
    dome_gap: float       # how much lower the left dome sits
    rib_spacing: float
    soft_tissue: float    # habitus: chest-wall thickness and density
    bubble: float         # gastric air bubble radius (0 = none)
    penetration: float    # attenuation -> brightness contrast (kVp-ish)
    gamma: float
    noise: float          # quantum-noise std at mid grey
    blur: float           # focal spot / detector blur, anatomical units


def sample_patient(rng: np.random.Generator) -> Patient:
    """Draw a plausible adult patient."""
    u = rng.uniform
    female = bool(rng.random() < 0.5)
    return Patient(
        seed=int(rng.integers(2**31)), female=female, scale=u(0.86, 1.0),
        shift=(u(-0.04, 0.04), u(-0.01, 0.08)), rotation=float(np.clip(rng.normal(0, 2), -5, 5)),
        lung_width=u(0.93, 1.05), lung_height=u(0.92, 1.06), ctr=u(0.38, 0.47),
        dome=u(0.2, 0.32), dome_gap=u(0.02, 0.07), rib_spacing=u(0.105, 0.125),
        soft_tissue=u(0.85, 1.15) + 0.1 * female, bubble=0.0 if rng.random() < 0.3 else u(0.03, 0.07),
        penetration=u(1.5, 2.1), gamma=u(0.8, 1.2), noise=u(0.006, 0.02), blur=u(0.002, 0.006),
    )


def sample_findings(rng: np.random.Generator, pneumothorax: bool) -> frozenset[str]:
    """Independent findings with plausible prevalences (~5-20% each; often none = 'No Finding').
    'Pneumothorax' is in the set iff `pneumothorax`: the caller sets the positive fraction."""
    draw = rng.random(len(PREVALENCE)) < np.array(list(PREVALENCE.values()))
    return frozenset([k for k, hit in zip(PREVALENCE, draw) if hit] + ["Pneumothorax"] * bool(pneumothorax))
