"""Small builders shared by the test packages."""
from __future__ import annotations

from pathlib import Path

import torch

from ptxssl.datasets.cache import prepare
from ptxssl.datasets.synth import synthesize


def synthetic_cache(root: Path, fmt: str, count: int, seed: int, size: int = 32, source_size: int | None = None,
                    positive_fraction: float = 0.3, **prepare_options) -> Path:
    """Synthesize `count` images of format `fmt` into `root` and prepare `root/<fmt>.h5` at `size` px."""
    synthesize(root, count=count, size=source_size or size, formats=(fmt,), positive_fraction=positive_fraction,
               seed=seed, progress=False)
    out = root / f"{fmt}.h5"
    prepare(root / fmt, fmt, out, size=size, workers=1, progress=False, **prepare_options)
    return out


def assert_features_close(actual, expected, depth: int = 36, fan_in: int = 4608) -> None:
    """Two float32 network outputs computed by different code paths (batch sizes, kernels,
    CPU instruction sets) agree to float32 accuracy.

    A convolution sums `fan_in` products (ResNet-34's widest: 512 channels x 3 x 3 = 4608); in
    float32 (eps 1.2e-7) another summation order changes the sum by about eps * sqrt(fan_in)
    relative to its terms' scale (~8e-6 here; batch size and AVX2 vs AVX-512 change the order),
    and the error compounds through `depth` layers (36 convolutions in a ResNet-34): ~3e-4 of
    the activations' scale. The bound below allows 4x that, relative to the largest value of
    `expected`, plus the same relative share of each value: measured differences between batch
    16 and batch 1 were 1.9e-5 on values of ~0.05 with a maximum of ~0.5 (4e-5 relative to the
    maximum), while a genuinely different input preparation (bilinear resizing with vs without
    antialiasing) moves pooled features by ~1e-2 of their scale.
    """
    import numpy as np

    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    tol = 4 * depth * np.finfo(np.float32).eps * np.sqrt(fan_in)  # ~1.2e-3
    scale = float(np.abs(expected).max()) or 1.0
    np.testing.assert_allclose(actual, expected, rtol=tol, atol=tol * scale)


def assert_encoder_is(encoder: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """`encoder` holds exactly the tensors of `state`: the same names, every tensor equal."""
    own = encoder.state_dict()
    assert own.keys() == state.keys()
    for key, value in state.items():
        assert torch.equal(own[key], value), key


def assert_state_equal(module, state: dict) -> None:
    """`module` holds exactly `state`'s tensors (an ImageNet file's fc.* classifier aside)."""
    import torch

    own = module.state_dict()
    assert set(own) == {k for k in state if not k.startswith("fc.")}
    for k, v in own.items():
        assert torch.equal(v, state[k]), k


def scrambled(module, seed: int):
    """`module` with every parameter and BN buffer set to values no initialiser would produce
    (uniform in [0.5, 1.5)), so a test can tell loaded weights from built ones."""
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for t in module.state_dict().values():
            if t.is_floating_point():
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
    return module

