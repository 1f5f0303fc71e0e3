"""``logs/metrics.csv`` that survives a resume.

Lightning's CSV writer deletes ``metrics.csv`` when its folder is not empty, so a run resumed in its own run
directory would lose the epochs logged before the interruption (and its training curves with them). Our own
writer keeps the file and continues it: it starts from the existing header's keys, appends new rows, and when new
keys appear rewrites the file once with the widened header (Lightning's own rewrite path), old rows kept.
"""

from __future__ import annotations

import csv

from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter


class ContinuingExperimentWriter(ExperimentWriter):
    """An ``ExperimentWriter`` that continues an existing ``metrics.csv`` instead of deleting it."""

    def _check_log_dir_exists(self) -> None:
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as handle:
                self.metrics_keys = sorted(next(csv.reader(handle), []))


class ResumableCSVLogger(CSVLogger):
    """Lightning's ``CSVLogger`` writing through :class:`ContinuingExperimentWriter`."""

    @property
    @rank_zero_experiment
    def experiment(self) -> ContinuingExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = ContinuingExperimentWriter(log_dir=self.log_dir)
        return self._experiment
