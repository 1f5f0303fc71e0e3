"""Synthetic auditory brainstem responses (ABR) in the abr-diffusion table layout, for the demo and the tests.

Every patient gets a hearing-loss class, an age and a hearing threshold, and is recorded at several click
intensities (dB nHL); each recording is a 10 ms averaged response after the click (200 samples at 20 kHz by
default), in µV. The model, per recording (waveforms, noise and peaks are vectorised over recordings; Python loops
run only over classes and, to draw their intensities, over patients):

* **Classes.** Patients are allotted to the classes in the proportions :data:`CLASS_PROPORTIONS` (about 80 %
  NORMAL, like the clinical data) by largest-remainder rounding, every class getting at least one patient when
  there are at least as many patients as classes; the allotment is then shuffled.
* **Thresholds** (dB nHL, multiples of 5): NORMAL 5–25, CONDUCTIVE 30–60, SNHL 35–90, NEUROPATHY 30–70,
  TOTAL 100–120 (above every intensity: no response at all).
* **Intensities.** Each patient is recorded at 3–6 of ``intensities`` (always the highest, as a clinician starts
  high and goes down); the stimulus rate of each recording is one of :data:`STIMULUS_RATES_HZ`.
* **Response present** only when intensity ≥ threshold (sensation level SL = intensity − threshold ≥ 0).
* **Waves I, III, V** are Gaussian peaks (σ 0.16, 0.20, 0.26 ms, up to 40 % broader near threshold), each followed
  by a negative trough (I, III: +0.55 ms; V: the slow negativity SN10, +1.0 ms). Latency of every wave =
  base + D·exp(−SL/τ) with D = 2.3 ms, τ = 32 dB (NORMAL, CONDUCTIVE, NEUROPATHY) or τ = 14 dB plus 0.3 ms (SNHL:
  recruitment, i.e. a steeper latency–intensity slope that nearly normalises at high intensity). A conductive loss
  thereby delays all waves by the same amount at a given intensity (the cochlea receives a weaker stimulus). The
  bases (1.24, 3.27, 5.08 ms, plus a per-patient jitter of σ 0.08 ms) put waves I, III, V of a normal adult at
  about 1.6, 3.7, 5.6 ms at 80 dB nHL.
* **Amplitudes.** Wave V: ``A_max · (0.2 + 0.8 (1 − exp(−SL/20)))`` with ``A_max`` ~ U(0.45, 0.65) µV per
  patient, clipped to 0.1–0.6 µV; waves I and III: 0.5 and 0.7 ``A_max``, vanishing 15 and 8 dB above threshold
  (wave V is the last to disappear). SNHL halves wave I. NEUROPATHY: waves I and III present down to threshold,
  wave V absent in 60 % of the patients and poor in the others (15–30 % amplitude, twice as broad, +0.5 ms).
* **Age.** Wave latencies grow by 0.006 ms per year above 40 (V; less for I, III) and in infants by
  ``0.6·exp(−age/1 year)`` ms (V; brainstem maturation); amplitudes shrink by 0.4 % per year above 40. Ages:
  35 % children (log-uniform 0.2–18 years), 65 % adults (uniform 18–85).
* **Stimulus rate** (11.1–51.1 Hz): V latency +0.005 ms/Hz above 11.1 Hz (III +0.003, I +0.001), amplitude
  −0.4 %/Hz.
* **Noise.** EEG-like coloured noise: white Gaussian noise shaped to a 1/f power spectrum within a smooth
  100–3000 Hz band (the usual ABR filter), scaled per recording to a residual noise σ drawn log-normally
  (median 0.045 µV).
* **FMP** (the F-ratio quality measure; higher = cleaner): ``(var(clean) + σ²) / σ² · exp(0.15 z)``, z standard
  normal, so it is about 1 without a response and grows with the response-to-noise power ratio.
* **peak_v** = (latency ms, amplitude µV) of wave V measured on the noiseless waveform (largest sample within
  ±0.5 ms of the generating latency, refined by parabolic interpolation), NaN when wave V is absent.

The result is the dict of arrays of ARCHITECTURE.md (``signals``, ``static`` = age, intensity_db, stimulus_rate_hz,
fmp, ``peak_v``, ``labels``, ``class_names``, ``thresholds_db``, ``patient_ids``, ``sampling_rate_hz``), which
:func:`medtrain.recipes.abr_diffusion.table.read_abr_table` reads back. Deterministic for a seed.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from medtrain.io.tables import write_table_npz

CLASS_PROPORTIONS: dict[str, float] = {
    "NORMAL": 0.80,
    "NEUROPATHY": 0.04,
    "SNHL": 0.09,
    "TOTAL": 0.03,
    "CONDUCTIVE": 0.04,
}
DEFAULT_INTENSITIES_DB = (20, 30, 40, 50, 60, 70, 80, 90)
STIMULUS_RATES_HZ = (11.1, 21.1, 31.1, 41.1, 51.1)
_CLASS_NAMES = tuple(CLASS_PROPORTIONS)  # the order of table.CLASS_NAMES (checked by the tests)
_THRESHOLD_CHOICES_DB = {
    "NORMAL": np.arange(5, 26, 5),
    "NEUROPATHY": np.arange(30, 71, 5),
    "SNHL": np.arange(35, 91, 5),
    "TOTAL": np.arange(100, 121, 5),
    "CONDUCTIVE": np.arange(30, 61, 5),
}
_BASE_LATENCY_MS = np.array([1.24, 3.27, 5.08])  # waves I, III, V at high sensation level
_WIDTH_MS = np.array([0.16, 0.20, 0.26])
_DELAY_MAX_MS = 2.3
_TAU_DB = 32.0
_TAU_SNHL_DB = 14.0
_SNHL_EXTRA_MS = 0.3
_RATE_SLOPE_MS = np.array([0.001, 0.003, 0.005])  # per Hz above the slowest rate
_AGE_SLOPE_MS = np.array([0.002, 0.004, 0.006])  # per year above 40
_INFANT_DELAY_MS = np.array([0.2, 0.4, 0.6])  # times exp(-age / 1 year)
_AMPLITUDE_RANGE_UV = (0.1, 0.6)
_NOISE_MEDIAN_UV = 0.045
_NOISE_BAND_HZ = (100.0, 3000.0)


def generate_abr_table(
    n_patients: int = 300,
    *,
    intensities: Sequence[float] = DEFAULT_INTENSITIES_DB,
    seed: int = 0,
    signal_length: int = 200,
    sampling_rate_hz: float = 20000.0,
) -> dict[str, np.ndarray]:
    """A synthetic ABR table (the physiological model is in the module docstring) as a dict of plain arrays.

    Returns ``signals [N, signal_length]`` float32 µV, ``static [N, 4]`` float32 (age years, intensity dB nHL,
    stimulus rate Hz, FMP), ``peak_v [N, 2]`` float32 (latency ms, amplitude µV; NaN when wave V is absent),
    ``labels [N]`` int64 indices into ``class_names [5]``, ``thresholds_db [N]`` float32 (the patient's),
    ``patient_ids [N]`` str (``P0000``...), ``sampling_rate_hz`` (0-d float64). Rows are grouped by patient,
    intensities descending. Deterministic for ``seed``. Raises ``ValueError`` for ``n_patients < 1``, no
    intensities, a negative intensity, ``signal_length < 16`` or a non-positive sampling rate.
    """
    levels = np.unique(np.asarray(intensities, dtype=np.float64))
    if n_patients < 1 or levels.size == 0 or levels.min() < 0:
        raise ValueError("n_patients must be >= 1 and intensities a non-empty list of dB values >= 0")
    if signal_length < 16 or not sampling_rate_hz > 0:
        raise ValueError("signal_length must be >= 16 and sampling_rate_hz > 0")
    rng = np.random.default_rng(seed)
    patients = _draw_patients(n_patients, rng)
    rows = _draw_recordings(patients, levels, rng)
    latency, amplitude, width = _wave_parameters(patients, rows, rng)
    time_ms = np.arange(signal_length) / sampling_rate_hz * 1000.0
    clean = _waveforms(time_ms, latency, amplitude, width)
    noise_uv = _NOISE_MEDIAN_UV * np.exp(0.45 * rng.standard_normal(len(clean)))
    noise = _coloured_noise(len(clean), signal_length, sampling_rate_hz, rng) * noise_uv[:, None]
    fmp = (clean.var(axis=1) + noise_uv**2) / noise_uv**2 * np.exp(0.15 * rng.standard_normal(len(clean)))
    peak_v = _measure_wave_v(clean, time_ms, latency[:, 2], amplitude[:, 2] > 0)
    patient = rows["patient"]
    static = np.stack([patients["age"][patient], rows["intensity"], rows["rate"], fmp], axis=1)
    return {
        "signals": (clean + noise).astype(np.float32),
        "static": static.astype(np.float32),
        "peak_v": peak_v.astype(np.float32),
        "labels": patients["label"][patient].astype(np.int64),
        "class_names": np.array(_CLASS_NAMES),
        "thresholds_db": patients["threshold"][patient].astype(np.float32),
        "patient_ids": np.array([f"P{p:04d}" for p in patient]),
        "sampling_rate_hz": np.array(float(sampling_rate_hz)),
    }


def write_abr_dataset(
    path: Path,
    *,
    n_patients: int = 300,
    intensities: Sequence[float] = DEFAULT_INTENSITIES_DB,
    seed: int = 0,
    signal_length: int = 200,
    sampling_rate_hz: float = 20000.0,
) -> Path:
    """Generate a table with :func:`generate_abr_table` (same arguments) and write it as a pickle-free ``.npz``
    at ``path`` atomically; return the path."""
    arrays = generate_abr_table(
        n_patients,
        intensities=intensities,
        seed=seed,
        signal_length=signal_length,
        sampling_rate_hz=sampling_rate_hz,
    )
    return write_table_npz(Path(path), arrays)


def class_counts(n_patients: int) -> dict[str, int]:
    """Patients per class for ``n_patients``: largest-remainder rounding of :data:`CLASS_PROPORTIONS`, then every
    empty class takes one patient from the largest class (when ``n_patients`` is at least the number of classes)."""
    quotas = np.array([n_patients * p for p in CLASS_PROPORTIONS.values()])
    counts = np.floor(quotas + 1e-9).astype(int)
    order = np.argsort(-(quotas - counts), kind="stable")
    counts[order[: n_patients - counts.sum()]] += 1
    if n_patients >= len(counts):
        for k in np.flatnonzero(counts == 0):
            counts[np.argmax(counts)] -= 1
            counts[k] = 1
    return dict(zip(CLASS_PROPORTIONS, counts.tolist(), strict=True))


def _draw_patients(n_patients: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Per-patient class label, threshold, age, amplitude scale, latency jitter and neuropathy wave-V status."""
    labels = np.repeat(np.arange(len(_CLASS_NAMES)), list(class_counts(n_patients).values()))
    labels = labels[rng.permutation(n_patients)]
    threshold = np.empty(n_patients)
    for k, name in enumerate(_CLASS_NAMES):
        members = labels == k
        threshold[members] = rng.choice(_THRESHOLD_CHOICES_DB[name], size=int(members.sum()))
    child = rng.random(n_patients) < 0.35
    age = np.where(child, np.exp(rng.uniform(np.log(0.2), np.log(18.0), n_patients)), rng.uniform(18, 85, n_patients))
    return {
        "label": labels,
        "threshold": threshold,
        "age": age,
        "a_max": rng.uniform(0.45, 0.65, n_patients),
        "jitter": rng.normal(0.0, 0.08, (n_patients, 3)),
        "v_absent": rng.random(n_patients) < 0.6,  # used for NEUROPATHY only
        "v_poor": rng.uniform(0.15, 0.30, n_patients),
    }


def _draw_recordings(
    patients: dict[str, np.ndarray], levels: np.ndarray, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """Rows: patient index, intensity (3–6 levels per patient, always the highest; descending) and rate."""
    patient_rows, intensity_rows = [], []
    n_levels = len(levels)
    for p in range(len(patients["label"])):
        count = int(rng.integers(min(3, n_levels), min(6, n_levels) + 1))
        others = rng.choice(n_levels - 1, size=count - 1, replace=False)
        chosen = np.sort(np.concatenate([[n_levels - 1], others]))[::-1]
        patient_rows.append(np.full(count, p))
        intensity_rows.append(levels[chosen])
    patient = np.concatenate(patient_rows)
    return {
        "patient": patient,
        "intensity": np.concatenate(intensity_rows),
        "rate": rng.choice(STIMULUS_RATES_HZ, size=len(patient)),
    }


def _wave_parameters(
    patients: dict[str, np.ndarray], rows: dict[str, np.ndarray], rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Latency (ms), amplitude (µV, 0 = absent) and width (ms) of waves I, III, V, each ``[N, 3]``."""
    p = rows["patient"]
    label = patients["label"][p]
    name = np.asarray(_CLASS_NAMES)[label]
    age = patients["age"][p][:, None]
    rate = (rows["rate"] - min(STIMULUS_RATES_HZ))[:, None]
    sl = rows["intensity"] - patients["threshold"][p]
    present = sl >= 0
    sl_pos = np.maximum(sl, 0.0)[:, None]
    snhl = (name == "SNHL")[:, None]
    neuro = name == "NEUROPATHY"

    tau = np.where(snhl, _TAU_SNHL_DB, _TAU_DB)
    latency = (
        _BASE_LATENCY_MS
        + patients["jitter"][p]
        + _DELAY_MAX_MS * np.exp(-sl_pos / tau)
        + np.where(snhl, _SNHL_EXTRA_MS, 0.0)
        + _RATE_SLOPE_MS * rate
        + _AGE_SLOPE_MS * np.maximum(age - 40.0, 0.0)
        + _INFANT_DELAY_MS * np.exp(-age / 1.0)
        + rng.normal(0.0, 0.03, (len(p), 3))
    )
    scale = (1.0 - 0.004 * rate) * (1.0 - 0.004 * np.maximum(age - 40.0, 0.0))
    a_max = patients["a_max"][p][:, None] * scale
    growth_v = 0.2 + 0.8 * (1.0 - np.exp(-sl_pos / 20.0))
    offsets = np.where(neuro[:, None], 0.0, np.array([15.0, 8.0]))  # dB above threshold where I, III appear
    growth_early = 1.0 - np.exp(-np.maximum(sl_pos - offsets, 0.0) / 20.0)
    growth_early = np.where(neuro[:, None], 0.2 + 0.8 * growth_early, growth_early)
    amplitude = np.concatenate(
        [a_max * np.array([0.5, 0.7]) * growth_early, np.clip(a_max * growth_v, *_AMPLITUDE_RANGE_UV)], axis=1
    )
    amplitude[:, 0] *= np.where(snhl[:, 0], 0.5, 1.0)
    width = _WIDTH_MS * (1.0 + 0.4 * np.exp(-sl_pos / 15.0))

    poor = neuro & ~patients["v_absent"][p]
    amplitude[neuro & patients["v_absent"][p], 2] = 0.0
    amplitude[poor, 2] *= patients["v_poor"][p][poor]
    width[poor, 2] *= 2.0
    latency[poor, 2] += 0.5
    amplitude[~present] = 0.0
    return latency, amplitude, width


def _waveforms(time_ms: np.ndarray, latency: np.ndarray, amplitude: np.ndarray, width: np.ndarray) -> np.ndarray:
    """Sum of the waves (positive Gaussians) and their troughs (negative Gaussians): ``[N, L]`` µV."""
    trough_delay = np.array([0.55, 0.55, 1.0])
    trough_width = np.array([0.25, 0.25, 0.45])
    trough_gain = np.array([0.45, 0.45, 0.55])
    centres = np.concatenate([latency, latency + trough_delay], axis=1)[:, :, None]
    widths = np.concatenate([width, np.broadcast_to(trough_width, width.shape)], axis=1)[:, :, None]
    gains = np.concatenate([amplitude, -trough_gain * amplitude], axis=1)[:, :, None]
    return (gains * np.exp(-0.5 * ((time_ms[None, None, :] - centres) / widths) ** 2)).sum(axis=1)


def _coloured_noise(n: int, length: int, sampling_rate_hz: float, rng: np.random.Generator) -> np.ndarray:
    """``[n, length]`` noise of unit standard deviation per row with a 1/f power spectrum in a smooth band."""
    padded = 4 * length
    freqs = np.fft.rfftfreq(padded, d=1.0 / sampling_rate_hz)
    low, high = _NOISE_BAND_HZ
    f = np.maximum(freqs, freqs[1])
    gain = f**-0.5 / np.sqrt(1.0 + (low / f) ** 4) / np.sqrt(1.0 + (f / high) ** 8)
    spectrum = np.fft.rfft(rng.standard_normal((n, padded)), axis=1) * gain
    noise = np.fft.irfft(spectrum, n=padded, axis=1)[:, length : 2 * length]
    noise -= noise.mean(axis=1, keepdims=True)
    return noise / noise.std(axis=1, keepdims=True)


def _measure_wave_v(clean: np.ndarray, time_ms: np.ndarray, latency_v: np.ndarray, present: np.ndarray) -> np.ndarray:
    """``[N, 2]`` (latency ms, amplitude µV) of the largest clean sample within ±0.5 ms of the generating wave-V
    latency, refined by a parabola through it and its neighbours; NaN where wave V is absent."""
    near = np.abs(time_ms[None, :] - latency_v[:, None]) <= 0.5
    index = np.argmax(np.where(near, clean, -np.inf), axis=1)
    index = np.clip(index, 1, clean.shape[1] - 2)
    rows = np.arange(len(clean))
    left, centre, right = clean[rows, index - 1], clean[rows, index], clean[rows, index + 1]
    curvature = left - 2.0 * centre + right
    safe = np.where(curvature < 0, curvature, -1.0)
    delta = np.where(curvature < 0, 0.5 * (left - right) / safe, 0.0)
    step_ms = time_ms[1] - time_ms[0]
    result = np.stack([time_ms[index] + delta * step_ms, centre - 0.25 * (left - right) * delta], axis=1)
    result[~present] = np.nan
    return result
