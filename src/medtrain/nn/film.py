"""Conditioning parts for diffusion networks: sinusoidal timestep embedding, FiLM (feature-wise affine modulation)
and an embedding of static parameters with a learned "null" condition for classifier-free guidance.

Typical use in a block: ``h = film(h, t_emb + c_emb)`` where ``t_emb = TimestepEmbedding(...)(t)`` and
``c_emb = ConditionEmbedding(...)(static, drop_mask)``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["ConditionEmbedding", "FiLM", "TimestepEmbedding", "sinusoidal_embedding"]


def sinusoidal_embedding(t: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Sinusoidal embedding of (possibly fractional) timesteps, as in DDPM / ADM (guided-diffusion).

    With ``half = dim // 2`` and frequencies ``ω_j = max_period^(−j/half)`` for ``j = 0..half−1``:
    ``emb[b] = [cos(t_b ω_0), …, cos(t_b ω_{half−1}), sin(t_b ω_0), …, sin(t_b ω_{half−1})]``, and a zero column is
    appended when ``dim`` is odd.

    Args:
        t: ``[B]`` timesteps (integer or float).
        dim: embedding size (≥ 1).
        max_period: the slowest period, controls the lowest frequency.

    Returns:
        ``[B, dim]`` float32 (float64 if ``t`` is float64).
    """
    if t.ndim != 1:
        raise ValueError(f"expected timesteps of shape [B], got {tuple(t.shape)}")
    if dim < 1:
        raise ValueError(f"dim must be positive, got {dim}")
    dtype = torch.float64 if t.dtype == torch.float64 else torch.float32
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=dtype) / max(half, 1))
    args = t.to(dtype)[:, None] * freqs[None, :]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, emb.new_zeros(emb.shape[0], 1)], dim=-1)
    return emb


class TimestepEmbedding(nn.Module):
    """``t [B]`` → ``[B, out_dim]``: ``Linear(dim→hidden) → SiLU → Linear(hidden→out_dim)`` on
    ``sinusoidal_embedding(t, dim)`` (ADM's time embedding). ``out_dim`` defaults to ``hidden``."""

    def __init__(self, dim: int, hidden: int, out_dim: int | None = None, max_period: float = 10000.0) -> None:
        super().__init__()
        self.dim = dim
        self.max_period = max_period
        self.out_dim = hidden if out_dim is None else out_dim
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.SiLU(), nn.Linear(hidden, self.out_dim))

    def forward(self, t: Tensor) -> Tensor:
        """Embed timesteps ``t [B]``; see the class docstring."""
        emb = sinusoidal_embedding(t, self.dim, self.max_period)
        return self.mlp(emb.to(self.mlp[0].weight.dtype))


class FiLM(nn.Module):
    """Feature-wise linear modulation: ``FiLM(x, c) = x · (1 + scale) + shift`` with
    ``[scale, shift] = Linear(SiLU(c))`` split in two, one value per channel, broadcast over trailing dimensions.

    ``x`` is ``[B, channels, ...]`` (channels first) and ``c`` is ``[B, cond_dim]``. The linear layer is
    zero-initialised, so a freshly built FiLM is the identity (``scale = shift = 0``) and the conditioning is learned
    in from there (as ADM's zero-initialised output layers).
    """

    def __init__(self, cond_dim: int, channels: int) -> None:
        super().__init__()
        self.channels = channels
        self.proj = nn.Linear(cond_dim, 2 * channels)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def scale_shift(self, cond: Tensor) -> tuple[Tensor, Tensor]:
        """``cond [B, cond_dim]`` → ``(scale, shift)``, each ``[B, channels]``."""
        scale, shift = self.proj(nn.functional.silu(cond)).chunk(2, dim=-1)
        return scale, shift

    def forward(self, x: Tensor, cond: Tensor) -> Tensor:
        """Modulate ``x [B, channels, ...]`` by ``cond [B, cond_dim]``; see the class docstring."""
        if x.shape[1] != self.channels:
            raise ValueError(f"expected {self.channels} channels at dim 1, got {tuple(x.shape)}")
        scale, shift = self.scale_shift(cond)
        view = (*scale.shape, *([1] * (x.ndim - 2)))
        return x * (1 + scale.view(view)) + shift.view(view)


class ConditionEmbedding(nn.Module):
    """Embedding of static parameters (e.g. normalised age, intensity, rate, FMP) with a learned null condition.

    Contract, for ``static [B, num_static]`` and an optional boolean ``drop_mask [B]``:
    ``out[b] = null`` where ``drop_mask[b]`` is True (the unconditional branch of classifier-free guidance), and, only
    in training mode, also with probability ``cfg_dropout`` independently per row (condition dropout); otherwise
    ``out[b] = MLP(static[b])`` with ``MLP = Linear(num_static→dim) → SiLU → Linear(dim→dim)``. The static values of
    dropped rows are never read (they may be NaN). ``null`` is a learned ``[dim]`` vector starting at zero. In eval
    mode the output depends only on ``static`` and ``drop_mask`` (deterministic).
    """

    def __init__(self, num_static: int, dim: int, cfg_dropout: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= cfg_dropout < 1.0:
            raise ValueError(f"cfg_dropout must be in [0, 1), got {cfg_dropout}")
        self.num_static = num_static
        self.dim = dim
        self.cfg_dropout = cfg_dropout
        self.mlp = nn.Sequential(nn.Linear(num_static, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.null = nn.Parameter(torch.zeros(dim))

    def forward(
        self, static: Tensor, drop_mask: Tensor | None = None, generator: torch.Generator | None = None
    ) -> Tensor:
        """Embed ``static [B, num_static]`` → ``[B, dim]``; see the class docstring. ``generator`` drives the
        training-time dropout draw (on ``static``'s device)."""
        if static.ndim != 2 or static.shape[1] != self.num_static:
            raise ValueError(f"expected static parameters [B, {self.num_static}], got {tuple(static.shape)}")
        batch = static.shape[0]
        drop = torch.zeros(batch, dtype=torch.bool, device=static.device)
        if drop_mask is not None:
            if drop_mask.shape != (batch,):
                raise ValueError(f"drop_mask must be [B]=[{batch}], got {tuple(drop_mask.shape)}")
            drop = drop | drop_mask.to(device=static.device, dtype=torch.bool)
        if self.training and self.cfg_dropout > 0.0:
            drop = drop | (torch.rand(batch, device=static.device, generator=generator) < self.cfg_dropout)
        safe = static.masked_fill(drop[:, None], 0.0)
        emb = self.mlp(safe)
        return torch.where(drop[:, None], self.null.to(emb.dtype).expand_as(emb), emb)
