"""The one volume reader of medtrain: zarr / OME-Zarr, TIFF and NIfTI behind one lazy :class:`Volume`.

Axis convention (every format, every caller)
--------------------------------------------
Arrays come back channel-first with the spatial axes slowest to fastest:

* 2-D data is ``(y, x)``; 3-D data is ``(z, y, x)``; 4-D data is ``(c, z, y, x)``;
* a 3-D array whose file says it is multichannel 2-D (an OME ``c`` axis, a TIFF ``C``/``S`` axis, or an
  ``"axes": "cyx"`` attribute on a plain zarr array) is ``(c, y, x)``.

``Volume.spacing`` lists one float per spatial axis in that same order (``(sz, sy, sx)`` or ``(sy, sx)``), or
is ``None`` when the file does not say. A volume with one z slice stays 3-D (``(1, y, x)``): medtrain treats it as
2-D data without changing its shape.

* **NIfTI** stores ``(x, y, z[, t][, c])`` (x fastest on disk). medtrain reverses the spatial axes: a NIfTI of shape
  ``(X, Y, Z)`` reads as ``(Z, Y, X)`` with spacing ``(dz, dy, dx)`` taken from the header zooms; a 4-D NIfTI
  ``(X, Y, Z, C)`` reads as ``(C, Z, Y, X)``; a 5-D NIfTI ``(X, Y, Z, 1, C)`` (time of length one) reads as
  ``(C, Z, Y, X)``. The affine is *not* applied: no reorientation, no flips — the voxel grid is the one on disk.
  Header zooms are float32; they come back as the shortest decimal that round-trips the float32 (``0.7``, not
  ``0.699999988``), and a zoom that is zero or not finite makes the spacing ``None``.
* **zarr**: a plain array is read by the convention above from its number of dimensions (or from an ``"axes"``
  attribute such as ``"cyx"``), spacing from the ``"spacing"`` attribute. An OME-Zarr multiscale group is read at
  level 0 (the first dataset listed in ``multiscales[0].datasets``; zarr v2 ``.zattrs`` or zarr v3 ``zarr.json``
  attributes, possibly under an ``"ome"`` key as in OME-Zarr 0.5). Its ``axes`` metadata names the channel and
  spatial axes; a time axis of length one is dropped, a longer one is a :class:`DataError`. Spacing is the scale
  of level 0 (times the multiscale-wide scale, if any) on the spatial axes.
* **TIFF**: the axes of the first series (tifffile's names) decide: ``Z``/``Y``/``X`` spatial, ``C`` or ``S``
  (samples, e.g. RGB) the channel axis, ``T`` time (length one only); other letters (``Q``, ``I``: unknown) are
  filled in by the convention above. Files written by tifffile without an ``axes`` entry follow the convention
  by their number of dimensions (tifffile's letters are guesses there), except that interleaved samples
  (``YXS``: RGB written with ``photometric="rgb"``) stay a channel axis. Spacing comes from a ``"spacing"``
  entry in tifffile's JSON description (what :func:`write_volume` writes) or from ImageJ metadata (``spacing``
  for z, resolution tags for y and x); OME-TIFF physical sizes are not read (pass ``spacing``).

A ``spacing`` passed to :func:`open_volume` (e.g. from ``dataset.json``) overrides the file's.

Laziness
--------
Opening a volume reads metadata only. ``volume[key]`` and :meth:`Volume.region` read the requested region:

* zarr / OME-Zarr: only the chunks that overlap the region are read and decoded;
* TIFF: contiguous uncompressed files are memory-mapped (``tifffile.memmap``) and only the pages of the region
  are touched; other TIFFs (compressed, tiled) are read through ``tifffile``'s zarr store, tile by tile or strip
  by strip for the region;
* uncompressed ``.nii``: nibabel's array proxy reads only the bytes of the region from the file;
* **``.nii.gz`` is not random-access**: every read decompresses the gzip stream from the start of the file up to
  the end of the region (time proportional to the file, not to the region). Convert large volumes to ``.nii`` or
  zarr for patch-wise training.

:meth:`Volume.read` reads everything and is meant for small volumes. Results are always fresh, writable numpy
arrays in native byte order, never views into a memory map. A volume re-opens its file after a ``fork`` (e.g. in
``DataLoader`` workers), and pickling a volume sends its path, not its data; nothing here uses pickle on files.
"""

from __future__ import annotations

import contextlib
import math
import numbers
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medtrain.errors import DataError
from medtrain.io.paths import require_dir, require_file

__all__ = [
    "SUPPORTED_EXTENSIONS",
    "Volume",
    "box_inside",
    "open_volume",
    "supported_suffix",
    "volume_stem",
    "write_volume",
]

SUPPORTED_EXTENSIONS = (".zarr", ".tif", ".tiff", ".nii", ".nii.gz")
"""File name endings :func:`open_volume` reads (case-insensitive)."""

# Longest first: the stem strips the whole format ending, including the OME infix.
_ENDINGS: tuple[tuple[str, str], ...] = (
    (".ome.zarr", "zarr"),
    (".zarr", "zarr"),
    (".ome.tiff", "tif"),
    (".ome.tif", "tif"),
    (".tiff", "tif"),
    (".tif", "tif"),
    (".nii.gz", "nii"),
    (".nii", "nii"),
)
_DEFAULT_AXES = {2: "yx", 3: "zyx", 4: "czyx"}
_SPATIAL_RANK = {"z": 0, "y": 1, "x": 2}


def _supported_list() -> str:
    return ", ".join(SUPPORTED_EXTENSIONS)


def _ending(path: Path) -> tuple[str, str] | None:
    name = Path(path).name.lower()
    for ending, kind in _ENDINGS:
        if name.endswith(ending) and len(name) > len(ending):
            return ending, kind
    return None


def supported_suffix(path: str | os.PathLike[str]) -> str | None:
    """Return the volume format of ``path`` from its name — ``"zarr"``, ``"tif"`` or ``"nii"`` — or ``None``.

    Case-insensitive; ``.ome.zarr`` is ``"zarr"``, ``.tiff`` and ``.ome.tif`` are ``"tif"``, ``.nii.gz`` is
    ``"nii"``. The file is not opened.
    """
    found = _ending(Path(path))
    return found[1] if found else None


def volume_stem(path: str | os.PathLike[str]) -> str:
    """Return the file name of ``path`` without its volume ending: ``case_01.nii.gz`` → ``case_01``.

    Strips ``.zarr``, ``.ome.zarr``, ``.tif``, ``.tiff``, ``.ome.tif(f)``, ``.nii`` and ``.nii.gz`` (any case).
    Raises :class:`DataError` for a name without a supported ending.
    """
    path = Path(path)
    found = _ending(path)
    if found is None:
        raise DataError(f"not a volume file name: {path} (expected one of {_supported_list()})")
    return path.name[: -len(found[0])]


# ---------------------------------------------------------------------------------------------- layout


@dataclass(frozen=True)
class _Layout:
    """How the source array maps to medtrain's axes.

    ``order[k]`` is the source axis of output axis ``k``; ``fixed`` lists source axes of length one that are
    indexed at 0 (time, dropped singletons); ``axes`` names the output axes (``"czyx"``, ``"yx"``, ...).
    """

    axes: str
    order: tuple[int, ...]
    fixed: tuple[int, ...]


def _layout(path: Path, names: Sequence[str], roles: Sequence[str], shape: Sequence[int]) -> _Layout:
    """Build the layout from one ``(name, role)`` per source axis; roles: space / channel / time / drop.

    Time and dropped axes must have length one. At most one channel axis (singleton extras are dropped) and two
    or three spatial axes. Spatial axes named z/y/x are put in z, y, x order; others keep the file order.
    """
    fixed: list[int] = []
    channels: list[int] = []
    spatial: list[int] = []
    for axis, (name, role) in enumerate(zip(names, roles, strict=True)):
        if role == "space":
            spatial.append(axis)
        elif role == "channel":
            channels.append(axis)
        else:
            if shape[axis] != 1:
                what = "time" if role == "time" else "unsupported"
                raise DataError(
                    f"volume {path}: {what} axis {name!r} has length {shape[axis]}; medtrain reads volumes with "
                    f"channel and spatial axes only (a {what} axis must have length 1)"
                )
            fixed.append(axis)
    if len(channels) > 1:
        keep = [axis for axis in channels if shape[axis] != 1] or channels[:1]
        if len(keep) > 1:
            found = ", ".join(f"{names[a]!r} ({shape[a]})" for a in keep)
            raise DataError(f"volume {path}: more than one channel axis: {found}; expected at most one")
        fixed.extend(axis for axis in channels if axis not in keep)
        channels = keep
    if len(spatial) not in (2, 3):
        raise DataError(
            f"volume {path}: {len(spatial)} spatial axes in {''.join(names)!r} of shape {tuple(shape)}; "
            "expected 2 (y, x) or 3 (z, y, x)"
        )
    spatial_names = [names[axis].lower() for axis in spatial]
    if set(spatial_names) <= set(_SPATIAL_RANK) and len(set(spatial_names)) == len(spatial_names):
        spatial.sort(key=lambda axis: _SPATIAL_RANK[names[axis].lower()])
    canonical = "yx" if len(spatial) == 2 else "zyx"
    return _Layout(
        axes=("c" if channels else "") + canonical, order=tuple(channels + spatial), fixed=tuple(sorted(fixed))
    )


def _default_layout(path: Path, shape: Sequence[int], axes: str | None = None) -> _Layout:
    """The layout of an array without axis names (``axes`` optional, e.g. ``"cyx"``): the convention by ndim."""
    if axes is None:
        if len(shape) not in _DEFAULT_AXES:
            raise DataError(
                f"volume {path}: array of shape {tuple(shape)} has {len(shape)} dimensions; expected 2-D (y, x), "
                "3-D (z, y, x) or 4-D (c, z, y, x)"
            )
        axes = _DEFAULT_AXES[len(shape)]
    axes = axes.lower()
    if axes not in ("yx", "zyx", "cyx", "czyx") or len(axes) != len(shape):
        raise DataError(
            f"volume {path}: axes {axes!r} do not fit an array of shape {tuple(shape)}; expected one of "
            "'yx', 'zyx', 'cyx', 'czyx' with one letter per dimension"
        )
    return _Layout(axes=axes, order=tuple(range(len(shape))), fixed=())


def _check_spacing(path: Path, values: Any, n_spatial: int, source: str) -> tuple[float, ...]:
    """Return ``values`` as a tuple of ``n_spatial`` positive finite floats, or raise :class:`DataError`."""
    try:
        if isinstance(values, str | bytes | dict):
            raise TypeError(values)
        spacing = tuple(float(v) for v in values)
        valid = all(not isinstance(v, bool) for v in values)
    except (TypeError, ValueError):
        spacing, valid = (), False
    if not valid or len(spacing) != n_spatial or not all(math.isfinite(v) and v > 0 for v in spacing):
        raise DataError(
            f"volume {path}: {source} spacing {values!r} is invalid; expected {n_spatial} positive numbers "
            f"(one per spatial axis, {'z, y, x' if n_spatial == 3 else 'y, x'} order)"
        )
    return spacing


def _float32_value(value: Any) -> float:
    """The shortest decimal that round-trips a float32 header value, as a Python float."""
    return float(np.format_float_positional(np.float32(value), unique=True, trim="-"))


# ---------------------------------------------------------------------------------------------- sources


class _Backend:
    """An opened array-like source (``shape``, ``dtype``, basic ``__getitem__``) and how to release it."""

    def __init__(self, array: Any, close: Callable[[], None] | None = None) -> None:
        self.array = array
        self._close = close

    def close(self) -> None:
        if self._close is not None:
            self._close()
            self._close = None
        self.array = None


@dataclass
class _Probe:
    backend: _Backend
    opener: Callable[[], _Backend]
    layout: _Layout
    spacing: tuple[float, ...] | None
    kind: str


def _open_zarr_node(path: Path, ome_path: str | None) -> _Backend:
    import zarr

    node = zarr.open(store=str(path), mode="r")
    if ome_path is not None:
        node = node[ome_path]
    if not isinstance(node, zarr.Array):
        raise DataError(f"volume {path}: expected a zarr array at {ome_path or 'the root'}, found a group")
    return _Backend(node)


def _probe_zarr(path: Path) -> _Probe:
    import zarr

    node = zarr.open(store=str(path), mode="r")
    attrs = dict(node.attrs.asdict())
    if isinstance(node, zarr.Array):
        axes = attrs.get("axes")
        if axes is not None and not isinstance(axes, str):
            raise DataError(f"volume {path}: zarr attribute 'axes' is {axes!r}; expected a string such as 'cyx'")
        layout = _default_layout(path, node.shape, axes)
        n_spatial = len(layout.axes.replace("c", ""))
        raw = attrs.get("spacing")
        spacing = None if raw is None else _check_spacing(path, raw, n_spatial, "zarr attribute")
        return _Probe(_Backend(node), lambda: _open_zarr_node(path, None), layout, spacing, "zarr")
    return _probe_ome_zarr(path, node, attrs)


def _ome_axes(path: Path, meta: dict[str, Any], ndim: int) -> tuple[list[str], list[str]]:
    """Names and roles of the axes of an OME multiscale (0.1-0.5 styles)."""
    axes = meta.get("axes")
    if axes is None:
        if ndim == 5:  # OME-Zarr 0.1/0.2: always t, c, z, y, x
            axes = list("tczyx")
        else:
            return list(_DEFAULT_AXES.get(ndim, "?" * ndim)), [
                "channel" if a == "c" else "space" for a in _DEFAULT_AXES.get(ndim, "?" * ndim)
            ]
    if not isinstance(axes, list) or len(axes) != ndim:
        raise DataError(
            f"volume {path}: OME axes {axes!r} do not match the {ndim} dimensions of level 0; expected one entry "
            "per dimension"
        )
    names: list[str] = []
    roles: list[str] = []
    by_name = {"t": "time", "c": "channel", "z": "space", "y": "space", "x": "space"}
    for axis in axes:
        if isinstance(axis, str):
            name, kind = axis, None
        elif isinstance(axis, dict) and isinstance(axis.get("name"), str):
            name, kind = axis["name"], axis.get("type")
        else:
            raise DataError(f"volume {path}: OME axis {axis!r} has no name; expected {{'name': ..., 'type': ...}}")
        role = {"space": "space", "channel": "channel", "time": "time"}.get(kind) if isinstance(kind, str) else None
        names.append(name)
        roles.append(role or by_name.get(name.lower(), "drop"))
    return names, roles


def _ome_scale(transforms: Any, ndim: int) -> list[float] | None:
    """The product of the ``scale`` entries of an OME ``coordinateTransformations`` list, or ``None``."""
    if not isinstance(transforms, list):
        return None
    scale = None
    for transform in transforms:
        if isinstance(transform, dict) and transform.get("type") == "scale":
            values = transform.get("scale")
            if not isinstance(values, list) or len(values) != ndim:
                return None
            scale = values if scale is None else [a * b for a, b in zip(scale, values, strict=True)]
    return scale


def _probe_ome_zarr(path: Path, group: Any, attrs: dict[str, Any]) -> _Probe:
    meta = attrs.get("ome") if isinstance(attrs.get("ome"), dict) else attrs
    multiscales = meta.get("multiscales")
    if not isinstance(multiscales, list) or not multiscales or not isinstance(multiscales[0], dict):
        raise DataError(
            f"volume {path}: zarr group without OME 'multiscales' metadata; expected a zarr array or an OME-Zarr "
            "multiscale group"
        )
    first = multiscales[0]
    datasets = first.get("datasets")
    if not isinstance(datasets, list) or not datasets or not isinstance(datasets[0], dict):
        raise DataError(f"volume {path}: OME 'multiscales[0].datasets' is missing or empty; expected levels")
    level = datasets[0].get("path")
    if not isinstance(level, str) or not level:
        raise DataError(f"volume {path}: OME 'multiscales[0].datasets[0].path' is {level!r}; expected a name")
    try:
        backend = _open_zarr_node(path, level)
    except (KeyError, FileNotFoundError) as exc:
        raise DataError(f"volume {path}: OME level 0 {level!r} is missing; expected a zarr array there") from exc
    shape = backend.array.shape
    names, roles = _ome_axes(path, first, len(shape))
    layout = _layout(path, names, roles, shape)
    spacing = None
    scale = _ome_scale(datasets[0].get("coordinateTransformations"), len(shape))
    global_scale = _ome_scale(first.get("coordinateTransformations"), len(shape))
    if scale is not None and global_scale is not None:
        scale = [a * b for a, b in zip(scale, global_scale, strict=True)]
    if scale is not None:
        spatial = layout.order[1:] if layout.axes.startswith("c") else layout.order
        spacing = _check_spacing(path, [scale[axis] for axis in spatial], len(spatial), "OME scale")
    return _Probe(backend, lambda: _open_zarr_node(path, level), layout, spacing, "zarr")


def _open_tiff(path: Path, memmap: bool) -> _Backend:
    import tifffile

    if memmap:
        return _Backend(tifffile.memmap(path, series=0, mode="r"))
    import zarr

    store = tifffile.imread(path, aszarr=True, series=0, level=0)
    try:
        array = zarr.open_array(store=store, mode="r")
    except BaseException:
        store.close()
        raise
    return _Backend(array, store.close)


_TIFF_ROLES = {"X": "space", "Y": "space", "Z": "space", "C": "channel", "S": "channel", "T": "time"}


def _tiff_layout(path: Path, axes: str, shape: Sequence[int], labelled: bool) -> _Layout:
    if not labelled:
        return _default_layout(path, shape)
    axes = axes.upper()
    names = list(axes)
    roles = [_TIFF_ROLES.get(letter, "unknown") for letter in axes]
    if "Y" not in axes or "X" not in axes:
        raise DataError(f"volume {path}: TIFF axes {axes!r} lack Y or X; expected an image series")
    has_z, has_c = "Z" in axes, any(r == "channel" for r in roles)
    for axis in reversed(range(len(names))):
        if roles[axis] != "unknown":
            continue
        if not has_z:
            names[axis], roles[axis], has_z = "z", "space", True
        elif not has_c:
            roles[axis], has_c = "channel", True
        else:
            roles[axis] = "drop"
    return _layout(path, names, roles, shape)


def _tiff_spacing(path: Path, tif: Any, layout: _Layout) -> tuple[float, ...] | None:
    n_spatial = len(layout.axes.replace("c", ""))
    shaped = tif.shaped_metadata
    if shaped and isinstance(shaped[0], dict) and shaped[0].get("spacing") is not None:
        return _check_spacing(path, shaped[0]["spacing"], n_spatial, "TIFF description")
    imagej = tif.imagej_metadata
    if not imagej:
        return None
    tags = tif.series[0].keyframe.tags
    try:
        yres = tags["YResolution"].value
        xres = tags["XResolution"].value
        values = [yres[1] / yres[0], xres[1] / xres[0]]
    except (KeyError, TypeError, ZeroDivisionError, IndexError):
        return None
    if n_spatial == 3:
        if imagej.get("spacing") is None:
            return None
        values.insert(0, imagej["spacing"])
    try:
        return _check_spacing(path, values, n_spatial, "ImageJ")
    except DataError:
        return None


def _probe_tiff(path: Path) -> _Probe:
    import tifffile

    with tifffile.TiffFile(path) as tif:
        if not tif.series:
            raise DataError(f"volume {path}: TIFF without an image series")
        series = tif.series[0]
        shaped = tif.shaped_metadata
        # tifffile-written files without 'axes' carry tifffile's guesses (Q, planar S): use the convention
        # instead, except for interleaved samples (``YXS``, e.g. RGB), which are a real channel axis.
        guessed = bool(shaped and isinstance(shaped[0], dict) and "axes" not in shaped[0])
        labelled = not guessed or series.axes.upper().endswith("S")
        layout = _tiff_layout(path, series.axes, series.shape, labelled)
        spacing = _tiff_spacing(path, tif, layout)
        memmap = series.dataoffset is not None
        shape = tuple(series.shape)
    try:
        backend = _open_tiff(path, memmap)
    except ValueError:
        if not memmap:
            raise
        memmap = False
        backend = _open_tiff(path, memmap)
    if tuple(backend.array.shape) != shape:
        backend.close()
        raise DataError(f"volume {path}: TIFF data of shape {backend.array.shape} does not match series {shape}")
    return _Probe(backend, lambda: _open_tiff(path, memmap), layout, spacing, "tif")


def _open_nifti(path: Path) -> _Backend:
    import nibabel as nib

    image = nib.load(str(path))
    if not isinstance(image, nib.Nifti1Image | nib.Nifti2Image):
        raise DataError(f"volume {path}: not a NIfTI-1/2 image ({type(image).__name__})")
    return _Backend(image.dataobj)


def _probe_nifti(path: Path) -> _Probe:
    import nibabel as nib

    image = nib.load(str(path))
    if not isinstance(image, nib.Nifti1Image | nib.Nifti2Image):
        raise DataError(f"volume {path}: not a NIfTI-1/2 image ({type(image).__name__})")
    shape = tuple(int(n) for n in image.shape)
    ndim = len(shape)
    names_by_ndim = {2: "xy", 3: "xyz", 4: "xyzc", 5: "xyztc"}
    if ndim not in names_by_ndim:
        raise DataError(
            f"volume {path}: NIfTI of shape {shape} has {ndim} dimensions; expected (x, y), (x, y, z), "
            "(x, y, z, c) or (x, y, z, 1, c)"
        )
    names = list(names_by_ndim[ndim])
    roles = [{"x": "space", "y": "space", "z": "space", "t": "time", "c": "channel"}[n] for n in names]
    layout = _layout(path, names, roles, shape)
    zooms = image.header.get_zooms()
    spatial = layout.order[1:] if layout.axes.startswith("c") else layout.order
    values = [_float32_value(zooms[axis]) for axis in spatial]
    spacing = tuple(values) if all(math.isfinite(v) and v > 0 for v in values) else None
    return _Probe(_Backend(image.dataobj), lambda: _open_nifti(path), layout, spacing, "nii")


_PROBES: dict[str, Callable[[Path], _Probe]] = {"zarr": _probe_zarr, "tif": _probe_tiff, "nii": _probe_nifti}


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


# ---------------------------------------------------------------------------------------------- Volume


class Volume:
    """A lazily read volume in medtrain's axis convention (see the module docstring).

    Attributes: ``path``, ``format`` (``"zarr"``, ``"tif"``, ``"nii"``), ``axes`` (``"yx"``, ``"zyx"``, ``"cyx"``
    or ``"czyx"``), ``shape``, ``dtype`` (native byte order), ``ndim``, ``spatial_shape``, ``channels`` (1 without
    a channel axis), ``has_channel_axis``, ``spacing`` (one float per spatial axis, or ``None``) and ``nbytes``.
    Use ``volume[key]`` (basic slicing), :meth:`region` or, for small volumes, :meth:`read`. Create volumes with
    :func:`open_volume`.
    """

    def __init__(self, path: Path, probe: _Probe, spacing: tuple[float, ...] | None, override: Any) -> None:
        self.path = path
        self.format = probe.kind
        self.axes = probe.layout.axes
        self._layout = probe.layout
        self._opener = probe.opener
        self._backend: _Backend | None = probe.backend
        self._pid = os.getpid()
        self._override = override
        source_shape = tuple(int(n) for n in probe.backend.array.shape)
        self._source_ndim = len(source_shape)
        self.shape: tuple[int, ...] = tuple(source_shape[axis] for axis in probe.layout.order)
        self.ndim = len(self.shape)
        self.has_channel_axis = self.axes.startswith("c")
        self.channels = self.shape[0] if self.has_channel_axis else 1
        self.spatial_shape: tuple[int, ...] = self.shape[1:] if self.has_channel_axis else self.shape
        self.spacing = spacing
        self.dtype = self._result_dtype(probe.backend.array)

    def _result_dtype(self, array: Any) -> np.dtype[Any]:
        if self.format == "nii":  # the proxy may scale (scl_slope/inter): ask it with a one-voxel read
            key = tuple(slice(0, 1) for _ in range(self._source_ndim))
            dtype = np.asarray(array[key]).dtype
        else:
            dtype = np.dtype(array.dtype)
        return dtype.newbyteorder("=")

    @property
    def nbytes(self) -> int:
        """Size of the whole array in memory, in bytes."""
        return math.prod(self.shape) * self.dtype.itemsize

    def __repr__(self) -> str:
        return (
            f"Volume({str(self.path)!r}, axes={self.axes!r}, shape={self.shape}, dtype={self.dtype}, "
            f"spacing={self.spacing})"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickle as "open this path again" (for spawned DataLoader workers), never as the data."""
        return (_reopen, (self.path, self._override))

    def __enter__(self) -> Volume:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release file handles and memory maps; a later read opens the file again."""
        if self._backend is not None:
            self._backend.close()
            self._backend = None

    def _array(self) -> Any:
        if self._backend is None or self._pid != os.getpid():
            # After a fork the child opens its own handles: it must not share the parent's file offsets.
            self._backend = self._opener()
            self._pid = os.getpid()
        return self._backend.array

    def _normalise_key(self, key: Any) -> list[int | slice]:
        items = list(key) if isinstance(key, tuple) else [key]
        ellipses = [i for i, item in enumerate(items) if item is Ellipsis]
        if len(ellipses) > 1:
            raise IndexError("an index can only have a single ellipsis ('...')")
        if ellipses:
            at = ellipses[0]
            items[at : at + 1] = [slice(None)] * max(0, self.ndim - len(items) + 1)
        if len(items) > self.ndim:
            raise IndexError(f"too many indices for a {self.ndim}-D volume of shape {self.shape}: {key!r}")
        items += [slice(None)] * (self.ndim - len(items))
        normalised: list[int | slice] = []
        for axis, (item, size) in enumerate(zip(items, self.shape, strict=True)):
            if isinstance(item, slice):
                start, stop, step = item.indices(size)
                if step < 1:
                    raise ValueError(f"volume {self.path}: slice {item} on axis {axis} has a step < 1")
                normalised.append(slice(start, max(start, stop), step))
            elif isinstance(item, numbers.Integral) and not isinstance(item, bool | np.bool_):
                index = int(item)
                if not -size <= index < size:
                    raise IndexError(f"index {index} is out of bounds for axis {axis} with size {size}")
                normalised.append(index % size)
            else:
                raise TypeError(
                    f"volume {self.path}: unsupported index {item!r}; use integers, slices and '...' (basic slicing)"
                )
        return normalised

    def __getitem__(self, key: Any) -> np.ndarray:
        """Read the region selected by basic slicing (integers, slices with step >= 1, ``...``) as a numpy array.

        Indices refer to medtrain's axes (``(c,) z, y, x``); only the region is read from the file.
        """
        items = self._normalise_key(key)
        source: list[int | slice] = [0] * self._source_ndim  # the layout's fixed (length-one) axes stay at 0
        for out_axis, src_axis in enumerate(self._layout.order):
            source[src_axis] = items[out_axis]
        kept = [item for item in items if isinstance(item, slice)]
        if any(len(range(item.start, item.stop, item.step)) == 0 for item in kept):
            # Empty selections never touch the file (nibabel cannot map zero bytes).
            return np.empty([len(range(item.start, item.stop, item.step)) for item in kept], dtype=self.dtype)
        try:
            data = self._array()[tuple(source)]
            data = np.array(data) if isinstance(data, np.memmap) else np.asarray(data)
        except MemoryError:
            raise
        except Exception as exc:
            raise DataError(f"cannot read volume {self.path}: {_first_line(exc)}") from exc
        kept_source = [axis for axis in range(self._source_ndim) if isinstance(source[axis], slice)]
        wanted = [self._layout.order[k] for k in range(self.ndim) if isinstance(items[k], slice)]
        permutation = [kept_source.index(axis) for axis in wanted]
        if permutation != sorted(permutation):
            data = np.ascontiguousarray(data.transpose(permutation))
        if not data.dtype.isnative:
            data = data.astype(data.dtype.newbyteorder("="))
        if not data.flags.writeable:
            data = data.copy()
        return data

    def read(self) -> np.ndarray:
        """Read the whole array (``nbytes`` of memory): meant for small volumes, labels of small data, tests."""
        return self[...]

    def region(self, starts: Sequence[int], sizes: Sequence[int]) -> np.ndarray:
        """Read the box ``[starts, starts + sizes)``; no padding, no clipping.

        ``starts`` and ``sizes`` have one entry per axis, or one per spatial axis (all channels are then read).
        Raises ``ValueError`` when the box leaves the volume, sizes are negative or lengths do not match.
        """
        starts, sizes = list(starts), list(sizes)
        if len(starts) != len(sizes):
            raise ValueError(f"region: {len(starts)} starts but {len(sizes)} sizes")
        if len(starts) == len(self.spatial_shape) and self.has_channel_axis:
            starts, sizes = [0, *starts], [self.channels, *sizes]
        if len(starts) != self.ndim:
            raise ValueError(
                f"region: {len(starts)} starts for volume {self.path} of shape {self.shape} (axes {self.axes!r}); "
                f"expected {self.ndim} or {len(self.spatial_shape)}"
            )
        for value in (*starts, *sizes):
            if not isinstance(value, numbers.Integral) or isinstance(value, bool | np.bool_):
                raise ValueError(f"region: starts and sizes must be integers, got {value!r}")
        for axis, (start, size, extent) in enumerate(zip(starts, sizes, self.shape, strict=True)):
            if size < 0 or start < 0 or start + size > extent:
                raise ValueError(
                    f"region: [{start}, {start + size}) on axis {axis} ({self.axes[axis]}) leaves volume "
                    f"{self.path} of shape {self.shape}"
                )
        return self[tuple(slice(int(s), int(s) + int(n)) for s, n in zip(starts, sizes, strict=True))]


def _reopen(path: Path, spacing: Sequence[float] | None) -> Volume:
    return open_volume(path, spacing=spacing)


def open_volume(path: str | os.PathLike[str], *, spacing: Sequence[float] | None = None) -> Volume:
    """Open the volume at ``path`` (``.zarr`` array or OME-Zarr group, ``.tif``/``.tiff``, ``.nii``/``.nii.gz``).

    Only metadata is read; see the module docstring for the axis convention and what stays lazy. ``spacing``,
    one positive number per spatial axis in ``(z, y, x)`` / ``(y, x)`` order, overrides the file's spacing.

    Raises :class:`DataError` for an unsupported file name (listing the supported ones), a missing path, a
    file that cannot be parsed (naming it and the first line of the underlying error), axes medtrain cannot map
    (e.g. a time axis longer than one) and a ``spacing`` of the wrong length.
    """
    path = Path(path)
    kind = supported_suffix(path)
    if kind is None:
        raise DataError(f"unsupported volume format: {path} (expected one of {_supported_list()})")
    if kind == "zarr":
        require_dir(path, "volume")
    else:
        require_file(path, "volume")
    probe: _Probe | None = None
    try:
        probe = _PROBES[kind](path)
        final = probe.spacing
        if spacing is not None:
            final = _check_spacing(path, spacing, len(probe.layout.axes.replace("c", "")), "given")
        return Volume(path, probe, final, None if spacing is None else tuple(spacing))
    except (DataError, MemoryError):
        if probe is not None:
            probe.backend.close()
        raise
    except Exception as exc:
        if probe is not None:
            probe.backend.close()
        expected = {"zarr": "a zarr array or OME-Zarr group", "tif": "a TIFF file", "nii": "a NIfTI file"}[kind]
        raise DataError(f"cannot read volume {path}: expected {expected}; {_first_line(exc)}") from exc


# ---------------------------------------------------------------------------------------------- writing


def _write_zarr(
    target: Path, array: np.ndarray, axes: str, spacing: tuple[float, ...] | None, ome: bool, chunks: Any
) -> None:
    import zarr

    if chunks is None:
        side = 256 if len(axes.replace("c", "")) == 2 else 64
        chunks = tuple(1 if letter == "c" else min(side, n) for letter, n in zip(axes, array.shape, strict=True))
    chunks = tuple(max(1, min(int(c), max(1, n))) for c, n in zip(chunks, array.shape, strict=True))
    if not ome:
        attrs: dict[str, Any] = {"axes": axes}
        if spacing is not None:
            attrs["spacing"] = list(spacing)
        out = zarr.create_array(
            store=str(target), shape=array.shape, dtype=array.dtype, chunks=chunks, attributes=attrs
        )
        out[...] = array
        return
    group = zarr.open_group(store=str(target), mode="w", zarr_format=2)
    scale = [1.0 if letter == "c" else 0.0 for letter in axes]
    spatial = iter(spacing if spacing is not None else [1.0] * len(axes.replace("c", "")))
    scale = [s if letter == "c" else float(next(spatial)) for s, letter in zip(scale, axes, strict=True)]
    group.attrs["multiscales"] = [
        {
            "version": "0.4",
            "name": target.name,
            "axes": [
                {"name": "c", "type": "channel"} if letter == "c" else {"name": letter, "type": "space"}
                for letter in axes
            ],
            "datasets": [{"path": "0", "coordinateTransformations": [{"type": "scale", "scale": scale}]}],
        }
    ]
    level = group.create_array(
        "0",
        shape=array.shape,
        dtype=array.dtype,
        chunks=chunks,
        chunk_key_encoding={"name": "v2", "separator": "/"},
    )
    level[...] = array


def write_volume(
    path: str | os.PathLike[str],
    array: np.ndarray,
    *,
    spacing: Sequence[float] | None = None,
    ome: bool = False,
    chunks: Sequence[int] | None = None,
    axes: str | None = None,
) -> Path:
    """Write ``array`` (medtrain's axes) to ``path`` in the format its name says; return the path.

    For tests, demos and synthetic data; ``open_volume(write_volume(p, a, spacing=s))`` gives back ``a`` and
    ``s`` exactly. ``axes`` defaults to the convention by dimension (``"yx"``, ``"zyx"``, ``"czyx"``); pass
    ``"cyx"`` for multichannel 2-D (zarr and TIFF only).

    * ``.zarr``: a zarr v3 array with ``"axes"`` and ``"spacing"`` attributes, or with ``ome=True`` an OME-Zarr
      0.4 multiscale group (zarr v2) with one level ``"0"``, axes and scale metadata (scale 1 without spacing).
      ``chunks`` (zarr only) defaults to 64 per spatial axis for 3-D (256 for 2-D), 1 per channel.
    * ``.tif``/``.tiff``: uncompressed, contiguous (memory-mappable) via ``tifffile.imwrite`` with the axes and
      spacing in tifffile's JSON description.
    * ``.nii``/``.nii.gz``: axes reversed to NIfTI's ``(x, y, z[, c])``, spacing in the header zooms (and a
      diagonal affine); without spacing the zooms are 1. Spacing must be exact in float32 to round-trip.

    An existing volume at ``path`` is replaced; the new one appears only once completely written. Raises
    ``ValueError`` for arguments that do not fit (dimensions, spacing length, ``ome``/``chunks``/``axes`` with a
    format that has no use for them) and :class:`DataError` for an unsupported file name.
    """
    path = Path(path)
    kind = supported_suffix(path)
    if kind is None:
        raise DataError(f"unsupported volume format: {path} (expected one of {_supported_list()})")
    array = np.asarray(array)
    if axes is None:
        if array.ndim not in _DEFAULT_AXES:
            raise ValueError(f"write_volume: array of shape {array.shape}; expected 2-D, 3-D or 4-D")
        axes = _DEFAULT_AXES[array.ndim]
    axes = axes.lower()
    if axes not in ("yx", "zyx", "cyx", "czyx") or len(axes) != array.ndim:
        raise ValueError(f"write_volume: axes {axes!r} do not fit shape {array.shape}")
    n_spatial = len(axes.replace("c", ""))
    if spacing is not None:
        spacing = tuple(float(v) for v in spacing)
        if len(spacing) != n_spatial or not all(math.isfinite(v) and v > 0 for v in spacing):
            raise ValueError(f"write_volume: spacing {spacing} must be {n_spatial} positive numbers ({axes} axes)")
    if ome and kind != "zarr":
        raise ValueError("write_volume: ome=True needs a .zarr path")
    if chunks is not None and (kind != "zarr" or len(chunks) != array.ndim):
        raise ValueError(f"write_volume: chunks {tuple(chunks)} need a .zarr path and one entry per axis")
    if kind == "nii" and axes == "cyx":
        raise ValueError("write_volume: NIfTI has no (c, y, x) layout; write 'czyx' with one z slice")
    path.parent.mkdir(parents=True, exist_ok=True)
    ending = _ending(path)
    assert ending is not None
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        tmp = tmp_dir / f"volume{ending[0]}"
        if kind == "zarr":
            _write_zarr(tmp, array, axes, spacing, ome, chunks)
        elif kind == "tif":
            import tifffile

            metadata: dict[str, Any] = {"axes": axes.upper()}
            if spacing is not None:
                metadata["spacing"] = list(spacing)
            tifffile.imwrite(
                tmp, array, metadata=metadata, photometric="minisblack", bigtiff=array.nbytes > 2**31 - 2**25
            )
        else:
            import nibabel as nib

            zooms = list(spacing[::-1]) if spacing is not None else [1.0] * n_spatial
            affine = np.diag([*zooms, *[1.0] * (3 - n_spatial), 1.0])
            image = nib.Nifti1Image(array.transpose(tuple(reversed(range(array.ndim)))), affine)
            image.header.set_data_dtype(array.dtype)
            image.header.set_zooms([*zooms, *[1.0] * (array.ndim - n_spatial)])
            nib.save(image, str(tmp))
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(tmp_dir)
    return path


def box_inside(
    starts: Sequence[int], sizes: Sequence[int], shape: Sequence[int]
) -> tuple[tuple[int, ...], tuple[int, ...], tuple[tuple[int, int], ...]]:
    """Clip the box ``[starts, starts + sizes)`` to a volume of spatial ``shape`` (the same axes, in order).

    Returns ``(inner_starts, inner_sizes, padding)``: along axis ``a`` the inner box is
    ``[max(s, 0), min(s + n, N))`` and ``padding[a] = (before, after)`` the voxels of the box outside the volume, so
    reading the inner box and padding it by ``padding`` gives the whole box (a patch larger than the volume, as
    nnU-Net pads it). ``ValueError`` when the box and the volume do not overlap on some axis.
    """
    inner_starts, inner_sizes, padding = [], [], []
    for start, size, extent in zip(starts, sizes, shape, strict=True):
        low, high = max(int(start), 0), min(int(start) + int(size), int(extent))
        if high <= low:
            raise ValueError(f"box_inside: box [{start}, {start + size}) lies outside the extent {extent}")
        inner_starts.append(low)
        inner_sizes.append(high - low)
        padding.append((low - int(start), int(start) + int(size) - high))
    return tuple(inner_starts), tuple(inner_sizes), tuple(padding)
