"""The ABR table of abr-diffusion: reading and validating it, the patient-level split, normalisation statistics.

One table holds every recording (ARCHITECTURE.md, "On-disk data formats"):

* ``.npz`` (read with ``allow_pickle=False``): ``signals [N, L]`` µV, ``static [N, 4]`` (:data:`STATIC_NAMES`),
  ``peak_v [N, 2]`` (latency ms, amplitude µV; NaN when wave V is absent), ``labels [N]`` (class index into
  ``class_names``, or class names), ``thresholds_db [N]``, ``patient_ids [N]``; optional ``class_names [K]``
  (default :data:`CLASS_NAMES`) and scalar ``sampling_rate_hz`` (default 20 kHz: 200 samples = 10 ms).
* ``.csv`` / ``.parquet``: columns ``signal_0 .. signal_{L-1}``, ``age``, ``intensity_db``, ``stimulus_rate_hz``,
  ``fmp``, ``peak_v_latency_ms``, ``peak_v_amplitude_uv`` (empty = absent), ``labels`` (class names, or indices
  into :data:`CLASS_NAMES`), ``thresholds_db``, ``patient_ids``; optional ``sampling_rate_hz`` (one value).

Class names are matched without regard to case, accents or surrounding blanks; the Turkish names of the clinical
data set the seed was written for (NÖROPATİ, SNİK, İTİK) are accepted as aliases (:data:`CLASS_ALIASES`). Labels
are always returned as indices into :data:`CLASS_NAMES`, whatever order the file used. Everything wrong with a file
is a :class:`DataError` naming the file, the array or column, and what was expected; a pickle (``.pkl``) is
refused with how to convert it.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medtrain.errors import DataError
from medtrain.io.splits import GroupSplit, split_groups
from medtrain.io.tables import ArraySpec, read_table, write_table_csv, write_table_npz

CLASS_NAMES = ("NORMAL", "NEUROPATHY", "SNHL", "TOTAL", "CONDUCTIVE")
STATIC_NAMES = ("age", "intensity_db", "stimulus_rate_hz", "fmp")
PEAK_COLUMNS = ("peak_v_latency_ms", "peak_v_amplitude_uv")
CLASS_ALIASES = {"NOROPATI": "NEUROPATHY", "SNIK": "SNHL", "ITIK": "CONDUCTIVE"}  # NÖROPATİ, SNİK, İTİK
DEFAULT_SAMPLING_RATE_HZ = 20000.0
PICKLE_SUFFIXES = (".pkl", ".pickle")
CONVERT_HINT = (
    "convert it once, in Python, from a source you trust: load it with pickle/pandas, then write plain arrays with "
    "np.savez('table.npz', signals=..., static=..., peak_v=..., labels=..., thresholds_db=..., patient_ids=..., "
    "class_names=np.array([...]), sampling_rate_hz=20000.0) — numeric or str arrays, no dtype=object — which "
    "medtrain reads with allow_pickle=False (or write a CSV with signal_0..signal_199 columns)"
)
_PICKLE_MAGIC = (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05")
_INDEX = re.compile(r"-?\d+(\.0*)?")  # a class index, also when written as a whole float ("2.0")


@dataclass(frozen=True, eq=False)
class ABRTable:
    """Validated ABR recordings: per-row arrays of equal length N, labels as indices into ``class_names``.

    ``signals [N, L]`` float32 µV; ``static [N, 4]`` float32 (:data:`STATIC_NAMES`); ``peak_v [N, 2]`` float32
    (latency ms, amplitude µV, NaN when absent); ``labels [N]`` int64; ``thresholds_db [N]`` float32;
    ``patient_ids [N]`` str; ``class_names`` (always :data:`CLASS_NAMES`); ``sampling_rate_hz``.
    """

    signals: np.ndarray
    static: np.ndarray
    peak_v: np.ndarray
    labels: np.ndarray
    thresholds_db: np.ndarray
    patient_ids: np.ndarray
    class_names: tuple[str, ...] = CLASS_NAMES
    sampling_rate_hz: float = DEFAULT_SAMPLING_RATE_HZ

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def signal_length(self) -> int:
        """Samples per signal (L)."""
        return int(self.signals.shape[1])

    @property
    def peak_present(self) -> np.ndarray:
        """``[N]`` bool: wave V annotated (latency and amplitude both finite)."""
        return np.isfinite(self.peak_v).all(axis=1)

    def static_column(self, name: str) -> np.ndarray:
        """The ``[N]`` column of ``static`` named ``name`` (one of :data:`STATIC_NAMES`)."""
        return self.static[:, STATIC_NAMES.index(name)]

    def subset(self, indices: np.ndarray | list[int]) -> ABRTable:
        """The rows ``indices`` (integer positions or a boolean mask of length N) as a new table."""
        index = np.asarray(indices)
        return ABRTable(
            signals=self.signals[index],
            static=self.static[index],
            peak_v=self.peak_v[index],
            labels=self.labels[index],
            thresholds_db=self.thresholds_db[index],
            patient_ids=self.patient_ids[index],
            class_names=self.class_names,
            sampling_rate_hz=self.sampling_rate_hz,
        )

    def arrays(self) -> dict[str, np.ndarray]:
        """The table as the plain arrays of the npz layout (what :func:`write_table_npz` writes)."""
        return {
            "signals": self.signals,
            "static": self.static,
            "peak_v": self.peak_v,
            "labels": self.labels,
            "class_names": np.array(self.class_names),
            "thresholds_db": self.thresholds_db,
            "patient_ids": self.patient_ids,
            "sampling_rate_hz": np.array(self.sampling_rate_hz),
        }


def read_abr_table(path: Path, *, signal_length: int = 200) -> ABRTable:
    """Read and validate the ABR table at ``path`` (``.npz``, ``.csv`` or ``.parquet``; layout in the module doc).

    Raises :class:`DataError` naming the file and the array/column for: a pickle file or pickled arrays (with how
    to convert), a missing required array or column, a signal length other than ``signal_length``, NaN or inf in
    ``signals``, non-finite or negative static values (age, intensity, FMP < 0; stimulus rate <= 0), infinite
    peak values or negative latencies, non-finite thresholds, unknown class names or out-of-range class indices,
    empty patient ids, a sampling rate that is not one positive number, and per-row arrays of different lengths.
    """
    path = Path(path)
    _refuse_pickle(path)
    try:
        arrays = _read_npz(path) if path.suffix.lower() == ".npz" else _read_columns(path, signal_length)
    except DataError as error:
        if "pickle" in str(error).lower():
            raise DataError(f"{error}; {CONVERT_HINT}") from None
        raise
    return _validate(path, arrays, signal_length)


def write_abr_table(path: Path, table: ABRTable) -> Path:
    """Write ``table`` atomically as ``.npz`` or ``.csv`` (by suffix) in the layout :func:`read_abr_table` reads.

    In a CSV, labels are written as class names and absent peaks as empty cells. Raises :class:`DataError` for
    another suffix.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".npz":
        return write_table_npz(path, table.arrays())
    if suffix != ".csv":
        raise DataError(f"table {path}: can write .npz or .csv, not {suffix!r}")
    columns: dict[str, np.ndarray] = {"signals": table.signals}
    columns.update({name: table.static[:, k] for k, name in enumerate(STATIC_NAMES)})
    columns.update({name: table.peak_v[:, k] for k, name in enumerate(PEAK_COLUMNS)})
    columns["labels"] = np.asarray(table.class_names)[table.labels]
    columns["thresholds_db"] = table.thresholds_db
    columns["patient_ids"] = table.patient_ids
    columns["sampling_rate_hz"] = np.full(len(table), table.sampling_rate_hz)
    return write_table_csv(path, columns, prefixed={"signals": ("signal_", table.signal_length)})


def patient_classes(table: ABRTable) -> dict[str, int]:
    """Each patient's majority class index over its rows (ties go to the lower class index)."""
    patients, inverse = np.unique(table.patient_ids, return_inverse=True)
    counts = np.zeros((len(patients), len(table.class_names)), dtype=np.int64)
    np.add.at(counts, (inverse, table.labels), 1)
    return {str(p): int(k) for p, k in zip(patients, counts.argmax(axis=1), strict=True)}


def split_patients(table: ABRTable, ratios: Sequence[float] = (0.7, 0.15, 0.15), *, seed: int = 0) -> GroupSplit:
    """Patient-level train/val/test split with :func:`medtrain.io.splits.split_groups`, stratified by each
    patient's majority class (:func:`patient_classes`): every row of a patient lands in the same split, and each
    class is spread over the splits in proportion to ``ratios`` as far as its number of patients allows."""
    strata = {patient: table.class_names[k] for patient, k in patient_classes(table).items()}
    return split_groups(strata, ratios=ratios, seed=seed, strata=strata)


def split_rows(table: ABRTable, split: GroupSplit) -> dict[str, np.ndarray]:
    """``{"train", "val", "test"}`` → sorted row indices of the patients in that split. Raises
    :class:`DataError` if a patient of the table is in no split."""
    names = np.array([split.split_of(str(p)) for p in np.unique(table.patient_ids)])
    _, inverse = np.unique(table.patient_ids, return_inverse=True)
    row_split = names[inverse]
    return {name: np.flatnonzero(row_split == name) for name in ("train", "val", "test")}


@dataclass(frozen=True)
class NormalizationStats:
    """Mean and standard deviation of each static parameter and of the signal samples (one pair for all
    samples), from the training split only. ``normalize_*`` compute ``(x − mean) / std``; a standard deviation
    below 1e-8 (e.g. a constant stimulus rate) is stored as 1 so that the column is only centred."""

    static_mean: tuple[float, ...]
    static_std: tuple[float, ...]
    signal_mean: float
    signal_std: float

    @classmethod
    def fit(cls, table: ABRTable, split: GroupSplit | None = None) -> NormalizationStats:
        """Statistics of the training rows of ``table`` under ``split`` (all rows when ``split`` is None: pass the
        training subset then). Population standard deviations (ddof 0). Raises :class:`DataError` when no row is
        left."""
        rows = split_rows(table, split)["train"] if split is not None else np.arange(len(table))
        if len(rows) == 0:
            raise DataError("no training rows to compute normalisation statistics from")
        static = table.static[rows].astype(np.float64)
        signals = table.signals[rows].astype(np.float64)
        return cls(
            static_mean=tuple(float(v) for v in static.mean(axis=0)),
            static_std=tuple(_safe_std(float(v)) for v in static.std(axis=0)),
            signal_mean=float(signals.mean()),
            signal_std=_safe_std(float(signals.std())),
        )

    def normalize_static(self, static: np.ndarray) -> np.ndarray:
        """``(static − static_mean) / static_std`` per column, float32; ``static`` is ``[..., 4]``."""
        mean = np.asarray(self.static_mean, dtype=np.float32)
        std = np.asarray(self.static_std, dtype=np.float32)
        return ((np.asarray(static, dtype=np.float32) - mean) / std).astype(np.float32)

    def normalize_signal(self, signals: np.ndarray) -> np.ndarray:
        """``(signals − signal_mean) / signal_std`` (µV → unitless), same type as the input."""
        return (signals - self.signal_mean) / self.signal_std

    def denormalize_signal(self, signals: np.ndarray) -> np.ndarray:
        """``signals · signal_std + signal_mean`` (the inverse of :meth:`normalize_signal`)."""
        return signals * self.signal_std + self.signal_mean

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (with the static parameter names) that :meth:`from_dict` reads back exactly."""
        return {
            "static_names": list(STATIC_NAMES),
            "static_mean": list(self.static_mean),
            "static_std": list(self.static_std),
            "signal_mean": self.signal_mean,
            "signal_std": self.signal_std,
        }

    @classmethod
    def from_dict(cls, payload: Mapping[str, Any]) -> NormalizationStats:
        """The statistics written by :meth:`to_dict`. Raises :class:`DataError` for a missing key, static names
        other than :data:`STATIC_NAMES`, wrong lengths, or non-finite / non-positive standard deviations."""
        missing = [key for key in ("static_mean", "static_std", "signal_mean", "signal_std") if key not in payload]
        if missing:
            raise DataError(f"normalisation statistics: missing key(s) {missing}")
        names = tuple(payload.get("static_names", STATIC_NAMES))
        if names != STATIC_NAMES:
            raise DataError(f"normalisation statistics: static_names {list(names)}; expected {list(STATIC_NAMES)}")
        stats = cls(
            static_mean=tuple(float(v) for v in payload["static_mean"]),
            static_std=tuple(float(v) for v in payload["static_std"]),
            signal_mean=float(payload["signal_mean"]),
            signal_std=float(payload["signal_std"]),
        )
        values = [*stats.static_mean, *stats.static_std, stats.signal_mean, stats.signal_std]
        stds = [*stats.static_std, stats.signal_std]
        if len(stats.static_mean) != len(STATIC_NAMES) or len(stats.static_std) != len(STATIC_NAMES):
            raise DataError(f"normalisation statistics: static_mean/static_std need {len(STATIC_NAMES)} values")
        if not all(math.isfinite(v) for v in values) or min(stds) <= 0:
            raise DataError("normalisation statistics: values must be finite and standard deviations positive")
        return stats


def _safe_std(value: float) -> float:
    """``value``, or 1.0 when it is below 1e-8 (a constant column)."""
    return value if value >= 1e-8 else 1.0


def _refuse_pickle(path: Path) -> None:
    """Raise :class:`DataError` (with :data:`CONVERT_HINT`) for a ``.pkl``/``.pickle`` file or a pickle stream."""
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise DataError(f"table {path}: pickle files are not read (they can run code when loaded); {CONVERT_HINT}")
    if path.is_file():
        with open(path, "rb") as handle:
            head = handle.read(2)
        if head in _PICKLE_MAGIC:
            raise DataError(f"table {path}: the file is a pickle, not a {path.suffix or 'table'} file; {CONVERT_HINT}")


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    """The arrays of an npz table, converted and shape-checked by :func:`read_table` (signal length later)."""
    specs = {
        "signals": ArraySpec("float32", (None, None)),
        "static": ArraySpec("float32", (None, len(STATIC_NAMES))),
        "peak_v": ArraySpec("float32", (None, 2)),
        "labels": ArraySpec("str", (None,)),
        "thresholds_db": ArraySpec("float32", (None,)),
        "patient_ids": ArraySpec("str", (None,)),
        "class_names": ArraySpec("str", (None,), required=False, per_row=False),
        "sampling_rate_hz": ArraySpec("float32", (), required=False, per_row=False),
    }
    return read_table(path, arrays=specs)


def _read_columns(path: Path, signal_length: int) -> dict[str, np.ndarray]:
    """The arrays of a CSV/Parquet table, assembled from its named columns."""
    specs = {name: ArraySpec("float32", (None,)) for name in (*STATIC_NAMES, *PEAK_COLUMNS, "thresholds_db")}
    specs.update(
        signals=ArraySpec("float32", (None, signal_length)),
        labels=ArraySpec("str", (None,)),
        patient_ids=ArraySpec("str", (None,)),
        sampling_rate_hz=ArraySpec("float32", (None,), required=False),
    )
    columns = read_table(path, arrays=specs, prefixed={"signals": ("signal_", signal_length)})
    arrays = {name: columns[name] for name in ("signals", "labels", "thresholds_db", "patient_ids")}
    arrays["static"] = np.stack([columns[name] for name in STATIC_NAMES], axis=1)
    arrays["peak_v"] = np.stack([columns[name] for name in PEAK_COLUMNS], axis=1)
    if "sampling_rate_hz" in columns:
        rates = np.unique(columns["sampling_rate_hz"])
        if len(rates) != 1:
            raise DataError(f"table {path}: column 'sampling_rate_hz' must hold one value, found {rates[:5].tolist()}")
        arrays["sampling_rate_hz"] = rates[0]
    return arrays


def _validate(path: Path, arrays: dict[str, np.ndarray], signal_length: int) -> ABRTable:
    """Check values and build the :class:`ABRTable`; raise :class:`DataError` for the first problem found."""
    where = f"table {path}"
    signals = arrays["signals"]
    if signals.shape[1] != signal_length:
        raise DataError(
            f"{where}: array 'signals' has {signals.shape[1]} samples per signal; expected the configured "
            f"signal length {signal_length} (data.signal_length)"
        )
    _require_finite(where, "signals", signals)
    static = arrays["static"]
    _require_finite(where, "static", static)
    for k, name in enumerate(STATIC_NAMES):
        column = static[:, k]
        bad = column <= 0 if name == "stimulus_rate_hz" else column < 0
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            expected = "> 0" if name == "stimulus_rate_hz" else ">= 0"
            raise DataError(
                f"{where}: static column {name!r} must be {expected}; {int(bad.sum())} row(s) are not, "
                f"first row {row} = {float(column[row]):g}"
            )
    peak_v = arrays["peak_v"]
    if np.isinf(peak_v).any() or (peak_v[:, 0] < 0).any():
        raise DataError(f"{where}: 'peak_v' latency/amplitude must be finite (NaN = absent) and latency >= 0")
    _require_finite(where, "thresholds_db", arrays["thresholds_db"])
    if (np.char.str_len(np.char.strip(arrays["patient_ids"])) == 0).any():
        raise DataError(f"{where}: 'patient_ids' has empty values; every row needs its patient's id")
    rate = float(arrays.get("sampling_rate_hz", DEFAULT_SAMPLING_RATE_HZ))
    if not (math.isfinite(rate) and rate > 0):
        raise DataError(f"{where}: 'sampling_rate_hz' must be a positive number (Hz), got {rate!r}")
    labels = _labels(where, arrays["labels"], arrays.get("class_names"))
    return ABRTable(
        signals=signals.astype(np.float32),
        static=static.astype(np.float32),
        peak_v=peak_v.astype(np.float32),
        labels=labels,
        thresholds_db=arrays["thresholds_db"].astype(np.float32),
        patient_ids=np.char.strip(arrays["patient_ids"].astype(str)),
        class_names=CLASS_NAMES,
        sampling_rate_hz=rate,
    )


def _require_finite(where: str, name: str, values: np.ndarray) -> None:
    """Raise naming the first row of ``values`` with NaN or inf."""
    bad = ~np.isfinite(values.reshape(len(values), -1)).all(axis=1)
    if bad.any():
        raise DataError(
            f"{where}: array {name!r} must be finite, but {int(bad.sum())} row(s) hold NaN or inf "
            f"(first row {int(np.flatnonzero(bad)[0])})"
        )


def _canonical(name: str) -> str | None:
    """The :data:`CLASS_NAMES` entry for ``name`` (case and accents ignored, aliases accepted), or None."""
    decomposed = unicodedata.normalize("NFKD", name.strip().upper())
    key = "".join(c for c in decomposed if not unicodedata.combining(c))  # NÖROPATİ -> NOROPATI
    key = CLASS_ALIASES.get(key, key)
    return key if key in CLASS_NAMES else None


def _labels(where: str, raw: np.ndarray, class_names: np.ndarray | None) -> np.ndarray:
    """Labels (indices into the file's ``class_names``, or names) as int64 indices into :data:`CLASS_NAMES`."""
    file_names = [str(n) for n in class_names] if class_names is not None else list(CLASS_NAMES)
    mapped = [_canonical(n) for n in file_names]
    unknown = [n for n, m in zip(file_names, mapped, strict=True) if m is None]
    if unknown:
        raise DataError(f"{where}: 'class_names' has unknown class(es) {unknown}; expected names from {CLASS_NAMES}")
    values = np.char.strip(raw.astype(str))
    if all(_INDEX.fullmatch(v) for v in np.unique(values)):
        index = values.astype(np.float64).astype(np.int64)
        bad = (index < 0) | (index >= len(file_names))
        if bad.any():
            raise DataError(
                f"{where}: 'labels' holds class index {int(index[bad][0])}; expected 0..{len(file_names) - 1} "
                f"(class_names {file_names})"
            )
        lookup = np.array([CLASS_NAMES.index(m) for m in mapped if m is not None], dtype=np.int64)
        return lookup[index]
    uniques = np.unique(values)
    canonical = [_canonical(v) for v in uniques]
    unknown = [str(v) for v, m in zip(uniques, canonical, strict=True) if m is None]
    if unknown:
        raise DataError(
            f"{where}: 'labels' has unknown class name(s) {unknown[:5]}; expected one of {CLASS_NAMES} "
            f"(or an index into them)"
        )
    codes = np.array([CLASS_NAMES.index(m) for m in canonical if m is not None], dtype=np.int64)
    return codes[np.searchsorted(uniques, values)]
