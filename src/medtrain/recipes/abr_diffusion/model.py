"""The abr-diffusion network: a hierarchical 1-D U-Net that predicts the diffusion velocity ``v`` of an ABR waveform
and, from the same features, wave-V presence / latency / amplitude, the hearing-loss class and the threshold.

Shapes for the defaults (``signal_length=200, base_channels=64, channel_mult=(1, 2, 2, 4), embed_dim=128``; levels =
``len(channel_mult)``; a stride-2 convolution maps a length L to ⌈L/2⌉, see :func:`level_lengths`)::

    cond       TimestepEmbedding(t) + ConditionEmbedding(static, drop_mask)              [B, 128]
    stem       Conv1d(1 → 64, k=3)                                                       [B, 64, 200]
    encoder 0  ResBlock(64 → 64, FiLM) · S4D residual       → skip 0  · ↓ stride-2 conv  [B, 64, 200] → 100
    encoder 1  ResBlock(64 → 128, FiLM) · S4D residual      → skip 1  · ↓                [B, 128, 100] → 50
    encoder 2  ResBlock(128 → 128, FiLM) · S4D residual     → skip 2  · ↓                [B, 128, 50] → 25
    encoder 3  ResBlock(128 → 256, FiLM) · S4D residual     → skip 3                     [B, 256, 25]
    middle     ResBlock(FiLM) · SelfAttention1d · ResBlock(FiLM)     → bottleneck        [B, 256, 25]
    decoder 3  concat skip 3 → ResBlock(512 → 256, FiLM) · SelfAttention1d               [B, 256, 25]
    decoder 2  ↑ to len(skip 2), concat skip 2 → ResBlock(384 → 128, FiLM) · attention   [B, 128, 50]
    decoder 1  ↑ to len(skip 1), concat skip 1 → ResBlock(256 → 128, FiLM) · attention   [B, 128, 100]
    decoder 0  ↑ to len(skip 0), concat skip 0 → ResBlock(192 → 64, FiLM) · attention    [B, 64, 200]
    v head     GroupNorm · SiLU · Conv1x1(64 → 1)                                        [B, 1, 200]
    clinical   [mean_L(bottleneck), mean_L(decoder 0), AttentionPool1d(decoder 0) (4 queries: pooled features and
               soft-argmax positions), cond] → LayerNorm · MLP → peak (1 + 2 + 2), class (K), threshold (1)

Design notes:

- Upsampling is nearest-neighbour interpolation *to the skip's length* followed by a 3-tap convolution, so odd
  lengths come back exactly (e.g. 37 → 19 → 10 on the way down, 10 → 19 → 37 on the way up).
- The S4D layers are bidirectional: a denoiser sees the whole noisy waveform at once, so there is no reason for
  causality; the anti-causal kernel lets late samples (wave V at ~6 ms) inform early ones and back.
- Normalisation is GroupNorm / LayerNorm only (never BatchNorm): rows are independent, so classifier-free guidance
  on a doubled batch equals two separate passes (:func:`medtrain.nn.diffusion.guided_v`).
- Every FiLM starts as the identity (zero-initialised, :class:`medtrain.nn.film.FiLM`); the timestep and static
  parameters reach the features only as FiLM learns, and reach the clinical heads also directly through ``cond``.
- The clinical heads are computed for any ``t``; they are meant to be trained and used on the clean signal
  (``t = 0``, ``x_t = x0``) — what the task does with the heads' outputs at ``t > 0`` is its choice.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medtrain.nn.attention import AttentionPool1d, SelfAttention1d
from medtrain.nn.film import ConditionEmbedding, FiLM, TimestepEmbedding
from medtrain.nn.s4d import S4DLayer

__all__ = ["ABROutput", "ABRUNet", "DecoderBlock", "EncoderBlock", "ResBlock1d", "level_lengths"]

NORM_GROUPS = 8
"""GroupNorm groups (or the largest divisor of the channel count below it)."""
POOL_QUERIES = 4
"""Queries of the clinical heads' attention pooling."""
LOG_VAR_BOUND = 10.0
"""Predicted log-variances are squashed to (−b, b) by ``b · tanh(raw / b)`` (σ between e^−5 and e^5)."""


def level_lengths(signal_length: int, levels: int) -> tuple[int, ...]:
    """Sequence length at each U-Net level: ``L_0 = signal_length`` and ``L_{i+1} = ⌈L_i / 2⌉`` (a stride-2, 3-tap
    convolution with padding 1), e.g. ``(200, 4) → (200, 100, 50, 25)`` and ``(37, 3) → (37, 19, 10)``."""
    if signal_length < 1 or levels < 1:
        raise ValueError(f"signal_length and levels must be positive, got {signal_length}, {levels}")
    lengths = [signal_length]
    for _ in range(levels - 1):
        lengths.append((lengths[-1] + 1) // 2)
    return tuple(lengths)


def _group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(channels, NORM_GROUPS), channels)


class ResBlock1d(nn.Module):
    """Residual convolution block with FiLM ("scale-shift norm" of ADM), ``[B, c_in, L]`` → ``[B, c_out, L]``:
    ``h = Conv3(SiLU(GN(x)))``; ``h = FiLM(GN(h), cond)``; ``h = Conv3(Dropout(SiLU(h)))``;
    ``out = skip(x) + h`` with ``skip`` a 1×1 convolution when ``c_in ≠ c_out``, else the identity."""

    def __init__(self, c_in: int, c_out: int, cond_dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.norm1 = _group_norm(c_in)
        self.conv1 = nn.Conv1d(c_in, c_out, kernel_size=3, padding=1)
        self.norm2 = _group_norm(c_out)
        self.film = FiLM(cond_dim, c_out)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv1d(c_out, c_out, kernel_size=3, padding=1)
        self.skip: nn.Module = nn.Conv1d(c_in, c_out, kernel_size=1) if c_in != c_out else nn.Identity()

    def forward(self, x: Tensor, cond: Tensor) -> Tensor:
        """``x [B, c_in, L]``, ``cond [B, cond_dim]`` → ``[B, c_out, L]``; see the class docstring."""
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.film(self.norm2(h), cond)
        h = self.conv2(self.dropout(F.silu(h)))
        return self.skip(x) + h


class EncoderBlock(nn.Module):
    """Encoder level: ``h = ResBlock1d(x, cond)``; ``h = h + S4D(GN(h))`` (bidirectional :class:`S4DLayer`);
    returns ``(skip, out)`` with ``skip = h`` ``[B, c_out, L]`` and ``out = Conv3_stride2(h)`` ``[B, c_out, ⌈L/2⌉]``
    when ``downsample``, else ``out = h``."""

    def __init__(self, c_in: int, c_out: int, cond_dim: int, *, d_state: int, dropout: float, downsample: bool) -> None:
        super().__init__()
        self.res = ResBlock1d(c_in, c_out, cond_dim, dropout)
        self.norm = _group_norm(c_out)
        self.ssm = S4DLayer(c_out, d_state=d_state, dropout=dropout, bidirectional=True)
        self.down: nn.Module = (
            nn.Conv1d(c_out, c_out, kernel_size=3, stride=2, padding=1) if downsample else nn.Identity()
        )

    def forward(self, x: Tensor, cond: Tensor) -> tuple[Tensor, Tensor]:
        """``x [B, c_in, L]`` → ``(skip [B, c_out, L], out)``; see the class docstring."""
        h = self.res(x, cond)
        h = h + self.ssm(self.norm(h))
        return h, self.down(h)


class DecoderBlock(nn.Module):
    """Decoder level: when ``upsample``, ``h = Conv3(nearest_interpolate(h, len(skip)))`` (exactly the skip's
    length, odd or even); then ``h = ResBlock1d(concat[h, skip], cond)`` (``c_in + c_skip → c_out``) and
    ``h = SelfAttention1d(h)``. Without ``upsample`` ``h`` must already have the skip's length."""

    def __init__(
        self, c_in: int, c_skip: int, c_out: int, cond_dim: int, *, num_heads: int, dropout: float, upsample: bool
    ) -> None:
        super().__init__()
        self.up: nn.Module | None = nn.Conv1d(c_in, c_in, kernel_size=3, padding=1) if upsample else None
        self.res = ResBlock1d(c_in + c_skip, c_out, cond_dim, dropout)
        self.attn = SelfAttention1d(c_out, num_heads=num_heads, dropout=dropout)

    def forward(self, h: Tensor, skip: Tensor, cond: Tensor) -> Tensor:
        """``h [B, c_in, L']``, ``skip [B, c_skip, L]`` → ``[B, c_out, L]``; see the class docstring."""
        if self.up is not None:
            h = self.up(F.interpolate(h, size=skip.shape[-1], mode="nearest"))
        return self.attn(self.res(torch.cat([h, skip], dim=1), cond))


@dataclass(frozen=True)
class ABROutput:
    """What :meth:`ABRUNet.forward` returns; all in the task's normalised units.

    ``v``: ``[B, 1, L]`` velocity prediction ``√ᾱ_t·ε − √(1−ᾱ_t)·x0`` (:class:`medtrain.nn.diffusion.CosineSchedule`);
    ``peak_logit``: ``[B]`` logit of "wave V present"; ``peak_mean``: ``[B, 2]`` (latency, amplitude) means;
    ``peak_log_var``: ``[B, 2]`` their log-variances, in (−:data:`LOG_VAR_BOUND`, :data:`LOG_VAR_BOUND`);
    ``class_logits``: ``[B, K]``; ``threshold``: ``[B]``.
    """

    v: Tensor
    peak_logit: Tensor
    peak_mean: Tensor
    peak_log_var: Tensor
    class_logits: Tensor
    threshold: Tensor


class ABRUNet(nn.Module):
    """Hierarchical 1-D U-Net for ABR waveforms (see the module docstring for the layout).

    ``forward(x_t, t, static, drop_mask)`` with ``x_t [B, 1, signal_length]``, integer (or float) timesteps
    ``t [B]`` in ``[0, T)``, normalised static parameters ``static [B, num_static]`` (or None: every row
    unconditional) and ``drop_mask [B]`` bool (True: that row uses the learned null condition and never reads its
    static values, which may be NaN). In training mode the static condition is also dropped per row with probability
    ``cfg_dropout`` (classifier-free guidance). Conditioning vector: ``cond = TimestepEmbedding(t) +
    ConditionEmbedding(static, drop_mask)``, fed to a FiLM in every block and to the clinical heads.

    :meth:`predict_v` is the :data:`medtrain.nn.diffusion.ModelFn` view (``v`` only, heads skipped).

    Args:
        signal_length: L of the inputs (checked).
        num_static: static parameters per row.
        num_classes: K.
        base_channels: channels of level 0; level i has ``base_channels · channel_mult[i]``.
        channel_mult: one multiplier per level (levels = its length).
        d_state: state size of the S4D layers.
        num_heads: attention heads (must divide every level's channel count).
        embed_dim: size of the timestep / condition embedding.
        cfg_dropout: training-time probability of dropping a row's static condition.
        dropout: dropout in residual blocks, S4D, attention and the heads' MLP.
    """

    def __init__(
        self,
        *,
        signal_length: int = 200,
        num_static: int = 4,
        num_classes: int = 5,
        base_channels: int = 64,
        channel_mult: Sequence[int] = (1, 2, 2, 4),
        d_state: int = 64,
        num_heads: int = 4,
        embed_dim: int = 128,
        cfg_dropout: float = 0.1,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        if not channel_mult or min(channel_mult) < 1 or base_channels < 1:
            raise ValueError(f"need base_channels >= 1 and positive channel_mult, got {base_channels}, {channel_mult}")
        channels = [base_channels * m for m in channel_mult]
        if any(c % num_heads for c in channels):
            raise ValueError(f"num_heads ({num_heads}) must divide every level's channels {channels}")
        self.signal_length = signal_length
        self.num_static = num_static
        self.num_classes = num_classes
        if signal_length < 1:
            raise ValueError(f"signal_length must be positive, got {signal_length}")
        self.levels = len(channels)
        self.time_embed = TimestepEmbedding(embed_dim, embed_dim)
        self.cond_embed = ConditionEmbedding(num_static, embed_dim, cfg_dropout)
        self.stem = nn.Conv1d(1, channels[0], kernel_size=3, padding=1)
        self.encoders = nn.ModuleList()
        c_prev = channels[0]
        for i, c in enumerate(channels):
            downsample = i < self.levels - 1
            self.encoders.append(
                EncoderBlock(c_prev, c, embed_dim, d_state=d_state, dropout=dropout, downsample=downsample)
            )
            c_prev = c
        self.middle_in = ResBlock1d(c_prev, c_prev, embed_dim, dropout)
        self.middle_attn = SelfAttention1d(c_prev, num_heads=num_heads, dropout=dropout)
        self.middle_out = ResBlock1d(c_prev, c_prev, embed_dim, dropout)
        self.decoders = nn.ModuleList()
        for i in reversed(range(self.levels)):
            upsample = i < self.levels - 1
            self.decoders.append(
                DecoderBlock(
                    c_prev, channels[i], channels[i], embed_dim, num_heads=num_heads, dropout=dropout, upsample=upsample
                )
            )
            c_prev = channels[i]
        self.v_head = nn.Sequential(_group_norm(channels[0]), nn.SiLU(), nn.Conv1d(channels[0], 1, kernel_size=1))
        self.pool = AttentionPool1d(channels[0], POOL_QUERIES)
        head_in = channels[-1] + channels[0] + POOL_QUERIES * (channels[0] + 1) + embed_dim
        hidden = 2 * embed_dim
        self.head_trunk = nn.Sequential(
            nn.LayerNorm(head_in),
            nn.Linear(head_in, hidden),
            nn.SiLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, hidden),
            nn.SiLU(),
        )
        self.peak_head = nn.Linear(hidden, 5)  # existence logit, (latency, amplitude) mean, their raw log-variance
        self.class_head = nn.Linear(hidden, num_classes)
        self.threshold_head = nn.Linear(hidden, 1)

    def _trunk(
        self, x_t: Tensor, t: Tensor, static: Tensor | None, drop_mask: Tensor | None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """``(decoder 0 features [B, c_0, L], bottleneck [B, c_last, L_last], cond [B, embed_dim])``."""
        if x_t.ndim != 3 or x_t.shape[1:] != (1, self.signal_length):
            raise ValueError(f"expected x_t [B, 1, {self.signal_length}], got {tuple(x_t.shape)}")
        batch = x_t.shape[0]
        if t.shape != (batch,):
            raise ValueError(f"expected timesteps t [B]=[{batch}], got {tuple(t.shape)}")
        if static is None:
            static = x_t.new_zeros(batch, self.num_static)
            drop_mask = torch.ones(batch, dtype=torch.bool, device=x_t.device)
        cond = self.time_embed(t) + self.cond_embed(static.to(x_t.dtype), drop_mask)
        h = self.stem(x_t)
        skips = []
        for encoder in self.encoders:
            skip, h = encoder(h, cond)
            skips.append(skip)
        h = self.middle_out(self.middle_attn(self.middle_in(h, cond)), cond)
        bottleneck = h
        for decoder, skip in zip(self.decoders, reversed(skips), strict=True):
            h = decoder(h, skip, cond)
        return h, bottleneck, cond

    def forward(self, x_t: Tensor, t: Tensor, static: Tensor | None, drop_mask: Tensor | None = None) -> ABROutput:
        """All outputs for ``x_t [B, 1, L]`` at timesteps ``t [B]``; see the class docstring and :class:`ABROutput`.

        Clinical heads: ``z = trunk(LayerNorm([mean_L(bottleneck), mean_L(h_0), pooled(h_0), positions(h_0),
        cond]))``; ``[peak_logit, peak_mean (2), raw (2)] = Linear(z)``, ``peak_log_var = b·tanh(raw/b)``
        (``b`` = :data:`LOG_VAR_BOUND`), ``class_logits = Linear(z)``, ``threshold = Linear(z)``.
        """
        h, bottleneck, cond = self._trunk(x_t, t, static, drop_mask)
        pooled, positions = self.pool(h)
        features = torch.cat(
            [bottleneck.mean(dim=-1), h.mean(dim=-1), pooled.flatten(1), positions, cond.to(h.dtype)], dim=1
        )
        z = self.head_trunk(features)
        peak = self.peak_head(z)
        return ABROutput(
            v=self.v_head(h),
            peak_logit=peak[:, 0],
            peak_mean=peak[:, 1:3],
            peak_log_var=LOG_VAR_BOUND * torch.tanh(peak[:, 3:5] / LOG_VAR_BOUND),
            class_logits=self.class_head(z),
            threshold=self.threshold_head(z)[:, 0],
        )

    def predict_v(self, x_t: Tensor, t: Tensor, cond: Tensor | None, drop_mask: Tensor | None) -> Tensor:
        """``v [B, 1, L]`` only (the clinical heads are not computed): the
        :data:`medtrain.nn.diffusion.ModelFn` contract, with ``cond`` the normalised static parameters."""
        h, _, _ = self._trunk(x_t, t, cond, drop_mask)
        return self.v_head(h)
