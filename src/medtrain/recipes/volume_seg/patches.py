"""The valid-patch index of volume-seg: which patches of a regular grid hold enough labelled voxels, computed once
and cached, plus stored foreground voxels for nnU-Net-style foreground oversampling.

Grid: along each spatial axis, starts ``0, stride, 2·stride, ...`` while the patch fits, plus a last start flush
with the end (``extent - size``) when the grid does not reach it (:func:`grid_starts`). ``stride`` defaults to
the patch size (no overlap). Along an axis where the volume is smaller than the patch (nnU-Net plans the patch from
the median shape, so some volumes are), the one start centres the volume in the patch and the rest of the patch is
padding: the data loader pads the image with 0 after normalisation, labels with 0 and loss masks with 0, so padding
never counts in the loss. The rules below look only at the part of a patch inside the volume.

Labelled voxels (as the seed: "masks if available, otherwise labels"): for each target of ``targets`` that a case
has, the voxels of its mask where mask > 0 if the case has a mask for that target, else the voxels where its label
> 0 (any channel); the union over the targets. A patch is kept when

* (a) ``labelled voxels / patch voxels inside the volume >= min_labeled_ratio``, and
* (b) ``min_bbox_percent == 0``, or the bounding box of its labelled voxels spans at least ``min_bbox_percent``
  (a fraction, 0-1) of the patch extent inside the volume on **every** axis (the seed's bounding-box rule); a
  patch without labelled voxels fails (b) when ``min_bbox_percent > 0``.

So ``min_labeled_ratio = 0`` with ``min_bbox_percent = 0`` keeps every patch of the grid. Each kept patch also
records whether it holds foreground of ``main_target`` (label > 0). Per case and class of ``main_target`` (the
integer label value; 1 for a float or multi-channel label), up to ``max_foreground_samples`` foreground voxel
positions are stored (a uniform bottom-k sample, deterministic by ``seed``), for :func:`sample_patch_start`.

Reading is bounded: labels and masks are read one row of patches (a slab of patch thickness) at a time when that
fits ``max_slab_bytes``, else patch by patch; the foreground sample scans slabs. The index is cached as
``<cache_dir>/patches_<key>.npz`` (no pickle), ``key`` from the files' fingerprints (name, size, mtime, head/tail
hash; for a ``.zarr`` folder its metadata files plus the size and mtime of every chunk file) and every
parameter; a cache hit opens no volume.

Coordinates have one entry per axis of ``patch_size``: ``(z, y, x)``, or ``(y, x)`` for 2-D data (every volume
a 2-D array or one z slice), matching :func:`medtrain.recipes.volume_seg.cases.read_box`.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from medtrain.errors import DataError
from medtrain.io.atomic import atomic_open
from medtrain.io.fingerprint import cache_key
from medtrain.io.volumes import Volume, box_inside, open_volume
from medtrain.recipes.volume_seg.cases import (
    DEFAULT_SLAB_BYTES,
    VolumeCase,
    czyx_shape,
    fingerprint_cases,
    read_czyx,
    slab_boxes,
)

__all__ = ["PatchIndex", "build_patch_index", "grid_starts", "sample_patch_start"]

INDEX_VERSION = 1


def grid_starts(extent: int, size: int, stride: int) -> list[int]:
    """Patch starts along one axis: ``0, stride, ...`` while ``start + size <= extent``, then ``extent - size`` if
    the last patch does not end flush; when ``size > extent``, the one start ``-((size - extent) // 2)`` that
    centres the extent in the patch. ``ValueError`` when ``extent``, ``size`` or ``stride`` is below 1."""
    if extent < 1 or size < 1 or stride < 1:
        raise ValueError(f"grid_starts: size {size}, stride {stride} for extent {extent}")
    if size > extent:
        return [-((size - extent) // 2)]
    starts = list(range(0, extent - size + 1, stride))
    if starts[-1] != extent - size:
        starts.append(extent - size)
    return starts


@dataclass(frozen=True)
class PatchIndex:
    """Kept patches and stored foreground voxels of a set of cases.

    ``case_index[i]`` (into ``case_names``), ``starts[i]`` (``[N, D]``) and ``has_foreground[i]`` describe patch
    ``i`` of size ``patch_size``; ``shapes[k]`` is the spatial shape of case ``k``. ``foreground_case``,
    ``foreground_class`` and ``foreground_voxels`` (``[M, D]``) list the stored foreground voxels of ``main_target``,
    sorted by case and class.
    """

    case_names: tuple[str, ...]
    shapes: np.ndarray
    patch_size: tuple[int, ...]
    stride: tuple[int, ...]
    case_index: np.ndarray
    starts: np.ndarray
    has_foreground: np.ndarray
    foreground_case: np.ndarray
    foreground_class: np.ndarray
    foreground_voxels: np.ndarray

    def __len__(self) -> int:
        return int(self.case_index.shape[0])

    def subset(self, names: Sequence[str]) -> PatchIndex:
        """The patches and foreground voxels of the cases ``names`` only (``case_names`` unchanged, so case
        indices stay valid). ``KeyError`` for a name that is not in ``case_names``."""
        wanted = np.array([self.case_names.index(name) for name in names], dtype=np.int32)
        rows = np.isin(self.case_index, wanted)
        voxels = np.isin(self.foreground_case, wanted)
        return PatchIndex(
            self.case_names,
            self.shapes,
            self.patch_size,
            self.stride,
            self.case_index[rows],
            self.starts[rows],
            self.has_foreground[rows],
            self.foreground_case[voxels],
            self.foreground_class[voxels],
            self.foreground_voxels[voxels],
        )

    @cached_property
    def foreground_groups(self) -> dict[int, list[tuple[int, int]]]:
        """Case index → ``[(offset, count), ...]`` of its foreground voxels, one run per class."""
        groups: dict[int, list[tuple[int, int]]] = {}
        if self.foreground_case.size == 0:
            return groups
        keys = np.stack([self.foreground_case, self.foreground_class], axis=1)
        change = np.flatnonzero(np.any(keys[1:] != keys[:-1], axis=1)) + 1
        bounds = [0, *change.tolist(), len(keys)]
        for begin, end in itertools.pairwise(bounds):
            groups.setdefault(int(keys[begin, 0]), []).append((begin, end - begin))
        return groups

    def arrays(self) -> dict[str, np.ndarray]:
        """Every field as a numpy array (for ``np.savez``; strings as a unicode array)."""
        return {
            "version": np.array(INDEX_VERSION),
            "case_names": np.array(self.case_names, dtype=str),
            "shapes": self.shapes,
            "patch_size": np.array(self.patch_size, dtype=np.int64),
            "stride": np.array(self.stride, dtype=np.int64),
            "case_index": self.case_index,
            "starts": self.starts,
            "has_foreground": self.has_foreground,
            "foreground_case": self.foreground_case,
            "foreground_class": self.foreground_class,
            "foreground_voxels": self.foreground_voxels,
        }

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the index to ``path`` as a compressed npz, atomically; return the path."""
        with atomic_open(path) as handle:
            np.savez_compressed(handle, **self.arrays())
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> PatchIndex:
        """Read an index written by :meth:`save` (``allow_pickle=False``); ``ValueError`` for another version."""
        with np.load(path, allow_pickle=False) as data:
            if int(data["version"]) != INDEX_VERSION:
                raise ValueError(f"{path}: patch index version {int(data['version'])}, expected {INDEX_VERSION}")
            return cls(
                case_names=tuple(str(n) for n in data["case_names"]),
                shapes=data["shapes"],
                patch_size=tuple(int(v) for v in data["patch_size"]),
                stride=tuple(int(v) for v in data["stride"]),
                case_index=data["case_index"],
                starts=data["starts"],
                has_foreground=data["has_foreground"],
                foreground_case=data["foreground_case"],
                foreground_class=data["foreground_class"],
                foreground_voxels=data["foreground_voxels"],
            )


# ---------------------------------------------------------------------------------------------- fingerprint


# ---------------------------------------------------------------------------------------------- building


def _labelled(volumes: Sequence[tuple[Volume, bool]], starts: Sequence[int], sizes: Sequence[int]) -> np.ndarray:
    """Union of ``> 0`` over the given (volume, is-mask) sources in the ``(z, y, x)`` box; ``[z, y, x]`` bool."""
    out = np.zeros(tuple(sizes), dtype=bool)
    for volume, _ in volumes:
        out |= (read_czyx(volume, starts, sizes) > 0).any(axis=0)
    return out


def _bbox_ok(labelled: np.ndarray, size: Sequence[int], min_bbox_percent: float) -> bool:
    """Whether the labelled bounding box spans ``>= min_bbox_percent`` of ``size`` on every axis."""
    for axis in range(labelled.ndim):
        projection = labelled.any(axis=tuple(a for a in range(labelled.ndim) if a != axis))
        hits = np.flatnonzero(projection)
        if hits.size == 0 or (hits[-1] - hits[0] + 1) / size[axis] < min_bbox_percent:
            return False
    return True


def _case_patches(
    case: VolumeCase,
    targets: Sequence[str],
    main_target: str,
    patch: tuple[int, int, int],
    stride: tuple[int, int, int],
    shape: tuple[int, int, int],
    min_labeled_ratio: float,
    min_bbox_percent: float,
    max_bytes: int,
) -> tuple[list[tuple[int, int, int]], list[bool]]:
    """Kept starts (``(z, y, x)``) and their has-foreground flags for one case."""
    sources = [
        (open_volume(case.masks[t]), True) if t in case.masks else (open_volume(case.labels[t]), False)
        for t in targets
        if t in case.labels
    ]
    main = [(open_volume(case.labels[main_target]), False)] if main_target in case.labels else []
    grid = [grid_starts(n, p, s) for n, p, s in zip(shape, patch, stride, strict=True)]
    per_voxel = sum(v.channels * v.dtype.itemsize for v, _ in [*sources, *main])
    by_row = per_voxel * patch[0] * shape[1] * shape[2] <= max_bytes
    kept: list[tuple[int, int, int]] = []
    foreground: list[bool] = []
    for z in grid[0]:
        if by_row:
            (row_z,), (row_depth,), _ = box_inside((z,), (patch[0],), (shape[0],))
            row = (row_z, 0, 0), (row_depth, shape[1], shape[2])
            row_labelled, row_main = _labelled(sources, *row), _labelled(main, *row)
        for y, x in itertools.product(grid[1], grid[2]):
            starts, sizes, _ = box_inside((z, y, x), patch, shape)  # the part of the patch inside the volume
            if by_row:
                box = (slice(None), *(slice(a, a + n) for a, n in zip(starts[1:], sizes[1:], strict=True)))
                labelled, main_fg = row_labelled[box], row_main[box]
            else:
                labelled, main_fg = _labelled(sources, starts, sizes), _labelled(main, starts, sizes)
            if np.count_nonzero(labelled) / float(np.prod(sizes)) < min_labeled_ratio:
                continue
            if min_bbox_percent > 0 and not _bbox_ok(labelled, sizes, min_bbox_percent):
                continue
            kept.append((z, y, x))
            foreground.append(bool(main_fg.any()))
    for volume, _ in [*sources, *main]:
        volume.close()
    return kept, foreground


def _foreground_samples(
    case: VolumeCase, main_target: str, max_samples: int, seed: Sequence[int], max_bytes: int
) -> tuple[np.ndarray, np.ndarray]:
    """``(classes [M], voxels [M, 3])`` of up to ``max_samples`` foreground voxels per class, sorted by class."""
    if main_target not in case.labels or max_samples < 1:
        return np.empty(0, np.int32), np.empty((0, 3), np.int64)
    rng = np.random.default_rng(seed)
    label = open_volume(case.labels[main_target])
    integer_classes = label.dtype.kind in "iub" and label.channels == 1
    kept: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    per_voxel = label.channels * label.dtype.itemsize + 40  # coordinates and keys of a foreground voxel
    for starts, sizes in slab_boxes(czyx_shape(label)[1:], per_voxel, max_bytes=max_bytes):
        data = read_czyx(label, starts, sizes)
        positive = (data > 0).any(axis=0)
        coords = np.argwhere(positive) + np.asarray(starts)
        if coords.size == 0:
            continue
        values = data[0][positive].astype(np.int64) if integer_classes else np.ones(len(coords), np.int64)
        for value in np.unique(values):
            mine = coords[values == value]
            keys = rng.random(len(mine))
            if int(value) in kept:
                old_keys, old = kept[int(value)]
                keys, mine = np.concatenate([old_keys, keys]), np.concatenate([old, mine])
            if keys.size > max_samples:
                keep = np.argpartition(keys, max_samples - 1)[:max_samples]
                keys, mine = keys[keep], mine[keep]
            kept[int(value)] = (keys, mine)
    label.close()
    classes = sorted(kept)
    voxels = [kept[c][1][np.lexsort(kept[c][1].T[::-1])] for c in classes]
    counts = [len(v) for v in voxels]
    return (
        np.repeat(np.array(classes, dtype=np.int32), counts),
        np.concatenate(voxels) if voxels else np.empty((0, 3), np.int64),
    )


def build_patch_index(
    cases: Sequence[VolumeCase],
    targets: Sequence[str],
    patch_size: Sequence[int],
    *,
    stride: Sequence[int] | None = None,
    min_labeled_ratio: float = 0.0,
    min_bbox_percent: float = 0.0,
    main_target: str | None = None,
    max_foreground_samples: int = 1000,
    seed: int = 0,
    cache_dir: str | os.PathLike[str] | None = None,
    max_slab_bytes: int = DEFAULT_SLAB_BYTES,
) -> PatchIndex:
    """Build (or load from ``cache_dir``) the valid-patch index of ``cases`` (rules in the module docstring).

    ``patch_size`` and ``stride`` have 3 entries ``(z, y, x)``, or 2 ``(y, x)`` for 2-D data; ``targets`` define
    the labelled voxels; ``main_target`` (default ``targets[0]``) the foreground flags and stored foreground voxels.
    Raises :class:`DataError` when a 2-D patch meets a 3-D volume or no patch of any case is kept; ``ValueError``
    for bad arguments. A volume smaller than the patch gets one centred, padded patch per such axis.
    """
    patch = tuple(int(p) for p in patch_size)
    step = tuple(int(s) for s in stride) if stride is not None else patch
    if len(patch) not in (2, 3) or len(step) != len(patch) or min(patch) < 1 or min(step) < 1:
        raise ValueError(f"patch_size {tuple(patch_size)} / stride {stride}: expected 2 or 3 positive sizes each")
    if not 0.0 <= min_labeled_ratio <= 1.0 or not 0.0 <= min_bbox_percent <= 1.0:
        raise ValueError(f"min_labeled_ratio {min_labeled_ratio} and min_bbox_percent {min_bbox_percent}: 0-1")
    if not targets or not cases:
        raise ValueError("build_patch_index: needs at least one case and one target")
    main = main_target if main_target is not None else targets[0]
    params = {
        "version": INDEX_VERSION,
        "cases": [case.name for case in cases],
        "targets": list(targets),
        "main_target": main,
        "patch_size": list(patch),
        "stride": list(step),
        "min_labeled_ratio": float(min_labeled_ratio),
        "min_bbox_percent": float(min_bbox_percent),
        "max_foreground_samples": int(max_foreground_samples),
        "seed": int(seed),
    }
    cache_file = None
    if cache_dir is not None:
        cache_file = Path(cache_dir) / f"patches_{cache_key(fingerprint_cases(cases, targets), params)}.npz"
        if cache_file.exists():
            return PatchIndex.load(cache_file)
    patch3 = patch if len(patch) == 3 else (1, *patch)
    step3 = step if len(step) == 3 else (1, *step)
    shapes, case_index, starts, flags, fg_case, fg_class, fg_voxels = [], [], [], [], [], [], []
    for number, case in enumerate(cases):
        with open_volume(case.image) as image:
            shape3 = czyx_shape(image)[1:]
        if len(patch) == 2 and shape3[0] != 1:
            raise DataError(f"{case.image}: 2-D patch size {patch} for a 3-D volume of shape {image.spatial_shape}")
        kept, foreground = _case_patches(
            case, targets, main, patch3, step3, shape3, min_labeled_ratio, min_bbox_percent, max_slab_bytes
        )
        classes, voxels = _foreground_samples(case, main, max_foreground_samples, [seed, number], max_slab_bytes)
        shapes.append(shape3)
        case_index += [number] * len(kept)
        starts += kept
        flags += foreground
        fg_case.append(np.full(len(classes), number, dtype=np.int32))
        fg_class.append(classes)
        fg_voxels.append(voxels)
    if not starts:
        raise DataError(
            f"no patch of size {patch} in {len(cases)} volume(s) passes min_labeled_ratio={min_labeled_ratio} and "
            f"min_bbox_percent={min_bbox_percent} (labelled voxels of targets {list(targets)}); lower them or check "
            "the labels and masks"
        )
    drop = 0 if len(patch) == 3 else 1
    index = PatchIndex(
        case_names=tuple(case.name for case in cases),
        shapes=np.array(shapes, dtype=np.int64)[:, drop:],
        patch_size=patch,
        stride=step,
        case_index=np.array(case_index, dtype=np.int32),
        starts=np.array(starts, dtype=np.int64)[:, drop:],
        has_foreground=np.array(flags, dtype=bool),
        foreground_case=np.concatenate(fg_case),
        foreground_class=np.concatenate(fg_class),
        foreground_voxels=np.concatenate(fg_voxels)[:, drop:],
    )
    if cache_file is not None:
        index.save(cache_file)
    return index


# ---------------------------------------------------------------------------------------------- sampling


def sample_patch_start(
    index: PatchIndex, rng: np.random.Generator, *, foreground_probability: float = 0.33
) -> tuple[int, tuple[int, ...]]:
    """Draw ``(case index, patch start)`` for training, nnU-Net-style foreground oversampling.

    With probability ``foreground_probability`` (and when the index stores foreground voxels): a case uniformly
    among the cases with stored foreground voxels, a class uniformly among that case's classes, a stored voxel of
    that class uniformly; the patch is centred on it (start = voxel − patch // 2) and clamped into the volume
    (nnU-Net's rule; such a patch need not pass the valid-patch rules), or, along an axis where the volume is
    smaller than the patch, clamped so that the volume stays inside the patch (start in ``[shape − patch, 0]``).
    Otherwise: a kept patch of the index, uniformly. ``ValueError`` for an empty index or a probability outside
    [0, 1].
    """
    if not 0.0 <= foreground_probability <= 1.0:
        raise ValueError(f"foreground_probability {foreground_probability}: expected a value in [0, 1]")
    groups = index.foreground_groups
    if groups and rng.random() < foreground_probability:
        cases = sorted(groups)
        case = cases[int(rng.integers(len(cases)))]
        offset, count = groups[case][int(rng.integers(len(groups[case])))]
        voxel = index.foreground_voxels[offset + int(rng.integers(count))]
        patch = np.asarray(index.patch_size)
        room = index.shapes[case] - patch
        start = np.clip(voxel - patch // 2, np.minimum(room, 0), np.maximum(room, 0))
        return case, tuple(int(v) for v in start)
    if len(index) == 0:
        raise ValueError("sample_patch_start: the patch index is empty")
    row = int(rng.integers(len(index)))
    return int(index.case_index[row]), tuple(int(v) for v in index.starts[row])
