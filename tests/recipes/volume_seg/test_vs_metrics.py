"""volume-seg metrics: masked Dice and MAE against hand counts, and the bounded constant baseline."""

from __future__ import annotations

import math

import pytest
import torch

from medtrain.recipes.volume_seg.metrics import (
    ConstantBaseline,
    DiceAccumulator,
    MAEAccumulator,
    hard_prediction,
    label_classes,
)


def test_dice_counts_only_masked_voxels_over_every_update() -> None:
    label = torch.tensor([[[1, 1, 0, 0, 1, 0]]], dtype=torch.bool)
    prediction = torch.tensor([[[1, 0, 1, 0, 1, 1]]], dtype=torch.bool)
    mask = torch.tensor([[[1, 1, 1, 1, 1, 0]]], dtype=torch.float32)  # the last voxel (a false positive) is unknown
    dice = DiceAccumulator()
    dice.update(prediction, label, mask)
    dice.update(prediction[..., :2], label[..., :2], None)  # a second batch: TP 1, FN 1
    # TP 2 + 1, FP 1, FN 1 + 1 → 2·3 / (2·3 + 1 + 2)
    assert dice.dice() == pytest.approx(6 / 9)


def test_softmax_classes_without_background_and_an_absent_class_has_no_dice() -> None:
    logits = torch.zeros(1, 3, 4)
    logits[0, 1, :2] = 5  # class 1 at voxels 0-1, background elsewhere
    target = torch.tensor([[[1, 1, 0, 0]]])
    dice = DiceAccumulator()
    dice.update(hard_prediction(logits, "softmax"), label_classes(target, "softmax", 3), None)
    assert dice.per_class()[0] == 1.0 and math.isnan(dice.per_class()[1]) and dice.dice() == 1.0


def test_mae_over_valid_voxels_and_channels() -> None:
    mae = MAEAccumulator()
    mae.update(torch.tensor([[[1.0, 2.0, 9.0]]]), torch.tensor([[[0.0, 0.0, 0.0]]]), torch.tensor([[[1.0, 1.0, 0.0]]]))
    assert mae.mae() == pytest.approx(1.5)


def test_constant_baseline_is_exact_for_few_values_and_bounded_for_many() -> None:
    baseline = ConstantBaseline(limit=100)
    assert math.isnan(baseline.mae())
    baseline.update(torch.tensor([[[1.0, 2.0, 4.0, 100.0]]]), torch.tensor([[[1.0, 1.0, 1.0, 0.0]]]))
    assert baseline.mae() == pytest.approx((1 + 0 + 2) / 3)  # median 2 of the valid values 1, 2, 4
    values = torch.rand(1, 1, 20_000, generator=torch.Generator().manual_seed(0))
    for chunk in values.split(5_000, dim=-1):
        baseline.update(chunk, None)
    assert baseline.values.numel() == 100  # never more than the limit in memory
    assert baseline.mae() == pytest.approx(0.25, abs=0.05)  # U(0, 1): mean |v − 0.5| = 0.25
