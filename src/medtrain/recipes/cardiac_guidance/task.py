"""LightningModule of cardiac-guidance: trains the dreamer, reports per-DOF guidance errors against a baseline.

Training (per batch of transitions ``ft1, ft2, action, at1, at2``, vectors z-scored with training statistics):
frames are scaled to [0, 1] on the device and augmented with label-safe transforms (training only); the dreamer
predicts ``at1`` from ``ft1`` (main task) and ``at2`` from the tokens it imagines after ``action`` (auxiliary
task); ``ft2`` is encoded only when the latent-consistency term or the main task on ft2
(``loss.lambda_ft2_action``) is on. Logged: ``train_loss`` (total) and ``train_<term>`` for every term of
:data:`LOSS_TERMS`; per validation epoch ``val_loss``, ``val_<term>`` (``val_main_task_loss`` is the checkpoint
monitor) and ``val_mae_<dof>`` in mm / degrees.

Test metrics (:func:`~medtrain.recipes.cardiac_guidance.metrics.guidance_metrics`, on de-normalised actions)
with the mean-predictor baseline (the training patients' mean ``at1``) as ``baseline_*``, overall and per test
patient (``main_task_mae_<patient>``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from medtrain.engine.task import TaskModule
from medtrain.nn.resnet import load_pretrained_backbone
from medtrain.recipes.cardiac_guidance.augment import LabelSafeAugment
from medtrain.recipes.cardiac_guidance.data import ActionStats, CardiacDataModule
from medtrain.recipes.cardiac_guidance.metrics import guidance_metrics
from medtrain.recipes.cardiac_guidance.model import CardiacDreamer, DreamerLoss, GuidanceNet
from medtrain.recipes.cardiac_guidance.records import DOF_NAMES, DOF_UNITS
from medtrain.recipes.cardiac_guidance.schema import CardiacConfig

#: model.* keys that build the network (the rest of the spec is statistics and names)
ARCHITECTURE_KEYS = (
    "backbone_depth",
    "base_width",
    "backbone_last_stride",
    "token_type",
    "d_model",
    "num_heads",
    "num_layers",
    "ffn_ratio",
    "dropout",
    "head_hidden",
)

#: loss terms logged besides the total (``DreamerLoss``)
LOSS_TERMS = ("main_task_loss", "aux_loss", "latent_loss", "ft2_task_loss")


#: architecture keys added after models were first exported, with the value those models were built with
SPEC_DEFAULTS = {"backbone_last_stride": 2}


def build_dreamer(spec: dict[str, Any]) -> CardiacDreamer:
    """The dreamer described by a ``model_spec()`` dict (also used by the predictor); a model exported before a
    key existed gets the value it was built with (:data:`SPEC_DEFAULTS`)."""
    values = {key: spec[key] if key in spec else SPEC_DEFAULTS[key] for key in ARCHITECTURE_KEYS}
    return CardiacDreamer(image_size=spec["image_size"], **values)


def build_guidance_net(spec: dict[str, Any]) -> GuidanceNet:
    """The exported network (image → 6-DOF action in mm / degrees) described by a ``model_spec()`` dict."""
    stats = ActionStats.from_dict(spec["action_statistics"])
    return GuidanceNet(build_dreamer(spec), stats.target_mean, stats.target_std)


def to_unit(frames: torch.Tensor) -> torch.Tensor:
    """``uint8`` frames ``[B, 1, H, W]`` → float32 in [0, 1] (``x / 255``)."""
    return frames.float().div_(255.0)


class CardiacGuidanceTask(TaskModule):
    """Dreamer training with the main, auxiliary and latent losses; per-DOF metrics and baselines."""

    input_names = ("image",)
    output_names = ("action_6dof",)

    def __init__(self, cfg: CardiacConfig, datamodule: CardiacDataModule) -> None:
        super().__init__(cfg)
        assert datamodule.stats is not None
        stats = datamodule.stats
        self.spec: dict[str, Any] = {
            "image_size": cfg.data.image_size,
            **{key: getattr(cfg.model, key) for key in ARCHITECTURE_KEYS},
            "action_statistics": stats.to_dict(),
            "dof_names": list(DOF_NAMES),
            "dof_units": list(DOF_UNITS),
        }
        self.dreamer = build_dreamer(self.spec)
        if cfg.model.pretrained_backbone is not None:
            load_pretrained_backbone(self.dreamer.encoder.backbone, Path(cfg.model.pretrained_backbone))
        self.criterion = DreamerLoss(
            beta=cfg.loss.smooth_l1_beta,
            lambda_t2_action=cfg.loss.lambda_t2_action,
            lambda_latent=cfg.loss.lambda_latent,
            lambda_ft2_action=cfg.loss.lambda_ft2_action,
            primary_task_only=cfg.loss.primary_task_only,
        )
        augment = cfg.data.augment
        self.augment = LabelSafeAugment(**augment.model_dump(exclude={"enabled"})) if augment.enabled else nn.Identity()
        self.register_buffer("target_mean", torch.tensor(stats.target_mean, dtype=torch.float32), persistent=False)
        self.register_buffer("target_std", torch.tensor(stats.target_std, dtype=torch.float32), persistent=False)
        train_at1 = datamodule.arrays["train"].raw["at1"].astype(np.float64)
        self.baseline_at1 = train_at1.mean(axis=0)
        self._val_sums: list[torch.Tensor] = []
        self._test: dict[str, list[np.ndarray]] = {}

    # -- steps ----------------------------------------------------------------------------------------
    def _forward(self, batch: Any, *, train: bool) -> tuple[dict[str, torch.Tensor], Any]:
        ft1, ft2, action, at1, at2, _ = batch
        x1 = to_unit(ft1)
        x2 = to_unit(ft2) if self.cfg.loss.needs_next_frame else None
        if train:
            x1 = self.augment(x1)
            x2 = self.augment(x2) if x2 is not None else None
        output = self.dreamer(x1, action, x2, ft2_grad=self.cfg.loss.trains_on_next_frame)
        return self.criterion(output, at1, at2), output

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        terms, _ = self._forward(batch, train=True)
        self.log_train("train_loss", terms["loss"], prog_bar=True)
        for name in LOSS_TERMS:
            self.log_train(f"train_{name}", terms[name])
        return terms["loss"]

    def on_validation_epoch_start(self) -> None:
        self._val_sums = [torch.zeros(len(DOF_NAMES), device=self.device), torch.zeros((), device=self.device)]

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        terms, output = self._forward(batch, train=False)
        size = len(batch[0])
        self.log("val_loss", terms["loss"], prog_bar=True, batch_size=size, sync_dist=True)
        for name in LOSS_TERMS:
            self.log(f"val_{name}", terms[name], batch_size=size, sync_dist=True)
        self._val_sums[0] += ((output.at1 - batch[3]).abs() * self.target_std).sum(0).detach()
        self._val_sums[1] += size

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking or not self._val_sums or float(self._val_sums[1]) == 0:
            return
        mae = self._val_sums[0] / self._val_sums[1]
        for index, name in enumerate(DOF_NAMES):
            self.log(f"val_mae_{name}", mae[index], sync_dist=True)

    def on_test_epoch_start(self) -> None:
        self._test = {"prediction": [], "truth": [], "patient": []}

    def test_step(self, batch: Any, batch_idx: int) -> None:
        ft1, _, _, at1, _, patient = batch
        prediction = self.denormalise(self.dreamer.guide(self.dreamer.encode(to_unit(ft1))))
        self._test["prediction"].append(prediction.cpu().numpy())
        self._test["truth"].append(self.denormalise(at1).cpu().numpy())
        self._test["patient"].append(patient.cpu().numpy())

    def on_test_epoch_end(self) -> None:
        prediction, truth, patient = (np.concatenate(self._test[key]) for key in ("prediction", "truth", "patient"))
        for name, value in self.split_metrics(prediction, truth, patient).items():
            self.log(f"test_{name}", value)

    # -- metrics --------------------------------------------------------------------------------------
    def denormalise(self, normalised: torch.Tensor) -> torch.Tensor:
        """Guidance actions in mm / degrees from their normalised values."""
        return normalised * self.target_std + self.target_mean

    def split_metrics(self, prediction: np.ndarray, truth: np.ndarray, patient: np.ndarray) -> dict[str, float]:
        """Model and mean-predictor metrics overall, plus ``main_task_mae_<patient>`` for every patient."""
        std = self.spec["action_statistics"]["target_std"]
        baseline = np.broadcast_to(self.baseline_at1, truth.shape)
        out = guidance_metrics(prediction, truth, std)
        out.update({f"baseline_{key}": value for key, value in guidance_metrics(baseline, truth, std).items()})
        datamodule: CardiacDataModule = self.trainer.datamodule  # type: ignore[assignment]
        for index in np.unique(patient):
            rows = patient == index
            name = datamodule.patient_names[int(index)]
            out[f"main_task_mae_{name}"] = guidance_metrics(prediction[rows], truth[rows], std)["main_task_mae"]
            out[f"baseline_main_task_mae_{name}"] = guidance_metrics(baseline[rows], truth[rows], std)["main_task_mae"]
        return out

    @torch.no_grad()
    def predict_split(self, datamodule: CardiacDataModule, split: str) -> tuple[np.ndarray, np.ndarray]:
        """(prediction, truth) ``[N, 6]`` in mm / degrees for every transition of ``split`` (eval mode)."""
        was_training = self.training
        self.eval()
        network = self.export_module()
        device = next(network.parameters()).device  # export may have moved the shared modules to the CPU
        loader = datamodule.make_loader(datamodule.dataset(split), shuffle=False)  # type: ignore[arg-type]
        predictions, truths = [], []
        for ft1, _, _, at1, _, _ in loader:
            predictions.append(network(to_unit(ft1.to(device))).cpu().numpy())
            truths.append((at1.to(device) * network.std + network.mean).cpu().numpy())
        self.train(was_training)
        if not predictions:
            return np.zeros((0, len(DOF_NAMES))), np.zeros((0, len(DOF_NAMES)))
        return np.concatenate(predictions), np.concatenate(truths)

    # -- export and reports ---------------------------------------------------------------------------
    def export_module(self) -> GuidanceNet:
        """The guidance network: this dreamer's encoder and head (shared, not copied) with the training
        statistics, so it outputs mm / degrees."""
        stats = self.spec["action_statistics"]
        return GuidanceNet(self.dreamer, stats["target_mean"], stats["target_std"])

    def compile_targets(self) -> list[nn.Module]:
        return [self.dreamer]

    def example_inputs(self) -> tuple[torch.Tensor, ...]:
        size = self.spec["image_size"]
        return (torch.zeros(1, 1, size, size),)

    def model_spec(self) -> dict[str, Any]:
        return self.spec

    def report_plots(self, run_dir: Path, datamodule: Any) -> list[Path]:
        from medtrain.recipes.cardiac_guidance.plots import plot_prediction_scatter, plot_training_summary

        folder = run_dir / "plots"
        written = []
        metrics_csv = run_dir / "logs" / "metrics.csv"
        if metrics_csv.is_file():
            written.append(plot_training_summary(metrics_csv, folder / "training_summary.png"))
        for split in ("val", "test"):
            prediction, truth = self.predict_split(datamodule, split)
            if len(truth):
                written.append(plot_prediction_scatter(prediction, truth, folder / f"scatter_{split}.png", split=split))
        return written
