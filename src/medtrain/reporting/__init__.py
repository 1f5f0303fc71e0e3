"""Plots in one style and the run report (report.json / report.md / report.html)."""

from medtrain.reporting.curves import plot_training_curves, read_metrics_csv
from medtrain.reporting.report import write_report
from medtrain.reporting.style import plot_style, save_figure

__all__ = ["plot_style", "plot_training_curves", "read_metrics_csv", "save_figure", "write_report"]
