"""Attention over the length axis of 1-D feature maps ``[B, C, L]`` (channels first, as convolutions produce them):
a pre-norm transformer block for decoders, and attention pooling that also reports where it looked.

Both treat batch rows independently (LayerNorm per position, no batch statistics), so a doubled batch gives the same
rows as two separate calls. Neither adds a positional encoding: the caller's convolutions or state-space layers
carry position information in the features.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["AttentionPool1d", "SelfAttention1d"]


class SelfAttention1d(nn.Module):
    """Pre-norm transformer block on ``[B, C, L]`` → ``[B, C, L]``.

    With ``h = xᵀ ∈ [B, L, C]``, ``H = num_heads`` heads of size ``d = C / H``:

    - ``h ← h + Dropout(W_o · concat_heads(softmax(Q Kᵀ / √d) V))`` with ``[Q, K, V] = LN₁(h) · W_qkv``
    - ``h ← h + Dropout(MLP(LN₂(h)))`` with ``MLP = Linear(C → r·C) · GELU · Dropout · Linear(r·C → C)``,
      ``r = mlp_ratio``

    and returns ``hᵀ``. Attention runs through ``F.scaled_dot_product_attention`` with ``dropout`` on the attention
    weights in training mode only.

    Args:
        channels: C, divisible by ``num_heads``.
        num_heads: H.
        mlp_ratio: hidden width of the MLP as a multiple of C.
        dropout: dropout on the attention weights and on both residual branches.
    """

    def __init__(self, channels: int, num_heads: int = 4, mlp_ratio: float = 4.0, dropout: float = 0.0) -> None:
        super().__init__()
        if channels < 1 or num_heads < 1 or channels % num_heads:
            raise ValueError(f"channels ({channels}) must be a positive multiple of num_heads ({num_heads})")
        hidden = max(1, round(channels * mlp_ratio))
        self.channels = channels
        self.num_heads = num_heads
        self.dropout = dropout
        self.norm1 = nn.LayerNorm(channels)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.proj = nn.Linear(channels, channels)
        self.norm2 = nn.LayerNorm(channels)
        self.mlp = nn.Sequential(
            nn.Linear(channels, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, channels)
        )
        self.residual_dropout = nn.Dropout(dropout)

    def attend(self, h: Tensor) -> Tensor:
        """Multi-head self-attention ``W_o · concat_heads(softmax(Q Kᵀ/√d) V)`` of ``h [B, L, C]`` (no residual)."""
        batch, length, _ = h.shape
        q, k, v = self.qkv(h).view(batch, length, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        p = self.dropout if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=p)  # [B, H, L, d]
        return self.proj(out.transpose(1, 2).reshape(batch, length, self.channels))

    def forward(self, x: Tensor) -> Tensor:
        """``[B, C, L]`` → ``[B, C, L]``; see the class docstring."""
        if x.ndim != 3 or x.shape[1] != self.channels:
            raise ValueError(f"expected input [B, {self.channels}, L], got {tuple(x.shape)}")
        h = x.transpose(1, 2)
        h = h + self.residual_dropout(self.attend(self.norm1(h)))
        h = h + self.residual_dropout(self.mlp(self.norm2(h)))
        return h.transpose(1, 2)


class AttentionPool1d(nn.Module):
    """Attention pooling of ``x [B, C, L]`` with ``Q`` learned queries, returning the pooled features and a soft
    argmax position per query.

    ``s = Conv1x1_{C→Q}(x)`` (one score per query and position), ``w[b, q, :] = softmax_l(s[b, q, :])``;
    ``pooled[b, q, c] = Σ_l w[b, q, l] · x[b, c, l]`` and ``position[b, q] = Σ_l w[b, q, l] · l / max(L − 1, 1)``
    (in [0, 1]: 0 at the first sample, 1 at the last). The position gives a head that reads it a direct handle on
    *where* something happens (e.g. a peak's latency), which mean pooling loses.
    """

    def __init__(self, channels: int, num_queries: int = 4) -> None:
        super().__init__()
        if channels < 1 or num_queries < 1:
            raise ValueError(f"channels and num_queries must be positive, got {channels}, {num_queries}")
        self.channels = channels
        self.num_queries = num_queries
        self.score = nn.Conv1d(channels, num_queries, kernel_size=1)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``x [B, C, L]`` → ``(pooled [B, Q, C], position [B, Q])``; see the class docstring."""
        if x.ndim != 3 or x.shape[1] != self.channels:
            raise ValueError(f"expected input [B, {self.channels}, L], got {tuple(x.shape)}")
        length = x.shape[-1]
        weights = torch.softmax(self.score(x).float(), dim=-1).to(x.dtype)  # [B, Q, L]
        pooled = torch.einsum("bql,bcl->bqc", weights, x)
        grid = torch.arange(length, device=x.device, dtype=x.dtype) / max(length - 1, 1)
        return pooled, weights @ grid
