"""abr-diffusion table: reading npz/CSV/Parquet, validation messages, patient split, normalisation statistics."""

from __future__ import annotations

import json
import pickle
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medtrain.errors import DataError
from medtrain.io.splits import manual_split
from medtrain.recipes.abr_diffusion.synthetic import generate_abr_table
from medtrain.recipes.abr_diffusion.table import (
    CLASS_NAMES,
    STATIC_NAMES,
    ABRTable,
    NormalizationStats,
    patient_classes,
    read_abr_table,
    split_patients,
    split_rows,
    write_abr_table,
)


@pytest.fixture(scope="module")
def arrays() -> dict[str, np.ndarray]:
    return generate_abr_table(40, seed=5)


@pytest.fixture(scope="module")
def npz_path(arrays: dict[str, np.ndarray], tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("abr") / "table.npz"
    np.savez(path, allow_pickle=False, **arrays)
    return path


@pytest.fixture(scope="module")
def table(npz_path: Path) -> ABRTable:
    return read_abr_table(npz_path)


def _hand_table(
    labels: list[int], patients: list[str], static: list[list[float]], signals: list[list[float]]
) -> ABRTable:
    n = len(labels)
    return ABRTable(
        signals=np.asarray(signals, dtype=np.float32),
        static=np.asarray(static, dtype=np.float32),
        peak_v=np.full((n, 2), np.nan, dtype=np.float32),
        labels=np.asarray(labels, dtype=np.int64),
        thresholds_db=np.full(n, 20.0, dtype=np.float32),
        patient_ids=np.asarray(patients),
    )


# ---------------------------------------------------------------------------------------------- reading


def test_npz_round_trip_keeps_every_array(table: ABRTable, arrays: dict[str, np.ndarray]) -> None:
    assert len(table) == len(arrays["labels"]) and table.signal_length == 200
    np.testing.assert_array_equal(table.signals, arrays["signals"])
    np.testing.assert_array_equal(table.static, arrays["static"])
    np.testing.assert_array_equal(table.peak_v, arrays["peak_v"])
    np.testing.assert_array_equal(table.labels, arrays["labels"])
    np.testing.assert_array_equal(table.patient_ids, arrays["patient_ids"])
    assert table.class_names == CLASS_NAMES and table.sampling_rate_hz == 20000.0
    np.testing.assert_array_equal(table.peak_present, np.isfinite(arrays["peak_v"][:, 0]))
    np.testing.assert_array_equal(table.static_column("intensity_db"), arrays["static"][:, 1])


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_csv_and_parquet_round_trip(table: ABRTable, tmp_path: Path, suffix: str) -> None:
    csv = write_abr_table(tmp_path / "table.csv", table)
    header = pd.read_csv(csv, nrows=0).columns.tolist()
    assert header[:2] == ["signal_0", "signal_1"] and {*STATIC_NAMES, "peak_v_latency_ms", "labels"} <= set(header)
    if suffix == ".parquet":
        pd.read_csv(csv).to_parquet(tmp_path / "table.parquet")
    back = read_abr_table(tmp_path / f"table{suffix}")
    np.testing.assert_allclose(back.signals, table.signals, rtol=1e-6)
    np.testing.assert_array_equal(back.labels, table.labels)
    np.testing.assert_array_equal(np.isnan(back.peak_v), np.isnan(table.peak_v))
    np.testing.assert_array_equal(back.patient_ids, table.patient_ids)
    assert back.sampling_rate_hz == table.sampling_rate_hz


@pytest.mark.parametrize(
    ("written", "expected"),
    [
        (["normal", " SNHL ", "Total", "conductive"], [0, 2, 3, 4]),
        (["NÖROPATİ", "SNİK", "İTİK", "Nöropati"], [1, 2, 4, 1]),  # the clinical data set's Turkish names
        (["0", "1", "4", "2"], [0, 1, 4, 2]),  # indices into CLASS_NAMES
    ],
)
def test_csv_labels_as_names_or_indices(
    table: ABRTable, tmp_path: Path, written: list[str], expected: list[int]
) -> None:
    path = write_abr_table(tmp_path / "t.csv", table.subset(np.arange(4)))
    frame = pd.read_csv(path)
    frame["labels"] = written
    frame.to_csv(path, index=False)
    np.testing.assert_array_equal(read_abr_table(path).labels, expected)


def test_npz_labels_follow_the_files_class_names(arrays: dict[str, np.ndarray], tmp_path: Path) -> None:
    order = ["CONDUCTIVE", "NORMAL", "SNHL", "TOTAL", "NEUROPATHY"]  # another order than CLASS_NAMES
    labels = np.array([1, 0, 4, 2, 3] * (len(arrays["labels"]) // 5 + 1))[: len(arrays["labels"])]
    np.savez(tmp_path / "t.npz", **{**arrays, "class_names": np.array(order), "labels": labels})
    table = read_abr_table(tmp_path / "t.npz")
    np.testing.assert_array_equal(np.array(CLASS_NAMES)[table.labels], np.array(order)[labels])
    np.savez(tmp_path / "n.npz", **{**arrays, "labels": np.array(CLASS_NAMES)[arrays["labels"]]})  # names
    np.testing.assert_array_equal(read_abr_table(tmp_path / "n.npz").labels, arrays["labels"])


def test_optional_sampling_rate_and_class_names_default(arrays: dict[str, np.ndarray], tmp_path: Path) -> None:
    kept = {k: v for k, v in arrays.items() if k not in ("sampling_rate_hz", "class_names")}
    np.savez(tmp_path / "t.npz", **kept)
    table = read_abr_table(tmp_path / "t.npz")
    assert table.sampling_rate_hz == 20000.0 and table.class_names == CLASS_NAMES


def test_subset_by_indices_and_mask(table: ABRTable) -> None:
    part = table.subset([2, 0])
    assert len(part) == 2 and part.patient_ids[1] == table.patient_ids[0]
    np.testing.assert_array_equal(part.signals[0], table.signals[2])
    assert len(table.subset(table.labels == 0)) == int((table.labels == 0).sum())


# -------------------------------------------------------------------------------------------- bad input

Edit = Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]


def _with(name: str, change: Callable[[np.ndarray], np.ndarray]) -> Edit:
    return lambda a: {**a, name: change(a[name].copy())}


def _set(array: np.ndarray, index: tuple, value: object) -> np.ndarray:
    array[index] = value
    return array


NPZ_CASES: list[tuple[str, Edit, list[str]]] = [
    ("short signals", _with("signals", lambda s: s[:, :150]), ["'signals'", "150", "200"]),
    ("NaN signal", _with("signals", lambda s: _set(s, (3, 10), np.nan)), ["'signals'", "NaN or inf", "row 3"]),
    ("inf signal", _with("signals", lambda s: _set(s, (0, 0), np.inf)), ["'signals'", "NaN or inf", "row 0"]),
    ("negative intensity", _with("static", lambda s: _set(s, (2, 1), -10)), ["'intensity_db'", ">= 0", "row 2"]),
    ("zero rate", _with("static", lambda s: _set(s, (1, 2), 0)), ["'stimulus_rate_hz'", "> 0"]),
    ("NaN age", _with("static", lambda s: _set(s, (4, 0), np.nan)), ["'static'", "NaN or inf"]),
    ("static width", _with("static", lambda s: s[:, :3]), ["'static'", ", 3); expected", "4)"]),
    ("inf peak", _with("peak_v", lambda p: _set(p, (0, 0), np.inf)), ["'peak_v'", "finite"]),
    ("label index", _with("labels", lambda v: _set(v, 5, 9)), ["'labels'", "index 9", "0..4"]),
    ("label name", _with("labels", lambda v: np.where(v == 0, "MILD", "SNHL")), ["'labels'", "'MILD'"]),
    ("class names", _with("class_names", lambda c: _set(c.astype("<U12"), 0, "UNKNOWNLOSS")), ["'UNKNOWNLOSS'"]),
    ("NaN threshold", _with("thresholds_db", lambda t: _set(t, 0, np.nan)), ["'thresholds_db'", "NaN or inf"]),
    ("empty patient", _with("patient_ids", lambda p: _set(p, 0, " ")), ["'patient_ids'", "empty"]),
    ("sampling rate", _with("sampling_rate_hz", lambda r: np.array(-1.0)), ["'sampling_rate_hz'", "positive"]),
    ("row counts", _with("thresholds_db", lambda t: t[:-1]), ["disagree on the number of rows"]),
    ("missing", lambda a: {k: v for k, v in a.items() if k != "thresholds_db"}, ["missing", "thresholds_db"]),
]


@pytest.mark.parametrize(("case", "edit", "fragments"), NPZ_CASES, ids=[c[0] for c in NPZ_CASES])
def test_bad_npz_is_one_data_error_naming_file_and_array(
    arrays: dict[str, np.ndarray], tmp_path: Path, case: str, edit: Edit, fragments: list[str]
) -> None:
    path = tmp_path / "bad.npz"
    np.savez(path, **edit(dict(arrays)))
    with pytest.raises(DataError) as caught:
        read_abr_table(path)
    message = str(caught.value)
    assert str(path) in message
    for fragment in fragments:
        assert fragment in message, (case, message)


def test_configured_signal_length_is_enforced_for_csv(table: ABRTable, tmp_path: Path) -> None:
    path = write_abr_table(tmp_path / "t.csv", table)
    with pytest.raises(DataError, match=r"signal_0\.\.signal_255"):
        read_abr_table(path, signal_length=256)
    pd.read_csv(path).drop(columns=["fmp"]).to_csv(path, index=False)
    with pytest.raises(DataError, match=r"missing required column\(s\) \['fmp'\]"):
        read_abr_table(path)


def _pickle_file(path: Path, arrays: dict[str, np.ndarray]) -> Path:
    path.write_bytes(pickle.dumps({k: v.tolist() for k, v in arrays.items()}, protocol=4))
    return path


def _object_npz(path: Path, arrays: dict[str, np.ndarray]) -> Path:
    np.savez(path, **{**arrays, "patient_ids": arrays["patient_ids"].astype(object)})
    return path


@pytest.mark.parametrize(
    "make",
    [
        lambda tmp, a: _pickle_file(tmp / "data.pkl", a),
        lambda tmp, a: _pickle_file(tmp / "disguised.npz", a),  # a pickle under another name
        lambda tmp, a: _object_npz(tmp / "objects.npz", a),  # an object (pickled) array inside an npz
    ],
    ids=["pkl", "pickle-named-npz", "object-array-npz"],
)
def test_pickles_are_refused_with_how_to_convert(
    arrays: dict[str, np.ndarray], tmp_path: Path, make: Callable[[Path, dict], Path]
) -> None:
    path = make(tmp_path, arrays)
    with pytest.raises(DataError) as caught:
        read_abr_table(path)
    message = str(caught.value)
    assert str(path) in message and "pickle" in message and "np.savez(" in message and "allow_pickle=False" in message


# ------------------------------------------------------------------------------------------------ split


def test_patient_classes_majority_with_ties_to_the_lower_index() -> None:
    table = _hand_table(
        labels=[2, 2, 0, 4, 1, 3, 3],
        patients=["a", "a", "a", "b", "b", "c", "c"],
        static=[[30, 60, 21, 3]] * 7,
        signals=[[0.0, 1.0]] * 7,
    )
    assert patient_classes(table) == {"a": 2, "b": 1, "c": 3}


def test_split_is_patient_level_stratified_and_deterministic(table: ABRTable) -> None:
    split = split_patients(table, seed=3)
    assert split == split_patients(table, seed=3) and split != split_patients(table, seed=4)
    patients = set(np.unique(table.patient_ids))
    parts = [set(split.train), set(split.val), set(split.test)]
    assert set.union(*parts) == patients and sum(map(len, parts)) == len(patients)
    assert 27 <= len(split.train) <= 30 and min(len(split.val), len(split.test)) >= 5  # 40 x 0.7/0.15/0.15
    rows = split_rows(table, split)
    assert sorted(np.concatenate(list(rows.values())).tolist()) == list(range(len(table)))
    for name, part in zip(("train", "val", "test"), parts, strict=True):
        assert set(table.patient_ids[rows[name]]) == part  # every row of a patient follows the patient
    majority = patient_classes(table)
    normal = {p for p, k in majority.items() if k == 0}
    assert all(part & normal for part in parts)  # 32 NORMAL patients: in every split
    assert {majority[p] for p in split.train} == set(range(len(CLASS_NAMES)))


# ------------------------------------------------------------------------------------------ normalisation


def test_statistics_come_from_the_training_rows_only() -> None:
    table = _hand_table(
        labels=[0, 0, 0, 0],
        patients=["a", "a", "b", "c"],
        static=[[10, 60, 21, 2], [30, 80, 21, 4], [1000, 0, 51, 9], [-1, -1, -1, -1]],
        signals=[[0.0, 2.0], [4.0, 6.0], [100.0, 100.0], [-50.0, 50.0]],
    )
    stats = NormalizationStats.fit(table, manual_split(["a"], ["b"], ["c"]))
    assert stats.static_mean == (20.0, 70.0, 21.0, 3.0)
    assert stats.static_std == (10.0, 10.0, 1.0, 1.0)  # the constant rate column keeps std 1
    assert (stats.signal_mean, stats.signal_std) == (3.0, pytest.approx(np.sqrt(5.0)))
    np.testing.assert_allclose(stats.normalize_static([[30, 60, 23, 3]]), [[1.0, -1.0, 2.0, 0.0]])
    np.testing.assert_allclose(stats.normalize_signal(np.array([3.0, 3.0 + np.sqrt(5.0)])), [0.0, 1.0])


def test_statistics_round_trip_through_json(table: ABRTable) -> None:
    stats = NormalizationStats.fit(table, split_patients(table, seed=0))
    again = NormalizationStats.from_dict(json.loads(json.dumps(stats.to_dict())))
    assert again == stats and again.to_dict()["static_names"] == list(STATIC_NAMES)
    np.testing.assert_allclose(
        stats.denormalize_signal(stats.normalize_signal(table.signals)), table.signals, atol=1e-6
    )
    z = stats.normalize_signal(table.signals[split_rows(table, split_patients(table, seed=0))["train"]].astype(float))
    assert abs(z.mean()) < 1e-9 and abs(z.std() - 1.0) < 1e-9


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"signal_std": None}, "missing"),
        ({"static_names": ["age", "level", "rate", "fmp"]}, "static_names"),
        ({"static_std": [1.0, 1.0, 0.0, 1.0]}, "positive"),
        ({"static_mean": [0.0, 0.0]}, "need 4 values"),
    ],
)
def test_statistics_from_a_bad_dict(table: ABRTable, change: dict, fragment: str) -> None:
    payload = {**NormalizationStats.fit(table).to_dict(), **change}
    payload = {k: v for k, v in payload.items() if v is not None}
    with pytest.raises(DataError, match=fragment):
        NormalizationStats.from_dict(payload)


def test_split_spreads_each_majority_class_by_the_ratios() -> None:
    # 10 NORMAL patients (3 rows, one of them SNHL: outvoted) and 10 SNHL patients (2 rows)
    patients = [f"n{i}" for i in range(10) for _ in range(3)] + [f"s{i}" for i in range(10) for _ in range(2)]
    labels = [0, 0, 2] * 10 + [2, 2] * 10
    table = _hand_table(labels, patients, static=[[30, 60, 21, 3]] * 50, signals=[[0.0, 1.0]] * 50)
    split = split_patients(table, (0.6, 0.2, 0.2), seed=1)
    for part, expected in ((split.train, 6), (split.val, 2), (split.test, 2)):
        assert sum(p.startswith("n") for p in part) == expected and sum(p.startswith("s") for p in part) == expected
