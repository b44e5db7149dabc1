"""The pretraining methods, registered by name: `--method` takes its choices from METHODS."""
from __future__ import annotations

from ptxssl.errors import UserError
from ptxssl.pretrain.methods.ae import AE
from ptxssl.pretrain.methods.base import Method, MethodConfig
from ptxssl.pretrain.methods.byol import BYOL
from ptxssl.pretrain.methods.moco import MoCo
from ptxssl.pretrain.methods.pseudo import Pseudo
from ptxssl.pretrain.methods.rotnet import RotNet
from ptxssl.pretrain.methods.simclr import SimCLR
from ptxssl.pretrain.methods.supervised import Supervised
from ptxssl.pretrain.methods.vae import VAE

METHODS: dict[str, type[Method]] = {
    "ae": AE,
    "vae": VAE,
    "simclr": SimCLR,
    "moco": MoCo,
    "byol": BYOL,
    "rotnet": RotNet,
    "supervised": Supervised,
    "pseudo": Pseudo,
}


def get_method(name: str) -> type[Method]:
    """The method class registered as `name`; an unknown name lists the valid ones."""
    if name not in METHODS:
        raise UserError(f"unknown method {name!r}; choose one of {', '.join(METHODS)}")
    return METHODS[name]


__all__ = ["METHODS", "Method", "MethodConfig", "get_method"]
