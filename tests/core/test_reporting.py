"""Tests for medtrain.reporting: training curves from a real CSVLogger metrics.csv and the run report."""

from __future__ import annotations

import json
import re
from pathlib import Path

import lightning as L
import matplotlib.pyplot as plt
import pandas as pd
import pytest
import torch
from lightning.pytorch.callbacks import LearningRateMonitor
from lightning.pytorch.loggers import CSVLogger
from matplotlib.figure import Figure
from torch.utils.data import DataLoader, TensorDataset

import medtrain.reporting.curves as curves
from medtrain.reporting import plot_style, plot_training_curves, read_metrics_csv, save_figure, write_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
EPOCHS = 3


class _TinyRegressor(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.layer(x), y)
        self.log("train_loss", loss, on_step=True, on_epoch=True)
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        self.log("val_loss", torch.nn.functional.mse_loss(self.layer(x), y))

    def configure_optimizers(self) -> dict:
        optimizer = torch.optim.AdamW(self.parameters(), lr=0.1)
        return {"optimizer": optimizer, "lr_scheduler": torch.optim.lr_scheduler.StepLR(optimizer, 1, 0.5)}


@pytest.fixture(scope="module")
def lightning_metrics_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A metrics.csv exactly as Lightning's CSVLogger writes it for 3 epochs of 4 steps."""
    root = tmp_path_factory.mktemp("run")
    torch.manual_seed(0)
    data = TensorDataset(torch.randn(16, 2), torch.randn(16, 1))
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=EPOCHS,
        log_every_n_steps=1,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        logger=CSVLogger(root, name="", version=""),
        callbacks=[LearningRateMonitor()],
    )
    trainer.fit(_TinyRegressor(), DataLoader(data, batch_size=4), DataLoader(data, batch_size=8))
    return root / "metrics.csv"


@pytest.fixture
def captured_figures(monkeypatch: pytest.MonkeyPatch) -> list[Figure]:
    """Figures handed to save_figure by the curves module (still saved, so the file is written too)."""
    figures: list[Figure] = []

    def capture(fig: Figure, path: Path) -> Path:
        figures.append(fig)
        return save_figure(fig, path)

    monkeypatch.setattr(curves, "save_figure", capture)
    return figures


def _panels(fig: Figure) -> dict[str, list[str]]:
    """Panel title -> texts drawn inside the panel."""
    return {ax.get_title(): [t.get_text() for t in ax.texts] for ax in fig.axes}


def _assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert data.startswith(PNG_MAGIC)
    assert len(data) > 10_000


def test_read_metrics_csv_returns_lightning_rows(lightning_metrics_csv: Path) -> None:
    frame = read_metrics_csv(lightning_metrics_csv)
    assert set(frame["epoch"].dropna().astype(int)) == set(range(EPOCHS))
    assert frame["train_loss_step"].notna().sum() == EPOCHS * 4
    assert frame["val_loss"].notna().sum() == EPOCHS
    assert {"train_loss_epoch", "lr-AdamW", "step"} <= set(frame.columns)


def test_plot_training_curves_draws_all_panels(
    lightning_metrics_csv: Path, tmp_path: Path, captured_figures: list[Figure]
) -> None:
    out = plot_training_curves(lightning_metrics_csv, tmp_path / "plots" / "curves.png")
    assert out == tmp_path / "plots" / "curves.png"
    _assert_png(out)
    (fig,) = captured_figures
    panels = _panels(fig)
    assert len(panels) == 4
    assert all("no data" not in texts for texts in panels.values())
    assert not plt.fignum_exists(fig.number)


def test_loss_panel_places_steps_at_fractional_epochs(
    lightning_metrics_csv: Path, tmp_path: Path, captured_figures: list[Figure]
) -> None:
    plot_training_curves(lightning_metrics_csv, tmp_path / "curves.png")
    loss_ax = next(ax for ax in captured_figures[0].axes if ax.get_title() == "loss")
    lines = {line.get_label(): line for line in loss_ax.lines}
    step_x = lines["train (step, EMA)"].get_xdata()
    assert list(step_x) == pytest.approx([e + k / 4 for e in range(EPOCHS) for k in (1, 2, 3, 4)])
    assert list(lines["val"].get_xdata()) == pytest.approx([1.0, 2.0, 3.0])


def test_monitor_panel_marks_best_epoch_by_mode(
    lightning_metrics_csv: Path, tmp_path: Path, captured_figures: list[Figure]
) -> None:
    frame = read_metrics_csv(lightning_metrics_csv)
    val = frame.dropna(subset=["val_loss"]).set_index("epoch")["val_loss"]
    for mode, expected in (("min", int(val.idxmin())), ("max", int(val.idxmax()))):
        plot_training_curves(lightning_metrics_csv, tmp_path / f"{mode}.png", mode=mode)
        ax = next(a for a in captured_figures[-1].axes if a.get_title() == "val_loss")
        (best,) = ax.collections
        assert best.get_offsets()[0][0] == expected


def test_learning_rate_panel_uses_log_scale(
    lightning_metrics_csv: Path, tmp_path: Path, captured_figures: list[Figure]
) -> None:
    plot_training_curves(lightning_metrics_csv, tmp_path / "curves.png")
    ax = next(a for a in captured_figures[0].axes if a.get_title() == "learning rate")
    assert ax.get_yscale() == "log"
    assert [line.get_label() for line in ax.lines] == ["lr-AdamW"]


def test_missing_csv_raises_value_error_naming_path(tmp_path: Path) -> None:
    missing = tmp_path / "logs" / "metrics.csv"
    with pytest.raises(ValueError, match=re.escape(str(missing))):
        plot_training_curves(missing, tmp_path / "curves.png")
    assert not (tmp_path / "curves.png").exists()


def test_empty_csv_raises_value_error_naming_path(tmp_path: Path) -> None:
    empty = tmp_path / "metrics.csv"
    empty.write_text("")
    with pytest.raises(ValueError, match=re.escape(str(empty))):
        read_metrics_csv(empty)
    empty.write_text("epoch,step,train_loss\n")
    with pytest.raises(ValueError, match=re.escape(str(empty))):
        read_metrics_csv(empty)


def test_train_only_csv_plots_with_no_data_panels(tmp_path: Path, captured_figures: list[Figure]) -> None:
    csv = tmp_path / "metrics.csv"
    steps = {"epoch": [0, 0, 1, 1], "step": [0, 1, 2, 3], "train_loss_step": [1.0, 0.8, 0.6, 0.5]}
    pd.DataFrame(steps).to_csv(csv, index=False)
    _assert_png(plot_training_curves(csv, tmp_path / "curves.png"))
    panels = _panels(captured_figures[0])
    assert panels["loss"] == []
    assert panels["val_loss"] == panels["learning rate"] == panels["val − train loss"] == ["no data"]


def test_plain_per_step_train_loss_feeds_gap_with_epoch_means(tmp_path: Path, captured_figures: list[Figure]) -> None:
    # self.log("train_loss", loss) in training_step: Lightning's default on_step=True, on_epoch=False.
    csv = tmp_path / "metrics.csv"
    pd.DataFrame(
        {
            "epoch": [0, 0, 0, 1, 1, 1],
            "step": [0, 1, 1, 2, 3, 3],
            "train_loss": [1.0, 0.6, None, 0.4, 0.2, None],
            "val_loss": [None, None, 0.9, None, None, 0.5],
        }
    ).to_csv(csv, index=False)
    plot_training_curves(csv, tmp_path / "curves.png")
    gap_ax = next(a for a in captured_figures[0].axes if a.get_title() == "val − train loss")
    (gap_line,) = gap_ax.lines[1:]  # after the zero line
    assert list(gap_line.get_ydata()) == pytest.approx([0.9 - 0.8, 0.5 - 0.3])


def test_invalid_mode_is_rejected(lightning_metrics_csv: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="mode"):
        plot_training_curves(lightning_metrics_csv, tmp_path / "curves.png", mode="best")


def test_save_figure_requires_png_and_closes_figure(tmp_path: Path) -> None:
    with plot_style():
        fig, ax = plt.subplots()
        ax.plot([0, 1], [1, 0])
    with pytest.raises(ValueError, match="PNG"):
        save_figure(fig, tmp_path / "plot.jpg")
    assert not plt.fignum_exists(fig.number)
    assert not (tmp_path / "plot.jpg").exists()


@pytest.fixture
def run_with_plot(tmp_path: Path) -> tuple[Path, Path]:
    run_dir = tmp_path / "run"
    with plot_style():
        fig, ax = plt.subplots()
        ax.plot([0, 1, 2], [3, 1, 2])
    return run_dir, save_figure(fig, run_dir / "plots" / "curves.png")


REPORT = {
    "recipe": "ecg_classification",
    "experiment": "<script>alert('x')</script>",
    "best_epoch": 7,
    "best_score": 0.123456789,
    "monitor": "val_loss",
    "duration_s": 1234.5678,
    "test": {"mse": 0.1, "baseline_mse": 0.5, "mae": 0.25, "per_class": {"a": 0.9, "baseline_a": 0.6}},
    "timings": {"fit_s": 12.3456789, "test_s": 1.0},
    "data": {"train": 100, "val": 20},
}


def test_report_json_round_trips_with_relative_plots(run_with_plot: tuple[Path, Path]) -> None:
    run_dir, plot = run_with_plot
    paths = write_report(run_dir, REPORT, [plot])
    assert paths == {kind: run_dir / f"report.{kind}" for kind in ("json", "md", "html")}
    loaded = json.loads(paths["json"].read_text())
    assert loaded == {**REPORT, "plots": ["plots/curves.png"]}
    assert "plots" not in REPORT


def test_report_md_pairs_metrics_with_baselines(run_with_plot: tuple[Path, Path]) -> None:
    run_dir, plot = run_with_plot
    md = write_report(run_dir, REPORT, [plot])["md"].read_text()
    assert md.startswith("# Run report: ecg_classification / ")
    assert "| mse | 0.1 | 0.5 |" in md
    assert "| mae | 0.25 | — |" in md
    assert "| per_class/a | 0.9 | 0.6 |" in md
    assert "baseline_" not in md
    assert "| best_score | 0.1235 |" in md
    assert "| duration_s | 1235 |" in md
    assert "| fit_s | 12.35 |" in md
    assert "](plots/curves.png)" in md
    assert str(run_dir) not in md


def test_report_html_is_self_contained_and_escaped(run_with_plot: tuple[Path, Path]) -> None:
    run_dir, plot = run_with_plot
    html_text = write_report(run_dir, REPORT, [plot])["html"].read_text()
    assert "data:image/png;base64,iVBORw0KGgo" in html_text  # base64 of the PNG magic bytes
    assert "<script>" not in html_text
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in html_text
    assert '<td>mse</td><td class="num">0.1</td><td class="num">0.5</td>' in html_text
    assert "<img" in html_text and 'src="plots/' not in html_text


def test_report_rejects_missing_plot_before_writing(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nope\.png"):
        write_report(tmp_path, REPORT, [tmp_path / "nope.png"])
    assert list(tmp_path.iterdir()) == []
