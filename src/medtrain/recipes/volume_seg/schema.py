"""Config schema of the volume-seg recipe: dataset layout and targets, planning, patches, augmentation,
auxiliary targets, the multi-task U-Net and its per-target losses, inference.

Targets are named after their label files (``labels/<vol>_<target>.<ext>``). ``data.targets`` may list them
with their settings; targets found on disk but not listed get the defaults of :class:`TargetConfig`.
Auxiliary targets (``auxiliary_tasks``) are derived per patch from a source target and need no files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt, model_validator

from medtrain.config.schema import (
    DataConfig,
    LossConfig,
    ModelConfig,
    OptimConfig,
    RunConfig,
    SchedulerConfig,
    Section,
)

Activation = Literal["sigmoid", "softmax", "none"]
AuxKind = Literal["distance_transform", "surface_normals", "structure_tensor", "inplane_direction"]


class LossTerm(Section):
    """One loss of a target: ``weight · loss(prediction, target, mask)``, active from ``start_epoch`` on.

    ``name`` is a loss of :func:`medtrain.nn.seg_losses.build_loss` (``SoftDiceLoss``, ``BCEWithLogitsLoss``,
    ``CrossEntropyLoss``, ``DiceCELoss``, ``DiceBCELoss``, ``FocalLoss``, ``MaskedMSELoss``, ``MaskedL1Loss``,
    ``MaskedSmoothL1Loss``, ``SignedDistanceLoss``, ``CosineSimilarityLoss``, ``NormalSmoothnessLoss``, or a
    short alias); ``kwargs`` go to its constructor.
    """

    name: str
    weight: NonNegativeFloat = 1.0
    kwargs: dict[str, Any] = Field(default_factory=dict)
    start_epoch: NonNegativeInt = 0


class TargetConfig(Section):
    """A target read from label files.

    ``out_channels`` (alias ``channels`` in the seed) defaults to the input channels, as the seed describes;
    a ``softmax`` target's labels hold class indices ``0 … out_channels − 1``, a ``sigmoid`` target's labels
    are ``0/1`` per channel, a ``none`` target is a regression of the label values. ``losses`` default to
    Dice+BCE (sigmoid), Dice+CE (softmax) or masked MSE (none); ``weight`` scales the target's total loss.
    """

    out_channels: PositiveInt | None = None
    activation: Activation = "sigmoid"
    losses: tuple[LossTerm, ...] = ()
    weight: NonNegativeFloat = 1.0


class AuxiliaryTaskConfig(Section):
    """A target derived per patch from ``source_target`` (``aux_targets.compute_aux_target``).

    ``distance_transform`` (``distance_type`` signed | inside | outside), ``surface_normals`` (unit gradient of
    the signed distance), ``structure_tensor`` and ``inplane_direction`` (from the signed distance or the
    binary mask, ``compute_from``, with ``grad_sigma`` and ``tensor_sigma``). Its channels follow from the type
    and dimensionality. ``loss_weight`` scales the task's total loss.
    """

    type: AuxKind
    source_target: str
    loss_weight: NonNegativeFloat = 0.1
    distance_type: Literal["signed", "inside", "outside"] = "signed"
    compute_from: Literal["sdt", "binary"] = "sdt"
    grad_sigma: PositiveFloat = 1.0
    tensor_sigma: PositiveFloat = 1.5
    losses: tuple[LossTerm, ...] = ()


class AugmentationConfig(Section):
    """MONAI dictionary transforms applied alike to image, labels and masks (``augment``), with nnU-Net's
    probabilities by default; a probability of 0 switches a transform off."""

    enabled: bool = True
    rotation_degrees: NonNegativeFloat | None = None  # None: 30° in 3-D, 180° in 2-D (nnU-Net)
    scale_range: tuple[PositiveFloat, PositiveFloat] = (0.7, 1.4)
    mirror_axes: tuple[NonNegativeInt, ...] | None = None  # None: every spatial axis
    elastic: bool = False
    noise_std: tuple[NonNegativeFloat, NonNegativeFloat] = (0.0, 0.1)
    blur_sigma: tuple[NonNegativeFloat, NonNegativeFloat] = (0.5, 1.0)
    brightness: tuple[PositiveFloat, PositiveFloat] = (0.75, 1.25)
    contrast: tuple[PositiveFloat, PositiveFloat] = (0.75, 1.25)
    gamma: tuple[PositiveFloat, PositiveFloat] = (0.7, 1.5)
    low_resolution: tuple[PositiveFloat, PositiveFloat] = (0.5, 1.0)
    probabilities: dict[str, float] = Field(default_factory=dict)


class VolumeSegData(DataConfig):
    """``data.root`` is a dataset folder (``images/``, ``labels/``, optional ``masks/``, ``dataset.json``) or a
    folder written by ``medtrain prepare volume-seg`` (which points at its dataset).

    Splits are by volume, never by patch: the lists ``train_volumes``/``val_volumes``/``test_volumes`` when
    any is given, else ``ratios`` (seeded); ``train_split`` (seed flag ``--train-split``) means ratios
    ``(train_split, 1 − train_split, 0)``. ``patch_size`` None is planned from spacing, median shape and
    ``memory_budget_mb``; ``batch_size`` 0 likewise. Foreground oversampling centres patches on voxels of
    ``oversample_target`` (default: the rarest segmentation target in the training volumes).
    """

    format: Literal["zarr", "tif", "nifti"] | None = None
    targets: dict[str, TargetConfig] = Field(default_factory=dict)
    in_channels: PositiveInt | None = None
    spacing: tuple[PositiveFloat, ...] | None = None
    normalization: Literal["zscore", "ct", "minmax", "robust", "none"] = "zscore"
    patch_size: tuple[PositiveInt, ...] | None = None
    batch_size: NonNegativeInt = 2  # type: ignore[assignment]
    memory_budget_mb: PositiveFloat = 4096.0
    patch_overlap: float = Field(0.0, ge=0.0, lt=1.0)
    min_labeled_ratio: float = Field(0.1, ge=0.0, le=1.0)
    min_bbox_percent: float = Field(0.0, ge=0.0, le=100.0)
    foreground_oversampling: float = Field(0.33, ge=0.0, le=1.0)
    oversample_target: str | None = None  # None: the segmentation target with the fewest foreground voxels
    samples_per_epoch: PositiveInt | None = None
    train_split: float | None = Field(None, gt=0.0, le=1.0)
    ratios: tuple[float, float, float] = (0.6, 0.2, 0.2)
    train_volumes: tuple[str, ...] = ()
    val_volumes: tuple[str, ...] = ()
    test_volumes: tuple[str, ...] = ()
    cache_dir: Path | None = None
    augmentation: AugmentationConfig = AugmentationConfig()

    @property
    def split_ratios(self) -> tuple[float, float, float]:
        """``(train_split, 1 − train_split, 0)`` when ``train_split`` is set, else ``ratios``."""
        if self.train_split is not None:
            return (self.train_split, 1.0 - self.train_split, 0.0)
        return self.ratios


class UNetConfig(ModelConfig):
    """The planned multi-task U-Net (``nn.unet.MultiTaskUNet``): topology from ``planner.plan_topology``."""

    base_features: PositiveInt = 32
    max_features: PositiveInt = 320
    min_feature_map_size: PositiveInt = 4
    max_pools: PositiveInt = 999
    shared_decoder: bool = False
    deep_supervision: bool = True


class VolumeSegLoss(LossConfig):
    """Loss options for every target: ``losses`` (seed flag ``--loss``) are the loss names of targets that list
    none; ``on_label_only`` (``--loss-on-label-only``) computes a target's loss only where its label is
    non-zero when it has no mask file (sparse labels where 0 means "not annotated")."""

    losses: tuple[str, ...] = ()
    on_label_only: bool = False


class InferenceConfig(Section):
    """Sliding-window prediction: window overlap, Gaussian weighting, test-time mirroring, the volume chunk
    processed at a time (resumable by chunk), output format and what is written."""

    overlap: float = Field(0.5, ge=0.0, lt=1.0)
    batch_size: PositiveInt = 4
    gaussian: bool = True
    mirror_axes: tuple[NonNegativeInt, ...] = ()
    chunk_size: tuple[PositiveInt, ...] | None = None
    output_format: Literal["zarr", "tif", "nifti"] = "zarr"
    save_probabilities: bool = False


class ValidationConfig(Section):
    """Per-patch validation: at most ``max_patches`` patches of the validation volumes (evenly spread; None =
    all), and the debug image of the first validation batch every ``debug_every_n_epochs`` epochs and at the
    last (0 = never): a PNG grid for 2-D, an animated GIF through z for 3-D, under ``plots/debug/``."""

    max_patches: PositiveInt | None = 64
    debug_every_n_epochs: NonNegativeInt = 5


class PrepareConfig(Section):
    """``medtrain prepare volume-seg --from-nnunet DatasetXXX``: import an nnU-Net raw dataset first, with one
    binary target per label (``per_label``) or one multi-class target (``multiclass``, named ``target_name``)."""

    from_nnunet: Path | None = None
    nnunet_labels: Literal["per_label", "multiclass"] = "per_label"
    target_name: str = "label"


class VolumeSegConfig(RunConfig):
    recipe: str = "volume-seg"
    data: VolumeSegData = VolumeSegData()
    model: UNetConfig = UNetConfig()
    loss: VolumeSegLoss = VolumeSegLoss()
    optim: OptimConfig = OptimConfig(name="sgd", lr=0.01, momentum=0.99, nesterov=True, weight_decay=3e-5)
    scheduler: SchedulerConfig = SchedulerConfig(name="poly")
    auxiliary_tasks: dict[str, AuxiliaryTaskConfig] = Field(default_factory=dict)
    inference: InferenceConfig = InferenceConfig()
    validation: ValidationConfig = ValidationConfig()
    prepare: PrepareConfig = PrepareConfig()

    @model_validator(mode="after")
    def _auxiliary_sources(self) -> VolumeSegConfig:
        for name, task in self.auxiliary_tasks.items():
            if name in self.data.targets:
                raise ValueError(f"auxiliary_tasks.{name}: the name is already a target in data.targets")
            if self.data.targets and task.source_target not in self.data.targets:
                known = ", ".join(sorted(self.data.targets))
                raise ValueError(
                    f"auxiliary_tasks.{name}.source_target '{task.source_target}' is not a target (known: {known})"
                )
        return self
