"""Base LightningModule of every recipe: optimizer/scheduler from config, the export contract, checkpoint
metadata.

A recipe's task subclasses :class:`TaskModule`, implements ``training_step``/``validation_step``/``test_step``
and the export contract (:meth:`export_module`, :meth:`example_inputs`). Conventions the engine relies on:

- training logs ``train_loss`` through :meth:`TaskModule.log_train` (cheap: see there); validation logs the
  checkpoint monitor (default ``val_loss``) with ``self.log``;
- ``test_step`` logs ``test_<metric>`` and, for every metric with a trivial baseline, ``test_baseline_<metric>``
  (e.g. predicting the training mean), so reports put model and baseline side by side.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from pathlib import Path
from typing import Any, ClassVar

import lightning as L
import torch
from torch import nn

from medtrain import __version__
from medtrain.config import config_hash, config_to_dict
from medtrain.config.schema import RunConfig
from medtrain.engine.optim import build_lr_scheduler, build_optimizer

CHECKPOINT_META_KEY = "medtrain"


class TaskModule(L.LightningModule):
    """LightningModule with medtrain's optimizer, scheduler, export and checkpoint conventions."""

    #: names of the exported module's inputs and outputs (ONNX graph names, model.json)
    input_names: ClassVar[tuple[str, ...]] = ("input",)
    output_names: ClassVar[tuple[str, ...]] = ("output",)

    def __init__(self, cfg: RunConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self._train_sums: dict[str, list[Any]] = {}

    # -- logging ------------------------------------------------------------------------------------
    def log_train(self, name: str, value: torch.Tensor, *, prog_bar: bool = False) -> None:
        """Log a training value as ``<name>_step`` every ``trainer.log_every_n_steps`` optimizer steps and as
        ``<name>_epoch`` (the mean over the epoch's batches, synced across ranks) at the end of the epoch.

        Same names as ``self.log(name, on_step=True, on_epoch=True)``, but Lightning's ``self.log`` costs about
        0.7 ms per call on a CPU, paid every step; here a step costs one in-place tensor addition.
        """
        total = self._train_sums.setdefault(name, [torch.zeros((), device=value.device), 0])
        total[0] += value.detach()
        total[1] += 1
        if self.trainer.global_step % self.trainer.log_every_n_steps == 0:
            self.log(f"{name}_step", value.detach(), on_step=True, on_epoch=False, prog_bar=prog_bar)

    def on_train_epoch_end(self) -> None:
        """Logs the epoch means of :meth:`log_train` values (call ``super()`` when overriding)."""
        for name, (total, count) in self._train_sums.items():
            self.log(f"{name}_epoch", total / max(count, 1), on_step=False, on_epoch=True, sync_dist=True)
        self._train_sums = {}

    # -- optimisation -------------------------------------------------------------------------------
    def parameter_groups(self) -> Any:
        """Parameters handed to the optimizer (override for per-group settings)."""
        return self.parameters()

    def configure_optimizers(self) -> Any:
        """Optimizer from ``cfg.optim``; LR schedule from ``cfg.scheduler`` stepped at its own cadence.

        ``steps_per_epoch = ceil(trainer.estimated_stepping_batches / max_epochs)`` (optimizer steps, so
        gradient accumulation is accounted for). ``fast_dev_run`` runs at the constant configured LR.
        """
        optimizer = build_optimizer(self.parameter_groups(), self.cfg.optim)
        if self.trainer.fast_dev_run:  # a one-batch smoke run: no schedule (a warmup would not fit in it)
            return optimizer
        max_epochs = max(1, self.trainer.max_epochs or 1)
        total_steps = self.trainer.estimated_stepping_batches
        steps_per_epoch = max(1, math.ceil(total_steps / max_epochs)) if math.isfinite(total_steps) else 1
        scheduler = build_lr_scheduler(
            optimizer,
            self.cfg.scheduler,
            steps_per_epoch=steps_per_epoch,
            max_epochs=max_epochs,
            monitor=self.cfg.checkpoint.monitor,
            monitor_mode=self.cfg.checkpoint.mode,
        )
        if scheduler is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": scheduler}

    # -- export contract ----------------------------------------------------------------------------
    @abstractmethod
    def export_module(self) -> nn.Module:
        """The inference network written to ``model/`` (safetensors, ONNX); a plain ``nn.Module``."""

    @abstractmethod
    def example_inputs(self) -> tuple[torch.Tensor, ...]:
        """Example inputs of :meth:`export_module` with batch size 1 (CPU tensors)."""

    def compile_targets(self) -> list[nn.Module]:
        """Sub-modules compiled in place (``nn.Module.compile``) when ``trainer.compile`` is on; compiling the
        networks rather than the LightningModule keeps ``self.log`` out of the graph and state-dict keys
        unchanged."""
        return [self.export_module()]

    def model_spec(self) -> dict[str, Any]:
        """Extra JSON for ``model.json`` that prediction needs (normalisation statistics, class names...)."""
        return {}

    # -- reporting ----------------------------------------------------------------------------------
    def batch_size_of(self, batch: Any) -> int:
        """Number of samples in ``batch`` (first tensor's leading dimension), for throughput."""
        first = batch
        while isinstance(first, (list, tuple, dict)):
            first = next(iter(first.values())) if isinstance(first, dict) else first[0]
        return int(first.shape[0]) if isinstance(first, torch.Tensor) and first.ndim else 1

    def report_plots(self, run_dir: Path, datamodule: L.LightningDataModule) -> list[Path]:
        """Recipe plots written at the end of training under ``run_dir/plots``; returns their paths."""
        return []

    # -- checkpoints --------------------------------------------------------------------------------
    def checkpoint_metadata(self) -> dict[str, Any]:
        """What every checkpoint carries besides the weights: recipe, resolved config and its hash."""
        return {
            "recipe": self.cfg.recipe,
            "config": config_to_dict(self.cfg),
            "config_hash": config_hash(self.cfg),
            "medtrain_version": __version__,
        }

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[CHECKPOINT_META_KEY] = self.checkpoint_metadata()
