"""The volume-seg dataset layout: find the cases of a data root and check every image/label/mask pair.

Layout (ARCHITECTURE.md)::

    <root>/images/<vol>.<ext>            one image per volume (channels in the file: (c, z, y, x) or (c, y, x))
    <root>/labels/<vol>_<target>.<ext>   one label volume per volume and target
    <root>/masks/<vol>_<target>.<ext>    optional: where the label of <target> is valid (values 0/1)
    <root>/dataset.json                  optional: spacing, channel names, target classes

``<ext>`` is any ending :func:`medtrain.io.volumes.supported_suffix` knows (``.zarr`` array or OME-Zarr,
``.tif``/``.tiff``, ``.nii``/``.nii.gz``). Hidden files (``.name``) and files of other types are ignored. A label
``<vol>_<target>`` is matched to the image whose stem is the **longest** prefix ``<vol>_`` of its stem, so volume
names may contain underscores (``case_01_ink`` with images ``case`` and ``case_01`` belongs to ``case_01``,
target ``ink``); when the targets are configured, the longest prefix whose remainder is a configured target wins.

``dataset.json`` (every key optional, other keys ignored)::

    {"spacing": [sz, sy, sx]}                          one spacing for every volume ((sy, sx) for 2-D data), or
    {"spacing": {"vol_a": [sz, sy, sx], ...}}          one spacing per volume;
    "channel_names": ["CT", "PET"]                     or nnU-Net style {"0": "CT", "1": "PET"};
    "targets": {"ink": {"classes": 2, "class_names": ["background", "ink"]}}   declared classes per target.

Spacing precedence in :func:`check_cases`: the file's spacing (NIfTI header, zarr ``spacing`` attribute, OME
scale, TIFF description), else ``dataset.json``, else 1.0 per axis with a warning in the summary.

2-D data: a dataset is 2-D (``spatial_dims == 2``) when every image is a 2-D array or a volume with one z slice;
shapes and spacings in the summary are then ``(y, x)`` and the recipe squeezes z. Mixing 2-D images with 3-D ones
(z > 1) is a :class:`DataError`. Inside this module every volume is viewed as ``[C, Z, Y, X]`` (``Z = 1`` for 2-D
arrays, ``C = 1`` without a channel axis), so 2-D and 3-D data share one code path.

Large volumes are never read whole: values are checked slab by slab (:func:`slab_boxes`), each slab at most
``max_slab_bytes`` in memory.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medtrain.errors import DataError
from medtrain.io.fingerprint import fingerprint_path
from medtrain.io.json_files import read_json_object
from medtrain.io.paths import require_dir
from medtrain.io.volumes import Volume, open_volume, supported_suffix, volume_stem

__all__ = [
    "DEFAULT_SLAB_BYTES",
    "IMAGE_FORMATS",
    "CaseInfo",
    "CaseSummary",
    "DatasetIndex",
    "VolumeCase",
    "check_cases",
    "czyx_shape",
    "discover_cases",
    "read_box",
    "read_czyx",
    "slab_boxes",
]

IMAGE_FORMATS = {"zarr": "zarr", "tif": "tif", "nifti": "nii"}
"""``image_format`` names accepted by :func:`discover_cases` → the format :func:`supported_suffix` reports."""

DEFAULT_SLAB_BYTES = 64 * 2**20
"""Memory for one slab of the volumes scanned together (64 MiB)."""


# ---------------------------------------------------------------------------------------------- index


@dataclass(frozen=True)
class VolumeCase:
    """One volume: its image file, one label file per target it has, one mask file per masked target."""

    name: str
    image: Path
    labels: dict[str, Path] = field(default_factory=dict)
    masks: dict[str, Path] = field(default_factory=dict)

    def files(self) -> list[Path]:
        """The image, label and mask paths of this case (labels and masks in target order)."""
        return [
            self.image,
            *(self.labels[t] for t in sorted(self.labels)),
            *(self.masks[t] for t in sorted(self.masks)),
        ]


@dataclass(frozen=True)
class DatasetIndex:
    """The cases of a data root (sorted by name), the targets, and what ``dataset.json`` declares.

    ``dataset_spacing`` applies to every volume, ``case_spacing`` to named ones (both from ``dataset.json``);
    ``target_classes`` maps a target to its declared number of classes (``dataset.json`` ``targets``).
    """

    root: Path
    cases: tuple[VolumeCase, ...]
    targets: tuple[str, ...]
    dataset_spacing: tuple[float, ...] | None = None
    case_spacing: dict[str, tuple[float, ...]] = field(default_factory=dict)
    channel_names: tuple[str, ...] | None = None
    target_classes: dict[str, int] = field(default_factory=dict)

    @property
    def names(self) -> tuple[str, ...]:
        """Case names, sorted."""
        return tuple(case.name for case in self.cases)

    def case(self, name: str) -> VolumeCase:
        """The case called ``name``; ``KeyError`` if there is none."""
        for case in self.cases:
            if case.name == name:
                return case
        raise KeyError(name)

    def spacing_for(self, name: str) -> tuple[float, ...] | None:
        """The ``dataset.json`` spacing of volume ``name`` (per-volume entry first, then dataset-wide), or None."""
        return self.case_spacing.get(name, self.dataset_spacing)


def _rel(root: Path, path: Path) -> str:
    """``path`` relative to the data root for messages (``labels/a_ink.zarr``)."""
    try:
        return Path(path).relative_to(root).as_posix()
    except ValueError:
        return str(path)


def _volume_files(folder: Path, kind: str | None) -> list[Path]:
    """Volume files of ``folder`` (not hidden, supported ending, of format ``kind`` when given), sorted."""
    if not folder.is_dir():
        return []
    found = []
    for entry in sorted(folder.iterdir(), key=lambda p: p.name):
        if entry.name.startswith("."):
            continue
        fmt = supported_suffix(entry)
        if fmt is not None and (kind is None or fmt == kind):
            found.append(entry)
    return found


def _positive_numbers(value: Any, where: str) -> tuple[float, ...]:
    ok = isinstance(value, list) and len(value) in (2, 3)
    ok = ok and all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
    ok = ok and all(math.isfinite(v) and v > 0 for v in value)
    if not ok:
        raise DataError(f"{where} is {value!r}; expected 2 or 3 positive numbers ((z,) y, x order)")
    return tuple(float(v) for v in value)


def _read_dataset_json(root: Path) -> dict[str, Any]:
    path = root / "dataset.json"
    if not path.exists():
        return {}
    return read_json_object(path)


def _parse_dataset_json(root: Path, payload: Mapping[str, Any], names: Sequence[str]) -> dict[str, Any]:
    where = root / "dataset.json"
    parsed: dict[str, Any] = {"dataset_spacing": None, "case_spacing": {}, "channel_names": None, "target_classes": {}}
    spacing = payload.get("spacing")
    if isinstance(spacing, dict):
        for name, value in spacing.items():
            if name not in names:
                raise DataError(f"{where}: 'spacing' names volume {name!r}, which has no image in {root / 'images'}")
            parsed["case_spacing"][name] = _positive_numbers(value, f"{where}: spacing of {name!r}")
    elif spacing is not None:
        parsed["dataset_spacing"] = _positive_numbers(spacing, f"{where}: 'spacing'")
    channels = payload.get("channel_names")
    if isinstance(channels, dict):
        try:
            order = sorted(channels, key=int)
        except ValueError as exc:
            raise DataError(f"{where}: 'channel_names' keys {list(channels)} must be channel numbers") from exc
        channels = [channels[key] for key in order]
    if channels is not None:
        if not isinstance(channels, list) or not all(isinstance(c, str) for c in channels):
            raise DataError(f"{where}: 'channel_names' is {channels!r}; expected a list of names")
        parsed["channel_names"] = tuple(channels)
    targets = payload.get("targets")
    if targets is not None:
        if not isinstance(targets, dict):
            raise DataError(f"{where}: 'targets' is {targets!r}; expected {{name: {{'classes': n}}}}")
        for name, info in targets.items():
            classes = info.get("classes") if isinstance(info, dict) else None
            if classes is None:
                continue
            if not isinstance(classes, int) or isinstance(classes, bool) or classes < 1:
                raise DataError(f"{where}: targets.{name}.classes is {classes!r}; expected an integer >= 1")
            parsed["target_classes"][name] = classes
    return parsed


def _match_volume(
    root: Path, path: Path, stems: Sequence[str], targets: Sequence[str] | None, folder: str
) -> tuple[str, str]:
    """``(volume, target)`` of a label or mask file by the longest matching image stem (see the module doc)."""
    stem = volume_stem(path)
    candidates = sorted((s for s in stems if stem.startswith(s + "_") and len(stem) > len(s) + 1), key=len)[::-1]
    if targets is not None:
        for candidate in candidates:
            if stem[len(candidate) + 1 :] in targets:
                return candidate, stem[len(candidate) + 1 :]
        for target in targets:
            if stem.endswith("_" + target) and len(stem) > len(target) + 1:
                volume = stem[: -len(target) - 1]
                raise DataError(f"{_rel(root, path)}: no image images/{volume}.* for volume {volume!r}")
        if candidates:
            raise DataError(
                f"{_rel(root, path)}: target {stem[len(candidates[0]) + 1 :]!r} is not one of the configured "
                f"targets {list(targets)}; expected {folder}/<vol>_<target>.<ext>"
            )
    elif candidates:
        return candidates[0], stem[len(candidates[0]) + 1 :]
    if "_" not in stem:
        raise DataError(f"{_rel(root, path)}: name does not match {folder}/<vol>_<target>.<ext>")
    volume = stem.rsplit("_", 1)[0]
    raise DataError(f"{_rel(root, path)}: no image images/{volume}.* for volume {volume!r}")


def discover_cases(
    root: str | os.PathLike[str], *, targets: Sequence[str] | None = None, image_format: str | None = None
) -> DatasetIndex:
    """Index the dataset at ``root`` (layout and ``dataset.json`` format in the module docstring).

    ``targets``: the configured target names (their order is kept); ``None`` discovers them from the label file
    names (sorted). ``image_format`` (``"zarr"``, ``"tif"`` or ``"nifti"``) restricts images, labels and masks to
    that format. Cases are sorted by name; a case may lack labels for some targets (or all). Nothing is opened.

    Raises :class:`DataError` (naming the file) for: no ``images/`` folder or no volume in it; two images with the
    same stem; a label or mask whose volume has no image; a label name that matches no configured target; two
    labels (or masks) for the same volume and target; a mask without its label; a configured target without a
    label file in any case; no label file at all. ``ValueError`` for an unknown ``image_format``.
    """
    root = require_dir(Path(root), "dataset root")
    if image_format is not None and image_format not in IMAGE_FORMATS:
        raise ValueError(f"image_format {image_format!r}; expected one of {sorted(IMAGE_FORMATS)}")
    kind = IMAGE_FORMATS.get(image_format) if image_format else None
    images_dir = root / "images"
    if not images_dir.is_dir():
        raise DataError(f"{root}: no images/ folder; expected images/<vol>.<ext> and labels/<vol>_<target>.<ext>")
    images: dict[str, Path] = {}
    for path in _volume_files(images_dir, kind):
        stem = volume_stem(path)
        if stem in images:
            raise DataError(
                f"{_rel(root, path)} and {_rel(root, images[stem])}: two images for volume {stem!r}; keep one"
            )
        images[stem] = path
    if not images:
        what = f"{image_format} volumes" if image_format else "volumes"
        raise DataError(f"{images_dir}: no {what}; expected images/<vol>.<ext> (.zarr, .tif, .nii.gz, ...)")
    configured = tuple(targets) if targets is not None else None
    found: dict[str, dict[str, dict[str, Path]]] = {"labels": {}, "masks": {}}
    for folder in ("labels", "masks"):
        for path in _volume_files(root / folder, kind):
            volume, target = _match_volume(root, path, list(images), configured, folder)
            entry = found[folder].setdefault(volume, {})
            if target in entry:
                raise DataError(
                    f"{_rel(root, path)} and {_rel(root, entry[target])}: two {folder[:-1]} files for volume "
                    f"{volume!r}, target {target!r}; keep one"
                )
            entry[target] = path
    for volume, masks in found["masks"].items():
        for target, path in masks.items():
            if target not in found["labels"].get(volume, {}):
                raise DataError(f"{_rel(root, path)}: no label labels/{volume}_{target}.* for this mask")
    discovered = sorted({t for labels in found["labels"].values() for t in labels})
    if configured is not None:
        for target in configured:
            if target not in discovered:
                raise DataError(f"target {target!r} has no label file labels/<vol>_{target}.<ext> in {root / 'labels'}")
    elif not discovered:
        raise DataError(f"{root / 'labels'}: no label files; expected labels/<vol>_<target>.<ext>")
    cases = tuple(
        VolumeCase(name, images[name], dict(found["labels"].get(name, {})), dict(found["masks"].get(name, {})))
        for name in sorted(images)
    )
    parsed = _parse_dataset_json(root, _read_dataset_json(root), list(images))
    return DatasetIndex(root, cases, configured if configured is not None else tuple(discovered), **parsed)


# ---------------------------------------------------------------------------------------------- reading


def czyx_shape(volume: Volume) -> tuple[int, int, int, int]:
    """The shape of ``volume`` viewed as ``[C, Z, Y, X]`` (``C = 1`` without channels, ``Z = 1`` for 2-D)."""
    spatial = volume.spatial_shape if len(volume.spatial_shape) == 3 else (1, *volume.spatial_shape)
    return (volume.channels, *spatial)  # type: ignore[return-value]


def read_czyx(volume: Volume, starts: Sequence[int], sizes: Sequence[int]) -> np.ndarray:
    """Read the box ``[starts, starts + sizes)`` given in ``(z, y, x)`` of the ``[C, Z, Y, X]`` view; → 4-D array."""
    if len(volume.spatial_shape) == 2:
        if starts[0] != 0 or sizes[0] != 1:
            raise ValueError(f"read_czyx: z range [{starts[0]}, {starts[0] + sizes[0]}) of 2-D volume {volume.path}")
        data = volume.region(list(starts[1:]), list(sizes[1:]))
        data = data[:, None] if volume.has_channel_axis else data[None, None]
    else:
        data = volume.region(list(starts), list(sizes))
        if not volume.has_channel_axis:
            data = data[None]
    return data


def read_box(volume: Volume, starts: Sequence[int], sizes: Sequence[int]) -> np.ndarray:
    """Read a patch as ``[C, *sizes]``: 3 ``starts``/``sizes`` are ``(z, y, x)``; 2 are ``(y, x)`` of a 2-D volume
    (a 2-D array or a volume with one z slice, whose z axis is dropped)."""
    if len(starts) == 3:
        return read_czyx(volume, starts, sizes)
    if len(starts) != 2 or czyx_shape(volume)[1] != 1:
        raise ValueError(f"read_box: {len(starts)} starts for volume {volume.path} of shape {volume.shape}")
    return read_czyx(volume, [0, *starts], [1, *sizes])[:, 0]


def slab_boxes(
    spatial: Sequence[int], bytes_per_voxel: int, *, max_bytes: int = DEFAULT_SLAB_BYTES
) -> Iterator[tuple[tuple[int, int, int], tuple[int, int, int]]]:
    """Cover the ``(Z, Y, X)`` box with slabs ``(starts, sizes)`` of at most ``max_bytes`` (at least one plane).

    Slabs run along z, or along y when ``Z == 1`` (2-D data); ``bytes_per_voxel`` is the sum over every array read
    per voxel (all channels of every volume scanned together).
    """
    z, y, x = (int(n) for n in spatial)
    axis = 0 if z > 1 else 1
    extent = (z, y, x)[axis]
    plane = math.prod((z, y, x)) // max(extent, 1) * max(int(bytes_per_voxel), 1)
    step = max(1, min(extent, max_bytes // max(plane, 1)))
    for start in range(0, extent, step):
        size = min(step, extent - start)
        starts = [0, 0, 0]
        sizes = [z, y, x]
        starts[axis], sizes[axis] = start, size
        yield (starts[0], starts[1], starts[2]), (sizes[0], sizes[1], sizes[2])


# ---------------------------------------------------------------------------------------------- checks


@dataclass(frozen=True)
class CaseInfo:
    """What :func:`check_cases` found for one case; ``shape`` and ``spacing`` have ``spatial_dims`` entries.

    ``spacing_source`` is ``"file"``, ``"dataset.json"`` or ``"default"``; ``foreground_voxels`` counts label > 0
    voxels per target the case has.
    """

    name: str
    shape: tuple[int, ...]
    spacing: tuple[float, ...]
    spacing_source: str
    channels: int
    dtype: str
    foreground_voxels: dict[str, int]


@dataclass(frozen=True)
class CaseSummary:
    """Per-case information, the dataset's dimensionality, channels and median shape/spacing (for the planner).

    ``median_shape`` and ``median_spacing`` are per-axis medians over cases (floats, ``spatial_dims`` entries);
    ``warnings`` lists what the user should know but does not stop training (e.g. a default spacing).
    """

    cases: tuple[CaseInfo, ...]
    spatial_dims: int
    channels: int
    median_shape: tuple[float, ...]
    median_spacing: tuple[float, ...]
    warnings: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (lists instead of tuples); :meth:`from_dict` gives back an equal summary."""
        return json.loads(json.dumps(asdict(self)))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CaseSummary:
        """The summary :meth:`as_dict` wrote."""
        cases = tuple(
            CaseInfo(
                name=case["name"],
                shape=tuple(case["shape"]),
                spacing=tuple(case["spacing"]),
                spacing_source=case["spacing_source"],
                channels=case["channels"],
                dtype=case["dtype"],
                foreground_voxels=dict(case["foreground_voxels"]),
            )
            for case in data["cases"]
        )
        return cls(
            cases=cases,
            spatial_dims=data["spatial_dims"],
            channels=data["channels"],
            median_shape=tuple(data["median_shape"]),
            median_spacing=tuple(data["median_spacing"]),
            warnings=tuple(data["warnings"]),
        )


def _open(root: Path, path: Path) -> Volume:
    try:
        return open_volume(path)
    except DataError as exc:
        text = str(exc)
        if str(path) in text or _rel(root, path) in text:
            raise
        raise DataError(f"{_rel(root, path)}: {text}") from exc


def _spatial_of(volume: Volume) -> tuple[int, int, int]:
    return czyx_shape(volume)[1:]  # type: ignore[return-value]


def _first_bad(mask: np.ndarray, offset: Sequence[int]) -> tuple[int, ...]:
    """The ``(c, z, y, x)`` position of the first True of a ``[C, Z, Y, X]`` slab, in volume coordinates."""
    position = np.argwhere(mask)[0]
    return (int(position[0]), *(int(p) + int(o) for p, o in zip(position[1:], offset, strict=True)))


def _scan(
    root: Path,
    volume: Volume,
    what: str,
    *,
    classes: int | None = None,
    binary: bool = False,
    finite: bool = True,
    max_bytes: int,
) -> int:
    """Check the values of ``volume`` slab by slab; return its number of voxels > 0 (any channel).

    ``finite``: no NaN/inf; ``classes``: integer values in ``[0, classes)``; ``binary``: values 0 or 1.
    """
    name = _rel(root, volume.path)
    floating = volume.dtype.kind in "fc"
    positive = 0
    for starts, sizes in slab_boxes(_spatial_of(volume), volume.channels * volume.dtype.itemsize, max_bytes=max_bytes):
        data = read_czyx(volume, starts, sizes)
        if floating and finite:
            bad = ~np.isfinite(data)
            if bad.any():
                value = data[tuple(_first_bad(bad, (0, 0, 0)))]
                raise DataError(f"{name}: {value} at (c, z, y, x) = {_first_bad(bad, starts)}; expected finite values")
        if binary:
            bad = (data != 0) & (data != 1)
            if bad.any():
                value = data[tuple(_first_bad(bad, (0, 0, 0)))]
                raise DataError(
                    f"{name}: {what} value {value} at (c, z, y, x) = {_first_bad(bad, starts)}; expected 0 or 1"
                )
        if classes is not None:
            bad = (data < 0) | (data >= classes)
            if floating:
                bad |= data != np.round(data)
            if bad.any():
                value = data[tuple(_first_bad(bad, (0, 0, 0)))]
                raise DataError(
                    f"{name}: {what} value {value} at (c, z, y, x) = {_first_bad(bad, starts)}; expected integer "
                    f"classes in [0, {classes})"
                )
        positive += int(np.count_nonzero((data > 0).any(axis=0)))
    return positive


def check_cases(
    index: DatasetIndex,
    *,
    target_classes: Mapping[str, int | None],
    in_channels: int | None = None,
    max_slab_bytes: int = DEFAULT_SLAB_BYTES,
) -> CaseSummary:
    """Open every image, label and mask of ``index`` lazily and check that they fit together.

    Checks (each failure a :class:`DataError` naming the file): the file opens (unreadable zarr, bad NIfTI...);
    every label and mask has the spatial shape of its image; all images have the same number of channels, equal
    to ``in_channels`` when given and to the ``dataset.json`` channel names when listed; the dataset is all 2-D or
    all 3-D; images hold no NaN/inf; label values of a target with ``target_classes[t] = n`` are integers in
    ``[0, n)`` (``None`` or a missing entry: any finite value, e.g. regression); mask values are 0 or 1. Values
    are read slab by slab (:func:`slab_boxes`), never a whole large volume. Returns the :class:`CaseSummary`.
    """
    root = index.root
    infos: list[CaseInfo] = []
    warnings: list[str] = []
    first_channels: tuple[int, str] | None = None
    dims: dict[int, str] = {}
    for case in index.cases:
        image = _open(root, case.image)
        image_name = _rel(root, case.image)
        spatial = _spatial_of(image)
        channels = image.channels
        if first_channels is None:
            first_channels = (channels, image_name)
        elif channels != first_channels[0]:
            raise DataError(
                f"{image_name}: {channels} channel(s) but {first_channels[1]} has {first_channels[0]}; every image "
                "needs the same channels"
            )
        if in_channels is not None and channels != in_channels:
            raise DataError(f"{image_name}: {channels} channel(s), but the config sets in_channels={in_channels}")
        if index.channel_names is not None and len(index.channel_names) != channels:
            raise DataError(
                f"{image_name}: {channels} channel(s), but dataset.json names {len(index.channel_names)}: "
                f"{list(index.channel_names)}"
            )
        case_dims = 2 if spatial[0] == 1 else 3
        dims.setdefault(case_dims, image_name)
        if len(dims) > 1:
            raise DataError(
                f"{dims[3]}: 3-D volume, but {dims[2]} is 2-D (2-D array or one z slice); a dataset is either "
                "2-D or 3-D"
            )
        if image.dtype.kind in "fc":
            _scan(root, image, "image", max_bytes=max_slab_bytes)
        foreground: dict[str, int] = {}
        for folder, files in (("label", case.labels), ("mask", case.masks)):
            for target in sorted(files):
                volume = _open(root, files[target])
                if _spatial_of(volume) != spatial:
                    raise DataError(
                        f"{_rel(root, files[target])}: shape {volume.spatial_shape} does not match image {image_name} "
                        f"{image.spatial_shape}"
                    )
                if folder == "mask":
                    _scan(root, volume, "mask", binary=True, max_bytes=max_slab_bytes)
                else:
                    classes = target_classes.get(target)
                    foreground[target] = _scan(
                        root, volume, f"label (target {target!r})", classes=classes, max_bytes=max_slab_bytes
                    )
                volume.close()
        spacing, source = _case_spacing(index, case, image, spatial, warnings)
        shape = spatial if case_dims == 3 else spatial[1:]
        infos.append(CaseInfo(case.name, tuple(shape), spacing, source, channels, str(image.dtype), foreground))
        image.close()
    spatial_dims = next(iter(dims))
    return CaseSummary(
        cases=tuple(infos),
        spatial_dims=spatial_dims,
        channels=first_channels[0] if first_channels else 0,
        median_shape=tuple(float(v) for v in np.median([info.shape for info in infos], axis=0)),
        median_spacing=tuple(float(v) for v in np.median([info.spacing for info in infos], axis=0)),
        warnings=tuple(warnings),
    )


def _case_spacing(
    index: DatasetIndex, case: VolumeCase, image: Volume, spatial: Sequence[int], warnings: list[str]
) -> tuple[tuple[float, ...], str]:
    """Spacing of a case in ``spatial_dims`` order and where it came from (file > dataset.json > 1.0)."""
    two_d = spatial[0] == 1
    declared = index.spacing_for(case.name)
    if image.spacing is not None:
        spacing, source = tuple(image.spacing), "file"
        common = min(len(spacing), len(declared or ()))
        if declared is not None and declared[-common:] != spacing[-common:]:
            warnings.append(
                f"{_rel(index.root, case.image)}: file spacing {spacing} differs from dataset.json {declared}; "
                "using the file's"
            )
    elif declared is not None:
        spacing, source = tuple(declared), "dataset.json"
        if not two_d and len(spacing) != 3:
            raise DataError(
                f"{index.root / 'dataset.json'}: spacing {list(spacing)} for 3-D volume {case.name!r}; expected "
                "3 numbers (z, y, x)"
            )
    else:
        spacing, source = (1.0, 1.0, 1.0), "default"
        warnings.append(
            f"{_rel(index.root, case.image)}: no spacing in the file or dataset.json; assuming 1.0 per axis"
        )
    if two_d:
        spacing = spacing[-2:]
    elif len(spacing) != 3:
        spacing = (1.0, *spacing[-2:])
    return spacing, source


def fingerprint_cases(cases: Sequence[VolumeCase], targets: Sequence[str] | None = None) -> str:
    """SHA-256 over :func:`~medtrain.io.fingerprint.fingerprint_path` of every case's image and the labels and
    masks of ``targets`` (all of them when None): the file part of cache keys of statistics and patch indices."""
    entries = []
    for case in cases:
        names = case.labels if targets is None else [t for t in targets if t in case.labels]
        files = {"image": case.image}
        files.update({f"label:{t}": case.labels[t] for t in names})
        files.update({f"mask:{t}": case.masks[t] for t in names if t in case.masks})
        for role, path in sorted(files.items()):
            try:
                entries.append([case.name, role, fingerprint_path(Path(path))])
            except OSError as exc:
                raise DataError(f"cannot read {path}: {exc}") from exc
    return hashlib.sha256(json.dumps(entries, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
