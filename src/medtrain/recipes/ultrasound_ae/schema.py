"""Config schema of the ultrasound-ae recipe: signal chain, tokenisation, splits, autoencoder, loss, probe."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt, model_validator

from medtrain.config.schema import DataConfig, LossConfig, ModelConfig, RunConfig, Section


class SignalConfig(Section):
    """Signal chain (``signal.SignalChain``): band-pass → TGC → depth clip → envelope → log → decimation."""

    sampling_rate_hz: PositiveFloat | None = None  # None: meta.json, else 50 MHz
    bandpass: bool = True
    low_hz: PositiveFloat = 8e6
    high_hz: PositiveFloat = 12e6
    order: PositiveInt = 5
    tgc_coefficient: NonNegativeFloat = 0.3
    depth_samples: PositiveInt = 1300
    envelope: bool = True
    log_compression: bool = False
    dynamic_range_db: PositiveFloat = 60.0
    decimation: PositiveInt = 10

    @model_validator(mode="after")
    def _band_order(self) -> SignalConfig:
        if self.bandpass and not self.low_hz < self.high_hz:
            raise ValueError(f"signal.low_hz ({self.low_hz}) must be below signal.high_hz ({self.high_hz})")
        return self


class TokenConfig(Section):
    """Pulse windows → tokens ``[C, depth, pulses_per_token]``; joystick → class labels; tokens → sequences."""

    pulses_per_token: PositiveInt = 5
    stride: PositiveInt = 2
    tokens_per_sequence: PositiveInt = 10
    dead_zone: NonNegativeFloat = 0.2


class UltrasoundData(DataConfig):
    """``data.root`` is the processed folder written by ``medtrain prepare ultrasound-ae``."""

    signal: SignalConfig = SignalConfig()
    tokens: TokenConfig = TokenConfig()
    mode: Literal["token", "sequence"] = "token"
    split_by: Literal["session", "experiment"] = "session"
    test_groups: tuple[str, ...] = ()
    ratios: tuple[float, float, float] = (0.6, 0.2, 0.2)
    normalization: Literal["minmax", "zscore", "minmax+zscore", "none"] = "zscore"
    augment_gain: float = Field(0.0, ge=0.0, lt=1.0)  # training tokens × U(1 − g, 1 + g) per channel (raw gain)
    augment_shift: NonNegativeInt = 0  # training tokens moved by up to this many (decimated) samples in depth


class AutoencoderConfig(ModelConfig):
    """``CNNAutoencoder``: width reducer, four conv stages, pooled linear embedding with LayerNorm, mirrored decoder."""

    embedding_dim: PositiveInt = 256
    widths: tuple[PositiveInt, PositiveInt, PositiveInt, PositiveInt] = (32, 64, 128, 512)
    pool_length: PositiveInt = 4


class AutoencoderLossConfig(LossConfig):
    """``loss = mse_weight · MSE + l1_weight · L1 + embedding_l2 · mean(‖z‖²)``."""

    mse_weight: NonNegativeFloat = 0.8
    l1_weight: NonNegativeFloat = 0.2
    embedding_l2: NonNegativeFloat = Field(0.001, ge=0.0)


class ProbeConfig(Section):
    """Linear probe of the joystick class on frozen embeddings (logistic regression, fit on train)."""

    max_train_samples: PositiveInt = 20000
    c: PositiveFloat = 1.0


class UltrasoundConfig(RunConfig):
    recipe: str = "ultrasound-ae"
    data: UltrasoundData = UltrasoundData()
    model: AutoencoderConfig = AutoencoderConfig()
    loss: AutoencoderLossConfig = AutoencoderLossConfig()
    probe: ProbeConfig = ProbeConfig()
