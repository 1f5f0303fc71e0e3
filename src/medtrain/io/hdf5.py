"""HDF5 files of named arrays plus attributes (the ultrasound-ae ``processed/<experiment>.h5``).

Writes are atomic (a temporary file in the same folder, fsync, ``os.replace``). Attributes must be JSON
values: ``str``, ``int``, ``float`` and ``bool`` are stored as native HDF5 attributes; ``None``, dicts and lists
are stored as JSON text under the attribute's own name, and their names are listed (as a JSON list) in the
reserved attribute ``medtrain_json_attrs`` so that :func:`h5_attrs` decodes exactly those. Text arrays
(numpy ``str``) are stored as variable-length UTF-8 and read back as numpy ``str`` arrays. No pickle anywhere.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from medtrain.errors import DataError
from medtrain.io.atomic import atomic_path
from medtrain.io.paths import require_file

JSON_ATTRS = "medtrain_json_attrs"


def write_h5(
    path: Path,
    datasets: Mapping[str, np.ndarray],
    *,
    attrs: Mapping[str, Any] | None = None,
    compression: str | None = "lzf",
) -> Path:
    """Write ``datasets`` (name → array; a ``/`` in a name makes groups) and ``attrs`` to ``path`` atomically.

    ``compression`` (``"lzf"``, ``"gzip"`` or ``None``) applies to non-empty numeric arrays; scalars and text
    are stored uncompressed. Raises ``ValueError`` for object arrays, for an attribute that is not a JSON value
    and for an attribute named ``medtrain_json_attrs``. Returns ``path``.
    """
    path = Path(path)
    encoded, json_names = _encode_attrs(attrs or {})
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as handle:
        for name, value in datasets.items():
            _create_dataset(handle, name, np.asarray(value), compression)
        handle.attrs.update(encoded)
        handle.attrs[JSON_ATTRS] = json.dumps(json_names)
    return path


def read_h5(path: Path, names: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """Load the datasets ``names`` (all datasets, by full path, when ``None``) of ``path`` into memory.

    Raises :class:`DataError` for a missing or corrupt file, and for a missing dataset (naming the file and
    the dataset and listing the available ones).
    """
    with open_h5_lazy(path) as handle:
        wanted = dataset_names(handle) if names is None else list(names)
        datasets = {name: h5_dataset(handle, name) for name in wanted}
        try:
            return {name: _load(dataset) for name, dataset in datasets.items()}
        except OSError as error:
            raise DataError(f"HDF5 file {path}: cannot read its data (corrupt or truncated?): {error}") from error


def h5_attrs(path: Path) -> dict[str, Any]:
    """The file-level attributes of ``path`` as Python values, JSON-encoded ones decoded (see module docstring)."""
    with open_h5_lazy(path) as handle:
        raw = dict(handle.attrs)
    json_names = set(json.loads(raw.pop(JSON_ATTRS, "[]")))
    return {
        name: json.loads(value) if name in json_names else value.item() if isinstance(value, np.generic) else value
        for name, value in raw.items()
    }


@contextlib.contextmanager
def open_h5_lazy(path: Path) -> Iterator[h5py.File]:
    """Open ``path`` read-only for lazy slicing (``handle["tokens"][i:j]`` reads only those rows); closes on exit.

    Raises :class:`DataError` when the file is missing or is not a readable HDF5 file. Use :func:`h5_dataset`
    to look a dataset up with a readable error.
    """
    path = require_file(Path(path), "HDF5 file")
    try:
        handle = h5py.File(path, "r")
    except OSError as error:
        raise DataError(f"cannot open HDF5 file {path}: {error}") from error
    with handle:
        yield handle


def h5_dataset(handle: h5py.File, name: str) -> h5py.Dataset:
    """The dataset ``name`` of an open file; :class:`DataError` naming the file, the dataset and the available
    ones when it is not there."""
    node = handle.get(name)
    if not isinstance(node, h5py.Dataset):
        raise DataError(f"HDF5 file {handle.filename}: no dataset {name!r}; available: {dataset_names(handle)}")
    return node


def dataset_names(handle: h5py.File) -> list[str]:
    """The full paths of every dataset in an open file, sorted."""
    names: list[str] = []
    handle.visititems(lambda name, node: names.append(name) if isinstance(node, h5py.Dataset) else None)
    return sorted(names)


def _create_dataset(handle: h5py.File, name: str, value: np.ndarray, compression: str | None) -> None:
    """Store one array: text as variable-length UTF-8, numbers compressed when they have elements."""
    if value.dtype.kind == "O":
        raise ValueError(f"dataset {name!r}: object arrays are not stored (no pickle); use numeric or str arrays")
    if value.dtype.kind == "U":
        handle.create_dataset(name, data=value.astype(object), dtype=h5py.string_dtype("utf-8"))
    else:
        handle.create_dataset(name, data=value, compression=compression if value.size and value.ndim else None)


def _load(dataset: h5py.Dataset) -> np.ndarray:
    """A dataset's values in memory; text comes back as a numpy ``str`` array."""
    if h5py.check_string_dtype(dataset.dtype) is not None:
        return np.asarray(dataset.asstr()[()], dtype=str)
    return np.asarray(dataset[()])


def _encode_attrs(attrs: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """HDF5-storable attributes and the sorted names of those stored as JSON text."""
    encoded: dict[str, Any] = {}
    json_names: list[str] = []
    for name, value in attrs.items():
        if name == JSON_ATTRS:
            raise ValueError(f"attribute name {JSON_ATTRS!r} is reserved")
        value = value.item() if isinstance(value, np.generic) else value
        try:
            text = json.dumps(value)
        except (TypeError, ValueError) as error:
            raise ValueError(f"attribute {name!r} is not a JSON value: {error}") from error
        if isinstance(value, str | int | float | bool):
            encoded[name] = value
        else:
            encoded[name] = text
            json_names.append(name)
    return encoded, sorted(json_names)
