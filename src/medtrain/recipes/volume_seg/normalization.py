"""Per-channel intensity normalisation of volume-seg images, with statistics computed once over the training cases.

The statistics are **dataset-wide**, computed by :func:`compute_intensity_statistics` over the training cases and
stored in ``plan.json`` by the recipe; :func:`normalize` applies them to any array (a patch, a whole volume at
prediction time), so training and prediction use the same numbers. (nnU-Net's ``ZScoreNormalization`` uses each
image's own mean/std at run time instead; dataset-wide statistics keep a patch's intensities independent of the
rest of its volume, which matters when volumes are too large to read whole.)

Schemes, per channel ``c`` (``eps = 1e-8`` as nnU-Net):

* ``"zscore"``: ``(x - mean) / max(std, eps)`` with mean/std of every voxel of the training images;
* ``"ct"`` (nnU-Net ``CTNormalization``): ``(clip(x, p0.5, p99.5) - mean) / max(std, eps)`` with percentiles,
  mean and std of the **foreground** voxels (label > 0 of ``foreground_target``, or of any target) of the training
  cases; all voxels when the training cases have no foreground at all;
* ``"minmax"``: ``(x - min) / max(max - min, eps)``: the dataset's minimum and maximum map to 0 and 1 (values of
  other images may fall outside [0, 1]; nothing is clipped);
* ``"robust"``: ``(x - p50) / max(p75 - p25, eps)`` (median and interquartile range of every voxel);
* ``"none"``: the array as float32.

Statistics per channel (a JSON-ready dict): ``mean``, ``std`` (population), ``min``, ``max`` over **every**
candidate voxel (exact, accumulated slab by slab in float64), the percentiles ``p0.5``, ``p25``, ``p50``, ``p75``,
``p99.5`` (numpy's linear interpolation) over a uniform sample of at most ``max_samples_per_case`` candidate voxels
per case (exact when a case has no more candidates than that), ``voxels`` and ``sampled`` (counts) and
``foreground`` (whether the candidates were foreground voxels). The sample is a bottom-k sample by random keys
drawn from ``numpy.random.default_rng([seed, case_number])``: deterministic for a seed, bounded memory.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from medtrain.io.volumes import open_volume
from medtrain.recipes.volume_seg.cases import DEFAULT_SLAB_BYTES, VolumeCase, czyx_shape, read_czyx, slab_boxes

__all__ = ["PERCENTILES", "SCHEMES", "compute_intensity_statistics", "normalize"]

SCHEMES = ("zscore", "ct", "minmax", "robust", "none")
"""Normalisation schemes :func:`normalize` knows."""

PERCENTILES = {"p0.5": 0.5, "p25": 25.0, "p50": 50.0, "p75": 75.0, "p99.5": 99.5}
"""Statistic name → percentile (0-100) stored per channel."""

EPS = 1e-8

_REQUIRED = {"zscore": ("mean", "std"), "ct": ("mean", "std", "p0.5", "p99.5"), "minmax": ("min", "max")}
_REQUIRED["robust"] = ("p25", "p50", "p75")
_REQUIRED["none"] = ()


class _ChannelAccumulator:
    """Exact count/mean/M2/min/max (Chan et al. merge of slab moments) and a bottom-k sample, for C channels."""

    def __init__(self, channels: int, max_samples: int, seed: Sequence[int]) -> None:
        self.count = 0
        self.mean = np.zeros(channels)
        self.m2 = np.zeros(channels)
        self.min = np.full(channels, np.inf)
        self.max = np.full(channels, -np.inf)
        self.max_samples = max_samples
        self.rng = np.random.default_rng(seed)
        self.keys = np.empty(0)
        self.values = np.empty((channels, 0))

    def merge_moments(self, count: int, mean: np.ndarray, m2: np.ndarray, low: np.ndarray, high: np.ndarray) -> None:
        """Merge the moments of ``count`` other voxels: ``mean``, ``m2`` (sum of squared deviations), min, max."""
        if count == 0:
            return
        total = self.count + count
        delta = mean - self.mean
        self.mean = self.mean + delta * count / total
        self.m2 = self.m2 + m2 + delta**2 * self.count * count / total
        self.count = total
        self.min = np.minimum(self.min, low)
        self.max = np.maximum(self.max, high)

    def add(self, values: np.ndarray) -> None:
        """Add the voxels ``values`` of shape ``[C, n]`` to the moments and the sample."""
        n = values.shape[1]
        if n == 0:
            return
        values = values.astype(np.float64)
        mean = values.mean(axis=1)
        m2 = ((values - mean[:, None]) ** 2).sum(axis=1)
        self.merge_moments(n, mean, m2, values.min(axis=1), values.max(axis=1))
        keys = np.concatenate([self.keys, self.rng.random(n)])
        pooled = np.concatenate([self.values, values], axis=1)
        if keys.size > self.max_samples:
            keep = np.argpartition(keys, self.max_samples - 1)[: self.max_samples]
            keys, pooled = keys[keep], pooled[:, keep]
        self.keys, self.values = keys, pooled


def _case_candidates(
    case: VolumeCase, foreground: bool, foreground_target: str | None, accumulator: _ChannelAccumulator, max_bytes: int
) -> None:
    """Feed the image voxels of ``case`` (foreground only when ``foreground``) to ``accumulator`` slab by slab."""
    image = open_volume(case.image)
    labels = []
    if foreground:
        targets = [foreground_target] if foreground_target is not None else sorted(case.labels)
        labels = [open_volume(case.labels[t]) for t in targets if t in case.labels]
        if not labels:
            image.close()
            return
    per_voxel = sum(v.channels * v.dtype.itemsize for v in [image, *labels])
    for starts, sizes in slab_boxes(czyx_shape(image)[1:], per_voxel, max_bytes=max_bytes):
        data = read_czyx(image, starts, sizes)
        if foreground:
            mask = np.zeros(data.shape[1:], dtype=bool)
            for label in labels:
                mask |= (read_czyx(label, starts, sizes) > 0).any(axis=0)
            accumulator.add(data[:, mask])
        else:
            accumulator.add(data.reshape(data.shape[0], -1))
    for volume in [image, *labels]:
        volume.close()


def compute_intensity_statistics(
    cases: Sequence[VolumeCase],
    scheme: str,
    *,
    foreground_target: str | None = None,
    max_samples_per_case: int = 10_000,
    seed: int = 0,
    max_slab_bytes: int = DEFAULT_SLAB_BYTES,
) -> list[dict[str, Any]]:
    """Per-channel intensity statistics of the images of ``cases`` for ``scheme`` (see the module docstring).

    Every image is read once, slab by slab; ``"ct"`` also reads the labels (of ``foreground_target`` when given,
    else of every target of the case) to select foreground voxels and falls back to all voxels when no training
    case has any. ``"none"`` reads no voxels and returns one empty dict per channel. Raises ``ValueError`` for an
    unknown scheme, no cases or ``max_samples_per_case < 1``.
    """
    if scheme not in SCHEMES:
        raise ValueError(f"normalization scheme {scheme!r}; expected one of {list(SCHEMES)}")
    if not cases:
        raise ValueError("compute_intensity_statistics: no cases")
    if max_samples_per_case < 1:
        raise ValueError(f"max_samples_per_case must be >= 1, got {max_samples_per_case}")
    with open_volume(cases[0].image) as first:
        channels = first.channels
    if scheme == "none":
        return [{} for _ in range(channels)]
    for foreground in (True, False) if scheme == "ct" else (False,):
        totals: list[_ChannelAccumulator] = []
        for number, case in enumerate(cases):
            accumulator = _ChannelAccumulator(channels, max_samples_per_case, seed=[seed, number])
            _case_candidates(case, foreground, foreground_target, accumulator, max_slab_bytes)
            totals.append(accumulator)
        if sum(a.count for a in totals) > 0:
            break
    return _combine(totals, channels, foreground)


def _combine(parts: Sequence[_ChannelAccumulator], channels: int, foreground: bool) -> list[dict[str, Any]]:
    """Merge the per-case accumulators into one statistics dict per channel."""
    merged = _ChannelAccumulator(channels, 1, seed=[0])
    for part in parts:
        merged.merge_moments(part.count, part.mean, part.m2, part.min, part.max)
    samples = [part.values for part in parts if part.count]
    if merged.count == 0:
        raise ValueError("compute_intensity_statistics: the images have no voxels")
    sample = np.concatenate(samples, axis=1)
    stats = []
    for c in range(channels):
        entry: dict[str, Any] = {
            "mean": float(merged.mean[c]),
            "std": float(np.sqrt(merged.m2[c] / merged.count)),
            "min": float(merged.min[c]),
            "max": float(merged.max[c]),
        }
        values = np.percentile(sample[c], list(PERCENTILES.values()))
        entry.update({name: float(v) for name, v in zip(PERCENTILES, values, strict=True)})
        entry.update({"voxels": int(merged.count), "sampled": int(sample.shape[1]), "foreground": foreground})
        stats.append(entry)
    return stats


def normalize(array: np.ndarray, stats: Sequence[dict[str, Any]], scheme: str) -> np.ndarray:
    """Normalise ``array`` of shape ``[C, *spatial]`` channel by channel with ``stats`` (one dict per channel, as
    :func:`compute_intensity_statistics` returns) by the formula of ``scheme``; returns a new float32 array.

    Raises ``ValueError`` for an unknown scheme, a channel count that differs from ``len(stats)`` (except for
    ``"none"``) or statistics lacking what the scheme needs.
    """
    if scheme not in SCHEMES:
        raise ValueError(f"normalization scheme {scheme!r}; expected one of {list(SCHEMES)}")
    out = np.array(array, dtype=np.float32, copy=True)
    if scheme == "none":
        return out
    if out.ndim < 2 or out.shape[0] != len(stats):
        raise ValueError(f"normalize: array of shape {out.shape} for {len(stats)} channel statistics ([C, *spatial])")
    for c, entry in enumerate(stats):
        missing = [key for key in _REQUIRED[scheme] if key not in entry]
        if missing:
            raise ValueError(f"normalize: statistics of channel {c} lack {missing} for scheme {scheme!r}")
        x = out[c]
        if scheme == "zscore":
            x -= entry["mean"]
            x /= max(entry["std"], EPS)
        elif scheme == "ct":
            np.clip(x, entry["p0.5"], entry["p99.5"], out=x)
            x -= entry["mean"]
            x /= max(entry["std"], EPS)
        elif scheme == "minmax":
            x -= entry["min"]
            x /= max(entry["max"] - entry["min"], EPS)
        else:
            x -= entry["p50"]
            x /= max(entry["p75"] - entry["p25"], EPS)
    return out
