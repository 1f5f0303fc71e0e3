"""Training curves from the ``logs/metrics.csv`` that Lightning's ``CSVLogger`` writes in every run folder.

The CSV is sparse: each ``log_metrics`` call is one row holding ``epoch``, ``step`` and the metrics of that
call, NaN elsewhere. Per-step rows carry e.g. ``train_loss_step``; epoch-end rows carry ``train_loss_epoch``
(or ``train_loss``), ``val_loss`` and other ``val_*`` metrics; ``LearningRateMonitor`` rows carry ``lr-*``
columns and a step but no epoch.
"""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.ticker import MaxNLocator

from medtrain.reporting.style import plot_style, save_figure

_ROW_COLUMNS = ["epoch", "step", "value"]
_LR_NOT_RATES = ("-momentum", "-weight_decay")  # also logged by LearningRateMonitor under the same prefix


def read_metrics_csv(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read a CSVLogger ``metrics.csv`` as written, one row per logging call.

    The result always has numeric ``epoch`` and ``step`` columns (NaN where a row has none, all NaN if the
    file lacks the column). Raises ``ValueError`` naming the path if the file is missing or has no rows.
    """
    csv = Path(path)
    if not csv.is_file():
        raise ValueError(f"metrics CSV not found: {csv}")
    try:
        frame = pd.read_csv(csv)
    except pd.errors.EmptyDataError as exc:
        raise ValueError(f"metrics CSV is empty: {csv}") from exc
    if frame.empty:
        raise ValueError(f"metrics CSV has no rows: {csv}")
    for column in ("epoch", "step"):
        frame[column] = pd.to_numeric(frame[column], errors="coerce") if column in frame else np.nan
    return frame


def plot_training_curves(
    metrics_csv: str | os.PathLike[str],
    out_png: str | os.PathLike[str],
    *,
    monitor: str = "val_loss",
    mode: str = "min",
) -> Path:
    """Draw the four training panels of a run into one PNG at ``out_png`` and return its path.

    Panels: (1) train loss per step (light, with an EMA) and per epoch plus val loss, against fractional
    epochs completed; (2) ``monitor`` per epoch with the best epoch (``mode`` "min" or "max") marked;
    (3) every ``lr*`` column against step, log scale when all values are positive; (4) val_loss − train
    loss per epoch around a zero line. A panel whose columns are absent says "no data". Raises
    ``ValueError`` for a missing or empty CSV or an unknown ``mode``.
    """
    if mode not in ("min", "max"):
        raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
    frame = read_metrics_csv(metrics_csv)
    train_steps, train_epochs = _train_loss(frame)
    val = _rows(frame, "val_loss")
    with plot_style():
        fig, axes = plt.subplots(2, 2, figsize=(11, 7.5))
        bounds = _epoch_bounds(frame)
        _plot_loss(axes[0, 0], train_steps, train_epochs, val, bounds)
        _plot_monitor(axes[0, 1], _per_epoch(_rows(frame, monitor)), monitor, mode)
        _plot_learning_rates(axes[1, 0], frame)
        _plot_gap(axes[1, 1], _per_epoch(val) - _per_epoch(train_epochs))
        return save_figure(fig, out_png)


def _rows(frame: pd.DataFrame, column: str) -> pd.DataFrame:
    """The rows where ``column`` was logged with an epoch and a step, as columns epoch, step, value."""
    if column not in frame:
        return pd.DataFrame(columns=_ROW_COLUMNS, dtype=float)
    logged = frame[column].notna() & frame["epoch"].notna() & frame["step"].notna()
    return frame.loc[logged, ["epoch", "step", column]].set_axis(_ROW_COLUMNS, axis=1)


def _train_loss(frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(per-step rows, per-epoch rows) of the training loss.

    Per step: ``train_loss_step``, else ``train_loss`` when it was logged more than once in an epoch. Per
    epoch: ``train_loss_epoch``, else ``train_loss`` logged once per epoch, else the mean of the logged steps.
    """
    plain = _rows(frame, "train_loss")
    plain_per_step = not plain.empty and int(plain.groupby("epoch").size().max()) > 1
    steps = _rows(frame, "train_loss_step")
    if steps.empty and plain_per_step:
        steps = plain
    epochs = _rows(frame, "train_loss_epoch")
    if epochs.empty and not plain_per_step:
        epochs = plain
    if epochs.empty and not steps.empty:
        epochs = steps.groupby("epoch", as_index=False).agg(step=("step", "max"), value=("value", "mean"))
    return steps, epochs


def _per_epoch(rows: pd.DataFrame) -> pd.Series:
    """The last value logged in each epoch, indexed by integer epoch."""
    last = rows.groupby("epoch")["value"].last()
    return last.set_axis(last.index.astype(int))


def _epoch_bounds(frame: pd.DataFrame) -> pd.DataFrame:
    """Per epoch, the step before it starts (``start``) and its last step (``end``).

    An epoch starts where the previous one ended; the first epoch seen (or one after a gap, e.g. a resume)
    starts one step before its first logged step.
    """
    logged = frame.dropna(subset=["epoch", "step"]).groupby("epoch")["step"]
    bounds = pd.DataFrame({"first": logged.min(), "end": logged.max()})
    follows_previous = pd.Series(bounds.index, index=bounds.index).diff() == 1
    bounds["start"] = bounds["end"].shift(1).where(follows_previous, bounds["first"] - 1)
    return bounds


def _fractional_epoch(rows: pd.DataFrame, bounds: pd.DataFrame) -> np.ndarray:
    """Epochs completed at each row: ``epoch + (step - start) / (end - start)`` with the epoch's bounds."""
    epoch_bounds = bounds.loc[rows["epoch"]]
    start = epoch_bounds["start"].to_numpy()
    span = np.maximum(epoch_bounds["end"].to_numpy() - start, 1.0)
    return rows["epoch"].to_numpy() + (rows["step"].to_numpy() - start) / span


def _ema(values: pd.Series) -> pd.Series:
    """Exponential moving average whose span grows with the series (2 to 50 points)."""
    span = min(50, max(2, len(values) // 10))
    return values.ewm(span=span).mean()


def _epoch_axis(ax: Axes) -> None:
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _no_data(ax: Axes) -> None:
    ax.text(0.5, 0.5, "no data", transform=ax.transAxes, ha="center", va="center", color="0.4")


def _plot_loss(
    ax: Axes, train_steps: pd.DataFrame, train_epochs: pd.DataFrame, val: pd.DataFrame, bounds: pd.DataFrame
) -> None:
    ax.set_title("loss")
    if train_steps.empty and train_epochs.empty and val.empty:
        _no_data(ax)
        return
    if not train_steps.empty:
        x = _fractional_epoch(train_steps, bounds)
        line = ax.plot(x, train_steps["value"], alpha=0.25, linewidth=0.8)[0]
        ax.plot(x, _ema(train_steps["value"]), color=line.get_color(), label="train (step, EMA)")
    for rows, label in ((train_epochs, "train (epoch)"), (val, "val")):
        if not rows.empty:
            ax.plot(_fractional_epoch(rows, bounds), rows["value"], marker="o", label=label)
    ax.set_xlabel("epochs completed")
    ax.legend()


def _plot_monitor(ax: Axes, values: pd.Series, monitor: str, mode: str) -> None:
    ax.set_title(monitor)
    if values.empty:
        _no_data(ax)
        return
    best = int(values.idxmin() if mode == "min" else values.idxmax())
    ax.plot(values.index, values.to_numpy(), marker="o")
    label = f"best ({mode}): epoch {best} = {values[best]:.4g}"
    ax.scatter([best], [values[best]], s=140, marker="*", color="#D55E00", zorder=3, label=label)
    _epoch_axis(ax)
    ax.legend()


def _plot_learning_rates(ax: Axes, frame: pd.DataFrame) -> None:
    ax.set_title("learning rate")
    columns = [c for c in frame.columns if c.startswith("lr") and not c.endswith(_LR_NOT_RATES)]
    series = [frame.loc[frame[c].notna() & frame["step"].notna(), ["step", c]] for c in columns]
    series = [s for s in series if not s.empty]
    if not series:
        _no_data(ax)
        return
    for rates in series:
        ax.plot(rates["step"], rates.iloc[:, 1], drawstyle="steps-post", label=rates.columns[1])
    if all((rates.iloc[:, 1] > 0).all() for rates in series):
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.legend()


def _plot_gap(ax: Axes, gap: pd.Series) -> None:
    ax.set_title("val − train loss")
    gap = gap.dropna()
    if gap.empty:
        _no_data(ax)
        return
    ax.axhline(0.0, color="0.5", linewidth=1.0)
    ax.plot(gap.index, gap.to_numpy(), marker="o")
    _epoch_axis(ax)
