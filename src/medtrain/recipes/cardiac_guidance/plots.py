"""Plots of cardiac-guidance, in medtrain's one style.

- ``dataset_statistics.png`` (at the start of a run): samples per split (pie), samples per patient coloured by
  split (bars), and one sample frame per split;
- ``training_summary.png`` (2×3): total, main-task and auxiliary/latent losses (train and val per epoch), the
  learning rate, per-DOF validation MAE, and the final metrics as text;
- ``scatter_<split>.png``: predicted against true action per DOF (2×3) with the identity line.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.axes import Axes

from medtrain.recipes.cardiac_guidance.records import DOF_NAMES, DOF_UNITS
from medtrain.reporting.curves import read_metrics_csv
from medtrain.reporting.style import PALETTE, plot_style, save_figure

SPLITS = ("train", "val", "test")
SPLIT_COLOURS = dict(zip(SPLITS, PALETTE, strict=False))


def plot_dataset_statistics(
    split: Mapping[str, Sequence[str]],
    samples_per_patient: Mapping[str, int],
    examples: Mapping[str, np.ndarray],
    out_png: Path,
) -> Path:
    """Split pie (samples per split), per-patient sample bars coloured by split, and one ``uint8 [H, W]`` example
    frame per split (``examples`` maps split → frame; missing splits show "no data")."""
    split_of = {patient: name for name, members in split.items() for patient in members}
    totals = {name: sum(samples_per_patient.get(p, 0) for p in split.get(name, ())) for name in SPLITS}
    with plot_style():
        fig = plt.figure(figsize=(13, 7))
        grid = fig.add_gridspec(2, 3)
        pie = fig.add_subplot(grid[0, 0])
        shown = [name for name in SPLITS if totals[name] > 0]
        pie.pie(
            [totals[name] for name in shown],
            labels=[f"{name}\n{totals[name]} samples\n{len(split.get(name, ()))} patients" for name in shown],
            colors=[SPLIT_COLOURS[name] for name in shown],
            autopct="%1.0f%%",
        )
        pie.set_title("split by patient")
        bars = fig.add_subplot(grid[0, 1:])
        patients = sorted(samples_per_patient, key=lambda p: (SPLITS.index(split_of.get(p, "train")), p))
        bars.bar(
            range(len(patients)),
            [samples_per_patient[p] for p in patients],
            color=[SPLIT_COLOURS[split_of.get(p, "train")] for p in patients],
        )
        bars.set_xticks(range(len(patients)), patients, rotation=45, ha="right")
        bars.set_ylabel("transitions")
        bars.set_title("samples per patient (colour = split; no patient is in two splits)")
        for column, name in enumerate(SPLITS):
            ax = fig.add_subplot(grid[1, column])
            ax.grid(False)
            ax.set_xticks([])
            ax.set_yticks([])
            if name in examples:
                ax.imshow(examples[name], cmap="gray", vmin=0, vmax=255)
                ax.set_title(f"{name} example (ft1)")
            else:
                ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
                ax.set_title(name)
        return save_figure(fig, out_png)


def _epoch_values(frame: pd.DataFrame, column: str) -> pd.Series:
    """The last value of ``column`` logged in each epoch (empty when never logged)."""
    if column not in frame:
        return pd.Series(dtype=float)
    rows = frame.loc[frame[column].notna() & frame["epoch"].notna(), ["epoch", column]]
    values = rows.groupby("epoch")[column].last()
    return values.set_axis(values.index.astype(int))


def _train_val(ax: Axes, frame: pd.DataFrame, train: str, val: str, title: str) -> None:
    for column, label in ((train, "train"), (val, "val")):
        values = _epoch_values(frame, column)
        if not values.empty:
            ax.plot(values.index, values.to_numpy(), marker="o", markersize=3, label=label)
    ax.set_title(title)
    ax.set_xlabel("epoch")
    if ax.lines:
        ax.legend()
    else:
        ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)


def plot_training_summary(metrics_csv: Path, out_png: Path, final_metrics: Mapping[str, float] | None = None) -> Path:
    """The 2×3 training summary of a run from its ``logs/metrics.csv`` (panels in the module docstring).

    ``final_metrics`` (e.g. the test metrics) go into the text panel; without them the last logged validation
    values are shown.
    """
    frame = read_metrics_csv(metrics_csv)
    with plot_style():
        fig, axes = plt.subplots(2, 3, figsize=(15, 8))
        _train_val(axes[0, 0], frame, "train_loss_epoch", "val_loss", "total loss")
        _train_val(axes[0, 1], frame, "train_main_task_loss_epoch", "val_main_task_loss", "main task loss (at1)")
        _train_val(axes[0, 2], frame, "train_aux_loss_epoch", "val_aux_loss", "auxiliary loss (at2)")
        latent = _epoch_values(frame, "val_latent_loss")
        if not latent.empty and float(latent.abs().max()) > 0:
            axes[0, 2].plot(latent.index, latent.to_numpy(), linestyle="--", label="val latent")
            axes[0, 2].legend()
        lr_columns = [
            column
            for column in frame.columns
            if column.startswith("lr") and not column.endswith(("-momentum", "-weight_decay"))
        ]
        for column in lr_columns:
            rows = frame.loc[frame[column].notna(), ["step", column]]
            axes[1, 0].plot(rows["step"], rows[column], label=column)
        axes[1, 0].set_title("learning rate")
        axes[1, 0].set_xlabel("step")
        for name, unit in zip(DOF_NAMES, DOF_UNITS, strict=True):
            values = _epoch_values(frame, f"val_mae_{name}")
            if not values.empty:
                axes[1, 1].plot(values.index, values.to_numpy(), label=f"{name} ({unit})")
        axes[1, 1].set_title("validation MAE per DOF")
        axes[1, 1].set_xlabel("epoch")
        if axes[1, 1].lines:
            axes[1, 1].legend(ncol=2)
        text = axes[1, 2]
        text.axis("off")
        shown = dict(final_metrics or {})
        if not shown:
            for column in ("val_loss", "val_main_task_loss", *(f"val_mae_{name}" for name in DOF_NAMES)):
                values = _epoch_values(frame, column)
                if not values.empty:
                    shown[column] = float(values.iloc[-1])
        lines = [f"{key}: {value:.4g}" for key, value in sorted(shown.items())][:20]
        text.text(0, 1, "final metrics\n\n" + "\n".join(lines), va="top", family="monospace", fontsize=9)
        return save_figure(fig, out_png)


def plot_prediction_scatter(prediction: np.ndarray, truth: np.ndarray, out_png: Path, *, split: str) -> Path:
    """Predicted against true action ``[N, 6]`` per DOF, with the identity line and the MAE in each title."""
    with plot_style():
        fig, axes = plt.subplots(2, 3, figsize=(13, 8))
        for index, (ax, name, unit) in enumerate(zip(axes.flat, DOF_NAMES, DOF_UNITS, strict=True)):
            ax.scatter(truth[:, index], prediction[:, index], s=8, alpha=0.6)
            low = float(min(truth[:, index].min(), prediction[:, index].min()))
            high = float(max(truth[:, index].max(), prediction[:, index].max()))
            ax.plot([low, high], [low, high], color="black", linewidth=1)
            mae = float(np.abs(prediction[:, index] - truth[:, index]).mean())
            ax.set_title(f"{name}: MAE {mae:.2f} {unit}")
            ax.set_xlabel(f"true ({unit})")
            ax.set_ylabel(f"predicted ({unit})")
        fig.suptitle(f"guidance action, {split} split ({len(truth)} transitions)")
        return save_figure(fig, out_png)
