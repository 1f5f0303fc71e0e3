"""Synthetic volume-seg data: papyrus-like stacks of curved sheets with sparse "ink", for the demo and the tests.

Written in the recipe's layout (ARCHITECTURE.md) through :func:`medtrain.io.volumes.write_volume`, so the spacing
travels in the files (zarr attribute, TIFF description, NIfTI zooms)::

    root/images/vol_000.<ext>          image, uint8 / uint16 / float32
    root/labels/vol_000_sheet.<ext>    binary (uint8): sheet voxels
    root/labels/vol_000_ink.<ext>      binary (uint8): ink voxels inside the annotated region, 0 elsewhere
    root/masks/vol_000_ink.<ext>       binary (uint8): where the ink label is valid (1) or unknown (0)

**Geometry** (voxel units; axis 0 is the stacking axis: z in 3-D, y in 2-D; the other axes span the sheet's
plane). Sheets are stacked along axis 0 with thickness ``t_k ~ U(2, 4)`` and gaps ``~ U(3, 7)``. The centre
surface of sheet ``k`` is ``h_k(p) = b_k + W(p) + w_k(p)`` over plane positions ``p``: ``W`` (shared by all
sheets, so they stay roughly parallel) is a sum of three sinusoids of 0.3–1.2 cycles across the plane with a total
amplitude of 8–12 % of the depth; ``w_k`` (per sheet) is two sinusoids of amplitude ≤ 0.4 voxel each, which cannot
make neighbouring sheets touch. A voxel at depth ``z`` belongs to sheet ``k`` when ``|z − h_k(p)| < t_k / 2``.
The 2-D variant is the same construction over a 1-D plane: a cross-section with curved lines as sheets.

**Ink** is painted on about half of the sheets (at least one): a plane map of strokes (segments 1.5–3 voxels wide)
and blobs (discs) covering about 15 % of the sheet's area, applied to the sheet voxels within 1.5 voxels of its
upper face (``z ≥ h_k + t_k/2 − 1.5``), so ink ⊂ sheet and it is a few % of the sheet voxels.
**Mask**: even volumes annotate a random half-space holding 30–70 % of the voxels, odd volumes the union of 2–4
random boxes (30–60 % of each axis); the ink label is zeroed outside the mask.

**Image** (8-bit units before the final cast): background 40, sheets 120 plus a fibre texture (white noise
smoothed with σ 4 along one in-plane axis and 0.7 across, amplitude 15; the fibre direction alternates between
sheets as in papyrus' crossed layers), ink voxels +18 (1.5 noise σ) with the fibre texture damped to 30 % and a
granular texture (σ 0.6, amplitude 6) instead; a 0.5-voxel Gaussian blur (partial volume), a smooth
multiplicative drift ``1 + 0.15 · f`` (``f`` a low-frequency sinusoid in [−1, 1]), Gaussian noise σ = 12, and a
per-volume gain U(0.85, 1.15) and offset U(−10, 10). ``uint8`` clips to [0, 255]; ``uint16`` multiplies by 256
first; ``float32`` keeps the values. Each volume is drawn from ``numpy.random.default_rng([seed, index])``, so a
dataset is reproducible and a volume does not depend on how many are generated.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from scipy.ndimage import gaussian_filter

from medtrain.io.volumes import write_volume

__all__ = ["FILE_EXTENSIONS", "generate_volume_dataset"]

FILE_EXTENSIONS = {"zarr": ".zarr", "tif": ".tif", "nifti": ".nii.gz"}
"""File ending per ``file_format`` (the seed's ``--format zarr|tif|nifti``)."""

_DEFAULT_SHAPE = {2: (128, 128), 3: (48, 64, 64)}
_BACKGROUND, _SHEET, _FIBRE, _INK, _INK_GRAIN, _NOISE = 40.0, 120.0, 15.0, 18.0, 6.0, 12.0
_INK_DEPTH = 1.5


def _sinusoids(rng: np.random.Generator, grid: list[np.ndarray], count: int, cycles: tuple[float, float]) -> np.ndarray:
    """Sum of ``count`` plane waves over the unit-cube coordinates ``grid``, normalised to max |value| ≤ 1."""
    total = np.zeros(np.broadcast_shapes(*(g.shape for g in grid)))
    for _ in range(count):
        direction = rng.normal(size=len(grid))
        direction *= rng.uniform(*cycles) / np.linalg.norm(direction)
        phase = sum(d * g for d, g in zip(direction, grid, strict=True))
        total = total + rng.uniform(0.5, 1.0) * np.sin(2 * np.pi * phase + rng.uniform(0, 2 * np.pi))
    return total / max(np.abs(total).max(), 1e-9)


def _sheet_centres(rng: np.random.Generator, depth: int, plane: tuple[int, ...]) -> list[tuple[np.ndarray, float]]:
    """(centre surface ``h_k`` over the plane, thickness ``t_k``) per sheet."""
    grid = [np.linspace(0, 1, n)[(slice(None), *(None,) * (len(plane) - 1 - i))] for i, n in enumerate(plane)]
    warp = rng.uniform(0.08, 0.12) * depth * _sinusoids(rng, grid, 3, (0.3, 1.2))
    sheets = []
    base = rng.uniform(1.0, 4.0)
    while base < depth - 1:
        thickness = rng.uniform(2.0, 4.0)
        wobble = 0.4 * _sinusoids(rng, grid, 1, (0.5, 2.0)) + 0.4 * _sinusoids(rng, grid, 1, (0.5, 2.0))
        sheets.append((base + thickness / 2 + warp + wobble, thickness))
        base += thickness + rng.uniform(3.0, 7.0)
    return sheets


def _ink_map(rng: np.random.Generator, plane: tuple[int, ...], coverage: float = 0.15) -> np.ndarray:
    """Boolean plane map of strokes (segments) and blobs (discs) covering roughly ``coverage`` of the plane."""
    points = np.stack(np.meshgrid(*(np.arange(n, dtype=float) for n in plane), indexing="ij"), axis=-1)
    extent = np.array(plane, dtype=float)
    painted = np.zeros(plane, dtype=bool)
    while painted.mean() < coverage:
        start = rng.uniform(0, 1, len(plane)) * extent
        if rng.random() < 0.7:  # a stroke
            direction = rng.normal(size=len(plane))
            end = start + direction / np.linalg.norm(direction) * rng.uniform(0.1, 0.3) * extent.max()
            radius = rng.uniform(0.75, 1.5)
        else:  # a blob
            end, radius = start, rng.uniform(1.5, 4.0)
        segment = end - start
        t = np.clip(((points - start) @ segment) / max(segment @ segment, 1e-9), 0.0, 1.0)
        distance = np.linalg.norm(points - (start + t[..., None] * segment), axis=-1)
        painted |= distance < radius
    return painted


def _mask(rng: np.random.Generator, shape: tuple[int, ...], index: int) -> np.ndarray:
    """Where ink is annotated: a half-space (even ``index``) or a union of boxes (odd ``index``)."""
    if index % 2 == 0:
        coords = np.meshgrid(*(np.arange(n, dtype=float) for n in shape), indexing="ij")
        normal = rng.normal(size=len(shape))
        projection = sum(n * c for n, c in zip(normal / np.linalg.norm(normal), coords, strict=True))
        return projection < np.quantile(projection, rng.uniform(0.3, 0.7))
    mask = np.zeros(shape, dtype=bool)
    for _ in range(rng.integers(2, 5)):
        sizes = [max(1, int(rng.uniform(0.3, 0.6) * n)) for n in shape]
        starts = [int(rng.integers(0, n - s + 1)) for n, s in zip(shape, sizes, strict=True)]
        mask[tuple(slice(a, a + s) for a, s in zip(starts, sizes, strict=True))] = True
    return mask


def _fibres(rng: np.random.Generator, shape: tuple[int, ...], along: int | None) -> np.ndarray:
    """Unit-variance noise smoothed with σ 4 along axis ``along`` (None: no axis) and 0.7 across."""
    sigma = [4.0 if axis == along else 0.7 for axis in range(len(shape))]
    field = gaussian_filter(rng.normal(size=shape), sigma)
    return field / field.std()


def _volume(rng: np.random.Generator, shape: tuple[int, ...], index: int) -> dict[str, np.ndarray]:
    """Image (float, 8-bit units), sheet, ink (masked) and mask arrays of one volume."""
    depth, plane = shape[0], shape[1:]
    z = np.arange(depth, dtype=float)[(slice(None), *(None,) * len(plane))]
    sheet = np.zeros(shape, dtype=bool)
    ink = np.zeros(shape, dtype=bool)
    fibre_along = np.zeros(shape, dtype=np.int8)  # which fibre field a sheet voxel uses (0 or 1)
    centres = _sheet_centres(rng, depth, plane)
    inked = rng.random(len(centres)) < 0.5
    inked[rng.integers(len(centres))] = True
    for k, (centre, thickness) in enumerate(centres):
        member = np.abs(z - centre) < thickness / 2
        sheet |= member
        fibre_along[member] = k % 2
        if inked[k]:
            surface = member & (z >= centre + thickness / 2 - _INK_DEPTH)
            ink |= surface & _ink_map(rng, plane)[None]
    second_axis = 1 if len(shape) == 3 else None  # 2-D: the crossed fibres are cut across (dots)
    fibres = np.where(fibre_along == 0, _fibres(rng, shape, len(shape) - 1), _fibres(rng, shape, second_axis))
    grain = _fibres(rng, shape, None)
    image = np.full(shape, _BACKGROUND)
    image[sheet] = _SHEET + _FIBRE * fibres[sheet]
    image[ink] = _SHEET + _INK + 0.3 * _FIBRE * fibres[ink] + _INK_GRAIN * grain[ink]
    image = gaussian_filter(image, 0.5)
    unit = [np.linspace(0, 1, n)[(slice(None), *(None,) * (len(shape) - 1 - i))] for i, n in enumerate(shape)]
    image *= 1 + 0.15 * _sinusoids(rng, unit, 2, (0.2, 0.6))
    image += rng.normal(0, _NOISE, size=shape)
    image = image * rng.uniform(0.85, 1.15) + rng.uniform(-10, 10)
    mask = _mask(rng, shape, index)
    return {"image": image, "sheet": sheet, "ink": ink & mask, "mask": mask}


def _cast(image: np.ndarray, dtype: str) -> np.ndarray:
    if dtype == "uint8":
        return np.clip(np.rint(image), 0, 255).astype(np.uint8)
    if dtype == "uint16":
        return np.clip(np.rint(image * 256), 0, 65535).astype(np.uint16)
    return image.astype(np.float32)


def generate_volume_dataset(
    root: str | os.PathLike[str],
    *,
    n_volumes: int = 6,
    shape: Sequence[int] | None = None,
    spatial_dims: int = 3,
    file_format: str = "zarr",
    seed: int = 0,
    spacing: Sequence[float] | None = None,
    dtype: str = "uint8",
) -> list[str]:
    """Write ``n_volumes`` synthetic sheet/ink volumes under ``root`` (see the module docstring); return their names.

    ``shape`` is ``(z, y, x)`` for ``spatial_dims=3`` (default ``(48, 64, 64)``) or ``(y, x)`` for 2 (default
    ``(128, 128)``); ``file_format`` is ``"zarr"``, ``"tif"`` or ``"nifti"`` (``.nii.gz``); ``spacing`` (one value
    per spatial axis, default isotropic 1.0) is written into every file; ``dtype`` of the image is ``"uint8"``,
    ``"uint16"`` or ``"float32"``. Names are ``vol_000``, ``vol_001``, ...; targets ``sheet`` and ``ink``; the ink
    target has a mask. Deterministic given ``seed``.
    """
    if spatial_dims not in (2, 3):
        raise ValueError(f"generate_volume_dataset: spatial_dims {spatial_dims} must be 2 or 3")
    shape = tuple(int(s) for s in (shape if shape is not None else _DEFAULT_SHAPE[spatial_dims]))
    if len(shape) != spatial_dims or min(shape) < 8:
        raise ValueError(f"generate_volume_dataset: shape {shape} must be {spatial_dims} sizes ≥ 8")
    if file_format not in FILE_EXTENSIONS:
        raise ValueError(f"generate_volume_dataset: file_format {file_format!r} must be one of {list(FILE_EXTENSIONS)}")
    if dtype not in ("uint8", "uint16", "float32"):
        raise ValueError(f"generate_volume_dataset: dtype {dtype!r} must be 'uint8', 'uint16' or 'float32'")
    if n_volumes < 1:
        raise ValueError(f"generate_volume_dataset: n_volumes {n_volumes} must be ≥ 1")
    spacing = tuple(float(s) for s in spacing) if spacing is not None else (1.0,) * spatial_dims
    root, ext = Path(root), FILE_EXTENSIONS[file_format]
    names = []
    for index in range(n_volumes):
        name = f"vol_{index:03d}"
        arrays = _volume(np.random.default_rng([seed, index]), shape, index)
        write_volume(root / "images" / f"{name}{ext}", _cast(arrays["image"], dtype), spacing=spacing)
        write_volume(root / "labels" / f"{name}_sheet{ext}", arrays["sheet"].astype(np.uint8), spacing=spacing)
        write_volume(root / "labels" / f"{name}_ink{ext}", arrays["ink"].astype(np.uint8), spacing=spacing)
        write_volume(root / "masks" / f"{name}_ink{ext}", arrays["mask"].astype(np.uint8), spacing=spacing)
        names.append(name)
    return names
