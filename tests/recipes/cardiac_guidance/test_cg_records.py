"""cardiac-guidance records: patient discovery, reading ``transitions_dataset.json`` into typed transitions, and one
exact, readable :class:`DataError` for every kind of bad record (file, record index and key named)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from medtrain.errors import DataError
from medtrain.io.images import write_grayscale
from medtrain.recipes.cardiac_guidance.records import (
    DOF_NAMES,
    DOF_UNITS,
    TRANSITIONS_FILE,
    Transition,
    discover_patients,
    read_dataset,
    read_patient,
    transition_arrays,
)

KEYS = "ft1_image_path, ft2_image_path, at1_6dof, action_change_6dof, at2_6dof"
SIX = "a list of 6 finite numbers [x, y, z (mm), roll, pitch, yaw (deg)]"


def record(i: int = 1, **changes: Any) -> dict[str, Any]:
    """A valid record for frame pair ``i``, with keys replaced (or removed, when given as ``...``)."""
    base: dict[str, Any] = {
        "ft1_image_path": f"ft1/image_{i:03d}.png",
        "ft2_image_path": f"ft2/image_{i:03d}.png",
        "at1_6dof": [1.0, -2.0, 3.5, 4.0, -5.0, 6.25],
        "action_change_6dof": [0.5, -1.0, 1.5, 2.0, -2.5, 3.0],
        "at2_6dof": [0.5, -1.0, 2.0, 2.0, -2.5, 3.25],
    }
    base.update(changes)
    return {key: value for key, value in base.items() if value is not ...}


def make_patient(root: Path, name: str, records: Any = None, *, frames: int = 2) -> Path:
    """``root/name`` with ``frames`` 4×4 PNG pairs and a JSON of ``records`` (default: one valid record per pair)."""
    folder = root / name
    for i in range(1, frames + 1):
        for side in ("ft1", "ft2"):
            write_grayscale(folder / side / f"image_{i:03d}.png", np.full((4, 4), i, dtype=np.uint8))
    payload = [record(i) for i in range(1, frames + 1)] if records is None else records
    text = payload if isinstance(payload, str) else json.dumps(payload)
    (folder / TRANSITIONS_FILE).write_text(text, encoding="utf-8")
    return folder


@pytest.fixture()
def root(tmp_path: Path) -> Path:
    return tmp_path / "data"


# ------------------------------------------------------------------------------------------------------ discovery


def test_constants_name_the_six_dofs_and_units() -> None:
    assert TRANSITIONS_FILE == "transitions_dataset.json"
    assert DOF_NAMES == ("x", "y", "z", "roll", "pitch", "yaw")
    assert DOF_UNITS == ("mm", "mm", "mm", "deg", "deg", "deg")


def test_discover_lists_sorted_patient_folders_with_a_transitions_file(root: Path) -> None:
    for name in ("p_b", "p_a", "p_c"):
        make_patient(root, name)
    (root / "no_json").mkdir()  # a folder without the file is not a patient
    (root / "notes.txt").write_text("x")
    make_patient(root, ".hidden")
    assert discover_patients(root) == ["p_a", "p_b", "p_c"]


def test_discover_errors_say_what_was_expected(root: Path) -> None:
    expected = f"expected a folder of patient folders, each holding {TRANSITIONS_FILE}"
    with pytest.raises(DataError) as info:
        discover_patients(root)
    assert str(info.value) == f"data folder not found: {root} ({expected})"
    root.parent.mkdir(parents=True, exist_ok=True)
    root.write_text("not a folder")
    with pytest.raises(DataError) as info:
        discover_patients(root)
    assert str(info.value) == f"data folder is not a folder: {root} ({expected})"
    root.unlink()
    (root / "empty_patient").mkdir(parents=True)
    with pytest.raises(DataError) as info:
        discover_patients(root)
    assert str(info.value) == (
        f"no patient folders under {root}: expected {root}/<patient>/{TRANSITIONS_FILE} "
        "(found 1 sub-folder(s) without one)"
    )


# ------------------------------------------------------------------------------------------------------ reading


def test_read_patient_gives_typed_transitions_with_resolved_paths(root: Path) -> None:
    folder = make_patient(root, "p1", [record(1, comment="extra keys are ignored"), record(2)])
    transitions = read_patient(root, "p1")
    assert [t.index for t in transitions] == [0, 1]
    first = transitions[0]
    assert first == Transition(
        patient="p1",
        index=0,
        ft1=(folder / "ft1" / "image_001.png").resolve(),
        ft2=(folder / "ft2" / "image_001.png").resolve(),
        at1=(1.0, -2.0, 3.5, 4.0, -5.0, 6.25),
        action=(0.5, -1.0, 1.5, 2.0, -2.5, 3.0),
        at2=(0.5, -1.0, 2.0, 2.0, -2.5, 3.25),
    )
    assert first.ft1.is_absolute() and transitions[1].ft2.name == "image_002.png"
    assert all(isinstance(v, float) for v in first.at1)  # JSON integers become floats


def test_integer_values_and_paths_inside_the_folder_are_accepted(root: Path) -> None:
    folder = make_patient(
        root, "p1", [record(1, at1_6dof=[1, 2, 3, 4, 5, 6], ft2_image_path="ft1/../ft2/image_001.png")]
    )
    absolute = str((folder / "ft1" / "image_001.png").resolve())  # an absolute path inside the folder is fine
    (folder / TRANSITIONS_FILE).write_text(
        json.dumps([record(1, ft1_image_path=absolute, at1_6dof=[1, 2, 3, 4, 5, 6])])
    )
    (transition,) = read_patient(root, "p1")
    assert transition.at1 == (1.0, 2.0, 3.0, 4.0, 5.0, 6.0)
    assert transition.ft1 == Path(absolute)


def test_transition_arrays_stack_float32_rows_in_order(root: Path) -> None:
    make_patient(root, "p1", [record(1), record(2, at1_6dof=[0.1, 0.2, 0.3, 0.4, 0.5, 0.6])])
    arrays = transition_arrays(read_patient(root, "p1"))
    assert set(arrays) == {"at1", "action", "at2"}
    assert all(a.dtype == np.float32 and a.shape == (2, 6) for a in arrays.values())
    np.testing.assert_array_equal(arrays["at1"][1], np.float32([0.1, 0.2, 0.3, 0.4, 0.5, 0.6]))
    np.testing.assert_array_equal(arrays["at2"][0], np.float32([0.5, -1.0, 2.0, 2.0, -2.5, 3.25]))
    empty = transition_arrays([])
    assert empty["action"].shape == (0, 6) and empty["action"].dtype == np.float32


def test_read_dataset_reads_all_or_the_named_patients(root: Path) -> None:
    make_patient(root, "p1", frames=2)
    make_patient(root, "p2", frames=3)
    everything = read_dataset(root)
    assert list(everything) == ["p1", "p2"] and [len(v) for v in everything.values()] == [2, 3]
    named = read_dataset(root, ["p2", "p1", "p2"])  # in the given order, a repeated name read once
    assert list(named) == ["p2", "p1"]


def test_read_dataset_names_an_unknown_patient_with_a_suggestion(root: Path) -> None:
    make_patient(root, "patient_01")
    make_patient(root, "patient_02")
    with pytest.raises(DataError) as info:
        read_dataset(root, ["patient_1"])
    assert (
        str(info.value) == f"patient 'patient_1' not found: no folder {root / 'patient_1'}; did you mean 'patient_01'?"
    )
    with pytest.raises(DataError) as info:
        read_dataset(root, ["zzz"])
    assert str(info.value) == (
        f"patient 'zzz' not found: no folder {root / 'zzz'}; patient folders there: patient_01, patient_02"
    )
    with pytest.raises(DataError) as info:
        read_dataset(root, [])
    assert str(info.value) == f"no patients named to read from {root}: expected at least one patient folder name"
    for bad in ("../patient_01", ".."):
        with pytest.raises(DataError) as info:
            read_patient(root, bad)
        assert str(info.value) == f"patient {bad!r} under {root}: expected the name of a sub-folder, not a path"


def test_a_patient_folder_without_the_json_file(root: Path) -> None:
    (root / "p1").mkdir(parents=True)
    with pytest.raises(DataError) as info:
        read_patient(root, "p1")
    assert str(info.value) == (
        f"{root / 'p1' / TRANSITIONS_FILE} not found: each patient folder needs a {TRANSITIONS_FILE} listing its "
        "transitions"
    )


# ------------------------------------------------------------------------------------------------------ bad records

# (payload written as the JSON file, message after "<json file>: ")
BAD_FILES: list[tuple[str, Any, str]] = [
    (
        "invalid JSON",
        '[\n  {"ft1_image_path": "a.png",,}\n]',
        "invalid JSON at line 2, column 30: Expecting property name enclosed in double quotes",
    ),
    ("truncated JSON", '{"a": 1', "invalid JSON at line 1, column 8: Expecting ',' delimiter"),
    ("empty file", "", "invalid JSON at line 1, column 1: Expecting value"),
    ("object", {"records": []}, "expected a JSON list of transition records at the top level, got an object"),
    ("string", "just text", "invalid JSON at line 1, column 1: Expecting value"),
    ("empty list", [], "the list of transition records is empty; expected at least one record"),
    ("record not object", [record(1), 5], f"record 1: expected an object with keys {KEYS}, got int 5"),
    ("record is a list", [[1, 2]], f"record 0: expected an object with keys {KEYS}, got a list of 2 value(s)"),
    (
        "missing keys",
        [record(1), record(2, at2_6dof=..., ft2_image_path=...)],
        f"record 1: missing key(s) 'ft2_image_path', 'at2_6dof'; each record needs {KEYS}",
    ),
    (
        "short vector",
        [record(1, at1_6dof=[1, 2, 3, 4, 5])],
        f"record 0, key 'at1_6dof': expected {SIX}, got a list of 5 value(s)",
    ),
    (
        "vector not a list",
        [record(1, action_change_6dof="1,2,3,4,5,6")],
        f"record 0, key 'action_change_6dof': expected {SIX}, got a string '1,2,3,4,5,6'",
    ),
    (
        "vector of objects",
        [record(1, at2_6dof={"x": 1})],
        f"record 0, key 'at2_6dof': expected {SIX}, got an object",
    ),
    (
        "string element",
        [record(1, at1_6dof=[1, 2, "3", 4, 5, 6])],
        f"record 0, key 'at1_6dof': expected {SIX}, but value 2 (z) is a string '3'",
    ),
    (
        "boolean element",
        [record(1, at1_6dof=[1, 2, 3, True, 5, 6])],
        f"record 0, key 'at1_6dof': expected {SIX}, but value 3 (roll) is a boolean (true)",
    ),
    (
        "null element",
        [record(1, at2_6dof=[1, 2, 3, 4, 5, None])],
        f"record 0, key 'at2_6dof': expected {SIX}, but value 5 (yaw) is null",
    ),
    (
        "NaN",
        '[{"ft1_image_path": "ft1/image_001.png", "ft2_image_path": "ft2/image_001.png", '
        '"at1_6dof": [0, 0, 0, 0, NaN, 0], "action_change_6dof": [0, 0, 0, 0, 0, 0], "at2_6dof": [0, 0, 0, 0, 0, 0]}]',
        f"record 0, key 'at1_6dof': expected {SIX}, but value 4 (pitch) is nan",
    ),
    (
        "overflowing number",
        '[{"ft1_image_path": "ft1/image_001.png", "ft2_image_path": "ft2/image_001.png", '
        '"at1_6dof": [0, 0, 0, 0, 0, 0], "action_change_6dof": [1e400, 0, 0, 0, 0, 0], '
        '"at2_6dof": [0, 0, 0, 0, 0, 0]}]',
        f"record 0, key 'action_change_6dof': expected {SIX}, but value 0 (x) is inf",
    ),
    (
        "image path not a string",
        [record(1, ft1_image_path=None)],
        "record 0, key 'ft1_image_path': expected a non-empty string path relative to the patient folder, got null",
    ),
    (
        "empty image path",
        [record(1, ft2_image_path="")],
        "record 0, key 'ft2_image_path': expected a non-empty string path relative to the patient folder, got a "
        "string ''",
    ),
]


@pytest.mark.parametrize(("payload", "message"), [case[1:] for case in BAD_FILES], ids=[c[0] for c in BAD_FILES])
def test_bad_files_and_records_raise_one_exact_message(root: Path, payload: Any, message: str) -> None:
    folder = make_patient(root, "p1", payload)
    with pytest.raises(DataError) as info:
        read_patient(root, "p1")
    assert str(info.value) == f"{folder / TRANSITIONS_FILE}: {message}"


def _dotdot(folder: Path) -> str:
    return "../p2/ft1/image_001.png"


def _absolute(folder: Path) -> str:
    return str((folder.parent / "p2" / "ft1" / "image_001.png").resolve())


def _symlink(folder: Path) -> str:
    os.symlink(folder.parent / "p2" / "ft1" / "image_001.png", folder / "ft1" / "escape.png")
    return "ft1/escape.png"


def _symlinked_dir(folder: Path) -> str:
    os.symlink(folder.parent / "p2" / "ft1", folder / "linked")
    return "linked/image_001.png"


@pytest.mark.parametrize("make_path", [_dotdot, _absolute, _symlink, _symlinked_dir])
def test_image_paths_that_leave_the_patient_folder_are_rejected(root: Path, make_path: Callable[[Path], str]) -> None:
    folder = make_patient(root, "p1")
    make_patient(root, "p2")  # the target exists: only where it lies is wrong
    value = make_path(folder)
    (folder / TRANSITIONS_FILE).write_text(json.dumps([record(1), record(2, ft1_image_path=value)]))
    base = folder.resolve()
    with pytest.raises(DataError) as info:
        read_patient(root, "p1", check_images=False)
    assert str(info.value) == (
        f"{folder / TRANSITIONS_FILE}: record 1, key 'ft1_image_path': image path {value!r} leaves the patient "
        f"folder {base} (it resolves to {(root / 'p2' / 'ft1' / 'image_001.png').resolve()})"
    )


def test_a_symlink_inside_the_patient_folder_is_fine(root: Path) -> None:
    folder = make_patient(root, "p1")
    os.symlink(folder / "ft1" / "image_002.png", folder / "ft1" / "alias.png")
    (folder / TRANSITIONS_FILE).write_text(json.dumps([record(1, ft1_image_path="ft1/alias.png")]))
    assert read_patient(root, "p1")[0].ft1 == (folder / "ft1" / "image_002.png").resolve()


def test_missing_images_are_errors_only_when_checked(root: Path) -> None:
    folder = make_patient(root, "p1", [record(1), record(7)], frames=1)
    json_file = folder / TRANSITIONS_FILE
    with pytest.raises(DataError) as info:
        read_patient(root, "p1")
    missing = (folder / "ft1" / "image_007.png").resolve()
    assert (
        str(info.value)
        == f"{json_file}: record 1, key 'ft1_image_path': image 'ft1/image_007.png' not found: {missing}"
    )
    assert [t.ft1 for t in read_patient(root, "p1", check_images=False)][1] == missing
    with pytest.raises(DataError, match=r"record 1, key 'ft1_image_path': image 'ft1/image_007.png' not found"):
        read_dataset(root)
    (json_file).write_text(json.dumps([record(1, ft2_image_path="ft2")]))
    with pytest.raises(DataError) as info:
        read_patient(root, "p1")
    assert str(info.value) == (
        f"{json_file}: record 0, key 'ft2_image_path': image 'ft2' is not a file: {(folder / 'ft2').resolve()}"
    )


def test_images_are_not_decoded(root: Path) -> None:
    folder = make_patient(root, "p1", frames=1)
    (folder / "ft1" / "image_001.png").write_bytes(b"not a png")  # the image cache decodes; reading records does not
    assert len(read_patient(root, "p1")) == 1
