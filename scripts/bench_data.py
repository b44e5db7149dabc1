"""Data-path benchmark: synth, prepare, and DataLoader throughput from the cache vs the source.

Prints images/s for each step and the cache-vs-source ratio, all measured in this process:

    python scripts/bench_data.py --count 2000 --size 256          # synth speed at 256 px
    python scripts/bench_data.py --prepare-count 200              # DICOM 1024^2 -> 256 cache

The DataLoader comparison reads the same 256 px SIIM images two ways with the same loader
settings: from the HDF5 cache (what training does) and by decoding the DICOM and letterboxing
it on every access (what training would do without `prepare`).

`--loader-sizes 256,512 --loader-count 2000` adds the cache's own overhead: ptxssl's
CacheDataset (image, index, labels) beside a bare h5py Dataset that reads the same rows as
float tensors, through the same DataLoader (batch 32, shuffled, 0 and --workers workers), in
the same run, on caches of that many ChestX-ray14-format images at each size.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import h5py
import torch
from torch.utils.data import DataLoader, Dataset

from ptxssl.datasets.cache import prepare
from ptxssl.datasets.images import letterbox, read_image
from ptxssl.datasets.synth import synthesize
from ptxssl.datasets.torch_data import CacheDataset


class SourceDataset(Dataset):
    """The baseline: decode the DICOM and letterbox it on every access."""

    def __init__(self, paths: list[Path], size: int) -> None:
        self.paths, self.size = paths, size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        image, _ = read_image(self.paths[i])
        return {"image": torch.from_numpy(letterbox(image, self.size)).unsqueeze(0)}


class BareH5(Dataset):
    """The floor: one h5py read per image and the uint8 -> float conversion, nothing else."""

    def __init__(self, path: Path) -> None:
        self.path, self.images = path, None
        with h5py.File(path, "r") as h5:
            self.n = len(h5["images"])

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        if self.images is None:  # opened in each worker, after the fork; the dataset handle kept
            self.images = h5py.File(self.path, "r")["images"]
        return {"image": torch.from_numpy(self.images[i]).float().div_(255)[None]}


def loader_rate(ds: Dataset, workers: int, batch: int = 32, epochs: int = 2) -> float:
    """Images/s through a shuffling DataLoader (first epoch included: no warm cache tricks)."""
    loader = DataLoader(ds, batch_size=batch, shuffle=True, num_workers=workers,
                        persistent_workers=workers > 0)
    n, t0 = 0, time.perf_counter()
    for _ in range(epochs):
        for b in loader:
            n += len(b["image"])
    return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=1000, help="images for the synth benchmark")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--prepare-count", type=int, default=200, help="1024 px DICOMs to prepare")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--loader-sizes", default="", help="e.g. 256,512: CacheDataset vs bare h5py at these sizes")
    ap.add_argument("--loader-count", type=int, default=2000, help="images per --loader-sizes cache")
    args = ap.parse_args()
    if args.loader_sizes:
        return loader_overhead([int(v) for v in args.loader_sizes.split(",")], args.loader_count, args.workers)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        synthesize(tmp / "s", count=args.count, size=args.size, formats=("siim",), workers=args.workers,
                   progress=False)
        synth_rate = args.count / (time.perf_counter() - t0)
        print(f"synth siim {args.size}px, {args.workers} workers: {synth_rate:,.0f} images/s "
              f"({synth_rate * 60:,.0f} per minute)")

        synthesize(tmp / "big", count=args.prepare_count, size=1024, formats=("siim",),
                   workers=args.workers, progress=False)
        t0 = time.perf_counter()
        prepare(tmp / "big" / "siim", "siim", tmp / "c.h5", size=args.size, workers=args.workers,
                progress=False)
        prep_rate = args.prepare_count / (time.perf_counter() - t0)
        print(f"prepare DICOM 1024px -> {args.size}px, {args.workers} workers: {prep_rate:,.0f} images/s")

        cache = CacheDataset(tmp / "c.h5")
        source = SourceDataset(sorted((tmp / "big" / "siim").rglob("*.dcm")), args.size)
        for workers in (0, args.workers):
            c, s = loader_rate(cache, workers), loader_rate(source, workers)
            print(f"DataLoader {args.size}px, {workers} workers: cache {c:,.0f} images/s, "
                  f"decoding sources {s:,.0f} images/s, ratio {c / s:.1f}x")


def loader_overhead(sizes: list[int], count: int, workers: int) -> None:
    print("| size | images | workers | CacheDataset img/s | bare h5py img/s | ratio |")
    print("|---|---|---|---|---|---|")
    for size in sizes:
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            synthesize(tmp, count=count, size=size, formats=("chestxray14",), workers=workers, progress=False)
            prepare(tmp / "chestxray14", "chestxray14", tmp / "c.h5", size=size, workers=workers, progress=False)
            loader_rate(BareH5(tmp / "c.h5"), 0, epochs=1)  # untimed: the file into the page cache
            for w in (0, workers):  # alternating, best of two each: neither side pays for going first
                bare, ours = [], []
                for _ in range(2):
                    bare.append(loader_rate(BareH5(tmp / "c.h5"), w, epochs=1))
                    ours.append(loader_rate(CacheDataset(tmp / "c.h5"), w, epochs=1))
                bare, ours = max(bare), max(ours)
                print(f"| {size} | {count} | {w} | {ours:,.0f} | {bare:,.0f} | {ours / bare:.2f} |", flush=True)


if __name__ == "__main__":
    main()
