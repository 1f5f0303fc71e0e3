"""Topology, patch-size and batch-size planning for the volume-seg U-Net, following nnU-Net v2's rules.

Pure functions over numbers (no torch): :func:`plan_topology` turns a voxel spacing and a patch size into the
U-Net's strides, kernel sizes, widths and depths (nnU-Net's ``get_pool_and_conv_props``, with the real,
possibly anisotropic spacing); :func:`plan_patch_and_batch` picks the patch and batch size from a memory budget
(nnU-Net's ``ExperimentPlanner.get_plans_for_configuration``); :func:`estimate_training_memory_mb` is the
memory model both use. Axis order is (z, y, x) for 3-D and (y, x) for 2-D, as everywhere in medtrain.

The topology rules, applied stage by stage to the current (already pooled) size and spacing of every axis,
starting from the patch size and the voxel spacing, with ``m = min_feature_map_size`` (4):

1. an axis may be pooled only while its current size is ≥ 2·m (8), fewer than ``max_numpool`` times, and its
   current spacing is < 2× the smallest current spacing among the axes that are large enough to pool;
2. if only one axis may be pooled, its current size must also be ≥ 3·m (12), else planning stops;
3. planning stops when no axis may be pooled; each pooling step halves the pooled axes' size (rounding up) and
   doubles their spacing, and becomes the stride of the next stage (stage 0 has stride 1 on every axis);
4. the kernel of an axis is 3 once its current spacing is < 2× the same smallest spacing as in rule 1, else 1,
   and stays 3 afterwards (so every pooled axis has a 3-kernel); the bottleneck always has 3 on every axis;
5. the patch is padded up to a multiple of ``2**pools`` per axis; ``n_stages = pools + 1`` (pools counted over
   the stages, not per axis); ``features[i] = min(base·2**i, max)``; ResEnc encoder blocks 1, 3, 4, 6, 6, …;
   one convolution per decoder stage.

One deliberate difference from nnU-Net's code, in the only case where it matters: while every axis is large
enough to pool, rule 4 is nnU-Net's exactly (the smallest spacing of the size-valid axes is then the smallest of
all). Once an axis is too small to pool while another still has kernel 1, nnU-Net indexes the spacings of the
size-valid axes by the axis number (``spacings_of_axes[d]``), which mixes axes up or raises ``IndexError``; here
each axis's own spacing is compared with rule 1's reference, so an axis is never pooled with a 1-kernel.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "ENCODER_BLOCKS_PER_STAGE",
    "PatchPlan",
    "Topology",
    "estimate_training_memory_mb",
    "plan_patch_and_batch",
    "plan_topology",
]

ENCODER_BLOCKS_PER_STAGE: tuple[int, ...] = (1, 3, 4, 6)
"""Residual blocks in the first encoder stages (nnU-Net ResEnc); every later stage has the last value, 6."""

DECODER_CONVS_PER_STAGE = 1
"""Convolution blocks per decoder stage (nnU-Net ResEnc)."""

INITIAL_PATCH_VOXELS: dict[int, int] = {2: 2048**2, 3: 256**3}
"""Volume of the first patch tried by :func:`plan_patch_and_batch` (nnU-Net: 2048² in 2-D, 256³ in 3-D)."""

BYTES_PER_FEATURE_MAP_ELEMENT: dict[int, float] = {3: 8 * 2**30 / (2 * 680e6), 2: 8 * 2**30 / (12 * 135e6)}
"""Training memory per counted feature-map element and sample (see :func:`estimate_training_memory_mb`).

nnU-Net's ResEnc planner states that a ResEnc U-Net whose per-sample count is 680·10⁶ elements (3-D, batch 2)
or 135·10⁶ (2-D, batch 12) trains in 8 GB under mixed precision; dividing 8 GiB by count × batch gives
≈ 6.32 bytes (3-D) and ≈ 5.30 bytes (2-D) per element. This covers the saved activations (fp16 convolution
outputs, fp32 normalisation outputs), the gradients of the backward pass, weights, optimiser state and
workspace, as nnU-Net's reference figures do."""

MEBIBYTE = 2**20


@dataclass(frozen=True)
class Topology:
    """A planned U-Net: everything the network constructor needs besides channels and heads.

    ``strides[i]`` is the stride of stage ``i`` (``strides[0]`` is all ones: nnU-Net's ``pool_op_kernel_sizes``),
    ``kernel_sizes[i]`` its convolution kernel, ``features_per_stage[i]`` its width and ``n_blocks_per_stage[i]``
    its residual blocks; ``n_conv_per_stage_decoder`` has ``n_stages - 1`` entries, lowest resolution first (as
    nnU-Net's decoder). ``patch_size`` is padded so that every axis is a multiple of ``must_be_divisible_by``
    (``2**pools`` of that axis).
    """

    spatial_dims: int
    spacing: tuple[float, ...]
    patch_size: tuple[int, ...]
    strides: tuple[tuple[int, ...], ...]
    kernel_sizes: tuple[tuple[int, ...], ...]
    features_per_stage: tuple[int, ...]
    n_blocks_per_stage: tuple[int, ...]
    n_conv_per_stage_decoder: tuple[int, ...]
    must_be_divisible_by: tuple[int, ...]

    @property
    def n_stages(self) -> int:
        """Number of resolution stages (pools + 1)."""
        return len(self.strides)

    @property
    def pools_per_axis(self) -> tuple[int, ...]:
        """How many times each axis is halved in the encoder."""
        return tuple(sum(stride[axis] == 2 for stride in self.strides) for axis in range(self.spatial_dims))

    def stage_shapes(self) -> list[tuple[int, ...]]:
        """Feature-map size of every stage for an input of ``patch_size``: patch / cumulative stride."""
        shape, shapes = list(self.patch_size), []
        for stride in self.strides:
            shape = [size // step for size, step in zip(shape, stride, strict=True)]
            shapes.append(tuple(shape))
        return shapes

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (lists of ints and floats); :meth:`from_dict` gives back an equal Topology."""
        return {
            "spatial_dims": self.spatial_dims,
            "spacing": list(self.spacing),
            "patch_size": list(self.patch_size),
            "strides": [list(stride) for stride in self.strides],
            "kernel_sizes": [list(kernel) for kernel in self.kernel_sizes],
            "features_per_stage": list(self.features_per_stage),
            "n_blocks_per_stage": list(self.n_blocks_per_stage),
            "n_conv_per_stage_decoder": list(self.n_conv_per_stage_decoder),
            "must_be_divisible_by": list(self.must_be_divisible_by),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Topology:
        """Rebuild a Topology from :meth:`to_dict`'s output; ``ValueError`` on missing/unknown keys or bad sizes."""
        expected = set(cls.__dataclass_fields__)
        if set(data) != expected:
            missing, unknown = sorted(expected - set(data)), sorted(set(data) - expected)
            raise ValueError(f"topology dict: missing keys {missing}, unknown keys {unknown}")
        topology = cls(
            spatial_dims=int(data["spatial_dims"]),
            spacing=tuple(float(value) for value in data["spacing"]),
            patch_size=_ints(data["patch_size"]),
            strides=tuple(_ints(stride) for stride in data["strides"]),
            kernel_sizes=tuple(_ints(kernel) for kernel in data["kernel_sizes"]),
            features_per_stage=_ints(data["features_per_stage"]),
            n_blocks_per_stage=_ints(data["n_blocks_per_stage"]),
            n_conv_per_stage_decoder=_ints(data["n_conv_per_stage_decoder"]),
            must_be_divisible_by=_ints(data["must_be_divisible_by"]),
        )
        topology._check()
        return topology

    def _check(self) -> None:
        """Raise ``ValueError`` unless all per-stage and per-axis lengths agree."""
        dims, stages = self.spatial_dims, self.n_stages
        per_axis = [self.spacing, self.patch_size, self.must_be_divisible_by, *self.strides, *self.kernel_sizes]
        if (
            dims not in (2, 3)
            or stages < 2
            or any(len(values) != dims for values in per_axis)
            or len(self.kernel_sizes) != stages
            or len(self.features_per_stage) != stages
            or len(self.n_blocks_per_stage) != stages
            or len(self.n_conv_per_stage_decoder) != stages - 1
        ):
            raise ValueError(f"inconsistent topology: {self.to_dict()}")


@dataclass(frozen=True)
class PatchPlan:
    """Result of :func:`plan_patch_and_batch`: padded patch size, batch size, topology and memory estimate (MB)."""

    patch_size: tuple[int, ...]
    batch_size: int
    topology: Topology
    estimated_mb: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict for ``plan.json``."""
        return {
            "patch_size": list(self.patch_size),
            "batch_size": self.batch_size,
            "estimated_mb": self.estimated_mb,
            "topology": self.topology.to_dict(),
        }


def plan_topology(
    spacing: Sequence[float],
    patch_size: Sequence[int],
    *,
    min_feature_map_size: int = 4,
    max_numpool: int = 999,
    base_features: int = 32,
    max_features: int = 320,
) -> Topology:
    """Plan the U-Net for ``patch_size`` voxels of ``spacing`` (z, y, x or y, x) by the module's rules 1–5.

    Raises ``ValueError`` for mismatched lengths, non-positive values, or a patch too small to pool even once
    (every axis < ``2·min_feature_map_size``).
    """
    dims = len(spacing)
    if dims not in (2, 3) or len(patch_size) != dims:
        raise ValueError(f"spacing {tuple(spacing)} and patch_size {tuple(patch_size)} must both have 2 or 3 axes")
    if min(spacing) <= 0 or min(patch_size) < 1 or min_feature_map_size < 1 or max_numpool < 1:
        raise ValueError(
            f"spacing {tuple(spacing)} and patch_size {tuple(patch_size)} must be positive, "
            f"min_feature_map_size {min_feature_map_size} and max_numpool {max_numpool} ≥ 1"
        )
    if base_features < 1 or max_features < base_features:
        raise ValueError(f"need 1 ≤ base_features ({base_features}) ≤ max_features ({max_features})")
    current_spacing = [float(value) for value in spacing]
    current_size = [int(value) for value in patch_size]
    pools = [0] * dims
    kernel = [1] * dims
    strides: list[tuple[int, ...]] = [(1,) * dims]
    kernels: list[tuple[int, ...]] = []
    while True:
        large_enough = [axis for axis in range(dims) if current_size[axis] >= 2 * min_feature_map_size]
        if not large_enough:
            break
        finest = min(current_spacing[axis] for axis in large_enough)
        poolable = [axis for axis in large_enough if current_spacing[axis] / finest < 2 and pools[axis] < max_numpool]
        if not poolable or (len(poolable) == 1 and current_size[poolable[0]] < 3 * min_feature_map_size):
            break
        kernel = [3 if k == 3 or current_spacing[axis] / finest < 2 else 1 for axis, k in enumerate(kernel)]
        kernels.append(tuple(kernel))
        for axis in poolable:
            pools[axis] += 1
            current_spacing[axis] *= 2
            current_size[axis] = math.ceil(current_size[axis] / 2)
        strides.append(tuple(2 if axis in poolable else 1 for axis in range(dims)))
    if len(strides) == 1:
        raise ValueError(
            f"patch_size {tuple(patch_size)} at spacing {tuple(spacing)} cannot be pooled even once: an axis "
            f"within 2× of the finest spacing must have ≥ {2 * min_feature_map_size} voxels "
            f"(≥ {3 * min_feature_map_size} when it is the only one)"
        )
    kernels.append((3,) * dims)
    divisible = tuple(2**count for count in pools)
    n_stages = len(strides)
    topology = Topology(
        spatial_dims=dims,
        spacing=tuple(float(value) for value in spacing),
        patch_size=_pad_to_multiple(patch_size, divisible),
        strides=tuple(strides),
        kernel_sizes=tuple(kernels),
        features_per_stage=tuple(min(base_features * 2**stage, max_features) for stage in range(n_stages)),
        n_blocks_per_stage=tuple(
            ENCODER_BLOCKS_PER_STAGE[min(stage, len(ENCODER_BLOCKS_PER_STAGE) - 1)] for stage in range(n_stages)
        ),
        n_conv_per_stage_decoder=(DECODER_CONVS_PER_STAGE,) * (n_stages - 1),
        must_be_divisible_by=divisible,
    )
    topology._check()
    return topology


def estimate_training_memory_mb(
    topology: Topology, in_channels: int, n_output_channels: int, batch_size: int, *, n_decoders: int = 1
) -> float:
    """Estimated training memory in MiB: ``batch_size · E · β / 2**20``.

    ``E`` counts, per sample, the feature-map elements the network writes, as nnU-Net's
    ``compute_conv_feature_map_size`` does for a ResEnc U-Net, with ``V_s`` the voxels and ``f_s`` the width of
    stage ``s`` (patch / cumulative stride) and ``b_s`` its residual blocks:

    - input: ``in_channels · V_0``; stem convolution: ``f_0 · V_0``;
    - encoder stage ``s``: ``(2·b_s + p_s) · f_s · V_s``, two convolutions per block plus ``p_s = 1`` projection
      shortcut when the first block strides or changes width (else 0);
    - each of ``n_decoders`` decoders, stage ``s < n_stages - 1``: ``(1 + c_s) · f_s · V_s`` (transposed
      convolution plus ``c_s`` convolutions);
    - segmentation layers at every decoder stage (deep supervision): ``n_output_channels · V_s``, where
      ``n_output_channels`` is the sum over all heads.

    ``β`` is :data:`BYTES_PER_FEATURE_MAP_ELEMENT` (nnU-Net's calibration, ≈ 6.3 B in 3-D, 5.3 B in 2-D). The
    estimate is linear in the batch size and grows with the patch, the widths, the channels and the decoders.
    """
    if min(in_channels, n_output_channels, batch_size, n_decoders) < 1:
        raise ValueError(
            f"in_channels {in_channels}, n_output_channels {n_output_channels}, batch_size {batch_size} and "
            f"n_decoders {n_decoders} must be ≥ 1"
        )
    shapes = topology.stage_shapes()
    voxels = [math.prod(shape) for shape in shapes]
    features = topology.features_per_stage
    elements = (in_channels + features[0]) * voxels[0]
    previous = features[0]  # the stem's width
    for stage, (stride, width, blocks) in enumerate(
        zip(topology.strides, features, topology.n_blocks_per_stage, strict=True)
    ):
        projection = int(max(stride) > 1 or previous != width)
        elements += (2 * blocks + projection) * width * voxels[stage]
        previous = width
    for stage, convs in enumerate(reversed(topology.n_conv_per_stage_decoder)):
        elements += n_decoders * (1 + convs) * features[stage] * voxels[stage]
        elements += n_output_channels * voxels[stage]
    return batch_size * elements * BYTES_PER_FEATURE_MAP_ELEMENT[topology.spatial_dims] / MEBIBYTE


def plan_patch_and_batch(
    spacing: Sequence[float],
    median_shape: Sequence[int],
    *,
    in_channels: int,
    n_output_channels: int,
    n_cases: int,
    memory_budget_mb: float = 8192.0,
    n_decoders: int = 1,
    max_dataset_fraction: float = 0.05,
    min_batch: int = 2,
    min_feature_map_size: int = 4,
    base_features: int = 32,
    max_features: int = 320,
) -> PatchPlan:
    """Choose patch and batch size for a memory budget, as nnU-Net's experiment planner.

    1. Initial patch ∝ 1/spacing with the volume of 256³ (3-D) or 2048² (2-D), rounded, clipped to
       ``median_shape``; :func:`plan_topology` pads it to its ``must_be_divisible_by``.
    2. While ``estimate_training_memory_mb(…, batch_size=min_batch)`` exceeds ``memory_budget_mb``: shrink the
       axis with the largest patch / median ratio by one step, the ``must_be_divisible_by`` of that axis for the
       patch already reduced by the current step (nnU-Net's two-step rule, so that e.g. 256 → 224 and not 192),
       and plan again. An axis that cannot shrink (size below one step, or no poolable patch left) is skipped.
    3. ``batch = floor(budget / estimate(batch 1))``, capped so that one batch covers at most
       ``max_dataset_fraction`` of the dataset's voxels (``n_cases · prod(median_shape)``, floor), and at least
       ``min_batch``.

    ``median_shape`` is in voxels per axis (fractional medians are floored); ``n_output_channels`` is the sum of
    all heads' channels and ``n_decoders`` the number of decoders (1 for a shared decoder). Raises ``ValueError``
    for bad arguments or when even the smallest plannable patch exceeds the budget.
    """
    dims = len(spacing)
    if dims not in (2, 3) or len(median_shape) != dims or min(median_shape) < 1:
        raise ValueError(f"spacing {tuple(spacing)} and median_shape {tuple(median_shape)} need 2 or 3 axes, ≥ 1")
    if n_cases < 1 or min_batch < 1 or memory_budget_mb <= 0 or not 0 < max_dataset_fraction <= 1:
        raise ValueError(
            f"need n_cases ({n_cases}) ≥ 1, min_batch ({min_batch}) ≥ 1, memory_budget_mb ({memory_budget_mb}) > 0 "
            f"and 0 < max_dataset_fraction ({max_dataset_fraction}) ≤ 1"
        )
    topology_kwargs = {
        "min_feature_map_size": min_feature_map_size,
        "base_features": base_features,
        "max_features": max_features,
    }

    def estimate(topology: Topology, batch_size: int) -> float:
        return estimate_training_memory_mb(topology, in_channels, n_output_channels, batch_size, n_decoders=n_decoders)

    inverse = [1.0 / value for value in spacing]
    scale = (INITIAL_PATCH_VOXELS[dims] / math.prod(inverse)) ** (1.0 / dims)
    initial = [min(round(value * scale), int(limit)) for value, limit in zip(inverse, median_shape, strict=True)]
    topology = plan_topology(spacing, initial, **topology_kwargs)
    while estimate(topology, min_batch) > memory_budget_mb:
        smaller = _shrink_patch(spacing, topology, median_shape, topology_kwargs)
        if smaller is None:
            raise ValueError(
                f"memory budget {memory_budget_mb} MB is too small: the smallest patch "
                f"{topology.patch_size} needs {estimate(topology, min_batch):.3g} MB at batch size {min_batch}"
            )
        topology = smaller
    per_sample = estimate(topology, 1)
    batch_size = math.floor(memory_budget_mb / per_sample)
    dataset_voxels = n_cases * math.prod(int(size) for size in median_shape)
    batch_cap = math.floor(dataset_voxels * max_dataset_fraction / math.prod(topology.patch_size))
    batch_size = max(min(batch_size, batch_cap), min_batch)
    return PatchPlan(topology.patch_size, batch_size, topology, estimate(topology, batch_size))


def _shrink_patch(
    spacing: Sequence[float], topology: Topology, median_shape: Sequence[int], topology_kwargs: Mapping[str, int]
) -> Topology | None:
    """Return the topology after one nnU-Net shrink step, or None when no axis can shrink any more."""
    patch = topology.patch_size
    ratios = [size / median for size, median in zip(patch, median_shape, strict=True)]
    for axis in sorted(range(len(patch)), key=lambda index: ratios[index], reverse=True):
        reduced = list(patch)
        reduced[axis] -= topology.must_be_divisible_by[axis]
        try:
            step = plan_topology(spacing, reduced, **topology_kwargs).must_be_divisible_by[axis]
            reduced = list(patch)
            reduced[axis] -= step
            return plan_topology(spacing, reduced, **topology_kwargs)
        except ValueError:  # the axis (or the whole patch) would become too small to plan
            continue
    return None


def _pad_to_multiple(shape: Sequence[int], multiple: Sequence[int]) -> tuple[int, ...]:
    """Round every size up to the next multiple (nnU-Net's ``pad_shape``)."""
    return tuple(math.ceil(int(size) / step) * step for size, step in zip(shape, multiple, strict=True))


def _ints(values: Sequence[Any]) -> tuple[int, ...]:
    """Tuple of ints; ``ValueError`` for a value that is not an integer."""
    result = tuple(int(value) for value in values)
    if any(result_value != value for result_value, value in zip(result, values, strict=True)):
        raise ValueError(f"expected integers, got {list(values)}")
    return result
