"""The dataset plan of volume-seg: what ``plan.json`` records and everything training needs before a batch.

``build_dataset_plan(cfg)``: discover and check the cases (every image/label/mask pair), resolve the targets,
split by volume, compute the normalisation statistics on the training volumes, choose patch and batch size
(the config's, else planned from spacing, median shape and the memory budget) and plan the U-Net topology for
that patch and spacing (nnU-Net's rules, with the real anisotropic spacing).

``data.root`` is either the dataset folder or a folder written by ``medtrain prepare volume-seg``: that one holds
``prepared.json`` (naming the dataset folder) and the caches (statistics, patch indices), which are keyed by a
fingerprint of the files and every parameter, so a prepared folder and a dataset's own
``.medtrain_cache/`` behave the same and a stale cache is never used.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medtrain.config.errors import ConfigError
from medtrain.errors import DataError
from medtrain.io.atomic import atomic_write_json
from medtrain.io.fingerprint import cache_key
from medtrain.io.splits import GroupSplit, manual_split, split_groups
from medtrain.io.volumes import open_volume
from medtrain.recipes.volume_seg.cases import (
    CaseSummary,
    DatasetIndex,
    VolumeCase,
    check_cases,
    discover_cases,
    fingerprint_cases,
)
from medtrain.recipes.volume_seg.normalization import compute_intensity_statistics
from medtrain.recipes.volume_seg.planner import Topology, plan_patch_and_batch, plan_topology
from medtrain.recipes.volume_seg.schema import VolumeSegConfig
from medtrain.recipes.volume_seg.targets import TargetSpec, resolve_targets

log = logging.getLogger("medtrain")

PREPARED_FILE = "prepared.json"
CACHE_FOLDER = ".medtrain_cache"


def locate_dataset(cfg: VolumeSegConfig) -> tuple[Path, Path]:
    """``(dataset folder, cache folder)`` for ``data.root``: a prepared folder names its dataset in
    ``prepared.json`` and is itself the cache; a dataset folder caches in ``data.cache_dir`` or
    ``<root>/.medtrain_cache``."""
    if cfg.data.root is None:
        raise DataError("data.root is not set: pass --input PATH (or --override data.root=PATH)")
    root = Path(cfg.data.root)
    marker = root / PREPARED_FILE
    if marker.is_file():
        try:
            source = Path(json.loads(marker.read_text())["dataset"])
        except (ValueError, KeyError, TypeError) as exc:
            raise DataError(f"{marker}: not a prepared-dataset file (expected a JSON object with 'dataset')") from exc
        return source, Path(cfg.data.cache_dir or root)
    if not root.is_dir():
        raise DataError(f"data.root {root}: not a folder (expected images/, labels/ and optional masks/)")
    return root, Path(cfg.data.cache_dir or root / CACHE_FOLDER)


def split_volumes(names: list[str], cfg: VolumeSegConfig) -> GroupSplit:
    """By volume, never by patch: the lists when any is given, else ``data.split_ratios`` seeded by ``seed``."""
    data = cfg.data
    if data.train_volumes or data.val_volumes or data.test_volumes:
        return manual_split(data.train_volumes, data.val_volumes, data.test_volumes, known=names)
    return split_groups(names, ratios=data.split_ratios, seed=cfg.seed)


@dataclass(frozen=True)
class DatasetPlan:
    """Cases, targets, split, normalisation and topology of one configured dataset (see the module docstring)."""

    dataset: Path
    cache_dir: Path
    cases: tuple[VolumeCase, ...]
    summary: CaseSummary
    spatial_dims: int
    in_channels: int
    spacing: tuple[float, ...]
    targets: dict[str, TargetSpec]
    split: GroupSplit
    normalization: str
    normalization_stats: list[dict[str, float]]
    patch_size: tuple[int, ...]
    batch_size: int
    topology: Topology
    planned_patch: bool
    oversample_target: str

    @property
    def label_target_names(self) -> tuple[str, ...]:
        """Targets read from label files (auxiliary ones are derived)."""
        return tuple(name for name, spec in self.targets.items() if spec.aux is None)

    def split_cases(self, split: str) -> list[VolumeCase]:
        """The cases of ``split`` (``train``/``val``/``test``) in the split's order."""
        by_name = {case.name: case for case in self.cases}
        return [by_name[name] for name in self.split.as_dict()[split]]

    def to_dict(self) -> dict[str, Any]:
        """``plan.json``: topology, patch and batch size, normalisation statistics, targets, split."""
        return {
            "dataset": str(self.dataset),
            "spatial_dims": self.spatial_dims,
            "in_channels": self.in_channels,
            "spacing": list(self.spacing),
            "median_shape": list(self.summary.median_shape),
            "patch_size": list(self.patch_size),
            "patch_size_planned": self.planned_patch,
            "batch_size": self.batch_size,
            "topology": self.topology.to_dict(),
            "normalization": {"scheme": self.normalization, "channels": self.normalization_stats},
            "targets": {name: spec.to_dict() for name, spec in self.targets.items()},
            "oversample_target": self.oversample_target,
            "split": self.split.as_dict(),
        }

    def summary_dict(self) -> dict[str, Any]:
        """``data_summary.json``: the split by volume and the dataset's shapes and spacings."""
        return {
            "split_by": "volume",
            "split": self.split.as_dict(),
            "volumes": {name: len(members) for name, members in self.split.as_dict().items()},
            "dataset": str(self.dataset),
            "cases": self.summary.as_dict(),
            "targets": list(self.targets),
            "patch_size": list(self.patch_size),
            "batch_size": self.batch_size,
        }

    def model_spec(self, cfg: VolumeSegConfig) -> dict[str, Any]:
        """What prediction needs (model.json): topology, channels, targets, normalisation, patch, spacing."""
        return {
            "spatial_dims": self.spatial_dims,
            "in_channels": self.in_channels,
            "spacing": list(self.spacing),
            "patch_size": list(self.patch_size),
            "topology": self.topology.to_dict(),
            "shared_decoder": cfg.model.shared_decoder,
            "targets": {name: spec.to_dict() for name, spec in self.targets.items()},
            "normalization": {"scheme": self.normalization, "channels": self.normalization_stats},
            "inference": cfg.inference.model_dump(mode="json"),
        }


def _image_channels(index: DatasetIndex) -> int:
    """Channels of the first image (``check_cases`` verifies that every image has as many)."""
    with open_volume(index.cases[0].image) as volume:
        return volume.channels


def label_classes(spec: TargetSpec) -> int | None:
    """How many integer label values a target's files may hold (``None``: any finite value): softmax
    ``out_channels``; sigmoid 2 (binary), or ``out_channels + 1`` for one-channel files of several classes."""
    if spec.activation == "softmax":
        return spec.out_channels
    if spec.activation == "sigmoid":
        return 2 if spec.out_channels == 1 else spec.out_channels + 1
    return None


def _cached_summary(
    index: DatasetIndex, targets: dict[str, TargetSpec], cfg: VolumeSegConfig, cache_dir: Path
) -> CaseSummary:
    """``check_cases`` of every image/label/mask (a full scan of the labels), cached by files and classes."""
    classes = {name: label_classes(spec) for name, spec in targets.items() if spec.aux is None}
    params = {"classes": classes, "in_channels": cfg.data.in_channels, "version": 1}
    key = cache_key(fingerprint_cases(index.cases), params)
    path = cache_dir / f"checked_{key}.json"
    if path.is_file():
        return CaseSummary.from_dict(json.loads(path.read_text()))
    summary = check_cases(index, target_classes=classes, in_channels=cfg.data.in_channels)
    for warning in summary.warnings:
        log.warning("%s", warning)
    atomic_write_json(path, summary.as_dict())
    return summary


def _cached_statistics(
    cases: list[VolumeCase], cfg: VolumeSegConfig, cache_dir: Path, foreground: str | None
) -> list[dict[str, float]]:
    """Normalisation statistics of the training cases, from the cache when its key (files + parameters) matches."""
    params = {"scheme": cfg.data.normalization, "foreground": foreground, "seed": cfg.seed, "version": 1}
    key = cache_key(fingerprint_cases(cases), params)
    path = cache_dir / f"intensity_{key}.json"
    if path.is_file():
        return json.loads(path.read_text())["channels"]
    stats = compute_intensity_statistics(cases, cfg.data.normalization, foreground_target=foreground, seed=cfg.seed)
    atomic_write_json(path, {"key": key, "params": params, "channels": stats})
    return stats


def _patch_and_batch(
    cfg: VolumeSegConfig,
    summary: CaseSummary,
    spacing: tuple[float, ...],
    targets: dict[str, TargetSpec],
    in_channels: int,
    n_train: int,
) -> tuple[tuple[int, ...], int, Topology, bool]:
    model = cfg.model
    kwargs = {
        "min_feature_map_size": model.min_feature_map_size,
        "base_features": model.base_features,
        "max_features": model.max_features,
    }
    if cfg.data.patch_size is None or cfg.data.batch_size == 0:
        n_outputs = sum(spec.out_channels for spec in targets.values())
        planned = plan_patch_and_batch(
            spacing,
            summary.median_shape,
            in_channels=in_channels,
            n_output_channels=n_outputs,
            n_cases=max(1, n_train),
            memory_budget_mb=cfg.data.memory_budget_mb,
            n_decoders=1 if model.shared_decoder else len(targets),
            **kwargs,
        )
    patch = tuple(cfg.data.patch_size) if cfg.data.patch_size is not None else planned.patch_size
    if len(patch) != len(spacing):
        raise ConfigError(
            f"data.patch_size {list(patch)} has {len(patch)} axes but the data is {len(spacing)}-D "
            f"(spacing {list(spacing)})"
        )
    try:
        topology = plan_topology(spacing, patch, max_numpool=model.max_pools, **kwargs)
    except ValueError as exc:
        raise ConfigError(f"data.patch_size {list(patch)}: {exc}") from exc
    batch = cfg.data.batch_size or planned.batch_size
    return topology.patch_size, batch, topology, cfg.data.patch_size is None


def choose_oversample_target(
    cfg: VolumeSegConfig, targets: dict[str, TargetSpec], summary: CaseSummary, train: set[str]
) -> str:
    """``data.oversample_target``, else the label target (segmentation first) with the fewest foreground voxels in
    the training volumes: oversampling the rarest structure is what helps a sparse target (nnU-Net samples
    every class)."""
    labels = [name for name, spec in targets.items() if spec.aux is None]
    if cfg.data.oversample_target is not None:
        if cfg.data.oversample_target not in labels:
            raise ConfigError(
                f"data.oversample_target '{cfg.data.oversample_target}' is not a label target ({', '.join(labels)})"
            )
        return cfg.data.oversample_target
    counts = {name: sum(c.foreground_voxels.get(name, 0) for c in summary.cases if c.name in train) for name in labels}
    return min(labels, key=lambda name: (not targets[name].is_segmentation, counts[name] == 0, counts[name]))


def build_dataset_plan(cfg: VolumeSegConfig) -> DatasetPlan:
    """The plan of ``cfg``'s dataset (see the module docstring); DataError/ConfigError name what is wrong."""
    dataset, cache_dir = locate_dataset(cfg)
    configured = list(cfg.data.targets) or None
    index = discover_cases(dataset, targets=configured, image_format=cfg.data.format)
    in_channels = cfg.data.in_channels or _image_channels(index)
    targets = resolve_targets(cfg, index.targets, in_channels=in_channels, spatial_dims=3)
    summary = _cached_summary(index, targets, cfg, cache_dir)
    spatial_dims = summary.spatial_dims
    spacing = tuple(cfg.data.spacing or summary.median_spacing)
    if len(spacing) != spatial_dims:
        raise ConfigError(f"data.spacing {list(spacing)} has {len(spacing)} values; the data is {spatial_dims}-D")
    targets = resolve_targets(cfg, index.targets, in_channels=in_channels, spatial_dims=spatial_dims)
    names = [case.name for case in index.cases]
    split = split_volumes(names, cfg)
    by_name = {case.name: case for case in index.cases}
    train_cases = [by_name[name] for name in split.train]
    foreground = next((name for name, spec in targets.items() if spec.is_segmentation and spec.aux is None), None)
    stats = _cached_statistics(train_cases, cfg, cache_dir, foreground)
    patch, batch, topology, planned = _patch_and_batch(cfg, summary, spacing, targets, in_channels, len(train_cases))
    smaller = [case.name for case, info in zip(index.cases, summary.cases, strict=True)
               if any(p > n for p, n in zip(patch, info.shape, strict=True))]  # fmt: skip
    if smaller:
        log.info(
            "%d volume(s) smaller than the patch %s on some axis (%s): their patches are zero-padded, and padding "
            "is left out of the loss",
            len(smaller),
            list(patch),
            ", ".join(smaller[:5]) + (", …" if len(smaller) > 5 else ""),
        )
    return DatasetPlan(
        dataset=dataset,
        cache_dir=cache_dir,
        cases=tuple(index.cases),
        summary=summary,
        spatial_dims=spatial_dims,
        in_channels=in_channels,
        spacing=spacing,
        targets=targets,
        split=split,
        normalization=cfg.data.normalization,
        normalization_stats=stats,
        patch_size=patch,
        batch_size=batch,
        topology=topology,
        planned_patch=planned,
        oversample_target=choose_oversample_target(cfg, targets, summary, set(split.train)),
    )
