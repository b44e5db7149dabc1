"""Pretraining throughput: ptxssl's engine vs a plain hand-written PyTorch loop, same process.

For each method, the same model, batch size, data and optimizer run twice: once through
`ptxssl.pretrain.run.pretrain` (Lightning, checkpoints, logging) and once as a bare loop
(DataLoader -> method.step -> backward -> optimizer.step). Prints images/s, the ratio
(ptxssl / plain), and peak resident memory of each run (Linux VmHWM, reset between runs).
Throughput is steady-state: both clocks start after the first WARMUP steps (worker start-up,
first allocations) and stop after the last optimizer step; an untimed warm-up loop runs first,
since whichever loop runs first in a process is measured slower. Use --images large enough
that the timed steps fit in one epoch (the engine writes a checkpoint at each epoch end).

    python scripts/bench_pretrain.py --methods ae,vae,simclr --size 64 --steps 30

GPU: add `--accelerator gpu` (precision auto: bf16 or fp16 autocast, in the plain loop too);
scripts/bench_device.py adds the UNet at 512 px and fp32 vs mixed precision side by side.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import pytorch_lightning as pl
import torch

from ptxssl.datasets.cache import prepare
from ptxssl.datasets.synth import synthesize
from ptxssl.datasets.torch_data import CacheDataset
from ptxssl.engine.data import train_loader
from ptxssl.engine.device import autocast, resolve_precision
from ptxssl.pretrain.methods import get_method
from ptxssl.pretrain.run import pretrain, resolve_config

WARMUP = 3


class StepClock(pl.Callback):
    """Times optimizer steps WARMUP..end inside the engine."""

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        if trainer.global_step == WARMUP and not hasattr(self, "t0"):
            sync(module.device)
            self.t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        sync(module.device)
        self.t1 = time.perf_counter()


def reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS


def peak_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM"):
            return int(line.split()[1]) / 1024
    return float("nan")


def plain_loop(name: str, cache: Path, size: int, batch: int, steps: int, device: str, precision: str = "32-true",
               channels_last: bool = True) -> float:
    """The baseline: what a researcher would write by hand around the same method, in the same
    precision (autocast, a GradScaler for fp16) and memory format as the engine's run."""
    cls = get_method(name)
    cfg = cls.config_class()
    ds, num_classes, _ = cls.make_dataset(cfg, CacheDataset(cache, split="train"))
    torch.manual_seed(0)
    method = cls(cfg, image_size=size, num_classes=num_classes).to(device).train()
    if channels_last:
        method.to(memory_format=torch.channels_last)
    optimizer, _ = method.configure_optimizer()
    loader = train_loader(ds, batch, workers=2, seed=0, drop_last=True)

    def loss(b: dict, done: int) -> torch.Tensor:
        b = {k: v.to(device, non_blocking=True) for k, v in b.items()}
        return method.step({**b, "generator": torch.Generator().manual_seed(done)})["loss"]

    return timed_steps(loader, steps, batch, device, precision, loss, optimizer,
                       after=lambda done: method.after_step(done / steps))


def timed_steps(loader, steps: int, batch: int, device: str, precision: str, loss, optimizer,
                after=None) -> float:
    """Images/s of `steps` hand-written optimizer steps: `loss(batch, step)` under autocast in
    `precision` (a GradScaler for fp16), backward, step, `after(step)`; timed after WARMUP."""
    scaler = torch.amp.GradScaler(device, enabled=precision == "16-mixed")
    done, t0 = 0, time.perf_counter()
    while done < steps:
        for b in loader:
            with autocast(torch.device(device), precision):
                value = loss(b, done)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(value).backward()
            scaler.step(optimizer)
            scaler.update()
            if after is not None:
                after(done)
            done += 1
            if done == WARMUP:
                sync(device)
                t0 = time.perf_counter()
            if done == steps:
                break
    sync(device)
    return (steps - WARMUP) * batch / (time.perf_counter() - t0)


def sync(device: str) -> None:
    """Wait for queued GPU work, so a clock read measures it."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def engine_loop(name: str, cache: Path, out: Path, size: int, batch: int, steps: int, accelerator: str = "cpu",
                precision: str = "32-true", channels_last: bool = True) -> float:
    cfg, mcfg = resolve_config(name, None, {
        "data": str(cache), "out": str(out), "max_steps": steps, "epochs": 10_000, "batch_size": batch,
        "image_size": size, "workers": 2, "probe": False, "checkpoint_every": 10_000,
        "accelerator": accelerator, "precision": precision, "channels_last": channels_last})
    clock = StepClock()
    pretrain(cfg, mcfg, progress=False, callbacks=[clock])
    return (steps - WARMUP) * batch / (clock.t1 - clock.t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--methods", default="ae,vae,simclr")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--images", type=int, default=400)
    ap.add_argument("--accelerator", default="cpu")
    ap.add_argument("--precision", default="auto")
    args = ap.parse_args()
    device = "cuda" if args.accelerator == "gpu" else "cpu"
    precision = resolve_precision(args.precision, device)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        synthesize(tmp, count=args.images, size=args.size, formats=("chestxray14",), workers=2, progress=False)
        cache = tmp / "c.h5"
        prepare(tmp / "chestxray14", "chestxray14", cache, size=args.size, workers=2, progress=False)
        print(f"{args.size} px, batch {args.batch_size}, {args.steps} steps, {torch.get_num_threads()} threads, "
              f"{args.accelerator}, {precision}")
        # the first loop in a process runs slower (allocator, caches): one untimed warm-up run
        plain_loop(args.methods.split(",")[0], cache, args.size, args.batch_size, WARMUP + 5, device, precision)
        for name in args.methods.split(","):
            reset_peak()
            plain = plain_loop(name, cache, args.size, args.batch_size, args.steps, device, precision)
            plain_mem = peak_mb()
            reset_peak()
            engine = engine_loop(name, cache, tmp / f"run_{name}", args.size, args.batch_size, args.steps,
                                 args.accelerator, precision)
            engine_mem = peak_mb()
            print(f"{name:>8}: ptxssl {engine:6.1f} img/s (peak {engine_mem:,.0f} MB) | plain loop "
                  f"{plain:6.1f} img/s (peak {plain_mem:,.0f} MB) | ratio {engine / plain:.2f}")


if __name__ == "__main__":
    main()
