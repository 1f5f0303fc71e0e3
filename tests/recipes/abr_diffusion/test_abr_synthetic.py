"""abr-diffusion synthetic generator: shapes, determinism, class proportions and the physiology it claims."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.signal import welch

from medtrain.recipes.abr_diffusion.metrics import detect_wave_v
from medtrain.recipes.abr_diffusion.synthetic import (
    CLASS_PROPORTIONS,
    DEFAULT_INTENSITIES_DB,
    STIMULUS_RATES_HZ,
    class_counts,
    generate_abr_table,
    write_abr_dataset,
)
from medtrain.recipes.abr_diffusion.table import CLASS_NAMES, read_abr_table

NORMAL, NEUROPATHY, SNHL, TOTAL, CONDUCTIVE = range(5)


@pytest.fixture(scope="module")
def data() -> dict[str, np.ndarray]:
    return generate_abr_table(300, seed=0)


def _present(data: dict[str, np.ndarray]) -> np.ndarray:
    return np.isfinite(data["peak_v"]).all(axis=1)


def _rows(data: dict[str, np.ndarray], label: int, intensity: float | None = None) -> np.ndarray:
    mask = data["labels"] == label
    return mask if intensity is None else mask & (data["static"][:, 1] == intensity)


def test_shapes_dtypes_and_finite_signals(data: dict[str, np.ndarray]) -> None:
    n = len(data["labels"])
    assert data["signals"].shape == (n, 200) and data["signals"].dtype == np.float32
    assert data["static"].shape == (n, 4) and data["peak_v"].shape == (n, 2)
    assert data["labels"].dtype == np.int64 and data["thresholds_db"].shape == (n,)
    assert tuple(data["class_names"]) == CLASS_NAMES == tuple(CLASS_PROPORTIONS)
    assert float(data["sampling_rate_hz"]) == 20000.0
    assert np.isfinite(data["signals"]).all() and np.isfinite(data["static"]).all()
    assert len(np.unique(data["patient_ids"])) == 300


def test_deterministic_for_a_seed() -> None:
    a, b = generate_abr_table(20, seed=7), generate_abr_table(20, seed=7)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])
    assert not np.array_equal(a["signals"], generate_abr_table(20, seed=8)["signals"])


@pytest.mark.parametrize(
    ("n_patients", "expected"),
    [
        (300, [240, 12, 27, 9, 12]),  # exact proportions 80/4/9/3/4 %
        (10, [6, 1, 1, 1, 1]),  # 8, 1, 1, 0, 0 by remainders; the empty classes take one NORMAL patient each
        (3, [3, 0, 0, 0, 0]),  # fewer patients than classes: no top-up
    ],
)
def test_class_counts(n_patients: int, expected: list[int]) -> None:
    assert list(class_counts(n_patients).values()) == expected


def test_patient_classes_follow_the_counts(data: dict[str, np.ndarray]) -> None:
    _, first = np.unique(data["patient_ids"], return_index=True)
    assert np.bincount(data["labels"][first], minlength=5).tolist() == [240, 12, 27, 9, 12]
    assert 0.75 < (data["labels"] == NORMAL).mean() < 0.85  # per recording too


def test_patients_have_several_intensities_and_one_threshold(data: dict[str, np.ndarray]) -> None:
    for patient in np.unique(data["patient_ids"])[:50]:
        rows = data["patient_ids"] == patient
        levels = data["static"][rows, 1]
        assert 3 <= rows.sum() <= 6 and levels.max() == max(DEFAULT_INTENSITIES_DB) and len(set(levels)) == rows.sum()
        assert len(set(data["thresholds_db"][rows])) == 1 and len(set(data["labels"][rows])) == 1
    assert set(np.unique(data["static"][:, 1])) <= set(DEFAULT_INTENSITIES_DB)
    np.testing.assert_allclose(np.unique(data["static"][:, 2]), STIMULUS_RATES_HZ, rtol=1e-6)
    assert (data["thresholds_db"] % 5 == 0).all()


@pytest.mark.parametrize(
    ("label", "low", "high"),
    [(NORMAL, 5, 25), (NEUROPATHY, 30, 70), (SNHL, 35, 90), (TOTAL, 100, 120), (CONDUCTIVE, 30, 60)],
)
def test_thresholds_by_class(data: dict[str, np.ndarray], label: int, low: float, high: float) -> None:
    thresholds = data["thresholds_db"][_rows(data, label)]
    assert low <= thresholds.min() and thresholds.max() <= high


def test_no_response_below_threshold_and_none_for_total_loss(data: dict[str, np.ndarray]) -> None:
    present = _present(data)
    below = data["static"][:, 1] < data["thresholds_db"]
    assert below.sum() > 100 and not present[below].any()
    assert not present[_rows(data, TOTAL)].any()
    hearing = ~below & np.isin(data["labels"], [NORMAL, SNHL, CONDUCTIVE])
    assert present[hearing].all()  # these classes respond at and above threshold


def test_wave_v_latency_falls_with_intensity_for_normal_hearing(data: dict[str, np.ndarray]) -> None:
    present = _present(data)
    means = [data["peak_v"][_rows(data, NORMAL, level) & present, 0].mean() for level in DEFAULT_INTENSITIES_DB]
    assert (np.diff(means) < 0).all(), means
    assert means[-2] == pytest.approx(5.6, abs=0.15)  # 80 dB nHL
    assert 6.0 < means[2] < 6.8  # 40 dB nHL


def test_amplitudes_in_the_physiological_range(data: dict[str, np.ndarray]) -> None:
    present = _present(data) & (data["labels"] != NEUROPATHY)
    amplitude = data["peak_v"][present, 1]
    assert amplitude.min() >= 0.09 and amplitude.max() <= 0.6
    normal = _rows(data, NORMAL) & present
    high = data["peak_v"][normal & (data["static"][:, 1] >= 80), 1].mean()
    near = data["peak_v"][normal & (data["static"][:, 1] - data["thresholds_db"] <= 5), 1].mean()
    assert high > 0.4 and near < 0.25  # amplitudes shrink toward threshold


def _within_patient_slope(data: dict[str, np.ndarray], label: int) -> float:
    present = _present(data)
    slopes = []
    for patient in np.unique(data["patient_ids"][_rows(data, label)]):
        rows = (data["patient_ids"] == patient) & present
        if rows.sum() >= 2:
            slopes.append(np.polyfit(data["static"][rows, 1], data["peak_v"][rows, 0], 1)[0])
    return float(np.mean(slopes))


def test_snhl_has_a_steeper_latency_intensity_slope(data: dict[str, np.ndarray]) -> None:
    normal, snhl = _within_patient_slope(data, NORMAL), _within_patient_slope(data, SNHL)
    assert normal < 0 and snhl < 1.5 * normal  # ms/dB: about -0.02 vs -0.045


def test_conductive_loss_delays_wave_v(data: dict[str, np.ndarray]) -> None:
    present = _present(data)
    normal = data["peak_v"][_rows(data, NORMAL, 90) & present, 0].mean()
    conductive = data["peak_v"][_rows(data, CONDUCTIVE, 90) & present, 0].mean()
    assert conductive - normal > 0.2


def test_neuropathy_has_absent_or_poor_wave_v(data: dict[str, np.ndarray]) -> None:
    audible = _rows(data, NEUROPATHY) & (data["static"][:, 1] >= data["thresholds_db"])
    present = _present(data)[audible]
    assert 0.2 < present.mean() < 0.8
    assert np.nanmax(data["peak_v"][audible, 1]) < 0.2  # poor where present
    # the early waves are there: the response power in 1-4.5 ms exceeds that of no-response recordings
    early = slice(20, 90)
    silent = data["static"][:, 1] < data["thresholds_db"]
    assert (data["signals"][audible, early] ** 2).mean() > 2 * (data["signals"][silent, early] ** 2).mean()


def test_age_and_rate_effects(data: dict[str, np.ndarray]) -> None:
    rows = _rows(data, NORMAL) & _present(data) & (data["static"][:, 1] >= 80)
    age, rate = data["static"][rows, 0], data["static"][rows, 2]
    latency, amplitude = data["peak_v"][rows, 0], data["peak_v"][rows, 1]
    adults = age > 40
    assert np.corrcoef(age[adults], latency[adults])[0, 1] > 0.3
    assert np.corrcoef(age[adults], amplitude[adults])[0, 1] < -0.2
    assert np.corrcoef(rate, latency)[0, 1] > 0.2 and np.corrcoef(rate, amplitude)[0, 1] < -0.2


def test_fmp_reflects_response_to_noise(data: dict[str, np.ndarray]) -> None:
    fmp, present = data["static"][:, 3], _present(data)
    silent = data["static"][:, 1] < data["thresholds_db"]
    assert 0.8 < np.median(fmp[silent]) < 1.25 and np.median(fmp[present]) > 4
    # with a response, higher FMP = cleaner: less power off the response (the last millisecond)
    rows = _rows(data, NORMAL, 90) & present
    tail_power = (data["signals"][rows, 180:] ** 2).mean(axis=1)
    assert np.corrcoef(np.log(fmp[rows]), np.log(tail_power))[0, 1] < -0.2


def test_noise_is_coloured(data: dict[str, np.ndarray]) -> None:
    silent = data["static"][:, 1] < data["thresholds_db"]
    freqs, psd = welch(data["signals"][silent], fs=20000.0, nperseg=128, axis=-1)
    mean = psd.mean(axis=0)
    low = mean[(freqs >= 150) & (freqs <= 500)].mean()
    high = mean[(freqs >= 1500) & (freqs <= 2500)].mean()
    assert low > 3 * high


def test_peak_v_is_what_a_peak_picker_measures(data: dict[str, np.ndarray]) -> None:
    latency, amplitude = detect_wave_v(data["signals"], 20000.0)
    truth = data["peak_v"]
    strong = _present(data) & (data["static"][:, 1] - data["thresholds_db"] >= 20) & (data["labels"] == NORMAL)
    found = strong & np.isfinite(latency)
    assert found.sum() > 0.9 * strong.sum()
    assert np.median(np.abs(latency[found] - truth[found, 0])) < 0.1
    assert np.median(np.abs(amplitude[found] - truth[found, 1])) < 0.06


def test_other_lengths_and_rates() -> None:
    data = generate_abr_table(10, seed=1, signal_length=400, sampling_rate_hz=40000.0, intensities=(30, 60, 90))
    assert data["signals"].shape[1] == 400 and float(data["sampling_rate_hz"]) == 40000.0
    present = _present(data)
    assert 4.5 < np.nanmean(data["peak_v"][present, 0]) < 8.5  # still ms after the click


@pytest.mark.parametrize(
    "kwargs",
    [{"n_patients": 0}, {"intensities": ()}, {"intensities": (-10, 20)}, {"signal_length": 8}, {"sampling_rate_hz": 0}],
)
def test_bad_arguments(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        generate_abr_table(**kwargs)


def test_round_trip_through_read_abr_table(tmp_path: Path) -> None:
    path = write_abr_dataset(tmp_path / "abr.npz", n_patients=30, seed=4)
    arrays = generate_abr_table(30, seed=4)
    table = read_abr_table(path)
    np.testing.assert_array_equal(table.signals, arrays["signals"])
    np.testing.assert_array_equal(table.static, arrays["static"])
    np.testing.assert_array_equal(table.peak_v, arrays["peak_v"])
    np.testing.assert_array_equal(table.labels, arrays["labels"])
    np.testing.assert_array_equal(table.thresholds_db, arrays["thresholds_db"])
    np.testing.assert_array_equal(table.patient_ids, arrays["patient_ids"])
    with np.load(path, allow_pickle=False) as archive:  # plain arrays only
        assert {archive[name].dtype.kind for name in archive.files} <= {"f", "i", "U"}
