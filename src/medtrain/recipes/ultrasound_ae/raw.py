"""Raw ultrasound-ae recordings: find the experiments under ``raw/``, validate them from headers alone, read lazily.

Layout (ARCHITECTURE.md, "On-disk data formats")::

    raw/<session>/<experiment>/channel_<k>.npy   int16 [pulses, samples], one per transducer channel k = 0..C-1
                               joystick.npy      numeric [pulses, 2+]: x, y, ... per pulse
                               meta.json         optional {"sampling_rate_hz": 5.0e7, "pulse_rate_hz": 50}

:func:`discover_experiments` checks every experiment by reading only the ``.npy`` headers (shape, dtype) and the
file sizes, so validating hours of recordings costs milliseconds; every problem raises :class:`DataError` (exit
code 2) naming the file and what is wrong with it. The samples are read later through memory maps:
:meth:`RawExperiment.read_pulses` copies only the pulses asked for. Entries whose names start with ``.`` are
ignored, as are files in an experiment folder that are none of the above; ``meta.json`` keys other than the two
rates are ignored too.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medtrain.errors import DataError
from medtrain.io.json_files import read_json_object
from medtrain.io.paths import require_dir, require_file

_CHANNEL_NAME = re.compile(r"channel_(0|[1-9][0-9]*)\.npy")
_NPY_VERSIONS = ((1, 0), (2, 0), (3, 0))
JOYSTICK_FILE = "joystick.npy"
META_FILE = "meta.json"


@dataclass(frozen=True)
class RawExperiment:
    """One validated experiment: C channel files of ``[pulses, samples]`` int16 and a joystick row per pulse."""

    session: str
    name: str
    folder: Path
    channel_files: tuple[Path, ...]
    joystick_file: Path
    sampling_rate_hz: float
    pulse_rate_hz: float
    pulses: int
    samples: int

    @property
    def channels(self) -> int:
        """Number of transducer channels C."""
        return len(self.channel_files)

    @property
    def key(self) -> str:
        """``"<session>/<experiment>"``, unique within a raw folder."""
        return f"{self.session}/{self.name}"

    def channel_arrays(self) -> tuple[np.ndarray, ...]:
        """Read-only memory maps of the channels, each int16 ``[pulses, samples]``; nothing is read until indexed.

        Raises :class:`DataError` if a file no longer matches what discovery found.
        """
        return tuple(_load_npy(path, (self.pulses, self.samples), mmap=True) for path in self.channel_files)

    def read_pulses(self, start: int, stop: int) -> np.ndarray:
        """Copy pulses ``start:stop`` of every channel into a native int16 array ``[C, stop - start, samples]``.

        Only that range is read from disk. Raises ``ValueError`` unless ``0 <= start <= stop <= pulses``.
        """
        if not 0 <= start <= stop <= self.pulses:
            raise ValueError(f"pulse range {start}:{stop} is outside 0:{self.pulses} of {self.key}")
        out = np.empty((self.channels, stop - start, self.samples), dtype=np.int16)
        for channel, array in enumerate(self.channel_arrays()):
            out[channel] = array[start:stop]
        return out

    def joystick(self) -> np.ndarray:
        """The joystick as float32 ``[pulses, J]`` (columns x, y, ...).

        Raises :class:`DataError` naming the file if it holds NaN/inf or no longer matches what discovery found.
        """
        values = _load_npy(self.joystick_file, None, mmap=False)
        if values.shape[0] != self.pulses:
            raise DataError(
                f"{self.joystick_file} changed since it was checked: {values.shape[0]} rows, expected {self.pulses}"
            )
        bad_rows = np.flatnonzero(~np.isfinite(values).all(axis=1))
        if bad_rows.size:
            raise DataError(
                f"{self.joystick_file}: NaN or infinity in {bad_rows.size} of {self.pulses} rows "
                f"(first: row {bad_rows[0]})"
            )
        return values.astype(np.float32)


def discover_experiments(
    root: Path, *, default_sampling_rate_hz: float = 5e7, default_pulse_rate_hz: float = 50.0
) -> list[RawExperiment]:
    """Find and validate every experiment under ``root`` (``root/<session>/<experiment>/``), sorted by key.

    Rates come from each experiment's ``meta.json``, or from the defaults where the file or a key is absent.
    Only headers are read. Raises :class:`DataError` naming the file for: a missing ``root``; no session folders;
    a session without experiment folders; an empty experiment folder; no ``channel_0.npy`` or a gap in the channel
    numbers; a truncated, corrupt or pickled ``.npy``; a channel that is not 2-D int16 with at least one pulse and
    one sample; channels of different shapes; a missing joystick, one that is not numeric 2-D with two or more
    columns, or one whose row count differs from the pulse count; invalid JSON or non-positive rates in
    ``meta.json``. Raises ``ValueError`` for non-positive defaults.
    """
    if not (default_sampling_rate_hz > 0 and default_pulse_rate_hz > 0):
        raise ValueError("default rates must be positive")
    root = require_dir(Path(root), "raw data folder")
    defaults = {"sampling_rate_hz": float(default_sampling_rate_hz), "pulse_rate_hz": float(default_pulse_rate_hz)}
    sessions = [path for path in _visible(root) if path.is_dir()]
    if not sessions:
        raise DataError(f"no experiments under {root}: expected {root}/<session>/<experiment>/channel_0.npy")
    experiments = []
    for session in sessions:
        folders = [path for path in _visible(session) if path.is_dir()]
        if not folders:
            raise DataError(f"session folder {session} holds no experiment folders: expected {session}/<experiment>/")
        experiments += [_read_experiment(session.name, folder, defaults) for folder in folders]
    return experiments


def read_experiment(
    folder: Path, *, default_sampling_rate_hz: float = 5e7, default_pulse_rate_hz: float = 50.0
) -> RawExperiment:
    """Validate and describe one experiment folder (its parent's name is the session); same checks and errors as
    :func:`discover_experiments`."""
    folder = require_dir(Path(folder), "experiment folder")
    defaults = {"sampling_rate_hz": float(default_sampling_rate_hz), "pulse_rate_hz": float(default_pulse_rate_hz)}
    return _read_experiment(folder.parent.name, folder, defaults)


def experiment_files(experiment: RawExperiment) -> list[Path]:
    """Every raw file of ``experiment`` (channels, joystick, ``meta.json`` if present), for fingerprinting."""
    meta = experiment.folder / META_FILE
    return [*experiment.channel_files, experiment.joystick_file, *([meta] if meta.is_file() else [])]


def _visible(folder: Path) -> list[Path]:
    """Entries of ``folder`` whose names do not start with ``.``, sorted by name."""
    return sorted(path for path in folder.iterdir() if not path.name.startswith("."))


def _read_experiment(session: str, folder: Path, defaults: dict[str, float]) -> RawExperiment:
    """Validate one experiment folder from its headers and ``meta.json``; see :func:`discover_experiments`."""
    entries = _visible(folder)
    if not entries:
        raise DataError(
            f"experiment folder {folder} is empty: expected channel_0.npy .. channel_<C-1>.npy and {JOYSTICK_FILE}"
        )
    numbered = {int(match[1]): path for path in entries if (match := _CHANNEL_NAME.fullmatch(path.name))}
    if 0 not in numbered:
        raise DataError(
            f"{folder / 'channel_0.npy'} not found: each experiment needs channel_0.npy .. channel_<C-1>.npy"
        )
    missing = [f"channel_{k}.npy" for k in range(max(numbered)) if k not in numbered]
    if missing:
        found = ", ".join(numbered[k].name for k in sorted(numbered))
        raise DataError(
            f"{folder}: channel files must be numbered from 0 without gaps; found {found}, missing {', '.join(missing)}"
        )
    channel_files = tuple(numbered[k] for k in sorted(numbered))
    shape = _channel_shape(channel_files[0])
    for path in channel_files[1:]:
        other = _channel_shape(path)
        if other != shape:
            raise DataError(
                f"{path} has shape {other} but {channel_files[0]} has shape {shape}: "
                "all channels of an experiment must have the same [pulses, samples]"
            )
    joystick_file = require_file(folder / JOYSTICK_FILE, "joystick file")
    _check_joystick(joystick_file, channel_files[0], shape[0])
    rates = _read_meta(folder / META_FILE, defaults)
    return RawExperiment(
        session=session,
        name=folder.name,
        folder=folder,
        channel_files=channel_files,
        joystick_file=joystick_file,
        sampling_rate_hz=rates["sampling_rate_hz"],
        pulse_rate_hz=rates["pulse_rate_hz"],
        pulses=shape[0],
        samples=shape[1],
    )


def _channel_shape(path: Path) -> tuple[int, int]:
    """``(pulses, samples)`` of a channel file, which must be 2-D int16 and non-empty (header only)."""
    shape, dtype = _npy_header(path)
    if len(shape) != 2:
        raise DataError(f"{path}: a channel must be 2-D [pulses, samples]; found shape {shape}")
    if not (dtype.kind == "i" and dtype.itemsize == 2):
        raise DataError(f"{path}: channels must be int16; found dtype {dtype}")
    if 0 in shape:
        raise DataError(f"{path}: the channel is empty (shape {shape})")
    return shape[0], shape[1]


def _check_joystick(path: Path, channel_0: Path, pulses: int) -> None:
    """Check the joystick header: numeric, 2-D with two or more columns, one row per pulse of ``channel_0``."""
    shape, dtype = _npy_header(path)
    if dtype.kind not in "fiu":
        raise DataError(f"{path}: the joystick must be numeric (float); found dtype {dtype}")
    if len(shape) != 2 or shape[1] < 2:
        raise DataError(f"{path}: the joystick must be 2-D [pulses, 2+] (x, y, ...); found shape {shape}")
    if shape[0] != pulses:
        raise DataError(f"{path} has {shape[0]} rows but {channel_0} has {pulses} pulses: one joystick row per pulse")


def _read_meta(path: Path, defaults: dict[str, float]) -> dict[str, float]:
    """The rates of ``defaults`` overridden by those in the optional ``meta.json`` at ``path``."""
    if not path.exists():
        return dict(defaults)
    meta = read_json_object(path, expected='a JSON object like {"sampling_rate_hz": 5.0e7, "pulse_rate_hz": 50}')
    rates = dict(defaults)
    for key in rates:
        if key in meta:
            value = meta[key]
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not (math.isfinite(value) and value > 0)
            ):
                raise DataError(f"{path}: {key} must be a positive number; found {value!r}")
            rates[key] = float(value)
    return rates


def _npy_header(path: Path) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype from the header of the ``.npy`` at ``path``, after checking the file holds all its data.

    Reads only the header. Raises :class:`DataError` for an unreadable, truncated or corrupt file and for arrays
    of Python objects (pickles, which are never loaded).
    """
    try:
        with path.open("rb") as handle:
            version = np.lib.format.read_magic(handle)
            if version not in _NPY_VERSIONS:
                raise ValueError(f"unsupported .npy format version {version}")
            read_header = (  # 3.0 differs from 2.0 only by a UTF-8 header, ASCII for numeric dtypes
                np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            )
            shape, _, dtype = read_header(handle)
            data_start = handle.tell()
    except (ValueError, EOFError) as exc:
        raise DataError(f"{path}: truncated or corrupt .npy file ({exc})") from exc
    except OSError as exc:
        raise DataError(f"{path}: cannot be read ({exc})") from exc
    if dtype.hasobject:
        raise DataError(f"{path}: holds Python objects (a pickled array, dtype {dtype}); only numeric arrays are read")
    expected = data_start + math.prod(shape) * dtype.itemsize
    size = path.stat().st_size
    if size < expected:
        raise DataError(
            f"{path}: truncated or corrupt .npy file: its header promises {dtype} {shape} ({expected} bytes) "
            f"but the file has {size} bytes"
        )
    return shape, dtype


def _load_npy(path: Path, shape: tuple[int, ...] | None, *, mmap: bool) -> np.ndarray:
    """Load ``path`` (memory-mapped read-only if ``mmap``), checking ``shape`` unless it is None; no pickles."""
    try:
        array = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (ValueError, EOFError, OSError) as exc:
        raise DataError(f"{path}: cannot be read as .npy ({exc})") from exc
    if shape is not None and array.shape != shape:
        raise DataError(f"{path} changed since it was checked: shape {array.shape}, expected {shape}")
    return array
