"""cardiac-guidance records: find the patient folders and read, validate and type their ``transitions_dataset.json``.

Layout (ARCHITECTURE.md, "On-disk data formats")::

    data/<patient>/transitions_dataset.json   a JSON list of transition records
    data/<patient>/ft1/image_001.png ...      frames, paths relative to the patient folder

One record::

    {"ft1_image_path": "ft1/image_001.png", "ft2_image_path": "ft2/image_001.png",
     "at1_6dof": [x, y, z, roll, pitch, yaw], "action_change_6dof": [...6], "at2_6dof": [...6]}

``at1_6dof`` is the guidance action (probe motion) that reaches the standard view from the pose of frame ft1,
``action_change_6dof`` the probe motion from ft1's pose to ft2's pose, ``at2_6dof`` the guidance action from
ft2's pose. Units: millimetres for x, y, z and degrees for roll, pitch, yaw (:data:`DOF_NAMES`, :data:`DOF_UNITS`).

Every problem raises one :class:`DataError` (exit code 2) that names the JSON file, the record index and key where
they apply, and what was expected. Extra keys in a record are ignored. Image paths go through
:func:`medtrain.io.paths.resolve_inside` with the patient folder as the root, so an absolute path elsewhere, a
``..`` or a symlink leading out of the patient folder is rejected. Images are only checked to exist (with
``check_images``), never decoded here: the image cache decodes them once.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medtrain.config.suggest import suggest
from medtrain.errors import DataError
from medtrain.io.paths import resolve_inside

TRANSITIONS_FILE = "transitions_dataset.json"
DOF_NAMES = ("x", "y", "z", "roll", "pitch", "yaw")
DOF_UNITS = ("mm", "mm", "mm", "deg", "deg", "deg")
IMAGE_KEYS = ("ft1_image_path", "ft2_image_path")
VECTOR_KEYS = ("at1_6dof", "action_change_6dof", "at2_6dof")
RECORD_KEYS = IMAGE_KEYS + VECTOR_KEYS
_VECTOR_SHAPE = "a list of 6 finite numbers [x, y, z (mm), roll, pitch, yaw (deg)]"


@dataclass(frozen=True)
class Transition:
    """One validated record: two frames (absolute paths inside the patient folder) and three 6-DOF vectors.

    ``index`` is the record's position in the JSON list. ``at1``, ``action`` and ``at2`` hold the record's
    ``at1_6dof``, ``action_change_6dof`` and ``at2_6dof`` as 6 floats in :data:`DOF_NAMES` order.
    """

    patient: str
    index: int
    ft1: Path
    ft2: Path
    at1: tuple[float, ...]
    action: tuple[float, ...]
    at2: tuple[float, ...]


def discover_patients(root: Path) -> list[str]:
    """Sorted names of the sub-folders of ``root`` that hold a :data:`TRANSITIONS_FILE`.

    Entries whose names start with ``.`` are skipped. Raises :class:`DataError` when ``root`` does not exist, is
    not a folder, or has no such sub-folder (the message says the layout that was expected).
    """
    root = _require_root(root)
    patients = [name for name in _subfolders(root) if (root / name / TRANSITIONS_FILE).is_file()]
    if not patients:
        raise DataError(
            f"no patient folders under {root}: expected {root}/<patient>/{TRANSITIONS_FILE} "
            f"(found {len(_subfolders(root))} sub-folder(s) without one)"
        )
    return patients


def read_patient(root: Path, patient: str, *, check_images: bool = True) -> list[Transition]:
    """Read and validate ``root/<patient>/transitions_dataset.json``; one :class:`Transition` per record, in order.

    ``patient`` must be a plain folder name (no path separators, not ``.`` or ``..``). The patient folder itself
    may be a symlink (a dataset assembled from several disks); the image paths in its records may not leave it.
    With ``check_images`` every image must be an existing file. Raises :class:`DataError` for a missing root or
    patient folder (with a close-match suggestion), a missing or unreadable JSON file, invalid JSON (line and
    column), a top level that is not a non-empty list, a record that is not an object, missing keys, a vector
    that is not 6 finite numbers, an image path that is not a non-empty string, leaves the patient folder, or
    (``check_images``) names no file.
    """
    root = _require_root(root)
    folder = _patient_folder(root, patient)
    return _read_records(patient, folder, check_images=check_images)


def read_dataset(
    root: Path, patients: Sequence[str] | None = None, *, check_images: bool = True
) -> dict[str, list[Transition]]:
    """``{patient: read_patient(root, patient)}`` for ``patients`` (in the given order, a repeated name read once),
    or for every :func:`discover_patients` folder (sorted) when ``patients`` is None.

    Raises :class:`DataError` for an empty ``patients`` list, a named patient that does not exist (with a
    close-match suggestion among the discovered patients), and every error of :func:`read_patient`.
    """
    root = _require_root(root)
    if patients is None:
        names = discover_patients(root)
    else:
        names = list(dict.fromkeys(patients))
        if not names:
            raise DataError(f"no patients named to read from {root}: expected at least one patient folder name")
    return {name: read_patient(root, name, check_images=check_images) for name in names}


def transition_arrays(transitions: Sequence[Transition]) -> dict[str, np.ndarray]:
    """The vectors of ``transitions`` stacked: ``{"at1", "action", "at2"}``, each float32 ``[N, 6]`` (``[0, 6]``
    for no transitions), rows in the order given, columns in :data:`DOF_NAMES` order."""
    return {
        key: np.asarray([getattr(t, key) for t in transitions], dtype=np.float32).reshape(len(transitions), 6)
        for key in ("at1", "action", "at2")
    }


# ------------------------------------------------------------------------------------------------------ helpers


def _require_root(root: Path) -> Path:
    """``root`` if it is an existing folder; otherwise a :class:`DataError` saying what was expected."""
    root = Path(root)
    expected = f"expected a folder of patient folders, each holding {TRANSITIONS_FILE}"
    if not root.exists():
        raise DataError(f"data folder not found: {root} ({expected})")
    if not root.is_dir():
        raise DataError(f"data folder is not a folder: {root} ({expected})")
    return root


def _subfolders(root: Path) -> list[str]:
    """Sorted names of the folders (or symlinks to folders) directly in ``root``, hidden ones skipped."""
    return sorted(path.name for path in root.iterdir() if not path.name.startswith(".") and path.is_dir())


def _patient_folder(root: Path, patient: str) -> Path:
    """``root / patient`` if ``patient`` is a plain name of an existing sub-folder; else a :class:`DataError`."""
    if not isinstance(patient, str) or not patient or patient in (".", "..") or "/" in patient or "\\" in patient:
        raise DataError(f"patient {patient!r} under {root}: expected the name of a sub-folder, not a path")
    folder = root / patient
    if not folder.is_dir():
        known = _subfolders(root)
        hint = _suggest(patient, known)
        listing = f"; patient folders there: {', '.join(known)}" if known and not hint else ""
        raise DataError(f"patient {patient!r} not found: no folder {folder}{hint}{listing}")
    return folder


def _suggest(name: str, candidates: Sequence[str]) -> str:
    """``"; did you mean 'a'?"`` for the closest of ``candidates`` (case-insensitive match first), or ``""``."""
    match = suggest(name, candidates)
    return f"; did you mean {match!r}?" if match is not None else ""


def _read_records(patient: str, folder: Path, *, check_images: bool) -> list[Transition]:
    """Parse and validate ``folder / TRANSITIONS_FILE`` (see :func:`read_patient`)."""
    json_file = folder / TRANSITIONS_FILE
    if not json_file.is_file():
        raise DataError(
            f"{json_file} not found: each patient folder needs a {TRANSITIONS_FILE} listing its transitions"
        )
    try:
        text = json_file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"cannot read {json_file}: {error}") from error
    try:
        records = json.loads(text)
    except json.JSONDecodeError as error:
        raise DataError(
            f"{json_file}: invalid JSON at line {error.lineno}, column {error.colno}: {error.msg}"
        ) from error
    if not isinstance(records, list):
        raise DataError(
            f"{json_file}: expected a JSON list of transition records at the top level, got {_kind(records)}"
        )
    if not records:
        raise DataError(f"{json_file}: the list of transition records is empty; expected at least one record")
    base = folder.resolve()
    return [_transition(patient, base, json_file, index, record, check_images) for index, record in enumerate(records)]


def _transition(patient: str, base: Path, json_file: Path, index: int, record: Any, check_images: bool) -> Transition:
    """Validate record ``index`` of ``json_file`` into a :class:`Transition`."""
    where = f"{json_file}: record {index}"
    if not isinstance(record, dict):
        raise DataError(f"{where}: expected an object with keys {', '.join(RECORD_KEYS)}, got {_kind(record)}")
    missing = [key for key in RECORD_KEYS if key not in record]
    if missing:
        raise DataError(
            f"{where}: missing key(s) {', '.join(repr(k) for k in missing)}; each record needs {', '.join(RECORD_KEYS)}"
        )
    ft1, ft2 = (_image(base, where, key, record[key], check_images) for key in IMAGE_KEYS)
    at1, action, at2 = (_vector(where, key, record[key]) for key in VECTOR_KEYS)
    return Transition(patient=patient, index=index, ft1=ft1, ft2=ft2, at1=at1, action=action, at2=at2)


def _vector(where: str, key: str, value: Any) -> tuple[float, ...]:
    """``value`` as 6 finite floats, or a :class:`DataError` saying which element is wrong and why."""
    head = f"{where}, key {key!r}: expected {_VECTOR_SHAPE}"
    if not isinstance(value, list):
        raise DataError(f"{head}, got {_kind(value)}")
    if len(value) != 6:
        raise DataError(f"{head}, got a list of {len(value)} value(s)")
    out = []
    for position, (item, name) in enumerate(zip(value, DOF_NAMES, strict=True)):
        if isinstance(item, bool) or not isinstance(item, int | float):
            raise DataError(f"{head}, but value {position} ({name}) is {_kind(item)}")
        try:
            number = float(item)
        except OverflowError:
            number = math.inf
        if not math.isfinite(number):
            raise DataError(f"{head}, but value {position} ({name}) is {item!r}")
        out.append(number)
    return tuple(out)


def _image(base: Path, where: str, key: str, value: Any, check_images: bool) -> Path:
    """The resolved image path of ``value`` inside the patient folder ``base`` (and, if asked, an existing file)."""
    if not isinstance(value, str) or not value:
        raise DataError(
            f"{where}, key {key!r}: expected a non-empty string path relative to the patient folder, got {_kind(value)}"
        )
    try:
        path = resolve_inside(base, value, what="image path")
    except DataError as error:
        outside = (base / value).resolve()
        raise DataError(
            f"{where}, key {key!r}: image path {value!r} leaves the patient folder {base} (it resolves to {outside})"
        ) from error
    if check_images and not path.is_file():
        state = "is not a file" if path.exists() else "not found"
        raise DataError(f"{where}, key {key!r}: image {value!r} {state}: {path}")
    return path


def _kind(value: Any) -> str:
    """A short description of a JSON value for messages: ``an object``, ``a string 'abc'``, ``null``, ..."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"a boolean ({'true' if value else 'false'})"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return f"a list of {len(value)} value(s)"
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:37] + "..."
        return f"a string {shown!r}"
    return f"{type(value).__name__} {value!r}"
