"""Evaluation metrics of abr-diffusion (issue 7, section 6) as plain functions over numpy arrays.

Every ``*_metrics`` function returns a flat dict with stable keys (a metric that cannot be computed on the given
data is NaN, never missing), ready for ``report.json``:

* :func:`signal_metrics` — ``signal_mse``, ``signal_mae``, ``signal_pearson_r``, ``signal_snr_db``,
  ``signal_spectral_similarity``, ``signal_morphological_similarity`` (DTW is not computed).
* :func:`peak_metrics` — ``peak_existence_accuracy``, ``peak_existence_f1``, ``peak_latency_mae_ms``,
  ``peak_latency_rmse_ms``, ``peak_amplitude_mae_uv``, ``peak_amplitude_rmse_uv``, ``peak_matched_count``.
* :func:`classification_metrics` — ``class_accuracy``, ``class_balanced_accuracy``, ``class_macro_f1``,
  ``class_weighted_f1``, ``class_precision_<name>``, ``class_recall_<name>``, ``class_auc_<name>`` and
  ``class_macro_auc`` (with probabilities), ``class_confusion_matrix`` (a list of lists, rows = truth);
  ``<name>`` is the lower-case class name (``class_recall_snhl``).
* :func:`threshold_metrics` — ``threshold_mae_db``, ``threshold_rmse_db``, ``threshold_r2``,
  ``threshold_within_5db``, ``threshold_within_10db``, ``threshold_within_15db``.
* :func:`clinical_metrics` — ``clinical_degree_accuracy``, ``clinical_loss_agreement``,
  ``clinical_loss_sensitivity``, ``clinical_loss_specificity`` (degrees from :func:`hearing_loss_degree`).
* :func:`stratify_by_age` — any of the above per age group: ``age_18_40/threshold_mae_db``, ``age_18_40/count``.

:func:`detect_wave_v` picks wave V on waveforms (used to measure generated signals). sklearn and scipy compute
what they can; the few formulas written here are stated in the docstrings.
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from scipy.signal import hilbert, welch
from scipy.stats import pearsonr
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
    r2_score,
    roc_auc_score,
)

from medtrain.recipes.abr_diffusion.table import CLASS_NAMES

DEGREE_NAMES = ("normal", "mild", "moderate", "moderately_severe", "severe", "profound")
DEGREE_UPPER_DB = (25.0, 40.0, 55.0, 70.0, 90.0)  # inclusive upper bounds of the first five degrees
AGE_BINS = (0.0, 18.0, 40.0, 65.0, math.inf)
WELCH_NPERSEG = 64
THRESHOLD_TOLERANCES_DB = (5, 10, 15)


# ------------------------------------------------------------------------------------------------ signals


def signal_metrics(
    true: np.ndarray, pred: np.ndarray, *, sampling_rate_hz: float = 20000.0, nperseg: int = WELCH_NPERSEG
) -> dict[str, float]:
    """Waveform agreement of ``pred`` with ``true`` (both ``[N, L]``, or ``[L]`` for one signal).

    * ``signal_mse`` = mean (x − x̂)², ``signal_mae`` = mean |x − x̂| over all samples and time points.
    * ``signal_pearson_r`` = mean over signals of the Pearson r between x and x̂.
    * ``signal_snr_db`` = 10·log10(Σ x² / Σ (x − x̂)²), pooled over all signals (inf when x̂ = x).
    * ``signal_spectral_similarity`` = mean over signals of the cosine similarity of the Welch power spectral
      densities (``scipy.signal.welch``, Hann window, ``nperseg`` = min(64, L) samples, 50 % overlap; at 20 kHz
      that is 312.5 Hz bins).
    * ``signal_morphological_similarity`` = mean over signals of the Pearson r of the Hilbert envelopes
      ``|scipy.signal.hilbert(x)|``.

    Signals for which a correlation or cosine is undefined (a constant signal, a zero spectrum) are left out of
    that mean; NaN when none is left.
    """
    x, y = _rows(true), _rows(pred)
    if x.shape != y.shape:
        raise ValueError(f"true and pred must have the same shape, got {x.shape} and {y.shape}")
    error = x - y
    error_power = float((error**2).sum())
    _, psd_x = welch(x, fs=sampling_rate_hz, nperseg=min(nperseg, x.shape[1]), axis=-1)
    _, psd_y = welch(y, fs=sampling_rate_hz, nperseg=min(nperseg, x.shape[1]), axis=-1)
    norms = np.linalg.norm(psd_x, axis=1) * np.linalg.norm(psd_y, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        cosine = np.where(norms > 0, (psd_x * psd_y).sum(axis=1) / norms, np.nan)
        snr = 10.0 * math.log10(float((x**2).sum()) / error_power) if error_power > 0 else math.inf
    return {
        "signal_mse": float((error**2).mean()),
        "signal_mae": float(np.abs(error).mean()),
        "signal_pearson_r": _nanmean(_row_pearson(x, y)),
        "signal_snr_db": snr,
        "signal_spectral_similarity": _nanmean(cosine),
        "signal_morphological_similarity": _nanmean(
            _row_pearson(np.abs(hilbert(x, axis=-1)), np.abs(hilbert(y, axis=-1)))
        ),
    }


# ------------------------------------------------------------------------------------------------- peaks


def peak_metrics(
    true_peaks: np.ndarray,
    pred_peaks: np.ndarray,
    *,
    pred_exists: np.ndarray | None = None,
    existence_threshold: float = 0.5,
) -> dict[str, float]:
    """Wave-V existence and measurement agreement; ``true_peaks`` and ``pred_peaks`` are ``[N, 2]`` (latency ms,
    amplitude µV), NaN where a peak is absent.

    A true peak exists where both of its values are finite. A predicted peak exists where ``pred_exists`` says so
    (booleans, or probabilities ≥ ``existence_threshold``), or, without ``pred_exists``, where both predicted values
    are finite. ``peak_existence_accuracy`` and ``peak_existence_f1`` (present = positive class; NaN when neither
    side has a present peak) score existence. Latency and amplitude errors (``peak_latency_mae_ms``,
    ``peak_latency_rmse_ms``, ``peak_amplitude_mae_uv``, ``peak_amplitude_rmse_uv``) are computed only on the
    ``peak_matched_count`` peaks present in BOTH truth and prediction (with finite predicted values), so they say
    how well a found peak is measured, not whether it was found; NaN when there is none.
    """
    truth = np.asarray(true_peaks, dtype=np.float64).reshape(-1, 2)
    pred = np.asarray(pred_peaks, dtype=np.float64).reshape(-1, 2)
    true_present = np.isfinite(truth).all(axis=1)
    if pred_exists is None:
        pred_present = np.isfinite(pred).all(axis=1)
    else:
        flags = np.asarray(pred_exists).reshape(-1)
        pred_present = flags.astype(bool) if flags.dtype == bool else flags >= existence_threshold
    matched = true_present & pred_present & np.isfinite(pred).all(axis=1)
    error = pred[matched] - truth[matched]
    result = {
        "peak_existence_accuracy": float(accuracy_score(true_present, pred_present)),
        "peak_existence_f1": float(f1_score(true_present, pred_present, zero_division=np.nan)),
    }
    for k, (name, unit) in enumerate((("latency", "ms"), ("amplitude", "uv"))):
        result[f"peak_{name}_mae_{unit}"] = float(np.abs(error[:, k]).mean()) if len(error) else math.nan
        result[f"peak_{name}_rmse_{unit}"] = float(np.sqrt((error[:, k] ** 2).mean())) if len(error) else math.nan
    result["peak_matched_count"] = float(matched.sum())
    return result


def detect_wave_v(
    signals: np.ndarray,
    sampling_rate_hz: float,
    window_ms: tuple[float, float] = (4.5, 8.5),
    *,
    threshold_sd: float = 5.0,
    trough_ms: float = 1.5,
) -> tuple[np.ndarray, np.ndarray]:
    """Pick wave V on each signal (``[N, L]`` µV, sample n at n / fs after the click): ``(latency_ms [N],
    amplitude_uv [N])``, NaN where no peak qualifies.

    Candidates are the local maxima (``x[n] > x[n−1]`` and ``x[n] ≥ x[n+1]``) with ``n / fs`` inside ``window_ms``.
    A candidate qualifies when its peak-to-trough height (``x[n]`` minus the minimum of the following
    ``trough_ms``, i.e. wave V to the SN10 negativity) exceeds ``threshold_sd`` times the signal's robust noise
    level σ̂ = 1.4826 · median |x − median x| (computed over the whole signal, which is mostly noise plus
    short waves). The largest qualifying maximum (by its value ``x[n]``) is wave V; its latency and amplitude
    are refined by a parabola through ``x[n−1], x[n], x[n+1]``. The amplitude is baseline-to-peak (the value
    itself), as in the table's ``peak_v``. On the synthetic data the default ``threshold_sd`` finds about 90 %
    of the present wave V peaks and fires on about 10 % of the recordings without a response; a single trace
    cannot do much better at low sensation levels.
    """
    x = _rows(signals)
    n_rows, length = x.shape
    first = max(1, math.ceil(window_ms[0] * sampling_rate_hz / 1000.0 - 1e-9))
    last = min(length - 2, math.floor(window_ms[1] * sampling_rate_hz / 1000.0 + 1e-9))
    latency = np.full(n_rows, np.nan)
    amplitude = np.full(n_rows, np.nan)
    if last < first:
        return latency, amplitude
    centre = x[:, first : last + 1]
    is_max = (centre > x[:, first - 1 : last]) & (centre >= x[:, first + 1 : last + 2])
    span = max(1, round(trough_ms * sampling_rate_hz / 1000.0))
    padded = np.pad(x, ((0, 0), (0, span)), mode="edge")
    following_min = sliding_window_view(padded, span + 1, axis=1)[:, first : last + 1].min(axis=-1)
    noise = 1.4826 * np.median(np.abs(x - np.median(x, axis=1, keepdims=True)), axis=1)
    ok = is_max & (centre - following_min > threshold_sd * noise[:, None])
    found = ok.any(axis=1)
    index = np.argmax(np.where(ok, centre, -np.inf), axis=1) + first
    rows = np.arange(n_rows)
    left, mid, right = x[rows, index - 1], x[rows, index], x[rows, index + 1]
    curvature = left - 2.0 * mid + right
    delta = np.where(curvature < 0, 0.5 * (left - right) / np.where(curvature < 0, curvature, -1.0), 0.0)
    latency[found] = ((index + delta) / sampling_rate_hz * 1000.0)[found]
    amplitude[found] = (mid - 0.25 * (left - right) * delta)[found]
    return latency, amplitude


# ---------------------------------------------------------------------------------------- classification


def classification_metrics(
    y_true: np.ndarray,
    y_pred: np.ndarray | None = None,
    *,
    proba: np.ndarray | None = None,
    class_names: Sequence[str] = CLASS_NAMES,
) -> dict[str, Any]:
    """Class agreement; ``y_true``/``y_pred`` are ``[N]`` class indices, ``proba`` ``[N, K]`` class probabilities
    (``y_pred`` defaults to its argmax; one of the two is required).

    sklearn computes: accuracy, balanced accuracy (mean recall over the classes present in the truth), macro and
    weighted F1 (over the classes present in truth or prediction, sklearn's default), per-class precision and
    recall for every class (NaN where undefined: nothing predicted / nothing true), the confusion matrix over all
    K classes (rows = truth, columns = prediction). One-vs-rest ROC AUC per class (``roc_auc_score`` of
    ``y_true == k`` against ``proba[:, k]``) needs ``proba`` and both positives and negatives of that class in the
    truth: classes absent from the truth (or the only class) get NaN and are left out of ``class_macro_auc``.
    Without ``proba`` every AUC is NaN.
    """
    names = [name.lower() for name in class_names]
    labels = list(range(len(names)))
    truth = np.asarray(y_true, dtype=np.int64).reshape(-1)
    if y_pred is None:
        if proba is None:
            raise ValueError("give y_pred or proba")
        y_pred = np.asarray(proba).argmax(axis=1)
    pred = np.asarray(y_pred, dtype=np.int64).reshape(-1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "y_pred contains classes not in y_true"
        result: dict[str, Any] = {
            "class_accuracy": float(accuracy_score(truth, pred)),
            "class_balanced_accuracy": float(balanced_accuracy_score(truth, pred)),
            "class_macro_f1": float(f1_score(truth, pred, average="macro", zero_division=np.nan)),
            "class_weighted_f1": float(f1_score(truth, pred, average="weighted", zero_division=np.nan)),
        }
    precision, recall, _, _ = precision_recall_fscore_support(
        truth, pred, labels=labels, average=None, zero_division=np.nan
    )
    for k, name in enumerate(names):
        result[f"class_precision_{name}"] = float(precision[k])
        result[f"class_recall_{name}"] = float(recall[k])
    aucs = []
    for k, name in enumerate(names):
        positive = truth == k
        auc = math.nan
        if proba is not None and 0 < positive.sum() < len(truth):
            auc = float(roc_auc_score(positive, np.asarray(proba)[:, k]))
            aucs.append(auc)
        result[f"class_auc_{name}"] = auc
    result["class_macro_auc"] = float(np.mean(aucs)) if aucs else math.nan
    result["class_confusion_matrix"] = confusion_matrix(truth, pred, labels=labels).tolist()
    return result


# --------------------------------------------------------------------------------------------- threshold


def threshold_metrics(true_db: np.ndarray, pred_db: np.ndarray) -> dict[str, float]:
    """Hearing-threshold agreement (dB): ``threshold_mae_db`` = mean |e|, ``threshold_rmse_db`` = √(mean e²) with
    e = predicted − true; ``threshold_r2`` = sklearn ``r2_score`` (NaN for fewer than two values or a constant
    truth); ``threshold_within_{5,10,15}db`` = fraction with |e| ≤ 5, 10, 15 dB."""
    truth = np.asarray(true_db, dtype=np.float64).reshape(-1)
    error = np.asarray(pred_db, dtype=np.float64).reshape(-1) - truth
    defined = len(truth) >= 2 and np.ptp(truth) > 0
    result = {
        "threshold_mae_db": float(np.abs(error).mean()),
        "threshold_rmse_db": float(np.sqrt((error**2).mean())),
        "threshold_r2": float(r2_score(truth, truth + error)) if defined else math.nan,
    }
    for tolerance in THRESHOLD_TOLERANCES_DB:
        result[f"threshold_within_{tolerance}db"] = float((np.abs(error) <= tolerance).mean())
    return result


# ---------------------------------------------------------------------------------------------- clinical


def hearing_loss_degree(db: float | np.ndarray) -> np.ndarray:
    """Degree of hearing loss from a threshold in dB HL, as an index into :data:`DEGREE_NAMES`: normal ≤ 25,
    mild 26–40, moderate 41–55, moderately severe 56–70, severe 71–90, profound > 90 (a fractional value goes
    to the higher degree: 25.5 is mild). Same shape as ``db`` (0-d for a scalar), int64. ``ValueError`` for NaN."""
    values = np.asarray(db, dtype=np.float64)
    if np.isnan(values).any():
        raise ValueError("hearing_loss_degree: thresholds must not be NaN")
    return np.digitize(values, DEGREE_UPPER_DB, right=True).astype(np.int64)


def clinical_metrics(true_db: np.ndarray, pred_db: np.ndarray) -> dict[str, float]:
    """Clinical agreement of predicted with true thresholds (dB), through :func:`hearing_loss_degree`.

    ``clinical_degree_accuracy`` = fraction of equal degrees (concordance). Normal-vs-loss diagnosis, where
    "loss" (any degree other than normal, i.e. > 25 dB) is the positive class: ``clinical_loss_agreement`` =
    fraction of equal diagnoses, ``clinical_loss_sensitivity`` = TP / (TP + FN), ``clinical_loss_specificity`` =
    TN / (TN + FP) (NaN when the denominator is 0).
    """
    true_degree = hearing_loss_degree(np.asarray(true_db, dtype=np.float64).reshape(-1))
    pred_degree = hearing_loss_degree(np.asarray(pred_db, dtype=np.float64).reshape(-1))
    true_loss, pred_loss = true_degree > 0, pred_degree > 0
    tp = int((true_loss & pred_loss).sum())
    tn = int((~true_loss & ~pred_loss).sum())
    fn = int((true_loss & ~pred_loss).sum())
    fp = int((~true_loss & pred_loss).sum())
    return {
        "clinical_degree_accuracy": float((true_degree == pred_degree).mean()),
        "clinical_loss_agreement": float((true_loss == pred_loss).mean()),
        "clinical_loss_sensitivity": tp / (tp + fn) if tp + fn else math.nan,
        "clinical_loss_specificity": tn / (tn + fp) if tn + fp else math.nan,
    }


# ------------------------------------------------------------------------------------------------ by age


def age_group_names(bins: Sequence[float] = AGE_BINS) -> list[str]:
    """Names of the age groups ``[bins[i], bins[i+1])``: ``age_0_18``, ..., ``age_65_plus`` for an infinite edge."""

    def label(value: float) -> str:
        return f"{value:g}".replace(".", "p")

    return [
        f"age_{label(lo)}_plus" if math.isinf(hi) else f"age_{label(lo)}_{label(hi)}"
        for lo, hi in itertools.pairwise(bins)
    ]


def stratify_by_age(
    metric_fn: Callable[..., dict[str, Any]],
    ages: np.ndarray,
    *arrays: np.ndarray | None,
    bins: Sequence[float] = AGE_BINS,
    **kwargs: Any,
) -> dict[str, Any]:
    """``metric_fn`` computed on each age group: ``{"<group>/count": n, "<group>/<key>": value, ...}``.

    Group i holds the rows with ``bins[i] ≤ age < bins[i+1]`` (names from :func:`age_group_names`). Every
    positional array, and every keyword argument that is a numpy array with ``len(ages)`` rows, is indexed by the
    group's rows; other keyword arguments (and ``None``) pass through unchanged. A group without rows reports
    only its count (0). Raises ``ValueError`` for unsorted bins or ages outside them.
    """
    age = np.asarray(ages, dtype=np.float64).reshape(-1)
    edges = np.asarray(bins, dtype=np.float64)
    if len(edges) < 2 or (np.diff(edges) <= 0).any():
        raise ValueError(f"bins must be increasing with at least two edges, got {tuple(bins)}")
    outside = (age < edges[0]) | (age >= edges[-1]) | np.isnan(age)
    if outside.any():
        raise ValueError(f"{int(outside.sum())} age(s) are outside the bins {tuple(bins)}")
    group_of = np.searchsorted(edges, age, side="right") - 1
    n = len(age)
    result: dict[str, Any] = {}
    for g, name in enumerate(age_group_names(bins)):
        rows = np.flatnonzero(group_of == g)
        result[f"{name}/count"] = float(len(rows))
        if not len(rows):
            continue
        args = [None if a is None else np.asarray(a)[rows] for a in arrays]
        kw = {k: v[rows] if isinstance(v, np.ndarray) and v.ndim and len(v) == n else v for k, v in kwargs.items()}
        result.update({f"{name}/{key}": value for key, value in metric_fn(*args, **kw).items()})
    return result


# ---------------------------------------------------------------------------------------------- helpers


def _rows(values: np.ndarray) -> np.ndarray:
    """``values`` as a float64 ``[N, L]`` array (a single ``[L]`` signal becomes one row)."""
    array = np.asarray(values, dtype=np.float64)
    if array.ndim == 1:
        array = array[None, :]
    if array.ndim != 2:
        raise ValueError(f"signals must be [N, L] or [L], got shape {array.shape}")
    return array


def _row_pearson(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Pearson r of each row of ``x`` with the same row of ``y`` (``scipy.stats.pearsonr``); NaN for a constant
    row."""
    constant = (np.ptp(x, axis=1) == 0) | (np.ptp(y, axis=1) == 0)
    r = np.full(len(x), np.nan)
    if (~constant).any():
        r[~constant] = pearsonr(x[~constant], y[~constant], axis=1).statistic
    return r


def _nanmean(values: np.ndarray) -> float:
    """Mean of the finite entries, NaN when there is none."""
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if len(finite) else math.nan
