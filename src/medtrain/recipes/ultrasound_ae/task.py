"""LightningModule of ultrasound-ae: trains the autoencoder, reports reconstruction metrics and a linear probe.

Test metrics (``test_<name>``) with their trivial baselines (``test_baseline_<name>``):

- ``mse``, ``mae``, ``r2`` and ``psnr`` (mean over channels, plus ``psnr_ch<k>``) of the reconstruction on the
  test split; the baseline predicts every sample as its channel's training-split mean;
- ``probe_accuracy``, ``probe_macro_f1``: logistic regression on frozen embeddings, fit on the training split
  and scored on the test split; the baseline always predicts the training split's majority class.

PSNR of channel c is ``10·log10(range_c² / mse_c)`` with ``range_c`` the test targets' max − min in that channel.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score
from torch import nn

from medtrain.engine.task import TaskModule
from medtrain.recipes.ultrasound_ae.data import UltrasoundDataModule, augment_tokens
from medtrain.recipes.ultrasound_ae.model import AutoencoderLoss, CNNAutoencoder
from medtrain.recipes.ultrasound_ae.schema import UltrasoundConfig
from medtrain.recipes.ultrasound_ae.tokens import CLASS_NAMES


def build_autoencoder(spec: dict[str, Any]) -> CNNAutoencoder:
    """The autoencoder described by a ``model_spec()`` dict (also used by the predictor)."""
    return CNNAutoencoder(
        channels=spec["channels"],
        depth=spec["depth"],
        pulses=spec["pulses"],
        embedding_dim=spec["embedding_dim"],
        widths=tuple(spec["widths"]),
        pool_length=spec["pool_length"],
    )


class ReconstructionSums:
    """Streaming sums for MSE, MAE, R² and per-channel PSNR of a prediction against targets ``[B, C, ...]``."""

    def __init__(self, channels: int) -> None:
        self.count = torch.zeros(channels, dtype=torch.float64)
        self.squared_error = torch.zeros(channels, dtype=torch.float64)
        self.absolute_error = torch.zeros(channels, dtype=torch.float64)
        self.target_sum = torch.zeros((), dtype=torch.float64)
        self.target_squares = torch.zeros((), dtype=torch.float64)
        self.minimum = torch.full((channels,), float("inf"), dtype=torch.float64)
        self.maximum = torch.full((channels,), float("-inf"), dtype=torch.float64)

    def update(self, prediction: torch.Tensor, target: torch.Tensor) -> None:
        """Add a batch; channels are axis 1 (axis 2 for sequences is folded first by the caller)."""
        error = (prediction - target).double().transpose(0, 1).flatten(1)
        values = target.double().transpose(0, 1).flatten(1)
        self.count += values.shape[1]
        self.squared_error += error.pow(2).sum(1)
        self.absolute_error += error.abs().sum(1)
        self.target_sum += values.sum()
        self.target_squares += values.pow(2).sum()
        self.minimum = torch.minimum(self.minimum, values.min(1).values)
        self.maximum = torch.maximum(self.maximum, values.max(1).values)

    def metrics(self) -> dict[str, float]:
        n = self.count.sum()
        total_variance = self.target_squares - self.target_sum**2 / n
        mse_per_channel = self.squared_error / self.count
        psnr = 10 * torch.log10((self.maximum - self.minimum) ** 2 / mse_per_channel.clamp_min(1e-12))
        out = {
            "mse": float(self.squared_error.sum() / n),
            "mae": float(self.absolute_error.sum() / n),
            "r2": float(1 - self.squared_error.sum() / total_variance.clamp_min(1e-12)),
            "psnr": float(psnr.mean()),
        }
        out.update({f"psnr_ch{channel}": float(value) for channel, value in enumerate(psnr)})
        return out


def _tokens(batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Token batch ``([B, C, D, P], [B])`` from a token or sequence batch (sequences folded into the batch)."""
    x, y = batch
    if x.dim() == 5:
        return x.flatten(0, 1), y.flatten(0, 1)
    return x, y


class UltrasoundAETask(TaskModule):
    """Autoencoder training with reconstruction metrics, baselines and a linear probe of the joystick class."""

    input_names = ("tokens",)
    output_names = ("embedding",)

    def __init__(self, cfg: UltrasoundConfig, datamodule: UltrasoundDataModule) -> None:
        super().__init__(cfg)
        channels, depth, pulses = datamodule.token_shape
        assert datamodule.stats is not None
        self.spec: dict[str, Any] = {
            "channels": channels,
            "depth": depth,
            "pulses": pulses,
            "embedding_dim": cfg.model.embedding_dim,
            "widths": list(cfg.model.widths),
            "pool_length": cfg.model.pool_length,
            "signal": cfg.data.signal.model_dump(mode="json"),
            "tokens": cfg.data.tokens.model_dump(mode="json"),
            "normalization": cfg.data.normalization,
            "channel_stats": datamodule.stats.to_dict(),
            "class_names": list(CLASS_NAMES),
        }
        self.autoencoder = build_autoencoder(self.spec)
        self.criterion = AutoencoderLoss(cfg.loss.mse_weight, cfg.loss.l1_weight, cfg.loss.embedding_l2)
        train_tokens, _ = datamodule.tokens_and_labels("train")
        self.register_buffer("train_mean", torch.from_numpy(train_tokens.mean(axis=(0, 2, 3))).float())
        self.register_buffer("normalized_zero", torch.from_numpy(datamodule.normalized_zero()).float())
        self._sums: dict[str, ReconstructionSums] = {}
        self._embeddings: list[torch.Tensor] = []
        self._labels: list[torch.Tensor] = []

    def _step(self, batch: Any, stage: str) -> torch.Tensor:
        x, _ = _tokens(batch)
        data = self.cfg.data
        if stage == "train" and (data.augment_gain > 0 or data.augment_shift > 0):
            x = augment_tokens(x, zero=self.normalized_zero, gain=data.augment_gain, shift=data.augment_shift)
        recon, z = self.autoencoder(x)
        terms = self.criterion(recon, x, z)
        if stage == "train":
            self.log_train("train_loss", terms["loss"], prog_bar=True)
            self.log_train("train_mse", terms["mse"])
        else:
            self.log(f"{stage}_loss", terms["loss"], prog_bar=True, batch_size=len(x), sync_dist=True)
            self.log(f"{stage}_mse", terms["mse"], batch_size=len(x), sync_dist=True)
        return terms["loss"]

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._step(batch, "val")

    def on_test_epoch_start(self) -> None:
        channels = self.spec["channels"]
        self._sums = {"model": ReconstructionSums(channels), "baseline": ReconstructionSums(channels)}
        self._embeddings, self._labels = [], []

    def test_step(self, batch: Any, batch_idx: int) -> None:
        x, y = _tokens(batch)
        recon, z = self.autoencoder(x)
        self._sums["model"].update(recon.cpu(), x.cpu())
        self._sums["baseline"].update(self.train_mean.view(1, -1, 1, 1).expand_as(x).cpu(), x.cpu())
        self._embeddings.append(z.cpu())
        self._labels.append(y.cpu())

    def on_test_epoch_end(self) -> None:
        metrics = self._sums["model"].metrics()
        metrics.update({f"baseline_{key}": value for key, value in self._sums["baseline"].metrics().items()})
        metrics.update(self.probe_metrics())
        for name, value in metrics.items():
            self.log(f"test_{name}", value)

    @torch.no_grad()
    def embed(self, tokens: np.ndarray, batch_size: int = 512) -> np.ndarray:
        """Embeddings ``[N, E]`` of normalised tokens ``[N, C, D, P]`` (eval mode, no gradients)."""
        was_training = self.training
        self.eval()
        chunks = [
            self.autoencoder.encode(torch.from_numpy(tokens[start : start + batch_size]).to(self.device)).cpu()
            for start in range(0, len(tokens), batch_size)
        ]
        self.train(was_training)
        return torch.cat(chunks).numpy() if chunks else np.zeros((0, self.spec["embedding_dim"]), np.float32)

    def probe_metrics(self) -> dict[str, float]:
        """Linear probe (fit on train embeddings, scored on the test embeddings) and the majority-class baseline."""
        datamodule: UltrasoundDataModule = self.trainer.datamodule  # type: ignore[assignment]
        train_tokens, train_labels = datamodule.tokens_and_labels("train")
        rng = np.random.default_rng(self.cfg.seed)
        if len(train_tokens) > self.cfg.probe.max_train_samples:
            keep = np.sort(rng.choice(len(train_tokens), self.cfg.probe.max_train_samples, replace=False))
            train_tokens, train_labels = train_tokens[keep], train_labels[keep]
        test_embeddings = torch.cat(self._embeddings).numpy()
        test_labels = torch.cat(self._labels).numpy()
        majority = int(np.bincount(train_labels, minlength=len(CLASS_NAMES)).argmax())
        baseline = np.full_like(test_labels, majority)
        out = {
            "baseline_probe_accuracy": float(accuracy_score(test_labels, baseline)),
            "baseline_probe_macro_f1": float(f1_score(test_labels, baseline, average="macro", zero_division=0)),
        }
        if len(np.unique(train_labels)) < 2:
            predicted = np.full_like(test_labels, majority)
        else:
            probe = LogisticRegression(C=self.cfg.probe.c, max_iter=2000)
            probe.fit(self.embed(train_tokens), train_labels)
            predicted = probe.predict(test_embeddings)
        out["probe_accuracy"] = float(accuracy_score(test_labels, predicted))
        out["probe_macro_f1"] = float(f1_score(test_labels, predicted, average="macro", zero_division=0))
        return out

    def export_module(self) -> nn.Module:
        return self.autoencoder.encoder_module()

    def compile_targets(self) -> list[nn.Module]:
        return [self.autoencoder]

    def example_inputs(self) -> tuple[torch.Tensor, ...]:
        return (torch.zeros(1, self.spec["channels"], self.spec["depth"], self.spec["pulses"]),)

    def model_spec(self) -> dict[str, Any]:
        return self.spec

    def report_plots(self, run_dir: Path, datamodule: Any) -> list[Path]:
        from medtrain.recipes.ultrasound_ae.plots import plot_all

        return plot_all(self, datamodule, run_dir / "plots")
