"""Masked segmentation/regression losses: each against torch or a hand computation unmasked; masked voxels change
neither value nor gradient (NaN/huge garbage there), empty masks give 0; eikonal term, registry, deep supervision."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from medtrain.nn.seg_losses import (
    CosineSimilarityLoss,
    DeepSupervisionLoss,
    DiceBCELoss,
    DiceCELoss,
    MaskedBCEWithLogitsLoss,
    MaskedCrossEntropyLoss,
    MaskedFocalLoss,
    MaskedL1Loss,
    MaskedMSELoss,
    MaskedSmoothL1Loss,
    NormalSmoothnessLoss,
    SignedDistanceLoss,
    SoftDiceLoss,
    build_loss,
    deep_supervision_weights,
    downsample_for_deep_supervision,
    downsample_target_and_mask,
    loss_names,
)

pytestmark = pytest.mark.usefixtures("seeded_one_thread")

SHAPE = (2, 3, 5, 6)  # [B, C, y, x]


def _binary(shape: tuple[int, ...] = SHAPE) -> Tensor:
    return (torch.rand(shape) > 0.5).float()


def _labels(shape: tuple[int, ...] = SHAPE) -> Tensor:
    return torch.randint(0, shape[1], (shape[0], 1, *shape[2:]))


def _vectors(shape: tuple[int, ...] = SHAPE) -> Tensor:
    return torch.randn(shape)


# name → (loss, target maker, garbage target value); the garbage goes into masked voxels only.
CASES: dict[str, tuple[Callable[[], torch.nn.Module], Callable[[], Tensor], float]] = {
    "bce": (lambda: MaskedBCEWithLogitsLoss(pos_weight=[1.0, 2.0, 0.5]), _binary, math.nan),
    "focal": (lambda: MaskedFocalLoss(gamma=2.0, alpha=0.25), _binary, math.nan),
    "dice_sigmoid": (lambda: SoftDiceLoss("sigmoid"), _binary, math.nan),
    "dice_softmax": (lambda: SoftDiceLoss("softmax", do_bg=False, batch_dice=True), _labels, 999),
    "ce": (lambda: MaskedCrossEntropyLoss(weight=[1.0, 2.0, 3.0]), _labels, 999),
    "dice_ce": (lambda: DiceCELoss(), _labels, 999),
    "dice_bce": (lambda: DiceBCELoss(), _binary, math.nan),
    "mse": (lambda: MaskedMSELoss(), _vectors, 1e30),
    "l1": (lambda: MaskedL1Loss(), _vectors, math.nan),
    "smooth_l1": (lambda: MaskedSmoothL1Loss(beta=0.5), _vectors, math.inf),
    "sdt": (lambda: SignedDistanceLoss(rho=1.0, eikonal=True, eikonal_weight=0.5), _vectors, math.nan),
    "cosine": (lambda: CosineSimilarityLoss(), _vectors, math.nan),
    "normal_smoothness": (lambda: NormalSmoothnessLoss(sigma=1.0), _vectors, math.nan),
}


def _mask() -> Tensor:
    mask = torch.rand(SHAPE[0], 1, *SHAPE[2:]) > 0.4
    mask[:, :, 0, 0] = False
    mask[:, :, 1, 1] = True
    return mask


def _with_garbage(tensor: Tensor, mask: Tensor, value: float) -> Tensor:
    keep = torch.broadcast_to(mask, tensor.shape)
    if tensor.is_floating_point():
        return torch.where(keep, tensor, torch.full_like(tensor, value))
    return torch.where(keep, tensor, torch.full_like(tensor, int(value)))


# ----------------------------------------------------------------------------------- values against references


def test_bce_matches_torch_unmasked_and_on_the_valid_subset() -> None:
    logits, target, pos_weight = torch.randn(SHAPE), torch.rand(SHAPE), [0.5, 1.0, 3.0]
    loss = MaskedBCEWithLogitsLoss(pos_weight=pos_weight)
    reference = F.binary_cross_entropy_with_logits(logits, target, pos_weight=torch.tensor(pos_weight)[:, None, None])
    torch.testing.assert_close(loss(logits, target), reference)
    torch.testing.assert_close(loss(logits, target, torch.ones(SHAPE[0], 1, *SHAPE[2:])), reference)
    mask = _mask()
    keep = torch.broadcast_to(mask, SHAPE)
    plain = MaskedBCEWithLogitsLoss()
    torch.testing.assert_close(
        plain(logits, target, mask), F.binary_cross_entropy_with_logits(logits[keep], target[keep])
    )
    torch.testing.assert_close(plain(logits, target, mask.float()), plain(logits, target, mask))


@pytest.mark.parametrize("weight", [None, [1.0, 0.2, 3.0]])
def test_cross_entropy_matches_torch(weight: list[float] | None) -> None:
    logits, labels = torch.randn(SHAPE), _labels()
    w = None if weight is None else torch.tensor(weight)
    reference = F.cross_entropy(logits, labels[:, 0], weight=w)
    torch.testing.assert_close(MaskedCrossEntropyLoss(weight)(logits, labels), reference)
    ignored = labels.clone()
    ignored[:, :, :2] = -100
    torch.testing.assert_close(
        MaskedCrossEntropyLoss(weight, ignore_index=-100)(logits, ignored),
        F.cross_entropy(logits, ignored[:, 0], weight=w, ignore_index=-100),
    )


def test_dice_hand_values() -> None:
    # sigmoid(0) = 0.5 everywhere, target 1 1 0 0: tp = 1, fp = 1, fn = 1 → Dice = (2 + s) / (4 + s)
    s = 1e-5
    target = torch.tensor([1.0, 1.0, 0.0, 0.0]).reshape(1, 1, 1, 4)
    expected = 1 - (2 + s) / (4 + s)
    torch.testing.assert_close(SoftDiceLoss()(torch.zeros(1, 1, 1, 4), target), torch.tensor(expected))
    # perfect confident prediction → ~0; masking the two positives leaves tp = 0, fp = 1, fn = 0 → 1 − s/(1 + s)
    confident = torch.tensor([20.0, 20.0, -20.0, -20.0]).reshape(1, 1, 1, 4)
    assert SoftDiceLoss()(confident, target) < 1e-6
    mask = torch.tensor([False, False, True, True]).reshape(1, 1, 1, 4)
    torch.testing.assert_close(
        SoftDiceLoss()(torch.zeros(1, 1, 1, 4), target, mask), torch.tensor(1 - s / (1 + s)), rtol=0, atol=1e-6
    )
    # softmax with two equal logits: p = 0.5 per class; labels 0 1 1 0, class 1 only (do_bg False) → same as above
    labels = torch.tensor([0, 1, 1, 0]).reshape(1, 1, 1, 4)
    dice = SoftDiceLoss("softmax", do_bg=False)
    torch.testing.assert_close(dice(torch.zeros(1, 2, 1, 4), labels), torch.tensor(expected))
    one_hot = F.one_hot(labels[:, 0], 2).permute(0, 3, 1, 2).float()
    torch.testing.assert_close(dice(torch.zeros(1, 2, 1, 4), one_hot), torch.tensor(expected))


def test_dice_batch_dice_and_fully_masked_samples() -> None:
    logits, target = torch.randn(SHAPE), _binary()
    batch = SoftDiceLoss(batch_dice=True, smooth=0.0)(logits, target)
    p = torch.sigmoid(logits)
    per_class = 2 * (p * target).sum((0, 2, 3)) / (p + target).sum((0, 2, 3))
    torch.testing.assert_close(batch, 1 - per_class.mean())
    # a sample with no valid voxel is left out of the mean instead of counting as a perfect Dice
    mask = torch.ones(SHAPE[0], 1, *SHAPE[2:], dtype=torch.bool)
    mask[1] = False
    torch.testing.assert_close(SoftDiceLoss()(logits, target, mask), SoftDiceLoss()(logits[:1], target[:1]))


def test_dice_ce_and_dice_bce_are_the_weighted_sums() -> None:
    logits, labels, maps = torch.randn(SHAPE), _labels(), _binary()
    ce, dice = MaskedCrossEntropyLoss()(logits, labels), SoftDiceLoss("softmax", do_bg=False)(logits, labels)
    torch.testing.assert_close(DiceCELoss(weight_ce=0.3, weight_dice=2.0)(logits, labels), 0.3 * ce + 2.0 * dice)
    bce, sdice = MaskedBCEWithLogitsLoss()(logits, maps), SoftDiceLoss()(logits, maps)
    torch.testing.assert_close(DiceBCELoss(weight_ce=1.5, weight_dice=0.5)(logits, maps), 1.5 * bce + 0.5 * sdice)


def test_focal_reduces_to_bce_and_matches_hand_values() -> None:
    logits, target = torch.randn(SHAPE), torch.rand(SHAPE)
    torch.testing.assert_close(
        MaskedFocalLoss(gamma=0.0, alpha=None)(logits, target), F.binary_cross_entropy_with_logits(logits, target)
    )
    # z = 0, y = 1: p_t = 0.5, BCE = ln 2 → (0.5)^2·ln 2, times α = 0.25
    zero, one = torch.zeros(1, 1, 1, 1), torch.ones(1, 1, 1, 1)
    torch.testing.assert_close(MaskedFocalLoss(gamma=2.0)(zero, one), torch.tensor(0.25 * math.log(2)))
    torch.testing.assert_close(MaskedFocalLoss(gamma=2.0, alpha=0.25)(zero, one), torch.tensor(0.0625 * math.log(2)))
    torch.testing.assert_close(
        MaskedFocalLoss(gamma=2.0, alpha=0.25)(zero, 1 - one), torch.tensor(0.75 * 0.25 * math.log(2))
    )


@pytest.mark.parametrize(
    ("loss", "reference"),
    [
        (MaskedMSELoss(), F.mse_loss),
        (MaskedL1Loss(), F.l1_loss),
        (MaskedSmoothL1Loss(beta=0.5), lambda a, b: F.smooth_l1_loss(a, b, beta=0.5)),
    ],
)
def test_regression_losses_match_torch_and_honour_ignore_index(loss: torch.nn.Module, reference: Callable) -> None:
    prediction, target = torch.randn(SHAPE), torch.randn(SHAPE)
    torch.testing.assert_close(loss(prediction, target), reference(prediction, target))
    ignored = target.clone()
    ignored[0, 1] = -100.0
    loss.ignore_index = -100.0
    keep = ignored != -100.0
    torch.testing.assert_close(loss(prediction, ignored), reference(prediction[keep], target[keep]))


def test_signed_distance_truncation_hand_values() -> None:
    loss = SignedDistanceLoss(rho=6.0, beta=1.0)

    def value(prediction: float, target: float) -> float:
        return float(loss(torch.full((1, 1, 1, 1), prediction), torch.full((1, 1, 1, 1), target)))

    assert value(8.0, 10.0) == 0.0  # both beyond +ρ
    assert value(-50.0, -7.0) == 0.0  # both beyond −ρ
    assert value(3.0, 10.0) == pytest.approx(2.5)  # r = 3 − 6 = −3 → |r| − β/2
    assert value(20.0, -10.0) == pytest.approx(25.5)  # wrong side: r = 20 − (−6) = 26
    assert value(1.5, 1.0) == pytest.approx(0.125)  # r = 0.5 → r²/2
    assert value(2.0, 2.0) == 0.0


def test_eikonal_term_is_zero_for_a_distance_field_and_one_for_twice_it() -> None:
    x = torch.arange(8.0).reshape(1, 1, 1, 1, 8).expand(1, 1, 4, 5, 8).contiguous()
    loss = SignedDistanceLoss(rho=100.0, eikonal=True, eikonal_weight=0.5)
    assert float(loss(x, x)) == pytest.approx(0.0, abs=1e-5)
    assert float(loss(2 * x, 2 * x)) == pytest.approx(0.5 * 1.0)
    anisotropic = SignedDistanceLoss(rho=100.0, eikonal=True, eikonal_weight=1.0, spacing=(1.0, 1.0, 2.0))
    assert float(anisotropic(2 * x, 2 * x)) == pytest.approx(0.0, abs=1e-5)  # 2 per voxel of size 2


def test_cosine_similarity_values() -> None:
    vectors = torch.randn(SHAPE)
    loss = CosineSimilarityLoss(dim=1)
    assert float(loss(vectors, vectors)) == pytest.approx(0.0, abs=1e-6)
    assert float(loss(-vectors, vectors)) == pytest.approx(2.0)
    assert float(CosineSimilarityLoss(sign_invariant=True)(-vectors, vectors)) == pytest.approx(0.0, abs=1e-6)
    torch.testing.assert_close(
        loss(3 * vectors.roll(1, 2), vectors), 1 - F.cosine_similarity(vectors.roll(1, 2), vectors).mean()
    )
    target = vectors.clone()
    target[:, :, 0] = 0.0  # zero-norm target voxels are invalid
    torch.testing.assert_close(loss(-vectors, target), torch.tensor(2.0))
    with pytest.raises(ValueError, match="dim"):
        CosineSimilarityLoss(dim=2)


def test_normal_smoothness_is_zero_for_constant_normals_and_weighted_by_the_source() -> None:
    constant = torch.tensor([0.0, 0.6, 0.8]).reshape(1, 3, 1, 1, 1).expand(1, 3, 6, 7, 8).contiguous()
    loss = NormalSmoothnessLoss(sigma=1.0, q=2.0)
    assert loss.uses_source_prediction
    assert float(loss(3 * constant, None)) == pytest.approx(0.0, abs=1e-8)
    flipped = constant.clone()
    flipped[..., 4:] *= -1  # a sign flip half-way along x: rough at the seam only
    rough = float(loss(flipped, None))
    assert rough > 0.01
    source = torch.full((1, 1, 6, 7, 8), -30.0)  # foreground probability ≈ 0 at the seam ...
    source[..., :1] = 30.0  # ... and 1 beyond the kernel radius 3σ from it
    assert float(loss(flipped, None, source_pred=source)) < 1e-6 < rough


def test_half_precision_prediction_is_computed_in_float32() -> None:
    logits, target = torch.randn(SHAPE), _binary()
    value = MaskedBCEWithLogitsLoss()(logits.bfloat16(), target)
    assert value.dtype == torch.float32
    torch.testing.assert_close(value, F.binary_cross_entropy_with_logits(logits.bfloat16().float(), target))


# ------------------------------------------------------------------------------------------------- masking


@pytest.mark.parametrize("name", sorted(CASES))
def test_masked_voxels_change_neither_value_nor_gradient(name: str) -> None:
    make_loss, make_target, garbage = CASES[name]
    loss = make_loss()
    prediction, target, mask = torch.randn(SHAPE), make_target(), _mask()
    clean = prediction.clone().requires_grad_(True)
    reference = loss(clean, target, mask)
    reference.backward()
    dirty = _with_garbage(prediction, mask, math.nan).requires_grad_(True)
    value = loss(dirty, _with_garbage(target, mask, garbage), mask)
    value.backward()
    assert torch.isfinite(value)
    torch.testing.assert_close(value, reference)
    assert dirty.grad is not None and clean.grad is not None
    masked_out = ~torch.broadcast_to(mask, SHAPE)
    assert torch.all(dirty.grad[masked_out] == 0)
    torch.testing.assert_close(dirty.grad, clean.grad)
    assert clean.grad.abs().sum() > 0


@pytest.mark.parametrize("name", sorted(CASES))
def test_empty_mask_gives_zero_with_zero_gradient(name: str) -> None:
    make_loss, make_target, garbage = CASES[name]
    mask = torch.zeros(SHAPE[0], 1, *SHAPE[2:])
    prediction = torch.full(SHAPE, math.nan).requires_grad_(True)
    value = make_loss()(prediction, _with_garbage(make_target(), mask.bool(), garbage), mask)
    value.backward()
    assert float(value.detach()) == 0.0
    assert prediction.grad is not None and torch.all(prediction.grad == 0)


def test_mask_shape_errors() -> None:
    with pytest.raises(ValueError, match="broadcast"):
        MaskedMSELoss()(torch.zeros(SHAPE), torch.zeros(SHAPE), torch.ones(2, 1, 4, 6))
    with pytest.raises(ValueError, match="target"):
        MaskedMSELoss()(torch.zeros(SHAPE), torch.zeros(2, 3, 5, 7))


# ---------------------------------------------------------------------------------------------------- registry


@pytest.mark.parametrize(
    ("name", "cls"),
    [
        ("SoftDiceLoss", SoftDiceLoss),
        ("dice", SoftDiceLoss),
        ("BCEWithLogitsLoss", MaskedBCEWithLogitsLoss),
        ("bce", MaskedBCEWithLogitsLoss),
        ("CrossEntropyLoss", MaskedCrossEntropyLoss),
        ("ce", MaskedCrossEntropyLoss),
        ("DC_and_CE_loss", DiceCELoss),
        ("dice_ce", DiceCELoss),
        ("DiceBCELoss", DiceBCELoss),
        ("focal", MaskedFocalLoss),
        ("MaskedMSELoss", MaskedMSELoss),
        ("mse", MaskedMSELoss),
        ("l1", MaskedL1Loss),
        ("WeightedSmoothL1Loss", MaskedSmoothL1Loss),
        ("smooth-l1", MaskedSmoothL1Loss),
        ("SignedDistanceLoss", SignedDistanceLoss),
        ("CosineSimilarityLoss", CosineSimilarityLoss),
        ("NormalSmoothnessLoss", NormalSmoothnessLoss),
    ],
)
def test_registry_names_and_aliases(name: str, cls: type) -> None:
    assert type(build_loss(name)) is cls


def test_registry_passes_kwargs_and_rejects_unknown_names() -> None:
    sdt = build_loss("SignedDistanceLoss", rho=6, beta=1, eikonal=True)
    assert isinstance(sdt, SignedDistanceLoss) and sdt.rho == 6.0 and sdt.eikonal
    assert build_loss("MaskedMSELoss", ignore_index=-100).ignore_index == -100
    with pytest.raises(ValueError, match="SoftDiceLoss") as info:
        build_loss("DiceLossTypo")
    assert all(canonical in str(info.value) for canonical in loss_names())
    assert [n for n in loss_names() if build_loss(n).uses_source_prediction] == ["NormalSmoothnessLoss"]


# ---------------------------------------------------------------------------------------- deep supervision


def test_downsample_kinds() -> None:
    labels = torch.tensor([[0, 0, 2, 2], [0, 0, 2, 2], [1, 1, 3, 3], [1, 1, 3, 3]]).reshape(1, 1, 4, 4)
    torch.testing.assert_close(
        downsample_for_deep_supervision(labels, (2, 2), "label"), torch.tensor([[0, 2], [1, 3]]).reshape(1, 1, 2, 2)
    )
    mask = torch.rand(1, 1, 8, 6, 4) > 0.5
    small = downsample_for_deep_supervision(mask, (4, 3, 2), "mask")
    assert small.dtype == torch.bool and small.shape == (1, 1, 4, 3, 2)
    values = torch.randn(1, 2, 4, 6)
    torch.testing.assert_close(downsample_for_deep_supervision(values, (2, 3), "regression"), F.avg_pool2d(values, 2))
    with pytest.raises(ValueError, match="kind"):
        downsample_for_deep_supervision(values, (2, 3), "cubic")  # type: ignore[arg-type]


def test_downsample_target_and_mask_keeps_garbage_out() -> None:
    target = torch.arange(16.0).reshape(1, 1, 4, 4)
    mask = torch.ones(1, 1, 4, 4, dtype=torch.bool)
    mask[0, 0, 0, 0] = False
    target[0, 0, 0, 0] = math.nan
    small, small_mask = downsample_target_and_mask(target, mask, (2, 2), "regression")
    assert small_mask is not None
    assert small_mask.tolist() == [[[[False, True], [True, True]]]]
    assert torch.isfinite(small).all()
    torch.testing.assert_close(small[0, 0, 1, 1], torch.tensor((10 + 11 + 14 + 15) / 4))
    # a size that does not divide: valid only where every voxel with a positive weight was valid
    odd_valid = torch.ones(1, 1, 5, 5, dtype=torch.bool)
    odd_valid[0, 0, 0, 0] = False
    odd, odd_mask = downsample_target_and_mask(torch.ones(1, 1, 5, 5), odd_valid, (3, 3), "regression")
    assert odd_mask is not None and not odd_mask[0, 0, 0, 0] and odd_mask[0, 0, 2, 2]
    torch.testing.assert_close(odd[odd_mask], torch.ones(int(odd_mask.sum())))
    labels, label_mask = downsample_target_and_mask(
        torch.ones(1, 1, 4, 4, dtype=torch.long), mask.float(), (2, 2), "label"
    )
    assert labels.dtype == torch.long and label_mask is not None and label_mask.dtype == torch.bool


def test_deep_supervision_loss_is_the_weighted_sum_and_skips_zero_weights() -> None:
    assert deep_supervision_weights(3) == pytest.approx([2 / 3, 1 / 3, 0.0])
    assert deep_supervision_weights(1) == [1.0]
    loss = MaskedMSELoss()
    predictions = [torch.randn(1, 1, 8, 8), torch.randn(1, 1, 4, 4), torch.randn(1, 1, 2, 2)]
    targets = [torch.randn(1, 1, 8, 8), torch.randn(1, 1, 4, 4), None]  # the skipped output is never read
    masks = [None, torch.rand(1, 1, 4, 4) > 0.5, None]
    wrapped = DeepSupervisionLoss(loss, deep_supervision_weights(3))
    expected = 2 / 3 * loss(predictions[0], targets[0]) + 1 / 3 * loss(predictions[1], targets[1], masks[1])
    torch.testing.assert_close(wrapped(predictions, targets, masks), expected)
    smooth = DeepSupervisionLoss(NormalSmoothnessLoss(sigma=1.0), [1.0, 0.5])
    assert smooth.uses_source_prediction
    vectors = [torch.randn(1, 3, 4, 4), torch.randn(1, 3, 2, 2)]
    sources = [torch.randn(1, 1, 4, 4), torch.randn(1, 1, 2, 2)]
    assert torch.isfinite(smooth(vectors, [None, None], source_pred=sources))
    with pytest.raises(ValueError, match="weights"):
        DeepSupervisionLoss(loss, [0.0, 0.0])
