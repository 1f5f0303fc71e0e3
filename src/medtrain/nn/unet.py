"""Multi-task residual-encoder U-Net (nnU-Net "ResEnc" style) for 2-D and 3-D, with one decoder per target or a
shared decoder, deep supervision, and each parameter registered once.

:class:`MultiTaskUNet` takes the planned topology as plain arguments (strides, kernels, widths, depths per stage;
``recipes/volume_seg/planner.py`` produces them) and one output-channel count per named head:

- encoder: a stem convolution (kernel of stage 0, stride 1), then per stage ``n_blocks_per_stage[s]`` residual
  basic blocks; the first block of a stage strides by ``strides[s]`` and, when it strides or changes width, has a
  ResNet-D shortcut (average pool by the stride, then 1×1 convolution + norm). Every convolution is followed by
  InstanceNorm (affine, eps 1e-5) and LeakyReLU(0.01), except the second convolution of a block, whose norm is
  added to the shortcut before the LeakyReLU (nnU-Net's ``BasicBlockD``);
- decoder, from the bottleneck up: transposed convolution (kernel = stride = that stage's stride) to the width of
  the skip, concatenation with the skip, ``n_conv_per_stage_decoder`` conv-norm-LeakyReLU blocks, and a 1×1
  convolution per head at every decoder stage (used for deep supervision; only the last one otherwise);
- ``shared_decoder=False``: one decoder per head (``decoders.<head>``); ``True``: one decoder
  (``decoders.shared``) whose 1×1 layers hold one convolution per head. The encoder is built once and the
  decoders receive its skips in ``forward``: unlike dynamic-network-architectures (whose decoder keeps a reference
  to the encoder, so ``state_dict`` lists it twice), every parameter appears once in ``state_dict()``.

Outputs are logits (activations are the caller's). Input spatial sizes must be multiples of the product of the
strides per axis (:attr:`MultiTaskUNet.must_be_divisible_by`). Initialisation as nnU-Net: He-normal (negative
slope 1e-2) convolution weights, zero biases, and zero scale on the last norm of every residual block, so every
block starts as its shortcut.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import nn

__all__ = ["MultiTaskUNet", "ResidualBlock"]

_NEGATIVE_SLOPE = 1e-2
_NORM_EPS = 1e-5
SHARED_DECODER = "shared"
"""Key of the single decoder in ``MultiTaskUNet.decoders`` when ``shared_decoder=True``."""


def _conv(dims: int, in_channels: int, out_channels: int, kernel: Sequence[int], stride: Sequence[int] | int = 1):
    """Convolution with 'same' padding (``kernel // 2``) for odd kernels, with bias."""
    conv = (nn.Conv2d, nn.Conv3d)[dims - 2]
    return conv(in_channels, out_channels, tuple(kernel), stride, padding=tuple(k // 2 for k in kernel))


def _norm(dims: int, channels: int) -> nn.Module:
    """InstanceNorm with learned affine parameters, eps 1e-5 (nnU-Net)."""
    return (nn.InstanceNorm2d, nn.InstanceNorm3d)[dims - 2](channels, eps=_NORM_EPS, affine=True)


class ConvNormAct(nn.Sequential):
    """``LeakyReLU(0.01)(InstanceNorm(conv(x)))``; ``act=False`` leaves out the LeakyReLU."""

    def __init__(
        self,
        dims: int,
        in_channels: int,
        out_channels: int,
        kernel: Sequence[int],
        stride: Sequence[int] | int = 1,
        *,
        act: bool = True,
    ) -> None:
        layers = [_conv(dims, in_channels, out_channels, kernel, stride), _norm(dims, out_channels)]
        if act:
            layers.append(nn.LeakyReLU(_NEGATIVE_SLOPE, inplace=True))
        super().__init__(*layers)


class ResidualBlock(nn.Module):
    """Residual basic block (ResNet-D, nnU-Net ``BasicBlockD``): ``act(norm(conv2(conv1(x))) + shortcut(x))``.

    ``conv1`` (conv-norm-act) strides by ``stride``; ``conv2`` (conv-norm) does not. ``shortcut`` is the identity,
    or an average pool (kernel = stride) when ``stride`` > 1 followed by a bias-free 1×1 convolution + norm when
    the width changes.
    """

    def __init__(
        self, dims: int, in_channels: int, out_channels: int, kernel: Sequence[int], stride: Sequence[int]
    ) -> None:
        super().__init__()
        self.conv1 = ConvNormAct(dims, in_channels, out_channels, kernel, stride)
        self.conv2 = ConvNormAct(dims, out_channels, out_channels, kernel, act=False)
        shortcut: list[nn.Module] = []
        if any(step != 1 for step in stride):
            shortcut.append((nn.AvgPool2d, nn.AvgPool3d)[dims - 2](tuple(stride), tuple(stride)))
        if in_channels != out_channels:
            conv = (nn.Conv2d, nn.Conv3d)[dims - 2](in_channels, out_channels, 1, bias=False)
            shortcut.extend([conv, _norm(dims, out_channels)])
        self.shortcut = nn.Sequential(*shortcut) if shortcut else nn.Identity()
        self.act = nn.LeakyReLU(_NEGATIVE_SLOPE, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, in, *S]`` → ``[B, out, *S / stride]``."""
        return self.act(self.conv2(self.conv1(x)) + self.shortcut(x))


class ResidualEncoder(nn.Module):
    """Stem convolution then one stage of residual blocks per entry of ``strides``; returns every stage's output."""

    def __init__(
        self,
        dims: int,
        in_channels: int,
        features_per_stage: Sequence[int],
        strides: Sequence[Sequence[int]],
        kernel_sizes: Sequence[Sequence[int]],
        n_blocks_per_stage: Sequence[int],
    ) -> None:
        super().__init__()
        self.stem = ConvNormAct(dims, in_channels, features_per_stage[0], kernel_sizes[0])
        stages, width = [], features_per_stage[0]
        for features, stride, kernel, blocks in zip(
            features_per_stage, strides, kernel_sizes, n_blocks_per_stage, strict=True
        ):
            stage = [ResidualBlock(dims, width, features, kernel, stride)]
            stage += [ResidualBlock(dims, features, features, kernel, (1,) * dims) for _ in range(blocks - 1)]
            stages.append(nn.Sequential(*stage))
            width = features
        self.stages = nn.ModuleList(stages)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Feature maps of all stages, highest resolution first (the last one is the bottleneck)."""
        x = self.stem(x)
        skips = []
        for stage in self.stages:
            x = stage(x)
            skips.append(x)
        return skips


class UNetDecoder(nn.Module):
    """Decoder from the bottleneck up with one 1×1 output convolution per head at every stage.

    ``upsample[i]``, ``stages[i]`` and ``heads[name][i]`` belong to decoder stage ``i``, lowest resolution first
    (as nnU-Net's ``UNetDecoder``); decoder stage ``i`` works at the resolution of encoder stage ``n - 2 - i``.
    """

    def __init__(
        self,
        dims: int,
        features_per_stage: Sequence[int],
        strides: Sequence[Sequence[int]],
        kernel_sizes: Sequence[Sequence[int]],
        n_conv_per_stage: Sequence[int],
        heads: Mapping[str, int],
    ) -> None:
        super().__init__()
        n_stages = len(features_per_stage)
        transposed = (nn.ConvTranspose2d, nn.ConvTranspose3d)[dims - 2]
        upsample, stages = [], []
        for index in range(n_stages - 1):
            below, skip = features_per_stage[n_stages - 1 - index], features_per_stage[n_stages - 2 - index]
            stride = tuple(strides[n_stages - 1 - index])
            kernel = kernel_sizes[n_stages - 2 - index]
            upsample.append(transposed(below, skip, stride, stride))
            convs = [ConvNormAct(dims, 2 * skip, skip, kernel)]
            convs += [ConvNormAct(dims, skip, skip, kernel) for _ in range(n_conv_per_stage[index] - 1)]
            stages.append(nn.Sequential(*convs))
        self.upsample = nn.ModuleList(upsample)
        self.stages = nn.ModuleList(stages)
        conv = (nn.Conv2d, nn.Conv3d)[dims - 2]
        self.heads = nn.ModuleDict(
            {
                name: nn.ModuleList(
                    conv(features_per_stage[n_stages - 2 - index], channels, 1) for index in range(n_stages - 1)
                )
                for name, channels in heads.items()
            }
        )

    def forward(self, skips: Sequence[torch.Tensor], all_stages: bool) -> dict[str, list[torch.Tensor]]:
        """Per head, the outputs of every decoder stage (``all_stages``) or of the last one, highest resolution
        first."""
        x = skips[-1]
        outputs: dict[str, list[torch.Tensor]] = {name: [] for name in self.heads}
        last = len(self.stages) - 1
        for index, (upsample, stage) in enumerate(zip(self.upsample, self.stages, strict=True)):
            x = stage(torch.cat((upsample(x), skips[-(index + 2)]), dim=1))
            if all_stages or index == last:
                for name, layers in self.heads.items():
                    outputs[name].append(layers[index](x))
        return {name: values[::-1] for name, values in outputs.items()}


class MultiTaskUNet(nn.Module):
    """Residual-encoder U-Net with named heads (see the module docstring for the architecture).

    ``features_per_stage``, ``strides``, ``kernel_sizes`` and ``n_blocks_per_stage`` have one entry per stage
    (``strides[0]`` is normally all ones); ``n_conv_per_stage_decoder`` has ``n_stages - 1``, lowest resolution
    first. ``heads`` maps each target's name to its number of output channels (names may not contain '.').

    ``forward(x)`` with ``x`` of shape ``[B, in_channels, *S]`` returns ``{head: logits [B, channels, *S]}``;
    with ``deep_supervision=True`` in training mode it returns ``{head: [logits at stage 0, 1, …, n - 2]}``
    (highest resolution first), stage ``k`` of size ``S / prod(strides[:k + 1])``
    (:attr:`deep_supervision_strides`). Raises ``ValueError`` for inconsistent arguments or input shapes.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        features_per_stage: Sequence[int],
        strides: Sequence[Sequence[int]],
        kernel_sizes: Sequence[Sequence[int]],
        n_blocks_per_stage: Sequence[int],
        n_conv_per_stage_decoder: Sequence[int],
        heads: Mapping[str, int],
        *,
        shared_decoder: bool = False,
        deep_supervision: bool = False,
    ) -> None:
        super().__init__()
        _check_arguments(
            spatial_dims,
            in_channels,
            features_per_stage,
            strides,
            kernel_sizes,
            n_blocks_per_stage,
            n_conv_per_stage_decoder,
            heads,
        )
        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.head_channels = dict(heads)
        self.deep_supervision = deep_supervision
        self.strides = [tuple(int(step) for step in stride) for stride in strides]
        self.encoder = ResidualEncoder(
            spatial_dims, in_channels, features_per_stage, strides, kernel_sizes, n_blocks_per_stage
        )
        decoder_args = (spatial_dims, features_per_stage, strides, kernel_sizes, n_conv_per_stage_decoder)
        if shared_decoder:
            decoders = {SHARED_DECODER: UNetDecoder(*decoder_args, heads)}
        else:
            decoders = {name: UNetDecoder(*decoder_args, {name: channels}) for name, channels in heads.items()}
        self.decoders = nn.ModuleDict(decoders)
        self.apply(_init_weights)
        for module in self.modules():
            if isinstance(module, ResidualBlock):
                nn.init.zeros_(module.conv2[1].weight)

    @property
    def must_be_divisible_by(self) -> tuple[int, ...]:
        """Input spatial sizes must be multiples of these (product of the strides per axis)."""
        return tuple(math.prod(stride[axis] for stride in self.strides) for axis in range(self.spatial_dims))

    @property
    def deep_supervision_strides(self) -> list[tuple[int, ...]]:
        """Cumulative stride of each deep-supervision output, highest resolution first (nnU-Net's
        ``1 / deep_supervision_scales``): output ``k`` is the input size divided by this."""
        result, cumulative = [], [1] * self.spatial_dims
        for stride in self.strides[:-1]:
            cumulative = [total * step for total, step in zip(cumulative, stride, strict=True)]
            result.append(tuple(cumulative))
        return result

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor] | dict[str, list[torch.Tensor]]:
        """Logits per head (see the class docstring)."""
        self._check_input(x)
        skips = self.encoder(x)
        all_stages = self.deep_supervision and self.training
        outputs: dict[str, list[torch.Tensor]] = {}
        for decoder in self.decoders.values():
            outputs.update(decoder(skips, all_stages))
        ordered = {name: outputs[name] for name in self.head_channels}
        if all_stages:
            return ordered
        return {name: values[0] for name, values in ordered.items()}

    def _check_input(self, x: torch.Tensor) -> None:
        """Raise ``ValueError`` unless ``x`` is ``[B, in_channels, *S]`` with S divisible by the total stride."""
        if x.dim() != self.spatial_dims + 2 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"expected input [B, {self.in_channels}, {self.spatial_dims} spatial axes], got {tuple(x.shape)}"
            )
        spatial = tuple(int(size) for size in x.shape[2:])
        if any(size % step for size, step in zip(spatial, self.must_be_divisible_by, strict=True)):
            raise ValueError(f"input spatial size {spatial} must be a multiple of {self.must_be_divisible_by} per axis")


def _check_arguments(
    dims: int,
    in_channels: int,
    features: Sequence[int],
    strides: Sequence[Sequence[int]],
    kernels: Sequence[Sequence[int]],
    blocks: Sequence[int],
    decoder_convs: Sequence[int],
    heads: Mapping[str, int],
) -> None:
    """Raise ``ValueError`` for inconsistent constructor arguments."""
    n_stages = len(features)
    problems = []
    if dims not in (2, 3):
        problems.append(f"spatial_dims must be 2 or 3, got {dims}")
    if n_stages < 2 or len(strides) != n_stages or len(kernels) != n_stages or len(blocks) != n_stages:
        problems.append(
            f"need ≥ 2 stages and one stride, kernel and block count per stage: {len(features)} widths, "
            f"{len(strides)} strides, {len(kernels)} kernels, {len(blocks)} block counts"
        )
    if len(decoder_convs) != n_stages - 1:
        problems.append(f"n_conv_per_stage_decoder needs {n_stages - 1} entries, got {len(decoder_convs)}")
    if any(len(values) != dims for values in [*strides, *kernels]):
        problems.append(f"every stride and kernel needs {dims} entries: {list(strides)}, {list(kernels)}")
    if any(k % 2 == 0 for kernel in kernels for k in kernel):
        problems.append(f"kernel sizes must be odd: {list(kernels)}")
    if min([in_channels, *features, *blocks, *decoder_convs, *(s for stride in strides for s in stride)]) < 1:
        problems.append("channels, widths, strides and block counts must be ≥ 1")
    if not heads or any(not name or "." in name or channels < 1 for name, channels in heads.items()):
        problems.append(f"heads must map names without '.' to ≥ 1 channels, got {dict(heads)}")
    if problems:
        raise ValueError("; ".join(problems))


def _init_weights(module: nn.Module) -> None:
    """He-normal (negative slope 1e-2) weights and zero biases for every (transposed) convolution (nnU-Net)."""
    if isinstance(module, nn.Conv2d | nn.Conv3d | nn.ConvTranspose2d | nn.ConvTranspose3d):
        nn.init.kaiming_normal_(module.weight, a=_NEGATIVE_SLOPE)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
