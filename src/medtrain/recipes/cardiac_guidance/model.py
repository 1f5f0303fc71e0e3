"""Cardiac "dreamer": ResNet → tokens → action-conditioned transformer → 6-DOF guidance; its loss; the export net.

Shapes for the defaults (``image_size=224, backbone_depth=34, base_width=64, d_model=768``; ``G = ⌈224/32⌉ = 7``;
``backbone_last_stride=1`` gives ``G = ⌈image_size/16⌉``, a finer map for small images)::

    encode     image ft1                                     [B, 1, 224, 224]   float, intensities in [0, 1]
      ResNetFeatures (1-channel ResNet-34, no pool/fc)       [B, 512, 7, 7]
      tokenizer  "channel": Linear(49 → 768) + channel emb   [B, 512, 768]      (T = 512)
                 "spatial": Linear(512 → 768) + 2-D sincos   [B, 49, 768]       (T = 49)
    imagine    action token Linear(6 → 768)                  [B, 1, 768]
      TransformerEncoder over [action; tokens]               [B, 1 + T, 768]    pre-norm, GELU, no final norm
      drop the action slot → imagined next-frame tokens      [B, T, 768]
    guide      LayerNorm · mean over tokens · Linear(768 → 512) · GELU · Dropout · Linear(512 → 6)   [B, 6]

Residual decision for ``imagine``: no extra skip from the input tokens is added. The encoder is pre-norm
(``x ← x + Attn(LN(x))``, ``x ← x + FFN(LN(x))``) without a final LayerNorm, so its residual stream starts at
the input tokens and the imagined tokens already are ``tokens + Σ updates`` — a "current frame plus predicted
change" parameterisation that stays in the encoder's token space, which is what the latent-consistency target
(``encode(ft2)``) lives in. An explicit ``+ tokens`` on top would count the input twice. The guidance head
normalises its input with its own LayerNorm, so the same head reads current and imagined tokens.

Everything here works in normalised units: ``at1``, ``at2`` and ``action`` are z-scored per DOF by the data
side. :class:`GuidanceNet` (the exported inference network) reuses the dreamer's encoder and head modules and
de-normalises: ``action = guide(encode(x)) · std + mean``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medtrain.nn.attention import AttentionPool1d
from medtrain.nn.resnet import ResNetFeatures, feature_grid
from medtrain.nn.tokens import TokenKind, build_tokenizer

__all__ = ["CardiacDreamer", "DreamerLoss", "DreamerOutput", "GuidanceHead", "GuidanceNet", "TokenEncoder"]

TOKEN_TYPES = ("channel", "spatial")


@dataclass(frozen=True)
class DreamerOutput:
    """What :meth:`CardiacDreamer.forward` returns (normalised units).

    ``at1``: ``[B, dof]`` action predicted from ft1's tokens (main task); ``at2``: ``[B, dof]`` action predicted
    from the imagined tokens (auxiliary task); ``imagined``: ``[B, T, d_model]`` imagined next-frame tokens;
    ``target_tokens``: ``[B, T, d_model]`` ft2's tokens without gradient, or ``None`` when no ft2 was given;
    ``at2_from_ft2``: ``[B, dof]`` action predicted from ft2's own tokens (with gradient: the main task on the
    second frame), or ``None`` unless ft2 was encoded with ``ft2_grad``.
    """

    at1: Tensor
    at2: Tensor
    imagined: Tensor
    target_tokens: Tensor | None
    at2_from_ft2: Tensor | None = None


class TokenEncoder(nn.Module):
    """Image ``[B, 1, S, S]`` → tokens ``[B, T, d_model]``: :class:`ResNetFeatures` (``last_stride`` 2: feature map
    ``⌈S/32⌉²``; 1: ``⌈S/16⌉²``) then a token strategy."""

    def __init__(
        self,
        *,
        image_size: int,
        backbone_depth: int,
        base_width: int,
        token_type: str,
        d_model: int,
        last_stride: int = 2,
    ) -> None:
        super().__init__()
        if token_type not in TOKEN_TYPES:
            raise ValueError(f"token_type must be one of {TOKEN_TYPES}, got {token_type!r}")
        self.image_size = int(image_size)
        self.backbone = ResNetFeatures(
            depth=backbone_depth, in_channels=1, base_width=base_width, last_stride=last_stride
        )
        grid = feature_grid(self.image_size, last_stride)
        kind: TokenKind = "channel" if token_type == "channel" else "spatial"
        self.tokenizer = build_tokenizer(kind, self.backbone.out_channels, (grid, grid), d_model)
        self.num_tokens = self.tokenizer.num_tokens

    def forward(self, images: Tensor) -> Tensor:
        """``[B, 1, image_size, image_size]`` → ``[B, num_tokens, d_model]``."""
        if images.dim() != 4 or tuple(images.shape[1:]) != (1, self.image_size, self.image_size):
            raise ValueError(f"expected images [B, 1, {self.image_size}, {self.image_size}], got {tuple(images.shape)}")
        return self.tokenizer(self.backbone(images))


class GuidanceHead(nn.Module):
    """Tokens ``[B, T, d_model]`` → ``[B, dof]``: ``h = LayerNorm(tokens)``, pooled as
    ``[mean_T(h), AttentionPool_Q(h)]`` (``Q = POOL_QUERIES`` learned softmax-weighted sums over the tokens), then
    ``MLP((1 + Q)·d → hidden, GELU, dropout, dof)``.

    Mean pooling alone is too narrow for ``channel`` tokens: every channel token is the same linear map of its
    channel's feature map plus a channel embedding, so their mean is a linear map of the channel-averaged feature
    map (``H·W`` numbers). The attention queries weigh the tokens by content, so the pooled vector also says
    *which* channels or positions respond.
    """

    POOL_QUERIES = 4

    def __init__(self, d_model: int, hidden: int, dof: int, dropout: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(d_model)
        self.pool = AttentionPool1d(d_model, self.POOL_QUERIES)
        self.mlp = nn.Sequential(
            nn.Linear((1 + self.POOL_QUERIES) * d_model, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, dof)
        )

    def forward(self, tokens: Tensor) -> Tensor:
        """``[B, T, d_model]`` → ``[B, dof]``."""
        normed = self.norm(tokens)
        pooled, _ = self.pool(normed.transpose(1, 2))
        return self.mlp(torch.cat([normed.mean(dim=1), pooled.flatten(1)], dim=1))


class CardiacDreamer(nn.Module):
    """Action-conditioned latent "dreamer" with a 6-DOF guidance head (see the module docstring for shapes).

    ``encoder`` (:class:`TokenEncoder`, its ResNet's last stage striding by ``backbone_last_stride``),
    ``action_embedding`` (``Linear(dof → d_model)``), ``transformer``
    (``num_layers`` × ``nn.TransformerEncoderLayer(d_model, num_heads, int(ffn_ratio·d_model), dropout, GELU,
    batch_first, norm_first)``) and ``head`` (:class:`GuidanceHead`, shared by the main and auxiliary tasks).
    """

    def __init__(
        self,
        *,
        image_size: int = 224,
        backbone_depth: int = 34,
        base_width: int = 64,
        backbone_last_stride: int = 2,
        token_type: str = "channel",
        d_model: int = 768,
        num_heads: int = 12,
        num_layers: int = 6,
        ffn_ratio: float = 4.0,
        dropout: float = 0.1,
        head_hidden: int = 512,
        dof: int = 6,
    ) -> None:
        super().__init__()
        if d_model % num_heads:
            raise ValueError(f"d_model ({d_model}) must be divisible by num_heads ({num_heads})")
        if num_layers < 1 or dof < 1 or head_hidden < 1 or ffn_ratio <= 0 or not 0.0 <= dropout < 1.0:
            raise ValueError(
                f"need num_layers ≥ 1, dof ≥ 1, head_hidden ≥ 1, ffn_ratio > 0 and 0 ≤ dropout < 1; got "
                f"{num_layers}, {dof}, {head_hidden}, {ffn_ratio}, {dropout}"
            )
        self.dof = dof
        self.d_model = d_model
        self.encoder = TokenEncoder(
            image_size=image_size,
            backbone_depth=backbone_depth,
            base_width=base_width,
            token_type=token_type,
            d_model=d_model,
            last_stride=backbone_last_stride,
        )
        self.action_embedding = nn.Linear(dof, d_model)
        layer = nn.TransformerEncoderLayer(
            d_model,
            num_heads,
            dim_feedforward=max(1, round(ffn_ratio * d_model)),
            dropout=dropout,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        self.transformer = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
        self.head = GuidanceHead(d_model, head_hidden, dof, dropout)

    @property
    def num_tokens(self) -> int:
        """Tokens per image: ``8·base_width`` for ``"channel"``, the feature map's ``G²`` for ``"spatial"``."""
        return self.encoder.num_tokens

    def encode(self, images: Tensor) -> Tensor:
        """Images ``[B, 1, H, W]`` float → tokens ``[B, T, d_model]`` (ResNetFeatures → tokenizer)."""
        return self.encoder(images)

    def imagine(self, tokens: Tensor, action: Tensor) -> Tensor:
        """Tokens ``[B, T, d_model]`` and action ``[B, dof]`` → imagined next-frame tokens ``[B, T, d_model]``.

        ``transformer([action_embedding(action); tokens])[:, 1:]`` — the action token is prepended and its slot
        dropped from the output; no extra residual (the pre-norm stack's residual stream starts at ``tokens``).
        """
        if action.dim() != 2 or action.shape[1] != self.dof:
            raise ValueError(f"expected an action [B, {self.dof}], got {tuple(action.shape)}")
        sequence = torch.cat([self.action_embedding(action).unsqueeze(1), tokens], dim=1)
        return self.transformer(sequence)[:, 1:]

    def guide(self, tokens: Tensor) -> Tensor:
        """Tokens ``[B, T, d_model]`` → action ``[B, dof]`` (normalised units) with the shared :class:`GuidanceHead`."""
        return self.head(tokens)

    def forward(
        self, ft1: Tensor, action: Tensor, ft2: Tensor | None = None, *, ft2_grad: bool = False
    ) -> DreamerOutput:
        """``at1 = guide(encode(ft1))``, ``imagined = imagine(encode(ft1), action)``, ``at2 = guide(imagined)``.

        With ``ft2``, ``target_tokens = encode(ft2)`` without gradient (the stop-gradient on the latent target; the
        result has ``requires_grad=False``); otherwise ``None``. By default ft2 is encoded under
        ``torch.no_grad()`` (no graph is built; in training mode BatchNorm still uses ft2's batch statistics and
        updates its running statistics). With ``ft2_grad``, ft1 and ft2 are encoded in one pass over both batches
        (``[ft1; ft2]``, so BatchNorm sees both) and ``at2_from_ft2 = guide(encode(ft2))`` keeps its gradient: the
        main task trained on the second frame too, whose guidance label is ``at2``.
        """
        if ft2 is not None and ft2_grad:
            tokens, ft2_tokens = self.encode(torch.cat([ft1, ft2])).chunk(2)
            target, at2_from_ft2 = ft2_tokens.detach(), self.guide(ft2_tokens)
        else:
            tokens, at2_from_ft2 = self.encode(ft1), None
            target = None
            if ft2 is not None:
                with torch.no_grad():
                    target = self.encode(ft2).detach()
        imagined = self.imagine(tokens, action)
        return DreamerOutput(
            at1=self.guide(tokens),
            at2=self.guide(imagined),
            imagined=imagined,
            target_tokens=target,
            at2_from_ft2=at2_from_ft2,
        )


class GuidanceNet(nn.Module):
    """Exported inference network: image ``[B, 1, H, W]`` float in [0, 1] → 6-DOF action in physical units.

    ``action = head(encoder(x)) · std + mean`` where ``encoder`` and ``head`` are the dreamer's own modules
    (shared, not copied: training the dreamer changes this net) and ``mean``/``std`` (``[dof]``, the per-DOF
    normalisation of the training actions) are buffers saved with the weights. The transformer is not part of
    it. Static shapes only: exports to ONNX with a dynamic batch axis.
    """

    def __init__(self, dreamer: CardiacDreamer, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        mean_t = torch.as_tensor(list(mean), dtype=torch.float32)
        std_t = torch.as_tensor(list(std), dtype=torch.float32)
        if mean_t.shape != (dreamer.dof,) or std_t.shape != (dreamer.dof,):
            raise ValueError(f"mean and std need {dreamer.dof} values each, got {list(mean)} and {list(std)}")
        if not bool(torch.all(std_t > 0)) or not bool(torch.all(torch.isfinite(mean_t))):
            raise ValueError(f"std must be positive and mean finite, got mean {list(mean)}, std {list(std)}")
        self.encoder = dreamer.encoder
        self.head = dreamer.head
        self.register_buffer("mean", mean_t)
        self.register_buffer("std", std_t)

    def forward(self, x: Tensor) -> Tensor:
        """``[B, 1, H, W]`` → ``[B, dof]`` in physical units (mm, degrees)."""
        return self.head(self.encoder(x)) * self.std + self.mean


class DreamerLoss(nn.Module):
    """Loss of the dreamer, in normalised units; returns ``{"loss", "main_task_loss", "aux_loss", "latent_loss",
    "ft2_task_loss"}``.

    - ``main_task_loss = SmoothL1_β(output.at1, at1)`` (mean over batch and DOF),
    - ``aux_loss = SmoothL1_β(output.at2, at2)``,
    - ``latent_loss = MSE(output.imagined, output.target_tokens)`` when ``target_tokens`` is given, else 0,
    - ``ft2_task_loss = SmoothL1_β(output.at2_from_ft2, at2)`` (the main task on the second frame) when
      ``at2_from_ft2`` is given, else 0,
    - ``loss = main_task_loss`` if ``primary_task_only`` else
      ``main_task_loss + lambda_t2_action·aux_loss + lambda_latent·latent_loss + lambda_ft2_action·ft2_task_loss``.

    ``SmoothL1_β(x, y) = mean(0.5·d²/β if |d| < β else |d| − 0.5·β)``, ``d = x − y`` (β = 0: L1). All five values
    are scalar tensors and always present (the other terms are still reported when they do not count towards
    ``loss``).
    """

    def __init__(
        self,
        *,
        beta: float = 1.0,
        lambda_t2_action: float = 1.0,
        lambda_latent: float = 0.0,
        lambda_ft2_action: float = 0.0,
        primary_task_only: bool = False,
    ) -> None:
        super().__init__()
        weights = (lambda_t2_action, lambda_latent, lambda_ft2_action)
        if beta < 0 or min(weights) < 0:
            raise ValueError(f"beta and the loss weights must be ≥ 0, got {beta}, {weights}")
        self.beta = float(beta)
        self.lambda_t2_action = float(lambda_t2_action)
        self.lambda_latent = float(lambda_latent)
        self.lambda_ft2_action = float(lambda_ft2_action)
        self.primary_task_only = bool(primary_task_only)

    def forward(self, output: DreamerOutput, at1: Tensor, at2: Tensor) -> dict[str, Tensor]:
        """Loss terms for one batch; ``at1``/``at2`` are ``[B, dof]`` normalised targets."""
        main = F.smooth_l1_loss(output.at1, at1, beta=self.beta)
        aux = F.smooth_l1_loss(output.at2, at2, beta=self.beta)
        if output.target_tokens is not None:
            latent = F.mse_loss(output.imagined, output.target_tokens)
        else:
            latent = output.imagined.new_zeros(())
        if output.at2_from_ft2 is not None:
            ft2_task = F.smooth_l1_loss(output.at2_from_ft2, at2, beta=self.beta)
        else:
            ft2_task = main.new_zeros(())
        loss = main
        if not self.primary_task_only:
            loss = loss + self.lambda_t2_action * aux + self.lambda_latent * latent + self.lambda_ft2_action * ft2_task
        return {"loss": loss, "main_task_loss": main, "aux_loss": aux, "latent_loss": latent, "ft2_task_loss": ft2_task}
