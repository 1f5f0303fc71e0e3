"""Auxiliary targets against analytic shapes: a sphere (3-D) and a disc (2-D) — signed distance |p − c| − R, radial
normals, structure-tensor eigenvector radial, in-plane direction tangent — anisotropic spacing (a circle in physical
space), empty and one-class patches, the source's valid mask, channel counts and argument errors."""

from __future__ import annotations

import numpy as np
import pytest

from medtrain.recipes.volume_seg.aux_targets import AUX_KINDS, aux_channels, compute_aux_target

R = 9.0


def _ball(shape: tuple[int, ...], centre: tuple[float, ...], spacing: tuple[float, ...] | None = None):
    """Source ``[1, *shape]`` of ``|p − c| ≤ R`` in physical coordinates, plus ``|p − c|`` and the radial unit field."""
    spacing = spacing or (1.0,) * len(shape)
    grids = np.meshgrid(*[np.arange(n) * s for n, s in zip(shape, spacing, strict=True)], indexing="ij")
    offset = np.stack([g - c for g, c in zip(grids, centre, strict=True)])
    radius = np.sqrt((offset**2).sum(axis=0))
    radial = offset / np.maximum(radius, 1e-9)
    return (radius <= R)[None].astype(np.float32), radius, radial


SPHERE = _ball((24, 25, 26), (11.7, 12.2, 12.9))
DISC = _ball((28, 30), (13.6, 14.3))


@pytest.mark.parametrize("shape", [SPHERE, DISC], ids=["sphere", "disc"])
def test_signed_distance_is_radius_minus_r(shape) -> None:
    source, radius, _ = shape
    target, mask = compute_aux_target("distance_transform", source)
    assert target.shape == (1, *radius.shape) and target.dtype == np.float32
    assert mask.shape == (1, *radius.shape) and mask.dtype == bool and mask.all()
    assert np.abs(target[0] - (radius - R)).max() < 1.0
    assert np.all((target[0] < 0) == (source[0] > 0.5))
    inside, _ = compute_aux_target("distance_transform", source, distance_type="inside")
    outside, _ = compute_aux_target("distance_transform", source, distance_type="outside")
    np.testing.assert_allclose(inside - outside, -target)
    assert inside.min() == 0 and outside.min() == 0


@pytest.mark.parametrize("shape", [SPHERE, DISC], ids=["sphere", "disc"])
def test_surface_normals_are_radial_unit_vectors(shape) -> None:
    source, radius, radial = shape
    normals, mask = compute_aux_target("surface_normals", source)
    assert normals.shape == (radius.ndim, *radius.shape)
    away = mask[0] & (radius > 3)
    assert away.mean() > 0.8
    np.testing.assert_allclose(np.linalg.norm(normals[:, mask[0]], axis=0), 1.0, rtol=1e-5)
    assert (normals * radial).sum(axis=0)[away].mean() > 0.98


def _tensor_matrix(tensor: np.ndarray) -> np.ndarray:
    """``[..., D, D]`` matrices from the upper-triangular components."""
    dims = 3 if tensor.shape[0] == 6 else 2
    rows, cols = np.triu_indices(dims)
    matrix = np.zeros((*tensor.shape[1:], dims, dims))
    matrix[..., rows, cols] = np.moveaxis(tensor, 0, -1)
    matrix[..., cols, rows] = np.moveaxis(tensor, 0, -1)
    return matrix


@pytest.mark.parametrize("compute_from", ["sdt", "binary"])
@pytest.mark.parametrize("shape", [SPHERE, DISC], ids=["sphere", "disc"])
def test_structure_tensor_main_axis_radial_and_inplane_direction_tangent(shape, compute_from: str) -> None:
    source, radius, radial = shape
    dims = radius.ndim
    params = {"compute_from": compute_from, "grad_sigma": 1.0, "tensor_sigma": 1.5}
    tensor, tensor_mask = compute_aux_target("structure_tensor", source, **params)
    assert tensor.shape == (dims * (dims + 1) // 2, *radius.shape) and tensor_mask.all()
    near = np.abs(radius - R) < 2.5
    _, vectors = np.linalg.eigh(_tensor_matrix(tensor)[near])
    assert np.abs((vectors[:, :, -1] * radial[:, near].T).sum(axis=1)).mean() > 0.98
    direction, mask = compute_aux_target("inplane_direction", source, **params)
    assert direction.shape == (dims, *radius.shape)
    near &= mask[0]
    assert near.sum() > 0.9 * (np.abs(radius - R) < 2.5).sum()
    np.testing.assert_allclose(np.linalg.norm(direction[:, mask[0]], axis=0), 1.0, rtol=1e-5)
    assert np.abs((direction * radial).sum(axis=0))[near].mean() < 0.1
    if dims == 2:  # the tangent is the outward normal (n_y, n_x) rotated by +90°: (n_x, −n_y), sign included
        rotated = np.stack([radial[1], -radial[0]])
        assert (direction * rotated).sum(axis=0)[near].mean() > 0.95
    else:  # sign convention: v·z ≥ 0 wherever z is not (nearly) the normal
        assert np.all(direction[0][mask[0] & (radial[0] ** 2 < 0.95)] >= 0)


@pytest.mark.parametrize(
    ("normal_axis", "expected"),
    [
        (2, (1.0, 0.0, 0.0)),  # a sheet ⊥ x: the projection of the reference z axis is z itself
        (1, (1.0, 0.0, 0.0)),  # a sheet ⊥ y: likewise
        (0, (0.0, 1.0, 0.0)),  # a sheet ⊥ z (reference ∥ normal): the fallback axis, y (first least aligned)
    ],
)
def test_inplane_direction_of_a_flat_sheet(normal_axis: int, expected: tuple[float, ...]) -> None:
    source = np.zeros((1, 14, 14, 14), dtype=np.float32)
    index = [slice(None)] * 4
    index[1 + normal_axis] = slice(0, 7)
    source[tuple(index)] = 1.0
    direction, mask = compute_aux_target("inplane_direction", source)
    assert mask.mean() > 0.5
    np.testing.assert_allclose(
        direction[:, mask[0]], np.broadcast_to(np.array(expected)[:, None], (3, mask.sum())), atol=1e-4
    )


def test_anisotropic_spacing_is_honoured() -> None:
    spacing = (2.0, 1.0)  # a circle of radius R in physical space is an ellipse in voxels
    source, radius, radial = _ball((15, 30), (14.2, 14.6), spacing)
    target, mask = compute_aux_target("distance_transform", source, spacing=spacing)
    assert mask.all()
    assert np.abs(target[0] - (radius - R)).max() < 1.5  # within one coarse voxel (2 units)
    assert np.abs(target[0] - (radius - R)).mean() < 0.5
    normals, normal_mask = compute_aux_target("surface_normals", source, spacing=spacing)
    away = normal_mask[0] & (radius > 4)
    assert (normals * radial).sum(axis=0)[away].mean() > 0.98
    # the same field with unit spacing is the ellipse's distance: clearly different
    voxels, _ = compute_aux_target("distance_transform", source)
    assert np.abs(voxels[0] - (radius - R)).max() > 3


@pytest.mark.parametrize("kind", AUX_KINDS)
@pytest.mark.parametrize("fill", [0.0, 1.0], ids=["empty", "full"])
def test_patches_without_signal_have_an_all_false_mask(kind: str, fill: float) -> None:
    source = np.full((1, 8, 9, 10), fill, dtype=np.float32)
    target, mask = compute_aux_target(kind, source)
    assert target.shape == (aux_channels(kind, 3), 8, 9, 10) and not target.any()
    assert mask.shape == (1, 8, 9, 10) and not mask.any()


@pytest.mark.parametrize(
    ("distance_type", "fill", "valid"),
    [("signed", 1.0, False), ("inside", 1.0, False), ("outside", 1.0, True), ("outside", 0.0, False)],
)
def test_distance_signal_rule_per_type(distance_type: str, fill: float, valid: bool) -> None:
    source = np.full((1, 6, 7), fill, dtype=np.float32)
    target, mask = compute_aux_target("distance_transform", source, distance_type=distance_type)
    assert bool(mask.all()) is valid and bool(mask.any()) is valid
    assert not target.any()


def test_source_valid_mask_restricts_the_output_and_decides_the_signal() -> None:
    source, radius, _ = DISC
    valid = np.ones_like(source, dtype=bool)
    valid[0, :, :5] = False
    target, mask = compute_aux_target("distance_transform", source, valid=valid)
    np.testing.assert_array_equal(mask, valid)
    assert not target[~mask].any()
    only_background = radius[None] > R + 1  # the valid region holds no foreground: no signal
    _, mask = compute_aux_target("surface_normals", source, valid=only_background)
    assert not mask.any()


@pytest.mark.parametrize(
    ("kind", "dims", "channels"),
    [
        ("distance_transform", 2, 1),
        ("distance_transform", 3, 1),
        ("surface_normals", 2, 2),
        ("surface_normals", 3, 3),
        ("structure_tensor", 2, 3),
        ("structure_tensor", 3, 6),
        ("inplane_direction", 2, 2),
        ("inplane_direction", 3, 3),
    ],
)
def test_channel_counts(kind: str, dims: int, channels: int) -> None:
    assert aux_channels(kind, dims) == channels
    source, _, _ = SPHERE if dims == 3 else DISC
    assert compute_aux_target(kind, source)[0].shape[0] == channels


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda s: compute_aux_target("curvature", s), "unknown auxiliary target kind"),
        (lambda s: compute_aux_target("distance_transform", s, sigma=1.0), "unknown parameter"),
        (lambda s: compute_aux_target("distance_transform", s, distance_type="both"), "distance_type"),
        (lambda s: compute_aux_target("structure_tensor", s, compute_from="image"), "compute_from"),
        (lambda s: compute_aux_target("surface_normals", s, spacing=(1.0, 0.0)), "spacing"),
        (lambda s: compute_aux_target("surface_normals", s[0]), r"\[1, \*spatial\]"),
        (lambda s: aux_channels("surface_normals", 4), "spatial_dims"),
    ],
)
def test_argument_errors(call, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call(DISC[0])
