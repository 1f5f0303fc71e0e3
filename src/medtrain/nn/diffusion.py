"""Gaussian diffusion for v-prediction models: the cosine noise schedule, forward noising, v/x0/ε conversions and
deterministic (or η-stochastic) DDIM sampling with classifier-free guidance.

Why our own few lines rather than MONAI's schedulers (``monai.networks.schedulers``, which do have a cosine schedule
and ``prediction_type="v_prediction"``; ``diffusers`` is not a dependency of medtrain):

- ``import monai.networks.schedulers`` imports all of MONAI (data, transforms, handlers and through them mlflow,
  nibabel, scipy.signal): about 7 s on top of torch on the project's 2-core machine, for a dozen lines of formulas;
  and MONAI computes the table in float32, ours is float64.
- MONAI's ``DDIMScheduler.step`` derives the previous timestep as ``t − T // steps`` while its ``set_timesteps``
  lays the timesteps on ``round(linspace(T−1, 0, steps))``: for T = 1000 and 50 steps the state is moved from 979
  to 959 but the next call is made at 958. Our ``ddim_step`` takes ``t`` and ``t_prev`` explicitly and is stateless.

The tests check that our ᾱ table equals MONAI's ``NoiseSchedules["cosine"]`` and that ``ddim_step`` equals MONAI's
``DDIMScheduler.step`` (v-prediction, η = 0 and η > 0) wherever the two timestep grids agree.

Conventions (as in Nichol & Dhariwal's code, MONAI and diffusers): integer timesteps ``t ∈ {0, …, T−1}``;
``alpha_bar[t] = ∏_{j≤t} (1 − β_j)`` is the signal level after ``t + 1`` noising steps, i.e. the closed form
``f(t + 1)/f(0)`` with ``f(τ) = cos²(((τ/T) + s)/(1 + s) · π/2)`` wherever no β was clipped (only the last one,
t = T−1, is). ``t_prev = −1`` stands for the clean signal, ᾱ = 1.

Guidance convention: ``v = v_u + w · (v_c − v_u)``; ``w = 1`` is the plain conditional model, ``w = 0`` the
unconditional one, ``w > 1`` pushes towards the condition.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

__all__ = [
    "CosineSchedule",
    "ModelFn",
    "ddim_step",
    "ddim_timesteps",
    "guided_v",
    "guided_v_two_pass",
    "sample_ddim",
]

ModelFn = Callable[[Tensor, Tensor, Tensor | None, Tensor], Tensor]
"""``model_fn(x_t [B, ...], t [B] long, cond [B, ...] | None, drop_mask [B] bool) -> v [B, ...]``; rows where
``drop_mask`` is True must ignore ``cond`` (the unconditional branch). It must treat rows independently (eval mode, no
batch statistics) for batched and two-pass guidance to agree."""


class CosineSchedule:
    """Cosine noise schedule (Nichol & Dhariwal 2021) with the v-parameterisation (Salimans & Ho 2022).

    ``f(τ) = cos²(((τ/T) + s)/(1 + s) · π/2)``, ``β_t = min(1 − f(t+1)/f(t), 0.999)``,
    ``alpha_bar[t] = ∏_{j≤t}(1 − β_j)`` (float64 tables on the CPU; each method casts them to its input's device
    and dtype). With ``a = √ᾱ_t`` and ``σ = √(1 − ᾱ_t)``:

    - ``q_sample``:  ``x_t = a·x0 + σ·ε``
    - ``v_target``:  ``v = a·ε − σ·x0``
    - ``predict_x0_eps``:  ``x0 = a·x_t − σ·v``,  ``ε = σ·x_t + a·v``  (exact inverses since a² + σ² = 1)

    Per-sample timesteps ``t`` are ``[B]`` integer tensors in ``[0, T)``; coefficients broadcast over the trailing
    dimensions of ``x``.
    """

    def __init__(self, num_steps: int = 1000, s: float = 0.008) -> None:
        if num_steps < 1:
            raise ValueError(f"num_steps must be positive, got {num_steps}")
        tau = torch.arange(num_steps + 1, dtype=torch.float64)
        f = torch.cos(((tau / num_steps) + s) / (1 + s) * (math.pi / 2)) ** 2
        self.num_steps = num_steps
        self.s = s
        self.betas: Tensor = (1 - f[1:] / f[:-1]).clamp(0.0, 0.999)
        self.alphas: Tensor = 1 - self.betas
        self.alpha_bar: Tensor = torch.cumprod(self.alphas, dim=0)
        self._cache: dict[tuple[torch.device, torch.dtype], Tensor] = {}

    def _alpha_bar_on(self, device: torch.device, dtype: torch.dtype) -> Tensor:
        key = (device, dtype)
        if key not in self._cache:
            self._cache[key] = self.alpha_bar.to(dtype).to(device)
        return self._cache[key]

    def alpha_bar_at(self, t: Tensor | int, like: Tensor) -> Tensor:
        """ᾱ at integer timesteps ``t`` (``−1`` → 1.0) in ``like``'s device and dtype, shaped to broadcast against
        ``like`` (``[B, 1, …]`` for a ``[B]`` tensor ``t``; a scalar for an int)."""
        table = self._alpha_bar_on(like.device, like.dtype)
        if isinstance(t, int):
            if not -1 <= t < self.num_steps:
                raise ValueError(f"timestep {t} outside [-1, {self.num_steps})")
            return table[t] if t >= 0 else torch.ones((), device=like.device, dtype=like.dtype)
        if t.ndim != 1 or t.shape[0] != like.shape[0]:
            raise ValueError(f"timesteps must be [B]=[{like.shape[0]}], got {tuple(t.shape)}")
        t = t.to(device=like.device, dtype=torch.long)
        values = torch.where(t >= 0, table[t.clamp(min=0)], torch.ones_like(table[0]))
        return values.view(-1, *([1] * (like.ndim - 1)))

    def _coefficients(self, t: Tensor, like: Tensor) -> tuple[Tensor, Tensor]:
        ab = self.alpha_bar_at(t, like)
        return ab.sqrt(), (1.0 - ab).sqrt()

    def q_sample(self, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """``x_t = √ᾱ_t·x0 + √(1−ᾱ_t)·noise``."""
        a, sigma = self._coefficients(t, x0)
        return a * x0 + sigma * noise

    def v_target(self, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """``v = √ᾱ_t·noise − √(1−ᾱ_t)·x0`` (the regression target of a v-prediction model)."""
        a, sigma = self._coefficients(t, x0)
        return a * noise - sigma * x0

    def predict_x0_eps(self, x_t: Tensor, t: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """``(x0, ε) = (√ᾱ_t·x_t − √(1−ᾱ_t)·v,  √(1−ᾱ_t)·x_t + √ᾱ_t·v)``."""
        a, sigma = self._coefficients(t, x_t)
        return a * x_t - sigma * v, sigma * x_t + a * v


def ddim_timesteps(num_train_steps: int, num_sampling_steps: int) -> list[int]:
    """DDIM's uniform sub-sequence, descending: ``τ_i = ⌊i·T/S⌋`` for ``i = S−1, …, 0`` (for T = 1000, S = 50:
    980, 960, …, 20, 0 — the same as DDIM's ``range(0, T, T // S)`` whenever S divides T). Each step goes from
    ``τ_i`` to ``τ_{i−1}``; the last from 0 to −1 (ᾱ = 1), so the sampler returns its x0 prediction."""
    if not 1 <= num_sampling_steps <= num_train_steps:
        raise ValueError(f"need 1 <= sampling steps ({num_sampling_steps}) <= training steps ({num_train_steps})")
    return [(i * num_train_steps) // num_sampling_steps for i in range(num_sampling_steps - 1, -1, -1)]


def ddim_step(
    schedule: CosineSchedule,
    x_t: Tensor,
    t: int,
    t_prev: int,
    v: Tensor,
    eta: float = 0.0,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """One DDIM update (Song et al. 2021, eq. 12) from a v prediction; returns ``(x_{t_prev}, x0_pred)``.

    ``x0, ε = predict_x0_eps(x_t, t, v)``;
    ``σ = η·√((1−ᾱ_prev)/(1−ᾱ_t))·√(1 − ᾱ_t/ᾱ_prev)``;
    ``x_prev = √ᾱ_prev·x0 + √(1 − ᾱ_prev − σ²)·ε + σ·z``, ``z ~ N(0, I)`` drawn from ``generator`` only when σ > 0.
    ``t_prev = −1`` means ᾱ_prev = 1 (then ``x_prev = x0``). η = 0 is deterministic DDIM, η = 1 DDPM-like.
    """
    if not -1 <= t_prev < t < schedule.num_steps:
        raise ValueError(f"need -1 <= t_prev ({t_prev}) < t ({t}) < {schedule.num_steps}")
    t_batch = torch.full((x_t.shape[0],), t, dtype=torch.long, device=x_t.device)
    x0, eps = schedule.predict_x0_eps(x_t, t_batch, v)
    ab_t = float(schedule.alpha_bar[t])  # float64 host values: no device round trip per step
    ab_prev = float(schedule.alpha_bar[t_prev]) if t_prev >= 0 else 1.0
    sigma = eta * math.sqrt((1 - ab_prev) / (1 - ab_t)) * math.sqrt(1 - ab_t / ab_prev)
    x_prev = math.sqrt(ab_prev) * x0 + math.sqrt(max(1 - ab_prev - sigma**2, 0.0)) * eps
    if sigma > 0:
        noise = torch.randn(x_t.shape, generator=generator, device=x_t.device, dtype=x_t.dtype)
        x_prev = x_prev + sigma * noise
    return x_prev, x0


def _check_scale(guidance_scale: float) -> None:
    if guidance_scale < 0:
        raise ValueError(f"guidance_scale must be >= 0, got {guidance_scale}")


def guided_v(model_fn: ModelFn, x: Tensor, t: Tensor, cond: Tensor | None, guidance_scale: float) -> Tensor:
    """Classifier-free-guided prediction ``v_u + w·(v_c − v_u)`` with ONE model call on a doubled batch: rows
    ``[:B]`` are conditional (``drop_mask`` False), rows ``[B:]`` the same inputs with the condition dropped. With
    ``w = 1`` (or no ``cond``) only the conditional (unconditional) half is run, with ``w = 0`` only the
    unconditional one."""
    _check_scale(guidance_scale)
    batch = x.shape[0]
    keep = torch.zeros(batch, dtype=torch.bool, device=x.device)
    if cond is None:
        return model_fn(x, t, None, ~keep)
    if guidance_scale == 1.0:
        return model_fn(x, t, cond, keep)
    if guidance_scale == 0.0:
        return model_fn(x, t, cond, ~keep)
    drop = torch.cat([keep, ~keep])
    v = model_fn(torch.cat([x, x]), torch.cat([t, t]), torch.cat([cond, cond]), drop)
    v_c, v_u = v[:batch], v[batch:]
    return v_u + guidance_scale * (v_c - v_u)


def guided_v_two_pass(model_fn: ModelFn, x: Tensor, t: Tensor, cond: Tensor | None, guidance_scale: float) -> Tensor:
    """Same result as :func:`guided_v`, with the conditional and unconditional passes as two separate model calls
    (the baseline for the batched version's tests and benchmark)."""
    _check_scale(guidance_scale)
    keep = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
    if cond is None:
        return model_fn(x, t, None, ~keep)
    v_c = model_fn(x, t, cond, keep)
    v_u = model_fn(x, t, cond, ~keep)
    return v_u + guidance_scale * (v_c - v_u)


@torch.no_grad()
def sample_ddim(
    model_fn: ModelFn,
    shape: Sequence[int],
    schedule: CosineSchedule,
    steps: int = 50,
    guidance_scale: float = 1.0,
    cond: Tensor | None = None,
    eta: float = 0.0,
    generator: torch.Generator | None = None,
    *,
    x_T: Tensor | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
    batched_cfg: bool = True,
) -> Tensor:
    """Generate ``x0`` of ``shape = (B, ...)`` by DDIM over :func:`ddim_timesteps` (``steps`` of them) from
    ``x_T ~ N(0, I)`` (drawn from ``generator`` on ``device`` unless ``x_T`` is given), guiding every step with
    :func:`guided_v` (``batched_cfg=True``, one forward on 2B rows) or :func:`guided_v_two_pass`. Runs under
    ``torch.no_grad``; ``model_fn`` should be in eval mode."""
    if x_T is None:
        x = torch.randn(tuple(shape), generator=generator, device=device, dtype=dtype)
    else:
        if tuple(x_T.shape) != tuple(shape):
            raise ValueError(f"x_T has shape {tuple(x_T.shape)}, expected {tuple(shape)}")
        x = x_T
    if cond is not None and cond.shape[0] != x.shape[0]:
        raise ValueError(f"cond has batch {cond.shape[0]}, samples {x.shape[0]}")
    guide = guided_v if batched_cfg else guided_v_two_pass
    timesteps = ddim_timesteps(schedule.num_steps, steps)
    for t, t_prev in zip(timesteps, [*timesteps[1:], -1], strict=True):
        t_batch = torch.full((x.shape[0],), t, dtype=torch.long, device=x.device)
        v = guide(model_fn, x, t_batch, cond, guidance_scale)
        x, _ = ddim_step(schedule, x, t, t_prev, v, eta=eta, generator=generator)
    return x
