"""LightningModule of volume-seg: a planned multi-task U-Net trained with per-target masked losses and deep
supervision; validated per patch, tested by sliding-window inference over whole held-out volumes (chunk by chunk).

Loss: ``L = Σ_targets w_t · Σ_terms w_l · [epoch ≥ start_l] · Σ_i ds_i · loss_l(pred_i, target_i, mask_i)``, where
``ds_i`` are nnU-Net's deep-supervision weights over the decoder's outputs (highest resolution first); targets
are downsampled for output ``i`` with nearest interpolation (labels, masks) or linear interpolation (real-valued
targets, invalid voxels excluded through the mask). Losses that use the source target's prediction
(``uses_source_prediction``) receive its foreground probability. Validation uses every term (as if every
``start_epoch`` had passed), so ``val_loss`` is comparable across epochs.

Logged: ``train_loss`` and ``train_loss_<target>``; per validation epoch ``val_loss``, ``val_loss_<target>``,
``val_dice_<target>`` (hard Dice over valid voxels, classes averaged) and ``val_mae_<target>`` (real-valued
targets). Test (whole volumes): ``test_dice_<target>`` (and ``_<class>`` for several classes) with the
all-foreground baseline, ``test_dice_<target>_<volume>`` per volume, ``test_mae_<target>`` with the best
constant predictor as baseline (estimated on at most 10⁶ valid values).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from medtrain.engine.task import TaskModule
from medtrain.nn.seg_losses import (
    DeepSupervisionLoss,
    build_loss,
    deep_supervision_weights,
    downsample_target_and_mask,
)
from medtrain.nn.sliding_window import default_chunk_size, sliding_window_inference_chunked
from medtrain.nn.unet import MultiTaskUNet
from medtrain.recipes.volume_seg.data import SampleBuilder, VolumeSegDataModule
from medtrain.recipes.volume_seg.metrics import (
    ConstantBaseline,
    DiceAccumulator,
    MAEAccumulator,
    hard_prediction,
    label_classes,
)
from medtrain.recipes.volume_seg.schema import LossTerm, VolumeSegConfig
from medtrain.recipes.volume_seg.targets import DS_MODE, TargetSpec

#: z slices of a 3-D debug GIF (each costs about 0.3 s to render on a CPU)
DEBUG_FRAMES = 12


def build_network(spec: Mapping[str, Any], *, deep_supervision: bool) -> MultiTaskUNet:
    """The U-Net a ``model_spec()`` describes (planned topology, input channels, one head per target)."""
    topology = spec["topology"]
    return MultiTaskUNet(
        spatial_dims=int(spec["spatial_dims"]),
        in_channels=int(spec["in_channels"]),
        features_per_stage=topology["features_per_stage"],
        strides=topology["strides"],
        kernel_sizes=topology["kernel_sizes"],
        n_blocks_per_stage=topology["n_blocks_per_stage"],
        n_conv_per_stage_decoder=topology["n_conv_per_stage_decoder"],
        heads={name: int(target["out_channels"]) for name, target in spec["targets"].items()},
        shared_decoder=bool(spec["shared_decoder"]),
        deep_supervision=deep_supervision,
    )


def activate(logits: torch.Tensor, activation: str) -> torch.Tensor:
    """Probabilities (sigmoid per channel, softmax over channels) or the values themselves (``none``)."""
    if activation == "sigmoid":
        return torch.sigmoid(logits)
    if activation == "softmax":
        return torch.softmax(logits, dim=1)
    return logits


def foreground_probability(logits: torch.Tensor, activation: str) -> torch.Tensor:
    """``[B, 1, *spatial]`` probability that a voxel is foreground: max over sigmoid channels, or one minus the
    softmax background probability."""
    if activation == "softmax":
        return 1.0 - torch.softmax(logits, dim=1)[:, :1]
    return torch.sigmoid(logits).amax(dim=1, keepdim=True)


def build_term(term: LossTerm) -> nn.Module:
    """The loss of one config term; a loss that weighs by the source target's prediction receives the
    foreground probability (``source_activation="none"``) unless the config says otherwise."""
    loss = build_loss(term.name, **term.kwargs)
    if getattr(loss, "uses_source_prediction", False) and "source_activation" not in term.kwargs:
        loss = build_loss(term.name, source_activation="none", **term.kwargs)
    return loss


class MultiTaskLoss(nn.Module):
    """Every target's weighted loss terms with deep supervision (see the module docstring for the formula)."""

    def __init__(self, targets: Mapping[str, TargetSpec], ds_weights: list[float]) -> None:
        super().__init__()
        self.targets = dict(targets)
        self.ds_weights = ds_weights
        self.terms = nn.ModuleDict(
            {
                name: nn.ModuleList(DeepSupervisionLoss(build_term(term), ds_weights) for term in spec.losses)
                for name, spec in targets.items()
            }
        )

    def _scales(
        self, outputs: list[torch.Tensor], target: torch.Tensor, mask: torch.Tensor, kind: str
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        targets, masks = [target], [mask]
        for index, output in enumerate(outputs[1:], start=1):
            if self.ds_weights[index] == 0:  # not computed: the wrapper skips zero weights
                targets.append(target)
                masks.append(mask)
                continue
            small_target, small_mask = downsample_target_and_mask(target, mask, tuple(output.shape[2:]), DS_MODE[kind])
            targets.append(small_target)
            masks.append(small_mask)
        return targets, masks

    def forward(
        self,
        outputs: Mapping[str, torch.Tensor | list[torch.Tensor]],
        targets: Mapping[str, torch.Tensor],
        masks: Mapping[str, torch.Tensor],
        *,
        epoch: float = math.inf,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``(total, {target: its weighted loss})`` for one batch; terms with ``start_epoch > epoch`` are off."""
        per_target: dict[str, torch.Tensor] = {}
        as_lists = {name: value if isinstance(value, list) else [value] for name, value in outputs.items()}
        for name, spec in self.targets.items():
            predictions = as_lists[name]
            scaled_targets, scaled_masks = self._scales(predictions, targets[name], masks[name], spec.kind)
            total = predictions[0].new_zeros(())
            for term, loss in zip(spec.losses, self.terms[name], strict=True):
                if term.start_epoch > epoch or term.weight == 0:
                    continue
                sources: list[torch.Tensor] | None = None
                if loss.uses_source_prediction and spec.source is not None:
                    source = self.targets[spec.source]
                    sources = [foreground_probability(p, source.activation).detach() for p in as_lists[spec.source]]
                if len(predictions) == 1:  # eval mode: full resolution only
                    extra = {"source_pred": sources[0] if sources else None} if loss.uses_source_prediction else {}
                    value = loss.loss(predictions[0], scaled_targets[0], scaled_masks[0], **extra)
                else:
                    value = loss(predictions, scaled_targets, scaled_masks, source_pred=sources)
                total = total + term.weight * value
            per_target[name] = spec.weight * total
        return sum(per_target.values()), per_target  # type: ignore[return-value]


class VolumeSegTask(TaskModule):
    """Multi-task U-Net training, per-patch validation with Dice/MAE, whole-volume sliding-window testing."""

    input_names = ("image",)

    def __init__(self, cfg: VolumeSegConfig, datamodule: VolumeSegDataModule) -> None:
        super().__init__(cfg)
        plan = datamodule.plan
        assert plan is not None
        self.spec: dict[str, Any] = plan.model_spec(cfg)
        self.targets = plan.targets
        self.output_names = tuple(self.targets)  # type: ignore[misc]
        self.network = build_network(self.spec, deep_supervision=cfg.model.deep_supervision)
        n_outputs = len(self.spec["topology"]["features_per_stage"]) - 1 if cfg.model.deep_supervision else 1
        self.criterion = MultiTaskLoss(self.targets, deep_supervision_weights(n_outputs))
        self._val: dict[str, Any] = {}
        self._test: dict[str, Any] = {}
        self._test_builder: SampleBuilder | None = None

    # -- training -------------------------------------------------------------------------------------
    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        outputs = self.network(batch["image"])
        loss, parts = self.criterion(outputs, batch["targets"], batch["masks"], epoch=self.current_epoch)
        self.log_train("train_loss", loss, prog_bar=True)
        for name, value in parts.items():
            self.log_train(f"train_loss_{name}", value)
        return loss

    # -- validation -----------------------------------------------------------------------------------
    def on_validation_epoch_start(self) -> None:
        self._val = {
            name: DiceAccumulator() if spec.is_segmentation else MAEAccumulator() for name, spec in self.targets.items()
        }
        self._val["__debug_written"] = False

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        outputs = self.network(batch["image"])
        loss, parts = self.criterion(outputs, batch["targets"], batch["masks"])
        size = int(batch["image"].shape[0])
        self.log("val_loss", loss, prog_bar=True, batch_size=size, sync_dist=True)
        for name, value in parts.items():
            self.log(f"val_loss_{name}", value, batch_size=size, sync_dist=True)
        for name, spec in self.targets.items():
            self._accumulate(self._val[name], spec, outputs[name], batch["targets"][name], batch["masks"][name])
        if batch_idx == 0 and self._debug_due():
            self._write_debug_image(batch, outputs)

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            return
        for name, spec in self.targets.items():
            value = self._val[name].dice() if spec.is_segmentation else self._val[name].mae()
            if not math.isnan(value):
                self.log(f"val_{'dice' if spec.is_segmentation else 'mae'}_{name}", value, sync_dist=True)

    @staticmethod
    def _accumulate(
        accumulator: DiceAccumulator | MAEAccumulator,
        spec: TargetSpec,
        logits: torch.Tensor,
        target: torch.Tensor,
        mask: torch.Tensor,
    ) -> None:
        if isinstance(accumulator, DiceAccumulator):
            prediction = hard_prediction(logits, spec.activation)
            accumulator.update(prediction, label_classes(target, spec.activation, spec.out_channels), mask)
        else:
            accumulator.update(logits, target, mask)

    def _debug_due(self) -> bool:
        every = self.cfg.validation.debug_every_n_epochs  # type: ignore[attr-defined]
        if not every or self.trainer.sanity_checking or not self.trainer.is_global_zero:
            return False
        epoch = self.current_epoch + 1
        return epoch % every == 0 or epoch == self.trainer.max_epochs

    def _write_debug_image(self, batch: dict[str, Any], outputs: Mapping[str, torch.Tensor]) -> None:
        from medtrain.recipes.volume_seg.plots import write_debug_image

        run_dir = Path(self.trainer.default_root_dir)
        first = {name: activate(outputs[name][:1], spec.activation)[0] for name, spec in self.targets.items()}
        write_debug_image(
            batch["image"][0].float().cpu().numpy(),
            {name: batch["targets"][name][0].float().cpu().numpy() for name in self.targets},
            {name: self._prediction_for_plot(first[name], spec) for name, spec in self.targets.items()},
            run_dir / "plots" / "debug" / f"val_epoch_{self.current_epoch + 1:04d}",
            masks={name: batch["masks"][name][0].float().cpu().numpy() for name in self.targets},
            kinds={name: spec.kind for name, spec in self.targets.items()},
            max_frames=DEBUG_FRAMES,
        )

    @staticmethod
    def _prediction_for_plot(probability: torch.Tensor, spec: TargetSpec) -> np.ndarray:
        if spec.activation == "softmax":
            return probability.argmax(dim=0, keepdim=True).float().cpu().numpy()
        return probability.float().cpu().numpy()

    # -- test: whole volumes, chunk by chunk ------------------------------------------------------------
    def on_test_epoch_start(self) -> None:
        datamodule = self.trainer.datamodule
        if not isinstance(datamodule, VolumeSegDataModule):
            raise TypeError(f"volume-seg tests through its VolumeSegDataModule, got {type(datamodule).__name__}")
        self._test_builder = datamodule.evaluation_builder()
        self._test = {"model": {}, "baseline": {}, "per_volume": {}}
        for name, spec in self.targets.items():
            self._test["model"][name] = DiceAccumulator() if spec.is_segmentation else MAEAccumulator()
            self._test["baseline"][name] = DiceAccumulator() if spec.is_segmentation else ConstantBaseline()

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        """Score one held-out volume: sliding-window logits (the config's overlap, Gaussian weighting, mirroring)
        one chunk at a time (:func:`~medtrain.nn.sliding_window.default_chunk_size`: the whole volume up to 128³
        voxels, else four patches per axis), each chunk's labels, masks and auxiliary targets read and scored as
        soon as its logits are done, so no volume has to fit in memory. The logits equal those of one pass over
        the whole volume; the auxiliary targets of a volume larger than one chunk are derived chunk by chunk."""
        builder = self._test_builder
        assert builder is not None, "on_test_epoch_start sets the evaluation builder"
        index = int(batch["index"][0])
        case = builder.reader.cases[index]
        shape = builder.reader.spatial_shape(case.image)
        patch = tuple(int(p) for p in self.spec["patch_size"])
        per_volume = {name: DiceAccumulator() for name, spec in self.targets.items() if spec.is_segmentation}

        def score_chunk(starts: tuple[int, ...], sizes: tuple[int, ...], logits: dict[str, np.ndarray]) -> None:
            sample = builder.build(index, starts, sizes)
            for name, spec in self.targets.items():
                target, mask = sample["targets"][name][None], sample["masks"][name][None]
                prediction = torch.from_numpy(logits[name])[None]
                self._accumulate(self._test["model"][name], spec, prediction, target, mask)
                if spec.is_segmentation:
                    label = label_classes(target, spec.activation, spec.out_channels)
                    self._test["baseline"][name].update(torch.ones_like(label), label, mask)
                    per_volume[name].update(hard_prediction(prediction, spec.activation), label, mask)
                else:
                    self._test["baseline"][name].update(target, mask)

        inference = self.cfg.inference  # type: ignore[attr-defined]
        was_training = self.network.training
        self.network.eval()
        with torch.no_grad():
            sliding_window_inference_chunked(
                self.network,
                lambda starts, sizes: builder.image(index, starts, sizes),
                shape,
                patch,
                chunk_size=default_chunk_size(shape, patch),
                write_chunk=score_chunk,
                overlap=inference.overlap,
                batch_size=inference.batch_size,
                mirror_axes=tuple(inference.mirror_axes),
                weighting="gaussian" if inference.gaussian else "constant",
                out_channels={name: spec.out_channels for name, spec in self.targets.items()},
                device=self.device,
            )
        self.network.train(was_training)
        for name, accumulator in per_volume.items():
            self._test["per_volume"][f"{name}_{case.name}"] = accumulator.dice()

    def on_test_epoch_end(self) -> None:
        for name, value in self.test_metrics().items():
            self.log(f"test_{name}", value)

    def test_metrics(self) -> dict[str, float]:
        """Model and baseline metrics of the test epoch (see the module docstring)."""
        out: dict[str, float] = {}
        for name, spec in self.targets.items():
            model, baseline = self._test["model"][name], self._test["baseline"][name]
            if spec.is_segmentation:
                out[f"dice_{name}"] = model.dice()
                out[f"baseline_dice_{name}"] = baseline.dice()
                classes = model.per_class()
                if len(classes) > 1:
                    for index, (value, base) in enumerate(zip(classes, baseline.per_class(), strict=True)):
                        label = index + 1 if spec.activation == "softmax" else index
                        out[f"dice_{name}_{label}"] = value
                        out[f"baseline_dice_{name}_{label}"] = base
            else:
                out[f"mae_{name}"] = model.mae()
                out[f"baseline_mae_{name}"] = baseline.mae()
        out.update({f"dice_{key}": value for key, value in self._test["per_volume"].items()})
        return {key: value for key, value in out.items() if not math.isnan(value)}

    # -- export and reports ---------------------------------------------------------------------------
    def export_module(self) -> MultiTaskUNet:
        """The U-Net itself (in eval mode it returns ``{target: logits}`` at full resolution)."""
        return self.network

    def example_inputs(self) -> tuple[torch.Tensor, ...]:
        """A seeded normal patch: a constant input would make every instance norm divide rounding noise by
        ``sqrt(eps)``, so the ONNX check would compare amplified noise."""
        generator = torch.Generator().manual_seed(0)
        return (torch.randn(1, int(self.spec["in_channels"]), *self.spec["patch_size"], generator=generator),)

    def model_spec(self) -> dict[str, Any]:
        return self.spec

    def batch_size_of(self, batch: dict[str, Any]) -> int:
        return int(batch["image"].shape[0])

    def report_plots(self, run_dir: Path, datamodule: Any) -> list[Path]:
        from medtrain.recipes.volume_seg.plots import plot_dice_per_target

        if not self._test.get("model"):
            return []
        metrics = self.test_metrics()
        dice = {key[len("dice_") :]: value for key, value in metrics.items() if key.startswith("dice_")}
        baseline = {key[len("baseline_dice_") :]: v for key, v in metrics.items() if key.startswith("baseline_dice_")}
        dice = {key: value for key, value in dice.items() if key in baseline}
        if not dice:
            return []
        return [plot_dice_per_target(dice, baseline, run_dir / "plots" / "dice_per_target.png")]
