"""Optimizer and learning-rate scheduler factories for ``LightningModule.configure_optimizers``.

:func:`build_optimizer` maps an :class:`OptimConfig` to a torch optimizer; :func:`build_lr_scheduler` maps a
:class:`SchedulerConfig` to a Lightning ``lr_scheduler`` config dict whose ``interval`` follows the schedule's
cadence (per optimizer step or per epoch).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
from torch.optim.lr_scheduler import OneCycleLR

from medtrain.config.errors import ConfigError
from medtrain.config.schema import OptimConfig, SchedulerConfig
from medtrain.engine.schedulers import (
    ConfiguredLambdaLR,
    LinearWarmup,
    WarmupCosine,
    WarmupCosineRestarts,
    WarmupPoly,
    WarmupReduceLROnPlateau,
    WarmupStep,
)

EPOCH_SCHEDULES = frozenset({"poly", "step", "plateau"})
"""Schedules stepped once per epoch; all others step once per optimizer step."""


def build_optimizer(
    params: Iterable[torch.nn.Parameter] | Iterable[dict[str, Any]], cfg: OptimConfig
) -> torch.optim.Optimizer:
    """Build the optimizer named by ``cfg.name`` over ``params`` (tensors or param-group dicts).

    ``adamw``/``adam``: ``AdamW``/``Adam(lr, betas, eps, weight_decay)`` (Adam's weight decay is an L2 term);
    ``sgd``: ``SGD(lr, momentum, nesterov=cfg.nesterov and momentum > 0, weight_decay)``.
    """
    if cfg.name == "sgd":
        return torch.optim.SGD(
            params,
            lr=cfg.lr,
            momentum=cfg.momentum,
            nesterov=cfg.nesterov and cfg.momentum > 0,
            weight_decay=cfg.weight_decay,
        )
    optimizer_cls = torch.optim.AdamW if cfg.name == "adamw" else torch.optim.Adam
    return optimizer_cls(params, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, weight_decay=cfg.weight_decay)


def build_lr_scheduler(
    optimizer: torch.optim.Optimizer,
    cfg: SchedulerConfig,
    *,
    steps_per_epoch: int,
    max_epochs: int,
    monitor: str | None = None,
    monitor_mode: str = "min",
) -> dict[str, Any] | None:
    """Build the Lightning ``lr_scheduler`` dict for ``cfg``, or None for ``none`` without warmup.

    ``steps_per_epoch`` counts optimizer steps (after gradient accumulation). The warmup lasts
    ``W = max(warmup_steps, warmup_epochs * steps_per_epoch)`` steps for per-step schedules and
    ``max(warmup_epochs, ceil(warmup_steps / steps_per_epoch))`` epochs for per-epoch ones, ramping the LR
    linearly from ``warmup_start_factor * lr`` to ``lr``; ``t`` below counts steps or epochs since it ended.

    - ``none``: constant ``lr`` (per step).
    - ``cosine``: ``min_lr + (lr - min_lr) * 0.5 * (1 + cos(pi * t / (total_steps - W)))`` (per step).
    - ``cosine_warm_restarts``: SGDR, ``T_0 = restart_epochs * steps_per_epoch`` steps, ``T_mult =
      restart_mult``, ``eta_min = min_lr`` (per step).
    - ``onecycle``: torch's ``OneCycleLR`` with ``max_lr = lr`` over ``total_steps`` (per step); it has its
      own warmup, so a configured warmup is a ValueError. Momentum is not cycled: momentum/betas stay.
    - ``poly``: nnU-Net, ``lr * (1 - t / (max_epochs - W)) ** power`` (per epoch).
    - ``step``: ``lr * gamma ** (t // step_epochs)`` (per epoch).
    - ``plateau``: ``ReduceLROnPlateau`` on ``monitor`` (``mode=monitor_mode``, ``factor=plateau_factor``,
      ``patience=plateau_patience``, ``min_lr``), stepped per epoch after the warmup.

    ``lr`` is each param group's LR when called; ``min_lr`` is absolute. The dict holds ``scheduler``,
    ``interval``, ``frequency`` 1 and ``name`` ``"lr"``, plus ``monitor`` and ``strict`` for plateau.
    """
    if steps_per_epoch < 1 or max_epochs < 1:
        raise ValueError(f"need steps_per_epoch >= 1 and max_epochs >= 1, got {steps_per_epoch}, {max_epochs}")
    warmup_steps = max(cfg.warmup_steps, cfg.warmup_epochs * steps_per_epoch)
    if cfg.name == "none" and warmup_steps == 0:
        return None
    if cfg.name == "onecycle" and warmup_steps > 0:
        raise ConfigError(
            "scheduler 'onecycle' ramps the LR up over its first pct_start of training by itself: "
            "set warmup_epochs and warmup_steps to 0 (shape the ramp with pct_start and div_factor)"
        )
    per_epoch = cfg.name in EPOCH_SCHEDULES
    warmup = max(cfg.warmup_epochs, math.ceil(cfg.warmup_steps / steps_per_epoch)) if per_epoch else warmup_steps
    length = (max_epochs if per_epoch else steps_per_epoch * max_epochs) - warmup
    if cfg.name != "none" and length < 1:
        unit = "epochs" if per_epoch else "steps"
        raise ConfigError(
            f"scheduler {cfg.name!r}: a warmup of {warmup} {unit} leaves none of the schedule "
            f"within {warmup + length} {unit} of training: lower scheduler.warmup_epochs/warmup_steps "
            f"or raise trainer.max_epochs"
        )
    config: dict[str, Any] = {"interval": "epoch" if per_epoch else "step", "frequency": 1, "name": "lr"}
    lrs = [float(group["lr"]) for group in optimizer.param_groups]
    if cfg.name == "onecycle":
        config["scheduler"] = OneCycleLR(
            optimizer,
            max_lr=lrs,
            total_steps=length,
            pct_start=cfg.pct_start,
            div_factor=cfg.div_factor,
            final_div_factor=cfg.final_div_factor,
            cycle_momentum=False,
        )
    elif cfg.name == "plateau":
        if monitor is None:
            raise ValueError("scheduler 'plateau' needs a monitored metric (monitor=...)")
        config["scheduler"] = WarmupReduceLROnPlateau(
            optimizer,
            warmup_epochs=warmup,
            start_factor=cfg.warmup_start_factor,
            mode=monitor_mode,
            factor=cfg.plateau_factor,
            patience=cfg.plateau_patience,
            min_lr=cfg.min_lr,
        )
        config |= {"monitor": monitor, "strict": True}
    else:
        config["scheduler"] = ConfiguredLambdaLR(
            optimizer, [_multiplier(cfg, lr, warmup, length, steps_per_epoch) for lr in lrs]
        )
    return config


def _multiplier(cfg: SchedulerConfig, lr: float, warmup: int, length: int, steps_per_epoch: int) -> LinearWarmup:
    """LambdaLR multiplier for a param group of LR ``lr``; ``warmup``/``length`` in the schedule's unit."""
    start = cfg.warmup_start_factor
    if cfg.name == "cosine":
        return WarmupCosine(warmup, start, length, cfg.min_lr / lr)
    if cfg.name == "cosine_warm_restarts":
        period = cfg.restart_epochs * steps_per_epoch
        return WarmupCosineRestarts(warmup, start, period, cfg.restart_mult, cfg.min_lr / lr)
    if cfg.name == "poly":
        return WarmupPoly(warmup, start, length, cfg.power)
    if cfg.name == "step":
        return WarmupStep(warmup, start, cfg.step_epochs, cfg.gamma)
    return LinearWarmup(warmup, start)
