"""Config schema of the cardiac-guidance recipe: patient splits, frame cache, augmentation, dreamer model, loss."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt, model_validator

from medtrain.config.schema import DataConfig, LossConfig, ModelConfig, RunConfig, Section


class AugmentConfig(Section):
    """Label-safe ultrasound augmentation of training frames (``augment.LabelSafeAugment``); neutral values
    (gain ``[1, 1]``, speckle 0, ...) switch a transform off."""

    enabled: bool = True
    probability: float = Field(0.5, ge=0.0, le=1.0)
    gain: tuple[PositiveFloat, PositiveFloat] = (0.8, 1.25)
    gamma: tuple[PositiveFloat, PositiveFloat] = (0.8, 1.25)
    speckle: NonNegativeFloat = 0.1
    noise_std: NonNegativeFloat = 0.02
    max_shift: NonNegativeInt = 4


class CardiacData(DataConfig):
    """``data.root`` holds one folder per patient with ``transitions_dataset.json`` and its images.

    Splits are by patient: automatic by ``ratios`` (seeded), or the given lists when ``manual_splits`` is on or
    any list is given. Frames are decoded once into a memory-mapped cache under ``cache_dir`` (default
    ``<root>/.medtrain_cache``).
    """

    image_size: PositiveInt = 224
    cache_dir: Path | None = None
    manual_splits: bool = False
    train_patients: tuple[str, ...] = ()
    val_patients: tuple[str, ...] = ()
    test_patients: tuple[str, ...] = ()
    ratios: tuple[float, float, float] = (0.7, 0.15, 0.15)
    augment: AugmentConfig = AugmentConfig()

    @property
    def uses_manual_splits(self) -> bool:
        """True when the split comes from the patient lists rather than from ``ratios``."""
        return self.manual_splits or bool(self.train_patients or self.val_patients or self.test_patients)


class DreamerConfig(ModelConfig):
    """``CardiacDreamer``: ResNet backbone → tokens → transformer dreamer → 6-DOF guidance head.

    ``backbone_last_stride`` 2 is the classic ResNet (224 px → 7×7 features); 1 keeps the last stage at stride
    16 (64 px → 4×4 instead of 2×2), for small images.
    """

    backbone_depth: Literal[10, 18, 34] = 34
    base_width: PositiveInt = 64
    backbone_last_stride: Literal[1, 2] = 2
    pretrained_backbone: Path | None = None
    token_type: Literal["channel", "spatial"] = "channel"
    d_model: PositiveInt = 768
    num_heads: PositiveInt = 12
    num_layers: PositiveInt = 6
    ffn_ratio: PositiveFloat = 4.0
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    head_hidden: PositiveInt = 512

    @model_validator(mode="after")
    def _heads_divide(self) -> DreamerConfig:
        if self.d_model % self.num_heads:
            raise ValueError(f"model.d_model ({self.d_model}) must be a multiple of model.num_heads ({self.num_heads})")
        if self.token_type == "spatial" and self.d_model % 4:
            raise ValueError(f"model.d_model ({self.d_model}) must be a multiple of 4 for token_type 'spatial'")
        return self


class DreamerLossConfig(LossConfig):
    """``loss = SmoothL1_β(main) + lambda_t2_action·SmoothL1_β(aux) + lambda_latent·MSE(imagined, target tokens)
    + lambda_ft2_action·SmoothL1_β(guide(encode(ft2)), at2)``; ``primary_task_only`` trains on the main task alone.

    The last term trains the main task on the second frame of every transition too (its guidance label is
    ``at2``), which doubles the supervised frames at the cost of a backbone pass with gradient over ft2.
    """

    smooth_l1_beta: PositiveFloat = 1.0
    lambda_t2_action: NonNegativeFloat = 1.0
    lambda_latent: NonNegativeFloat = 0.2
    lambda_ft2_action: NonNegativeFloat = 0.0
    primary_task_only: bool = False

    @property
    def needs_next_frame(self) -> bool:
        """Whether training encodes ft2 (for the latent-consistency term or the main task on ft2)."""
        return (self.lambda_latent > 0 or self.lambda_ft2_action > 0) and not self.primary_task_only

    @property
    def trains_on_next_frame(self) -> bool:
        """Whether ft2 is encoded with gradient (the main task on ft2 counts towards the loss)."""
        return self.lambda_ft2_action > 0 and not self.primary_task_only


class CardiacConfig(RunConfig):
    recipe: str = "cardiac-guidance"
    data: CardiacData = CardiacData()
    model: DreamerConfig = DreamerConfig()
    loss: DreamerLossConfig = DreamerLossConfig()
