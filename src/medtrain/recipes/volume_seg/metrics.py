"""Masked segmentation and regression metrics of volume-seg, accumulated over batches or whole volumes.

Hard Dice per class: ``Dice_k = 2·TP_k / (2·TP_k + FP_k + FN_k)`` over the voxels whose loss mask is 1, with
TP/FP/FN summed over every voxel seen (all batches, all volumes), as nnU-Net's validation Dice. Classes are the
channels of a ``sigmoid`` target (prediction ``p > 0.5``) and the non-background classes ``1 … K−1`` of a
``softmax`` target (prediction ``argmax``). A class that is absent from both prediction and label has no Dice
(NaN) and is left out of the mean. Regression targets: mean absolute error over valid voxels and channels.

The trivial baseline "everything is foreground" is the same accumulator fed ``torch.ones_like(label)``:
its Dice is ``2·F / (F + N)`` for F foreground among N valid voxels.

torchmetrics' ``DiceScore`` has no voxel mask, which sparse labels need; hence these few sums of our own.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


def hard_prediction(logits: torch.Tensor, activation: str) -> torch.Tensor:
    """One-hot (``bool``) predicted classes ``[B, K', *spatial]`` from logits: ``sigmoid(x) > 0.5`` per channel
    (K' = C), or ``argmax`` one-hot without background (K' = C − 1) for softmax."""
    if activation == "sigmoid":
        return logits > 0
    classes = logits.argmax(dim=1, keepdim=True)
    return _one_hot_foreground(classes, logits.shape[1])


def _one_hot_foreground(classes: torch.Tensor, n_classes: int) -> torch.Tensor:
    labels = torch.arange(1, n_classes, device=classes.device).view(1, -1, *([1] * (classes.ndim - 2)))
    return classes == labels


def label_classes(target: torch.Tensor, activation: str, n_channels: int) -> torch.Tensor:
    """The label in the layout of :func:`hard_prediction` (``bool`` ``[B, K', *spatial]``)."""
    if activation == "sigmoid":
        return target > 0.5
    return _one_hot_foreground(target.long(), n_channels)


@dataclass
class DiceAccumulator:
    """Running TP/FP/FN per class over masked voxels; :meth:`dice` gives ``2TP / (2TP + FP + FN)``."""

    tp: torch.Tensor | None = None
    fp: torch.Tensor | None = None
    fn: torch.Tensor | None = None

    def update(self, prediction: torch.Tensor, label: torch.Tensor, mask: torch.Tensor | None) -> None:
        """Add one batch: ``prediction``/``label`` bool ``[B, K, *spatial]``, ``mask`` ``[B, 1, *spatial]``."""
        valid = torch.ones_like(label[:, :1]) if mask is None else mask > 0.5
        dims = [0, *range(2, label.ndim)]
        tp = (prediction & label & valid).sum(dims)
        fp = (prediction & ~label & valid).sum(dims)
        fn = (~prediction & label & valid).sum(dims)
        if self.tp is None:
            self.tp, self.fp, self.fn = tp, fp, fn
        else:
            self.tp, self.fp, self.fn = self.tp + tp, self.fp + fp, self.fn + fn  # type: ignore[operator]

    def per_class(self) -> list[float]:
        """Dice per class (NaN for a class absent from prediction and label)."""
        if self.tp is None:
            return []
        tp, fp, fn = (t.double().cpu() for t in (self.tp, self.fp, self.fn))  # type: ignore[union-attr]
        denominator = 2 * tp + fp + fn
        return [float(2 * a / d) if d > 0 else math.nan for a, d in zip(tp, denominator, strict=True)]

    def dice(self) -> float:
        """Mean Dice over the classes that have one (NaN when none has)."""
        values = [v for v in self.per_class() if not math.isnan(v)]
        return sum(values) / len(values) if values else math.nan


@dataclass
class MAEAccumulator:
    """Mean absolute error over valid voxels and channels: ``Σ mask·|p − t| / (Σ mask · C)``."""

    total: float = 0.0
    count: float = 0.0

    def update(self, prediction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None) -> None:
        valid = torch.ones_like(target[:, :1], dtype=torch.bool) if mask is None else mask > 0.5
        valid = valid.expand_as(target)
        error = torch.where(valid, (prediction - target).abs(), torch.zeros_like(target))
        self.total += float(error.sum())
        self.count += float(valid.sum())

    def mae(self) -> float:
        return self.total / self.count if self.count else math.nan


class ConstantBaseline:
    """The best constant predictor of a real-valued target under absolute error: ``mean |v − median(v)|`` over the
    valid values ``v`` seen, estimated on a uniform sample of at most ``limit`` of them (bottom-``limit`` of random
    keys, deterministic by ``seed``), so memory stays bounded on large volumes; exact while fewer values are seen."""

    def __init__(self, limit: int = 1_000_000, seed: int = 0) -> None:
        if limit < 1:
            raise ValueError(f"ConstantBaseline: limit {limit} must be ≥ 1")
        self.limit = limit
        self.generator = torch.Generator().manual_seed(seed)
        self.keys = torch.empty(0, dtype=torch.float64)
        self.values = torch.empty(0, dtype=torch.float64)

    def update(self, target: torch.Tensor, mask: torch.Tensor | None) -> None:
        """Add the valid values of ``target`` ``[B, C, *spatial]`` (``mask`` ``[B, 1, *spatial]`` > 0.5)."""
        valid = torch.ones_like(target[:, :1], dtype=torch.bool) if mask is None else mask > 0.5
        values = target[valid.expand_as(target)].double().cpu()
        keys = torch.rand(values.numel(), generator=self.generator, dtype=torch.float64)
        self.keys, self.values = torch.cat([self.keys, keys]), torch.cat([self.values, values])
        if self.keys.numel() > self.limit:
            keep = torch.topk(self.keys, self.limit, largest=False).indices
            self.keys, self.values = self.keys[keep], self.values[keep]

    def mae(self) -> float:
        """``mean |v − median(v)|`` of the sample (NaN before any value)."""
        if not self.values.numel():
            return math.nan
        return float((self.values - self.values.median()).abs().mean())
