"""Data module of volume-seg: dataset folder → volume split → normalised, augmented patches with every target,
its loss mask and the auxiliary targets derived from it.

* The dataset plan (:mod:`~medtrain.recipes.volume_seg.dataset_plan`) gives the cases, targets, split by
  volume, normalisation statistics and the planned patch size.
* Training samples are drawn from the valid-patch index of the training volumes, with nnU-Net's foreground
  oversampling (a patch centred on a stored foreground voxel with probability ``foreground_oversampling``);
  an epoch is ``samples_per_epoch`` samples (default: the number of valid patches).
* Validation uses fixed patches of the validation volumes (at most ``validation.max_patches``, evenly spread);
  testing hands the task one held-out volume per batch, by index, and the task reads and scores it chunk by chunk
  (:meth:`VolumeSegDataModule.evaluation_builder`), so a volume need not fit in memory.

A sample is ``{"name": volume, "image": float32 [C, *patch], "targets": {t: [C_t, *patch]},
"masks": {t: float32 [1, *patch]}}`` (label encodings in :mod:`~medtrain.recipes.volume_seg.targets`). Random
draws come from a generator seeded per process from torch's worker seed, so each worker and epoch differs and a
run is reproducible for a seed and worker count.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from medtrain.engine.datamodule import MedtrainDataModule, Split
from medtrain.errors import DataError
from medtrain.io.volumes import Volume, box_inside, open_volume
from medtrain.recipes.volume_seg.aux_targets import compute_aux_target
from medtrain.recipes.volume_seg.cases import VolumeCase, czyx_shape, read_box
from medtrain.recipes.volume_seg.dataset_plan import DatasetPlan, build_dataset_plan
from medtrain.recipes.volume_seg.normalization import normalize
from medtrain.recipes.volume_seg.patches import PatchIndex, build_patch_index, sample_patch_start
from medtrain.recipes.volume_seg.schema import AugmentationConfig, VolumeSegConfig
from medtrain.recipes.volume_seg.targets import TargetSpec

if TYPE_CHECKING:
    from medtrain.recipes.volume_seg.augment import VolumeAugmentation

Sample = dict[str, Any]

#: the auxiliary-task settings each derived target takes (``aux_targets.compute_aux_target``)
AUX_PARAMETERS = {
    "distance_transform": ("distance_type",),
    "surface_normals": (),
    "structure_tensor": ("compute_from", "grad_sigma", "tensor_sigma"),
    "inplane_direction": ("compute_from", "grad_sigma", "tensor_sigma"),
}

#: tensor type of each activation's labels in a batch (augmentation resamples everything as float32)
DTYPES = {"softmax": np.int64, "sigmoid": np.float32, "none": np.float32}


class VolumeReader:
    """Opens a case's image, labels and masks once per process and reads boxes as ``[C, *spatial]`` arrays of
    the plan's dimensionality (:func:`~medtrain.recipes.volume_seg.cases.read_box`)."""

    def __init__(self, cases: Sequence[VolumeCase], spatial_dims: int) -> None:
        self.cases = list(cases)
        self.spatial_dims = spatial_dims
        self._open: dict[str, Volume] = {}

    def volume(self, path: Any) -> Volume:
        key = str(path)
        if key not in self._open:
            self._open[key] = open_volume(path)
        return self._open[key]

    def spatial_shape(self, path: Any) -> tuple[int, ...]:
        """The volume's spatial shape in the plan's dimensionality: ``(z, y, x)`` or ``(y, x)``."""
        return tuple(czyx_shape(self.volume(path))[4 - self.spatial_dims :])

    def read(self, path: Any, starts: Sequence[int] | None = None, sizes: Sequence[int] | None = None) -> np.ndarray:
        """The box ``[starts, starts + sizes)`` (the whole volume when None) as ``[C, *spatial]``; the box must lie
        inside the volume."""
        if starts is None or sizes is None:
            sizes = self.spatial_shape(path)
            starts = (0,) * self.spatial_dims
        return read_box(self.volume(path), starts, sizes)


def encode_label(label: np.ndarray, spec: TargetSpec) -> np.ndarray:
    """A label file's values in the encoding of ``spec`` (see :mod:`~medtrain.recipes.volume_seg.targets`)."""
    if spec.activation == "softmax":
        return label[:1].astype(np.int64)
    if spec.activation == "sigmoid":
        if label.shape[0] == 1 and spec.out_channels > 1:
            values = np.arange(1, spec.out_channels + 1).reshape(-1, *([1] * (label.ndim - 1)))
            return (label == values).astype(np.float32)
        return (label > 0).astype(np.float32)
    return label.astype(np.float32)


class SampleBuilder:
    """Reads, normalises, augments and completes one sample (labels, masks, auxiliary targets)."""

    def __init__(
        self,
        plan: DatasetPlan,
        cases: Sequence[VolumeCase],
        *,
        on_label_only: bool,
        augment: VolumeAugmentation | None,
    ) -> None:
        self.plan = plan
        self.reader = VolumeReader(cases, plan.spatial_dims)
        self.on_label_only = on_label_only
        self.augment = augment
        self.label_targets = {name: spec for name, spec in plan.targets.items() if spec.aux is None}
        self.aux_targets = {name: spec for name, spec in plan.targets.items() if spec.aux is not None}

    def build(self, case_index: int, starts: Sequence[int] | None, sizes: Sequence[int] | None) -> Sample:
        """The sample of the box ``[starts, starts + sizes)`` of case ``case_index`` (the whole case when None).

        A box reaching outside the volume (a patch larger than a small volume) is read where it overlaps the volume
        and padded, before augmentation, with 0 in the normalised image, the labels and the loss masks, so padding
        is background that never counts in the loss.
        """
        case = self.reader.cases[case_index]
        padding: tuple[tuple[int, int], ...] = ()
        if starts is not None and sizes is not None:
            starts, sizes, padding = box_inside(starts, sizes, self.reader.spatial_shape(case.image))
        arrays: dict[str, Any] = {"image": self.image(case_index, starts, sizes)}
        for name, spec in self.label_targets.items():
            label = self.reader.read(case.labels[name], starts, sizes)
            arrays[f"label_{name}"] = encode_label(label, spec)
            if name in case.masks:
                arrays[f"mask_{name}"] = (self.reader.read(case.masks[name], starts, sizes)[:1] > 0).astype(np.float32)
            elif self.on_label_only:
                arrays[f"mask_{name}"] = (label[:1] != 0).astype(np.float32)
            else:
                arrays[f"mask_{name}"] = np.ones((1, *label.shape[1:]), np.float32)
        if any(before or after for before, after in padding):
            arrays = {key: np.pad(value, ((0, 0), *padding)) for key, value in arrays.items()}
        if self.augment is not None:
            arrays = self.augment(arrays)
        return self._complete(case.name, {key: np.asarray(value) for key, value in arrays.items()})

    def image(self, case_index: int, starts: Sequence[int] | None, sizes: Sequence[int] | None) -> np.ndarray:
        """The normalised float32 image ``[C, *sizes]`` of a box inside case ``case_index`` (whole when None)."""
        image = self.reader.read(self.reader.cases[case_index].image, starts, sizes).astype(np.float32)
        return normalize(image, self.plan.normalization_stats, self.plan.normalization)

    def _complete(self, name: str, arrays: dict[str, np.ndarray]) -> Sample:
        targets = {
            key: torch.from_numpy(np.ascontiguousarray(arrays[f"label_{key}"], DTYPES[spec.activation]))
            for key, spec in self.label_targets.items()
        }
        masks = {
            key: torch.from_numpy(np.ascontiguousarray(arrays[f"mask_{key}"], np.float32)) for key in self.label_targets
        }
        for key, spec in self.aux_targets.items():
            source = arrays[f"label_{spec.source}"]
            aux = spec.aux
            assert aux is not None
            values, valid = compute_aux_target(
                aux.type,
                source.max(axis=0, keepdims=True) > 0.5,  # any foreground channel / class
                valid=arrays[f"mask_{spec.source}"] > 0.5,
                spacing=self.plan.spacing,
                **{name: getattr(aux, name) for name in AUX_PARAMETERS[aux.type]},
            )
            targets[key] = torch.from_numpy(np.ascontiguousarray(values, np.float32))
            masks[key] = torch.from_numpy(valid.astype(np.float32))
        image = torch.from_numpy(np.ascontiguousarray(arrays["image"], np.float32))
        return {"name": name, "image": image, "targets": targets, "masks": masks}


def _process_rng() -> np.random.Generator:
    """A generator seeded from torch's seed of this process (each DataLoader worker has its own)."""
    return np.random.default_rng(torch.initial_seed() % 2**63)


class TrainingPatches(Dataset):
    """``length`` random training patches per epoch: foreground-centred with probability ``foreground_probability``,
    else a random valid patch of the index; augmented."""

    def __init__(
        self, builder: SampleBuilder, index: PatchIndex, *, length: int, foreground_probability: float
    ) -> None:
        self.builder = builder
        self.index = index
        self.length = length
        self.foreground_probability = foreground_probability
        self._rng: np.random.Generator | None = None
        self._seed = -1

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, item: int) -> Sample:
        if self._rng is None or self._seed != torch.initial_seed():  # first call in this process (worker)
            self._seed = torch.initial_seed()
            self._rng = _process_rng()
            if self.builder.augment is not None:
                self.builder.augment.reseed(self._seed)
        case_index, starts = sample_patch_start(
            self.index, self._rng, foreground_probability=self.foreground_probability
        )
        return self.builder.build(case_index, starts, tuple(self.builder.plan.patch_size))


class FixedPatches(Dataset):
    """The given patches ``(case index, starts)`` of the index, in order, not augmented."""

    def __init__(self, builder: SampleBuilder, patches: Sequence[tuple[int, tuple[int, ...]]]) -> None:
        self.builder = builder
        self.patches = list(patches)

    def __len__(self) -> int:
        return len(self.patches)

    def __getitem__(self, item: int) -> Sample:
        case_index, starts = self.patches[item]
        return self.builder.build(case_index, starts, tuple(self.builder.plan.patch_size))


class TestVolumes(Dataset):
    """One item per case of a split, ``{"index": its position in the split}``; the loader reads nothing: the task
    reads and scores each volume chunk by chunk through :meth:`VolumeSegDataModule.evaluation_builder`."""

    def __init__(self, cases: Sequence[VolumeCase]) -> None:
        self.count = len(cases)

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, item: int) -> dict[str, Any]:
        return {"index": item}


def evenly_spread(index: PatchIndex, limit: int | None) -> list[tuple[int, tuple[int, ...]]]:
    """At most ``limit`` entries of ``index`` at evenly spaced positions (all when ``limit`` is None)."""
    count = len(index)
    positions = range(count) if limit is None or limit >= count else np.linspace(0, count - 1, limit).round()
    return [(int(index.case_index[int(i)]), tuple(int(v) for v in index.starts[int(i)])) for i in positions]


def build_augmentation(config: AugmentationConfig, plan: DatasetPlan, *, seed: int) -> Any:
    """The training augmentation of ``config`` over the image and every label and mask of ``plan``'s targets."""
    from medtrain.recipes.volume_seg.augment import build_train_augmentation

    return build_train_augmentation(
        spatial_dims=plan.spatial_dims,
        label_keys=[f"label_{name}" for name in plan.label_target_names],
        mask_keys=[f"mask_{name}" for name in plan.label_target_names],
        probabilities=config.probabilities,
        rotation_degrees=config.rotation_degrees,
        scale_range=config.scale_range,
        mirror_axes=config.mirror_axes,
        elastic=config.elastic,
        noise_std=config.noise_std,
        blur_sigma=config.blur_sigma,
        brightness=config.brightness,
        contrast=config.contrast,
        gamma=config.gamma,
        low_resolution=config.low_resolution,
        seed=seed,
    )


def build_split_indices(plan: DatasetPlan, cfg: VolumeSegConfig) -> dict[str, PatchIndex]:
    """Valid-patch indices of the training and validation volumes (cached under the plan's cache folder)."""
    data = cfg.data
    indices = {}
    for split in ("train", "val"):
        cases = plan.split_cases(split)
        if cases:
            indices[split] = build_patch_index(
                cases,
                list(plan.label_target_names),
                plan.patch_size,
                stride=[max(1, round(p * (1 - data.patch_overlap))) for p in plan.patch_size],
                min_labeled_ratio=data.min_labeled_ratio,
                min_bbox_percent=data.min_bbox_percent,
                main_target=plan.oversample_target,
                seed=cfg.seed,
                cache_dir=plan.cache_dir,
            )
    return indices


class VolumeSegDataModule(MedtrainDataModule):
    """Dataset plan, valid-patch indices of the training and validation volumes, and the three datasets."""

    def __init__(self, cfg: VolumeSegConfig) -> None:
        super().__init__(cfg.data, seed=cfg.seed)
        self.cfg = cfg
        self.plan: DatasetPlan | None = None
        self.indices: dict[str, PatchIndex] = {}

    def setup(self, stage: str | None = None) -> None:
        if self.plan is not None:
            return
        self.plan = build_dataset_plan(self.cfg)
        self.indices = build_split_indices(self.plan, self.cfg)
        if "train" not in self.indices or not len(self.indices["train"]):
            raise DataError(
                f"no valid training patch in {self.plan.dataset}: lower data.min_labeled_ratio "
                f"({self.cfg.data.min_labeled_ratio}) or data.min_bbox_percent, or check the masks"
            )

    def _builder(self, split: Split, *, augment: bool) -> SampleBuilder:
        assert self.plan is not None
        transform = None
        if augment and self.cfg.data.augmentation.enabled:
            transform = build_augmentation(self.cfg.data.augmentation, self.plan, seed=self.seed)
        return SampleBuilder(
            self.plan, self.plan.split_cases(split), on_label_only=self.cfg.loss.on_label_only, augment=transform
        )

    def dataset(self, split: Split) -> Dataset:
        assert self.plan is not None
        if split == "train":
            index = self.indices["train"]
            length = self.cfg.data.samples_per_epoch or len(index)
            return TrainingPatches(
                self._builder("train", augment=True),
                index,
                length=length,
                foreground_probability=self.cfg.data.foreground_oversampling,
            )
        if split == "val":
            index = self.indices.get("val")
            patches = evenly_spread(index, self.cfg.validation.max_patches) if index is not None else []
            return FixedPatches(self._builder("val", augment=False), patches)
        return TestVolumes(self.plan.split_cases(split))

    def test_dataloader(self) -> DataLoader:
        """Whole volumes of ``eval_split`` (``medtrain evaluate --split val`` scores the validation volumes whole,
        as the test volumes, not the validation patches)."""
        assert self.plan is not None
        return self.make_loader(TestVolumes(self.plan.split_cases(self.eval_split)), shuffle=False)

    def evaluation_builder(self) -> SampleBuilder:
        """The unaugmented sample builder of the evaluated split (``eval_split``), its cases in the order of
        :class:`TestVolumes`."""
        return self._builder(self.eval_split, augment=False)

    def make_loader(self, dataset: Dataset, *, shuffle: bool, batch_size: int | None = None) -> DataLoader:
        assert self.plan is not None
        if isinstance(dataset, TestVolumes):
            batch_size = 1  # one volume per test step
        return super().make_loader(dataset, shuffle=shuffle, batch_size=batch_size or self.plan.batch_size)

    def data_summary(self) -> dict[str, Any]:
        assert self.plan is not None
        summary = self.plan.summary_dict()
        summary["valid_patches"] = {split: len(index) for split, index in self.indices.items()}
        summary["samples_per_epoch"] = len(self.dataset("train"))  # type: ignore[arg-type]
        return summary
