"""cardiac-guidance augmentation: neutral settings change nothing, gain and gamma follow their log-uniform laws on a
constant image, shifts move a bright pixel by at most ``max_shift`` with zero fill, outputs stay in [0, 1], and the
draws come from torch's global generator (reproducible under ``torch.manual_seed``)."""

from __future__ import annotations

import math

import pytest
import torch

from medtrain.recipes.cardiac_guidance.augment import LabelSafeAugment

NEUTRAL = {"gain": (1.0, 1.0), "gamma": (1.0, 1.0), "speckle": 0.0, "noise_std": 0.0, "max_shift": 0}


def batch(size: int = 8, height: int = 16, width: int = 12, *, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.rand(size, 1, height, width, generator=torch.Generator().manual_seed(0)).to(dtype)


def test_neutral_parameters_return_the_input_exactly() -> None:
    images = batch()
    assert torch.equal(LabelSafeAugment(probability=1.0, **NEUTRAL)(images), images)
    assert torch.equal(LabelSafeAugment(probability=0.0)(images), images)  # every transform enabled, never chosen


@pytest.mark.parametrize("switch", ["gain", "gamma", "speckle", "noise_std", "max_shift"])
def test_one_transform_at_a_time_keeps_shape_dtype_and_range(switch: str) -> None:
    settings = dict(NEUTRAL)
    settings[switch] = {"gain": (0.5, 3.0), "gamma": (0.5, 2.0), "speckle": 0.8, "noise_std": 0.3, "max_shift": 3}[
        switch
    ]
    for dtype in (torch.float32, torch.float64):
        images = batch(dtype=dtype)
        out = LabelSafeAugment(probability=1.0, **settings)(images)
        assert out.shape == images.shape and out.dtype == dtype and out.device == images.device
        assert out.min() >= 0.0 and out.max() <= 1.0
        assert not torch.equal(out, images)


def test_defaults_keep_range_and_are_reproducible_under_manual_seed() -> None:
    augment = LabelSafeAugment()
    images = batch(32)
    torch.manual_seed(123)
    first = augment(images)
    torch.manual_seed(123)
    second = augment(images)
    third = augment(images)
    assert torch.equal(first, second) and not torch.equal(second, third)
    assert first.min() >= 0.0 and first.max() <= 1.0


def test_gain_is_log_uniform_per_sample() -> None:
    """On a constant image 0.25 with probability 1, every sample is 0.25·k with log k ~ U(log 0.5, log 2): its
    log-ratio has mean 0 and variance (2 log 2)² / 12, and the whole sample is scaled by one factor."""
    torch.manual_seed(0)
    images = torch.full((4000, 1, 4, 4), 0.25, dtype=torch.float64)
    out = LabelSafeAugment(probability=1.0, **{**NEUTRAL, "gain": (0.5, 2.0)})(images)
    factors = out[:, 0, 0, 0] / 0.25
    assert torch.all(out == out[:, :, :1, :1])  # one factor per sample
    log_k = factors.log()
    assert log_k.min() >= math.log(0.5) - 1e-12 and log_k.max() <= math.log(2.0) + 1e-12
    assert abs(float(log_k.mean())) < 0.02
    assert float(log_k.var()) == pytest.approx((2 * math.log(2.0)) ** 2 / 12, rel=0.06)
    # E[k] for log-uniform on [a, b] is (b - a) / (log b - log a) = 1.5 / log 4
    assert float(factors.mean()) == pytest.approx(1.5 / math.log(4.0), rel=0.02)


def test_gamma_is_log_uniform_per_sample() -> None:
    """On a constant image 0.5: out = 0.5 ** g, so g = log(out) / log(0.5) with log g ~ U(log 0.8, log 1.25)."""
    torch.manual_seed(1)
    images = torch.full((4000, 1, 2, 2), 0.5, dtype=torch.float64)
    out = LabelSafeAugment(probability=1.0, **{**NEUTRAL, "gamma": (0.8, 1.25)})(images)
    g = out[:, 0, 0, 0].log() / math.log(0.5)
    assert g.min() >= 0.8 - 1e-9 and g.max() <= 1.25 + 1e-9
    assert abs(float(g.log().mean())) < 0.01  # log 0.8 = -log 1.25: symmetric about 0
    assert float(g.log().var()) == pytest.approx((2 * math.log(1.25)) ** 2 / 12, rel=0.06)


def test_probability_picks_about_that_share_of_samples() -> None:
    torch.manual_seed(2)
    images = torch.full((4000, 1, 2, 2), 0.5)
    out = LabelSafeAugment(probability=0.3, **{**NEUTRAL, "gain": (1.5, 1.5)})(images)
    changed = (out[:, 0, 0, 0] != 0.5).float().mean()
    assert float(changed) == pytest.approx(0.3, abs=0.03)
    assert torch.all((out == 0.5) | (out == 0.75))


def test_speckle_and_noise_moments() -> None:
    torch.manual_seed(3)
    images = torch.full((200, 1, 32, 32), 0.4, dtype=torch.float64)
    speckled = LabelSafeAugment(probability=1.0, **{**NEUTRAL, "speckle": 0.1})(images)
    ratio = speckled / 0.4  # 1 + 0.1 n, far from the clipping at 0
    assert float(ratio.mean()) == pytest.approx(1.0, abs=0.002)
    assert float(ratio.std()) == pytest.approx(0.1, rel=0.02)
    noisy = LabelSafeAugment(probability=1.0, **{**NEUTRAL, "noise_std": 0.05})(images)
    assert float((noisy - 0.4).mean()) == pytest.approx(0.0, abs=0.001)
    assert float((noisy - 0.4).std()) == pytest.approx(0.05, rel=0.02)


def test_shift_moves_a_bright_pixel_by_at_most_max_shift_and_fills_zeros() -> None:
    torch.manual_seed(4)
    size, max_shift = 256, 3
    images = torch.zeros(size, 1, 11, 13)
    images[:, 0, 5, 6] = 1.0
    out = LabelSafeAugment(probability=1.0, **{**NEUTRAL, "max_shift": max_shift})(images)
    assert torch.all(out.sum(dim=(1, 2, 3)) == 1.0)  # the pixel moved, nothing else appeared
    where = out[:, 0].flatten(1).argmax(dim=1)
    rows, cols = where // 13 - 5, where % 13 - 6
    assert rows.abs().max() == max_shift and cols.abs().max() == max_shift
    assert len(set(zip(rows.tolist(), cols.tolist(), strict=True))) == (2 * max_shift + 1) ** 2  # every offset

    # a full image shifted by (dy, dx): the uncovered border is exactly 0, the rest is the input moved
    full = torch.rand(64, 1, 9, 9) * 0.5 + 0.5
    moved = LabelSafeAugment(probability=1.0, **{**NEUTRAL, "max_shift": 2})(full)
    for source, target in zip(full, moved, strict=True):
        found = False
        for dy in range(-2, 3):
            for dx in range(-2, 3):
                expected = torch.zeros_like(source)
                expected[:, max(dy, 0) : 9 + min(dy, 0), max(dx, 0) : 9 + min(dx, 0)] = source[
                    :, max(-dy, 0) : 9 + min(-dy, 0), max(-dx, 0) : 9 + min(-dx, 0)
                ]
                found = found or torch.equal(target, expected)
        assert found


def test_bad_settings_and_inputs() -> None:
    for settings, message in [
        ({"probability": 1.5}, "probability must be in"),
        ({"gain": (1.2, 0.8)}, "gain must be a range"),
        ({"gamma": (0.0, 1.0)}, "gamma must be a range"),
        ({"speckle": -0.1}, "speckle and noise_std must be >= 0"),
        ({"max_shift": 1.5}, "max_shift must be a non-negative integer"),
    ]:
        with pytest.raises(ValueError, match=message):
            LabelSafeAugment(**settings)
    with pytest.raises(ValueError, match=r"expected images of shape \[B, 1, H, W\]"):
        LabelSafeAugment()(torch.zeros(2, 3, 4, 4))
    with pytest.raises(ValueError, match="expected floating-point images"):
        LabelSafeAugment()(torch.zeros(2, 1, 4, 4, dtype=torch.uint8))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_runs_on_the_images_device() -> None:
    images = batch().cuda()
    torch.manual_seed(5)
    out = LabelSafeAugment(probability=1.0)(images)
    assert out.device == images.device and out.shape == images.shape
