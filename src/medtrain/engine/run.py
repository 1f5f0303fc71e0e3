"""Whole-run flows shared by the CLI and the Python API: fit (+ test, export, report), evaluate, export.

Each flow takes a recipe and a validated config and returns plain results; exceptions are medtrain's own
(:class:`~medtrain.errors.UserError` → exit 2, :class:`TrainingInterrupted` → 130/143,
:class:`TrainingFailed` → 1).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.utilities.exceptions import SIGTERMException

from medtrain.config import ConfigError, config_hash
from medtrain.config.schema import RunConfig
from medtrain.engine.callbacks import graceful_signals
from medtrain.engine.checkpoint_io import (
    FINAL,
    LAST,
    check_compatible,
    checkpoint_meta,
    find_resume_checkpoint,
    read_checkpoint,
)
from medtrain.engine.model_dir import write_model_dir
from medtrain.engine.rundir import RunPaths, create_run_dir, run_dir_of, write_config, write_environment
from medtrain.engine.task import TaskModule
from medtrain.engine.trainer import build_trainer, configure_threads, quiet_lightning, resolve_accelerator
from medtrain.errors import CheckpointError, TrainingFailed, TrainingInterrupted, UserError
from medtrain.io.atomic import atomic_write_json
from medtrain.registry import Recipe
from medtrain.reporting import plot_training_curves, write_report

log = logging.getLogger("medtrain")

RUN_DIR_ENV = "MEDTRAIN_RUN_DIR"


@dataclass(frozen=True)
class RunResult:
    """What ``train`` produced: the run directory, checkpoints, test metrics (with ``baseline_*``), report."""

    run_dir: Path
    best_checkpoint: Path | None
    final_checkpoint: Path | None
    test_metrics: dict[str, float]
    report: dict[str, Any] = field(default_factory=dict)

    @property
    def model_dir(self) -> Path:
        return self.run_dir / "model"


def resolve_resume(resume: str | Path | None, cfg: RunConfig) -> Path | None:
    """``auto`` → newest usable checkpoint of the experiment (None if there is none); a path → that file."""
    if resume is None:
        return None
    if str(resume) == "auto":
        found = find_resume_checkpoint(Path(cfg.output_dir), cfg.experiment, cfg.recipe)
        if found is None:
            log.info("--resume auto: no checkpoint of experiment '%s' yet, starting fresh", cfg.experiment)
        else:
            log.info("--resume auto: resuming from %s", found)
        return found
    path = Path(resume)
    if not path.is_file():
        raise CheckpointError(f"--resume: checkpoint not found: {path}")
    return path


def _seed_and_threads(cfg: RunConfig) -> None:
    configure_threads(cfg)
    L.seed_everything(cfg.seed, workers=True, verbose=False)


def strip_split_prefix(metrics: dict[str, Any], prefix: str = "test_") -> dict[str, float]:
    """``{"test_mse": t}`` → ``{"mse": float(t)}``; keys without the prefix are dropped."""
    return {key.removeprefix(prefix): float(value) for key, value in metrics.items() if key.startswith(prefix)}


def _best_epoch(metrics_csv: Path, monitor: str, mode: str) -> tuple[int | None, float | None]:
    from medtrain.reporting.curves import read_metrics_csv

    if not metrics_csv.is_file():
        return None, None
    frame = read_metrics_csv(metrics_csv)
    if monitor not in frame.columns:
        return None, None
    rows = frame.dropna(subset=[monitor])
    if rows.empty:
        return None, None
    index = rows[monitor].idxmin() if mode == "min" else rows[monitor].idxmax()
    return int(rows.loc[index, "epoch"]), float(rows.loc[index, monitor])


def fit(recipe: Recipe, cfg: RunConfig, *, resume: str | Path | None = None, debug: bool = False) -> RunResult:
    """Train ``cfg`` end to end: run dir, fit, final.ckpt, test with the best weights, model/, plots, report.

    Resuming from a checkpoint inside a run directory continues in that directory; bad or foreign
    checkpoints are rejected before anything is written.
    """
    quiet_lightning(debug)
    resume_path = resolve_resume(resume, cfg)
    if resume_path is not None:
        check_compatible(checkpoint_meta(read_checkpoint(resume_path)), cfg, path=resume_path)
    paths = (run_dir_of(resume_path) if resume_path else None) or _new_or_shared_run_dir(cfg)
    paths.make()
    os.environ[RUN_DIR_ENV] = str(paths.root)  # DDP ranks that Lightning launches from here write here too
    _seed_and_threads(cfg)
    datamodule = recipe.build_datamodule(cfg)
    datamodule.setup("fit")
    write_config(paths, cfg)
    write_environment(paths, cfg, device=resolve_accelerator(cfg))
    atomic_write_json(paths.data_summary, datamodule.data_summary())
    plan = recipe.plan(cfg, datamodule)
    if plan is not None:
        atomic_write_json(paths.plan, plan)
    recipe.write_run_files(cfg, datamodule, paths.root)
    task = recipe.build_task(cfg, datamodule)
    trainer, callbacks = build_trainer(cfg, paths, resume_command=["medtrain", "train", "--config", str(paths.config)])
    started = time.perf_counter()
    if cfg.trainer.compile:
        for module in task.compile_targets():
            module.compile()
    with run_log(paths.logs / "medtrain.log"):
        _fit_guarded(trainer, task, datamodule, resume_path, paths)
    fit_seconds = time.perf_counter() - started
    final = None
    if not cfg.trainer.fast_dev_run:
        final = paths.checkpoints / cfg.checkpoint.final_name
        trainer.save_checkpoint(final)
    best = Path(callbacks.best.best_model_path) if callbacks.best.best_model_path else None
    if not trainer.is_global_zero:  # rank 0 alone tests, exports and reports
        return RunResult(paths.root, best, final, {})
    paths.recovery.unlink(missing_ok=True)
    started = time.perf_counter()
    datamodule.eval_split = "test"
    if best is not None:
        task.load_state_dict(read_checkpoint(best)["state_dict"])
    evaluator, _ = build_trainer(cfg, paths, resume_command=[], fit=False)
    raw = evaluator.test(task, datamodule=datamodule, verbose=False)
    test_seconds = time.perf_counter() - started
    test_metrics = strip_split_prefix(raw[0] if raw else {})
    write_model_dir(task, paths.model, source=best or final)
    best_epoch, best_score = _best_epoch(paths.metrics_csv, cfg.checkpoint.monitor, cfg.checkpoint.mode)
    report = {
        "recipe": cfg.recipe,
        "experiment": cfg.experiment,
        "run_dir": str(paths.root),
        "config_hash": config_hash(cfg),
        "monitor": cfg.checkpoint.monitor,
        "best_epoch": best_epoch,
        "best_score": best_score,
        "best_checkpoint": str(best) if best else None,
        "epochs_completed": trainer.current_epoch,
        "timings": {"fit_seconds": round(fit_seconds, 3), "test_seconds": round(test_seconds, 3)},
        "throughput": {"train_samples_per_second": round(callbacks.throughput.samples_per_second, 2)},
        "test": test_metrics,
    }
    plots = _final_plots(task, datamodule, paths, cfg)
    write_report(paths.root, report, plots)
    return RunResult(paths.root, best, final, test_metrics, report)


@contextlib.contextmanager
def run_log(path: Path) -> Iterator[None]:
    """Within the block, medtrain's INFO-and-above log lines are also appended to ``path`` (with timestamps)."""
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    previous_level = log.level
    if log.getEffectiveLevel() > logging.INFO:
        log.setLevel(logging.INFO)
    log.addHandler(handler)
    try:
        yield
    finally:
        log.removeHandler(handler)
        log.setLevel(previous_level)
        handler.close()


def _new_or_shared_run_dir(cfg: RunConfig) -> RunPaths:
    """A new run directory, except on a non-zero distributed rank, which joins rank 0's (``MEDTRAIN_RUN_DIR``).

    Lightning starts the other ranks of a multi-device run as copies of this process after rank 0 set the
    variable; under ``torchrun``/``srun``, set ``MEDTRAIN_RUN_DIR`` for all ranks yourself.
    """
    shared = os.environ.get(RUN_DIR_ENV)
    rank = int(os.environ.get("LOCAL_RANK", os.environ.get("RANK", "0")))
    if shared and rank > 0:
        return RunPaths(Path(shared))
    return create_run_dir(Path(cfg.output_dir), cfg.experiment)


def _fit_guarded(
    trainer: L.Trainer, task: Any, datamodule: L.LightningDataModule, resume: Path | None, paths: RunPaths
) -> None:
    """``trainer.fit`` with graceful SIGINT/SIGTERM; maps interruptions and failures to medtrain errors."""
    try:
        with graceful_signals():
            trainer.fit(task, datamodule=datamodule, ckpt_path=resume, weights_only=True)
    except TrainingInterrupted:
        raise
    except SIGTERMException as exc:
        raise TrainingInterrupted(signal.SIGTERM) from exc
    except KeyboardInterrupt as exc:
        raise TrainingInterrupted(signal.SIGINT) from exc
    except SystemExit as exc:  # Lightning exits 1 after a second Ctrl+C
        raise TrainingInterrupted(signal.SIGINT) from exc
    except (UserError, ConfigError):
        raise
    except Exception as exc:
        recovery = paths.recovery if paths.recovery.is_file() else None
        raise TrainingFailed(f"training failed: {type(exc).__name__}: {exc}", recovery) from exc


def _final_plots(task: TaskModule, datamodule: L.LightningDataModule, paths: RunPaths, cfg: RunConfig) -> list[Path]:
    plots = []
    if paths.metrics_csv.is_file():
        plots.append(
            plot_training_curves(
                paths.metrics_csv,
                paths.plots / "training_curves.png",
                monitor=cfg.checkpoint.monitor,
                mode=cfg.checkpoint.mode,
            )
        )
    plots.extend(task.report_plots(paths.root, datamodule))
    return plots


def load_task(recipe: Recipe, cfg: RunConfig, checkpoint: dict[str, Any]) -> tuple[TaskModule, Any]:
    """Datamodule (set up for fit) and task with the checkpoint's weights loaded."""
    _seed_and_threads(cfg)
    datamodule = recipe.build_datamodule(cfg)
    datamodule.setup("fit")
    task = recipe.build_task(cfg, datamodule)
    task.load_state_dict(checkpoint["state_dict"])
    return task, datamodule


def checkpoint_of(path: Path) -> Path:
    """A checkpoint file as given, or the one a run directory's results stand on.

    For a run directory: the best checkpoint named in report.json, else the final checkpoint
    (``checkpoint.final_name`` of its config.yaml, default final.ckpt), else last.ckpt.
    """
    if path.is_file():
        return path
    run = run_dir_of(path)
    if run is None:
        raise CheckpointError(f"not a checkpoint or run directory: {path}")
    if run.report_json.is_file():
        best = json.loads(run.report_json.read_text()).get("best_checkpoint")
        if best and Path(best).is_file():
            return Path(best)
    for name in (_final_name(run), LAST):
        if (run.checkpoints / name).is_file():
            return run.checkpoints / name
    raise CheckpointError(f"run directory {path} has no checkpoint yet")


def _final_name(run: RunPaths) -> str:
    """The final checkpoint's file name in a run directory, from its config.yaml (``final.ckpt`` if unreadable)."""
    from medtrain.config import ConfigError, read_yaml

    with contextlib.suppress(ConfigError, AttributeError):
        name = read_yaml(run.config).get("checkpoint", {}).get("final_name")
        if isinstance(name, str) and name:
            return name
    return FINAL


def evaluate(
    recipe: Recipe,
    cfg: RunConfig,
    checkpoint_path: Path,
    *,
    split: str = "test",
    output_dir: Path | None = None,
) -> dict[str, Any]:
    """Metrics of a checkpoint on ``split`` (``test`` or ``val``), written as report.{json,md,html}.

    ``output_dir`` defaults to ``<run_dir>/evaluation_<split>`` for a checkpoint inside a run directory,
    else ``./evaluation_<split>``. Returns the report dict (metrics under ``"test"`` keyed without prefix).
    """
    quiet_lightning()
    checkpoint = read_checkpoint(checkpoint_path)
    check_compatible(checkpoint_meta(checkpoint), cfg, path=checkpoint_path)
    task, datamodule = load_task(recipe, cfg, checkpoint)
    datamodule.eval_split = split  # type: ignore[assignment]
    run = run_dir_of(checkpoint_path)
    out = output_dir or ((run.root if run else Path.cwd()) / f"evaluation_{split}")
    out.mkdir(parents=True, exist_ok=True)
    trainer, _ = build_trainer(cfg, RunPaths(out), resume_command=[], fit=False)
    raw = trainer.test(task, datamodule=datamodule, verbose=False)
    report = {
        "recipe": cfg.recipe,
        "experiment": cfg.experiment,
        "checkpoint": str(checkpoint_path),
        "split": split,
        "config_hash": checkpoint_meta(checkpoint)["config_hash"],
        "test": strip_split_prefix(raw[0] if raw else {}),
    }
    plots = task.report_plots(out, datamodule)
    write_report(out, report, plots)
    return report


def export(
    recipe: Recipe, cfg: RunConfig, checkpoint_path: Path, output_dir: Path, *, onnx: bool = True
) -> dict[str, Path]:
    """Export a checkpoint's network to ``output_dir``: safetensors + model.json (+ ONNX checked against torch)."""
    quiet_lightning()
    checkpoint = read_checkpoint(checkpoint_path)
    check_compatible(checkpoint_meta(checkpoint), cfg, path=checkpoint_path)
    task, _ = load_task(recipe, cfg, checkpoint)
    return write_model_dir(task.eval(), output_dir, onnx=onnx, source=checkpoint_path)
