"""Turn a CNN feature map ``[B, C, H, W]`` into transformer tokens ``[B, T, d_model]``, and 2-D sine-cosine positions.

Two strategies (:func:`build_tokenizer`):

- ``"channel"`` (:class:`ChannelTokens`): each of the ``C`` channels is a token; its flattened ``H·W`` map is
  projected by ``Linear(H·W → d_model)`` and a learned per-channel embedding is added → ``T = C``.
- ``"spatial"`` (:class:`SpatialTokens`): each of the ``H·W`` positions is a token of its ``C`` features,
  ``Linear(C → d_model)`` plus the fixed :func:`sincos_position_2d` embedding → ``T = H·W``.

Positions are flattened row-major (``index = row·W + col``), the order of ``tensor.flatten(2)``. Both modules
check the incoming feature map against the ``channels`` and ``grid`` they were built for and use only static
shapes, so they trace and export to ONNX with a dynamic batch axis.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

__all__ = ["ChannelTokens", "SpatialTokens", "TokenKind", "build_tokenizer", "sincos_position_2d"]

TokenKind = Literal["channel", "spatial"]

_TEMPERATURE = 10000.0


def _sincos_1d(positions: torch.Tensor, dim: int) -> torch.Tensor:
    """``[N]`` positions → ``[N, dim]``: ``[sin(p·ω_0) … sin(p·ω_{dim/2-1}), cos(p·ω_0) … cos(p·ω_{dim/2-1})]``."""
    omega = 1.0 / _TEMPERATURE ** (torch.arange(dim // 2, dtype=torch.float64) / (dim / 2))
    angles = positions.to(torch.float64)[:, None] * omega[None, :]
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)


def sincos_position_2d(height: int, width: int, dim: int) -> torch.Tensor:
    """Fixed 2-D sine-cosine position embedding, ``[height·width, dim]`` float32 (the MAE/ViT formula).

    With ``D = dim / 4`` and ``ω_k = 1 / 10000^(k / D)`` for ``k = 0 … D-1``, the token at row ``r``, column
    ``c`` (index ``r·width + c``) gets::

        [ sin(r·ω_0..D-1), cos(r·ω_0..D-1), sin(c·ω_0..D-1), cos(c·ω_0..D-1) ]

    i.e. the first half of the dimensions encodes the row, the second half the column (MAE's code puts the
    column first; the content is the same up to that order). ``dim`` must be a positive multiple of 4.
    """
    if dim <= 0 or dim % 4:
        raise ValueError(f"sincos_position_2d needs dim to be a positive multiple of 4, got {dim}")
    if height < 1 or width < 1:
        raise ValueError(f"sincos_position_2d needs a positive grid, got {height}×{width}")
    rows = torch.arange(height).repeat_interleave(width)  # r for index r·width + c
    cols = torch.arange(width).repeat(height)  # c for index r·width + c
    embedding = torch.cat([_sincos_1d(rows, dim // 2), _sincos_1d(cols, dim // 2)], dim=1)
    return embedding.to(torch.float32)


def _check_features(features: torch.Tensor, channels: int, grid: tuple[int, int]) -> None:
    if features.dim() != 4 or tuple(features.shape[1:]) != (channels, *grid):
        raise ValueError(f"expected a feature map [B, {channels}, {grid[0]}, {grid[1]}], got {tuple(features.shape)}")


def _check_sizes(channels: int, grid: tuple[int, int], d_model: int) -> tuple[int, int]:
    height, width = (int(side) for side in grid)
    if channels < 1 or height < 1 or width < 1 or d_model < 1:
        raise ValueError(f"channels, grid and d_model must be positive, got {channels}, {grid}, {d_model}")
    return height, width


class ChannelTokens(nn.Module):
    """``"channel"`` tokens: ``[B, C, H, W]`` → ``[B, C, d_model]``.

    ``token_i = Linear(H·W → d_model)(flatten(features[:, i])) + e_i`` with ``e`` a learned ``[C, d_model]``
    per-channel embedding (truncated normal, std 0.02). ``num_tokens`` is ``C``.
    """

    num_tokens: int

    def __init__(self, channels: int, grid: tuple[int, int], d_model: int) -> None:
        super().__init__()
        self.grid = _check_sizes(channels, grid, d_model)
        self.channels = channels
        self.num_tokens = channels
        self.proj = nn.Linear(self.grid[0] * self.grid[1], d_model)
        self.channel_embedding = nn.Parameter(nn.init.trunc_normal_(torch.empty(channels, d_model), std=0.02))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """``[B, C, H, W]`` → ``[B, C, d_model]``."""
        _check_features(features, self.channels, self.grid)
        return self.proj(features.flatten(2)) + self.channel_embedding


class SpatialTokens(nn.Module):
    """``"spatial"`` tokens: ``[B, C, H, W]`` → ``[B, H·W, d_model]``.

    ``token_{r·W+c} = Linear(C → d_model)(features[:, :, r, c]) + P[r·W+c]`` with ``P =
    sincos_position_2d(H, W, d_model)`` a non-persistent buffer (rebuilt on construction, not saved).
    ``num_tokens`` is ``H·W``; ``d_model`` must be a multiple of 4.
    """

    num_tokens: int

    def __init__(self, channels: int, grid: tuple[int, int], d_model: int) -> None:
        super().__init__()
        self.grid = _check_sizes(channels, grid, d_model)
        self.channels = channels
        self.num_tokens = self.grid[0] * self.grid[1]
        self.proj = nn.Linear(channels, d_model)
        self.register_buffer("position", sincos_position_2d(*self.grid, d_model), persistent=False)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """``[B, C, H, W]`` → ``[B, H·W, d_model]``."""
        _check_features(features, self.channels, self.grid)
        return self.proj(features.flatten(2).transpose(1, 2)) + self.position


def build_tokenizer(
    kind: TokenKind, channels: int, grid: tuple[int, int], d_model: int
) -> ChannelTokens | SpatialTokens:
    """Return :class:`ChannelTokens` for ``"channel"`` or :class:`SpatialTokens` for ``"spatial"``.

    Raises ``ValueError`` for another ``kind``.
    """
    if kind == "channel":
        return ChannelTokens(channels, grid, d_model)
    if kind == "spatial":
        return SpatialTokens(channels, grid, d_model)
    raise ValueError(f"token type must be 'channel' or 'spatial', got {kind!r}")
