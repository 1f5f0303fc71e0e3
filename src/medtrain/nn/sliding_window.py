"""nnU-Net-style sliding-window inference over whole 2-D/3-D volumes, in memory or chunk by chunk.

A network that maps a patch ``[B, C, *patch_size]`` to one logit map per head (``{"sheet": [B, C_k, *patch_size],
...}``) is applied on a grid of overlapping windows (:func:`sliding_window_starts`, nnU-Net's
``compute_steps_for_sliding_window``); each window's logits are weighted by a Gaussian importance map
(:func:`gaussian_importance_map`, nnU-Net's ``compute_gaussian``) or by ones and the result is the weighted mean

    ``logits(v) = Σ_w g(v − start_w) · net(window_w)(v − start_w) / Σ_w g(v − start_w)``

over the windows ``w`` that contain voxel ``v``. Optional test-time mirroring averages the network over every
non-empty combination of flipped ``mirror_axes`` and the unflipped input (each output flipped back), as nnU-Net.
A volume smaller than the patch along an axis is zero-padded to the patch, the padding split evenly before and
after it (nnU-Net's ``pad_nd_image``; volume-seg's training pads small volumes the same way), and the result cropped.

:func:`sliding_window_inference_chunked` computes the same values for volumes that do not fit in memory: see its
docstring. Spatial axes are ``(z, y, x)`` or ``(y, x)``; pure torch (no MONAI).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from medtrain.io.volumes import box_inside

__all__ = [
    "SINGLE_CHUNK_VOXELS",
    "default_chunk_size",
    "gaussian_importance_map",
    "iter_chunks",
    "sliding_window_inference",
    "sliding_window_inference_chunked",
    "sliding_window_starts",
]

Network = Callable[[Tensor], Mapping[str, Tensor]]


def gaussian_importance_map(
    patch_size: Sequence[int],
    sigma_scale: float = 1.0 / 8,
    value_scaling_factor: float = 10.0,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> Tensor:
    """The Gaussian window weight of nnU-Net's ``compute_gaussian``, shape ``patch_size``.

    nnU-Net filters a unit impulse at ``c_d = patch_size[d] // 2`` with ``scipy.ndimage.gaussian_filter``
    (``σ_d = patch_size[d] · sigma_scale``, truncate 4, constant mode) and rescales the maximum to
    ``value_scaling_factor``; in closed form that is

        ``g(i) = value_scaling_factor · Π_d exp(−(i_d − c_d)² / (2 σ_d²))`` where every ``|i_d − c_d| ≤ r_d``,
        ``r_d = int(4 σ_d + 0.5)``, and 0 elsewhere;

    finally the zeros are replaced by the smallest non-zero value (so no voxel has weight 0).
    """
    sizes = [int(s) for s in patch_size]
    if not sizes or any(s < 1 for s in sizes) or sigma_scale <= 0:
        raise ValueError(f"gaussian_importance_map: invalid patch_size {patch_size} or sigma_scale {sigma_scale}")
    factors = []
    for size in sizes:
        sigma = size * sigma_scale
        offsets = torch.arange(size, dtype=torch.float64) - size // 2
        factor = torch.exp(-(offsets**2) / (2 * sigma**2))
        factor[offsets.abs() > int(4.0 * sigma + 0.5)] = 0.0
        factors.append(factor)
    weight = factors[0]
    for factor in factors[1:]:
        weight = weight[..., None] * factor
    weight = (weight * value_scaling_factor).to(dtype=dtype, device=device)
    weight[weight == 0] = weight[weight != 0].min()
    return weight


def sliding_window_starts(image_size: Sequence[int], patch_size: Sequence[int], overlap: float) -> list[list[int]]:
    """Window start positions per axis: nnU-Net's ``compute_steps_for_sliding_window`` with step ``1 − overlap``.

    Per axis with image size ``I ≥ P`` (patch size): target step ``s = P · (1 − overlap)``, number of windows
    ``n = ceil((I − P) / s) + 1``, and starts ``round(k · (I − P) / (n − 1))`` for ``k = 0..n−1`` (``[0]`` when
    ``n = 1``), so windows are spread evenly, the first starts at 0 and the last ends at ``I``.
    """
    if len(image_size) != len(patch_size):
        raise ValueError(f"sliding_window_starts: image size {tuple(image_size)} vs patch size {tuple(patch_size)}")
    if not 0 <= overlap < 1:
        raise ValueError(f"sliding_window_starts: overlap {overlap} must be in [0, 1)")
    starts = []
    for image, patch in zip(image_size, patch_size, strict=True):
        if patch < 1 or image < patch:
            raise ValueError(f"sliding_window_starts: image size {tuple(image_size)} < patch {tuple(patch_size)}")
        count = math.ceil((image - patch) / (patch * (1 - overlap))) + 1
        step = (image - patch) / (count - 1) if count > 1 else 0.0
        # numpy's round: half to even, exactly as nnU-Net
        starts.append([int(np.round(step * k)) for k in range(count)])
    return starts


#: a volume up to this many voxels is processed as one chunk by :func:`default_chunk_size`
SINGLE_CHUNK_VOXELS = 128**3


def default_chunk_size(volume_shape: Sequence[int], patch_size: Sequence[int]) -> tuple[int, ...]:
    """The chunk of :func:`sliding_window_inference_chunked` for a volume: the whole volume when it has at most
    :data:`SINGLE_CHUNK_VOXELS` voxels, else four patches per axis (about 2× the network work of one pass)."""
    if math.prod(volume_shape) <= SINGLE_CHUNK_VOXELS:
        return tuple(int(s) for s in volume_shape)
    return tuple(min(int(s), 4 * int(p)) for s, p in zip(volume_shape, patch_size, strict=True))


def iter_chunks(volume_shape: Sequence[int], chunk_size: Sequence[int]) -> Iterator[tuple[tuple[int, ...], ...]]:
    """Yield ``(starts, sizes)`` of the chunks that tile ``volume_shape`` (spatial), in C order.

    Chunks start at multiples of ``chunk_size``; the last chunk along an axis is cut at the volume's end.
    """
    if len(volume_shape) != len(chunk_size) or any(c < 1 for c in chunk_size):
        raise ValueError(f"iter_chunks: chunk size {tuple(chunk_size)} for a volume of shape {tuple(volume_shape)}")
    grids = [range(0, int(size), int(chunk)) for size, chunk in zip(volume_shape, chunk_size, strict=True)]
    for starts in itertools.product(*grids):
        sizes = tuple(min(int(c), int(v) - s) for s, c, v in zip(starts, chunk_size, volume_shape, strict=True))
        yield tuple(starts), sizes


def _mirror_combinations(mirror_axes: Sequence[int], spatial_dims: int) -> list[tuple[int, ...]]:
    """Tensor dims (batch first) to flip: ``()`` plus every non-empty combination of the mirror axes."""
    axes = sorted({int(a) for a in mirror_axes})
    if any(not 0 <= a < spatial_dims for a in axes):
        raise ValueError(f"mirror axes {tuple(mirror_axes)} must be spatial axes in [0, {spatial_dims})")
    dims = [a + 2 for a in axes]
    return [()] + [c for n in range(1, len(dims) + 1) for c in itertools.combinations(dims, n)]


def _predict(network: Network, batch: Tensor, flips: list[tuple[int, ...]]) -> dict[str, Tensor]:
    """The network's logits on ``batch`` averaged over the flip combinations (each output flipped back)."""
    total: dict[str, Tensor] = {}
    for dims in flips:
        out = network(torch.flip(batch, dims) if dims else batch)
        for key, value in out.items():
            value = (torch.flip(value, dims) if dims else value).float()
            total[key] = value if key not in total else total[key] + value
    if len(flips) > 1:
        total = {key: value / len(flips) for key, value in total.items()}
    return total


class _Accumulator:
    """Weighted logit sums and weight sums over one output region ``[origin, origin + size)`` (global coordinates).

    ``source`` holds the (padded) image over ``[source_origin, source_origin + source.shape[1:])``, which must
    contain every window given to :meth:`run`.
    """

    def __init__(
        self,
        network: Network,
        source: Tensor,
        source_origin: Sequence[int],
        origin: Sequence[int],
        size: Sequence[int],
        patch_size: Sequence[int],
        weight: Tensor,
        flips: list[tuple[int, ...]],
        batch_size: int,
        out_channels: Mapping[str, int] | None,
    ) -> None:
        self.network, self.source, self.weight, self.flips = network, source, weight, flips
        self.source_origin, self.origin, self.size = tuple(source_origin), tuple(origin), tuple(size)
        self.patch_size, self.batch_size = tuple(patch_size), batch_size
        self.device = source.device
        self.weight_sum = torch.zeros(self.size, dtype=torch.float32, device=self.device)
        self.sums: dict[str, Tensor] = {}
        for key, channels in (out_channels or {}).items():
            self.sums[key] = torch.zeros((channels, *self.size), dtype=torch.float32, device=self.device)

    def _slices(self, start: Sequence[int]) -> tuple[tuple[slice, ...], tuple[slice, ...]]:
        """Slices of the window starting at ``start`` into the window and into the output region."""
        in_window, in_region = [], []
        for s, p, o, n in zip(start, self.patch_size, self.origin, self.size, strict=True):
            low, high = max(s, o), min(s + p, o + n)
            in_window.append(slice(low - s, high - s))
            in_region.append(slice(low - o, high - o))
        return tuple(in_window), tuple(in_region)

    def run(self, window_starts: Sequence[Sequence[int]]) -> None:
        """Evaluate the windows in batches and add ``weight · logits`` and ``weight`` over the output region."""
        for first in range(0, len(window_starts), self.batch_size):
            group = window_starts[first : first + self.batch_size]
            patches = []
            for start in group:
                index = tuple(
                    slice(s - o, s - o + p) for s, o, p in zip(start, self.source_origin, self.patch_size, strict=True)
                )
                patches.append(self.source[(slice(None), *index)])
            logits = _predict(self.network, torch.stack(patches), self.flips)
            for key, value in logits.items():
                if key not in self.sums:
                    self.sums[key] = torch.zeros((value.shape[1], *self.size), dtype=torch.float32, device=self.device)
                elif self.sums[key].shape[0] != value.shape[1]:
                    raise ValueError(
                        f"sliding window: head {key!r} returned {value.shape[1]} channels, expected "
                        f"{self.sums[key].shape[0]}"
                    )
            for position, start in enumerate(group):
                in_window, in_region = self._slices(start)
                weight = self.weight[in_window]
                self.weight_sum[in_region] += weight
                for key, value in logits.items():
                    self.sums[key][(slice(None), *in_region)] += value[(position, slice(None), *in_window)] * weight

    def result(self) -> dict[str, Tensor]:
        """The weighted mean logits per head, ``[C_k, *size]`` (divides the sums in place)."""
        return {key: value.div_(self.weight_sum) for key, value in self.sums.items()}


def _check_arguments(spatial_shape: Sequence[int], patch_size: Sequence[int], batch_size: int, weighting: str) -> None:
    if len(patch_size) not in (2, 3) or len(spatial_shape) != len(patch_size) or any(p < 1 for p in patch_size):
        raise ValueError(
            f"sliding window: patch size {tuple(patch_size)} does not fit a volume of spatial shape "
            f"{tuple(spatial_shape)} (expected 2 or 3 positive sizes, one per spatial axis)"
        )
    if batch_size < 1:
        raise ValueError(f"sliding window: batch_size {batch_size} must be ≥ 1")
    if weighting not in ("gaussian", "constant"):
        raise ValueError(f"sliding window: weighting {weighting!r} must be 'gaussian' or 'constant'")


def _window_grid(spatial: Sequence[int], patch_size: Sequence[int], overlap: float) -> list[list[int]]:
    """Window starts per axis in volume coordinates: :func:`sliding_window_starts` over the volume padded to at
    least the patch, the padding split ``(p − s) // 2`` before and the rest after, so starts are negative along
    an axis where the volume is smaller than the patch."""
    padded = [max(int(s), int(p)) for s, p in zip(spatial, patch_size, strict=True)]
    before = [(q - int(s)) // 2 for q, s in zip(padded, spatial, strict=True)]
    grid = sliding_window_starts(padded, patch_size, overlap)
    return [[w - b for w in axis] for axis, b in zip(grid, before, strict=True)]


def _zero_padded_region(
    read_region: Callable[[tuple[int, ...], tuple[int, ...]], Tensor | np.ndarray],
    low: Sequence[int],
    high: Sequence[int],
    spatial: Sequence[int],
    device: torch.device,
) -> Tensor:
    """The image over ``[low, high)`` as float32 on ``device``: ``read_region`` of its part inside the volume
    (``[starts, starts + sizes)``, ``[C, *sizes]``), zero-padded where the box reaches outside."""
    starts, sizes, padding = box_inside(low, [h - lo for lo, h in zip(low, high, strict=True)], spatial)
    region = torch.as_tensor(read_region(starts, sizes))
    if tuple(region.shape[1:]) != sizes:
        raise ValueError(f"read_region{(starts, sizes)} returned shape {tuple(region.shape)}")
    source = region.to(device=device, dtype=torch.float32)
    pad = [amount for before, after in reversed(padding) for amount in (before, after)]  # last axis first
    return torch.nn.functional.pad(source, pad) if any(pad) else source


def _window_weight(patch_size: Sequence[int], weighting: str, device: torch.device) -> Tensor:
    if weighting == "gaussian":
        return gaussian_importance_map(patch_size, device=device)
    return torch.ones(tuple(patch_size), dtype=torch.float32, device=device)


@torch.inference_mode()
def sliding_window_inference(
    network: Network,
    image: Tensor,
    patch_size: Sequence[int],
    *,
    overlap: float = 0.5,
    batch_size: int = 4,
    mirror_axes: Sequence[int] = (),
    device: torch.device | str | None = None,
    weighting: str = "gaussian",
    out_channels: Mapping[str, int] | None = None,
) -> dict[str, Tensor]:
    """Per-head weighted-mean logits ``{key: [C_k, *spatial]}`` (float32) of ``network`` over ``image``.

    ``image`` is ``[C, *spatial]`` (2-D or 3-D spatial) on any device; it is moved to ``device`` (default: its own)
    where the windows are cut, batched ``batch_size`` at a time, evaluated, and the logits accumulated; the result
    lives on that device. ``mirror_axes`` are spatial axes (0 = z in 3-D) for test-time mirroring;
    ``weighting`` is ``"gaussian"`` (:func:`gaussian_importance_map`) or ``"constant"``. ``out_channels`` lets
    the accumulators be allocated up front; without it they are sized from the first batch. The network should
    be in eval mode; it runs under ``torch.inference_mode``.
    """
    spatial = tuple(image.shape[1:])
    _check_arguments(spatial, patch_size, batch_size, weighting)
    device = torch.device(device) if device is not None else image.device
    grid = _window_grid(spatial, patch_size, overlap)
    low = tuple(axis[0] for axis in grid)
    high = tuple(axis[-1] + p for axis, p in zip(grid, patch_size, strict=True))

    def read_region(starts: tuple[int, ...], sizes: tuple[int, ...]) -> Tensor:
        return image[(slice(None), *(slice(a, a + n) for a, n in zip(starts, sizes, strict=True)))]

    accumulator = _Accumulator(
        network,
        _zero_padded_region(read_region, low, high, spatial, device),
        low,
        (0,) * len(spatial),
        spatial,
        patch_size,
        _window_weight(patch_size, weighting, device),
        _mirror_combinations(mirror_axes, len(spatial)),
        batch_size,
        out_channels,
    )
    accumulator.run(list(itertools.product(*grid)))
    return accumulator.result()


@torch.inference_mode()
def sliding_window_inference_chunked(
    network: Network,
    read_region: Callable[[tuple[int, ...], tuple[int, ...]], np.ndarray],
    volume_shape: Sequence[int],
    patch_size: Sequence[int],
    *,
    chunk_size: Sequence[int],
    write_chunk: Callable[[tuple[int, ...], tuple[int, ...], dict[str, np.ndarray]], None],
    done: Callable[[tuple[int, ...]], bool] | None = None,
    overlap: float = 0.5,
    batch_size: int = 4,
    mirror_axes: Sequence[int] = (),
    device: torch.device | str | None = None,
    weighting: str = "gaussian",
    out_channels: Mapping[str, int] | None = None,
) -> int:
    """:func:`sliding_window_inference` over a volume too large for memory, one chunk at a time; returns the number
    of chunks computed.

    ``volume_shape`` is the spatial shape; ``read_region(starts, sizes)`` returns the image ``[C, *sizes]`` of a
    region inside the volume (e.g. ``Volume.region``). The chunks of :func:`iter_chunks` are processed in order;
    a chunk whose ``done(starts)`` is true is skipped (resume), every other one is handed to
    ``write_chunk(starts, sizes, {key: float32 array [C_k, *sizes]})`` as soon as it is finished, so only one chunk
    (plus its halo) is in memory.

    Exactness: the window grid is that of the whole volume (the same :func:`sliding_window_starts`, the same
    centred zero padding when the volume is smaller than the patch); for a chunk, every window that overlaps it is
    evaluated on the image region they span (the chunk plus a halo of less than one patch) and only the chunk's
    voxels are accumulated. Each voxel therefore receives the same windows and weights as in the full computation
    and the result equals :func:`sliding_window_inference` up to float rounding. Cost: windows overlapping several
    chunks are evaluated once per chunk, about ``Π_d (1 + patch_d / chunk_d)`` times the network work of the full
    computation (e.g. 1.5³ ≈ 3.4× for chunks of twice the patch size, 1.25³ ≈ 2× for four times); use chunks
    several patches wide.
    """
    spatial = tuple(int(s) for s in volume_shape)
    _check_arguments(spatial, patch_size, batch_size, weighting)
    if len(chunk_size) != len(spatial) or any(c < 1 for c in chunk_size):
        raise ValueError(f"sliding window: chunk size {tuple(chunk_size)} for a volume of shape {spatial}")
    device = torch.device(device) if device is not None else torch.device("cpu")
    axis_starts = _window_grid(spatial, patch_size, overlap)
    weight = _window_weight(patch_size, weighting, device)
    flips = _mirror_combinations(mirror_axes, len(spatial))
    computed = 0
    for starts, sizes in iter_chunks(spatial, chunk_size):
        if done is not None and done(starts):
            continue
        # Windows overlapping the chunk, per axis (the grid is a product, so the overlap test is per axis).
        per_axis = [
            [w for w in axis if w < s + n and w + p > s]
            for axis, s, n, p in zip(axis_starts, starts, sizes, patch_size, strict=True)
        ]
        low = tuple(axis[0] for axis in per_axis)
        high = tuple(axis[-1] + p for axis, p in zip(per_axis, patch_size, strict=True))
        source = _zero_padded_region(
            lambda starts, sizes: np.ascontiguousarray(read_region(starts, sizes)), low, high, spatial, device
        )
        accumulator = _Accumulator(
            network, source, low, starts, sizes, patch_size, weight, flips, batch_size, out_channels
        )
        accumulator.run(list(itertools.product(*per_axis)))
        write_chunk(starts, sizes, {key: value.cpu().numpy() for key, value in accumulator.result().items()})
        computed += 1
    return computed
