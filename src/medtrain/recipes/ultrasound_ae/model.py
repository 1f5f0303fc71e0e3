"""CNN autoencoder of ultrasound tokens, its sequence mode and its loss (plain ``nn.Module`` s, no configs).

A token is ``[C, depth, P]`` (channels, samples along depth, pulses along slow time); a batch of tokens is
``[B, C, depth, P]`` and a batch of sequences ``[B, T, C, depth, P]``.

Architecture (defaults ``channels=3, pulses=5, widths=(32, 64, 128, 512), pool_length=4, embedding_dim=256``;
shapes for ``depth=130``; ``Lᵢ`` is the length after stage ``i``, ``L₀ = depth``, ``Lᵢ₊₁ = ceil(Lᵢ / 2)``)::

    encoder                                                                   [B, 3, 130, 5]
      width reducer   Conv2d(C, w₀, kernel (1, P)) · BN · GELU, drop pulse    [B, 32, 130]
      stage 1..4      Conv1d(k3, stride 2) · BN · GELU · Conv1d(k3) · BN · GELU
                                                            32 → 32           [B, 32, 65]
                                                            32 → 64           [B, 64, 33]
                                                            64 → 128          [B, 128, 17]
                                                           128 → 512          [B, 512, 9]
      pooling         AdaptiveAvgPool1d(pool_length), flatten                 [B, 2048]
      embedding       Linear(512·4, E) · LayerNorm(E)                         [B, 256]
    decoder (mirror)
      Linear(E, 512·4) · GELU, reshape                                        [B, 512, 4]
      linear interpolation to the bottleneck length L₄                        [B, 512, 9]
      stage 4..1      ConvTranspose1d(k4, stride 2, pad 1), crop to Lᵢ · BN · GELU · Conv1d(k3) · BN · GELU
                                                           512 → 128          [B, 128, 17]
                                                           128 → 64           [B, 64, 33]
                                                            64 → 32           [B, 32, 65]
                                                            32 → 32           [B, 32, 130]
      width expander  ConvTranspose2d(w₀, C, kernel (1, P)) (linear output)   [B, 3, 130, 5]

The stride-2 convolutions (padding 1) give ``ceil(L / 2)``, so any depth ≥ 1 works (lengths stop at 1), and every
transposed convolution (which doubles) is cropped to the matching encoder length: the reconstruction has exactly
the input's depth — 130 → 130, not 132. All length arithmetic uses static shapes (never data), so the encoder
exports to ONNX with a dynamic batch axis (:meth:`CNNAutoencoder.encoder_module`).

Sequence mode: :meth:`CNNAutoencoder.encode_sequence` / :meth:`CNNAutoencoder.forward_sequence` fold the token axis
into the batch (``[B, T, …] → [B·T, …]``), run the token model and unfold — every token is encoded on its own.
With BatchNorm in training mode the batch statistics cover all ``B·T`` tokens; in eval mode the result equals
encoding each token separately.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["AutoencoderLoss", "CNNAutoencoder", "CNNDecoder", "CNNEncoder", "stage_lengths"]


def stage_lengths(depth: int, stages: int) -> list[int]:
    """Lengths along depth before the first and after every encoder stage: ``[depth, ceil(depth/2), …]``."""
    lengths = [int(depth)]
    for _ in range(stages):
        lengths.append(math.ceil(lengths[-1] / 2))
    return lengths


def _conv_bn_gelu(cin: int, cout: int, *, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv1d(cin, cout, 3, stride=stride, padding=1, bias=False), nn.BatchNorm1d(cout), nn.GELU()]


def _check_widths(widths: Sequence[int]) -> tuple[int, ...]:
    widths = tuple(int(width) for width in widths)
    if not widths or min(widths) < 1:
        raise ValueError(f"widths must be one or more positive channel counts, got {widths}")
    return widths


class _UpStage(nn.Module):
    """``ConvTranspose1d(k4, s2, p1)`` (doubles the length), crop to ``length``, BN · GELU, conv · BN · GELU."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.up = nn.ConvTranspose1d(cin, cout, 4, stride=2, padding=1, bias=False)
        self.post = nn.Sequential(nn.BatchNorm1d(cout), nn.GELU(), *_conv_bn_gelu(cout, cout))

    def forward(self, x: torch.Tensor, length: int) -> torch.Tensor:
        return self.post(self.up(x)[..., :length])


class CNNEncoder(nn.Module):
    """Tokens ``[B, C, depth, P]`` → embeddings ``[B, embedding_dim]`` (LayerNorm-ed); see the module docstring.

    Works for any depth ≥ 1; ``channels`` and ``pulses`` are fixed by the weights.
    """

    def __init__(
        self,
        channels: int = 3,
        pulses: int = 5,
        embedding_dim: int = 256,
        widths: Sequence[int] = (32, 64, 128, 512),
        pool_length: int = 4,
    ) -> None:
        super().__init__()
        widths = _check_widths(widths)
        if min(channels, pulses, embedding_dim, pool_length) < 1:
            raise ValueError(
                f"channels, pulses, embedding_dim and pool_length must be ≥ 1, got "
                f"{channels}, {pulses}, {embedding_dim}, {pool_length}"
            )
        self.channels, self.pulses, self.embedding_dim = channels, pulses, embedding_dim
        self.widths, self.pool_length = widths, pool_length
        self.reducer = nn.Sequential(
            nn.Conv2d(channels, widths[0], kernel_size=(1, pulses), bias=False), nn.BatchNorm2d(widths[0]), nn.GELU()
        )
        ins = (widths[0], *widths[:-1])
        self.stages = nn.ModuleList(
            nn.Sequential(*_conv_bn_gelu(cin, cout, stride=2), *_conv_bn_gelu(cout, cout))
            for cin, cout in zip(ins, widths, strict=True)
        )
        self.pool = nn.AdaptiveAvgPool1d(pool_length)
        self.head = nn.Linear(widths[-1] * pool_length, embedding_dim)
        self.norm = nn.LayerNorm(embedding_dim)

    def check_input(self, x: torch.Tensor) -> None:
        """Raise ``ValueError`` unless ``x`` is ``[B, channels, depth ≥ 1, pulses]``."""
        if x.dim() != 4 or x.shape[1] != self.channels or x.shape[3] != self.pulses or x.shape[2] < 1:
            raise ValueError(f"expected tokens [B, {self.channels}, depth, {self.pulses}], got {tuple(x.shape)}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        h = self.reducer(x)[..., 0]  # [B, w₀, depth]
        for stage in self.stages:
            h = stage(h)
        return self.norm(self.head(self.pool(h).flatten(1)))


class CNNDecoder(nn.Module):
    """Embeddings ``[B, embedding_dim]`` → tokens ``[B, C, depth, P]`` for any ``depth ≥ 1`` (mirror of the encoder)."""

    def __init__(
        self,
        channels: int = 3,
        pulses: int = 5,
        embedding_dim: int = 256,
        widths: Sequence[int] = (32, 64, 128, 512),
        pool_length: int = 4,
    ) -> None:
        super().__init__()
        widths = _check_widths(widths)
        self.channels, self.pulses, self.embedding_dim = channels, pulses, embedding_dim
        self.widths, self.pool_length = widths, pool_length
        self.head = nn.Linear(embedding_dim, widths[-1] * pool_length)
        outs = (widths[0], *widths[:-1])
        # stages[i] mirrors encoder stage i (widths[i] → its input width); run from the last to the first
        self.stages = nn.ModuleList(_UpStage(cin, cout) for cin, cout in zip(widths, outs, strict=True))
        self.expander = nn.ConvTranspose2d(widths[0], channels, kernel_size=(1, pulses))

    def forward(self, z: torch.Tensor, depth: int) -> torch.Tensor:
        if z.dim() != 2 or z.shape[1] != self.embedding_dim:
            raise ValueError(f"expected embeddings [B, {self.embedding_dim}], got {tuple(z.shape)}")
        if int(depth) < 1:
            raise ValueError(f"depth must be ≥ 1, got {depth}")
        lengths = stage_lengths(int(depth), len(self.stages))
        h = F.gelu(self.head(z)).unflatten(1, (self.widths[-1], self.pool_length))
        if lengths[-1] != self.pool_length:
            h = F.interpolate(h, size=lengths[-1], mode="linear", align_corners=False)
        for index in reversed(range(len(self.stages))):
            h = self.stages[index](h, lengths[index])
        return self.expander(h.unsqueeze(-1))  # [B, w₀, depth, 1] → [B, C, depth, P]


class CNNAutoencoder(nn.Module):
    """Token autoencoder: ``forward(x [B, C, depth, P]) → (reconstruction [B, C, depth, P], embedding [B, E])``.

    ``depth`` is the depth :meth:`decode` reconstructs when none is given; :meth:`forward` always reconstructs
    the depth of its input, whatever it is. ``widths`` are the output channels of the encoder stages (each halves
    the depth; the width reducer outputs ``widths[0]``); ``pool_length`` is the length the last feature map is
    pooled to before the linear embedding. See the module docstring for the layers and shapes.
    """

    def __init__(
        self,
        channels: int = 3,
        depth: int = 130,
        pulses: int = 5,
        embedding_dim: int = 256,
        widths: Sequence[int] = (32, 64, 128, 512),
        pool_length: int = 4,
    ) -> None:
        super().__init__()
        if depth < 1:
            raise ValueError(f"depth must be ≥ 1, got {depth}")
        self.channels, self.depth, self.pulses, self.embedding_dim = channels, depth, pulses, embedding_dim
        self.encoder = CNNEncoder(channels, pulses, embedding_dim, widths, pool_length)
        self.decoder = CNNDecoder(channels, pulses, embedding_dim, widths, pool_length)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Tokens ``[B, C, depth, P]`` → embeddings ``[B, E]``."""
        return self.encoder(x)

    def decode(self, z: torch.Tensor, depth: int | None = None) -> torch.Tensor:
        """Embeddings ``[B, E]`` → tokens ``[B, C, depth, P]`` (``depth`` defaults to the constructor's)."""
        return self.decoder(z, self.depth if depth is None else depth)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Tokens ``[B, C, depth, P]`` → ``(reconstruction [B, C, depth, P], embedding [B, E])``."""
        z = self.encode(x)
        return self.decode(z, x.shape[-2]), z

    def encode_sequence(self, x: torch.Tensor) -> torch.Tensor:
        """Sequences ``[B, T, C, depth, P]`` → embeddings ``[B, T, E]`` (tokens folded into the batch)."""
        if x.dim() != 5:
            raise ValueError(f"expected sequences [B, T, C, depth, P], got {tuple(x.shape)}")
        return self.encode(x.flatten(0, 1)).unflatten(0, x.shape[:2])

    def forward_sequence(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Sequences ``[B, T, C, depth, P]`` → ``(reconstruction [B, T, C, depth, P], embeddings [B, T, E])``."""
        if x.dim() != 5:
            raise ValueError(f"expected sequences [B, T, C, depth, P], got {tuple(x.shape)}")
        recon, z = self(x.flatten(0, 1))
        return recon.unflatten(0, x.shape[:2]), z.unflatten(0, x.shape[:2])

    def encoder_module(self) -> nn.Module:
        """The encoder alone (shared weights): ``forward(x [B, C, depth, P]) → embedding [B, E]``, for export."""
        return self.encoder


class AutoencoderLoss(nn.Module):
    """Weighted reconstruction loss with an embedding penalty.

    ``loss = mse_weight · mean((x̂ − x)²) + l1_weight · mean(|x̂ − x|) + embedding_l2 · mean_b(‖z_b‖²)``

    where the means run over all elements and ``mean_b(‖z_b‖²)`` is the squared L2 norm of each embedding
    (last axis) averaged over all leading axes (tokens, or batch × sequence). :meth:`forward` returns a dict of
    scalar tensors: ``loss`` and the unweighted terms ``mse``, ``l1``, ``embedding_l2``. Without an embedding
    (``None``) the penalty term is zero.
    """

    def __init__(self, mse_weight: float = 0.8, l1_weight: float = 0.2, embedding_l2: float = 0.001) -> None:
        super().__init__()
        if min(mse_weight, l1_weight, embedding_l2) < 0:
            raise ValueError(
                f"loss weights must be ≥ 0, got mse {mse_weight}, l1 {l1_weight}, embedding_l2 {embedding_l2}"
            )
        self.mse_weight, self.l1_weight, self.embedding_l2 = float(mse_weight), float(l1_weight), float(embedding_l2)

    def forward(
        self, recon: torch.Tensor, target: torch.Tensor, embedding: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        if recon.shape != target.shape:
            raise ValueError(f"reconstruction {tuple(recon.shape)} and target {tuple(target.shape)} differ in shape")
        mse = F.mse_loss(recon, target)
        l1 = F.l1_loss(recon, target)
        penalty = embedding.pow(2).sum(-1).mean() if embedding is not None else mse.new_zeros(())
        loss = self.mse_weight * mse + self.l1_weight * l1 + self.embedding_l2 * penalty
        return {"loss": loss, "mse": mse, "l1": l1, "embedding_l2": penalty}

    def extra_repr(self) -> str:
        return f"mse_weight={self.mse_weight}, l1_weight={self.l1_weight}, embedding_l2={self.embedding_l2}"
