"""Plots of abr-diffusion, in medtrain's one style (:mod:`medtrain.reporting.style`).

- ``confusion_matrix.png``: counts per (true, predicted) class, coloured by the row-normalised fraction (recall);
- ``threshold_scatter.png``: predicted against true hearing threshold, identity line and the ±10 dB band;
- ``peak_latency_scatter.png``: predicted against annotated wave-V latency with the model's ±1σ, coloured by the
  predicted probability that wave V is present;
- ``generated_waveforms.png``: generated waveforms (and the recorded ones with the same conditions, when given), one
  panel per condition, with the wave V that :func:`~medtrain.recipes.abr_diffusion.metrics.detect_wave_v` finds on
  each trace marked.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes

from medtrain.recipes.abr_diffusion.metrics import detect_wave_v
from medtrain.reporting.style import PALETTE, plot_style, save_figure

MAX_PANELS = 12


def plot_confusion_matrix(matrix: np.ndarray, class_names: Sequence[str], out_png: Path) -> Path:
    """``matrix [K, K]`` (rows = truth, columns = prediction) as counts on a colour scale of row fractions."""
    counts = np.asarray(matrix, dtype=np.int64)
    totals = counts.sum(axis=1, keepdims=True)
    fractions = np.divide(counts, totals, out=np.zeros(counts.shape), where=totals > 0)
    with plot_style():
        fig, ax = plt.subplots(figsize=(6.5, 5.5))
        image = ax.imshow(fractions, cmap="Blues", vmin=0.0, vmax=1.0)
        ax.grid(False)
        for (row, column), count in np.ndenumerate(counts):
            colour = "white" if fractions[row, column] > 0.6 else "black"
            ax.text(column, row, str(count), ha="center", va="center", color=colour)
        ticks = range(len(class_names))
        ax.set_xticks(ticks, class_names, rotation=30, ha="right")
        ax.set_yticks(ticks, class_names)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(f"hearing-loss class ({int(counts.sum())} recordings; colour = fraction of the true class)")
        fig.colorbar(image, ax=ax, fraction=0.046)
        return save_figure(fig, out_png)


def plot_threshold_scatter(true_db: np.ndarray, pred_db: np.ndarray, out_png: Path) -> Path:
    """Predicted against true threshold (dB) with the identity line, the ±10 dB band and the MAE in the title."""
    truth, pred = np.asarray(true_db, dtype=np.float64), np.asarray(pred_db, dtype=np.float64)
    with plot_style():
        fig, ax = plt.subplots(figsize=(6, 5.5))
        ax.scatter(truth, pred, s=10, alpha=0.5)
        low, high = float(min(truth.min(), pred.min())) - 5, float(max(truth.max(), pred.max())) + 5
        line = np.array([low, high])
        ax.plot(line, line, color="black", linewidth=1, label="identity")
        ax.fill_between(line, line - 10, line + 10, color=PALETTE[1], alpha=0.15, label="±10 dB")
        ax.set_xlabel("true threshold (dB nHL)")
        ax.set_ylabel("predicted threshold (dB nHL)")
        ax.set_title(f"threshold: MAE {np.abs(pred - truth).mean():.1f} dB ({len(truth)} recordings)")
        ax.legend()
        return save_figure(fig, out_png)


def plot_latency_scatter(
    true_latency_ms: np.ndarray,
    pred_latency_ms: np.ndarray,
    pred_std_ms: np.ndarray,
    exists_probability: np.ndarray,
    out_png: Path,
) -> Path:
    """Predicted (±1 predicted σ) against annotated wave-V latency on the rows with an annotated wave V, coloured by
    the predicted existence probability; MAE in the title."""
    truth = np.asarray(true_latency_ms, dtype=np.float64)
    keep = np.isfinite(truth)
    truth, pred = truth[keep], np.asarray(pred_latency_ms, dtype=np.float64)[keep]
    with plot_style():
        fig, ax = plt.subplots(figsize=(6.5, 5.5))
        if keep.any():
            ax.errorbar(truth, pred, yerr=np.asarray(pred_std_ms)[keep], fmt="none", ecolor="0.7", linewidth=0.8)
            points = ax.scatter(
                truth, pred, c=np.asarray(exists_probability)[keep], cmap="viridis", vmin=0, vmax=1, s=12
            )
            fig.colorbar(points, ax=ax, fraction=0.046, label="P(wave V present)")
            line = np.array([min(truth.min(), pred.min()), max(truth.max(), pred.max())])
            ax.plot(line, line, color="black", linewidth=1)
            ax.set_title(f"wave-V latency: MAE {np.abs(pred - truth).mean():.3f} ms ({keep.sum()} annotated peaks)")
        else:
            ax.text(0.5, 0.5, "no annotated wave V", ha="center", va="center", transform=ax.transAxes)
        ax.set_xlabel("annotated latency (ms)")
        ax.set_ylabel("predicted latency (ms)")
        return save_figure(fig, out_png)


def _trace(ax: Axes, time_ms: np.ndarray, signal: np.ndarray, rate: float, colour: str, label: str) -> None:
    """One waveform with its detected wave V marked (triangle and latency)."""
    ax.plot(time_ms, signal, color=colour, linewidth=1.2, label=label)
    latency, amplitude = detect_wave_v(signal[None, :], rate)
    if np.isfinite(latency[0]):
        ax.plot(latency[0], amplitude[0], marker="v", color=colour, markersize=8, linestyle="none")
        ax.annotate(
            f"V {latency[0]:.2f} ms",
            (latency[0], amplitude[0]),
            textcoords="offset points",
            xytext=(4, 6),
            color=colour,
            fontsize=8,
        )


def plot_waveforms(
    generated_uv: np.ndarray,
    static: np.ndarray,
    sampling_rate_hz: float,
    out_png: Path,
    *,
    recorded: np.ndarray | None = None,
    title: str = "generated waveforms",
) -> Path:
    """Up to :data:`MAX_PANELS` panels: generated waveform ``generated_uv[i]`` (µV), the recorded ``recorded[i]``
    when given, detected wave-V peaks marked, titled with the condition ``static[i]`` (age, intensity, rate, FMP)."""
    generated = np.asarray(generated_uv, dtype=np.float64)
    count = min(len(generated), MAX_PANELS)
    columns = min(3, max(count, 1))
    rows = max(1, -(-count // columns))
    time_ms = np.arange(generated.shape[1]) / sampling_rate_hz * 1000.0
    with plot_style():
        fig, axes = plt.subplots(rows, columns, figsize=(4.6 * columns, 3.0 * rows), squeeze=False, sharex=True)
        for index, ax in enumerate(axes.flat):
            if index >= count:
                ax.axis("off")
                continue
            if recorded is not None:
                _trace(ax, time_ms, np.asarray(recorded[index], dtype=np.float64), sampling_rate_hz, "0.45", "recorded")
            _trace(ax, time_ms, generated[index], sampling_rate_hz, PALETTE[0], "generated")
            age, intensity, rate, fmp = (float(v) for v in static[index])
            years = f"{age:.1f}" if age < 10 else f"{age:.0f}"
            ax.set_title(f"age {years} y, {intensity:.0f} dB, {rate:.1f} Hz, FMP {fmp:.1f}", fontsize=9)
            ax.set_xlabel("time after click (ms)")
            ax.set_ylabel("µV")
        axes.flat[0].legend(loc="upper right")
        fig.suptitle(f"{title} (▼ wave V detected)")
        return save_figure(fig, out_png)
