"""volume-seg dataset layout: case discovery (name matching, errors) and the image/label/mask checks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from medtrain.errors import DataError
from medtrain.io.volumes import open_volume, write_volume
from medtrain.recipes.volume_seg.cases import (
    check_cases,
    discover_cases,
    read_box,
    slab_boxes,
)


def _touch(root: Path, *names: str, shape: tuple[int, ...] = (2, 4, 4)) -> None:
    for name in names:
        write_volume(root / name, np.zeros(shape, dtype=np.uint8))


# ---------------------------------------------------------------------------------------------- discovery


def test_discovery_sorts_cases_matches_longest_stem_and_finds_targets(tmp_path: Path) -> None:
    _touch(tmp_path, "images/b.zarr", "images/a.zarr", "images/a_b.tif")
    _touch(tmp_path, "labels/a_b_ink.zarr", "labels/a_ink.nii.gz", "labels/b_damage.zarr", "masks/a_b_ink.zarr")
    _touch(tmp_path, "images/.hidden.zarr")
    (tmp_path / "labels/notes.txt").write_text("ignored")
    index = discover_cases(tmp_path)
    assert index.names == ("a", "a_b", "b")
    assert index.targets == ("damage", "ink")
    assert index.case("a_b").labels == {"ink": tmp_path / "labels/a_b_ink.zarr"}
    assert index.case("a_b").masks == {"ink": tmp_path / "masks/a_b_ink.zarr"}
    assert index.case("a").labels == {"ink": tmp_path / "labels/a_ink.nii.gz"}
    assert index.case("b").labels == {"damage": tmp_path / "labels/b_damage.zarr"} and index.case("b").masks == {}


def test_configured_targets_keep_their_order_and_pick_the_matching_prefix(tmp_path: Path) -> None:
    _touch(tmp_path, "images/a.zarr", "images/a_b.zarr", "labels/a_b_ink.zarr", "labels/a_b_sheet.zarr")
    index = discover_cases(tmp_path, targets=["sheet", "b_ink"])
    # with target 'b_ink' configured, a_b_ink belongs to volume 'a'; with 'ink' it would belong to 'a_b'
    assert index.targets == ("sheet", "b_ink")
    assert index.case("a").labels == {"b_ink": tmp_path / "labels/a_b_ink.zarr"}
    assert index.case("a_b").labels == {"sheet": tmp_path / "labels/a_b_sheet.zarr"}


def test_image_format_restricts_every_folder(tmp_path: Path) -> None:
    _touch(tmp_path, "images/a.zarr", "images/b.tif", "labels/a_ink.zarr", "labels/b_ink.tif")
    assert discover_cases(tmp_path, image_format="tif").names == ("b",)
    assert discover_cases(tmp_path, image_format="zarr").names == ("a",)
    with pytest.raises(ValueError, match="image_format"):
        discover_cases(tmp_path, image_format="png")


BAD_LAYOUTS = [
    ("no images folder", [], None, "no images/ folder"),
    ("empty images", ["labels/a_ink.zarr"], None, "images: no volumes"),
    ("label without image", ["images/a.zarr", "labels/x_ink.zarr"], None, r"labels/x_ink.zarr: no image images/x\.\*"),
    ("label without image, targets", ["images/a.zarr", "labels/x_y_ink.zarr"], ["ink"], "no image images/x_y"),
    ("unknown target", ["images/a.zarr", "labels/a_ink.zarr", "labels/a_foo.zarr"], ["ink"], "'foo' is not one of"),
    ("no underscore", ["images/a.zarr", "labels/ink.zarr"], None, "does not match labels/<vol>_<target>"),
    ("target without label", ["images/a.zarr", "labels/a_ink.zarr"], ["ink", "damage"], "target 'damage' has no"),
    ("duplicate image", ["images/a.zarr", "images/a.tif", "labels/a_ink.zarr"], None, "two images for volume 'a'"),
    ("duplicate label", ["images/a.zarr", "labels/a_ink.zarr", "labels/a_ink.tif"], None, "two label files"),
    ("mask without label", ["images/a.zarr", "labels/a_ink.zarr", "masks/a_dmg.zarr"], None, "no label labels/a_dmg"),
    ("no labels at all", ["images/a.zarr"], None, "no label files"),
]


@pytest.mark.parametrize(("name", "files", "targets", "message"), BAD_LAYOUTS, ids=[row[0] for row in BAD_LAYOUTS])
def test_bad_layouts_raise_data_errors_naming_the_file(
    tmp_path: Path, name: str, files: list[str], targets: list[str] | None, message: str
) -> None:
    (tmp_path / "data").mkdir()
    if name == "empty images":
        (tmp_path / "data/images").mkdir()
    _touch(tmp_path / "data", *files)
    with pytest.raises(DataError, match=message):
        discover_cases(tmp_path / "data", targets=targets)


def test_dataset_json_spacing_channels_and_targets(tmp_path: Path) -> None:
    _touch(tmp_path, "images/a.zarr", "images/b.zarr", "labels/a_ink.zarr")
    payload = {"spacing": {"a": [2, 1, 1]}, "channel_names": {"0": "CT"}, "targets": {"ink": {"classes": 3}}}
    (tmp_path / "dataset.json").write_text(json.dumps(payload))
    index = discover_cases(tmp_path)
    assert index.spacing_for("a") == (2.0, 1.0, 1.0) and index.spacing_for("b") is None
    assert index.channel_names == ("CT",) and index.target_classes == {"ink": 3}
    (tmp_path / "dataset.json").write_text(json.dumps({"spacing": [3, 0.5, 0.5]}))
    assert discover_cases(tmp_path).spacing_for("b") == (3.0, 0.5, 0.5)
    for bad, message in [({"spacing": {"zz": [1, 1, 1]}}, "unknown|no image"), ({"spacing": [1, -1, 1]}, "positive")]:
        (tmp_path / "dataset.json").write_text(json.dumps(bad))
        with pytest.raises(DataError, match=message):
            discover_cases(tmp_path)


# ---------------------------------------------------------------------------------------------- checks


def _dataset(root: Path) -> Path:
    """Two 3-D cases: a (zarr, spacing in the file, mask), b (tif without spacing: spacing from dataset.json)."""
    label_a = np.zeros((6, 8, 8), dtype=np.uint8)
    label_a[1:3, 2:4, 2:6] = 1
    write_volume(root / "images/a.zarr", np.ones((6, 8, 8), np.float32), spacing=(2.0, 0.5, 0.5), chunks=(2, 8, 8))
    write_volume(root / "labels/a_ink.zarr", label_a)
    write_volume(root / "masks/a_ink.zarr", (label_a > 0).astype(np.uint8))
    write_volume(root / "images/b.tif", np.ones((4, 10, 8), np.int16))
    write_volume(root / "labels/b_ink.tif", np.full((4, 10, 8), 2, np.uint8))
    (root / "dataset.json").write_text(json.dumps({"spacing": {"b": [3.0, 1.0, 1.0]}}))
    return root


def test_check_cases_summarises_shapes_spacing_channels_and_foreground(tmp_path: Path) -> None:
    summary = check_cases(discover_cases(_dataset(tmp_path)), target_classes={"ink": 3}, max_slab_bytes=256)
    a, b = summary.cases
    assert (a.name, a.shape, a.spacing, a.spacing_source, a.channels) == ("a", (6, 8, 8), (2.0, 0.5, 0.5), "file", 1)
    assert (b.shape, b.spacing, b.spacing_source) == ((4, 10, 8), (3.0, 1.0, 1.0), "dataset.json")
    assert a.foreground_voxels == {"ink": 16} and b.foreground_voxels == {"ink": 320}
    assert summary.spatial_dims == 3 and summary.channels == 1 and summary.warnings == ()
    assert summary.median_shape == (5.0, 9.0, 8.0) and summary.median_spacing == (2.5, 0.75, 0.75)
    assert json.loads(json.dumps(summary.as_dict()))["cases"][0]["shape"] == [6, 8, 8]


def test_missing_spacing_defaults_to_one_with_a_warning(tmp_path: Path) -> None:
    _dataset(tmp_path)
    (tmp_path / "dataset.json").unlink()
    summary = check_cases(discover_cases(tmp_path), target_classes={"ink": None})
    assert summary.cases[1].spacing == (1.0, 1.0, 1.0) and summary.cases[1].spacing_source == "default"
    assert len(summary.warnings) == 1 and "images/b.tif" in summary.warnings[0]


def _break(root: Path, what: str) -> tuple[dict[str, int | None], int | None]:
    classes: dict[str, int | None] = {"ink": 3}
    channels = None
    if what == "shape":
        write_volume(root / "labels/b_ink.tif", np.zeros((4, 10, 7), np.uint8))
    elif what == "class":
        classes = {"ink": 2}
    elif what == "float label":
        write_volume(root / "labels/b_ink.tif", np.full((4, 10, 8), 0.5, np.float32))
    elif what == "nan":
        image = np.ones((6, 8, 8), np.float32)
        image[5, 7, 1] = np.nan
        write_volume(root / "images/a.zarr", image, chunks=(2, 8, 8))
    elif what == "mask":
        write_volume(root / "masks/a_ink.zarr", np.full((6, 8, 8), 255, np.uint8))
    elif what == "channels":
        write_volume(root / "images/b.tif", np.ones((2, 4, 10, 8), np.int16))
    elif what == "in_channels":
        channels = 3
    elif what == "unreadable":
        (root / "images/a.zarr/zarr.json").write_text("{not json")
    elif what == "mixed dims":
        write_volume(root / "images/b.tif", np.ones((10, 8), np.int16))
        write_volume(root / "labels/b_ink.tif", np.ones((10, 8), np.uint8))
    return classes, channels


BAD_DATA = [
    ("shape", r"labels/b_ink.tif: shape \(4, 10, 7\) does not match image images/b.tif \(4, 10, 8\)"),
    ("class", r"labels/b_ink.tif: label .*value 2 at .* expected integer classes in \[0, 2\)"),
    ("float label", r"labels/b_ink.tif: .*value 0.5 .*integer classes"),
    ("nan", r"images/a.zarr: nan at \(c, z, y, x\) = \(0, 5, 7, 1\)"),
    ("mask", "masks/a_ink.zarr: mask value 255 .* expected 0 or 1"),
    ("channels", r"images/b.tif: 2 channel\(s\) but images/a.zarr has 1"),
    ("in_channels", "in_channels=3"),
    ("unreadable", "a.zarr"),
    ("mixed dims", "images/a.zarr: 3-D volume, but images/b.tif is 2-D"),
]


@pytest.mark.parametrize(("what", "message"), BAD_DATA, ids=[row[0] for row in BAD_DATA])
def test_bad_data_raises_data_errors_naming_the_file(tmp_path: Path, what: str, message: str) -> None:
    _dataset(tmp_path)
    classes, channels = _break(tmp_path, what)
    with pytest.raises(DataError, match=message):
        check_cases(discover_cases(tmp_path), target_classes=classes, in_channels=channels, max_slab_bytes=256)


def test_two_d_data_from_one_slice_volumes_and_2d_arrays(tmp_path: Path) -> None:
    write_volume(tmp_path / "images/a.zarr", np.ones((1, 6, 5), np.float32), spacing=(1.0, 0.5, 0.25))
    write_volume(tmp_path / "labels/a_ink.zarr", np.ones((6, 5), np.uint8))
    write_volume(tmp_path / "images/b.tif", np.ones((3, 4, 5), np.float32), axes="cyx", spacing=(0.5, 0.5))
    write_volume(tmp_path / "labels/b_ink.tif", np.ones((1, 4, 5), np.uint8))
    with pytest.raises(DataError, match=r"images/b\.tif: 3 channel"):
        check_cases(discover_cases(tmp_path), target_classes={})
    write_volume(tmp_path / "images/b.tif", np.ones((4, 5), np.float32), spacing=(0.5, 0.5))
    summary = check_cases(discover_cases(tmp_path), target_classes={"ink": 2})
    assert summary.spatial_dims == 2
    assert [(c.shape, c.spacing) for c in summary.cases] == [((6, 5), (0.5, 0.25)), ((4, 5), (0.5, 0.5))]


# ---------------------------------------------------------------------------------------------- reading


SLABS = [
    # (spatial, bytes per voxel, max bytes) -> expected (starts, sizes)
    ((5, 2, 2), 1, 8, [((0, 0, 0), (2, 2, 2)), ((2, 0, 0), (2, 2, 2)), ((4, 0, 0), (1, 2, 2))]),
    ((3, 2, 2), 4, 1, [((0, 0, 0), (1, 2, 2)), ((1, 0, 0), (1, 2, 2)), ((2, 0, 0), (1, 2, 2))]),
    ((1, 3, 4), 2, 16, [((0, 0, 0), (1, 2, 4)), ((0, 2, 0), (1, 1, 4))]),
    ((2, 2, 2), 1, 10**6, [((0, 0, 0), (2, 2, 2))]),
]


@pytest.mark.parametrize(("spatial", "per_voxel", "max_bytes", "expected"), SLABS)
def test_slab_boxes_cover_the_volume_within_the_memory_bound(
    spatial: tuple[int, int, int], per_voxel: int, max_bytes: int, expected: list[tuple[tuple[int, ...], ...]]
) -> None:
    assert list(slab_boxes(spatial, per_voxel, max_bytes=max_bytes)) == expected


def test_read_box_gives_channel_first_patches_for_2d_and_3d(tmp_path: Path) -> None:
    data = np.arange(2 * 3 * 4 * 5, dtype=np.int16).reshape(2, 3, 4, 5)
    volume = open_volume(write_volume(tmp_path / "v.zarr", data))
    np.testing.assert_array_equal(read_box(volume, (1, 0, 2), (2, 3, 3)), data[:, 1:3, 0:3, 2:5])
    flat = open_volume(write_volume(tmp_path / "f.zarr", data[0, 0]))
    np.testing.assert_array_equal(read_box(flat, (1, 2), (2, 2)), data[0, 0][None, 1:3, 2:4])
    one_slice = open_volume(write_volume(tmp_path / "s.zarr", data[:, :1]))
    np.testing.assert_array_equal(read_box(one_slice, (0, 1), (4, 2)), data[:, 0, :, 1:3])
    with pytest.raises(ValueError):
        read_box(volume, (0, 0), (2, 2))
