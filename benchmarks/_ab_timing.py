"""Shared pieces of the A/B benchmark scripts: the engine arm of a training comparison and the ratio table.

Not a benchmark itself (``make bench`` skips files starting with ``_``); scripts import it as ``_ab_timing``,
which works because ``python benchmarks/<name>.py`` puts ``benchmarks/`` on ``sys.path``.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

import lightning as L

from medtrain.config.schema import RunConfig
from medtrain.engine.callbacks import graceful_signals
from medtrain.engine.rundir import create_run_dir
from medtrain.engine.trainer import build_trainer


def engine_fit_rate(cfg: RunConfig, task: L.LightningModule, datamodule: Any) -> float:
    """Training samples/s of ``trainer.fit`` with the engine's default callbacks and loggers (a new run directory
    under ``cfg.output_dir``): ``max_epochs · len(train dataset) / seconds of fit``."""
    paths = create_run_dir(Path(cfg.output_dir), cfg.experiment)
    paths.make()
    trainer, _ = build_trainer(cfg, paths, resume_command=[])
    samples = cfg.trainer.max_epochs * len(datamodule.dataset("train"))
    started = time.perf_counter()
    with graceful_signals():
        trainer.fit(task, datamodule=datamodule)
    return samples / (time.perf_counter() - started)


def print_ratio_table(name: str, rounds: list[dict[str, float]], a: str, b: str, unit: str = "/s") -> None:
    """Per round ``a``, ``b`` and ``a / b``; then both medians and the median of the per-round ratios."""
    print(f"\n{name}")
    for index, values in enumerate(rounds):
        print(
            f"  round {index}: {a} {values[a]:9.1f} {unit}   {b} {values[b]:9.1f} {unit}   "
            f"ratio {values[a] / values[b]:6.2f}"
        )
    ratio = statistics.median(values[a] / values[b] for values in rounds)
    medians = {key: statistics.median(values[key] for values in rounds) for key in (a, b)}
    print(f"  median {a} {medians[a]:.1f} {unit}, {b} {medians[b]:.1f} {unit}")
    print(f"  ratio {a}/{b} (median of rounds): {ratio:.2f}")
