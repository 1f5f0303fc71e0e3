"""Masked losses for multi-task segmentation/regression U-Nets, their registry, and deep-supervision helpers.

One contract for every loss: ``loss(prediction, target, mask=None) -> scalar``.

- ``prediction``: raw network output ``[B, C, *spatial]`` (logits for the classification losses).
- ``target``: ``[B, C_t, *spatial]``: probability/binary maps (sigmoid losses, ``C_t = C``), class indices
  ``[B, 1, *spatial]`` (cross-entropy, softmax Dice), or real values (regression).
- ``mask``: bool or 0/1 float, broadcastable to ``[B, 1, *spatial]`` (or ``[B, C, *spatial]`` for the element-wise
  losses); True/1 = the voxel counts.

A voxel that is masked out contributes nothing: its prediction and target are replaced by a constant with
``torch.where`` before any arithmetic, so NaN or huge values there change neither the value nor any gradient, and the
gradient with respect to the prediction there is exactly zero. Values are means over the valid entries; with no valid
entry the loss is 0 (a graph node with zero gradient, never NaN). Every loss also takes ``ignore_index``: target
entries equal to it are invalid as well (the seed's ``MaskedMSELoss(ignore_index=-100)``). Half-precision predictions
are computed in float32.

Losses that can use the *source* target's prediction (``NormalSmoothnessLoss``) have
``uses_source_prediction = True`` and a keyword ``source_pred=``; all others have ``uses_source_prediction = False``
and no such keyword, so a caller passes ``source_pred=`` only where it is used.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "CosineSimilarityLoss",
    "DeepSupervisionLoss",
    "DiceBCELoss",
    "DiceCELoss",
    "MaskedBCEWithLogitsLoss",
    "MaskedCrossEntropyLoss",
    "MaskedFocalLoss",
    "MaskedL1Loss",
    "MaskedLoss",
    "MaskedMSELoss",
    "MaskedSmoothL1Loss",
    "NormalSmoothnessLoss",
    "SignedDistanceLoss",
    "SoftDiceLoss",
    "build_loss",
    "deep_supervision_weights",
    "downsample_for_deep_supervision",
    "downsample_target_and_mask",
    "gaussian_smooth",
    "loss_names",
]

DownsampleKind = Literal["label", "mask", "regression"]


# --------------------------------------------------------------------------------------------------------- helpers


def _compute_dtype(prediction: Tensor) -> Tensor:
    return prediction.float() if prediction.dtype in (torch.float16, torch.bfloat16) else prediction


def _check_shapes(prediction: Tensor, target: Tensor | None, mask: Tensor | None) -> None:
    if prediction.ndim < 3:
        raise ValueError(f"prediction must be [B, C, *spatial], got shape {tuple(prediction.shape)}")
    spatial = (prediction.shape[0], *prediction.shape[2:])
    if target is not None and (target.ndim != prediction.ndim or (target.shape[0], *target.shape[2:]) != spatial):
        raise ValueError(
            f"target must be [B, C_t, *spatial] matching prediction {tuple(prediction.shape)}, "
            f"got {tuple(target.shape)}"
        )
    if mask is not None:
        if mask.ndim != prediction.ndim:
            raise ValueError(f"mask must be [B, 1, *spatial] (ndim {prediction.ndim}), got {tuple(mask.shape)}")
        try:
            torch.broadcast_shapes(mask.shape, (prediction.shape[0], 1, *prediction.shape[2:]))
        except RuntimeError:
            try:
                torch.broadcast_shapes(mask.shape, prediction.shape)
            except RuntimeError as err:
                raise ValueError(
                    f"mask {tuple(mask.shape)} does not broadcast to prediction {tuple(prediction.shape)}"
                ) from err


def _bool_mask(mask: Tensor | None, like: Tensor) -> Tensor:
    """``mask`` as a bool tensor on ``like``'s device (all True ``[1, 1, 1…]`` when None); float masks: > 0.5."""
    if mask is None:
        return torch.ones((1,) * like.ndim, dtype=torch.bool, device=like.device)
    mask = mask.to(like.device)
    return mask if mask.dtype == torch.bool else mask > 0.5


def _masked_mean(values: Tensor, valid: Tensor, weights: Tensor | None = None) -> Tensor:
    """``Σ_valid w·v / Σ_valid w`` (w = 1 when None); 0 with zero gradient when nothing is valid."""
    keep = torch.broadcast_to(valid, values.shape)
    zero = torch.zeros((), dtype=values.dtype, device=values.device)
    if weights is None:
        return torch.where(keep, values, zero).sum() / keep.sum().clamp(min=1)
    weights = torch.where(keep, torch.broadcast_to(weights, values.shape).to(values.dtype), zero)
    return torch.where(keep, values * weights, zero).sum() / weights.sum().clamp(min=torch.finfo(values.dtype).tiny)


def _where(valid: Tensor, values: Tensor, fill: float = 0.0) -> Tensor:
    return torch.where(valid, values, torch.full((), fill, dtype=values.dtype, device=values.device))


class MaskedLoss(nn.Module):
    """Base of the masked losses: validity = ``mask`` ∧ ``target != ignore_index`` (the module docstring gives the
    contract). Subclasses implement ``forward(prediction, target, mask=None)``."""

    uses_source_prediction: bool = False

    def __init__(self, *, ignore_index: float | None = None) -> None:
        super().__init__()
        self.ignore_index = ignore_index

    def valid_entries(self, prediction: Tensor, target: Tensor, mask: Tensor | None) -> Tensor:
        """Bool tensor broadcastable to ``target``: the mask, and-ed with ``target != ignore_index``."""
        _check_shapes(prediction, target, mask)
        valid = _bool_mask(mask, prediction)
        if self.ignore_index is not None:
            valid = valid & (target != self.ignore_index)
        return valid


class _ElementwiseLoss(MaskedLoss, ABC):
    """Mean of ``elementwise(prediction, target)`` over valid entries (target shape == prediction shape)."""

    @abstractmethod
    def elementwise(self, prediction: Tensor, target: Tensor) -> Tensor:
        """The per-entry loss of (sanitised) prediction and target, same shape as both."""

    def forward(self, prediction: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
        if target.shape != prediction.shape:
            raise ValueError(
                f"{type(self).__name__}: target must have the prediction's shape {tuple(prediction.shape)}, "
                f"got {tuple(target.shape)}"
            )
        prediction = _compute_dtype(prediction)
        valid = torch.broadcast_to(self.valid_entries(prediction, target, mask), prediction.shape)
        pred = _where(valid, prediction)
        tgt = _where(valid, target.to(prediction.dtype))
        return _masked_mean(self.elementwise(pred, tgt), valid)


# ---------------------------------------------------------------------------------------- element-wise losses


class MaskedBCEWithLogitsLoss(_ElementwiseLoss):
    """Masked binary cross-entropy on logits, mean over valid entries:
    ``ℓ = −[w_pos·y·log σ(z) + (1 − y)·log(1 − σ(z))]`` (``F.binary_cross_entropy_with_logits``). With an all-True
    mask it equals ``F.binary_cross_entropy_with_logits(z, y, pos_weight=w_pos)``.

    Args:
        pos_weight: weight of positive examples, a number or one per channel (``[C]``), or None.
        ignore_index: target value that marks an entry invalid, or None.
    """

    def __init__(self, pos_weight: float | Sequence[float] | None = None, *, ignore_index: float | None = None):
        super().__init__(ignore_index=ignore_index)
        weight = None if pos_weight is None else torch.as_tensor(pos_weight, dtype=torch.float32).reshape(-1)
        self.register_buffer("pos_weight", weight, persistent=False)

    def elementwise(self, prediction: Tensor, target: Tensor) -> Tensor:
        pos_weight = self.pos_weight
        if pos_weight is not None:
            pos_weight = pos_weight.to(prediction).reshape(-1, *([1] * (prediction.ndim - 2)))
        return F.binary_cross_entropy_with_logits(prediction, target, pos_weight=pos_weight, reduction="none")


class MaskedFocalLoss(_ElementwiseLoss):
    """Masked binary (sigmoid) focal loss (Lin et al. 2017), mean over valid entries:
    ``ℓ = α_t · (1 − p_t)^γ · BCE(z, y)`` with ``p = σ(z)``, ``p_t = p·y + (1 − p)(1 − y)`` and
    ``α_t = α·y + (1 − α)(1 − y)`` (``α_t = 1`` when ``alpha`` is None). ``γ = 0, α = None`` is exactly the masked
    BCE. ``1 − p_t`` is clamped at the dtype's eps so that γ < 1 has a finite gradient at saturated logits.
    (The multi-class softmax focal loss is :func:`medtrain.nn.losses.focal_loss`.)"""

    def __init__(self, gamma: float = 2.0, alpha: float | None = None, *, ignore_index: float | None = None):
        super().__init__(ignore_index=ignore_index)
        if gamma < 0:
            raise ValueError(f"gamma must be >= 0, got {gamma}")
        if alpha is not None and not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1] or None, got {alpha}")
        self.gamma = float(gamma)
        self.alpha = alpha

    def elementwise(self, prediction: Tensor, target: Tensor) -> Tensor:
        loss = F.binary_cross_entropy_with_logits(prediction, target, reduction="none")
        if self.gamma > 0:
            p = torch.sigmoid(prediction)
            p_t = p * target + (1 - p) * (1 - target)
            loss = (1 - p_t).clamp(min=torch.finfo(p_t.dtype).eps) ** self.gamma * loss
        if self.alpha is not None:
            loss = (self.alpha * target + (1 - self.alpha) * (1 - target)) * loss
        return loss


class MaskedMSELoss(_ElementwiseLoss):
    """Masked mean squared error ``mean_valid (ŷ − y)²``; ``ignore_index``: target value marking invalid entries."""

    def elementwise(self, prediction: Tensor, target: Tensor) -> Tensor:
        return (prediction - target) ** 2


class MaskedL1Loss(_ElementwiseLoss):
    """Masked mean absolute error ``mean_valid |ŷ − y|``; ``ignore_index``: target value marking invalid entries."""

    def elementwise(self, prediction: Tensor, target: Tensor) -> Tensor:
        return (prediction - target).abs()


class MaskedSmoothL1Loss(_ElementwiseLoss):
    """Masked smooth L1 (``F.smooth_l1_loss``): ``r = ŷ − y``; ``0.5·r²/β`` if ``|r| < β`` else ``|r| − 0.5·β``
    (``β = 0``: L1), mean over valid entries. Also registered as the seed's ``WeightedSmoothL1Loss``."""

    def __init__(self, beta: float = 1.0, *, ignore_index: float | None = None):
        super().__init__(ignore_index=ignore_index)
        if beta < 0:
            raise ValueError(f"beta must be >= 0, got {beta}")
        self.beta = float(beta)

    def elementwise(self, prediction: Tensor, target: Tensor) -> Tensor:
        return F.smooth_l1_loss(prediction, target, beta=self.beta, reduction="none")


# ------------------------------------------------------------------------------------------- class-index losses


def _index_target(prediction: Tensor, target: Tensor, valid: Tensor) -> Tensor:
    """Class indices ``[B, 1, *spatial]`` (long), 0 at invalid voxels."""
    if target.shape[1] != 1:
        raise ValueError(f"class-index target must be [B, 1, *spatial], got {tuple(target.shape)}")
    return torch.where(valid, target, torch.zeros((), dtype=target.dtype, device=target.device)).long()


class MaskedCrossEntropyLoss(MaskedLoss):
    """Masked softmax cross-entropy with class-index targets ``[B, 1, *spatial]``:
    ``Σ_valid w_y·(−log softmax(z)_y) / Σ_valid w_y`` (``w`` = ``weight`` per class, 1 when None) — the
    normalisation of ``F.cross_entropy(weight=...)``, which it equals when every voxel is valid. Class indices must
    lie in ``[0, C)`` at valid voxels; ``ignore_index`` marks invalid voxels (nnU-Net's ignore label).

    Args:
        weight: per-class weights ``[C]`` or None.
        ignore_index: label value that marks a voxel invalid, or None.
    """

    def __init__(self, weight: Sequence[float] | None = None, *, ignore_index: int | None = None):
        super().__init__(ignore_index=ignore_index)
        class_weight = None if weight is None else torch.as_tensor(weight, dtype=torch.float32).reshape(-1)
        self.register_buffer("weight", class_weight, persistent=False)

    def forward(self, prediction: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
        prediction = _compute_dtype(prediction)
        valid = torch.broadcast_to(
            self.valid_entries(prediction, target, mask), (prediction.shape[0], 1, *prediction.shape[2:])
        )
        labels = _index_target(prediction, target, valid)
        logits = _where(valid, prediction)
        weight = None if self.weight is None else self.weight.to(logits)
        loss = F.cross_entropy(logits, labels[:, 0], reduction="none")[:, None]
        return _masked_mean(loss, valid, weights=None if weight is None else weight[labels])


class SoftDiceLoss(MaskedLoss):
    """Soft Dice loss as nnU-Net v2's ``SoftDiceLoss`` (with masked voxels excluded from tp, fp and fn), reported as
    ``1 − mean Dice`` (nnU-Net returns ``−Dice``; same gradient, but ours is 0 when perfect or empty).

    ``p`` = ``sigmoid(z)`` (``nonlinearity="sigmoid"``, multi-label, target maps ``[B, C, *spatial]``) or
    ``softmax(z)`` over channels (``"softmax"``, target class indices ``[B, 1, *spatial]`` or one-hot
    ``[B, C, *spatial]``). With ``v`` the validity (mask ∧ target ≠ ignore_index) and sums over the spatial axes
    (and the batch when ``batch_dice``): ``tp = Σ v·p·y``, ``fp = Σ v·p·(1 − y)``, ``fn = Σ v·(1 − p)·y``,
    ``Dice_c = (2·tp + smooth) / max(2·tp + fp + fn + smooth, 1e-8)``. Channel 0 is dropped when ``do_bg`` is False.
    The mean runs over the (sample, channel) pairs that have at least one valid voxel, so fully masked samples do
    not dilute it; 0 when there is none.
    """

    def __init__(
        self,
        nonlinearity: Literal["sigmoid", "softmax"] = "sigmoid",
        *,
        batch_dice: bool = False,
        do_bg: bool = True,
        smooth: float = 1e-5,
        ignore_index: float | None = None,
    ) -> None:
        super().__init__(ignore_index=ignore_index)
        if nonlinearity not in ("sigmoid", "softmax"):
            raise ValueError(f"nonlinearity must be 'sigmoid' or 'softmax', got {nonlinearity!r}")
        self.nonlinearity = nonlinearity
        self.batch_dice = batch_dice
        self.do_bg = do_bg
        self.smooth = float(smooth)

    def forward(self, prediction: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
        prediction = _compute_dtype(prediction)
        channels = prediction.shape[1]
        valid = self.valid_entries(prediction, target, mask)
        if self.nonlinearity == "sigmoid" or (target.shape[1] == channels and channels > 1):
            if target.shape != prediction.shape:
                raise ValueError(
                    f"SoftDiceLoss({self.nonlinearity}): target must have the prediction's shape "
                    f"{tuple(prediction.shape)}, got {tuple(target.shape)}"
                )
            if self.nonlinearity == "softmax":
                valid = valid.all(dim=1, keepdim=True)  # one-hot target: a voxel is valid in every channel or none
            valid = torch.broadcast_to(valid, (prediction.shape[0], valid.shape[1], *prediction.shape[2:]))
            y = _where(valid, target.to(prediction.dtype))
        else:
            if channels < 2:
                raise ValueError("SoftDiceLoss('softmax') needs at least 2 prediction channels")
            valid = torch.broadcast_to(valid, (prediction.shape[0], 1, *prediction.shape[2:]))
            labels = _index_target(prediction, target, valid)
            y = torch.zeros_like(prediction).scatter_(1, labels, 1.0)
        logits = _where(valid, prediction)
        p = torch.sigmoid(logits) if self.nonlinearity == "sigmoid" else torch.softmax(logits, dim=1)
        v = torch.broadcast_to(valid, p.shape).to(p.dtype)
        if not self.do_bg:
            if channels < 2:
                raise ValueError("do_bg=False needs at least 2 channels (channel 0 is the background)")
            p, y, v = p[:, 1:], y[:, 1:], v[:, 1:]
        axes = [0, *range(2, p.ndim)] if self.batch_dice else list(range(2, p.ndim))
        tp = (v * p * y).sum(axes)
        fp = (v * p * (1 - y)).sum(axes)
        fn = (v * (1 - p) * y).sum(axes)
        dice = (2 * tp + self.smooth) / (2 * tp + fp + fn + self.smooth).clamp(min=1e-8)
        present = v.sum(axes) > 0
        return _masked_mean(1 - dice, present)


class DiceCELoss(MaskedLoss):
    """nnU-Net's ``DC_and_CE_loss`` with masks: ``weight_ce·CE + weight_dice·(1 − Dice_softmax)`` for class-index
    targets ``[B, 1, *spatial]``; a term whose weight is 0 is not computed. Dice as :class:`SoftDiceLoss`
    (``"softmax"``, nnU-Net's defaults ``do_bg=False, smooth=1e-5``), CE as :class:`MaskedCrossEntropyLoss`."""

    def __init__(
        self,
        weight_ce: float = 1.0,
        weight_dice: float = 1.0,
        *,
        batch_dice: bool = False,
        do_bg: bool = False,
        smooth: float = 1e-5,
        class_weight: Sequence[float] | None = None,
        ignore_index: int | None = None,
    ) -> None:
        super().__init__(ignore_index=ignore_index)
        self.weight_ce = float(weight_ce)
        self.weight_dice = float(weight_dice)
        self.ce = MaskedCrossEntropyLoss(class_weight, ignore_index=ignore_index)
        self.dice = SoftDiceLoss(
            "softmax", batch_dice=batch_dice, do_bg=do_bg, smooth=smooth, ignore_index=ignore_index
        )

    def forward(self, prediction: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
        total = torch.zeros((), dtype=torch.float32, device=prediction.device)
        if self.weight_ce != 0:
            total = total + self.weight_ce * self.ce(prediction, target, mask)
        if self.weight_dice != 0:
            total = total + self.weight_dice * self.dice(prediction, target, mask)
        return total


class DiceBCELoss(MaskedLoss):
    """nnU-Net's ``DC_and_BCE_loss`` (region-based / multi-label) with masks:
    ``weight_ce·BCE + weight_dice·(1 − Dice_sigmoid)``, targets ``[B, C, *spatial]`` in [0, 1]; a term whose weight
    is 0 is not computed. Dice as :class:`SoftDiceLoss` (``"sigmoid"``), BCE as :class:`MaskedBCEWithLogitsLoss`."""

    def __init__(
        self,
        weight_ce: float = 1.0,
        weight_dice: float = 1.0,
        *,
        batch_dice: bool = False,
        do_bg: bool = True,
        smooth: float = 1e-5,
        pos_weight: float | Sequence[float] | None = None,
        ignore_index: float | None = None,
    ) -> None:
        super().__init__(ignore_index=ignore_index)
        self.weight_ce = float(weight_ce)
        self.weight_dice = float(weight_dice)
        self.bce = MaskedBCEWithLogitsLoss(pos_weight, ignore_index=ignore_index)
        self.dice = SoftDiceLoss(
            "sigmoid", batch_dice=batch_dice, do_bg=do_bg, smooth=smooth, ignore_index=ignore_index
        )

    def forward(self, prediction: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
        total = torch.zeros((), dtype=torch.float32, device=prediction.device)
        if self.weight_ce != 0:
            total = total + self.weight_ce * self.bce(prediction, target, mask)
        if self.weight_dice != 0:
            total = total + self.weight_dice * self.dice(prediction, target, mask)
        return total


# ----------------------------------------------------------------------------------- auxiliary-target losses


def _central_gradient_norm(field: Tensor, valid: Tensor, spacing: Sequence[float]) -> tuple[Tensor, Tensor]:
    """``|∇f|`` by central differences ``(f[i+1] − f[i−1]) / (2·s)`` on the interior voxels ``[1:-1]`` of every
    spatial axis, and the interior voxels whose value and 2·D axis neighbours are all valid."""
    dims = field.ndim - 2
    inner = [slice(1, -1)] * dims
    head = (slice(None), slice(None))
    ok = valid[(*head, *inner)]
    grad_sq = torch.zeros_like(field[(*head, *inner)])
    for axis in range(dims):
        plus, minus = list(inner), list(inner)
        plus[axis], minus[axis] = slice(2, None), slice(None, -2)
        diff = (field[(*head, *plus)] - field[(*head, *minus)]) / (2.0 * spacing[axis])
        grad_sq = grad_sq + diff**2
        ok = ok & valid[(*head, *plus)] & valid[(*head, *minus)]
    return grad_sq.clamp(min=1e-12).sqrt(), ok


class SignedDistanceLoss(MaskedLoss):
    """Regression of a predicted signed distance ``d̂`` to the target signed distance ``d`` (same units), truncated
    at ``±rho``, plus an optional eikonal term.

    Data term: ``r = d̂ − d`` where ``|d| < ρ``; ``r = min(d̂ − ρ, 0)`` where ``d ≥ ρ`` and ``r = max(d̂ + ρ, 0)``
    where ``d ≤ −ρ`` (any prediction beyond ±ρ on the target's side is exact, and a wrong-sided prediction is still
    pulled back); loss ``SmoothL1_β(r)`` (``0.5·r²/β`` if ``|r| < β`` else ``|r| − 0.5·β``), mean over valid voxels.

    Eikonal term (``eikonal=True``): ``mean over valid interior voxels of (|∇d̂| − 1)²`` with central differences
    ``(d̂[i+1] − d̂[i−1]) / (2·s_axis)`` on the voxels whose 2·D axis neighbours are valid too; ``spacing`` is one
    unit per axis unless given (pass the patch spacing when the target is in physical units of anisotropic data).
    Total: ``data + eikonal_weight·eikonal``.
    """

    def __init__(
        self,
        rho: float = 6.0,
        beta: float = 1.0,
        eikonal: bool = False,
        eikonal_weight: float = 0.1,
        *,
        spacing: Sequence[float] | None = None,
        ignore_index: float | None = None,
    ) -> None:
        super().__init__(ignore_index=ignore_index)
        if rho <= 0 or beta < 0 or eikonal_weight < 0:
            raise ValueError(f"need rho > 0, beta >= 0, eikonal_weight >= 0; got {rho}, {beta}, {eikonal_weight}")
        self.rho = float(rho)
        self.beta = float(beta)
        self.eikonal = bool(eikonal)
        self.eikonal_weight = float(eikonal_weight)
        self.spacing = None if spacing is None else tuple(float(s) for s in spacing)

    def forward(self, prediction: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
        if target.shape != prediction.shape:
            raise ValueError(f"SignedDistanceLoss: target {tuple(target.shape)} != prediction {prediction.shape}")
        prediction = _compute_dtype(prediction)
        valid = torch.broadcast_to(self.valid_entries(prediction, target, mask), prediction.shape)
        pred = _where(valid, prediction)
        tgt = _where(valid, target.to(pred.dtype))
        residual = pred - tgt.clamp(-self.rho, self.rho)
        residual = torch.where(tgt >= self.rho, residual.clamp(max=0.0), residual)
        residual = torch.where(tgt <= -self.rho, residual.clamp(min=0.0), residual)
        loss = _masked_mean(
            F.smooth_l1_loss(residual, torch.zeros_like(residual), beta=self.beta, reduction="none"), valid
        )
        if self.eikonal and self.eikonal_weight > 0 and min(pred.shape[2:]) >= 3:
            dims = pred.ndim - 2
            spacing = self.spacing or (1.0,) * dims
            if len(spacing) != dims:
                raise ValueError(f"spacing has {len(spacing)} values for {dims} spatial axes")
            norm, ok = _central_gradient_norm(pred, valid, spacing)
            loss = loss + self.eikonal_weight * _masked_mean((norm - 1.0) ** 2, ok)
        return loss


def _unit_norm(vectors: Tensor, eps: float) -> Tensor:
    """``|v|`` over dim 1 (keepdim), at least ``eps`` (finite gradient at v = 0)."""
    return (vectors**2).sum(dim=1, keepdim=True).clamp(min=eps * eps).sqrt()


class CosineSimilarityLoss(MaskedLoss):
    """``mean over valid voxels of 1 − cos(v̂, v)`` with ``cos = v̂·v / (max(|v̂|, ε)·|v|)`` over the channel axis
    (surface normals). Target voxels with ``|v| ≤ ε`` are invalid, as are voxels where any target component equals
    ``ignore_index``. ``sign_invariant=True`` uses ``1 − |cos|`` (for directions defined up to sign).
    ``dim`` must be 1 (the channel axis); it exists for the seed's ``kwargs: {dim: 1}``."""

    def __init__(
        self, dim: int = 1, eps: float = 1e-8, sign_invariant: bool = False, *, ignore_index: float | None = None
    ):
        super().__init__(ignore_index=ignore_index)
        if dim != 1:
            raise ValueError(f"CosineSimilarityLoss compares vectors along the channel axis (dim=1), got dim={dim}")
        self.eps = float(eps)
        self.sign_invariant = sign_invariant

    def forward(self, prediction: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
        if target.shape != prediction.shape:
            raise ValueError(f"CosineSimilarityLoss: target {tuple(target.shape)} != prediction {prediction.shape}")
        prediction = _compute_dtype(prediction)
        valid = self.valid_entries(prediction, target, mask).all(dim=1, keepdim=True)
        tgt = _where(valid, target.to(prediction.dtype))
        valid = valid & ((tgt**2).sum(dim=1, keepdim=True) > self.eps**2)
        pred = _where(valid, prediction)
        tgt = _where(valid, tgt)
        cos = (pred * tgt).sum(dim=1, keepdim=True) / (_unit_norm(pred, self.eps) * _unit_norm(tgt, self.eps))
        return _masked_mean(1 - (cos.abs() if self.sign_invariant else cos), valid)


def _gaussian_kernel1d(sigma: float, dtype: torch.dtype, device: torch.device) -> Tensor:
    radius = max(1, math.ceil(3.0 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=dtype, device=device)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    return kernel / kernel.sum()


def gaussian_smooth(x: Tensor, sigma: float) -> Tensor:
    """Separable Gaussian smoothing of ``[B, C, *spatial]`` (1–3 spatial axes), each channel alone: one 1-D
    convolution per axis with a kernel of radius ``ceil(3σ)`` (voxel units), zero padding (same size out)."""
    dims = x.ndim - 2
    if dims not in (1, 2, 3):
        raise ValueError(f"gaussian_smooth supports 1-3 spatial axes, got shape {tuple(x.shape)}")
    conv: Callable[..., Tensor] = (F.conv1d, F.conv2d, F.conv3d)[dims - 1]
    kernel = _gaussian_kernel1d(sigma, x.dtype, x.device)
    channels = x.shape[1]
    for axis in range(dims):
        shape = [1] * dims
        shape[axis] = kernel.numel()
        padding = [0] * dims
        padding[axis] = kernel.numel() // 2
        weight = kernel.reshape(1, 1, *shape).expand(channels, 1, *shape)
        x = conv(x, weight, padding=tuple(padding), groups=channels)
    return x


class NormalSmoothnessLoss(MaskedLoss):
    """Self-supervised smoothness of predicted unit normals (needs no target).

    ``n = v̂/|v̂|`` (prediction normalised over channels); ``m = G_σ*(w·n) / G_σ*w`` with ``w`` the validity, i.e. a
    Gaussian average over the valid neighbourhood only (:func:`gaussian_smooth`, σ in voxels); value
    ``Σ_valid a·|n − m|^q / Σ_valid a`` with ``|·|`` the Euclidean norm over channels and ``a`` = 1, or, when
    ``source_pred`` is given, the source target's predicted foreground probability (detached, so this loss never
    changes the source's segmentation): ``sigmoid`` of its single channel or, for ``source_activation="softmax"``,
    ``1 − softmax[background]``; ``"none"`` takes ``source_pred`` as a probability already.
    """

    uses_source_prediction = True

    def __init__(
        self,
        sigma: float = 2.0,
        q: float = 2.0,
        source_activation: Literal["sigmoid", "softmax", "none"] = "sigmoid",
        eps: float = 1e-6,
    ) -> None:
        super().__init__()
        if sigma <= 0 or q <= 0:
            raise ValueError(f"sigma and q must be > 0, got {sigma} and {q}")
        if source_activation not in ("sigmoid", "softmax", "none"):
            raise ValueError(f"source_activation must be sigmoid, softmax or none, got {source_activation!r}")
        self.sigma = float(sigma)
        self.q = float(q)
        self.source_activation = source_activation
        self.eps = float(eps)

    def _source_probability(self, source_pred: Tensor) -> Tensor:
        source = _compute_dtype(source_pred.detach())
        if self.source_activation == "softmax":
            return 1 - torch.softmax(source, dim=1)[:, :1]
        if source.shape[1] != 1:
            raise ValueError(f"source_pred must have 1 channel for {self.source_activation!r}, got {source.shape}")
        return torch.sigmoid(source) if self.source_activation == "sigmoid" else source

    def forward(
        self,
        prediction: Tensor,
        target: Tensor | None = None,
        mask: Tensor | None = None,
        *,
        source_pred: Tensor | None = None,
    ) -> Tensor:
        prediction = _compute_dtype(prediction)
        _check_shapes(prediction, None, mask)
        valid = torch.broadcast_to(
            _bool_mask(mask, prediction), (prediction.shape[0], 1, *prediction.shape[2:])
        ).contiguous()
        weights = None
        if source_pred is not None:
            _check_shapes(prediction, source_pred, None)
            prob = self._source_probability(source_pred)
            valid = valid & torch.isfinite(prob)
            weights = _where(valid, prob)
        pred = _where(valid, prediction)
        normals = pred / _unit_norm(pred, self.eps)
        w = valid.to(pred.dtype)
        local_sum = gaussian_smooth(normals * w, self.sigma)
        local_weight = gaussian_smooth(w, self.sigma)
        smooth = local_sum / local_weight.clamp(min=self.eps)
        deviation = ((normals - smooth) ** 2).sum(dim=1, keepdim=True).clamp(min=self.eps**2)
        return _masked_mean(deviation ** (self.q / 2), valid, weights=weights)


# ------------------------------------------------------------------------------------------- deep supervision


def downsample_for_deep_supervision(tensor: Tensor, size: Sequence[int], kind: DownsampleKind) -> Tensor:
    """Resize ``[B, C, *spatial]`` to ``size`` (spatial only) for a deep-supervision output.

    ``"label"`` and ``"mask"``: nearest neighbour (``F.interpolate(mode="nearest")``), dtype kept, so labels stay
    labels and masks stay 0/1 (bool stays bool). ``"regression"``: linear / bilinear / trilinear with
    ``align_corners=False`` in floating point. Linear interpolation mixes neighbours: a regression target with
    invalid voxels must go through :func:`downsample_target_and_mask` instead.
    """
    size = tuple(int(s) for s in size)
    if len(size) != tensor.ndim - 2:
        raise ValueError(f"size {size} must have one entry per spatial axis of {tuple(tensor.shape)}")
    if kind in ("label", "mask"):
        return F.interpolate(tensor.float(), size=size, mode="nearest").to(tensor.dtype)
    if kind == "regression":
        mode = ("linear", "bilinear", "trilinear")[len(size) - 1]
        work = tensor if tensor.is_floating_point() else tensor.float()
        return F.interpolate(work, size=size, mode=mode, align_corners=False)
    raise ValueError(f"kind must be 'label', 'mask' or 'regression', got {kind!r}")


def downsample_target_and_mask(
    target: Tensor, mask: Tensor | None, size: Sequence[int], kind: DownsampleKind
) -> tuple[Tensor, Tensor | None]:
    """Downsample a target and its validity mask together; a downsampled voxel is valid only if every full-res voxel
    that contributes to its value was valid.

    ``"label"``/``"mask"``: target and mask by nearest neighbour (each output voxel copies exactly one input voxel,
    so the mask copied from the same voxel is exact). ``"regression"``: invalid target voxels are set to 0 first
    (``torch.where``, NaN-safe), then target and mask (as float) go through the same linear interpolation; the new
    mask is True where the interpolated mask is ≥ 1 − 1e-6, i.e. where all voxels with a positive interpolation
    weight were valid (for a factor-2 reduction that is the 2×2(×2) block: the min-pool of the mask). ``mask`` None →
    None (everything valid). The mask is returned as bool.
    """
    if mask is None:
        return downsample_for_deep_supervision(target, size, kind), None
    _check_shapes(target, None, mask)
    keep = _bool_mask(mask, target)
    if kind in ("label", "mask"):
        return downsample_for_deep_supervision(target, size, kind), downsample_for_deep_supervision(keep, size, kind)
    if kind != "regression":
        raise ValueError(f"kind must be 'label', 'mask' or 'regression', got {kind!r}")
    work = target if target.is_floating_point() else target.float()
    clean = _where(torch.broadcast_to(keep, work.shape), work)
    weight = downsample_for_deep_supervision(keep.to(clean.dtype), size, "regression")
    return downsample_for_deep_supervision(clean, size, "regression"), weight >= 1 - 1e-6


def deep_supervision_weights(num_outputs: int) -> list[float]:
    """nnU-Net's deep-supervision weights: ``w_i ∝ 1/2^i`` for output i (0 = full resolution), the lowest
    resolution set to 0 when there is more than one output, normalised to sum 1."""
    if num_outputs < 1:
        raise ValueError(f"num_outputs must be >= 1, got {num_outputs}")
    weights = [0.5**i for i in range(num_outputs)]
    if num_outputs > 1:
        weights[-1] = 0.0
    total = sum(weights)
    return [w / total for w in weights]


class DeepSupervisionLoss(nn.Module):
    """``Σ_i w_i · loss(prediction_i, target_i, mask_i[, source_pred=source_pred_i])`` over the deep-supervision
    outputs (index 0 = full resolution); outputs with ``w_i = 0`` are not computed. ``source_pred`` (a list) is
    passed only when ``loss.uses_source_prediction``."""

    def __init__(self, loss: nn.Module, weights: Sequence[float]) -> None:
        super().__init__()
        self.weights = [float(w) for w in weights]
        if not self.weights or any(w < 0 for w in self.weights) or all(w == 0 for w in self.weights):
            raise ValueError(f"weights must be non-negative with at least one > 0, got {list(weights)}")
        self.loss = loss
        self.uses_source_prediction = bool(getattr(loss, "uses_source_prediction", False))

    def forward(
        self,
        predictions: Sequence[Tensor],
        targets: Sequence[Tensor | None],
        masks: Sequence[Tensor | None] | None = None,
        *,
        source_pred: Sequence[Tensor] | None = None,
    ) -> Tensor:
        count = len(self.weights)
        masks = [None] * count if masks is None else list(masks)
        if not len(predictions) == len(targets) == len(masks) == count:
            raise ValueError(
                f"expected {count} predictions, targets and masks, got {len(predictions)}, {len(targets)}, {len(masks)}"
            )
        if source_pred is not None and len(source_pred) != count:
            raise ValueError(f"expected {count} source predictions, got {len(source_pred)}")
        total: Tensor | None = None
        for i, weight in enumerate(self.weights):
            if weight == 0:
                continue
            if self.uses_source_prediction:
                source = None if source_pred is None else source_pred[i]
                term = self.loss(predictions[i], targets[i], masks[i], source_pred=source)
            else:
                term = self.loss(predictions[i], targets[i], masks[i])
            total = weight * term if total is None else total + weight * term
        assert total is not None  # at least one weight > 0 (checked in __init__)
        return total


# --------------------------------------------------------------------------------------------------- registry

_LOSSES: dict[str, tuple[type[nn.Module], tuple[str, ...]]] = {
    "SoftDiceLoss": (SoftDiceLoss, ("dice", "DiceLoss")),
    "MaskedBCEWithLogitsLoss": (MaskedBCEWithLogitsLoss, ("BCEWithLogitsLoss", "bce")),
    "MaskedCrossEntropyLoss": (MaskedCrossEntropyLoss, ("CrossEntropyLoss", "ce")),
    "DiceCELoss": (DiceCELoss, ("DC_and_CE_loss", "dice_ce")),
    "DiceBCELoss": (DiceBCELoss, ("DC_and_BCE_loss", "dice_bce")),
    "MaskedFocalLoss": (MaskedFocalLoss, ("FocalLoss", "focal")),
    "MaskedMSELoss": (MaskedMSELoss, ("MSELoss", "mse")),
    "MaskedL1Loss": (MaskedL1Loss, ("L1Loss", "l1", "mae")),
    "MaskedSmoothL1Loss": (MaskedSmoothL1Loss, ("SmoothL1Loss", "WeightedSmoothL1Loss", "smooth_l1")),
    "SignedDistanceLoss": (SignedDistanceLoss, ("sdt", "signed_distance")),
    "CosineSimilarityLoss": (CosineSimilarityLoss, ("cosine",)),
    "NormalSmoothnessLoss": (NormalSmoothnessLoss, ("normal_smoothness",)),
}


def _key(name: str) -> str:
    return name.lower().replace("_", "").replace("-", "")


_BY_KEY = {_key(alias): cls for canonical, (cls, aliases) in _LOSSES.items() for alias in (canonical, *aliases)}


def loss_names() -> dict[str, tuple[str, ...]]:
    """Canonical loss names → their accepted aliases (names match case-insensitively, ignoring ``_`` and ``-``)."""
    return {canonical: aliases for canonical, (_, aliases) in _LOSSES.items()}


def build_loss(name: str, **kwargs: object) -> nn.Module:
    """The loss registered under ``name`` (canonical class name, a seed name such as ``"BCEWithLogitsLoss"``, or a
    short alias such as ``"bce"``; case-, ``_``- and ``-``-insensitive) built with ``kwargs``. Unknown name →
    ``ValueError`` listing the valid names."""
    cls = _BY_KEY.get(_key(name))
    if cls is None:
        valid = "; ".join(f"{canonical} ({', '.join(aliases)})" for canonical, aliases in loss_names().items())
        raise ValueError(f"unknown loss {name!r}; valid names (aliases): {valid}")
    return cls(**kwargs)
