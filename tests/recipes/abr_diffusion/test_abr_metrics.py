"""abr-diffusion metrics, each against a hand computation (or sklearn/scipy on the same small example)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.signal import hilbert, welch
from sklearn.metrics import f1_score, recall_score

from medtrain.recipes.abr_diffusion.metrics import (
    DEGREE_NAMES,
    age_group_names,
    classification_metrics,
    clinical_metrics,
    detect_wave_v,
    hearing_loss_degree,
    peak_metrics,
    signal_metrics,
    stratify_by_age,
    threshold_metrics,
)

FS = 20000.0
T_MS = np.arange(200) / FS * 1000.0
NAN = math.nan


def _close(actual: dict, expected: dict) -> None:
    for key, value in expected.items():
        if isinstance(value, float) and math.isnan(value):
            assert math.isnan(actual[key]), key
        else:
            assert actual[key] == pytest.approx(value, abs=1e-9), key


# ------------------------------------------------------------------------------------------------ signals


def test_signal_metrics_by_hand() -> None:
    true, pred = np.array([[1.0, 2.0, 3.0, 4.0]]), np.array([[1.0, 2.0, 3.0, 6.0]])
    result = signal_metrics(true, pred, sampling_rate_hz=FS)
    # error (0, 0, 0, -2); r = Σ dx dy / sqrt(Σ dx² Σ dy²) = 8 / sqrt(5 * 14); SNR = 10 log10(30 / 4)
    _close(result, {"signal_mse": 1.0, "signal_mae": 0.5, "signal_pearson_r": 8 / math.sqrt(70.0)})
    assert result["signal_snr_db"] == pytest.approx(10 * math.log10(7.5))
    _, psd_t = welch(true[0], fs=FS, nperseg=4)
    _, psd_p = welch(pred[0], fs=FS, nperseg=4)
    cosine = psd_t @ psd_p / (np.linalg.norm(psd_t) * np.linalg.norm(psd_p))
    envelope_r = np.corrcoef(np.abs(hilbert(true[0])), np.abs(hilbert(pred[0])))[0, 1]
    assert result["signal_spectral_similarity"] == pytest.approx(cosine)
    assert result["signal_morphological_similarity"] == pytest.approx(envelope_r)


carrier = np.sin(2 * np.pi * 2000.0 * T_MS / 1000.0)  # 20 cycles in 10 ms: periodic, so the Hilbert envelope is exact
wobble = 0.5 * np.sin(2 * np.pi * 100.0 * T_MS / 1000.0)


FLIPPED = {"signal_pearson_r": -1.0, "signal_spectral_similarity": 1.0, "signal_morphological_similarity": 1.0}


@pytest.mark.parametrize(
    ("pred_of", "expected"),
    [
        # scaling: same shape and spectrum shape, error = x: SNR 0 dB
        (lambda x: 2 * x, {"signal_pearson_r": 1.0, "signal_spectral_similarity": 1.0, "signal_snr_db": 0.0}),
        (lambda x: -x, FLIPPED),  # sign flip: r = -1, same power spectrum and envelope
        (lambda x: x, {"signal_mse": 0.0, "signal_snr_db": math.inf, "signal_pearson_r": 1.0}),
    ],
)
def test_signal_metrics_invariances(pred_of, expected: dict) -> None:
    true = np.stack([(1 + wobble) * carrier, np.exp(-(((T_MS - 5.6) / 0.3) ** 2))])
    result = signal_metrics(true, pred_of(true), sampling_rate_hz=FS)
    for key, value in expected.items():
        assert result[key] == pytest.approx(value, abs=1e-9), key


def test_spectral_and_morphological_similarity_extremes() -> None:
    # sines on Welch bins 4 and 16 (1250 and 5000 Hz at 312.5 Hz per bin): disjoint spectra
    low = np.sin(2 * np.pi * 1250.0 * T_MS / 1000.0)
    high = np.sin(2 * np.pi * 5000.0 * T_MS / 1000.0)
    assert signal_metrics(low, high, sampling_rate_hz=FS)["signal_spectral_similarity"] < 1e-3
    # envelopes 1 + w and 1 - w on the same carrier: correlation -1
    result = signal_metrics((1 + wobble) * carrier, (1 - wobble) * carrier, sampling_rate_hz=FS)
    assert result["signal_morphological_similarity"] == pytest.approx(-1.0, abs=1e-6)


def test_signal_metrics_leave_constant_signals_out_of_correlations() -> None:
    true = np.array([[0.0, 1.0, 0.0, -1.0], [2.0, 2.0, 2.0, 2.0]])
    result = signal_metrics(true, true * 3, sampling_rate_hz=FS)
    assert result["signal_pearson_r"] == pytest.approx(1.0)  # the constant row has no r and is left out
    with pytest.raises(ValueError, match="same shape"):
        signal_metrics(true, true[:, :3])


# -------------------------------------------------------------------------------------------------- peaks

TRUE_PEAKS = [[6.0, 0.5], [5.5, 0.4], [NAN, NAN], [7.0, 0.2], [NAN, NAN]]


@pytest.mark.parametrize(
    ("pred", "exists", "expected"),
    [
        # existence from finite predictions: TP rows 0, 3; FN row 1; FP row 2 -> accuracy 3/5, F1 2/3;
        # errors on rows 0 and 3: latency (0.2, -0.5), amplitude (-0.1, 0.1)
        (
            [[6.2, 0.4], [NAN, NAN], [6.0, 0.3], [6.5, 0.3], [NAN, NAN]],
            None,
            {"peak_existence_accuracy": 0.6, "peak_existence_f1": 2 / 3, "peak_latency_mae_ms": 0.35,
             "peak_latency_rmse_ms": math.sqrt(0.145), "peak_amplitude_mae_uv": 0.1,
             "peak_amplitude_rmse_uv": 0.1, "peak_matched_count": 2.0},
        ),
        # existence from probabilities >= 0.5: equal to the truth; errors on rows 0, 1, 3
        (
            [[6.2, 0.4], [5.0, 0.5], [6.0, 0.3], [6.5, 0.3], [1.0, 1.0]],
            [0.9, 0.7, 0.2, 0.6, 0.1],
            {"peak_existence_accuracy": 1.0, "peak_existence_f1": 1.0, "peak_latency_mae_ms": 0.4,
             "peak_latency_rmse_ms": math.sqrt(0.54 / 3), "peak_amplitude_mae_uv": 0.1, "peak_matched_count": 3.0},
        ),
        # booleans; nothing matched -> errors NaN
        (
            [[6.2, 0.4]] * 5,
            [False, False, True, False, True],
            {"peak_existence_accuracy": 0.0, "peak_existence_f1": 0.0, "peak_latency_mae_ms": NAN,
             "peak_amplitude_rmse_uv": NAN, "peak_matched_count": 0.0},
        ),
    ],
)  # fmt: skip
def test_peak_metrics_by_hand(pred: list, exists: list | None, expected: dict) -> None:
    flags = None if exists is None else np.asarray(exists)
    _close(peak_metrics(np.array(TRUE_PEAKS), np.array(pred), pred_exists=flags), expected)


def test_peak_existence_f1_is_nan_without_any_peak() -> None:
    nothing = np.full((3, 2), np.nan)
    result = peak_metrics(nothing, nothing)
    assert result["peak_existence_accuracy"] == 1.0 and math.isnan(result["peak_existence_f1"])


# ------------------------------------------------------------------------------------------ classification

Y_TRUE = [0, 0, 0, 0, 1, 2, 2, 3]
Y_PRED = [0, 0, 1, 0, 1, 2, 0, 2]


def test_classification_metrics_by_hand() -> None:
    result = classification_metrics(np.array(Y_TRUE), np.array(Y_PRED))
    expected = {
        "class_accuracy": 5 / 8,
        "class_balanced_accuracy": (3 / 4 + 1 + 1 / 2 + 0) / 4,  # mean recall over the classes in the truth
        "class_macro_f1": (0.75 + 2 / 3 + 0.5 + 0.0) / 4,  # F1 of classes 0..3 (4 is in neither)
        "class_weighted_f1": (4 * 0.75 + 2 / 3 + 2 * 0.5 + 0.0) / 8,
        "class_precision_normal": 3 / 4,
        "class_recall_normal": 3 / 4,
        "class_precision_neuropathy": 1 / 2,
        "class_recall_neuropathy": 1.0,
        "class_precision_snhl": 1 / 2,
        "class_recall_snhl": 1 / 2,
        "class_precision_total": NAN,  # never predicted
        "class_recall_total": 0.0,
        "class_precision_conductive": NAN,
        "class_recall_conductive": NAN,
        "class_auc_normal": NAN,  # no probabilities
        "class_macro_auc": NAN,
    }
    _close(result, expected)
    assert result["class_macro_f1"] == pytest.approx(f1_score(Y_TRUE, Y_PRED, average="macro"))
    assert result["class_confusion_matrix"] == [
        [3, 1, 0, 0, 0],
        [0, 1, 0, 0, 0],
        [1, 0, 1, 0, 0],
        [0, 0, 1, 0, 0],
        [0, 0, 0, 0, 0],
    ]


def test_one_vs_rest_auc_skips_classes_absent_from_the_truth() -> None:
    proba = np.array([[0.8, 0.1, 0.1], [0.4, 0.2, 0.4], [0.5, 0.3, 0.2], [0.1, 0.9, 0.0]])
    result = classification_metrics(np.array([0, 0, 1, 1]), proba=proba, class_names=("a", "b", "c"))
    # class a: positives 0.8, 0.4 vs negatives 0.5, 0.1 -> 3 of 4 pairs ordered; class b: 4 of 4; c absent
    _close(result, {"class_auc_a": 0.75, "class_auc_b": 1.0, "class_auc_c": NAN, "class_macro_auc": 0.875})
    assert result["class_accuracy"] == 0.75  # y_pred = argmax(proba) = 0, 0, 0, 1
    with pytest.raises(ValueError, match="y_pred or proba"):
        classification_metrics(np.array([0, 1]))


# --------------------------------------------------------------------------------------------- threshold


def test_threshold_metrics_by_hand() -> None:
    # errors (2, 0, 15, -10): MAE 27/4, RMSE sqrt(329/4), R² = 1 - 329/500 (truth mean 25)
    result = threshold_metrics(np.array([10.0, 20.0, 30.0, 40.0]), np.array([12.0, 20.0, 45.0, 30.0]))
    expected = {
        "threshold_mae_db": 6.75,
        "threshold_rmse_db": math.sqrt(82.25),
        "threshold_r2": 1 - 329 / 500,
        "threshold_within_5db": 0.5,
        "threshold_within_10db": 0.75,
        "threshold_within_15db": 1.0,  # |e| <= 15 is within
    }
    _close(result, expected)
    assert math.isnan(threshold_metrics(np.array([30.0, 30.0]), np.array([20.0, 40.0]))["threshold_r2"])


# ---------------------------------------------------------------------------------------------- clinical


@pytest.mark.parametrize(
    ("db", "degree"),
    [(-10, "normal"), (0, "normal"), (25, "normal"), (25.5, "mild"), (26, "mild"), (40, "mild"), (41, "moderate"),
     (55, "moderate"), (56, "moderately_severe"), (70, "moderately_severe"), (71, "severe"), (90, "severe"),
     (90.5, "profound"), (120, "profound")],
)  # fmt: skip
def test_hearing_loss_degree(db: float, degree: str) -> None:
    assert DEGREE_NAMES[int(hearing_loss_degree(db))] == degree


def test_hearing_loss_degree_keeps_the_shape_and_refuses_nan() -> None:
    assert hearing_loss_degree(np.array([[10, 50], [95, 30]])).tolist() == [[0, 2], [5, 1]]
    assert hearing_loss_degree(30.0).shape == ()
    with pytest.raises(ValueError, match="NaN"):
        hearing_loss_degree(np.array([10.0, np.nan]))


def test_clinical_metrics_by_hand() -> None:
    true = np.array([10, 30, 50, 95, 20, 60])  # degrees 0 1 2 5 0 3
    pred = np.array([20, 45, 50, 85, 30, 58])  # degrees 0 2 2 4 1 3
    result = clinical_metrics(true, pred)
    # loss (positive): truth F T T T F T, prediction F T T T T T -> TP 4, FN 0, TN 1, FP 1
    _close(
        result,
        {
            "clinical_degree_accuracy": 0.5,
            "clinical_loss_agreement": 5 / 6,
            "clinical_loss_sensitivity": 1.0,
            "clinical_loss_specificity": 0.5,
        },
    )
    truth_loss, pred_loss = true > 25, pred > 25
    assert result["clinical_loss_sensitivity"] == recall_score(truth_loss, pred_loss)
    assert result["clinical_loss_specificity"] == recall_score(~truth_loss, ~pred_loss)
    assert math.isnan(clinical_metrics(np.array([10.0]), np.array([30.0]))["clinical_loss_sensitivity"])


# ---------------------------------------------------------------------------------------------------- age


def test_stratify_by_age_by_hand() -> None:
    ages = np.array([5.0, 10.0, 30.0, 70.0, 80.0, 35.0])
    true = np.array([10.0, 20.0, 30.0, 40.0, 50.0, 60.0])
    pred = np.array([10.0, 25.0, 30.0, 50.0, 50.0, 60.0])
    result = stratify_by_age(threshold_metrics, ages, true, pred)
    assert result["age_0_18/count"] == 2 and result["age_0_18/threshold_mae_db"] == 2.5
    assert result["age_18_40/count"] == 2 and result["age_18_40/threshold_mae_db"] == 0.0
    assert result["age_40_65/count"] == 0 and "age_40_65/threshold_mae_db" not in result
    assert result["age_65_plus/count"] == 2 and result["age_65_plus/threshold_mae_db"] == 5.0


def test_stratify_by_age_slices_keyword_arrays_and_passes_the_rest() -> None:
    ages = np.array([10.0, 12.0, 50.0, 60.0])
    proba = np.array([[0.9, 0.1], [0.2, 0.8], [0.7, 0.3], [0.6, 0.4]])
    result = stratify_by_age(
        classification_metrics,
        ages,
        np.array([0, 1, 1, 0]),
        None,
        proba=proba,
        class_names=("x", "y"),
        bins=(0, 18, 99),
    )
    assert result["age_0_18/class_accuracy"] == 1.0 and result["age_0_18/class_auc_x"] == 1.0
    assert result["age_18_99/class_accuracy"] == 0.5 and result["age_18_99/class_auc_y"] == 0.0
    with pytest.raises(ValueError, match="outside the bins"):
        stratify_by_age(threshold_metrics, np.array([-1.0]), np.array([1.0]), np.array([1.0]))


def test_age_group_names() -> None:
    assert age_group_names() == ["age_0_18", "age_18_40", "age_40_65", "age_65_plus"]
    assert age_group_names((0, 2.5, math.inf)) == ["age_0_2p5", "age_2p5_plus"]


# ------------------------------------------------------------------------------------------- wave V picker


def _bump(latency_ms: float, amplitude: float, width_ms: float = 0.25) -> np.ndarray:
    return amplitude * np.exp(-0.5 * ((T_MS - latency_ms) / width_ms) ** 2)


NOISY_BASE = np.where((T_MS < 4.5) | (T_MS >= 8.0), np.resize([1.0, -1.0], 200), 0.0)  # robust σ̂ = 1.4826

WAVE_V_CASES = [
    # (signal, window, threshold_sd, expected latency, expected amplitude)
    ("one bump", _bump(6.02, 0.5), (4.5, 8.5), 5.0, 6.02, 0.5),
    ("outside the window", _bump(3.0, 0.5), (4.5, 8.5), 5.0, NAN, NAN),
    ("flat", np.zeros(200), (4.5, 8.5), 5.0, NAN, NAN),
    ("largest of two", _bump(5.0, 0.3) + _bump(7.0, 0.5), (4.5, 8.5), 5.0, 7.0, 0.5),
    ("largest of two, earlier", _bump(5.0, 0.5) + _bump(7.0, 0.3), (4.5, 8.5), 5.0, 5.0, 0.5),
    ("custom window", _bump(3.0, 0.5), (2.5, 3.5), 5.0, 3.0, 0.5),
    ("below the noise", NOISY_BASE + _bump(6.0, 0.5), (5.0, 7.0), 5.0, NAN, NAN),  # 0.5 < 5 x 1.48
    ("lower threshold", NOISY_BASE + _bump(6.0, 0.5), (5.0, 7.0), 0.1, 6.0, 0.5),
]


@pytest.mark.parametrize(
    ("case", "signal", "window", "k", "latency", "amplitude"), WAVE_V_CASES, ids=[c[0] for c in WAVE_V_CASES]
)
def test_detect_wave_v(case: str, signal, window, k: float, latency: float, amplitude: float) -> None:
    found_latency, found_amplitude = detect_wave_v(signal, FS, window, threshold_sd=k)
    assert found_latency.shape == (1,)
    if math.isnan(latency):
        assert np.isnan(found_latency[0]) and np.isnan(found_amplitude[0]), case
    else:
        assert found_latency[0] == pytest.approx(latency, abs=0.005), case
        assert found_amplitude[0] == pytest.approx(amplitude, abs=0.005), case


def test_detect_wave_v_on_a_batch_matches_row_by_row() -> None:
    batch = np.stack([case[1] for case in WAVE_V_CASES[:5]])
    latency, amplitude = detect_wave_v(batch, FS)
    for row, case in enumerate(WAVE_V_CASES[:5]):
        single = detect_wave_v(case[1], FS)
        np.testing.assert_array_equal([latency[row], amplitude[row]], [single[0][0], single[1][0]])
