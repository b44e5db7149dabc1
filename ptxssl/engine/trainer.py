"""The training engine of pretraining and transfer: one Lightning Trainer setup and the base module.

PyTorch Lightning gives the one code path for CPU, one GPU, several GPUs and nodes (DDP),
mixed precision, gradient accumulation, progress bars, CSV/TensorBoard logs and checkpoints;
this module adds only what Lightning does not know: the run folder's rules (never overwritten
silently, resumed weights-only), a last.ckpt at every epoch end, and a stop on a non-finite loss.

Run folder (each command adds its own results):
    config.yaml                  the fully resolved config (`--config` repeats the run)
    runtime.json                 what `auto` became on this machine (precision, device, TF32, ...)
    metrics.csv, tensorboard/    losses per step, validation / probe scores per epoch
    checkpoints/last.ckpt        every --checkpoint-every steps and each epoch end (atomic)
"""
from __future__ import annotations

import contextlib
import logging
import pickle
import shutil
import time
import warnings
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger
from pytorch_lightning.utilities import rank_zero_info, rank_zero_only

from ptxssl.errors import UserError
from ptxssl.engine.config import TrainConfig, save_yaml
from ptxssl.engine.device import resolve_precision
from ptxssl.files import write_json

CHECKPOINT = Path("checkpoints") / "last.ckpt"

# Warnings that do not apply to a ptxssl run: the CSV log shares the run folder with
# config.yaml by design; LeafSpec is Lightning-internal; a resumed run writes into its own
# checkpoint folder. Silenced only while ptxssl trains (`quiet_lightning`), never at import.
IGNORED_WARNINGS = ("Experiment logs directory .* exists and is not empty", ".*isinstance.treespec, LeafSpec.*",
                    "Checkpoint directory .* exists and is not empty")
_LIGHTNING_LOGGERS = ("pytorch_lightning.utilities.rank_zero", "lightning_fabric.utilities.rank_zero")


def _no_advert(record: logging.LogRecord) -> bool:
    """Lightning's advertisement for its cloud logger is not a message about the run."""
    return "litlogger" not in record.getMessage()


@contextlib.contextmanager
def quiet_lightning() -> Iterator[None]:
    """While ptxssl drives Lightning: its warnings above ignored, its logger advert dropped;
    the caller's warning filters and loggers are as they were afterwards."""
    loggers = [logging.getLogger(name) for name in _LIGHTNING_LOGGERS]
    with warnings.catch_warnings():
        for message in IGNORED_WARNINGS:
            warnings.filterwarnings("ignore", message=message)
        for logger in loggers:
            logger.addFilter(_no_advert)
        try:
            yield
        finally:
            for logger in loggers:
                logger.removeFilter(_no_advert)


class NonFiniteLossError(UserError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


class EngineModule(pl.LightningModule):
    """What every ptxssl LightningModule shares: the resolved config saved in checkpoints,
    augmentation randomness that a resume repeats, and a stop on a non-finite loss."""

    def __init__(self, config: dict, run_dir: Path) -> None:
        super().__init__()
        self.config, self.run_dir = config, Path(run_dir)
        self.save_hyperparameters(config)  # plain values only: checkpoints load with weights_only

    def _generator(self) -> torch.Generator:
        """Augmentation randomness from (seed, step, rank): identical after a resume."""
        seed = (self.config["seed"] * 1_000_003 + self.global_step) * 97 + self.global_rank
        return torch.Generator().manual_seed(seed)

    def check_finite(self, loss: torch.Tensor) -> None:
        if not torch.isfinite(loss):
            raise NonFiniteLossError(
                f"loss became {loss.item()} at step {self.global_step}; the last good checkpoint is "
                f"{self.run_dir / CHECKPOINT} (lower --lr or use --precision 32-true, then --resume)")


def parse_devices(devices: str) -> int | str | list[int]:
    """'2' -> 2, '0,1' -> [0, 1], 'auto' -> 'auto' (Lightning's forms)."""
    if devices == "auto":
        return devices
    try:
        return [int(d) for d in devices.split(",") if d] if "," in devices else int(devices)
    except ValueError:
        raise UserError(f"--devices must be a count, a list like 0,1, or auto (got {devices!r})") from None


def prepare_run_dir(out: Path, resume: bool, overwrite: bool, finished: str) -> Path | None:
    """Refuse to overwrite a run silently; return the checkpoint to resume from, if any.

    `finished` names the file a command writes last (transfer's metrics.json, pretrain's
    encoder.safetensors): a run holding it but no checkpoint finished and dropped them.
    """
    ckpt = out / CHECKPOINT
    if rank_zero_only.rank != 0:  # a DDP worker started by rank 0, which checked already
        return ckpt if resume else None
    if resume:
        if not ckpt.is_file() and (out / finished).is_file():
            raise UserError(f"--resume: {out} is a finished run whose checkpoints were removed; to extend "
                            "a run, train it with --keep-checkpoints, or start again with --overwrite")
        if not ckpt.is_file():
            raise UserError(f"--resume: no checkpoint at {ckpt}; start the run without --resume")
        check_checkpoint(ckpt)
        return ckpt
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise UserError(f"{out} already holds a run; pass --resume to continue it or --overwrite "
                        "to start again")
    return None  # --overwrite clears the old run in clear_run_dir, once the inputs have been checked


def clear_run_dir(out: Path, outputs: tuple[str, ...]) -> None:
    """--overwrite: remove the old run's checkpoint and its results (`outputs`, relative to `out`).

    Called after the new run's inputs are checked (a failing command leaves the old run whole)
    and before it trains, so a new run killed midway never sits beside the old run's results
    as if they were its own.
    """
    if rank_zero_only.rank != 0:
        return
    for name in (str(CHECKPOINT), *outputs):
        path = out / name
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


def drop_checkpoints(out: Path) -> None:
    """Remove a finished run's checkpoints/: weights with optimizer state (~0.3 GB each for a
    ResNet-34 UNet with Adam) that only a resume needs; the run's result is saved apart."""
    shutil.rmtree(out / CHECKPOINT.parent, ignore_errors=True)


def check_checkpoint(ckpt: Path) -> None:
    """Open `ckpt` weights-only (as Lightning will) so a file holding pickled objects, or a
    damaged one, is a one-line error naming it rather than a traceback from the unpickler."""
    try:
        torch.load(ckpt, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(ckpt))
    except pickle.UnpicklingError:
        raise UserError(f"--resume: {ckpt} holds pickled Python objects, not only tensors and plain data; "
                        "it was not written by ptxssl and is not loaded (that could run code); start again "
                        "with --overwrite") from None
    except Exception as e:  # noqa: BLE001 - torch reports a damaged file in several ways
        raise UserError(f"--resume: {ckpt} is not a readable checkpoint ({type(e).__name__}); start again "
                        "with --overwrite") from None


class _LastCheckpoint(ModelCheckpoint):
    """ModelCheckpoint that also writes last.ckpt at every epoch end. Lightning 2.6 writes it
    there only when a top-k checkpoint was saved at that step, and ptxssl keeps none, so a run
    killed in epoch 2 could lose all of epoch 1; an epoch-end checkpoint resumes exactly."""

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if not self._should_skip_saving_checkpoint(trainer):  # skipped if saved at this very step
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))


class ChannelsLast(pl.Callback):
    """The model's 4-D weights in channels-last (NHWC) order before the first step: convolutions
    then run NHWC kernels (tensor cores on GPUs, oneDNN on CPUs) and return NHWC activations."""

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        pl_module.to(memory_format=torch.channels_last)


class ValidateAtMaxSteps(pl.Callback):
    """A --max-steps that ends inside an epoch: stop there through `trainer.should_stop`, which
    Lightning answers with a validation at that step; it otherwise validates at epoch ends only,
    and the last steps would never compete for the best epoch."""

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch,
                           batch_idx: int) -> None:
        if 0 < trainer.max_steps <= trainer.global_step:
            trainer.should_stop = True


def training_device(cfg: TrainConfig) -> torch.device:
    """The device type Lightning will train on for --accelerator (auto: CUDA when present)."""
    if cfg.accelerator in ("gpu", "cuda") or (cfg.accelerator == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("mps" if cfg.accelerator == "mps" else "cpu")


def runtime_settings(cfg: TrainConfig) -> dict:
    """What the run's speed and numerics depend on beyond config.yaml, resolved for this machine
    (`--precision auto` becomes bf16-mixed on an A100, 32-true on a laptop): printed at the start
    and written to the run folder's runtime.json, so two runs' numbers can be told apart."""
    device = training_device(cfg)
    cuda = device.type == "cuda"
    return {"device": device.type, "device_name": torch.cuda.get_device_name() if cuda else None,
            "precision": resolve_precision(cfg.precision, device),
            "float32_matmul_precision": "high" if cuda else torch.get_float32_matmul_precision(),
            "cudnn_benchmark": cuda, "channels_last": cfg.channels_last, "pin_memory": cuda,
            "torch": torch.__version__, "pytorch_lightning": pl.__version__}


def make_trainer(cfg: TrainConfig, run_dir: Path, callbacks: list[pl.Callback], progress: bool) -> pl.Trainer:
    """The Lightning Trainer from the common options (devices, precision, DDP, checkpoints) and
    the GPU settings of `runtime_settings`."""
    checkpoint = _LastCheckpoint(dirpath=run_dir / "checkpoints", save_last=True, save_top_k=0,
                                 every_n_train_steps=cfg.checkpoint_every, save_on_train_epoch_end=True)
    # last in the list: at an epoch end, the other checkpoint callbacks (transfer's best.ckpt) have
    # updated their state before last.ckpt records it, so a resumed run still knows the best epoch
    loggers = [CSVLogger(run_dir, name="", version="")]
    try:
        loggers.append(TensorBoardLogger(run_dir, name="tensorboard", version=""))
    except ModuleNotFoundError:  # tensorboard is optional at run time
        pass
    devices = parse_devices(cfg.devices)
    several = cfg.num_nodes > 1 or (isinstance(devices, list) and len(devices) > 1) or \
        (isinstance(devices, int) and devices > 1)
    runtime = runtime_settings(cfg)
    on_gpu = runtime["device"] == "cuda"
    if on_gpu:  # TF32 matmuls: float32 range, ~10-bit mantissa products, several times faster on Ampere+
        torch.set_float32_matmul_precision(runtime["float32_matmul_precision"])
    extra = [ChannelsLast()] if cfg.channels_last else []
    # BatchNorm over the global batch across GPUs; torch's SyncBatchNorm has no CPU kernel, so
    # CPU DDP processes normalise over their local batch. cuDNN autotuning pays off because every
    # batch of a run has one image size.
    trainer = pl.Trainer(accelerator=cfg.accelerator, devices=devices, sync_batchnorm=several and on_gpu,
                         strategy=cfg.strategy, num_nodes=cfg.num_nodes, precision=runtime["precision"],
                         benchmark=on_gpu, max_epochs=cfg.epochs, max_steps=cfg.max_steps,
                         accumulate_grad_batches=cfg.accumulate, callbacks=[*callbacks, *extra, checkpoint],
                         logger=loggers, default_root_dir=run_dir, enable_progress_bar=progress,
                         enable_model_summary=False, deterministic=False, log_every_n_steps=1,
                         num_sanity_val_steps=0)
    trainer.runtime = runtime
    return trainer


def fit(module: EngineModule, loader, cfg: TrainConfig, run_dir: Path, ckpt: Path | None,
        callbacks: list[pl.Callback], progress: bool = True, val_loader=None) -> pl.Trainer:
    """Save the config, then train (resuming from `ckpt`) with checkpoints loaded weights-only.

    With `val_loader`, a --max-steps that ends inside an epoch (the first or a later one) still
    validates at its last step (`ValidateAtMaxSteps`): Lightning would otherwise stop mid-epoch
    with no validation score there, which the best-epoch checkpoint and early stopping are
    conditioned on (a run shorter than one epoch would have none at all).
    """
    if rank_zero_only.rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_yaml(run_dir / "config.yaml", module.config)
    with quiet_lightning():
        extra = [ValidateAtMaxSteps()] if val_loader is not None else []
        trainer = make_trainer(cfg, run_dir, [*callbacks, *extra], progress)
        if rank_zero_only.rank == 0:
            write_json(run_dir / "runtime.json", {**trainer.runtime, "world_size": trainer.world_size})
            rank_zero_info("runtime: " + ", ".join(f"{k}={v}" for k, v in trainer.runtime.items()))
        t0 = time.perf_counter()
        trainer.fit(module, loader, val_loader, ckpt_path=ckpt, weights_only=True)
    trainer.fit_seconds = time.perf_counter() - t0
    return trainer


def on_training_device(module: pl.LightningModule, trainer: pl.Trainer) -> pl.LightningModule:
    """`module` back on the device it trained on (the strategy's root device).

    `trainer.fit` ends in `strategy.teardown()`, which moves the module to the CPU: evaluation
    that takes its device from the module's parameters would then run on the CPU, in float32,
    after GPU training (tens of minutes per run at 512 px).
    """
    return module.to(trainer.strategy.root_device)
