"""The volume reader :mod:`medtrain.io.volumes`: round trips, axis convention, lazy regions and errors."""

from __future__ import annotations

import gzip
import json
import multiprocessing
import tracemalloc
import warnings
from collections.abc import Callable
from multiprocessing.reduction import ForkingPickler
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
import tifffile
import zarr

from medtrain.errors import DataError
from medtrain.io.volumes import Volume, open_volume, supported_suffix, volume_stem, write_volume

# (name, file ending, write_volume keywords)
FORMATS = [
    ("zarr", ".zarr", {}),
    ("ome-zarr", ".zarr", {"ome": True}),
    ("tif", ".tif", {}),
    ("nii", ".nii", {}),
    ("nii.gz", ".nii.gz", {}),
]
# (name, shape, spacing)
SHAPES = [
    ("2d", (12, 17), (0.5, 0.25)),
    ("3d", (6, 12, 17), (2.5, 0.7, 1.3)),
    ("4d", (3, 6, 12, 17), (2.5, 0.7, 1.3)),
]
DTYPES = ["uint8", "int16", "float32"]


def _array(shape: tuple[int, ...], dtype: str, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if np.dtype(dtype).kind == "f":
        return rng.standard_normal(shape).astype(dtype)
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max, size=shape, endpoint=True).astype(dtype)


def _ids(table: list[tuple[Any, ...]]) -> list[str]:
    return [row[0] for row in table]


# ---------------------------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("shape_name", "shape", "spacing"), SHAPES, ids=_ids(SHAPES))
@pytest.mark.parametrize(("fmt", "ending", "kwargs"), FORMATS, ids=_ids(FORMATS))
def test_round_trip_gives_back_data_spacing_and_axes(
    tmp_path: Path,
    fmt: str,
    ending: str,
    kwargs: dict[str, Any],
    shape_name: str,
    shape: tuple[int, ...],
    spacing: tuple[float, ...],
    dtype: str,
) -> None:
    array = _array(shape, dtype)
    path = write_volume(tmp_path / f"case_01{ending}", array, spacing=spacing, **kwargs)
    assert path == tmp_path / f"case_01{ending}"
    volume = open_volume(path)
    assert volume.shape == array.shape and volume.ndim == array.ndim and volume.dtype == array.dtype
    assert volume.spacing == spacing and all(type(v) is float for v in volume.spacing)
    assert volume.axes == {2: "yx", 3: "zyx", 4: "czyx"}[array.ndim]
    assert volume.has_channel_axis is (array.ndim == 4)
    assert volume.channels == (shape[0] if array.ndim == 4 else 1)
    assert volume.spatial_shape == (shape[1:] if array.ndim == 4 else shape)
    assert volume.nbytes == array.nbytes
    data = volume.read()
    assert data.dtype == array.dtype and data.flags.writeable and data.flags.c_contiguous
    np.testing.assert_array_equal(data, array)


@pytest.mark.parametrize(("fmt", "ending", "kwargs"), FORMATS, ids=_ids(FORMATS))
def test_round_trip_without_spacing(tmp_path: Path, fmt: str, ending: str, kwargs: dict[str, Any]) -> None:
    array = _array((4, 5, 6), "int16")
    volume = open_volume(write_volume(tmp_path / f"v{ending}", array, **kwargs))
    np.testing.assert_array_equal(volume.read(), array)
    # NIfTI headers and OME scales always carry a spacing (1 when none was given); zarr attrs and TIFF do not.
    assert volume.spacing == ((1.0, 1.0, 1.0) if fmt in ("ome-zarr", "nii", "nii.gz") else None)


@pytest.mark.parametrize("ending", [".nii", ".nii.gz"])
def test_nifti_is_stored_x_y_z_and_read_z_y_x(tmp_path: Path, ending: str) -> None:
    array = _array((3, 6, 12, 17), "float32")  # (c, z, y, x)
    path = write_volume(tmp_path / f"v{ending}", array, spacing=(2.5, 0.7, 1.3))
    image = nib.load(str(path))
    assert image.shape == (17, 12, 6, 3)
    assert tuple(float(z) for z in image.header.get_zooms()[:3]) == pytest.approx((1.3, 0.7, 2.5))
    np.testing.assert_array_equal(np.asarray(image.dataobj), array.transpose(3, 2, 1, 0))
    # A NIfTI written by someone else, (x, y, z) with zooms (dx, dy, dz), reads as (z, y, x) / (dz, dy, dx).
    xyz = _array((7, 5, 3), "int16")
    other = nib.Nifti1Image(xyz, np.diag([0.5, 0.75, 3.0, 1.0]))
    nib.save(other, str(tmp_path / f"other{ending}"))
    volume = open_volume(tmp_path / f"other{ending}")
    assert volume.shape == (3, 5, 7) and volume.spacing == (3.0, 0.75, 0.5)
    np.testing.assert_array_equal(volume.read(), xyz.transpose(2, 1, 0))
    np.testing.assert_array_equal(volume[1, 2:4], xyz[:, 2:4, 1].T)


def test_nifti_scaled_data_reads_as_floats(tmp_path: Path) -> None:
    raw = _array((6, 5, 4), "int16")
    image = nib.Nifti1Image(raw, np.eye(4))
    image.header.set_slope_inter(0.5, 10.0)
    nib.save(image, str(tmp_path / "scaled.nii"))
    volume = open_volume(tmp_path / "scaled.nii")
    assert volume.dtype.kind == "f"
    np.testing.assert_allclose(volume.read(), raw.transpose(2, 1, 0) * 0.5 + 10.0)
    assert volume[0, 0, 0].dtype == volume.dtype


def test_nifti_with_single_time_point_and_channels(tmp_path: Path) -> None:
    xyztc = _array((7, 5, 3, 1, 2), "float32")
    nib.save(nib.Nifti1Image(xyztc, np.eye(4)), str(tmp_path / "t1.nii"))
    volume = open_volume(tmp_path / "t1.nii")
    assert volume.axes == "czyx" and volume.shape == (2, 3, 5, 7)
    np.testing.assert_array_equal(volume.read(), xyztc[:, :, :, 0, :].transpose(3, 2, 1, 0))


# ---------------------------------------------------------------------------------------------- regions

KEYS: list[Any] = [
    (slice(1, 4), slice(2, 9), slice(3, 15)),
    (2,),
    (Ellipsis, 5),
    (slice(None, None, 2), 3, slice(-5, None)),
    (-1, slice(0, 0)),
    (np.int64(1), Ellipsis, slice(1, 8, 3)),
    (slice(3, 1),),
    (1, 2, 3),
]


@pytest.mark.parametrize(("fmt", "ending", "kwargs"), FORMATS, ids=_ids(FORMATS))
def test_slicing_matches_numpy(tmp_path: Path, fmt: str, ending: str, kwargs: dict[str, Any]) -> None:
    for ndim, shape in [(3, (6, 12, 17)), (4, (3, 6, 12, 17))]:
        array = _array(shape, "float32", seed=ndim)
        volume = open_volume(write_volume(tmp_path / f"v{ndim}{ending}", array, **kwargs))
        for key in KEYS:
            got = volume[key]
            np.testing.assert_array_equal(got, array[key], err_msg=f"{fmt} {shape} {key}")
            assert isinstance(got, np.ndarray) and got.shape == array[key].shape
        np.testing.assert_array_equal(volume[1:3], array[1:3])
        np.testing.assert_array_equal(volume[...], array)


@pytest.mark.parametrize(("fmt", "ending", "kwargs"), FORMATS, ids=_ids(FORMATS))
def test_region_reads_the_box_and_refuses_to_leave_the_volume(
    tmp_path: Path, fmt: str, ending: str, kwargs: dict[str, Any]
) -> None:
    array = _array((2, 6, 12, 17), "int16")
    volume = open_volume(write_volume(tmp_path / f"v{ending}", array, **kwargs))
    np.testing.assert_array_equal(volume.region((1, 2, 3, 4), (1, 3, 5, 7)), array[1:2, 2:5, 3:8, 4:11])
    # Spatial starts/sizes read every channel.
    np.testing.assert_array_equal(volume.region((2, 3, 4), (3, 5, 7)), array[:, 2:5, 3:8, 4:11])
    np.testing.assert_array_equal(volume.region((0, 0, 0, 0), array.shape), array)
    assert volume.region((0, 6, 0), (2, 0, 3)).shape == (2, 2, 0, 3)
    for starts, sizes in [
        ((4, 0, 0), (3, 1, 1)),  # past the end of z
        ((0, 0, -1), (1, 1, 2)),  # negative start
        ((0, 0, 10), (1, 1, 8)),  # past the end of x
        ((0, 0, 0), (1, -1, 1)),  # negative size
        ((0, 0), (1, 1)),  # wrong number of axes
        ((0, 0, 0), (1, 1)),  # lengths differ
        ((0, 0, 0.5), (1, 1, 1)),  # not integers
    ]:
        with pytest.raises(ValueError):
            volume.region(starts, sizes)


def test_unsupported_keys_raise(tmp_path: Path) -> None:
    volume = open_volume(write_volume(tmp_path / "v.zarr", _array((4, 5, 6), "uint8")))
    with pytest.raises(TypeError):
        volume[[0, 1]]
    with pytest.raises(TypeError):
        volume[None]
    with pytest.raises(ValueError):
        volume[::-1]
    with pytest.raises(IndexError):
        volume[4]
    with pytest.raises(IndexError):
        volume[0, 0, 0, 0]
    with pytest.raises(IndexError):
        volume[..., 0, ...]


# ---------------------------------------------------------------------------------------------- laziness

BIG_SHAPE = (256, 256, 256)  # float32: 64 MiB
LAZY_LIMIT = 10 * 2**20


@pytest.fixture(scope="module")
def big_array() -> np.ndarray:
    return (np.arange(np.prod(BIG_SHAPE), dtype=np.float32) % 1009).reshape(BIG_SHAPE)


def _peak_bytes(read: Callable[[], np.ndarray]) -> tuple[int, np.ndarray]:
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        result = read()
        return tracemalloc.get_traced_memory()[1], result
    finally:
        tracemalloc.stop()


def _write_compressed_tif(path: Path, array: np.ndarray) -> Path:
    tifffile.imwrite(path, array, compression="zlib", compressionargs={"level": 1}, metadata={"axes": "ZYX"})
    return path


LAZY_CASES: list[tuple[str, Callable[[Path, np.ndarray], Path]]] = [
    ("zarr", lambda d, a: write_volume(d / "big.zarr", a)),
    ("ome-zarr", lambda d, a: write_volume(d / "big.zarr", a, ome=True)),
    ("tif-memmap", lambda d, a: write_volume(d / "big.tif", a)),
    ("tif-compressed", lambda d, a: _write_compressed_tif(d / "big.tif", a)),
    ("nii", lambda d, a: write_volume(d / "big.nii", a)),
]


@pytest.mark.parametrize(("name", "make"), LAZY_CASES, ids=_ids(LAZY_CASES))
def test_small_region_of_a_large_volume_reads_only_the_region(
    tmp_path: Path, big_array: np.ndarray, name: str, make: Callable[[Path, np.ndarray], Path]
) -> None:
    path = make(tmp_path, big_array)
    peak, volume = _peak_bytes(lambda: open_volume(path))  # type: ignore[arg-type,return-value]
    assert isinstance(volume, Volume) and peak < LAZY_LIMIT, f"opening {name} traced {peak / 2**20:.1f} MiB"
    peak, patch = _peak_bytes(lambda: volume.region((100, 120, 140), (16, 24, 32)))
    np.testing.assert_array_equal(patch, big_array[100:116, 120:144, 140:172])
    assert peak < LAZY_LIMIT, f"a 48 KiB region of {name} traced {peak / 2**20:.1f} MiB"
    # One plane touches a row of 64³ zarr chunks (16 MiB decoded): still far below the 64 MiB volume.
    peak, plane = _peak_bytes(lambda: volume[200])
    np.testing.assert_array_equal(plane, big_array[200])
    assert peak < big_array.nbytes // 3, f"one plane of {name} traced {peak / 2**20:.1f} MiB"


def test_memmapped_tif_results_are_copies_not_views(tmp_path: Path) -> None:
    array = _array((4, 8, 8), "int16")
    volume = open_volume(write_volume(tmp_path / "v.tif", array))
    patch = volume[1:3]
    assert type(patch) is np.ndarray and patch.base is None
    patch[...] = 0  # writable, and the file is untouched
    np.testing.assert_array_equal(open_volume(tmp_path / "v.tif").read(), array)


def test_sending_a_volume_to_a_worker_sends_its_path_not_its_data(tmp_path: Path, big_array: np.ndarray) -> None:
    """Spawned DataLoader workers receive their dataset through multiprocessing's serializer (never a file)."""
    volume = open_volume(write_volume(tmp_path / "big.tif", big_array), spacing=(3.0, 2.0, 1.0))
    payload = bytes(ForkingPickler.dumps(volume))
    assert len(payload) < 2048
    again = ForkingPickler.loads(payload)
    assert again.spacing == (3.0, 2.0, 1.0) and again.shape == BIG_SHAPE
    np.testing.assert_array_equal(again[5, 6], big_array[5, 6])


def _read_in_child(volume: Volume, index: int) -> np.ndarray:
    return volume[index]


@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="needs fork")
def test_forked_workers_read_concurrently(tmp_path: Path) -> None:
    array = _array((16, 32, 32), "float32")
    tifffile.imwrite(tmp_path / "c.tif", array, compression="zlib", metadata={"axes": "ZYX"})
    for path in [tmp_path / "c.tif", write_volume(tmp_path / "v.zarr", array)]:
        volume = open_volume(path)
        volume[0]  # the parent has used its handles before the fork
        with multiprocessing.get_context("fork").Pool(3) as pool:
            planes = pool.starmap(_read_in_child, [(volume, i) for i in range(16)] * 2)
        np.testing.assert_array_equal(np.stack(planes[:16]), array)
        np.testing.assert_array_equal(np.stack(planes[16:]), array)
        np.testing.assert_array_equal(volume[3], array[3])


# ---------------------------------------------------------------------------------------------- axes metadata


def _ome_group(path: Path, array: np.ndarray, axes: list[Any], scale: list[float] | None, v3: bool = False) -> Path:
    group = zarr.open_group(store=str(path), mode="w", zarr_format=3 if v3 else 2)
    dataset: dict[str, Any] = {"path": "s0"}
    if scale is not None:
        dataset["coordinateTransformations"] = [{"type": "scale", "scale": scale}]
    multiscales = [{"version": "0.5" if v3 else "0.4", "axes": axes, "datasets": [dataset, {"path": "s1"}]}]
    group.attrs.update({"ome": {"version": "0.5", "multiscales": multiscales}} if v3 else {"multiscales": multiscales})
    level = group.create_array("s0", shape=array.shape, dtype=array.dtype, chunks=array.shape)
    level[...] = array
    half = group.create_array("s1", shape=(1,) * array.ndim, dtype=array.dtype)
    half[...] = 0
    return path


def _axes(*names: str) -> list[dict[str, str]]:
    kinds = {"t": "time", "c": "channel"}
    return [{"name": n, "type": kinds.get(n, "space")} for n in names]


@pytest.mark.parametrize("v3", [False, True], ids=["ome-0.4-zarr-v2", "ome-0.5-zarr-v3"])
def test_ome_zarr_multichannel_2d_with_time_point(tmp_path: Path, v3: bool) -> None:
    array = _array((1, 3, 10, 12), "uint8")  # t, c, y, x
    path = _ome_group(tmp_path / "img.ome.zarr", array, _axes("t", "c", "y", "x"), [1.0, 1.0, 0.3, 0.2], v3=v3)
    volume = open_volume(path)
    assert volume.axes == "cyx" and volume.shape == (3, 10, 12) and volume.channels == 3
    assert volume.spatial_shape == (10, 12) and volume.spacing == (0.3, 0.2)
    np.testing.assert_array_equal(volume.read(), array[0])
    np.testing.assert_array_equal(volume.region((2, 3), (4, 5)), array[0, :, 2:6, 3:8])


def test_ome_zarr_level_0_is_the_first_listed_dataset_and_5d_is_reduced(tmp_path: Path) -> None:
    array = _array((1, 1, 4, 10, 12), "float32")
    path = _ome_group(tmp_path / "v.zarr", array, _axes("t", "c", "z", "y", "x"), [1, 1, 2.0, 0.5, 0.5])
    volume = open_volume(path)
    assert volume.axes == "czyx" and volume.shape == (1, 4, 10, 12) and volume.spacing == (2.0, 0.5, 0.5)
    np.testing.assert_array_equal(volume.read(), array[0])


def test_ome_zarr_axes_out_of_order_are_transposed(tmp_path: Path) -> None:
    array = _array((12, 10, 2), "int16")  # x, y, c
    path = _ome_group(tmp_path / "v.zarr", array, _axes("x", "y", "c"), [0.2, 0.3, 1.0])
    volume = open_volume(path)
    expected = array.transpose(2, 1, 0)
    assert volume.axes == "cyx" and volume.shape == expected.shape and volume.spacing == (0.3, 0.2)
    np.testing.assert_array_equal(volume.read(), expected)
    for key in [(1,), (slice(None), 3), (0, slice(2, 5), 7), (Ellipsis, slice(1, 9, 2))]:
        np.testing.assert_array_equal(volume[key], expected[key])


def test_ome_zarr_with_a_time_axis_is_rejected(tmp_path: Path) -> None:
    path = _ome_group(tmp_path / "movie.zarr", _array((2, 4, 5, 6), "uint8"), _axes("t", "z", "y", "x"), None)
    with pytest.raises(DataError, match=r"time axis 't' has length 2") as error:
        open_volume(path)
    assert str(path) in str(error.value)


def test_ome_zarr_spacing_multiplies_the_multiscale_scale(tmp_path: Path) -> None:
    path = _ome_group(tmp_path / "v.zarr", _array((4, 5, 6), "uint8"), _axes("z", "y", "x"), [2.0, 1.0, 1.0])
    group = zarr.open_group(store=str(path), mode="r+")
    multiscales = group.attrs["multiscales"]
    multiscales[0]["coordinateTransformations"] = [{"type": "scale", "scale": [1.5, 0.5, 0.25]}]
    group.attrs["multiscales"] = multiscales
    assert open_volume(path).spacing == (3.0, 0.5, 0.25)


def test_plain_zarr_axes_attribute_and_multichannel_2d_writes(tmp_path: Path) -> None:
    array = _array((3, 10, 12), "float32")
    for ending, kwargs in [(".zarr", {}), (".zarr", {"ome": True}), (".tif", {})]:
        path = write_volume(tmp_path / f"rgb{len(kwargs)}{ending}", array, spacing=(0.3, 0.2), axes="cyx", **kwargs)
        volume = open_volume(path)
        assert (volume.axes, volume.channels, volume.spacing) == ("cyx", 3, (0.3, 0.2)), path
        np.testing.assert_array_equal(volume.read(), array)
    with pytest.raises(ValueError, match="NIfTI"):
        write_volume(tmp_path / "rgb.nii.gz", array, axes="cyx")


def test_tiff_axes_from_imagej_hyperstacks_and_rgb(tmp_path: Path) -> None:
    zcyx = _array((5, 2, 10, 12), "uint16")
    tifffile.imwrite(
        tmp_path / "stack.tif",
        zcyx,
        imagej=True,
        resolution=(1 / 0.25, 1 / 0.5),  # x, y pixels per unit
        metadata={"axes": "ZCYX", "spacing": 2.0, "unit": "um"},
    )
    volume = open_volume(tmp_path / "stack.tif")
    expected = zcyx.transpose(1, 0, 2, 3)
    assert volume.axes == "czyx" and volume.shape == expected.shape and volume.spacing == (2.0, 0.5, 0.25)
    np.testing.assert_array_equal(volume.read(), expected)
    np.testing.assert_array_equal(volume[1, 2:4, 3], expected[1, 2:4, 3])
    np.testing.assert_array_equal(volume.region((1, 2, 3), (2, 4, 5)), expected[:, 1:3, 2:6, 3:8])

    rgb = _array((10, 12, 3), "uint8")
    tifffile.imwrite(tmp_path / "rgb.tif", rgb, photometric="rgb")
    volume = open_volume(tmp_path / "rgb.tif")
    assert volume.axes == "cyx" and volume.shape == (3, 10, 12) and volume.spacing is None
    np.testing.assert_array_equal(volume.read(), rgb.transpose(2, 0, 1))

    with warnings.catch_warnings():  # tifffile warns that it guesses planar RGB ('QSYX') for this shape
        warnings.simplefilter("ignore", DeprecationWarning)
        tifffile.imwrite(tmp_path / "plain.tif", _array((2, 3, 8, 8), "uint8"))
    assert open_volume(tmp_path / "plain.tif").axes == "czyx"


def test_big_endian_tiff_reads_native(tmp_path: Path) -> None:
    array = _array((3, 8, 9), "int16")
    tifffile.imwrite(tmp_path / "be.tif", array, byteorder=">", photometric="minisblack", metadata={"axes": "ZYX"})
    volume = open_volume(tmp_path / "be.tif")
    assert volume.dtype == np.dtype("int16") and volume.dtype.isnative
    data = volume[1:]
    assert data.dtype.isnative
    np.testing.assert_array_equal(data, array[1:])


# ---------------------------------------------------------------------------------------------- spacing


@pytest.mark.parametrize(("fmt", "ending", "kwargs"), FORMATS, ids=_ids(FORMATS))
def test_spacing_argument_overrides_the_file(tmp_path: Path, fmt: str, ending: str, kwargs: dict[str, Any]) -> None:
    path = write_volume(tmp_path / f"v{ending}", _array((2, 3, 4, 5), "uint8"), spacing=(1.0, 1.0, 1.0), **kwargs)
    assert open_volume(path, spacing=[3, 0.5, 0.25]).spacing == (3.0, 0.5, 0.25)
    for wrong in [(1.0, 2.0), (1.0, 2.0, 3.0, 4.0), (1.0, 0.0, 1.0), (1.0, float("nan"), 1.0), ("a", 1, 1), "123", 2.0]:
        with pytest.raises(DataError, match="spacing") as error:
            open_volume(path, spacing=wrong)
        assert str(path) in str(error.value)


def test_malformed_spacing_attribute_is_a_data_error(tmp_path: Path) -> None:
    path = write_volume(tmp_path / "v.zarr", _array((4, 5, 6), "uint8"))
    zarr.open_array(store=str(path), mode="r+").attrs["spacing"] = [1.0, 2.0]
    with pytest.raises(DataError, match=r"zarr attribute spacing \[1.0, 2.0\] is invalid"):
        open_volume(path)


def test_write_volume_rejects_arguments_that_do_not_fit(tmp_path: Path) -> None:
    array = _array((4, 5, 6), "uint8")
    for kwargs in [
        {"spacing": (1.0, 1.0)},
        {"spacing": (1.0, -1.0, 1.0)},
        {"ome": True, "path": "v.tif"},
        {"chunks": (2, 2, 2), "path": "v.nii"},
        {"chunks": (2, 2)},
        {"axes": "cyx", "array": _array((4, 5), "uint8")},
    ]:
        name = kwargs.pop("path", "v.zarr")
        data = kwargs.pop("array", array)
        with pytest.raises(ValueError):
            write_volume(tmp_path / name, data, **kwargs)
    with pytest.raises(ValueError, match="2-D, 3-D or 4-D"):
        write_volume(tmp_path / "v.zarr", np.zeros(5))
    with pytest.raises(DataError, match=r"\.nii\.gz"):
        write_volume(tmp_path / "v.npy", array)


def test_write_volume_replaces_an_existing_volume_and_honours_chunks(tmp_path: Path) -> None:
    path = write_volume(tmp_path / "v.zarr", _array((4, 5, 6), "uint8"))
    second = _array((3, 3), "float32", seed=1)
    write_volume(path, second, chunks=(2, 3))
    assert zarr.open_array(store=str(path), mode="r").chunks == (2, 3)
    np.testing.assert_array_equal(open_volume(path).read(), second)
    assert [p.name for p in tmp_path.iterdir()] == ["v.zarr"]


# ---------------------------------------------------------------------------------------------- errors


def test_unknown_suffix_and_missing_files_are_data_errors(tmp_path: Path) -> None:
    (tmp_path / "scan.png").write_bytes(b"\x89PNG")
    with pytest.raises(DataError, match=r"scan\.png.*\.zarr, \.tif, \.tiff, \.nii, \.nii\.gz"):
        open_volume(tmp_path / "scan.png")
    for name in ["missing.nii.gz", "missing.zarr", "missing.tif"]:
        with pytest.raises(DataError, match="not found") as error:
            open_volume(tmp_path / name)
        assert str(tmp_path / name) in str(error.value)
    (tmp_path / "file.zarr").write_text("not a folder")
    with pytest.raises(DataError, match="not a folder"):
        open_volume(tmp_path / "file.zarr")


CORRUPT: list[tuple[str, Callable[[Path], Path]]] = [
    ("tif", lambda d: _write(d / "bad.tif", b"II*\x00garbage" * 10)),
    ("nii", lambda d: _write(d / "bad.nii", b"\x00" * 400)),
    ("nii.gz", lambda d: _write(d / "bad.nii.gz", b"not gzip at all")),
    ("zarr-json", lambda d: _write(d / "bad.zarr" / "zarr.json", b"{not json")),
    ("zarr-empty", lambda d: _mkdir(d / "empty.zarr")),
    ("zarr-group", lambda d: Path(zarr.open_group(store=str(d / "group.zarr"), mode="w").store_path.store.root)),
    ("ome-missing-level", lambda d: _ome_without_level(d / "ome.zarr")),
]


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path if path.name != "zarr.json" else path.parent


def _ome_without_level(path: Path) -> Path:
    multiscales = [{"axes": _axes("z", "y", "x"), "datasets": [{"path": "0"}]}]
    metadata = {"zarr_format": 3, "node_type": "group", "attributes": {"ome": {"multiscales": multiscales}}}
    return _write(path / "zarr.json", json.dumps(metadata).encode())


def _mkdir(path: Path) -> Path:
    path.mkdir()
    return path


@pytest.mark.parametrize(("name", "make"), CORRUPT, ids=_ids(CORRUPT))
def test_corrupt_files_are_data_errors_naming_the_file(tmp_path: Path, name: str, make: Callable[[Path], Path]) -> None:
    path = make(tmp_path)
    with pytest.raises(DataError) as error:
        open_volume(path)
    message = str(error.value)
    assert str(path) in message and "\n" not in message


def test_truncated_gzip_nifti_fails_on_read_with_a_data_error(tmp_path: Path) -> None:
    path = write_volume(tmp_path / "v.nii.gz", _array((8, 16, 16), "float32"))
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    volume = open_volume(path)  # the header is intact
    with pytest.raises(DataError, match="cannot read volume") as error:
        volume.read()
    assert str(path) in str(error.value)
    with gzip.open(path) as handle, pytest.raises(EOFError):
        handle.read()


# ---------------------------------------------------------------------------------------------- names


@pytest.mark.parametrize(
    ("name", "kind", "stem"),
    [
        ("case_01.nii.gz", "nii", "case_01"),
        ("case_01.NII.GZ", "nii", "case_01"),
        ("case.01.nii", "nii", "case.01"),
        ("img.zarr", "zarr", "img"),
        ("img.ome.zarr", "zarr", "img"),
        ("img.tif", "tif", "img"),
        ("img.TIFF", "tif", "img"),
        ("img.ome.tif", "tif", "img"),
        ("img_liver.tiff", "tif", "img_liver"),
        ("img.png", None, None),
        ("img.gz", None, None),
        (".zarr", None, None),
        ("nii", None, None),
    ],
)
def test_supported_suffix_and_volume_stem(name: str, kind: str | None, stem: str | None) -> None:
    assert supported_suffix(Path("data") / name) == kind
    if stem is None:
        with pytest.raises(DataError, match="not a volume file name"):
            volume_stem(name)
    else:
        assert volume_stem(Path("data") / name) == stem


def test_volume_closes_and_reopens(tmp_path: Path) -> None:
    array = _array((4, 5, 6), "int16")
    with open_volume(write_volume(tmp_path / "v.tif", array)) as volume:
        np.testing.assert_array_equal(volume[1], array[1])
    np.testing.assert_array_equal(volume[2], array[2])
    assert "v.tif" in repr(volume) and "zyx" in repr(volume)
