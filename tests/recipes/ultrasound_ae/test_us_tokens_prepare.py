"""ultrasound-ae tokenisation and ``prepare``: tokens on hand examples, the prepared files and their cache, group
splits with training-only statistics, sequence mode, and bad raw input (exit code 2, nothing half-written)."""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from medtrain.api import config_for
from medtrain.cli import run
from medtrain.errors import DataError
from medtrain.io.hdf5 import h5_attrs, read_h5
from medtrain.recipes.ultrasound_ae import prepare
from medtrain.recipes.ultrasound_ae.data import UltrasoundDataModule
from medtrain.recipes.ultrasound_ae.prepare import METADATA, METADATA_COLUMNS, prepare_dataset, read_metadata
from medtrain.recipes.ultrasound_ae.raw import discover_experiments
from medtrain.recipes.ultrasound_ae.schema import UltrasoundConfig
from medtrain.recipes.ultrasound_ae.signal import channel_stats
from medtrain.recipes.ultrasound_ae.synthetic import generate_raw_dataset
from medtrain.recipes.ultrasound_ae.tokens import (
    CLASS_NAMES,
    joystick_classes,
    make_tokens,
    sequence_starts,
    token_starts,
    window_centres,
)

PULSES, SAMPLES, CHANNELS = 80, 400, 3
TOKENS = 38  # token_starts(80, pulses_per_token=5, stride=2): 0, 2, ..., 74
DEPTH = 30  # ceil(min(400, 300) / 10)
BASE = ["data.signal.depth_samples=300"]
SESSIONS = ["session_00", "session_01", "session_02"]
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


# ------------------------------------------------------------------------------------------------------ helpers


def make_config(out: Path, *overrides: str) -> UltrasoundConfig:
    _, cfg = config_for(recipe="ultrasound-ae", overrides=[f"data.root={out}", *BASE, *overrides])
    assert isinstance(cfg, UltrasoundConfig)
    return cfg


def cli(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    """Run the CLI in-process: exit code, stdout, stderr (ANSI codes stripped)."""
    code = run([str(arg) for arg in argv])
    captured = capsys.readouterr()
    return code, ANSI.sub("", captured.out), ANSI.sub("", captured.err)


def squash(text: str) -> str:
    """All whitespace removed, so a path is found even if the console folded it."""
    return "".join(text.split())


def snapshot(folder: Path) -> dict[str, tuple[int, str]]:
    """Every file under ``folder`` (relative path) → (mtime_ns, SHA-256 of its bytes)."""
    if not folder.exists():
        return {}
    return {
        path.relative_to(folder).as_posix(): (path.stat().st_mtime_ns, hashlib.sha256(path.read_bytes()).hexdigest())
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def h5_mtimes(out: Path) -> dict[str, int]:
    return {path.relative_to(out).as_posix(): path.stat().st_mtime_ns for path in sorted(out.rglob("*.h5"))}


def count_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Wrap ``prepare.process_experiment`` so that every (re)build is recorded by experiment key."""
    calls: list[str] = []
    original = prepare.process_experiment

    def counting(experiment, *args, **kwargs):
        calls.append(experiment.key)
        return original(experiment, *args, **kwargs)

    monkeypatch.setattr(prepare, "process_experiment", counting)
    return calls


def experiment_dir(raw: Path, session: str = "session_02", experiment: str = "experiment_00") -> Path:
    return raw / session / experiment


# ----------------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def raw_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("us_tokens") / "raw"
    generate_raw_dataset(root, sessions=3, experiments_per_session=1, pulses=PULSES, samples=SAMPLES, seed=1)
    return root


@pytest.fixture()
def raw(raw_template: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(raw_template, tmp_path / "raw"))


@pytest.fixture(scope="module")
def split_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Prepared folder of 3 sessions × 2 experiments of 80, 60 (session_01/experiment_01) and 8
    (session_02/experiment_01) pulses: 38, 28 and 2 tokens."""
    base = tmp_path_factory.mktemp("us_split")
    raw = base / "raw"
    generate_raw_dataset(raw, sessions=3, experiments_per_session=2, pulses=PULSES, samples=SAMPLES, seed=2)
    for session, pulses in (("session_01", 60), ("session_02", 8)):
        folder = raw / session / "experiment_01"
        for path in folder.glob("*.npy"):
            np.save(path, np.load(path)[:pulses])
    out = base / "out"
    prepare_dataset(raw, out, make_config(out).data)
    return out


# ------------------------------------------------------------------------------------------------ tokenisation


@pytest.mark.parametrize(
    ("pulses", "pulses_per_token", "stride", "expected"),
    [
        (12, 5, 2, [0, 2, 4, 6]),
        (13, 5, 2, [0, 2, 4, 6, 8]),
        (12, 5, 1, [0, 1, 2, 3, 4, 5, 6, 7]),
        (12, 4, 4, [0, 4, 8]),
        (5, 5, 2, [0]),
        (4, 5, 2, []),
        (0, 5, 2, []),
    ],
)
def test_token_starts(pulses: int, pulses_per_token: int, stride: int, expected: list[int]) -> None:
    starts = token_starts(pulses, pulses_per_token=pulses_per_token, stride=stride)
    assert starts.dtype == np.int64
    assert starts.tolist() == expected


@pytest.mark.parametrize(("pulses_per_token", "stride"), [(0, 2), (5, 0)])
def test_token_starts_rejects_non_positive_sizes(pulses_per_token: int, stride: int) -> None:
    with pytest.raises(ValueError, match="must be ≥ 1"):
        token_starts(12, pulses_per_token=pulses_per_token, stride=stride)


def test_make_tokens_hand_example() -> None:
    mmode = np.arange(2 * 12 * 3, dtype=np.float32).reshape(2, 12, 3)  # [C, P, D]: value = 36 c + 3 p + d
    starts = token_starts(12, pulses_per_token=5, stride=2)
    tokens = make_tokens(mmode, starts, 5)
    assert tokens.shape == (4, 2, 3, 5)  # [N, C, D, pulses_per_token]
    assert tokens.flags.c_contiguous
    # token 1 covers pulses 2..6, written out by hand: [c, d, k] = 36 c + 3 (2 + k) + d
    expected_1 = np.array(
        [
            [[6, 9, 12, 15, 18], [7, 10, 13, 16, 19], [8, 11, 14, 17, 20]],
            [[42, 45, 48, 51, 54], [43, 46, 49, 52, 55], [44, 47, 50, 53, 56]],
        ],
        dtype=np.float32,
    )
    np.testing.assert_array_equal(tokens[1], expected_1)
    for i in range(4):
        np.testing.assert_array_equal(tokens[i], mmode[:, 2 * i : 2 * i + 5].transpose(0, 2, 1))
    # the tokens are a copy, not a view of mmode
    mmode[:] = -1
    np.testing.assert_array_equal(tokens[1], expected_1)


def test_make_tokens_with_fewer_pulses_than_a_token_is_empty() -> None:
    mmode = np.zeros((2, 3, 4), dtype=np.float32)
    tokens = make_tokens(mmode, token_starts(3, pulses_per_token=5, stride=2), 5)
    assert tokens.shape == (0, 2, 4, 5)


def test_window_centres() -> None:
    starts = token_starts(12, pulses_per_token=5, stride=2)
    assert window_centres(starts, 5).tolist() == [2, 4, 6, 8]
    assert window_centres(np.array([0, 3]), 4).tolist() == [2, 5]


@pytest.mark.parametrize(
    ("x", "y", "dead_zone", "expected"),
    [
        (0.0, 0.0, 0.2, 0),
        (0.1, 0.1, 0.2, 0),
        (0.5, 0.5, 0.2, 1),
        (-0.5, 0.5, 0.2, 2),
        (-0.5, -0.5, 0.2, 3),
        (0.5, -0.5, 0.2, 4),
        (0.1, 0.1, 0.1, 1),  # outside a smaller dead zone
        (0.2, 0.0, 0.2, 1),  # on the dead-zone circle: not rest
        (0.0, 0.5, 0.2, 1),  # x = 0 counts as right
        (-0.5, 0.0, 0.2, 2),  # y = 0 counts as up
        (0.0, -0.5, 0.2, 4),
    ],
)
def test_joystick_classes(x: float, y: float, dead_zone: float, expected: int) -> None:
    assert joystick_classes(np.array([[x, y]], dtype=np.float32), dead_zone=dead_zone).tolist() == [expected]


def test_joystick_classes_vectorised_ignores_extra_columns() -> None:
    joystick = np.array([[0, 0, 9], [0.5, 0.5, 9], [-0.5, 0.5, 9], [-0.5, -0.5, 9], [0.5, -0.5, 9]], np.float32)
    labels = joystick_classes(joystick, dead_zone=0.2)
    assert labels.dtype == np.int64
    assert labels.tolist() == [0, 1, 2, 3, 4]
    assert [CLASS_NAMES[k] for k in labels] == ["rest", "right-up", "left-up", "left-down", "right-down"]


@pytest.mark.parametrize(
    ("tokens", "tokens_per_sequence", "expected"),
    [(12, 10, [0, 1, 2]), (10, 10, [0]), (9, 10, []), (0, 10, []), (4, 1, [0, 1, 2, 3])],
)
def test_sequence_starts(tokens: int, tokens_per_sequence: int, expected: list[int]) -> None:
    assert sequence_starts(tokens, tokens_per_sequence=tokens_per_sequence).tolist() == expected


# ----------------------------------------------------------------------------------------------- prepared files


@pytest.mark.parametrize(("depth_samples", "decimation"), [(300, 10), (333, 10), (1300, 7), (400, 1)])
def test_prepare_writes_one_h5_per_experiment_and_metadata(
    raw: Path, tmp_path: Path, depth_samples: int, decimation: int
) -> None:
    depth = math.ceil(min(SAMPLES, depth_samples) / decimation)
    overrides = (f"data.signal.depth_samples={depth_samples}", f"data.signal.decimation={decimation}")
    # session_00: a joystick cycling through the five classes (state k = class k) and a pulse rate of 40 Hz
    states = np.array([[0, 0], [0.5, 0.5], [-0.5, 0.5], [-0.5, -0.5], [0.5, -0.5]], dtype=np.float32)
    joystick = states[np.arange(PULSES) % 5]
    np.save(experiment_dir(raw, "session_00") / "joystick.npy", joystick)
    (experiment_dir(raw, "session_00") / "meta.json").write_text(
        json.dumps({"sampling_rate_hz": 5e7, "pulse_rate_hz": 40.0})
    )
    out = tmp_path / "out"
    cfg = make_config(out, *overrides)
    rows = prepare_dataset(raw, out, cfg.data)

    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == [
        METADATA,
        *(f"{session}/experiment_00.h5" for session in SESSIONS),
    ]
    assert read_metadata(out / METADATA) == rows
    header = (out / METADATA).read_text().splitlines()[0]
    assert header.split(",") == list(METADATA_COLUMNS)
    assert [(r.session, r.experiment, r.file) for r in rows] == [
        (s, "experiment_00", f"{s}/experiment_00.h5") for s in SESSIONS
    ]
    assert all((r.tokens, r.pulses, r.channels, r.depth) == (TOKENS, PULSES, CHANNELS, depth) for r in rows)
    assert len({r.cache_key for r in rows}) == 3

    starts = np.arange(0, PULSES - 4, 2)
    assert len(starts) == TOKENS
    for row, experiment in zip(rows, discover_experiments(raw), strict=True):
        arrays = read_h5(out / row.file)
        attrs = h5_attrs(out / row.file)
        assert attrs["cache_key"] == row.cache_key and attrs["tokens"] == TOKENS and attrs["depth"] == depth
        assert attrs["params"] == prepare.processing_params(cfg.data.signal, cfg.data.tokens)
        tokens = arrays["tokens"]
        assert tokens.shape == (TOKENS, CHANNELS, depth, 5) and tokens.dtype == np.float32
        assert np.isfinite(tokens).all()
        np.testing.assert_array_equal(arrays["pulse_index"], starts)
        rate = 40.0 if row.session == "session_00" else 50.0
        np.testing.assert_allclose(arrays["timestamps"], (starts + 2) / rate, rtol=0, atol=1e-12)
        raw_joystick = np.load(experiment.joystick_file)
        np.testing.assert_array_equal(arrays["joystick"], raw_joystick[starts + 2])
        labels = arrays["labels"]
        assert labels.shape == (TOKENS,) and labels.min() >= 0 and labels.max() < len(CLASS_NAMES)
        if row.session == "session_00":
            np.testing.assert_array_equal(labels, (starts + 2) % 5)
        # every token is its window of the processed M-mode [C, pulses, depth]
        chain = prepare.signal_chain(cfg.data.signal, experiment.sampling_rate_hz)
        mmode = chain.apply(experiment.read_pulses(0, PULSES))
        assert mmode.shape == (CHANNELS, PULSES, depth)
        for i in (0, 1, TOKENS - 1):
            s = starts[i]
            np.testing.assert_allclose(tokens[i], mmode[:, s : s + 5].transpose(0, 2, 1), rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------------------------------- cache


def test_second_prepare_rebuilds_nothing(raw: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "out"
    cfg = make_config(out)
    first = prepare_dataset(raw, out, cfg.data)
    mtimes = h5_mtimes(out)
    metadata = (out / METADATA).read_text()
    assert len(mtimes) == 3

    def must_not_run(*args, **kwargs):
        raise AssertionError("process_experiment called on a cache hit")

    monkeypatch.setattr(prepare, "process_experiment", must_not_run)
    second = prepare_dataset(raw, out, make_config(out).data)
    assert second == first
    assert h5_mtimes(out) == mtimes
    assert (out / METADATA).read_text() == metadata


@pytest.mark.parametrize(
    "override",
    [
        "data.tokens.stride=3",
        "data.tokens.pulses_per_token=4",
        "data.tokens.dead_zone=0.5",
        "data.signal.decimation=5",
        "data.signal.tgc_coefficient=0.1",
    ],
)
def test_changed_processing_parameter_rebuilds_all(
    raw: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, override: str
) -> None:
    out = tmp_path / "out"
    first = prepare_dataset(raw, out, make_config(out).data)
    calls = count_calls(monkeypatch)
    cfg = make_config(out, override)
    second = prepare_dataset(raw, out, cfg.data)
    assert calls == [f"{s}/experiment_00" for s in SESSIONS]
    assert all(a.cache_key != b.cache_key for a, b in zip(first, second, strict=True))
    expected = prepare.processing_params(cfg.data.signal, cfg.data.tokens)
    assert all(h5_attrs(out / row.file)["params"] == expected for row in second)
    assert read_metadata(out / METADATA) == second
    # and the next run with the changed parameter is a cache hit again
    calls.clear()
    assert prepare_dataset(raw, out, cfg.data) == second
    assert calls == []


def test_tokens_per_sequence_is_not_a_processing_parameter(
    raw: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"
    prepare_dataset(raw, out, make_config(out).data)
    calls = count_calls(monkeypatch)
    cfg = make_config(out, "data.tokens.tokens_per_sequence=4", "data.mode=sequence")
    prepare_dataset(raw, out, cfg.data)
    assert calls == []


def _rewrite_joystick(folder: Path) -> None:
    joystick = np.load(folder / "joystick.npy")
    np.save(folder / "joystick.npy", np.full_like(joystick, 0.5))  # same size, other values: all right-up


def _touch_channel(folder: Path) -> None:
    path = folder / "channel_1.npy"
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**10))


@pytest.mark.parametrize("change", [_rewrite_joystick, _touch_channel], ids=["rewrite-joystick", "touch-channel"])
def test_changed_raw_experiment_rebuilds_only_that_experiment(
    raw: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, change: Callable[[Path], None]
) -> None:
    out = tmp_path / "out"
    cfg = make_config(out)
    first = prepare_dataset(raw, out, cfg.data)
    mtimes = h5_mtimes(out)
    change(experiment_dir(raw, "session_01"))
    calls = count_calls(monkeypatch)
    second = prepare_dataset(raw, out, cfg.data)
    assert calls == ["session_01/experiment_00"]
    changed = "session_01/experiment_00.h5"
    after = h5_mtimes(out)
    assert {k: v for k, v in after.items() if k != changed} == {k: v for k, v in mtimes.items() if k != changed}
    assert [r.cache_key for r in second if r.session != "session_01"] == [
        r.cache_key for r in first if r.session != "session_01"
    ]
    assert [r.cache_key for r in second if r.session == "session_01"] != [
        r.cache_key for r in first if r.session == "session_01"
    ]
    assert read_metadata(out / METADATA) == second
    if change is _rewrite_joystick:
        assert read_h5(out / changed, ["labels"])["labels"].tolist() == [1] * TOKENS


# ------------------------------------------------------------------------------------------------------ splits


def _datamodule(out: Path, *overrides: str) -> UltrasoundDataModule:
    dm = UltrasoundDataModule(make_config(out, *overrides))
    dm.setup()
    return dm


def _token_counts(out: Path) -> dict[str, int]:
    return {f"{r.session}/{r.experiment}": r.tokens for r in read_metadata(out / METADATA)}


def _check_experiments_partitioned(dm: UltrasoundDataModule, out: Path) -> None:
    """Every experiment is in exactly one split, and each split holds exactly its experiments' tokens."""
    counts = _token_counts(out)
    listed = [key for split in ("train", "val", "test") for key in dm.experiments.get(split, [])]
    assert sorted(listed) == sorted(counts)
    for split in ("train", "val", "test"):
        expected = sum(counts[key] for key in dm.experiments.get(split, []))
        tokens, labels = dm.tokens_and_labels(split)
        assert len(tokens) == len(labels) == len(dm.dataset(split)) == expected
        assert dm.data_summary()["splits"][split]["tokens"] == expected


def test_split_data_token_counts(split_data: Path) -> None:
    assert _token_counts(split_data) == {
        "session_00/experiment_00": 38,
        "session_00/experiment_01": 38,
        "session_01/experiment_00": 38,
        "session_01/experiment_01": 28,
        "session_02/experiment_00": 38,
        "session_02/experiment_01": 2,
    }


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_session_split_is_disjoint_and_complete(split_data: Path, seed: int) -> None:
    dm = _datamodule(split_data, f"seed={seed}")
    split = dm.split
    assert split is not None
    groups = [*split.train, *split.val, *split.test]
    assert sorted(groups) == SESSIONS  # disjoint (no repeats) and covering
    assert all(len(part) == 1 for part in (split.train, split.val, split.test))
    for name in ("train", "val", "test"):
        sessions = {key.split("/")[0] for key in dm.experiments.get(name, [])}
        assert sessions == set(getattr(split, name))
        # both experiments of a session go to the session's split
        assert sorted(dm.experiments[name]) == [f"{s}/experiment_0{e}" for s in sessions for e in (0, 1)]
    _check_experiments_partitioned(dm, split_data)


def test_split_by_experiment_groups_session_slash_experiment(split_data: Path) -> None:
    dm = _datamodule(split_data, "data.split_by=experiment")
    split = dm.split
    assert split is not None
    groups = [*split.train, *split.val, *split.test]
    assert sorted(groups) == sorted(_token_counts(split_data))
    assert (len(split.train), len(split.val), len(split.test)) == (4, 1, 1)  # 6 groups at 0.6/0.2/0.2
    for name in ("train", "val", "test"):
        assert sorted(dm.experiments.get(name, [])) == sorted(getattr(split, name))
    _check_experiments_partitioned(dm, split_data)


@pytest.mark.parametrize(
    ("overrides", "test_groups", "test_experiments"),
    [
        (
            ("data.test_groups=[session_01]",),
            ["session_01"],
            ["session_01/experiment_00", "session_01/experiment_01"],
        ),
        (
            ("data.split_by=experiment", "data.test_groups=[session_00/experiment_01]"),
            ["session_00/experiment_01"],
            ["session_00/experiment_01"],
        ),
    ],
)
def test_test_groups_are_held_out(
    split_data: Path, overrides: tuple[str, ...], test_groups: list[str], test_experiments: list[str]
) -> None:
    dm = _datamodule(split_data, *overrides)
    split = dm.split
    assert split is not None
    assert list(split.test) == test_groups
    assert sorted(dm.experiments["test"]) == test_experiments
    assert split.train and split.val
    assert not set(test_groups) & (set(split.train) | set(split.val))
    _check_experiments_partitioned(dm, split_data)


def test_data_summary_lists_the_split(split_data: Path) -> None:
    dm = _datamodule(split_data)
    summary = dm.data_summary()
    assert dm.split is not None and dm.stats is not None
    assert summary["split_by"] == "session"
    assert summary["split"] == dm.split.as_dict()
    assert summary["token_shape"] == [CHANNELS, DEPTH, 5]
    assert summary["train_channel_stats"] == dm.stats.to_dict()
    counts = _token_counts(split_data)
    for name in ("train", "val", "test"):
        entry = summary["splits"][name]
        assert entry["experiments"] == dm.experiments[name]
        assert entry["tokens"] == sum(counts[key] for key in entry["experiments"])
        assert sum(entry["class_counts"].values()) == entry["tokens"]
        assert list(entry["class_counts"]) == list(CLASS_NAMES)
    json.dumps(summary)  # JSON-ready


def test_normalisation_statistics_come_from_the_training_split_only(split_data: Path) -> None:
    dm = _datamodule(split_data)
    assert dm.stats is not None

    def stats_of(keys: list[str]):
        arrays = [read_h5(split_data / f"{key}.h5", ["tokens"])["tokens"] for key in keys]
        return channel_stats(a.transpose(1, 0, 2, 3) for a in arrays)

    train = stats_of(dm.experiments["train"])
    everything = stats_of(sorted(_token_counts(split_data)))
    for name in ("min", "max", "mean", "std"):
        np.testing.assert_allclose(getattr(dm.stats, name), getattr(train, name), rtol=1e-6)
    assert not np.allclose(dm.stats.mean, everything.mean, rtol=1e-3)
    assert not np.allclose(dm.stats.std, everything.std, rtol=1e-3)
    # z-scored with the training statistics: the training tokens have mean 0 and std 1 per channel
    tokens, _ = dm.tokens_and_labels("train")
    channel_first = tokens.transpose(1, 0, 2, 3).reshape(CHANNELS, -1).astype(np.float64)
    np.testing.assert_allclose(channel_first.mean(axis=1), 0.0, atol=1e-4)
    np.testing.assert_allclose(channel_first.std(axis=1), 1.0, atol=1e-4)


def test_sequence_mode_items_are_consecutive_tokens_of_one_experiment(split_data: Path) -> None:
    steps = 10
    dm = _datamodule(split_data, "data.mode=sequence", "data.split_by=experiment")
    counts = _token_counts(split_data)
    for name in ("train", "val", "test"):
        dataset = dm.dataset(name)
        expected = []
        for key in dm.experiments.get(name, []):
            arrays = read_h5(split_data / f"{key}.h5", ["tokens", "labels"])
            tokens = dm.normalized(arrays["tokens"])
            expected += [(tokens[s : s + steps], arrays["labels"][s : s + steps]) for s in range(counts[key] - 9)]
        assert len(dataset) == len(expected) == sum(max(0, counts[k] - steps + 1) for k in dm.experiments[name])
        for index, (tokens, labels) in enumerate(expected):
            got_tokens, got_labels = dataset[index]
            assert tuple(got_tokens.shape) == (steps, CHANNELS, DEPTH, 5)
            assert tuple(got_labels.shape) == (steps,)
            np.testing.assert_array_equal(got_tokens.numpy(), tokens)
            np.testing.assert_array_equal(got_labels.numpy(), labels)
    # the 2-token experiment yields no sequence: 29 + 29 + 29 + 19 + 29 + 0 sequences in all
    assert sum(len(dm.dataset(name)) for name in ("train", "val", "test")) == 135


# ---------------------------------------------------------------------------------------------------- bad input


def _delete_channel_1(folder: Path) -> list[str]:
    (folder / "channel_1.npy").unlink()
    return [str(folder), "missing channel_1.npy"]  # a gap: the folder and the missing file are named


def _fewer_pulses_in_channel_2(folder: Path) -> list[str]:
    np.save(folder / "channel_2.npy", np.load(folder / "channel_2.npy")[:70])
    return [str(folder / "channel_2.npy")]


def _short_joystick(folder: Path) -> list[str]:
    np.save(folder / "joystick.npy", np.load(folder / "joystick.npy")[:70])
    return [str(folder / "joystick.npy")]


def _float_channel(folder: Path) -> list[str]:
    np.save(folder / "channel_1.npy", np.load(folder / "channel_1.npy").astype(np.float32))
    return [str(folder / "channel_1.npy")]


def _truncated_channel(folder: Path) -> list[str]:
    path = folder / "channel_0.npy"
    path.write_bytes(path.read_bytes()[:-100])
    return [str(path)]


def _empty_folder(folder: Path) -> list[str]:
    for path in folder.iterdir():
        path.unlink()
    return [str(folder)]


def _nan_joystick(folder: Path) -> list[str]:
    joystick = np.load(folder / "joystick.npy")
    joystick[40, 0] = np.nan
    np.save(folder / "joystick.npy", joystick)
    return [str(folder / "joystick.npy")]


BAD_INPUTS = [
    pytest.param(_delete_channel_1, id="missing-channel-file"),
    pytest.param(_fewer_pulses_in_channel_2, id="channels-with-different-pulse-counts"),
    pytest.param(_short_joystick, id="joystick-length-mismatch"),
    pytest.param(_float_channel, id="float32-channel"),
    pytest.param(_truncated_channel, id="truncated-npy"),
    pytest.param(_empty_folder, id="empty-experiment-folder"),
]


def _prepare_cli(capsys: pytest.CaptureFixture[str], raw: Path, out: Path) -> tuple[int, str, str]:
    return cli(capsys, "prepare", "ultrasound-ae", "--input", raw, "--output", out, *(f"--override={o}" for o in BASE))


@pytest.mark.parametrize("corrupt", [*BAD_INPUTS, pytest.param(_nan_joystick, id="nan-joystick")])
def test_bad_raw_input_exits_2_and_writes_nothing(
    raw: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], corrupt: Callable[[Path], list[str]]
) -> None:
    named = corrupt(experiment_dir(raw))  # the last experiment: the others would be written first
    out = tmp_path / "out"
    code, _, err = _prepare_cli(capsys, raw, out)
    assert code == 2, err
    assert all(squash(text) in squash(err) for text in named), err
    assert "Traceback" not in err
    assert snapshot(out) == {}  # no .h5, no metadata.csv


@pytest.mark.parametrize("corrupt", [*BAD_INPUTS, pytest.param(_nan_joystick, id="nan-joystick")])
def test_bad_raw_input_leaves_a_previous_preparation_unchanged(
    raw: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], corrupt: Callable[[Path], list[str]]
) -> None:
    out = tmp_path / "out"
    code, _, err = _prepare_cli(capsys, raw, out)
    assert code == 0, err
    before = snapshot(out)
    assert len(before) == 4
    named = corrupt(experiment_dir(raw))
    code, _, err = _prepare_cli(capsys, raw, out)
    assert code == 2, err
    assert all(squash(text) in squash(err) for text in named), err
    assert snapshot(out) == before


def test_good_raw_input_prepares_through_the_cli(raw: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    code, stdout, err = _prepare_cli(capsys, raw, out)
    assert code == 0, err
    assert squash(str(out)) in squash(stdout)
    assert [r.depth for r in read_metadata(out / METADATA)] == [DEPTH] * 3


def test_error_messages_are_printed_verbatim(raw: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _fewer_pulses_in_channel_2(experiment_dir(raw))
    code, _, err = _prepare_cli(capsys, raw, tmp_path / "out")
    assert code == 2
    assert "the same [pulses, samples]" in err


# ------------------------------------------------------------------------------------------------------ validate


@pytest.fixture()
def prepared(raw: Path, tmp_path: Path) -> Path:
    out = tmp_path / "out"
    prepare_dataset(raw, out, make_config(out).data)
    return out


def _validate(capsys: pytest.CaptureFixture[str], out: Path, *overrides: str) -> tuple[int, str, str]:
    flags = [f"--override={o}" for o in [f"data.root={out}", *BASE, *overrides]]
    return cli(capsys, "validate", "--recipe", "ultrasound-ae", *flags)


def test_validate_accepts_the_prepared_folder(prepared: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, stdout, err = _validate(capsys, prepared, "data.test_groups=[session_01]")
    assert code == 0, err
    assert "3 prepared experiments in 3 sessions, 114 tokens" in stdout


def test_validate_unknown_test_group_exits_2(prepared: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = snapshot(prepared)
    code, _, err = _validate(capsys, prepared, "data.test_groups=[nope]")
    assert code == 2
    assert "nope" in err
    assert snapshot(prepared) == before


def test_training_on_a_folder_prepared_with_other_parameters_is_refused(
    prepared: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = _validate(capsys, prepared, "data.tokens.stride=3")
    assert code == 2
    assert "prepared with other" in err
    with pytest.raises(DataError, match="prepared with other"):
        _datamodule(prepared, "data.tokens.stride=3")
    # the same parameters are accepted
    assert _validate(capsys, prepared, "data.tokens.stride=2")[0] == 0
