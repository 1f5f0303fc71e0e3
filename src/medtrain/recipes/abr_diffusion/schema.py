"""Config schema of the abr-diffusion recipe: the ABR table and its split, the U-Net, the diffusion process, the
multi-task loss with curriculum ramps, and what evaluation computes."""

from __future__ import annotations

from pydantic import Field, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt, model_validator

from medtrain.config.schema import DataConfig, LossConfig, ModelConfig, RunConfig, Section


class ABRData(DataConfig):
    """``data.root`` is the ABR table (``.npz``, ``.csv`` or ``.parquet``; layout in ARCHITECTURE.md).

    Rows are split by patient (stratified by each patient's majority class) by ``ratios``. With
    ``class_balanced_sampling`` the training loader draws rows with replacement, each with probability
    proportional to 1 / (training rows of its class), reseeded every epoch.
    """

    signal_length: PositiveInt = 200
    ratios: tuple[NonNegativeFloat, NonNegativeFloat, NonNegativeFloat] = (0.7, 0.15, 0.15)
    class_balanced_sampling: bool = False

    @model_validator(mode="after")
    def _ratios(self) -> ABRData:
        if abs(sum(self.ratios) - 1.0) > 1e-6 or self.ratios[0] == 0:
            raise ValueError(f"data.ratios (train, val, test) must sum to 1 with train > 0, got {list(self.ratios)}")
        return self


class ABRModel(ModelConfig):
    """``ABRUNet`` arguments (see ``recipes/abr_diffusion/model.py``); levels = ``len(channel_mult)``."""

    base_channels: PositiveInt = 64
    channel_mult: tuple[PositiveInt, ...] = (1, 2, 2, 4)
    d_state: PositiveInt = 64
    num_heads: PositiveInt = 4
    embed_dim: PositiveInt = 128
    cfg_dropout: float = Field(0.1, ge=0.0, lt=1.0)
    dropout: float = Field(0.1, ge=0.0, lt=1.0)

    @model_validator(mode="after")
    def _consistent(self) -> ABRModel:
        if not self.channel_mult:
            raise ValueError("model.channel_mult needs at least one level")
        if self.d_state % 2:
            raise ValueError(f"model.d_state must be even (conjugate pairs), got {self.d_state}")
        channels = [self.base_channels * m for m in self.channel_mult]
        if any(c % self.num_heads for c in channels):
            raise ValueError(f"model.num_heads ({self.num_heads}) must divide every level's channels {channels}")
        return self


class DiffusionConfig(Section):
    """Cosine schedule of ``num_steps`` training steps (v-prediction); DDIM sampling with ``sampling_steps``,
    classifier-free guidance ``v = v_u + guidance_scale · (v_c − v_u)`` (1 = plain conditional model) and DDIM's
    ``eta`` (0 = deterministic)."""

    num_steps: PositiveInt = 1000
    sampling_steps: PositiveInt = 50
    guidance_scale: NonNegativeFloat = 2.0
    eta: float = Field(0.0, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _steps(self) -> DiffusionConfig:
        if self.sampling_steps > self.num_steps:
            raise ValueError(
                f"diffusion.sampling_steps ({self.sampling_steps}) must not exceed "
                f"diffusion.num_steps ({self.num_steps})"
            )
        return self


class LossWeights(Section):
    """Final weight of each loss term. ``peak_latency`` weighs the masked Gaussian NLL of wave-V latency and
    amplitude together (the seed's name)."""

    diffusion: NonNegativeFloat = 1.0
    peak_exist: NonNegativeFloat = 0.5
    peak_latency: NonNegativeFloat = 1.0
    classification: NonNegativeFloat = 1.0
    threshold: NonNegativeFloat = 0.8


class Ramp(Section):
    """Curriculum of one term: weight 0 before ``start_epoch``, rising linearly to its full weight over
    ``ramp_epochs`` (``medtrain.nn.losses.ramp_weight``; fractional epochs, so it rises step by step)."""

    start_epoch: NonNegativeFloat = 0.0
    ramp_epochs: NonNegativeFloat = 0.0


class Curriculum(Section):
    """One :class:`Ramp` per loss term (all off by default: full weight from the first step)."""

    diffusion: Ramp = Ramp()
    peak_exist: Ramp = Ramp()
    peak_latency: Ramp = Ramp()
    classification: Ramp = Ramp()
    threshold: Ramp = Ramp()


class ABRLoss(LossConfig):
    """``loss = Σ_k w_k(epoch) · (clean_k + noisy_head_weight · noisy_k)`` over the clinical terms plus
    ``w_diffusion(epoch) · MSE(v̂, v)`` (see ``task.py``). ``focal_gamma`` is γ of the focal loss;
    ``class_weighting`` weighs classes by ``N / (K · n_k)`` over the training rows (sklearn's "balanced");
    ``huber_delta`` is δ of the threshold's Huber loss in normalised units (training standard deviations). Class
    weighting and ``data.class_balanced_sampling`` both correct for the imbalance: use one of them, not both."""

    weights: LossWeights = LossWeights()
    curriculum: Curriculum = Curriculum()
    focal_gamma: NonNegativeFloat = 2.0
    class_weighting: bool = True
    huber_delta: PositiveFloat = 1.0
    noisy_head_weight: NonNegativeFloat = 0.1


class EvaluationConfig(Section):
    """What the test step computes besides the clinical heads' metrics.

    ``generate_samples``: DDIM-generated waveforms for the first N test conditions (0 = none);
    ``confidence_samples``: K guided samples behind the predictor's percentile intervals, at ``confidence_level``;
    ``age_bins``: inner edges of the age groups (years) of the stratified metrics, the outer ones being 0 and ∞;
    ``denoise_timestep``: the noise level t of the one-step denoising reconstruction scored by the signal metrics.
    """

    generate_samples: NonNegativeInt = 0
    confidence_samples: int = Field(16, ge=2)
    confidence_level: float = Field(0.9, gt=0.0, lt=1.0)
    age_bins: tuple[PositiveFloat, ...] = (18.0, 40.0, 65.0)
    denoise_timestep: NonNegativeInt = 100

    @model_validator(mode="after")
    def _sorted_bins(self) -> EvaluationConfig:
        if list(self.age_bins) != sorted(set(self.age_bins)):
            raise ValueError(f"evaluation.age_bins must be increasing, got {list(self.age_bins)}")
        return self


class ABRConfig(RunConfig):
    recipe: str = "abr-diffusion"
    data: ABRData = ABRData()
    model: ABRModel = ABRModel()
    diffusion: DiffusionConfig = DiffusionConfig()
    loss: ABRLoss = ABRLoss()
    evaluation: EvaluationConfig = EvaluationConfig()

    @model_validator(mode="after")
    def _denoise_step(self) -> ABRConfig:
        if self.evaluation.denoise_timestep >= self.diffusion.num_steps:
            raise ValueError(
                f"evaluation.denoise_timestep ({self.evaluation.denoise_timestep}) must be below "
                f"diffusion.num_steps ({self.diffusion.num_steps})"
            )
        return self
