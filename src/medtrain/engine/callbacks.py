"""medtrain's own Lightning callbacks, only for what Lightning lacks.

- :class:`RngState`: RNG states in the checkpoint, restored when training restarts, so a resume at an epoch
  boundary continues bit-identically (Lightning stores no RNG state).
- :class:`SignalStop` + :func:`graceful_signals`: SIGINT/SIGTERM stop at the next batch boundary instead of
  tearing a step in half; a second SIGINT interrupts at once.
- :class:`InterruptCheckpoint`: ``interrupted.ckpt`` plus ``recovery.json`` with the exact resume command.
  (Lightning's ``OnExceptionCheckpoint`` is not used: its presence makes ``fit(ckpt_path=None)`` silently
  resume from the last checkpoint.)
- :class:`Throughput`, :class:`ThroughputProgressBar`, :class:`EpochSummary`: samples/s on the rich bar, or one
  log line per epoch in quiet mode.
- :class:`PeriodicPlots`: training curves and recipe plots every N epochs.
"""

from __future__ import annotations

import contextlib
import logging
import random
import signal
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback, RichProgressBar

from medtrain.errors import TrainingInterrupted
from medtrain.io.atomic import atomic_write_json

log = logging.getLogger("medtrain")


class _SignalFlag:
    signum: int | None = None


_FLAG = _SignalFlag()


@contextlib.contextmanager
def graceful_signals() -> Iterator[None]:
    """Within the block, SIGINT/SIGTERM only record the signal (checked by :class:`SignalStop`).

    A second SIGINT raises KeyboardInterrupt immediately. Previous handlers are restored on exit.
    """
    _FLAG.signum = None

    def record(signum: int, _frame: Any) -> None:
        if signum == signal.SIGINT and _FLAG.signum == signal.SIGINT:
            raise KeyboardInterrupt
        _FLAG.signum = signum
        log.warning("received %s: stopping at the end of this batch", signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, record) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        _FLAG.signum = None


class SignalStop(Callback):
    """Raises :class:`TrainingInterrupted` at the first batch boundary after a recorded signal."""

    def _check(self) -> None:
        if _FLAG.signum is not None:
            raise TrainingInterrupted(_FLAG.signum)

    def on_train_batch_end(self, *args: Any, **kwargs: Any) -> None:
        self._check()

    def on_validation_batch_end(self, *args: Any, **kwargs: Any) -> None:
        self._check()

    def on_train_epoch_start(self, *args: Any, **kwargs: Any) -> None:
        self._check()


class RngState(Callback):
    """Saves python/numpy/torch(/cuda) RNG states with each checkpoint and restores them at ``on_train_start``.

    Restoring at ``on_train_start`` (not at load time) skips whatever ran between loading and the first
    training batch, so the resumed run draws exactly the numbers the uninterrupted run drew.
    """

    def __init__(self) -> None:
        self._pending: dict[str, Any] | None = None

    def state_dict(self) -> dict[str, Any]:
        np_state = np.random.get_state()
        state: dict[str, Any] = {
            "python": random.getstate(),
            "numpy": {
                "keys": torch.from_numpy(np_state[1].astype(np.int64)),
                "pos": int(np_state[2]),
                "has_gauss": int(np_state[3]),
                "cached_gaussian": float(np_state[4]),
            },
            "torch": torch.get_rng_state(),
        }
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._pending = state_dict

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._pending is None:
            return
        state, self._pending = self._pending, None
        random.setstate(_as_python_state(state["python"]))
        numpy_state = state["numpy"]
        np.random.set_state(
            (
                "MT19937",
                numpy_state["keys"].numpy().astype(np.uint32),
                numpy_state["pos"],
                numpy_state["has_gauss"],
                numpy_state["cached_gaussian"],
            )
        )
        torch.set_rng_state(state["torch"])
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])


def _as_python_state(value: Any) -> Any:
    """``random.setstate`` needs tuples; a checkpoint round trip may turn them into lists."""
    if isinstance(value, list):
        return tuple(_as_python_state(item) for item in value)
    if isinstance(value, tuple):
        return tuple(_as_python_state(item) for item in value)
    return value


class InterruptCheckpoint(Callback):
    """On any exception during fit: ``interrupted.ckpt`` (atomic) and ``recovery.json``.

    ``recovery.json`` = {status, reason, exit_code, epoch, global_step, checkpoint, resume_command, time}.
    ``status`` is ``interrupted`` for SIGINT/SIGTERM and ``failed`` otherwise.
    """

    def __init__(self, run_dir: Path, resume_command: list[str]) -> None:
        self.ckpt_path = run_dir / "checkpoints" / "interrupted.ckpt"
        self.run_dir = run_dir
        self.resume_command = resume_command
        self.saved: Path | None = None

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        from lightning.pytorch.utilities.exceptions import SIGTERMException

        if isinstance(exception, SIGTERMException):
            exception = TrainingInterrupted(signal.SIGTERM)
        checkpoint: str | None = None
        try:
            trainer.save_checkpoint(self.ckpt_path)
            self.saved = self.ckpt_path
            checkpoint = str(self.saved)
        except Exception as save_error:  # the run is already failing; report, don't mask the cause
            log.error("could not save %s: %s", self.ckpt_path, save_error)
        if not trainer.is_global_zero:
            return
        interrupted = isinstance(exception, TrainingInterrupted | KeyboardInterrupt)
        if isinstance(exception, TrainingInterrupted):
            exit_code = exception.exit_code
        else:
            exit_code = 130 if isinstance(exception, KeyboardInterrupt) else 1
        command = [*self.resume_command, "--resume", checkpoint] if checkpoint else None
        atomic_write_json(
            self.run_dir / "recovery.json",
            {
                "status": "interrupted" if interrupted else "failed",
                "reason": f"{type(exception).__name__}: {exception}",
                "exit_code": exit_code,
                "epoch": trainer.current_epoch,
                "global_step": trainer.global_step,
                "checkpoint": checkpoint,
                "resume_command": " ".join(command) if command else None,
                "time": datetime.now(UTC).isoformat(timespec="seconds"),
            },
        )


class Throughput(Callback):
    """Training samples per second: over the whole fit and over the most recent ``window`` batches."""

    def __init__(self, window: int = 20) -> None:
        self.window = window
        self.samples = 0
        self.seconds = 0.0
        self.recent: list[tuple[int, float]] = []
        self._start: float | None = None

    def on_train_batch_start(self, *args: Any, **kwargs: Any) -> None:
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: Any, outputs: Any, batch: Any, *_: Any) -> None:
        if self._start is None:
            return
        elapsed = time.perf_counter() - self._start
        count = pl_module.batch_size_of(batch) if hasattr(pl_module, "batch_size_of") else 1
        self.samples += count
        self.seconds += elapsed
        self.recent.append((count, elapsed))
        del self.recent[: -self.window]

    @property
    def samples_per_second(self) -> float:
        return self.samples / self.seconds if self.seconds > 0 else 0.0

    @property
    def recent_samples_per_second(self) -> float:
        seconds = sum(elapsed for _, elapsed in self.recent)
        return sum(count for count, _ in self.recent) / seconds if seconds > 0 else 0.0


class ThroughputProgressBar(RichProgressBar):
    """Lightning's rich progress bar with the recent training throughput (samples/s) beside the metrics."""

    def __init__(self, throughput: Throughput) -> None:
        super().__init__(leave=True)
        self.throughput = throughput

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        metrics = super().get_metrics(trainer, pl_module)
        metrics.pop("v_num", None)
        if self.throughput.recent:
            metrics["samples/s"] = f"{self.throughput.recent_samples_per_second:.3g}"
        return metrics


class EpochSummary(Callback):
    """Quiet mode: one INFO line per epoch with the current LR, the epoch metrics and throughput.

    The LR is read from the optimizer at the end of the epoch, not from the logged ``lr`` metric, which
    :class:`~lightning.pytorch.callbacks.LearningRateMonitor` only refreshes every ``log_every_n_steps`` steps and
    so lags behind on epochs shorter than that.
    """

    def __init__(self, throughput: Throughput) -> None:
        self.throughput = throughput

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero or trainer.sanity_checking:
            return
        logged = trainer.callback_metrics
        metrics = {
            name: float(value)
            for name, value in logged.items()
            if not name.endswith("_step")
            and not (name.endswith("_epoch") and name.removesuffix("_epoch") in logged)
            and getattr(value, "numel", lambda: 1)() == 1
            and not (name == "lr" or name.startswith("lr-"))
        }
        if trainer.optimizers:
            metrics["lr"] = float(trainer.optimizers[0].param_groups[0]["lr"])
        shown = " · ".join(f"{name} {value:.4g}" for name, value in sorted(metrics.items()))
        log.info(
            "epoch %d/%d · %s · %.3g samples/s",
            trainer.current_epoch + 1,
            trainer.max_epochs,
            shown,
            self.throughput.recent_samples_per_second,
        )


class PeriodicPlots(Callback):
    """Every ``every_n_epochs`` epochs: training curves and the task's own plots under ``run_dir/plots``."""

    def __init__(self, run_dir: Path, every_n_epochs: int, monitor: str, mode: str) -> None:
        self.run_dir = run_dir
        self.every_n_epochs = every_n_epochs
        self.monitor = monitor
        self.mode = mode

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if (trainer.current_epoch + 1) % self.every_n_epochs or not trainer.is_global_zero:
            return
        from medtrain.reporting.curves import plot_training_curves

        for logger in trainer.loggers:
            logger.save()
        metrics_csv = self.run_dir / "logs" / "metrics.csv"
        if metrics_csv.is_file():
            plot_training_curves(
                metrics_csv,
                self.run_dir / "plots" / "training_curves.png",
                monitor=self.monitor,
                mode=self.mode,
            )
        if hasattr(pl_module, "report_plots"):
            pl_module.report_plots(self.run_dir, trainer.datamodule)
