"""Tables (npz/CSV/Parquet), grayscale images, the image cache and HDF5 files from :mod:`medtrain.io`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medtrain.errors import DataError
from medtrain.io.hdf5 import h5_attrs, h5_dataset, open_h5_lazy, read_h5, write_h5
from medtrain.io.images import ImageCache, read_grayscale, write_grayscale
from medtrain.io.tables import ArraySpec, read_table, write_table_csv, write_table_npz

# ---------------------------------------------------------------------------------------------- tables

N = 5
SPECS = {
    "signals": ArraySpec("float32", (None, 6)),
    "static": ArraySpec("float32", (None, 4)),
    "peak_v": ArraySpec("float32", (None, 2)),
    "labels": ArraySpec("int64", (None,)),
    "patient_ids": ArraySpec("str", (None,)),
    "thresholds_db": ArraySpec("float32", (None,), required=False),
}
PREFIXED = {"signals": ("signal_", 6), "static": ("static_", 4), "peak_v": ("peak_v_", 2)}


def _arrays() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    peak_v = rng.normal(size=(N, 2)).astype(np.float32)
    peak_v[1] = np.nan
    return {
        "signals": rng.normal(size=(N, 6)).astype(np.float32),
        "static": rng.uniform(0, 90, size=(N, 4)).astype(np.float32),
        "peak_v": peak_v,
        "labels": np.array([0, 1, 2, 1, 0], dtype=np.int64),
        "patient_ids": np.array(["007", "p1", "p1", "p2", "p3"]),
    }


def _assert_same(got: dict[str, np.ndarray], expected: dict[str, np.ndarray]) -> None:
    assert sorted(got) == sorted(expected)
    for name, value in expected.items():
        assert got[name].dtype == value.dtype, name
        np.testing.assert_array_equal(got[name], value)  # NaN positions must match too


def test_npz_round_trip_with_non_row_arrays(tmp_path: Path) -> None:
    arrays = {**_arrays(), "class_names": np.array(["normal", "mild", "severe"]), "sampling_rate_hz": np.array(4e4)}
    path = write_table_npz(tmp_path / "abr.npz", arrays)
    specs = {
        **SPECS,
        "class_names": ArraySpec("str", (None,), per_row=False),
        "sampling_rate_hz": ArraySpec("float32", (), per_row=False),
    }
    got = read_table(path, arrays=specs)
    _assert_same(got, {**arrays, "sampling_rate_hz": np.array(4e4, dtype=np.float32)})
    assert "thresholds_db" not in got  # optional and absent


def test_csv_round_trip_with_prefixed_columns_and_nan(tmp_path: Path) -> None:
    path = write_table_csv(tmp_path / "abr.csv", _arrays(), prefixed=PREFIXED)
    header = path.read_text().splitlines()[0].split(",")
    assert header[:3] == ["signal_0", "signal_1", "signal_2"] and "static_3" in header and "labels" in header
    _assert_same(read_table(path, arrays=SPECS, prefixed=PREFIXED), _arrays())  # "007" stays text


def test_parquet_round_trip(tmp_path: Path) -> None:
    pytest.importorskip("pyarrow")
    import pandas as pd

    csv = write_table_csv(tmp_path / "abr.csv", _arrays(), prefixed=PREFIXED)
    pd.read_csv(csv, dtype={"patient_ids": str}).to_parquet(tmp_path / "abr.parquet")
    _assert_same(read_table(tmp_path / "abr.parquet", arrays=SPECS, prefixed=PREFIXED), _arrays())


def test_parquet_without_pyarrow_says_how_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # makes `import pyarrow` raise ImportError
    path = tmp_path / "abr.parquet"
    path.write_bytes(b"PAR1")
    with pytest.raises(DataError, match="pip install pyarrow") as error:
        read_table(path, arrays=SPECS, prefixed=PREFIXED)
    assert str(path) in str(error.value)


def _error(path: Path, **kwargs: object) -> str:
    with pytest.raises(DataError) as error:
        read_table(path, **kwargs)  # type: ignore[arg-type]
    message = str(error.value)
    assert str(path) in message
    return message


def test_missing_required_npz_array_names_it_and_lists_the_file(tmp_path: Path) -> None:
    arrays = _arrays()
    del arrays["labels"]
    message = _error(write_table_npz(tmp_path / "t.npz", arrays), arrays=SPECS)
    assert "missing required array(s) ['labels']" in message and "'patient_ids'" in message


def test_missing_csv_column_lists_numbered_columns_compactly(tmp_path: Path) -> None:
    arrays = _arrays()
    del arrays["patient_ids"]
    message = _error(write_table_csv(tmp_path / "t.csv", arrays, prefixed=PREFIXED), arrays=SPECS, prefixed=PREFIXED)
    assert "missing required column(s) ['patient_ids']" in message
    assert "signal_0..signal_5 (6)" in message and "labels" in message


@pytest.mark.parametrize("width", [5, 7])
def test_prefixed_columns_must_match_the_count(tmp_path: Path, width: int) -> None:
    arrays = {**_arrays(), "signals": np.zeros((N, width), dtype=np.float32)}
    path = write_table_csv(tmp_path / "t.csv", arrays, prefixed={**PREFIXED, "signals": ("signal_", width)})
    message = _error(path, arrays=SPECS, prefixed=PREFIXED)
    assert "'signals'" in message and "signal_0..signal_5 (6)" in message
    assert f"signal_0..signal_{width - 1} ({width})" in message  # what the file has


def test_wrong_shape_reports_expected_and_actual(tmp_path: Path) -> None:
    path = write_table_npz(tmp_path / "t.npz", {**_arrays(), "static": np.zeros((N, 3), dtype=np.float32)})
    message = _error(path, arrays=SPECS)
    assert "'static'" in message and "(5, 3)" in message and "('N', 4)" in message


def test_per_row_arrays_must_agree_on_n(tmp_path: Path) -> None:
    path = write_table_npz(tmp_path / "t.npz", {**_arrays(), "labels": np.zeros(N + 1, dtype=np.int64)})
    message = _error(path, arrays=SPECS)
    assert "disagree on the number of rows" in message and "'labels': 6" in message and "'signals': 5" in message


def test_pickled_npz_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "t.npz"
    np.savez(path, a=np.array([{"x": 1}], dtype=object))
    message = _error(path, arrays={"a": ArraySpec("float32", (None,))})
    assert "pickled arrays are not accepted" in message


@pytest.mark.parametrize(
    ("content", "spec", "expected"),
    [
        ("labels,x\n1,0\n,0\n2,0\n", ArraySpec("int64", (None,)), "must hold integers"),
        ("labels\n1.5\n2\n", ArraySpec("int64", (None,)), "must hold integers"),
        ("labels\na\nb\n", ArraySpec("float32", (None,)), "must be numeric"),
        ("labels,x\na,0\n,0\n", ArraySpec("str", (None,)), "must hold text"),
    ],
)
def test_unconvertible_values_name_the_column(tmp_path: Path, content: str, spec: ArraySpec, expected: str) -> None:
    path = tmp_path / "t.csv"
    path.write_text(content)
    message = _error(path, arrays={"labels": spec})
    assert "'labels'" in message and expected in message


def test_whole_floats_become_int64(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("labels\n1.0\n2\n")
    got = read_table(path, arrays={"labels": ArraySpec("int64", (None,))})["labels"]
    assert got.dtype == np.int64 and got.tolist() == [1, 2]


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("t.npz", b"not a zip", "cannot read npz"),
        ("t.csv", b"\xff\xfe\x00bad", "cannot read csv"),
        ("t.xlsx", b"", "unsupported format '.xlsx'"),
        ("missing.csv", None, "table not found"),
    ],
)
def test_unreadable_tables(tmp_path: Path, name: str, content: bytes | None, expected: str) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    assert expected in _error(path, arrays=SPECS)


def test_csv_writer_refuses_what_it_cannot_lay_out(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="'signals'"):
        write_table_csv(tmp_path / "t.csv", _arrays())  # 2-D without `prefixed`
    with pytest.raises(ValueError, match="different lengths"):
        write_table_csv(tmp_path / "t.csv", {"a": np.zeros(2), "b": np.zeros(3)})
    assert not list(tmp_path.iterdir())


# ---------------------------------------------------------------------------------------------- images


def _save(path: Path, array: np.ndarray, mode: str | None = None) -> Path:
    (Image.fromarray(array, mode) if mode else Image.fromarray(array)).save(path)
    return path


def test_rgb_uses_itu_r_601_2_luma(tmp_path: Path) -> None:
    rgb = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255], [10, 20, 30]]], dtype=np.uint8)
    got = read_grayscale(_save(tmp_path / "rgb.png", rgb))
    # L = R*299/1000 + G*587/1000 + B*114/1000, rounded
    expected = [round(0.299 * 255), round(0.587 * 255), round(0.114 * 255), round(2.99 + 11.74 + 3.42)]
    assert got.dtype == np.uint8 and got.tolist() == [expected] == [[76, 150, 29, 18]]


def test_rgba_ignores_alpha(tmp_path: Path) -> None:
    rgba = np.array([[[255, 0, 0, 0], [255, 0, 0, 255]]], dtype=np.uint8)
    assert read_grayscale(_save(tmp_path / "rgba.png", rgba)).tolist() == [[76, 76]]


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_16_bit_is_scaled_by_1_over_257(tmp_path: Path, suffix: str) -> None:
    values = np.array([[0, 257, 385, 386, 32896, 65535]], dtype=np.uint16)
    got = read_grayscale(_save(tmp_path / f"deep{suffix}", values))
    assert got.tolist() == [[0, 1, 1, 2, 128, 255]]  # 385/257 = 1.498 → 1, 386/257 = 1.502 → 2


def test_8_bit_gray_round_trip_and_resize(tmp_path: Path) -> None:
    frame = np.arange(12 * 16, dtype=np.uint8).reshape(12, 16)
    path = write_grayscale(tmp_path / "sub" / "g.png", frame)
    np.testing.assert_array_equal(read_grayscale(path), frame)
    resized = read_grayscale(path, size=(6, 10))
    assert resized.shape == (6, 10) and resized.dtype == np.uint8
    flat = write_grayscale(tmp_path / "flat.png", np.full((12, 16), 77, dtype=np.uint8))
    assert (read_grayscale(flat, size=(30, 20)) == 77).all()  # bilinear keeps a constant image constant


def test_unreadable_images_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="image not found") as error:
        read_grayscale(tmp_path / "missing.png")
    assert str(tmp_path / "missing.png") in str(error.value)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(DataError, match="cannot read image") as error:
        read_grayscale(broken)
    assert str(broken) in str(error.value)
    floats = _save(tmp_path / "float.tif", np.zeros((2, 2), dtype=np.float32))
    with pytest.raises(DataError, match="float images"):
        read_grayscale(floats)


def _frames(root: Path, count: int) -> list[Path]:
    rng = np.random.default_rng(1)
    return [
        write_grayscale(root / f"p{i % 2}" / f"f{i}.png", rng.integers(0, 256, (20, 30), dtype=np.uint8))
        for i in range(count)
    ]


def test_image_cache_build_open_and_index(tmp_path: Path) -> None:
    paths = _frames(tmp_path / "data", 4)
    cache_file = tmp_path / "data" / "cache" / "frames.npy"
    cache = ImageCache.build(paths, cache_file, size=(8, 12), key="k1")
    assert len(cache) == 4 and cache[0].shape == (8, 12) and cache[0].dtype == np.uint8
    for i, path in enumerate(paths):
        np.testing.assert_array_equal(cache[i], read_grayscale(path, size=(8, 12)))
    meta = json.loads(ImageCache.sidecar(cache_file).read_text())
    assert meta == {"key": "k1", "size": [8, 12], "paths": [f"../p{i % 2}/f{i}.png" for i in range(4)]}
    assert sorted(p.name for p in cache_file.parent.iterdir()) == ["frames.npy", "frames.npy.json"]

    reopened = ImageCache.open(cache_file, key="k1")
    assert reopened is not None and isinstance(reopened[2], np.memmap)
    np.testing.assert_array_equal(reopened[2], cache[2])
    assert reopened.index_of(paths[3]) == 3
    assert reopened.index_of(tmp_path / "data" / "p1" / ".." / "p0" / "f2.png") == 2
    with pytest.raises(KeyError):
        reopened.index_of(tmp_path / "elsewhere.png")


def test_image_cache_stale_or_missing_opens_as_none(tmp_path: Path) -> None:
    cache_file = tmp_path / "frames.npy"
    assert ImageCache.open(cache_file, key="k1") is None
    ImageCache.build(_frames(tmp_path, 2), cache_file, size=(4, 4), key="k1")
    assert ImageCache.open(cache_file, key="k2") is None
    ImageCache.sidecar(cache_file).unlink()  # as after a crash between the .npy and its sidecar
    assert ImageCache.open(cache_file, key="k1") is None


def test_image_cache_build_failure_leaves_nothing(tmp_path: Path) -> None:
    paths = [*_frames(tmp_path, 1), tmp_path / "missing.png"]
    with pytest.raises(DataError, match=r"missing\.png"):
        ImageCache.build(paths, tmp_path / "cache" / "frames.npy", size=(4, 4), key="k")
    assert not list((tmp_path / "cache").iterdir())


# ---------------------------------------------------------------------------------------------- hdf5


def test_h5_round_trip_atomic_with_attrs(tmp_path: Path) -> None:
    datasets = {
        "tokens": np.arange(2 * 3 * 4, dtype=np.int16).reshape(2, 3, 4),
        "labels": np.array([1, 0], dtype=np.int64),
        "scale": np.array(2.5),
        "names": np.array(["forward", "back"]),
        "meta/pulse_index": np.array([0, 10]),
    }
    attrs = {"params": {"depth": 128, "band": [1.0, 5.0]}, "rate": 50, "fs": 5e7, "ok": True, "name": "exp1"}
    path = write_h5(tmp_path / "out" / "exp.h5", datasets, attrs=attrs)
    assert sorted(p.name for p in path.parent.iterdir()) == ["exp.h5"]  # no temp file left behind
    got = read_h5(path)
    assert sorted(got) == sorted(datasets)
    for name, value in datasets.items():
        np.testing.assert_array_equal(got[name], value)
        assert got[name].dtype.kind == value.dtype.kind
    assert read_h5(path, ["labels"]).keys() == {"labels"}
    assert h5_attrs(path) == attrs
    assert type(h5_attrs(path)["ok"]) is bool and type(h5_attrs(path)["rate"]) is int
    with open_h5_lazy(path) as handle:
        assert handle["tokens"].compression == "lzf"
        np.testing.assert_array_equal(h5_dataset(handle, "tokens")[1, :, 2], datasets["tokens"][1, :, 2])


def test_h5_failed_write_keeps_the_old_file_and_no_temp(tmp_path: Path) -> None:
    path = write_h5(tmp_path / "exp.h5", {"a": np.zeros(3)})
    with pytest.raises(ValueError, match="object arrays"):
        write_h5(path, {"b": np.ones(2), "bad": np.array([{"x": 1}], dtype=object)})
    with pytest.raises(ValueError, match="'when'"):
        write_h5(path, {"b": np.ones(2)}, attrs={"when": object()})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exp.h5"]
    np.testing.assert_array_equal(read_h5(path)["a"], np.zeros(3))


def test_h5_errors_name_the_file_and_dataset(tmp_path: Path) -> None:
    path = write_h5(tmp_path / "exp.h5", {"tokens": np.zeros(3), "labels": np.zeros(3)})
    with pytest.raises(DataError) as error:
        read_h5(path, ["joystick"])
    message = str(error.value)
    assert str(path) in message and "'joystick'" in message and "['labels', 'tokens']" in message
    corrupt = tmp_path / "corrupt.h5"
    corrupt.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\x00" * 64)
    with pytest.raises(DataError, match="cannot open HDF5 file") as error:
        h5_attrs(corrupt)
    assert str(corrupt) in str(error.value)
    with pytest.raises(DataError, match="HDF5 file not found"):
        read_h5(tmp_path / "missing.h5")
