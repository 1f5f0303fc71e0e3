"""Synthetic sheet/ink volumes: layout in every format, label logic, determinism and learnability sanity."""

from __future__ import annotations

import numpy as np
import pytest

from medtrain.io.volumes import open_volume
from medtrain.recipes.volume_seg.synthetic import FILE_EXTENSIONS, generate_volume_dataset

SHAPES = {3: (24, 32, 32), 2: (64, 64)}


def read_all(root, name, ext):
    return {
        "image": open_volume(root / "images" / f"{name}{ext}"),
        "sheet": open_volume(root / "labels" / f"{name}_sheet{ext}").read(),
        "ink": open_volume(root / "labels" / f"{name}_ink{ext}").read(),
        "mask": open_volume(root / "masks" / f"{name}_ink{ext}").read(),
    }


@pytest.mark.parametrize(
    ("file_format", "spatial_dims", "dtype", "spacing"),
    [
        ("zarr", 3, "uint8", None),
        ("tif", 3, "uint16", (2.0, 1.0, 1.0)),
        ("nifti", 3, "float32", (2.0, 0.5, 0.5)),
        ("zarr", 2, "uint8", (0.5, 0.5)),
        ("tif", 2, "uint8", None),
        ("nifti", 2, "uint8", None),
    ],
)
def test_layout_shapes_dtypes_and_labels(tmp_path, file_format, spatial_dims, dtype, spacing):
    shape = SHAPES[spatial_dims]
    names = generate_volume_dataset(
        tmp_path, n_volumes=2, shape=shape, spatial_dims=spatial_dims, file_format=file_format, dtype=dtype,
        spacing=spacing,
    )  # fmt: skip
    ext = FILE_EXTENSIONS[file_format]
    assert names == ["vol_000", "vol_001"]
    for index, name in enumerate(names):
        arrays = read_all(tmp_path, name, ext)
        image = arrays["image"]
        assert image.shape == shape and image.read().dtype == np.dtype(dtype)
        assert image.spacing == (spacing or (1.0,) * spatial_dims)
        sheet, ink, mask = (arrays[key] for key in ("sheet", "ink", "mask"))
        for label in (sheet, ink, mask):
            assert label.shape == shape and label.dtype == np.uint8 and set(np.unique(label)) <= {0, 1}
        assert not np.any(ink & ~sheet), "ink must lie on sheets"
        assert not np.any(ink & ~mask), "ink is annotated only inside the mask"
        assert 0.05 < mask.mean() < 0.95, f"volume {index}: mask fraction {mask.mean()}"
        assert 0.15 < sheet.mean() < 0.6
        assert ink.any()


def test_ink_is_a_few_percent_of_the_sheets(tmp_path):
    for index, name in enumerate(generate_volume_dataset(tmp_path, n_volumes=3, shape=(32, 48, 48))):
        arrays = read_all(tmp_path, name, ".zarr")
        sheet, ink, mask = (arrays[key].astype(bool) for key in ("sheet", "ink", "mask"))
        fraction = ink.sum() / (sheet & mask).sum()
        assert 0.01 < fraction < 0.12, f"volume {index}: ink is {fraction:.3f} of the annotated sheet voxels"


def test_deterministic_by_seed_and_independent_of_count(tmp_path):
    generate_volume_dataset(tmp_path / "a", n_volumes=2, shape=SHAPES[3], seed=3)
    generate_volume_dataset(tmp_path / "b", n_volumes=1, shape=SHAPES[3], seed=3)
    generate_volume_dataset(tmp_path / "c", n_volumes=1, shape=SHAPES[3], seed=4)
    a, b, c = (read_all(tmp_path / key, "vol_000", ".zarr") for key in "abc")
    for key in ("sheet", "ink", "mask"):
        assert np.array_equal(a[key], b[key])
    assert np.array_equal(a["image"].read(), b["image"].read())
    assert not np.array_equal(a["sheet"], c["sheet"])


@pytest.mark.parametrize("spatial_dims", [3, 2])
def test_sheets_are_curved(tmp_path, spatial_dims):
    generate_volume_dataset(tmp_path, n_volumes=1, shape=SHAPES[spatial_dims], spatial_dims=spatial_dims)
    sheet = read_all(tmp_path, "vol_000", ".zarr")["sheet"].astype(bool)
    # Depth of the first sheet voxel in each column (stacking axis 0): a flat sheet would give one value.
    first = np.argmax(sheet, axis=0)[sheet.any(axis=0)]
    assert first.max() - first.min() >= 3 and first.std() > 1.0
    # Several separate layers along every column.
    column = sheet.reshape(sheet.shape[0], -1)[:, 0].astype(int)
    assert np.count_nonzero(np.diff(column) == 1) + column[0] >= 2


@pytest.mark.parametrize("spatial_dims", [3, 2])
def test_contrast_has_the_intended_sign(tmp_path, spatial_dims):
    names = generate_volume_dataset(tmp_path, n_volumes=2, shape=SHAPES[spatial_dims], spatial_dims=spatial_dims)
    for name in names:
        arrays = read_all(tmp_path, name, ".zarr")
        image = arrays["image"].read().astype(float)
        sheet, ink = arrays["sheet"].astype(bool), arrays["ink"].astype(bool)
        noise = image[~sheet].std()  # background spread: noise plus drift
        assert image[sheet].mean() - image[~sheet].mean() > noise
        assert image[ink].mean() - image[~sheet].mean() > noise
        # Ink is brighter than bare sheet but subtle: within ~2 noise standard deviations.
        bare = image[sheet & ~ink].mean()
        assert 0 < image[ink].mean() - bare < 2.5 * noise
