"""`ptxssl pretrain`: build the method, train it with the engine, export the encoder."""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import pytorch_lightning as pl
from pytorch_lightning.callbacks import LearningRateMonitor, ModelCheckpoint
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ptxssl.datasets.torch_data import CacheDataset
from ptxssl.errors import UserError
from ptxssl.files import atomic_path
from ptxssl.engine.config import TrainConfig, flat, load_yaml, opt, resolve
from ptxssl.engine.data import eval_loader, train_loader
from ptxssl.encoders import META_FILE, WEIGHTS_FILE, check_arch, load_encoder, save_encoder
from ptxssl.engine.trainer import clear_run_dir, drop_checkpoints, fit, on_training_device, prepare_run_dir
from ptxssl.pretrain.module import MethodModule, ValidatedModule
from ptxssl.pretrain.methods import Method, MethodConfig, get_method
from ptxssl.pretrain.probe import ProbeCallback, mean_label_auroc

# the rest of the pretraining model (heads / decoder / momentum copies); its encoder is
# encoder.safetensors, stored once (files from before 0.1.1 hold it here too, and still load)
METHOD_FILE = "method.safetensors"


@dataclass
class PretrainConfig(TrainConfig):
    method: str = opt("ae", "Pretraining method.")
    probe: bool = opt(True, "Log a linear-probe AUROC on the weak labels at each epoch end.")
    probe_bn: str = opt("precise", "BatchNorm statistics the probe reads the encoder with: precise (re-estimated "
                                   "on the probe's train images, as for every encoder in `ptxssl probe`) or as-is.")


def resolve_config(method: str, config_file: str | Path | None = None,
                   overrides: dict[str, Any] | None = None) -> tuple[PretrainConfig, MethodConfig]:
    """Defaults of `method` < `config_file` < `overrides` (a file's `method` key counts too)."""
    overrides = dict(overrides or {})
    if config_file and "method" not in overrides:
        method = load_yaml(config_file).get("method", method)
    cls = get_method(overrides.get("method") or method)
    overrides["method"] = cls.name
    return tuple(resolve([PretrainConfig, cls.config_class], config_file, overrides, f"--method {cls.name}"))


def _data_meta(cache: str) -> dict:
    with h5py.File(cache, "r") as h5:
        return {"path": str(Path(cache).resolve()), "fingerprint": str(h5.attrs.get("fingerprint", "")),
                "kind": str(h5.attrs.get("kind", "")), "images": int(h5["images"].shape[0])}


def pretrain(cfg: PretrainConfig, method_cfg: MethodConfig, resume: bool = False, overwrite: bool = False,
             progress: bool = True, callbacks: list[pl.Callback] | None = None) -> Path:
    """Train `cfg.method` on the train split of `cfg.data`; return the run folder.

    The run folder gets config.yaml, metrics.csv, figures/, method.safetensors (heads / decoder)
    and the exported encoder.safetensors + encoder.json; checkpoints/ (weights with optimizer
    state, for --resume) only while it trains, or with --keep-checkpoints.
    """
    if not cfg.data or not Path(cfg.data).is_file():
        raise UserError(f"--data {cfg.data or '(missing)'}: cache file not found (make one with `ptxssl prepare`)")
    if not cfg.out:
        raise UserError("--out is required: the run folder to write")
    check_arch(cfg.arch)
    out = Path(cfg.out)
    ckpt = prepare_run_dir(out, resume, overwrite, finished=WEIGHTS_FILE)
    cls = get_method(cfg.method)
    train = CacheDataset(cfg.data, split="train")
    size = cfg.image_size or train.size
    if size % 32:
        raise UserError(f"--image-size must be a multiple of 32 (got {size}); the cache is {train.size} px")
    if method_cfg.schedule not in cls.schedules or not 0 <= method_cfg.warmup < 1:
        raise UserError(f"--schedule {method_cfg.schedule} --warmup {method_cfg.warmup}: --method {cls.name} takes "
                        f"--schedule {' or '.join(cls.schedules)} and --warmup in [0, 1)")
    dataset, num_classes, weights = cls.make_dataset(method_cfg, train)
    pl.seed_everything(cfg.seed, workers=True, verbose=False)  # before the weights are drawn
    method = cls(method_cfg, in_channels=cfg.in_channels, image_size=size, num_classes=num_classes, arch=cfg.arch)
    module = (ValidatedModule if cls.validates else MethodModule)(method, flat(cfg, method_cfg), out)
    loader = train_loader(dataset, cfg.batch_size, cfg.workers, cfg.seed, drop_last=True, weights=weights)
    callbacks = [*(callbacks or []), LearningRateMonitor(logging_interval="step")]  # lr-<Optimizer> per step
    if cfg.probe and train.labels is not None:
        callbacks.append(ProbeCallback(cfg.data, bn=cfg.probe_bn))
    val = cls.validation_dataset(method_cfg, CacheDataset(cfg.data, split="val")) if cls.validates else None
    best = None
    if val is not None:  # the best epoch by the method's own val score is the one exported
        best = ModelCheckpoint(dirpath=out / "checkpoints", filename="best", monitor="val_auroc", mode="max",
                               save_top_k=1, save_last=False, enable_version_counter=False)
        callbacks.append(best)
    if overwrite and ckpt is None:
        clear_run_dir(out, (METHOD_FILE, WEIGHTS_FILE, META_FILE))
    trainer = fit(module, loader, cfg, out, ckpt, callbacks, progress,
                  val_loader=None if val is None else eval_loader(val, cfg.batch_size, cfg.workers, persistent=True))
    extra = _load_best(module, best) if best is not None else {}
    if trainer.global_rank == 0:
        if cls.validates:
            extra["head_auroc"] = _head_auroc(on_training_device(module, trainer), cfg, method_cfg)
        _export(module, cfg, out, trainer, extra)
        if not cfg.keep_checkpoints:  # written last: a kill before this keeps them, and --resume works
            drop_checkpoints(out)
    return out


def _load_best(module: MethodModule, best: ModelCheckpoint) -> dict:
    """The best epoch's weights into `module` (every process); {"best_epoch": E} (empty if no
    validation ran, e.g. --max-steps 0)."""
    if not best.best_model_path:
        return {}
    ckpt = torch.load(best.best_model_path, map_location="cpu", weights_only=True)
    module.load_state_dict(ckpt["state_dict"])
    return {"best_epoch": int(ckpt["epoch"])}


@torch.no_grad()
def _head_auroc(module: ValidatedModule, cfg: PretrainConfig, method_cfg: MethodConfig) -> dict[str, float]:
    """{split: mean AUROC of the method's own head} on val and test: what the network achieves,
    to read beside a linear probe of its encoder."""
    module.eval()
    scores = {}
    for split in ("val", "test"):
        data = type(module.method).validation_dataset(method_cfg, CacheDataset(cfg.data, split=split))
        if data is None:
            continue
        probs, targets = [], []
        for batch in torch.utils.data.DataLoader(data, batch_size=cfg.batch_size):
            probs.append(module.head_probs(batch["image"].to(module.device)))
            targets.append(batch["target"].float())
        auroc = mean_label_auroc(torch.cat(probs).cpu().numpy(), torch.cat(targets).numpy())
        if not math.isnan(auroc):  # NaN: the split holds one class only
            scores[split] = round(auroc, 4)
    return scores


def _export(module: MethodModule, cfg: PretrainConfig, out: Path, trainer: pl.Trainer, extra: dict) -> None:
    """Figures from a fixed val batch, then the encoder file (`extra`: best epoch, head AUROC)."""
    val = CacheDataset(cfg.data, split="val")
    if len(val):
        batch = torch.utils.data.default_collate([val[i] for i in range(min(8, len(val)))])
        module.eval()
        module.method.write_figures({"image": module.adapt(batch["image"].to(module.device))}, out / "figures")
    state = {k: v.detach().cpu().clone().contiguous() for k, v in module.method.state_dict().items()
             if not k.startswith("encoder.")}  # the encoder goes to encoder.safetensors, below
    with atomic_path(out / METHOD_FILE) as tmp:
        save_file(state, str(tmp))
    save_encoder(module.method.encoder, out, {
        "method": cfg.method, "arch": cfg.arch, "in_channels": cfg.in_channels,
        "image_size": module.method.image_size, "data": _data_meta(cfg.data), "epochs": trainer.current_epoch, "steps": trainer.global_step,
        "seed": cfg.seed, "config": "config.yaml", **extra})


def load_method(run_dir: str | Path) -> Method:
    """The trained method of a pretrain run (encoder + heads / decoder), in eval mode.

    Rebuilt from the run's config.yaml and filled from method.safetensors, so the analysis
    stage can use an AE's latent code and decoder, not only the exported encoder.
    """
    run_dir = Path(run_dir)
    config, weights = run_dir / "config.yaml", run_dir / METHOD_FILE
    for path in (config, weights, run_dir / "encoder.json"):
        if not path.is_file():
            raise UserError(f"{run_dir}: no {path.name}; pass a folder written by `ptxssl pretrain`")
    cfg, method_cfg = resolve_config("ae", config)
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as e:
        raise UserError(f"{weights}: not a readable safetensors file ({e}); rerun `ptxssl pretrain`") from None
    cls = get_method(cfg.method)
    num_classes = int(state["head.weight"].shape[0]) if "head.weight" in state else 0
    encoder, meta = load_encoder(run_dir, cfg.arch)  # also checks the encoder file and its arch
    if not any(k.startswith("encoder.") for k in state):
        state.update({f"encoder.{k}": v for k, v in encoder.state_dict().items()})
    method = cls(method_cfg, in_channels=cfg.in_channels, image_size=int(meta["image_size"]),
                 num_classes=num_classes, arch=cfg.arch)
    method.load_state_dict(state, strict=True)
    return method.eval()

