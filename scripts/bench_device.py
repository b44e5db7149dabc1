"""The device table of issue 20: ptxssl's engine beside a plain PyTorch loop on the same model,
batch and data, in the same process, in float32 and in mixed precision, channels-last.

Rows: SimCLR and VAE pretraining at --pretrain-size (224 px on a GPU), UNet-ResNet34 transfer
at --unet-size (512 px on a GPU); each in 32-true and in what `--precision auto` gives on the
device (bf16-mixed on Ampere+, 16-mixed on older GPUs; on the CPU auto is 32-true, so the
mixed rows are skipped there). Columns: images/s of both loops (steady state, after WARMUP
steps) and their ratio, peak GPU memory of each (torch.cuda.max_memory_allocated), and the
post-fit evaluation of the trained UNet (`predict_loader` over an `eval_loader`, on the device,
in the run's precision) in seconds per 1,000 images. A last CPU section compares channels-last
with the default memory format, which is what `--channels-last` defaults to.

    python scripts/bench_device.py                        # the GPU table (scripts/gpu_check.sh)
    python scripts/bench_device.py --device cpu --pretrain-size 64 --unet-size 64 --steps 8 --images 96 --unet-images 96
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

from bench_pretrain import WARMUP, StepClock, engine_loop, plain_loop, sync, timed_steps
from ptxssl.datasets.cache import prepare
from ptxssl.datasets.synth import synthesize
from ptxssl.datasets.torch_data import CacheDataset
from ptxssl.encoders import encoder_input
from ptxssl.engine.data import eval_loader, train_loader
from ptxssl.engine.device import resolve_precision
from ptxssl.engine.trainer import fit, on_training_device
from ptxssl.transfer.config import resolve_config
from ptxssl.transfer.losses import SegmentationLoss
from ptxssl.transfer.model import build_unet
from ptxssl.transfer.module import SegmentationModule, predict_loader, segmentation_augment


def peak_mb(device: str) -> str:
    """Peak GPU memory since the last reset (MB); '—' on the CPU."""
    return f"{torch.cuda.max_memory_allocated() / 2**20:,.0f}" if device == "cuda" else "—"


def reset_peak(device: str) -> None:
    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def make_cache(root: Path, fmt: str, count: int, size: int) -> Path:
    synthesize(root, count=count, size=size, formats=(fmt,), workers=4, progress=False, positive_fraction=0.5)
    out = root / f"{fmt}.h5"
    prepare(root / fmt, fmt, out, size=size, workers=4, progress=False)
    return out


def unet_config(cache: Path, out: Path, size: int, batch: int, steps: int, device: str, precision: str,
                channels_last: bool):
    return resolve_config(None, {"data": str(cache), "out": str(out), "image_size": size, "batch_size": batch,
                                 "workers": 2, "max_steps": steps, "epochs": 10_000, "patience": 0,
                                 "checkpoint_every": 10_000, "accelerator": "gpu" if device == "cuda" else "cpu",
                                 "precision": precision, "channels_last": channels_last})


def unet_engine(cache: Path, out: Path, size: int, batch: int, steps: int, device: str, precision: str,
                channels_last: bool = True) -> tuple[float, float]:
    """(images/s of training through the engine, post-fit evaluation seconds per 1,000 images)."""
    cfg = unet_config(cache, out, size, batch, steps, device, precision, channels_last)
    torch.manual_seed(0)
    module = SegmentationModule(build_unet("random", 1, "resnet34")[0], cfg, size, out)
    loader = train_loader(CacheDataset(cache, with_masks=True, split="train"), batch, 2, 0, drop_last=True)
    clock = StepClock()
    trainer = fit(module, loader, cfg, out, None, [clock], progress=False)
    speed = (steps - WARMUP) * batch / (clock.t1 - clock.t0)
    on_training_device(module, trainer).eval()
    held_out = CacheDataset(cache, with_masks=True, split="val")
    scoring = eval_loader(held_out, batch, 2)
    predict_loader(module, scoring, precision=trainer.runtime["precision"])  # warm-up: cuDNN autotuning
    sync(device)
    t0 = time.perf_counter()
    predict_loader(module, scoring, precision=trainer.runtime["precision"])
    sync(device)
    return speed, (time.perf_counter() - t0) / len(held_out) * 1000


def unet_plain(cache: Path, size: int, batch: int, steps: int, device: str, precision: str,
               channels_last: bool = True) -> float:
    """The same UNet, loss, augmentation and Adam step, written by hand."""
    cfg = unet_config(cache, Path("."), size, batch, steps, device, precision, channels_last)
    torch.manual_seed(0)
    unet = build_unet("random", 1, "resnet34")[0].to(device).train()
    if channels_last:
        unet.to(memory_format=torch.channels_last)
    loss_fn, augment = SegmentationLoss(cfg.loss).to(device), segmentation_augment(cfg.hflip)
    optimizer = torch.optim.Adam(unet.parameters(), lr=cfg.lr)
    loader = train_loader(CacheDataset(cache, with_masks=True, split="train"), batch, 2, 0, drop_last=True)

    def loss(b: dict, done: int) -> torch.Tensor:  # under autocast, as the engine's training_step
        x, mask = b["image"].to(device, non_blocking=True), b["mask"].to(device, non_blocking=True)
        x, mask = augment.with_mask(x, mask, torch.Generator().manual_seed(done))
        return loss_fn(unet(encoder_input(x, None, 1)), mask)["loss"]

    return timed_steps(loader, steps, batch, device, precision, loss, optimizer)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cuda", "cpu"])
    ap.add_argument("--pretrain-size", type=int, default=224)
    ap.add_argument("--unet-size", type=int, default=512)
    ap.add_argument("--pretrain-batch", type=int, default=64)
    ap.add_argument("--unet-batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--images", type=int, default=2400,
                    help="Images of the pretraining cache: its train split (70 %%) should hold --pretrain-batch x "
                         "--steps, so the timed steps fit in one epoch (the engine checkpoints at epoch ends).")
    ap.add_argument("--unet-images", type=int, default=600, help="Images of the UNet cache (the same rule).")
    ap.add_argument("--out", type=Path, default=None, help="Also write the Markdown table here.")
    args = ap.parse_args()
    device = args.device
    mixed = resolve_precision("auto", device)
    precisions = ["32-true"] + ([mixed] if mixed != "32-true" else [])
    accelerator = "gpu" if device == "cuda" else "cpu"
    name = torch.cuda.get_device_name() if device == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    lines = [f"Device: {name}; torch {torch.__version__}; channels-last; {args.steps} steps, timed after {WARMUP}.",
             "", "| workload | precision | ptxssl img/s | plain img/s | ratio | peak MB ptxssl | peak MB plain "
             "| eval s / 1000 img |", "|---|---|---|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        nih = make_cache(tmp / "nih", "chestxray14", args.images, args.pretrain_size)
        siim = make_cache(tmp / "siim", "siim", args.unet_images, args.unet_size)
        plain_loop("ae", nih, args.pretrain_size, args.pretrain_batch, WARMUP + 3, device)  # untimed warm-up
        for precision in precisions:
            for method in ("simclr", "vae"):
                reset_peak(device)
                plain = plain_loop(method, nih, args.pretrain_size, args.pretrain_batch, args.steps, device, precision)
                plain_mem = peak_mb(device)
                reset_peak(device)
                engine = engine_loop(method, nih, tmp / f"{method}{precision}", args.pretrain_size, args.pretrain_batch,
                                     args.steps, accelerator, precision)
                lines.append(f"| {method} {args.pretrain_size} px, batch {args.pretrain_batch} | {precision} | "
                             f"{engine:,.1f} | {plain:,.1f} | {engine / plain:.2f} | {peak_mb(device)} | {plain_mem} | — |")
                print(lines[-1], file=sys.stderr, flush=True)  # progress; the table goes to stdout
            reset_peak(device)
            plain = unet_plain(siim, args.unet_size, args.unet_batch, args.steps, device, precision)
            plain_mem = peak_mb(device)
            reset_peak(device)
            engine, eval_s = unet_engine(siim, tmp / f"unet{precision}", args.unet_size, args.unet_batch, args.steps,
                                         device, precision)
            lines.append(f"| UNet-R34 transfer {args.unet_size} px, batch {args.unet_batch} | {precision} | "
                         f"{engine:,.1f} | {plain:,.1f} | {engine / plain:.2f} | {peak_mb(device)} | {plain_mem} | "
                         f"{eval_s:.1f} |")
            print(lines[-1], file=sys.stderr, flush=True)
        if device == "cpu":  # the memory-format default, measured where it is least obvious
            lines += ["", "| UNet-R34 on the CPU | channels-last img/s | default layout img/s | ratio |",
                      "|---|---|---|---|"]
            fast = unet_plain(siim, args.unet_size, args.unet_batch, args.steps, device, "32-true", True)
            slow = unet_plain(siim, args.unet_size, args.unet_batch, args.steps, device, "32-true", False)
            lines.append(f"| {args.unet_size} px, batch {args.unet_batch}, plain loop | {fast:.1f} | {slow:.1f} | "
                         f"{fast / slow:.2f} |")
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
