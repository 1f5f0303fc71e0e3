"""Builds a ``lightning.Trainer`` from a :class:`RunConfig` with Lightning's own pieces.

ModelCheckpoint (best-k, last, periodic), EarlyStopping, LearningRateMonitor, EMAWeightAveraging,
TensorBoard + CSV (+ W&B / MLflow) loggers, precision plugins and strategies come from Lightning; medtrain adds
only the callbacks in :mod:`medtrain.engine.callbacks` and the atomic checkpoint IO.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from dataclasses import dataclass, field
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import (
    Callback,
    EarlyStopping,
    EMAWeightAveraging,
    LearningRateMonitor,
    ModelCheckpoint,
)
from lightning.pytorch.loggers import Logger, TensorBoardLogger

from medtrain.config.schema import RunConfig
from medtrain.engine.callbacks import (
    EpochSummary,
    InterruptCheckpoint,
    PeriodicPlots,
    RngState,
    SignalStop,
    Throughput,
    ThroughputProgressBar,
)
from medtrain.engine.checkpoint_io import AtomicCheckpointIO
from medtrain.engine.csv_log import ResumableCSVLogger
from medtrain.engine.rundir import RunPaths
from medtrain.errors import UsageError

log = logging.getLogger("medtrain")

#: Lightning messages that say nothing actionable to a medtrain user
_NOISY_WARNINGS = (
    r".*does not have many workers.*",
    r".*number of training batches.*smaller than the logging interval.*",
    r".*exists and is not empty.*",  # resuming appends to the same run directory: nothing is deleted
    r".*`isinstance\(treespec, LeafSpec\)` is deprecated.*",
    r".*LeafSpec.*",
    r".*GPU available but not used.*",
    r".*requested to overfit but enabled .* dataloader shuffling.*",
)


def quiet_lightning(debug: bool = False) -> None:
    """Silence Lightning's start-up chatter and known-harmless warnings (all kept with ``--debug``)."""
    if debug:
        return
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    for pattern in _NOISY_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)


def configure_threads(cfg: RunConfig) -> int:
    """Set torch's intra-op threads so that DataLoader workers + threads ≤ cores; returns the count.

    ``trainer.num_threads`` wins when given; else ``max(1, cores - data.num_workers)``.
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    threads = cfg.trainer.num_threads or max(1, cores - cfg.data.num_workers)
    torch.set_num_threads(threads)
    return threads


def resolve_precision(cfg: RunConfig, accelerator: str) -> str:
    """The precision to run: the configured one, or 32-true with a warning where the device lacks it."""
    precision = cfg.trainer.precision
    if accelerator == "cpu" and precision in {"16-mixed", "16-true"}:
        log.warning("precision %s needs a CUDA device; running 32-true on CPU", precision)
        return "32-true"
    if accelerator == "cuda" and "bf16" in precision and not torch.cuda.is_bf16_supported():
        log.warning("this GPU has no bf16 support; running 16-mixed instead of %s", precision)
        return "16-mixed"
    return precision


def resolve_accelerator(cfg: RunConfig) -> str:
    """``auto`` → cuda when available else cpu; otherwise the configured accelerator."""
    accelerator = cfg.trainer.accelerator
    if accelerator == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if accelerator in {"cuda", "gpu"} and not torch.cuda.is_available():
        raise UsageError(f"trainer.accelerator={accelerator!r} but no CUDA device is available")
    return accelerator


def use_rich_progress(cfg: RunConfig) -> bool:
    """Rich bar when asked, or in ``auto`` mode on an interactive terminal outside CI."""
    mode = cfg.trainer.progress
    if mode == "auto":
        return sys.stderr.isatty() and not os.environ.get("CI")
    return mode == "rich"


def _whole(value: float | int | None) -> float | int | None:
    """Lightning reads ints as batch counts and floats as fractions: 2.0 means two batches."""
    if isinstance(value, float) and value > 1 and value.is_integer():
        return int(value)
    return value


@dataclass
class EngineCallbacks:
    """The callbacks the engine reads back after fit (best checkpoint, throughput, interruption)."""

    best: ModelCheckpoint
    throughput: Throughput
    interrupt: InterruptCheckpoint | None
    all: list[Callback] = field(default_factory=list)


def build_callbacks(cfg: RunConfig, paths: RunPaths, *, resume_command: list[str]) -> EngineCallbacks:
    """Checkpointing, early stopping, LR monitor, EMA, interruption handling, throughput and progress."""
    ckpt = cfg.checkpoint
    prefix = ckpt.prefix or cfg.recipe
    best = ModelCheckpoint(
        dirpath=paths.checkpoints,
        filename=f"{prefix}-{{epoch:02d}}-{{{ckpt.monitor}:.4f}}",
        monitor=ckpt.monitor,
        mode=ckpt.mode,
        save_top_k=ckpt.save_top_k,
        save_last=ckpt.save_last,
    )
    throughput = Throughput()
    interrupt = InterruptCheckpoint(paths.root, resume_command)
    callbacks: list[Callback] = [best, throughput, interrupt, SignalStop(), RngState()]
    if ckpt.every_n_epochs:
        callbacks.append(
            ModelCheckpoint(
                dirpath=paths.checkpoints,
                filename="periodic-{epoch:03d}",
                every_n_epochs=ckpt.every_n_epochs,
                save_top_k=ckpt.keep_periodic,
                monitor="epoch",
                mode="max",
                save_on_train_epoch_end=True,
            )
        )
    stop = cfg.trainer.early_stopping
    if stop.enabled:
        callbacks.append(
            EarlyStopping(
                monitor=stop.monitor or ckpt.monitor,
                mode=stop.mode or ckpt.mode,
                patience=stop.patience,
                min_delta=stop.min_delta,
            )
        )
    if cfg.scheduler.name != "none" or cfg.scheduler.warmup_epochs or cfg.scheduler.warmup_steps:
        callbacks.append(LearningRateMonitor(logging_interval="step"))
    if cfg.trainer.ema.enabled:
        callbacks.append(EMAWeightAveraging(decay=cfg.trainer.ema.decay))
    if cfg.logging.plot_every_n_epochs:
        callbacks.append(PeriodicPlots(paths.root, cfg.logging.plot_every_n_epochs, ckpt.monitor, ckpt.mode))
    callbacks.append(ThroughputProgressBar(throughput) if use_rich_progress(cfg) else EpochSummary(throughput))
    return EngineCallbacks(best=best, throughput=throughput, interrupt=interrupt, all=callbacks)


def build_loggers(cfg: RunConfig, paths: RunPaths) -> list[Logger]:
    """CSV (``logs/metrics.csv``) and TensorBoard (``logs/tensorboard``) always; W&B and MLflow when enabled."""
    loggers: list[Logger] = [
        ResumableCSVLogger(save_dir=paths.root, name="logs", version=""),
        TensorBoardLogger(save_dir=paths.logs, name="tensorboard", version="", default_hp_metric=False),
    ]
    run_name = f"{cfg.experiment}/{paths.root.name}"
    if cfg.logging.wandb.enabled:
        loggers.append(_wandb_logger(cfg, paths, run_name))
    if cfg.logging.mlflow.enabled:
        loggers.append(_mlflow_logger(cfg, paths, run_name))
    return loggers


def _wandb_logger(cfg: RunConfig, paths: RunPaths, run_name: str) -> Logger:
    try:
        import wandb  # noqa: F401
    except ImportError as exc:
        raise UsageError("logging.wandb.enabled needs the wandb extra: pip install 'medtrain[wandb]'") from exc
    from lightning.pytorch.loggers import WandbLogger

    wandb_cfg = cfg.logging.wandb
    return WandbLogger(
        name=run_name,
        project=wandb_cfg.project,
        entity=wandb_cfg.entity,
        save_dir=str(paths.logs),
        offline=wandb_cfg.mode == "offline",
        mode=wandb_cfg.mode,
        tags=list(wandb_cfg.tags),
    )


def _mlflow_logger(cfg: RunConfig, paths: RunPaths, run_name: str) -> Logger:
    """MLflow logger. Tracking URI: ``logging.mlflow.tracking_uri``, else ``MLFLOW_TRACKING_URI``, else a local
    file store in ``<run_dir>/mlruns`` (MLflow keeps that backend in maintenance mode behind
    ``MLFLOW_ALLOW_FILE_STORE``, which is set for this local default only)."""
    try:
        import mlflow  # noqa: F401
    except ImportError as exc:
        raise UsageError("logging.mlflow.enabled needs the mlflow extra: pip install 'medtrain[mlflow]'") from exc
    from lightning.pytorch.loggers import MLFlowLogger

    mlflow_cfg = cfg.logging.mlflow
    tracking_uri = mlflow_cfg.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if tracking_uri is None:
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        tracking_uri = (paths.root / "mlruns").resolve().as_uri()
    return MLFlowLogger(
        experiment_name=mlflow_cfg.experiment_name or cfg.experiment,
        run_name=run_name,
        tracking_uri=tracking_uri,
    )


def build_trainer(
    cfg: RunConfig, paths: RunPaths, *, resume_command: list[str], fit: bool = True
) -> tuple[L.Trainer, EngineCallbacks]:
    """A ``lightning.Trainer`` for ``cfg`` writing into ``paths``.

    ``fit=False`` builds an evaluation trainer: one device, no loggers, no checkpoints (Lightning advises
    testing on one device: a DistributedSampler pads the test set with repeated samples).
    """
    accelerator = resolve_accelerator(cfg)
    trainer_cfg = cfg.trainer
    callbacks = build_callbacks(cfg, paths, resume_command=resume_command)
    optional: dict[str, Any] = {
        key: _whole(value)
        for key, value in (
            ("limit_train_batches", trainer_cfg.limit_train_batches),
            ("limit_val_batches", trainer_cfg.limit_val_batches),
        )
        if value is not None
    }
    trainer = L.Trainer(
        default_root_dir=paths.root,
        accelerator=accelerator,
        devices=trainer_cfg.devices if fit else 1,
        num_nodes=trainer_cfg.num_nodes if fit else 1,
        strategy=trainer_cfg.strategy if fit else "auto",
        precision=resolve_precision(cfg, accelerator),  # type: ignore[arg-type]
        max_epochs=trainer_cfg.max_epochs,
        max_steps=trainer_cfg.max_steps,
        accumulate_grad_batches=trainer_cfg.accumulate_grad_batches,
        gradient_clip_val=trainer_cfg.gradient_clip_val,
        gradient_clip_algorithm=trainer_cfg.gradient_clip_algorithm,
        fast_dev_run=trainer_cfg.fast_dev_run,
        overfit_batches=_whole(trainer_cfg.overfit_batches),
        check_val_every_n_epoch=trainer_cfg.check_val_every_n_epoch,
        num_sanity_val_steps=trainer_cfg.num_sanity_val_steps,
        log_every_n_steps=trainer_cfg.log_every_n_steps,
        deterministic=trainer_cfg.deterministic,
        logger=build_loggers(cfg, paths) if fit else False,
        callbacks=callbacks.all if fit else [callbacks.throughput, SignalStop()],
        enable_checkpointing=fit,
        enable_progress_bar=fit and use_rich_progress(cfg),
        enable_model_summary=fit and use_rich_progress(cfg),
        plugins=[AtomicCheckpointIO()],
        **optional,
    )
    return trainer, callbacks
