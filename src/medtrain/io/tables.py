"""Tabular datasets (one row per sample) read from ``.npz``, ``.csv`` or ``.parquet`` into validated numpy arrays.

The caller declares what it needs as ``{array name: ArraySpec}``; :func:`read_table` returns exactly those arrays
(optional ones only when present), converted to the declared dtype and checked for shape and row count. What
lives where:

* ``.npz`` — one array per name (``np.load(..., allow_pickle=False)``: object/pickled arrays are refused).
  Arrays that are not per row (``class_names [K]``, a scalar ``sampling_rate_hz``) can only come from npz.
* ``.csv`` / ``.parquet`` — one column per 1-D array, named like the array (``labels``, ``patient_ids``). A
  2-D array is assembled from numbered columns given explicitly in ``prefixed`` as ``name -> (prefix, count)``:
  ``{"signals": ("signal_", 200)}`` reads ``signal_0 .. signal_199`` into ``signals [N, 200]``, in that order;
  ``{"static": ("static_", 4)}`` reads ``static_0 .. static_3``. Parquet needs ``pyarrow`` (optional).

NaN is allowed in float arrays (e.g. an absent peak V); integer and string arrays must have no missing cells.
"""

from __future__ import annotations

import io
import re
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from medtrain.errors import DataError
from medtrain.io.atomic import atomic_write_bytes, atomic_write_text
from medtrain.io.paths import require_file

if TYPE_CHECKING:  # pandas is imported only when a CSV/Parquet table is read or written
    import pandas as pd

Prefixed = Mapping[str, tuple[str, int]]
TABLE_SUFFIXES = (".npz", ".csv", ".parquet")


@dataclass(frozen=True)
class ArraySpec:
    """What one array of a table must look like.

    ``dtype``: the dtype returned (``float32``, ``int64`` or ``str``; values are converted, never truncated:
    an ``int64`` array accepts integers or whole floats only). ``shape``: the expected shape, ``None`` for any
    length; for a per-row array the first entry is the row count, so write ``(None, 200)`` or ``(None,)``.
    ``required``: a missing required array is an error, a missing optional one is left out of the result.
    ``per_row``: the first axis is the table's row count N, which all per-row arrays must agree on.
    """

    dtype: Literal["float32", "int64", "str"]
    shape: tuple[int | None, ...]
    required: bool = True
    per_row: bool = True


def read_table(
    path: Path, *, arrays: Mapping[str, ArraySpec], prefixed: Prefixed | None = None
) -> dict[str, np.ndarray]:
    """Read the arrays declared in ``arrays`` from the table at ``path`` (format chosen by the suffix).

    ``prefixed`` (CSV/Parquet only; ignored for npz) maps array name → (column prefix, column count).
    Returns ``{name: array}`` for every required array and every optional one present. Raises
    :class:`DataError` naming the file for: a missing file, an unknown suffix, an unreadable file, a pickled npz
    array, a missing required array/column (listing what the file has), a value that cannot be converted to the
    declared dtype, a shape other than the declared one, and per-row arrays that disagree on N.
    """
    path = require_file(Path(path), "table")
    suffix = path.suffix.lower()
    if suffix == ".npz":
        raw = _read_npz(path, arrays)
    elif suffix in (".csv", ".parquet"):
        raw = _read_columns(path, arrays, prefixed or {})
    else:
        raise DataError(f"table {path}: unsupported format {suffix!r}; expected one of {', '.join(TABLE_SUFFIXES)}")
    result = {name: _check(path, name, spec, raw[name]) for name, spec in arrays.items() if name in raw}
    lengths = {name: len(result[name]) for name, spec in arrays.items() if spec.per_row and name in result}
    if len(set(lengths.values())) > 1:
        raise DataError(f"table {path}: per-row arrays disagree on the number of rows: {lengths}")
    return result


def write_table_npz(path: Path, arrays: Mapping[str, np.ndarray]) -> Path:
    """Write ``arrays`` as an uncompressed ``.npz`` atomically (object arrays raise ``ValueError``: no pickle)."""
    buffer = io.BytesIO()
    np.savez(buffer, allow_pickle=False, **{name: np.asarray(value) for name, value in arrays.items()})
    return atomic_write_bytes(path, buffer.getvalue())


def write_table_csv(path: Path, arrays: Mapping[str, np.ndarray], *, prefixed: Prefixed | None = None) -> Path:
    """Write per-row ``arrays`` as a CSV atomically: 1-D arrays as one column, 2-D arrays named in ``prefixed``
    as ``count`` numbered columns (the layout :func:`read_table` reads). NaN is written as an empty cell.

    Raises ``ValueError`` for a 2-D array not in ``prefixed`` or whose width is not the declared count, for
    arrays of other ranks, and for arrays of different lengths.
    """
    import pandas as pd

    prefixed = prefixed or {}
    columns: dict[str, np.ndarray] = {}
    for name, value in arrays.items():
        value = np.asarray(value)
        if value.ndim == 1:
            columns[name] = value
        elif value.ndim == 2 and name in prefixed and prefixed[name][1] == value.shape[1]:
            columns.update({f"{prefixed[name][0]}{k}": value[:, k] for k in range(value.shape[1])})
        else:
            raise ValueError(f"array {name!r} of shape {value.shape} cannot be a CSV column (see `prefixed`)")
    if len({len(column) for column in columns.values()}) > 1:
        raise ValueError(f"arrays have different lengths: { {name: len(value) for name, value in arrays.items()} }")
    return atomic_write_text(path, pd.DataFrame(columns).to_csv(index=False))


def _read_npz(path: Path, arrays: Mapping[str, ArraySpec]) -> dict[str, np.ndarray]:
    """The arrays of ``path`` named in ``arrays`` (missing optional ones left out)."""
    try:
        archive = np.load(path, allow_pickle=False)
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise DataError(f"table {path}: holds a single .npy array, not an npz archive of named arrays")
        with archive:
            _require(path, arrays, available=archive.files, what="array")
            return {name: archive[name] for name in arrays if name in archive.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as error:
        if "Object arrays" in str(error):
            raise DataError(
                f"table {path}: pickled arrays are not accepted (object dtype); save plain arrays"
            ) from None
        raise DataError(f"table {path}: cannot read npz: {error}") from error


def _read_columns(path: Path, arrays: Mapping[str, ArraySpec], prefixed: Prefixed) -> dict[str, np.ndarray]:
    """Assemble the arrays from the columns of a CSV or Parquet table."""
    frame = _read_frame(path, str_columns=[name for name, spec in arrays.items() if spec.dtype == "str"])
    columns = [str(column) for column in frame.columns]
    plain = {name: spec for name, spec in arrays.items() if name not in prefixed}
    _require(path, plain, available=columns, what="column")
    result = {name: frame[name].to_numpy() for name in plain if name in columns}
    for name, (prefix, count) in prefixed.items():
        if name not in arrays:
            continue
        found = {column for column in columns if re.fullmatch(re.escape(prefix) + r"\d+", column)}
        expected = [f"{prefix}{k}" for k in range(count)]
        if not found and not arrays[name].required:
            continue
        if found != set(expected):
            missing = [column for column in expected if column not in found]
            raise DataError(
                f"table {path}: array {name!r} needs exactly the columns {prefix}0..{prefix}{count - 1} ({count}); "
                f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}; the file has {_summarise(columns)}"
            )
        result[name] = np.stack([frame[column].to_numpy() for column in expected], axis=1)
    return result


def _read_frame(path: Path, *, str_columns: list[str]) -> pd.DataFrame:
    """A pandas DataFrame of the CSV/Parquet file; ``str_columns`` of a CSV are kept as text (``007`` stays)."""
    import pandas as pd

    try:
        if path.suffix.lower() == ".csv":
            return pd.read_csv(path, dtype=dict.fromkeys(str_columns, str))
        try:
            import pyarrow  # noqa: F401  (the only Parquet engine medtrain supports)
        except ImportError:
            raise DataError(f"table {path}: reading Parquet needs pyarrow: pip install pyarrow") from None
        return pd.read_parquet(path, engine="pyarrow")
    except DataError:
        raise
    except Exception as error:  # pandas/pyarrow raise many types (ParserError, ArrowInvalid, UnicodeDecodeError)
        raise DataError(f"table {path}: cannot read {path.suffix.lower()[1:]}: {error}") from error


def _require(path: Path, arrays: Mapping[str, ArraySpec], *, available: list[str], what: str) -> None:
    """Raise if a required name of ``arrays`` is not in ``available``."""
    missing = [name for name, spec in arrays.items() if spec.required and name not in available]
    if missing:
        raise DataError(f"table {path}: missing required {what}(s) {missing}; the file has {_summarise(available)}")


def _summarise(names: list[str]) -> list[str]:
    """``names`` sorted, each run of numbered names shown once: ``signal_0..signal_199 (200)``."""
    numbered: dict[str, list[int]] = {}
    plain = []
    for name in names:
        match = re.fullmatch(r"(.*\D)(\d+)", name)
        if match:
            numbered.setdefault(match.group(1), []).append(int(match.group(2)))
        else:
            plain.append(name)
    runs = [f"{p}{min(k)}..{p}{max(k)} ({len(k)})" if len(k) > 1 else f"{p}{k[0]}" for p, k in numbered.items()]
    return sorted(plain + runs)


def _check(path: Path, name: str, spec: ArraySpec, value: np.ndarray) -> np.ndarray:
    """``value`` converted to ``spec.dtype`` and checked against ``spec.shape``."""
    where = f"table {path}: array {name!r}"
    shape_ok = value.ndim == len(spec.shape) and all(
        e is None or e == a for e, a in zip(spec.shape, value.shape, strict=True)
    )
    if not shape_ok:
        expected = tuple("N" if e is None else e for e in spec.shape)
        raise DataError(f"{where} has shape {value.shape}; expected {expected} (N = any length)")
    kind = value.dtype.kind
    if spec.dtype == "float32":
        if kind not in "biuf":
            raise DataError(f"{where} must be numeric (float32), got {value.dtype}")
        return value.astype(np.float32)
    if spec.dtype == "int64":
        if kind == "f" and not (np.isfinite(value).all() and (value == np.round(value)).all()):
            raise DataError(f"{where} must hold integers (int64) without missing values; got non-integer floats")
        if kind not in "biuf":
            raise DataError(f"{where} must hold integers (int64), got {value.dtype}")
        return value.astype(np.int64)
    if kind == "O" and any(not isinstance(item, str) for item in value.ravel()):
        raise DataError(f"{where} must hold text (str) without missing values")
    if kind == "S":
        return np.char.decode(value, "utf-8")
    return value.astype(str)
