"""Training augmentation: shapes and keys, labels stay in their value set, image and labels move together, padded
mask voxels are invalid, intensity transforms leave labels alone, determinism by seed."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from medtrain.recipes.volume_seg.augment import (
    NNUNET_PROBABILITIES,
    build_train_augmentation,
    rotation_scale_matrix,
)

OFF = dict.fromkeys(NNUNET_PROBABILITIES, 0.0)
SHAPES = {2: (40, 36), 3: (20, 24, 22)}


def sample(spatial_dims, seed=0):
    rng = np.random.default_rng(seed)
    shape = SHAPES[spatial_dims]
    return {
        "image": rng.normal(size=(2, *shape)).astype(np.float32),
        "classes": rng.integers(0, 4, size=(1, *shape)).astype(np.uint8),
        "ink": (rng.random((1, *shape)) < 0.1).astype(np.uint8),
        "mask": np.ones((1, *shape), np.uint16)[:, ::-1],  # a negatively strided view of another dtype
        "name": "vol_000",
    }


def build(spatial_dims, seed=0, **kwargs):
    return build_train_augmentation(
        spatial_dims=spatial_dims, label_keys=("classes", "ink"), mask_keys=("mask",), seed=seed, **kwargs
    )


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("elastic", [False, True])
def test_keys_shapes_types_and_label_values(spatial_dims, elastic):
    probabilities = dict.fromkeys(NNUNET_PROBABILITIES, 1.0)  # every step fires
    augment = build(spatial_dims, elastic=elastic, probabilities=probabilities)
    data = sample(spatial_dims)
    for _ in range(2):
        out = augment(data)
        assert set(out) == set(data) and out["name"] == "vol_000"
        for key in ("image", "classes", "ink", "mask"):
            value = out[key]
            assert type(value) is torch.Tensor and value.dtype == torch.float32
            assert tuple(value.shape) == data[key].shape
        assert set(out["classes"].unique().tolist()) <= {0, 1, 2, 3}
        assert set(out["ink"].unique().tolist()) <= {0, 1}
        assert set(out["mask"].unique().tolist()) <= {0, 1}


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_image_and_label_move_together(spatial_dims):
    shape = SHAPES[spatial_dims]
    label = np.zeros((1, *shape), np.uint8)
    label[(slice(None), *(slice(n // 2 - 5, n // 2 + 3) for n in shape))] = 1  # off-centre cube
    image = label.astype(np.float32) * 10
    augment = build_train_augmentation(
        spatial_dims=spatial_dims, label_keys=("label",), probabilities={**OFF, "rotation": 1.0, "scale": 1.0},
        rotation_degrees=40, mirror_axes=(), seed=1,
    )  # fmt: skip
    for _ in range(3):
        out = augment({"image": image, "label": label})
        moved, bright = out["label"] > 0.5, out["image"] > 5
        assert not torch.equal(moved, torch.as_tensor(label > 0)), "the transform must move the cube"
        dice = 2 * (moved & bright).sum() / (moved.sum() + bright.sum())
        assert dice > 0.85


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_padded_mask_voxels_are_invalid(spatial_dims):
    shape = SHAPES[spatial_dims]
    # Zooming out by 1.4 maps every output corner (offset o from the centre) to |1.4 · R o| > |o|: outside the
    # input box whatever the rotation, so all corners are padding.
    augment = build_train_augmentation(
        spatial_dims=spatial_dims, mask_keys=("mask",), probabilities={**OFF, "rotation": 1.0, "scale": 1.0},
        rotation_degrees=45, scale_range=(1.4, 1.4), mirror_axes=(), seed=0,
    )  # fmt: skip
    for _ in range(3):
        out = augment({"image": np.ones((1, *shape), np.float32), "mask": np.ones((1, *shape), np.uint8)})
        mask = out["mask"][0]
        corners = [mask[tuple(-1 if bit else 0 for bit in c)] for c in np.ndindex(*(2,) * spatial_dims)]
        assert all(value == 0 for value in corners)
        assert mask[tuple(n // 2 for n in shape)] == 1 and 0.2 < mask.mean() < 0.9
        # the image is zero-padded the same way (bilinear vs nearest may differ on the rim only)
        assert ((out["image"][0] > 0.5) != (mask > 0.5)).float().mean() < 0.01


def test_rotation_matrix_hand_values():
    # 2-D, 90°: R = [[cos, −sin], [sin, cos]]; output offset (y, x) = (0, 1) reads the input at s · (−1, 0).
    m = rotation_scale_matrix([math.pi / 2], 2.0, 2)
    np.testing.assert_allclose(m @ [0, 1], [-2, 0], atol=1e-12)
    # 3-D, 90° about z (axis 0) rotates the (y, x) plane and keeps z.
    m = rotation_scale_matrix([math.pi / 2, 0, 0], None, 3)
    np.testing.assert_allclose(m @ [1, 0, 0], [1, 0, 0], atol=1e-12)
    np.testing.assert_allclose(m @ [0, 0, 1], [0, -1, 0], atol=1e-12)


def test_ninety_degree_rotation_equals_rot90():
    image = torch.arange(16.0).reshape(1, 4, 4)
    augment = build_train_augmentation(
        spatial_dims=2, label_keys=("label",), probabilities={**OFF, "rotation": 1.0}, rotation_degrees=0,
        mirror_axes=(),
    )  # fmt: skip
    from medtrain.recipes.volume_seg.augment import resample_affine

    matrix = rotation_scale_matrix([math.pi / 2], None, 2)
    rotated, nearest = resample_affine([image, image.clone()], matrix, ["bilinear", "nearest"])
    # offset o = (y − 1.5, x − 1.5) reads R o = (1.5 − x, y − 1.5): out[y, x] = in[3 − x, y]
    expected = torch.stack([torch.stack([image[0, 3 - x, y] for x in range(4)]) for y in range(4)])[None]
    torch.testing.assert_close(rotated, expected, atol=1e-4, rtol=0)
    torch.testing.assert_close(nearest, expected)
    out = augment({"image": image, "label": image})  # angle 0: identity resampling
    torch.testing.assert_close(out["label"], image)


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_intensity_transforms_leave_labels_alone(spatial_dims):
    intensity = ("noise", "blur", "brightness", "contrast", "low_resolution", "gamma_inverted", "gamma")
    augment = build(spatial_dims, probabilities={**OFF, **dict.fromkeys(intensity, 1.0)})
    data = sample(spatial_dims)
    out = augment(data)
    for key in ("classes", "ink", "mask"):
        np.testing.assert_array_equal(out[key].numpy(), data[key].astype(np.float32))
    assert not np.allclose(out["image"].numpy(), data["image"])


def test_mirroring_flips_every_key_together():
    augment = build(3, probabilities={**OFF, "mirror": 1.0}, mirror_axes=(0, 2))
    data = sample(3)
    out = augment(data)
    for key in ("image", "classes", "ink", "mask"):
        np.testing.assert_array_equal(out[key].numpy(), np.flip(data[key], axis=(1, 3)).astype(np.float32))


def test_deterministic_by_seed_and_reseed():
    data = sample(3)
    first = [build(3, seed=5, probabilities=dict.fromkeys(NNUNET_PROBABILITIES, 0.5))(data) for _ in range(2)]
    for key in ("image", "classes", "mask"):
        torch.testing.assert_close(first[0][key], first[1][key])
    augment = build(3, seed=5, probabilities=dict.fromkeys(NNUNET_PROBABILITIES, 0.5))
    runs = []
    for _ in range(2):
        augment.reseed(7)
        runs.append([augment(data)["image"] for _ in range(3)])
    for a, b in zip(*runs, strict=True):
        torch.testing.assert_close(a, b)
    assert not all(torch.equal(a, b) for a, b in zip(runs[0], runs[0][1:], strict=False))


def test_invalid_arguments():
    with pytest.raises(ValueError, match="unknown probabilities"):
        build_train_augmentation(spatial_dims=3, probabilities={"rotate": 0.5})
    with pytest.raises(ValueError, match="rotation_degrees"):
        build_train_augmentation(spatial_dims=3, rotation_degrees=(10, 10))
    with pytest.raises(ValueError, match="noise_std"):
        build_train_augmentation(spatial_dims=2, noise_std=(0.05, 0.1))
