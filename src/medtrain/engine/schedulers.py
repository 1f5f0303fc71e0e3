"""Learning-rate schedules with a linear warmup, used by :func:`medtrain.engine.optim.build_lr_scheduler`.

Why own code: torch can only prepend a warmup by chaining ``LinearLR`` and the schedule in ``SequentialLR``,
whose members update the LR recursively from its previous value, and ``SequentialLR`` rejects
``ReduceLROnPlateau``. Here each schedule is instead a closed-form multiplier of the base LR for
:class:`torch.optim.lr_scheduler.LambdaLR`: the LR at scheduler step ``t`` (an optimizer step or an epoch,
depending on the schedule's cadence) is a pure function of ``t``, so a resumed run continues the same curve.
The multipliers are dataclasses holding only numbers; ``LambdaLR.state_dict`` stores their fields, which load
with ``torch.load(weights_only=True)``. :class:`WarmupReduceLROnPlateau` adds the warmup to the plateau
scheduler.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, SupportsFloat

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR, ReduceLROnPlateau


def warmup_factor(t: int, warmup: int, start_factor: float) -> float:
    """Linear warmup multiplier ``start_factor + (1 - start_factor) * t / warmup``, ``0 <= t <= warmup``."""
    return start_factor + (1.0 - start_factor) * t / warmup


def _cosine(progress: float, min_factor: float) -> float:
    """Half-cosine from 1 (``progress`` 0) to ``min_factor`` (``progress`` 1)."""
    return min_factor + (1.0 - min_factor) * 0.5 * (1.0 + math.cos(math.pi * progress))


class ConfiguredLambdaLR(LambdaLR):
    """``LambdaLR`` whose multipliers always come from the current config.

    Its state keeps the position (``last_epoch``, base LRs) but not the multipliers' parameters, so a run
    resumed with the same config continues the same curve, and a run resumed with more epochs follows the
    schedule for the new length instead of running on past the end of the old one.
    """

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["lr_lambdas"] = [None] * len(self.lr_lambdas)
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict({**state_dict, "lr_lambdas": [None] * len(self.lr_lambdas)})


@dataclass
class LinearWarmup:
    """LambdaLR multiplier: linear warmup over ``warmup`` steps, then :meth:`after` of the steps since.

    ``f(t) = start_factor + (1 - start_factor) * t / warmup`` for ``t < warmup``, else ``after(t - warmup)``;
    here ``after`` is constant 1 (warmup, then the base LR).
    """

    warmup: int
    start_factor: float

    def __call__(self, t: int) -> float:
        if t < self.warmup:
            return warmup_factor(t, self.warmup, self.start_factor)
        return self.after(t - self.warmup)

    def after(self, t: int) -> float:
        """Multiplier ``t`` steps after the warmup ended."""
        return 1.0


@dataclass
class WarmupCosine(LinearWarmup):
    """Cosine decay over ``length`` steps after the warmup, to ``min_factor`` (``min_lr / base_lr``).

    ``after(t) = m + (1 - m) * 0.5 * (1 + cos(pi * min(t, length) / length))``.
    """

    length: int
    min_factor: float

    def after(self, t: int) -> float:
        return _cosine(min(t, self.length) / self.length, self.min_factor)


@dataclass
class WarmupCosineRestarts(LinearWarmup):
    """SGDR (``CosineAnnealingWarmRestarts``) after the warmup: cosine cycles of ``period * mult**i`` steps.

    With ``t_cur`` the steps since the current cycle began and ``T_i`` its length:
    ``after(t) = m + (1 - m) * 0.5 * (1 + cos(pi * t_cur / T_i))``, ``m = min_lr / base_lr``.
    """

    period: int
    mult: int
    min_factor: float

    def after(self, t: int) -> float:
        period = self.period
        while t >= period:
            t -= period
            period *= self.mult
        return _cosine(t / period, self.min_factor)


@dataclass
class WarmupPoly(LinearWarmup):
    """nnU-Net's ``PolyLRScheduler`` over ``length`` epochs after the warmup.

    ``after(e) = (1 - min(e, length) / length) ** power``; without warmup ``length = max_epochs``, which is
    nnU-Net's ``lr * (1 - epoch / max_epochs) ** exponent``.
    """

    length: int
    power: float

    def after(self, t: int) -> float:
        return (1.0 - min(t, self.length) / self.length) ** self.power


@dataclass
class WarmupStep(LinearWarmup):
    """Step decay after the warmup: ``after(e) = gamma ** (e // step_size)`` (torch's ``StepLR``)."""

    step_size: int
    gamma: float

    def after(self, t: int) -> float:
        return self.gamma ** (t // self.step_size)


class WarmupReduceLROnPlateau(ReduceLROnPlateau):
    """``ReduceLROnPlateau`` preceded by a linear warmup of ``warmup_epochs`` epochs.

    For the first ``warmup_epochs`` calls of :meth:`step` the metric is ignored and the LR after call ``e`` is
    ``target_lr * (start_factor + (1 - start_factor) * e / warmup_epochs)`` (``start_factor * target_lr``
    before the first call, ``target_lr`` — the optimizer's LR at construction — after the last); from then on
    torch's plateau logic runs unchanged. It subclasses ``ReduceLROnPlateau`` because Lightning recognises
    plateau schedulers by ``isinstance`` and steps them with the monitored metric. All state is numbers, so
    ``state_dict`` loads with ``torch.load(weights_only=True)``.
    """

    def __init__(
        self, optimizer: Optimizer, *, warmup_epochs: int = 0, start_factor: float = 1.0, **kwargs: Any
    ) -> None:
        super().__init__(optimizer, **kwargs)
        self.warmup_epochs = warmup_epochs
        self.start_factor = start_factor
        self.target_lrs = [float(group["lr"]) for group in optimizer.param_groups]
        if warmup_epochs > 0:
            self._set_warmup_lr()

    def step(self, metrics: SupportsFloat, epoch: int | None = None) -> None:  # type: ignore[override]
        """Advance the warmup by one epoch while it lasts, else apply the plateau rule to ``metrics``."""
        if self.last_epoch >= self.warmup_epochs:
            super().step(metrics, epoch)
            return
        self.last_epoch += 1
        self._set_warmup_lr()

    def _set_warmup_lr(self) -> None:
        factor = warmup_factor(self.last_epoch, self.warmup_epochs, self.start_factor)
        for group, target in zip(self.optimizer.param_groups, self.target_lrs, strict=True):
            group["lr"] = target * factor
        self._last_lr = [float(group["lr"]) for group in self.optimizer.param_groups]
