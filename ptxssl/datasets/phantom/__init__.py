"""Procedural chest X-ray phantoms: the default data when no real images are at hand.

A phantom is a projection: soft-tissue thickness minus lung air plus bone, vessel markings
and findings, turned into brightness by an exponential (film-like) response, then blurred
and given quantum noise. Everything is a vectorised field drawn in anatomical coordinates
(u right, v down, the rib cage spanning u in ~[-0.8, 0.8]) that a per-image shift, scale and
rotation maps onto the pixel grid, so one `Patient` gives consistent follow-up images.

Modules, in the order a render uses them:
    patient     who is imaged and with which findings (`sample_patient`, `sample_findings`)
    radiograph  `render`: pose, then anatomy and findings, then blur, film response, noise
    anatomy     body, ribs, lungs, heart, mediastinum of the frontal and lateral views
    vessels     lung markings from cached vessel-tree templates
    findings    the NIH findings, each editing the scene; pneumothorax also returns masks
    scene       the shapes (`Lung`, `Heart`) and density layers anatomy hands to findings
    raster      pixel helpers: banded passes, blur, windows, splats, soft edges, noise
"""
from __future__ import annotations

from ptxssl.datasets.phantom.patient import PREVALENCE, Patient, sample_findings, sample_patient
from ptxssl.datasets.phantom.radiograph import Phantom, render
from ptxssl.datasets.phantom.scene import VIEWS

__all__ = ["PREVALENCE", "VIEWS", "Patient", "Phantom", "render", "sample_findings", "sample_patient"]
