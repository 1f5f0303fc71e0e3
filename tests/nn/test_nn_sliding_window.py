"""Sliding-window inference: nnU-Net's Gaussian and step rule, exactness against a full forward pass, mirroring,
and the chunked variant equal to the in-memory one."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter
from torch import nn

from medtrain.nn.sliding_window import (
    default_chunk_size,
    gaussian_importance_map,
    iter_chunks,
    sliding_window_inference,
    sliding_window_inference_chunked,
    sliding_window_starts,
)


def nnunet_gaussian(patch_size, sigma_scale=1 / 8, value_scaling_factor=10.0):
    """nnU-Net's compute_gaussian, written with scipy as nnU-Net does."""
    impulse = np.zeros(patch_size)
    impulse[tuple(s // 2 for s in patch_size)] = 1
    weight = gaussian_filter(impulse, [s * sigma_scale for s in patch_size], 0, mode="constant", cval=0)
    weight = weight / weight.max() * value_scaling_factor
    weight[weight == 0] = weight[weight != 0].min()
    return weight


@pytest.mark.parametrize(
    ("patch_size", "sigma_scale"), [((8,), 1 / 8), ((16, 12), 1 / 8), ((7, 9, 11), 1 / 8), ((32,), 1 / 32)]
)
def test_gaussian_matches_nnunet(patch_size, sigma_scale):
    ours = gaussian_importance_map(patch_size, sigma_scale=sigma_scale, dtype=torch.float64).numpy()
    np.testing.assert_allclose(ours, nnunet_gaussian(patch_size, sigma_scale), rtol=1e-12, atol=1e-15)


def test_gaussian_hand_values():
    # patch 8, σ = 1: centre 4, r = int(4.5) = 4 → offsets −4..3 all kept; g = 10 · exp(−d²/2).
    g = gaussian_importance_map((8,), dtype=torch.float64)
    expected = [10 * np.exp(-(d**2) / 2) for d in range(-4, 4)]
    np.testing.assert_allclose(g.numpy(), expected, rtol=1e-12)
    assert g.argmax() == 4 and g.max() == 10.0
    # patch 32 with σ = 32/32 = 1: offsets beyond r = 4 are clipped to the smallest non-zero value 10·exp(−8).
    g = gaussian_importance_map((32,), sigma_scale=1 / 32, dtype=torch.float64)
    assert torch.all(g[:12] == 10 * np.exp(-8)) and torch.all(g[21:] == 10 * np.exp(-8))
    # 2-D: symmetric about the centre (odd size) and separable.
    g2 = gaussian_importance_map((9, 9), dtype=torch.float64)
    assert torch.equal(g2, g2.flip(0)) and torch.equal(g2, g2.T)
    torch.testing.assert_close(g2, g2[4][None, :] * g2[:, 4][:, None] / 10)


@pytest.mark.parametrize(
    ("image", "patch", "overlap", "expected"),
    [
        # nnU-Net's own comment: image 110, patch 64, step 0.5 → 0, 23, 46
        ((110,), (64,), 0.5, [[0, 23, 46]]),
        ((64,), (64,), 0.5, [[0]]),
        ((65,), (64,), 0.5, [[0, 1]]),
        ((128,), (64,), 0.5, [[0, 32, 64]]),
        ((100,), (40,), 0.0, [[0, 30, 60]]),  # n = ceil(60/40)+1 = 3, step 30
        ((100,), (40,), 0.75, [[0, 10, 20, 30, 40, 50, 60]]),  # n = ceil(60/10)+1 = 7, step 10
        ((13,), (8,), 0.5, [[0, 2, 5]]),  # n = ceil(5/4)+1 = 3, step 2.5: round(2.5) = 2 (half to even, numpy)
        ((50, 30), (20, 30), 0.5, [[0, 10, 20, 30], [0]]),
        ((37, 37, 21), (16, 16, 16), 0.5, [[0, 7, 14, 21], [0, 7, 14, 21], [0, 5]]),
    ],
)
def test_starts_follow_nnunet_rule(image, patch, overlap, expected):
    starts = sliding_window_starts(image, patch, overlap)
    assert starts == expected
    for axis, size, p in zip(starts, image, patch, strict=True):
        assert axis[0] == 0 and axis[-1] == size - p
        assert all(0 < b - a <= p * (1 - overlap) + 1 for a, b in itertools.pairwise(axis))  # +1: rounding


def test_starts_reject_small_image():
    with pytest.raises(ValueError):
        sliding_window_starts((10,), (16,), 0.5)


def pointwise_net(in_channels=2, seed=0):
    torch.manual_seed(seed)
    seg, aux = nn.Conv3d(in_channels, 3, 1), nn.Conv3d(in_channels, 1, 1)
    return (lambda x: {"seg": seg(x), "aux": aux(x)}), (lambda x: {"seg": seg(x[None])[0], "aux": aux(x[None])[0]})


@pytest.mark.parametrize("weighting", ["gaussian", "constant"])
@pytest.mark.parametrize("shape", [(20, 23, 17), (10, 30, 12)])  # the second is smaller than the patch along z
def test_pointwise_network_reproduces_full_forward(shape, weighting):
    net, full = pointwise_net()
    image = torch.randn(2, *shape)
    out = sliding_window_inference(net, image, (12, 12, 12), overlap=0.5, batch_size=3, weighting=weighting)
    expected = full(image)
    assert set(out) == {"seg", "aux"} and out["seg"].shape == (3, *shape) and out["aux"].shape == (1, *shape)
    for key in expected:
        torch.testing.assert_close(out[key], expected[key], rtol=1e-5, atol=1e-5)


def test_convolution_centre_matches_full_forward_2d():
    torch.manual_seed(0)
    conv = nn.Conv2d(1, 2, 3, padding=1)
    image = torch.randn(1, 40, 44)
    # A 3×3 conv differs from the full pass only on the one-voxel rim of each window (zero padding there), which
    # the Gaussian weights down: the result is close but not exact. A 1×1 conv is exact.
    out = sliding_window_inference(lambda x: {"y": conv(x)}, image, (16, 16), overlap=0.5)["y"]
    expected = conv(image[None])[0].detach()
    assert out.shape == expected.shape
    inner = (slice(None), slice(1, -1), slice(1, -1))
    error = (out[inner] - expected[inner]).abs().mean() / expected.abs().mean()
    assert error < 0.05
    pointwise = nn.Conv2d(1, 2, 1)
    out = sliding_window_inference(lambda x: {"y": pointwise(x)}, image, (16, 16), overlap=0.5)["y"]
    torch.testing.assert_close(out, pointwise(image[None])[0].detach(), rtol=1e-5, atol=1e-5)


def test_mirroring_of_flip_equivariant_net_changes_nothing():
    torch.manual_seed(0)
    net, _ = pointwise_net(in_channels=1)
    image = torch.randn(1, 16, 18, 20)
    plain = sliding_window_inference(net, image, (8, 8, 8))
    mirrored = sliding_window_inference(net, image, (8, 8, 8), mirror_axes=(0, 1, 2))
    for key in plain:
        torch.testing.assert_close(mirrored[key], plain[key], rtol=1e-5, atol=1e-5)


def test_mirroring_averages_flipped_predictions():
    # A net that is not flip-equivariant: logit = x-coordinate of the voxel inside the patch (0..P-1).
    # Mirroring x averages the ramp with its flip: (i + (P-1-i)) / 2 = (P-1)/2 everywhere.
    def ramp(x):
        return {"y": torch.arange(x.shape[-1], dtype=torch.float32).expand(x.shape[0], 1, *x.shape[2:]).clone()}

    out = sliding_window_inference(ramp, torch.zeros(1, 8, 8), (8, 8), mirror_axes=(1,))["y"]
    torch.testing.assert_close(out, torch.full((1, 8, 8), 3.5))
    out = sliding_window_inference(ramp, torch.zeros(1, 8, 8), (8, 8), mirror_axes=(0,))["y"]
    torch.testing.assert_close(out, torch.arange(8.0).expand(1, 8, 8))


def test_iter_chunks_tile_the_volume():
    chunks = list(iter_chunks((5, 7), (2, 4)))
    assert chunks[0] == ((0, 0), (2, 4)) and chunks[1] == ((0, 4), (2, 3)) and chunks[-1] == ((4, 4), (1, 3))
    covered = np.zeros((5, 7), int)
    for (z, y), (dz, dy) in chunks:
        covered[z : z + dz, y : y + dy] += 1
    assert (covered == 1).all()


@pytest.mark.parametrize(
    ("shape", "patch", "chunk"),
    [((21, 26, 19), (8, 8, 8), (10, 12, 7)), ((6, 30, 25), (8, 8, 8), (6, 16, 16)), ((33, 29), (10, 12), (9, 14))],
)
def test_chunked_equals_full(shape, patch, chunk):
    torch.manual_seed(1)
    conv = (nn.Conv3d if len(shape) == 3 else nn.Conv2d)(2, 2, 3, padding=1)

    def net(x):
        return {"a": conv(x), "b": conv(x)[:, :1] * 2}

    image = torch.randn(2, *shape)
    full = sliding_window_inference(net, image, patch, overlap=0.5, batch_size=2, mirror_axes=(0,))
    written = {key: np.full(value.shape, np.nan, np.float32) for key, value in full.items()}
    reads = []

    def read_region(starts, sizes):
        reads.append((starts, sizes))
        return image[(slice(None), *(slice(s, s + n) for s, n in zip(starts, sizes, strict=True)))].numpy()

    def write_chunk(starts, sizes, arrays):
        for key, array in arrays.items():
            assert array.dtype == np.float32 and array.shape[1:] == sizes
            written[key][(slice(None), *(slice(s, s + n) for s, n in zip(starts, sizes, strict=True)))] = array

    count = sliding_window_inference_chunked(
        net, read_region, shape, patch, chunk_size=chunk, write_chunk=write_chunk, batch_size=2, mirror_axes=(0,)
    )
    assert count == len(list(iter_chunks(shape, chunk)))
    for key in full:
        np.testing.assert_allclose(written[key], full[key].numpy(), rtol=1e-5, atol=1e-5)
    for starts, sizes in reads:  # reads stay inside the volume
        assert all(s >= 0 and s + n <= v for s, n, v in zip(starts, sizes, shape, strict=True))


def test_chunked_skips_done_chunks():
    net, _ = pointwise_net(in_channels=1)
    image = np.random.default_rng(0).normal(size=(1, 16, 16, 16)).astype(np.float32)
    written = []
    count = sliding_window_inference_chunked(
        net,
        lambda starts, sizes: image[(slice(None), *(slice(s, s + n) for s, n in zip(starts, sizes, strict=True)))],
        (16, 16, 16),
        (8, 8, 8),
        chunk_size=(8, 16, 16),
        write_chunk=lambda starts, sizes, arrays: written.append(starts),
        done=lambda starts: starts == (0, 0, 0),
    )
    assert count == 1 and written == [(8, 0, 0)]


def test_default_chunk_is_the_whole_volume_up_to_128_cubed_voxels_else_four_patches_per_axis() -> None:
    assert default_chunk_size((100, 100, 100), (32, 32, 32)) == (100, 100, 100)
    assert default_chunk_size((256, 256, 256), (32, 64, 64)) == (128, 256, 256)
    assert default_chunk_size((4000, 3000), (512, 512)) == (2048, 2048)


@pytest.mark.parametrize("chunked", [False, True])
def test_a_volume_smaller_than_the_patch_sits_centred_in_its_zero_padding(chunked):
    # The network adds each voxel's position in its window (0 … 11): the output shows where the volume sat in the
    # padded window. 7 voxels in a 12-voxel window: 2 zeros before, 3 after (nnU-Net's pad_nd_image), so the
    # volume's voxels are at window positions 2 … 8.
    def net(x):
        return {"y": x + torch.arange(12, dtype=x.dtype).view(1, 1, 1, 12)}

    image = torch.randn(1, 16, 7)
    if chunked:
        parts = {}
        sliding_window_inference_chunked(
            net, lambda starts, sizes: image[:, starts[0] : starts[0] + sizes[0], starts[1] : starts[1] + sizes[1]],
            (16, 7), (8, 12), chunk_size=(8, 7), write_chunk=lambda starts, sizes, out: parts.update({starts: out}),
            weighting="constant",
        )  # fmt: skip
        out = torch.cat([torch.from_numpy(parts[(0, 0)]["y"]), torch.from_numpy(parts[(8, 0)]["y"])], dim=1)
    else:
        out = sliding_window_inference(net, image, (8, 12), weighting="constant")["y"]
    torch.testing.assert_close(out, image + torch.arange(2, 9, dtype=image.dtype), rtol=1e-5, atol=1e-5)
