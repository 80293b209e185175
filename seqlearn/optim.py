"""Optimizers and learning-rate schedules shared by the four models, under one set of names.

Every model takes the same optimization hyperparameters and hands them to
:func:`configure_optimization`::

    Tagger(..., optimizer="sgd", lr=0.015, momentum=0.9, lr_scheduler="inverse-time", lr_gamma=0.05)
    LanguageModel(..., optimizer="sgd", lr=20.0, lr_scheduler="plateau", lr_gamma=0.25, lr_patience=0)

``lr_scheduler`` (stepped once per epoch, except ``plateau``, which watches ``val_loss``):

* ``"none"``: ``lr`` throughout;
* ``"plateau"``: multiply by ``lr_gamma`` when ``val_loss`` has not improved for
  ``lr_patience`` epochs, never below ``lr_min`` (``torch.optim.lr_scheduler.ReduceLROnPlateau``);
* ``"step"``: multiply by ``lr_gamma`` every ``lr_step_size`` epochs (``StepLR``);
* ``"exponential"``: multiply by ``lr_gamma`` every epoch (``ExponentialLR``);
* ``"cosine"``: cosine from ``lr`` to ``lr_min`` over the Trainer's ``max_epochs``
  (``lr_step_size`` epochs when it has none; ``CosineAnnealingLR``);
* ``"inverse-time"``: ``lr / (1 + lr_gamma * epoch)`` (the decay of Ma & Hovy 2016's
  SGD recipe for taggers; a ``LambdaLR``).
"""
from __future__ import annotations

from typing import Any, Iterable

import pytorch_lightning as pl
import torch

from .errors import ConfigError, check_hyperparameters

__all__ = ["OPTIMIZERS", "SCHEDULERS", "check_optimization", "build_optimizer", "build_scheduler",
           "configure_optimization"]  # fmt: skip

OPTIMIZERS = ("adam", "rmsprop", "sgd")
SCHEDULERS = ("none", "plateau", "step", "exponential", "cosine", "inverse-time")


def check_optimization(owner: str, optimizer: str, lr_scheduler: str = "none", lr_gamma: float = 0.5,
                       lr_step_size: int = 1) -> None:  # fmt: skip
    """Raise a :class:`ConfigError` naming ``owner`` unless the optimizer and schedule are
    ones :func:`configure_optimization` can build (called by the constructors, so a bad
    name fails before training starts)."""
    if optimizer not in OPTIMIZERS:
        raise ConfigError(f"{owner} optimizer must be one of {', '.join(OPTIMIZERS)}; got {optimizer!r}")
    if lr_scheduler not in SCHEDULERS:
        raise ConfigError(f"{owner} lr_scheduler must be one of {', '.join(SCHEDULERS)}; got {lr_scheduler!r}")
    check_hyperparameters(owner, positive={"lr_step_size": lr_step_size})
    if lr_scheduler == "inverse-time" and lr_gamma < 0:
        raise ConfigError(f"{owner} lr_gamma is the inverse-time decay rate and must be >= 0, got {lr_gamma}")
    # plateau's factor must shrink the rate (torch refuses 1); step and exponential may keep it
    upper_ok = lr_gamma < 1.0 if lr_scheduler == "plateau" else lr_gamma <= 1.0
    if lr_scheduler in ("plateau", "step", "exponential") and not (0.0 < lr_gamma and upper_ok):
        raise ConfigError(f"{owner} lr_gamma multiplies the learning rate and must be in (0, 1), got {lr_gamma}")


def build_optimizer(
    module: pl.LightningModule, name: str, lr: float, weight_decay: float = 0.0, momentum: float = 0.0
) -> torch.optim.Optimizer:
    """``name`` ("adam", "rmsprop" or "sgd") over the trainable parameters of ``module``.

    One fused kernel steps all parameters (Adam's step is about 10x faster on CPU), except
    under Lightning's mixed precision, whose gradient clipping unscales gradients itself and
    refuses a fused optimizer.
    """
    params: Iterable[torch.nn.Parameter] = [p for p in module.parameters() if p.requires_grad]
    precision = str(module.trainer.precision) if module._trainer is not None else "32-true"
    fast = (
        all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in params) and "mixed" not in precision
    ) or None
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, fused=fast)
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, weight_decay=weight_decay, momentum=momentum, foreach=fast)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, weight_decay=weight_decay, momentum=momentum, fused=fast)
    raise ConfigError(f"optimizer must be one of {', '.join(OPTIMIZERS)}; got {name!r}")


def build_scheduler(
    optimizer: torch.optim.Optimizer,
    name: str,
    *,
    gamma: float = 0.5,
    step_size: int = 1,
    patience: int = 1,
    min_lr: float = 0.0,
    max_epochs: int | None = None,
) -> dict[str, Any] | None:
    """The schedule ``name`` (see the module docstring) over ``optimizer`` as a Lightning
    ``lr_scheduler`` configuration (stepped every epoch; ``plateau`` monitors ``val_loss``),
    or None for ``"none"``."""
    schedulers = torch.optim.lr_scheduler
    if name == "none":
        return None
    if name == "plateau":
        scheduler = schedulers.ReduceLROnPlateau(optimizer, factor=gamma, patience=patience, min_lr=min_lr)
        return {"scheduler": scheduler, "interval": "epoch", "monitor": "val_loss"}
    if name == "step":
        scheduler = schedulers.StepLR(optimizer, step_size=step_size, gamma=gamma)
    elif name == "exponential":
        scheduler = schedulers.ExponentialLR(optimizer, gamma=gamma)
    elif name == "cosine":
        epochs = max_epochs if max_epochs is not None and max_epochs > 0 else step_size
        scheduler = schedulers.CosineAnnealingLR(optimizer, T_max=epochs, eta_min=min_lr)
    elif name == "inverse-time":
        scheduler = schedulers.LambdaLR(optimizer, lambda epoch: 1.0 / (1.0 + gamma * epoch))
    else:
        raise ConfigError(f"lr_scheduler must be one of {', '.join(SCHEDULERS)}; got {name!r}")
    return {"scheduler": scheduler, "interval": "epoch"}


def configure_optimization(module: pl.LightningModule) -> Any:
    """What ``configure_optimizers`` returns for a model whose hyperparameters hold the
    shared names (``optimizer``, ``lr``, ``weight_decay``, ``momentum``, ``lr_scheduler``,
    ``lr_gamma``, ``lr_step_size``, ``lr_patience``, ``lr_min``): the optimizer alone, or
    it and its schedule."""
    h = module.hparams
    optimizer = build_optimizer(module, h.optimizer, h.lr, h.weight_decay, h.momentum)
    max_epochs = module.trainer.max_epochs if module._trainer is not None else None
    scheduler = build_scheduler(optimizer, h.lr_scheduler, gamma=h.lr_gamma, step_size=h.lr_step_size,
                                patience=h.lr_patience, min_lr=h.lr_min, max_epochs=max_epochs)  # fmt: skip
    return optimizer if scheduler is None else {"optimizer": optimizer, "lr_scheduler": scheduler}
