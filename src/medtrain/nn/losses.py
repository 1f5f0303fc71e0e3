"""Reusable loss functions with their formulas: class-weighted focal loss, a Gaussian negative log-likelihood that
only counts annotated entries (NaN-safe where the annotation is missing), and a curriculum weight ramp."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["focal_loss", "masked_gaussian_nll", "ramp_weight"]

Reduction = Literal["mean", "sum", "none"]


def focal_loss(
    logits: Tensor,
    target: Tensor,
    *,
    gamma: float = 2.0,
    class_weights: Tensor | None = None,
    reduction: Reduction = "mean",
) -> Tensor:
    """Multi-class focal loss with per-class weights (Lin et al. 2017, "Focal Loss for Dense Object Detection").

    For row i with true class ``c = target[i]`` and ``p_i = softmax(logits[i])[c]``:
    ``ℓ_i = −α_c · (1 − p_i)^γ · log p_i``, with ``α = class_weights`` (1 for every class when None).
    ``reduction``: ``"none"`` → ``[B]``; ``"sum"`` → ``Σ ℓ_i``; ``"mean"`` → ``Σ ℓ_i / Σ_i α_{target[i]}`` (the
    normalisation of ``F.cross_entropy`` with ``weight=``; the plain mean when unweighted). So with ``γ = 0``
    ``focal_loss(z, y, gamma=0, class_weights=w, reduction=r) == F.cross_entropy(z, y, weight=w, reduction=r)``.
    ``log p_i`` comes from ``log_softmax`` (in float32 for half-precision logits), so large logits do not overflow.

    Args:
        logits: ``[B, K]`` unnormalised class scores.
        target: ``[B]`` integer class indices in ``[0, K)``.
        gamma: focusing parameter γ ≥ 0.
        class_weights: ``[K]`` non-negative α per class, or None.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.
    """
    if logits.ndim != 2 or target.shape != logits.shape[:1]:
        raise ValueError(f"expected logits [B, K] and target [B], got {tuple(logits.shape)} and {tuple(target.shape)}")
    if gamma < 0:
        raise ValueError(f"gamma must be >= 0, got {gamma}")
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    target = target.long()
    work = logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits
    log_p = F.log_softmax(work, dim=-1).gather(1, target[:, None])[:, 0]
    loss = -log_p
    if gamma > 0:
        loss = (1.0 - log_p.exp()).clamp(min=0.0) ** gamma * loss
    if class_weights is not None:
        if class_weights.shape != logits.shape[1:]:
            raise ValueError(f"class_weights must be [K]=[{logits.shape[1]}], got {tuple(class_weights.shape)}")
        alpha = class_weights.to(loss)[target]
        loss = alpha * loss
    else:
        alpha = torch.ones_like(loss)
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    return loss.sum() / alpha.sum()


def masked_gaussian_nll(mean: Tensor, log_var: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    """Gaussian negative log-likelihood (without the constant ½·log 2π) averaged over the entries where ``mask`` is
    True: ``Σ_{mask} ½·(log σ² + (y − μ)² / σ²) / #mask``, with ``σ² = exp(log_var)``; 0 (still a graph node, zero
    gradients) when the mask is empty.

    Entries where ``mask`` is False never reach the arithmetic: ``target`` may hold NaN there (an absent peak) and
    neither the loss nor any gradient becomes NaN.

    Args:
        mean: μ, any shape S.
        log_var: log σ², shape S.
        target: y, shape S (NaN allowed where the mask is False).
        mask: bool, broadcastable to S (e.g. ``[B, 1]`` for a per-row annotation of ``[B, 2]`` targets).
    """
    if mean.shape != log_var.shape or mean.shape != target.shape:
        raise ValueError(
            f"mean, log_var and target must have one shape, got {tuple(mean.shape)}, {tuple(log_var.shape)}, "
            f"{tuple(target.shape)}"
        )
    keep = torch.broadcast_to(mask.to(device=mean.device, dtype=torch.bool), mean.shape)
    y = torch.where(keep, target.to(mean.dtype), mean.detach())  # masked-out targets are never read
    nll = 0.5 * (log_var + (y - mean) ** 2 * torch.exp(-log_var))
    total = torch.where(keep, nll, torch.zeros_like(nll)).sum()
    return total / keep.sum().clamp(min=1)


def ramp_weight(epoch: float, *, weight: float, start_epoch: float = 0.0, ramp_epochs: float = 0.0) -> float:
    """Curriculum weight of a loss term at (possibly fractional) ``epoch``:
    ``0`` for ``epoch < start_epoch``; ``weight · (epoch − start_epoch) / ramp_epochs`` while
    ``start_epoch ≤ epoch < start_epoch + ramp_epochs``; ``weight`` from then on (at once when ``ramp_epochs = 0``).
    Raises ``ValueError`` for a negative ``ramp_epochs``."""
    if ramp_epochs < 0:
        raise ValueError(f"ramp_epochs must be >= 0, got {ramp_epochs}")
    if epoch < start_epoch:
        return 0.0
    if ramp_epochs == 0 or epoch >= start_epoch + ramp_epochs:
        return float(weight)
    return float(weight) * (epoch - start_epoch) / ramp_epochs
