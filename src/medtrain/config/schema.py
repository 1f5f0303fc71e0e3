"""Typed, frozen configuration sections shared by every recipe.

Each section is a pydantic v2 model that forbids unknown keys. A recipe narrows the sections it needs by
subclassing them (``class AEData(DataConfig): ...``) and declaring a :class:`RunConfig` subclass whose fields
use the narrowed types. Defaults here are what a run gets when neither the recipe's ``default.yaml`` nor the user
says otherwise.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
)


class Section(BaseModel):
    """Base of every config section: unknown keys are errors, instances are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True, protected_namespaces=())


class DataConfig(Section):
    """Where the data is and how batches are loaded. Every recipe names its input ``data.root``."""

    root: Path | None = None
    batch_size: PositiveInt = 32
    eval_batch_size: PositiveInt | None = None
    num_workers: NonNegativeInt = 0
    pin_memory: bool = False
    persistent_workers: bool = True


class ModelConfig(Section):
    """Architecture hyper-parameters; recipes subclass it."""


class LossConfig(Section):
    """Loss terms and weights; recipes subclass it."""


class OptimConfig(Section):
    """Optimizer: ``adamw`` | ``adam`` | ``sgd`` (``nesterov`` applies to SGD with momentum)."""

    name: Literal["adamw", "adam", "sgd"] = "adamw"
    lr: PositiveFloat = 1e-3
    weight_decay: NonNegativeFloat = 0.01
    betas: tuple[float, float] = (0.9, 0.999)
    eps: PositiveFloat = 1e-8
    momentum: NonNegativeFloat = 0.9
    nesterov: bool = True


class SchedulerConfig(Section):
    """Learning-rate schedule, each optionally preceded by a linear warmup.

    ``warmup_epochs``/``warmup_steps`` (the larger in steps wins) ramp the LR linearly from
    ``warmup_start_factor * lr`` to ``lr``; the named schedule then runs over the remaining steps/epochs.
    Cadence follows each definition: cosine, cosine_warm_restarts and onecycle step per optimizer step; poly
    (nnU-Net: ``lr * (1 - epoch / max_epochs) ** power``), step and plateau step per epoch.
    """

    name: Literal["none", "cosine", "cosine_warm_restarts", "onecycle", "plateau", "poly", "step"] = "cosine"
    warmup_epochs: NonNegativeInt = 0
    warmup_steps: NonNegativeInt = 0
    warmup_start_factor: float = Field(0.01, gt=0.0, le=1.0)
    min_lr: NonNegativeFloat = 0.0
    restart_epochs: PositiveInt = 10
    restart_mult: PositiveInt = 1
    power: PositiveFloat = 0.9
    step_epochs: PositiveInt = 30
    gamma: PositiveFloat = 0.1
    plateau_factor: float = Field(0.1, gt=0.0, lt=1.0)
    plateau_patience: NonNegativeInt = 10
    pct_start: float = Field(0.3, gt=0.0, lt=1.0)
    div_factor: PositiveFloat = 25.0
    final_div_factor: PositiveFloat = 1e4


class EarlyStoppingConfig(Section):
    """Lightning EarlyStopping; ``monitor``/``mode`` default to the checkpoint's."""

    enabled: bool = False
    monitor: str | None = None
    mode: Literal["min", "max"] | None = None
    patience: NonNegativeInt = 10
    min_delta: NonNegativeFloat = 0.0


class EMAConfig(Section):
    """Exponential moving average of the weights (Lightning ``EMAWeightAveraging``)."""

    enabled: bool = False
    decay: float = Field(0.999, gt=0.0, lt=1.0)


Precision = Literal["64-true", "32-true", "32", "16-mixed", "bf16-mixed", "16-true", "bf16-true"]


class TrainerConfig(Section):
    """What ``lightning.Trainer`` receives, plus medtrain's execution switches."""

    max_epochs: PositiveInt = 10
    max_steps: int = -1
    accelerator: str = "auto"
    devices: int | str = "auto"
    num_nodes: PositiveInt = 1
    strategy: str = "auto"
    precision: Precision = "32-true"
    accumulate_grad_batches: PositiveInt = 1
    gradient_clip_val: NonNegativeFloat | None = None
    gradient_clip_algorithm: Literal["norm", "value"] = "norm"
    fast_dev_run: bool | NonNegativeInt = False
    overfit_batches: NonNegativeInt | NonNegativeFloat = 0
    limit_train_batches: NonNegativeInt | NonNegativeFloat | None = None
    limit_val_batches: NonNegativeInt | NonNegativeFloat | None = None
    check_val_every_n_epoch: PositiveInt = 1
    num_sanity_val_steps: NonNegativeInt = 0
    log_every_n_steps: PositiveInt = 50
    compile: bool = False
    deterministic: bool = False
    num_threads: PositiveInt | None = None
    progress: Literal["auto", "rich", "quiet"] = "auto"
    early_stopping: EarlyStoppingConfig = EarlyStoppingConfig()
    ema: EMAConfig = EMAConfig()


class CheckpointConfig(Section):
    """Which checkpoints a run keeps.

    best-k by ``monitor`` as ``<prefix>-epoch=E-<monitor>=V.ckpt`` (prefix defaults to the recipe name),
    ``last.ckpt`` every epoch, every ``every_n_epochs`` epochs a periodic checkpoint of which the newest
    ``keep_periodic`` are kept (0 = off), ``final_name`` (default ``final.ckpt``) at the end and
    ``interrupted.ckpt`` on interruption.
    """

    monitor: str = "val_loss"
    mode: Literal["min", "max"] = "min"
    save_top_k: int = Field(3, ge=-1)
    save_last: bool = True
    every_n_epochs: NonNegativeInt = 0
    keep_periodic: PositiveInt = 2
    prefix: str | None = None
    final_name: str = Field("final.ckpt", pattern=r"^[A-Za-z0-9_.=-]+\.ckpt$")


class WandbConfig(Section):
    """Weights & Biases logger (extra ``[wandb]``); the API key comes from ``WANDB_API_KEY`` only."""

    enabled: bool = False
    project: str = "medtrain"
    entity: str | None = None
    mode: Literal["online", "offline", "disabled"] = "offline"
    tags: tuple[str, ...] = ()


class MlflowConfig(Section):
    """MLflow logger (extra ``[mlflow]``); ``tracking_uri`` None uses ``MLFLOW_TRACKING_URI``, else a local file
    store in ``<run_dir>/mlruns``. Credentials come from MLflow's own environment variables only."""

    enabled: bool = False
    tracking_uri: str | None = None
    experiment_name: str | None = None


class LoggingConfig(Section):
    """Loggers and plots. TensorBoard and ``logs/metrics.csv`` are always written."""

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    plot_every_n_epochs: NonNegativeInt = 0
    wandb: WandbConfig = WandbConfig()
    mlflow: MlflowConfig = MlflowConfig()


class RunConfig(Section):
    """The whole resolved configuration of one run. Recipes subclass it with narrowed sections."""

    recipe: str
    experiment: str = "default"
    output_dir: Path = Path("runs")
    seed: int = 42
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    loss: LossConfig = LossConfig()
    optim: OptimConfig = OptimConfig()
    scheduler: SchedulerConfig = SchedulerConfig()
    trainer: TrainerConfig = TrainerConfig()
    checkpoint: CheckpointConfig = CheckpointConfig()
    logging: LoggingConfig = LoggingConfig()
