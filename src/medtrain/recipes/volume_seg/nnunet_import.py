"""Import an nnU-Net v2 raw dataset (``DatasetXXX_Name/``) into the volume-seg layout.

nnU-Net raw layout read::

    dataset.json    {"channel_names": {"0": "CT", ...}, "labels": {"background": 0, "liver": 1, ...},
                     "file_ending": ".nii.gz", ...}
    imagesTr/<case>_0000<file_ending>, <case>_0001<file_ending>, ...   one file per channel (2-D or 3-D)
    labelsTr/<case><file_ending>                                        integer label map

Label entries may be region lists (``"tumor": [1, 2]``, nnU-Net region-based training): in ``per_label`` mode the
binary label of a region is the union of its values; ``multiclass`` mode needs one integer per label.

Written (volume-seg layout, see :mod:`medtrain.recipes.volume_seg.cases`)::

    images/<case>.<ext>                  the channels stacked as (c, z, y, x) (z = 1 for 2-D inputs), input dtype
    labels/<case>_<label>.<ext>          per_label: one binary uint8 volume per non-background label
    labels/<case>_<target_name>.<ext>    multiclass: class indices (uint8/uint16), in the order of the label values
    dataset.json                         {"spacing": {case: [...]}, "channel_names": [...], "targets": {...},
                                          "source": {...}}

Label names become file-name parts: characters other than letters, digits, ``_`` and ``-`` are replaced by ``_``.
Every file is read whole (nnU-Net cases fit in memory; ``.nii.gz`` is not random-access anyway). The spacing of a
case is the spacing of its channel-0 file.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from medtrain.errors import DataError
from medtrain.io.atomic import atomic_write_json
from medtrain.io.json_files import read_json_object
from medtrain.io.paths import require_dir, require_file
from medtrain.io.volumes import Volume, open_volume, supported_suffix, write_volume

__all__ = ["MODES", "import_nnunet"]

MODES = ("per_label", "multiclass")
"""Import modes: one binary target per label, or one multi-class target."""

_OUTPUT_FORMATS = {"zarr": ".zarr", "nii.gz": ".nii.gz", "nii": ".nii", "tif": ".tif"}


def _read_json(path: Path) -> dict[str, Any]:
    require_file(path, "nnU-Net dataset.json")
    return read_json_object(path)


def _label_table(path: Path, payload: Mapping[str, Any]) -> dict[str, list[int]]:
    """Label name → the label values it covers (one value, or several for a region)."""
    labels = payload.get("labels")
    if not isinstance(labels, dict) or not labels:
        raise DataError(f"{path}: 'labels' is {labels!r}; expected {{'background': 0, 'name': 1, ...}}")
    table: dict[str, list[int]] = {}
    for name, value in labels.items():
        values = value if isinstance(value, list) else [value]
        if not values or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in values):
            raise DataError(f"{path}: labels.{name} is {value!r}; expected a label value >= 0 or a list of them")
        table[name] = [int(v) for v in values]
    return table


def _channel_names(path: Path, payload: Mapping[str, Any]) -> list[str]:
    channels = payload.get("channel_names", payload.get("modality"))
    if not isinstance(channels, dict) or not channels:
        raise DataError(f"{path}: 'channel_names' is {channels!r}; expected {{'0': 'CT', ...}}")
    try:
        keys = sorted(channels, key=int)
    except ValueError as exc:
        raise DataError(f"{path}: 'channel_names' keys {list(channels)} must be channel numbers") from exc
    if [int(k) for k in keys] != list(range(len(keys))):
        raise DataError(f"{path}: 'channel_names' keys {keys}; expected 0, 1, ... without gaps")
    return [str(channels[k]) for k in keys]


def _file_name_part(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", name)


def _read_whole(path: Path) -> tuple[np.ndarray, tuple[float, ...] | None, Volume]:
    """The array of a one-channel file as ``(z, y, x)`` (2-D files get one z slice, spacing 1.0 in z), its
    spacing and the volume."""
    volume = open_volume(path)
    data = volume.read()
    volume.close()
    if volume.has_channel_axis:
        raise DataError(f"{path}: {volume.channels} channels in one file; nnU-Net stores one file per channel")
    spacing = volume.spacing
    if data.ndim == 2:
        data = data[None]
        spacing = None if spacing is None else (1.0, *spacing)
    return data, spacing, volume


def import_nnunet(
    dataset_dir: str | os.PathLike[str],
    output_dir: str | os.PathLike[str],
    *,
    mode: str = "per_label",
    target_name: str = "label",
    output_format: str = "zarr",
    overwrite: bool = False,
) -> Path:
    """Convert the nnU-Net raw dataset ``dataset_dir`` into the volume-seg layout under ``output_dir``; return it.

    ``mode``: ``"per_label"`` (one binary target per non-background label, named after it) or ``"multiclass"``
    (one target ``target_name`` holding class indices 0..K-1, the label values in increasing order). Volumes are
    written as ``output_format`` (``"zarr"`` default: chunked, random-access; or ``"nii.gz"``, ``"nii"``,
    ``"tif"``). ``output_dir`` must not already hold ``images/``, ``labels/`` or ``dataset.json`` unless
    ``overwrite`` (which removes those three first).

    Raises :class:`DataError` naming the file for: a missing or malformed ``dataset.json``, an unsupported
    ``file_ending``, a case without all its channel files, a missing label file, channel or label shapes that do
    not match, label values not declared in ``labels``, and region labels in ``multiclass`` mode. ``ValueError``
    for an unknown ``mode`` or ``output_format``.
    """
    if mode not in MODES:
        raise ValueError(f"import mode {mode!r}; expected one of {list(MODES)}")
    if output_format not in _OUTPUT_FORMATS:
        raise ValueError(f"output_format {output_format!r}; expected one of {sorted(_OUTPUT_FORMATS)}")
    source = require_dir(Path(dataset_dir), "nnU-Net dataset folder")
    json_path = source / "dataset.json"
    payload = _read_json(json_path)
    table = _label_table(json_path, payload)
    channel_names = _channel_names(json_path, payload)
    ending = payload.get("file_ending")
    if not isinstance(ending, str) or supported_suffix(Path("case" + ending)) is None:
        raise DataError(f"{json_path}: file_ending {ending!r} is not supported; expected .nii.gz, .nii, .tif, .zarr")
    if mode == "multiclass":
        regions = [name for name, values in table.items() if len(values) > 1]
        if regions:
            raise DataError(f"{json_path}: region labels {regions} need mode 'per_label' (one binary target each)")
    out = Path(output_dir)
    existing = [out / name for name in ("images", "labels", "dataset.json") if (out / name).exists()]
    if existing and not overwrite:
        raise DataError(f"{existing[0]} already exists; choose an empty output folder or pass overwrite")
    for path in existing:
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()

    images_dir, labels_dir = require_dir(source / "imagesTr", "nnU-Net imagesTr"), source / "labelsTr"
    pattern = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})" + re.escape(ending) + "$")
    cases = sorted({m["case"] for p in images_dir.iterdir() if (m := pattern.match(p.name))})
    if not cases:
        raise DataError(f"{images_dir}: no files <case>_0000{ending}")
    declared = sorted({v for values in table.values() for v in values})
    class_of = {value: index for index, value in enumerate(declared)}
    foreground = {name: values for name, values in table.items() if values != [0]}
    names = {name: _file_name_part(name) for name in foreground}
    if mode == "per_label" and len(set(names.values())) != len(names):
        raise DataError(f"{json_path}: label names {list(names)} collide once made file names {list(names.values())}")
    suffix = _OUTPUT_FORMATS[output_format]
    spacing: dict[str, list[float]] = {}
    for case in cases:
        channels = []
        for number in range(len(channel_names)):
            path = images_dir / f"{case}_{number:04d}{ending}"
            if not path.exists():
                raise DataError(f"{path}: missing channel {number} ({channel_names[number]}) of case {case!r}")
            data, file_spacing, _ = _read_whole(path)
            if channels and data.shape != channels[0].shape:
                raise DataError(f"{path}: shape {data.shape} does not match channel 0 {channels[0].shape}")
            if number == 0:
                spacing[case] = list(file_spacing) if file_spacing is not None else [1.0, 1.0, 1.0]
            channels.append(data)
        label_path = labels_dir / f"{case}{ending}"
        if not label_path.exists():
            raise DataError(f"{label_path}: missing label file of case {case!r}")
        label, _, _ = _read_whole(label_path)
        if label.shape != channels[0].shape:
            raise DataError(f"{label_path}: shape {label.shape} does not match image {channels[0].shape}")
        found = np.unique(label)
        unknown = [v.item() for v in found if v.item() not in class_of]
        if unknown:
            raise DataError(f"{label_path}: label values {unknown[:10]} are not in dataset.json labels {declared}")
        image = np.stack(channels)
        write_volume(out / "images" / f"{case}{suffix}", image, spacing=spacing[case])
        if mode == "per_label":
            for name, values in foreground.items():
                binary = np.isin(label, values).astype(np.uint8)
                write_volume(out / "labels" / f"{case}_{names[name]}{suffix}", binary, spacing=spacing[case])
        else:
            lookup = np.zeros(int(found.max()) + 1, dtype=np.uint8 if len(declared) <= 256 else np.uint16)
            for value, index in class_of.items():
                if value < lookup.size:
                    lookup[value] = index
            classes = lookup[label.astype(np.int64)]
            target_file = out / "labels" / f"{case}_{_file_name_part(target_name)}{suffix}"
            write_volume(target_file, classes, spacing=spacing[case])
    by_value = {values[0]: name for name, values in table.items() if len(values) == 1}
    if mode == "per_label":
        targets = {names[name]: {"classes": 2, "class_names": ["background", name]} for name in foreground}
    else:
        class_names = [by_value.get(value, str(value)) for value in declared]
        targets = {_file_name_part(target_name): {"classes": len(declared), "class_names": class_names}}
    atomic_write_json(
        out / "dataset.json",
        {
            "spacing": spacing,
            "channel_names": channel_names,
            "targets": targets,
            "source": {"format": "nnunet", "dataset": source.name, "mode": mode, "labels": table},
        },
    )
    return out
