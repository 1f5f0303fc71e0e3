"""ultrasound-ae raw data: discovery and validation of ``raw/<session>/<experiment>/``, lazy reading, and the
synthetic M-mode generator."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from scipy.ndimage import uniform_filter1d

from medtrain.errors import DataError
from medtrain.recipes.ultrasound_ae.raw import RawExperiment, discover_experiments, experiment_files
from medtrain.recipes.ultrasound_ae.synthetic import generate_raw_dataset

PULSES, SAMPLES, CHANNELS = 120, 400, 3
EXP = Path("session_00") / "experiment_00"


@pytest.fixture(scope="module")
def tiny_raw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tiny") / "raw"
    generate_raw_dataset(root, sessions=2, experiments_per_session=1, pulses=PULSES, samples=SAMPLES, seed=3)
    return root


@pytest.fixture()
def raw_copy(tiny_raw: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(tiny_raw, tmp_path / "raw"))


@pytest.fixture(scope="module")
def default_experiment(tmp_path_factory: pytest.TempPathFactory) -> RawExperiment:
    root = tmp_path_factory.mktemp("default") / "raw"
    generate_raw_dataset(root, sessions=1, experiments_per_session=1)
    return discover_experiments(root)[0]


def _save(path: Path, array: np.ndarray, *, allow_pickle: bool = False) -> None:
    np.save(path, array, allow_pickle=allow_pickle)


# ---------------------------------------------------------------------------------------------- discovery


def test_discover_finds_experiments_with_shapes_and_rates(tiny_raw: Path) -> None:
    experiments = discover_experiments(tiny_raw)
    assert [e.key for e in experiments] == ["session_00/experiment_00", "session_01/experiment_00"]
    for experiment in experiments:
        assert (experiment.pulses, experiment.samples, experiment.channels) == (PULSES, SAMPLES, CHANNELS)
        assert (experiment.sampling_rate_hz, experiment.pulse_rate_hz) == (5e7, 50.0)
        assert [p.name for p in experiment.channel_files] == ["channel_0.npy", "channel_1.npy", "channel_2.npy"]
        assert {p.name for p in experiment_files(experiment)} == {
            "channel_0.npy",
            "channel_1.npy",
            "channel_2.npy",
            "joystick.npy",
            "meta.json",
        }


def test_defaults_and_partial_meta(raw_copy: Path) -> None:
    (raw_copy / EXP / "meta.json").unlink()
    (raw_copy / "session_01" / "experiment_00" / "meta.json").write_text('{"pulse_rate_hz": 100, "probe": "L7"}')
    first, second = discover_experiments(raw_copy, default_sampling_rate_hz=4e7, default_pulse_rate_hz=25.0)
    assert (first.sampling_rate_hz, first.pulse_rate_hz) == (4e7, 25.0)
    assert (second.sampling_rate_hz, second.pulse_rate_hz) == (4e7, 100.0)
    assert "meta.json" not in {p.name for p in experiment_files(first)}


def test_read_pulses_and_joystick(tiny_raw: Path) -> None:
    experiment = discover_experiments(tiny_raw)[0]
    block = experiment.read_pulses(10, 35)
    expected = np.stack([np.load(p)[10:35] for p in experiment.channel_files])
    assert block.dtype == np.int16 and block.shape == (CHANNELS, 25, SAMPLES)
    np.testing.assert_array_equal(block, expected)
    assert experiment.read_pulses(5, 5).shape == (CHANNELS, 0, SAMPLES)
    assert all(a.shape == (PULSES, SAMPLES) for a in experiment.channel_arrays())
    with pytest.raises(ValueError, match="outside"):
        experiment.read_pulses(100, PULSES + 1)
    joystick = experiment.joystick()
    assert joystick.dtype == np.float32 and joystick.shape == (PULSES, 2)
    np.testing.assert_array_equal(joystick, np.load(experiment.joystick_file))


def _delete(name: str) -> Callable[[Path], None]:
    return lambda exp: (exp / name).unlink()


def _channel_with(array: np.ndarray, name: str = "channel_1.npy") -> Callable[[Path], None]:
    return lambda exp: _save(exp / name, array)


def _truncate(exp: Path) -> None:
    path = exp / "channel_1.npy"
    path.write_bytes(path.read_bytes()[:-100])


BAD_CASES: dict[str, tuple[Callable[[Path], None], list[str]]] = {
    "missing channel_1": (_delete("channel_1.npy"), ["channel_1.npy", "gaps"]),
    "missing channel_0": (_delete("channel_0.npy"), ["channel_0.npy", "not found"]),
    "fewer pulses": (
        _channel_with(np.zeros((PULSES - 20, SAMPLES), np.int16), "channel_2.npy"),
        ["channel_2.npy", "(100, 400)", "channel_0.npy", "(120, 400)"],
    ),
    "fewer samples": (_channel_with(np.zeros((PULSES, 300), np.int16)), ["channel_1.npy", "(120, 300)"]),
    "float32 channel": (_channel_with(np.zeros((PULSES, SAMPLES), np.float32)), ["channel_1.npy", "float32"]),
    "1-D channel": (_channel_with(np.zeros(SAMPLES, np.int16)), ["channel_1.npy", "2-D"]),
    "empty channel": (_channel_with(np.zeros((0, SAMPLES), np.int16), "channel_0.npy"), ["channel_0.npy", "empty"]),
    "truncated channel": (_truncate, ["channel_1.npy", "truncated or corrupt"]),
    "not an npy": (lambda exp: (exp / "channel_1.npy").write_bytes(b"hello"), ["channel_1.npy", "corrupt"]),
    "pickled channel": (
        lambda exp: _save(exp / "channel_1.npy", np.array([{"a": 1}] * 3, dtype=object), allow_pickle=True),
        ["channel_1.npy", "pickled"],
    ),
    "missing joystick": (_delete("joystick.npy"), ["joystick.npy", "not found"]),
    "joystick length": (
        lambda exp: _save(exp / "joystick.npy", np.zeros((PULSES - 1, 2), np.float32)),
        ["joystick.npy", "119 rows", "120 pulses"],
    ),
    "joystick one column": (
        lambda exp: _save(exp / "joystick.npy", np.zeros((PULSES, 1), np.float32)),
        ["joystick.npy", "(120, 1)"],
    ),
    "joystick strings": (
        lambda exp: _save(exp / "joystick.npy", np.full((PULSES, 2), "a")),
        ["joystick.npy", "numeric"],
    ),
    "meta invalid json": (lambda exp: (exp / "meta.json").write_text("{sampling"), ["meta.json", "cannot read"]),
    "meta negative rate": (
        lambda exp: (exp / "meta.json").write_text(json.dumps({"sampling_rate_hz": -1})),
        ["meta.json", "sampling_rate_hz", "-1"],
    ),
    "meta not an object": (lambda exp: (exp / "meta.json").write_text("[50]"), ["meta.json", "JSON object"]),
}


@pytest.mark.parametrize("case", list(BAD_CASES))
def test_bad_experiment_raises_data_error_naming_the_file(raw_copy: Path, case: str) -> None:
    modify, fragments = BAD_CASES[case]
    modify(raw_copy / EXP)
    with pytest.raises(DataError) as info:
        discover_experiments(raw_copy)
    assert info.value.exit_code == 2
    message = str(info.value)
    assert str(raw_copy / EXP) in message
    for fragment in fragments:
        assert fragment in message


def test_bad_layouts(raw_copy: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="raw data folder not found"):
        discover_experiments(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"no experiments under .*empty: expected .*<session>/<experiment>/channel_0"):
        discover_experiments(tmp_path / "empty")
    empty_experiment = raw_copy / "session_01" / "experiment_07"
    empty_experiment.mkdir()
    with pytest.raises(DataError, match=f"experiment folder {re.escape(str(empty_experiment))} is empty"):
        discover_experiments(raw_copy)
    empty_experiment.rmdir()
    (raw_copy / "session_02").mkdir()
    with pytest.raises(DataError, match="session_02 holds no experiment folders"):
        discover_experiments(raw_copy)


def test_joystick_with_nan_is_refused_when_read(raw_copy: Path) -> None:
    joystick = np.load(raw_copy / EXP / "joystick.npy")
    joystick[7, 1] = np.nan
    _save(raw_copy / EXP / "joystick.npy", joystick)
    experiment = discover_experiments(raw_copy)[0]
    with pytest.raises(DataError, match=r"joystick\.npy: NaN or infinity in 1 of 120 rows \(first: row 7\)"):
        experiment.joystick()


# ---------------------------------------------------------------------------------------------- synthetic data


def test_generation_is_reproducible(tiny_raw: Path, tmp_path: Path) -> None:
    again = generate_raw_dataset(
        tmp_path / "a", sessions=2, experiments_per_session=1, pulses=PULSES, samples=SAMPLES, seed=3
    )
    other = generate_raw_dataset(
        tmp_path / "b", sessions=1, experiments_per_session=1, pulses=PULSES, samples=SAMPLES, seed=4
    )
    assert [p.relative_to(tmp_path / "a") for p in again] == [EXP, Path("session_01") / "experiment_00"]
    for name in ("channel_0.npy", "channel_2.npy", "joystick.npy"):
        assert (again[0] / name).read_bytes() == (tiny_raw / EXP / name).read_bytes()
    assert (other[0] / "channel_0.npy").read_bytes() != (tiny_raw / EXP / "channel_0.npy").read_bytes()
    with pytest.raises(ValueError, match="fs must be"):
        generate_raw_dataset(tmp_path / "c", fs=1e7)


def test_synthetic_rf_uses_the_int16_range(default_experiment: RawExperiment) -> None:
    assert (default_experiment.pulses, default_experiment.samples, default_experiment.channels) == (600, 1996, 3)
    rf = default_experiment.read_pulses(0, default_experiment.pulses)
    peak = np.abs(rf.astype(np.int32)).max(axis=(1, 2)) / 32767
    assert rf.dtype == np.int16
    assert peak.max() == pytest.approx(0.6, abs=0.01) and peak.min() > 0.3
    assert rf.std() > 0.005 * 32767  # speckle and layers, not a lone spike
    assert not np.array_equal(rf[0], rf[1])  # channels differ in offset, gain and noise


def test_synthetic_interface_follows_the_joystick(default_experiment: RawExperiment) -> None:
    rf = default_experiment.read_pulses(0, default_experiment.pulses).astype(np.float32)
    x, y = default_experiment.joystick().T
    energy = uniform_filter1d(rf[0] ** 2, 15, axis=-1)
    brightest = energy.argmax(axis=1).astype(np.float64)  # depth of the strongest echo, per pulse
    assert abs(np.median(brightest[x > 0.4]) - np.median(brightest[x < -0.4])) > 50
    design = np.column_stack([np.ones_like(x), x, y])
    residual = brightest - design @ np.linalg.lstsq(design, brightest, rcond=None)[0]
    assert 1 - residual.var() / brightest.var() > 0.9  # depth = base + a·x + b·y


def test_synthetic_joystick_visits_all_five_states(default_experiment: RawExperiment) -> None:
    joystick = default_experiment.joystick()
    assert joystick.min() >= -1 and joystick.max() <= 1
    x, y = joystick.T
    rest = (np.abs(x) < 0.2) & (np.abs(y) < 0.2)
    states = np.where(rest, 4, (x < 0).astype(int) + 2 * (y < 0))
    counts = np.bincount(states, minlength=5)
    assert counts.min() >= 0.05 * joystick.shape[0], counts
