"""volume-seg valid-patch index: grid, coverage and bounding-box rules, foreground samples, cache, sampling."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import medtrain.recipes.volume_seg.patches as patches
from medtrain.errors import DataError
from medtrain.io.volumes import write_volume
from medtrain.recipes.volume_seg.cases import VolumeCase
from medtrain.recipes.volume_seg.patches import PatchIndex, build_patch_index, grid_starts, sample_patch_start

GRID = [
    # (extent, size, stride) -> starts
    (8, 4, 4, [0, 4]),
    (10, 4, 4, [0, 4, 6]),
    (10, 4, 3, [0, 3, 6]),
    (9, 4, 2, [0, 2, 4, 5]),
    (4, 4, 1, [0]),
    (5, 4, 2, [0, 1]),
    (4, 5, 2, [0]),  # larger than the extent: one start centring the extent in the patch
    (4, 7, 1, [-1]),
    (3, 8, 4, [-2]),
]


@pytest.mark.parametrize(("extent", "size", "stride", "expected"), GRID)
def test_grid_starts_step_by_stride_and_end_flush(extent: int, size: int, stride: int, expected: list[int]) -> None:
    assert grid_starts(extent, size, stride) == expected


def _square_case(root: Path, *, mask: np.ndarray | None = None, name: str = "a") -> VolumeCase:
    """A 1×8×8 volume whose 'ink' label is the square rows 1-4, cols 1-4 (value 1; voxel (4, 4) is class 2)."""
    label = np.zeros((1, 8, 8), np.uint8)
    label[0, 1:5, 1:5] = 1
    label[0, 4, 4] = 2
    write_volume(root / f"images/{name}.zarr", np.zeros((1, 8, 8), np.float32))
    write_volume(root / f"labels/{name}_ink.zarr", label)
    masks = {}
    if mask is not None:
        masks["ink"] = write_volume(root / f"masks/{name}_ink.zarr", mask)
    return VolumeCase(name, root / f"images/{name}.zarr", {"ink": root / f"labels/{name}_ink.zarr"}, masks)


# labelled voxels per 4x4 patch: (0,0): 9/16, (0,4): 3/16, (4,0): 3/16, (4,4): 1/16
COVERAGE = [
    (0.0, 0.0, [(0, 0), (0, 4), (4, 0), (4, 4)]),
    (0.0625, 0.0, [(0, 0), (0, 4), (4, 0), (4, 4)]),
    (0.1, 0.0, [(0, 0), (0, 4), (4, 0)]),
    (0.25, 0.0, [(0, 0)]),
    (0.5, 0.0, [(0, 0)]),
    (0.0, 0.75, [(0, 0)]),  # (0, 0): bbox rows 1-3, cols 1-3 = 3/4 on both axes; the others span 1/4 on one axis
    (0.0, 0.25, [(0, 0), (0, 4), (4, 0), (4, 4)]),
]


@pytest.mark.parametrize(("ratio", "bbox", "expected"), COVERAGE)
def test_hand_example_coverage_and_bbox_rules(
    tmp_path: Path, ratio: float, bbox: float, expected: list[tuple[int, int]]
) -> None:
    index = build_patch_index([_square_case(tmp_path)], ["ink"], (4, 4), min_labeled_ratio=ratio, min_bbox_percent=bbox)
    assert [tuple(s) for s in index.starts.tolist()] == expected
    assert index.has_foreground.all() and index.shapes.tolist() == [[8, 8]]


@pytest.mark.parametrize(("ratio", "bbox"), [(0.6, 0.0), (0.0, 0.8)])
def test_no_kept_patch_is_a_data_error(tmp_path: Path, ratio: float, bbox: float) -> None:
    with pytest.raises(DataError, match="passes min_labeled_ratio"):
        build_patch_index([_square_case(tmp_path)], ["ink"], (4, 4), min_labeled_ratio=ratio, min_bbox_percent=bbox)


def test_a_mask_defines_the_labelled_voxels_and_empty_patches_keep_no_foreground(tmp_path: Path) -> None:
    mask = np.zeros((1, 8, 8), np.uint8)
    mask[0, 4:, :] = 1  # only the bottom half is labelled (the label's square is mostly in the top half)
    index = build_patch_index([_square_case(tmp_path, mask=mask)], ["ink"], (4, 4), min_labeled_ratio=0.5)
    assert index.starts.tolist() == [[4, 0], [4, 4]]
    assert index.has_foreground.tolist() == [True, True]
    index = build_patch_index([_square_case(tmp_path)], ["ink"], (4, 4), stride=(2, 4), min_labeled_ratio=0.0)
    assert index.starts.tolist() == [[0, 0], [0, 4], [2, 0], [2, 4], [4, 0], [4, 4]]
    assert index.has_foreground.tolist() == [True, True, True, True, True, True]


def test_3d_rows_and_patchwise_reads_agree_and_targets_are_united(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    ink = (rng.random((6, 10, 9)) < 0.05).astype(np.uint8)
    sheet = np.zeros((6, 10, 9), np.uint8)
    sheet[3:, 5:, :] = 1
    write_volume(tmp_path / "images/v.zarr", np.zeros((2, 6, 10, 9), np.float32))
    write_volume(tmp_path / "labels/v_ink.zarr", ink)
    write_volume(tmp_path / "labels/v_sheet.nii", sheet)
    case = VolumeCase("v", tmp_path / "images/v.zarr", {"ink": tmp_path / "labels/v_ink.zarr",
                                                         "sheet": tmp_path / "labels/v_sheet.nii"})  # fmt: skip
    kwargs = {"min_labeled_ratio": 0.2, "stride": (2, 3, 3)}
    by_row = build_patch_index([case], ["ink", "sheet"], (3, 4, 4), **kwargs)
    by_patch = build_patch_index([case], ["ink", "sheet"], (3, 4, 4), max_slab_bytes=8, **kwargs)
    expected, flags = [], []
    for z in grid_starts(6, 3, 2):
        for y in grid_starts(10, 4, 3):
            for x in grid_starts(9, 4, 3):
                box = np.s_[z : z + 3, y : y + 4, x : x + 4]
                if ((ink[box] > 0) | (sheet[box] > 0)).mean() >= 0.2:
                    expected.append([z, y, x])
                    flags.append(bool(ink[box].any()))
    assert expected and by_row.starts.tolist() == by_patch.starts.tolist() == expected
    assert by_row.has_foreground.tolist() == flags
    assert sorted(by_row.foreground_voxels.tolist()) == np.argwhere(ink).tolist()  # fewer than 1000: all stored


def test_foreground_samples_per_class_are_bounded_and_seeded(tmp_path: Path) -> None:
    case = _square_case(tmp_path)
    full = build_patch_index([case], ["ink"], (4, 4))
    assert full.foreground_class.tolist() == [1] * 15 + [2] and full.foreground_voxels[-1].tolist() == [4, 4]
    one = build_patch_index([case], ["ink"], (4, 4), max_foreground_samples=2, seed=5)
    assert one.foreground_class.tolist() == [1, 1, 2]
    assert one.foreground_voxels.tolist() == build_patch_index([case], ["ink"], (4, 4), max_foreground_samples=2,
                                                               seed=5).foreground_voxels.tolist()  # fmt: skip
    assert set(map(tuple, one.foreground_voxels[:2].tolist())) <= set(map(tuple, full.foreground_voxels.tolist()))


def test_a_volume_smaller_than_the_patch_gets_one_centred_padded_patch(tmp_path: Path) -> None:
    case = _square_case(tmp_path)
    # (4, 9) on 8×8: y starts 0, 4; x start 0 with a column of padding. Patch (0, 0) has 12 labelled voxels:
    # 12/32 = 0.375 of its part inside the volume (kept at 0.35), 12/36 = 0.33 of the whole patch (would not be).
    assert build_patch_index([case], ["ink"], (4, 9), min_labeled_ratio=0.35).starts.tolist() == [[0, 0]]
    big = build_patch_index([case], ["ink"], (10, 11))
    assert big.starts.tolist() == [[-1, -1]] and big.has_foreground.tolist() == [True]
    rng = np.random.default_rng(0)
    starts = {sample_patch_start(big, rng, foreground_probability=1.0)[1] for _ in range(200)}
    assert all(-2 <= y <= 0 and -3 <= x <= 0 for y, x in starts) and len(starts) > 3  # the volume stays inside
    cube = build_patch_index([case], ["ink"], (2, 4, 4))  # a 3-D patch on one slice: padded along z
    assert cube.starts[:, 0].tolist() == [0, 0, 0, 0]


def test_cache_hit_reads_no_volume_and_misses_on_parameter_or_file_change(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    case = _square_case(tmp_path / "data")
    opened: list[Path] = []
    real_open = patches.open_volume

    def counting_open(path: Path) -> object:
        opened.append(Path(path))
        return real_open(path)

    monkeypatch.setattr(patches, "open_volume", counting_open)
    cache = tmp_path / "cache"
    first = build_patch_index([case], ["ink"], (4, 4), min_labeled_ratio=0.1, cache_dir=cache)
    assert opened and len(list(cache.glob("patches_*.npz"))) == 1
    opened.clear()
    hit = build_patch_index([case], ["ink"], (4, 4), min_labeled_ratio=0.1, cache_dir=cache)
    assert opened == [] and hit.starts.tolist() == first.starts.tolist() == [[0, 0], [0, 4], [4, 0]]
    assert hit.case_names == ("a",) and hit.patch_size == (4, 4)
    build_patch_index([case], ["ink"], (4, 4), min_labeled_ratio=0.25, cache_dir=cache)
    assert opened and len(list(cache.glob("patches_*.npz"))) == 2
    opened.clear()
    write_volume(case.labels["ink"], np.ones((1, 8, 8), np.uint8))
    changed = build_patch_index([case], ["ink"], (4, 4), min_labeled_ratio=0.1, cache_dir=cache)
    assert opened and changed.starts.tolist() == [[0, 0], [0, 4], [4, 0], [4, 4]]


def test_save_load_round_trip_and_subset(tmp_path: Path) -> None:
    cases = [_square_case(tmp_path, name="a"), _square_case(tmp_path, name="b")]
    index = build_patch_index(cases, ["ink"], (4, 4), min_labeled_ratio=0.1)
    loaded = PatchIndex.load(index.save(tmp_path / "index.npz"))
    for key, value in index.arrays().items():
        np.testing.assert_array_equal(loaded.arrays()[key], value)
    only_b = loaded.subset(["b"])
    assert only_b.case_index.tolist() == [1, 1, 1] and set(only_b.foreground_case.tolist()) == {1}
    assert len(only_b) == 3 and only_b.case_names == ("a", "b")


def test_sample_patch_start_oversamples_foreground_and_clamps(tmp_path: Path) -> None:
    label = np.zeros((1, 8, 8), np.uint8)
    label[0, 7, 7] = 1  # one foreground voxel in the corner: the centred patch is clamped to start (4, 4)
    write_volume(tmp_path / "images/c.zarr", np.zeros((1, 8, 8), np.float32))
    write_volume(tmp_path / "labels/c_ink.zarr", label)
    case = VolumeCase("c", tmp_path / "images/c.zarr", {"ink": tmp_path / "labels/c_ink.zarr"})
    index = build_patch_index([case], ["ink"], (4, 4), stride=(2, 2))
    rng = np.random.default_rng(0)
    assert {sample_patch_start(index, rng, foreground_probability=1.0) for _ in range(20)} == {(0, (4, 4))}
    uniform = [sample_patch_start(index, rng, foreground_probability=0.0) for _ in range(200)]
    assert {start for _, start in uniform} == {tuple(s) for s in index.starts.tolist()}
    draws = [sample_patch_start(index, rng, foreground_probability=0.33)[1] == (4, 4) for _ in range(3000)]
    # P(start (4, 4)) = 0.33 + 0.67 / 9 (one of the 9 grid patches)
    assert np.mean(draws) == pytest.approx(0.33 + 0.67 / 9, abs=0.03)
    with pytest.raises(ValueError):
        sample_patch_start(index, rng, foreground_probability=1.5)
