"""Data module of cardiac-guidance: patient folders → patient split → cached frames + normalised 6-DOF actions.

* Splits are by patient only (:func:`split_patients`): automatic by ``data.ratios`` (seeded, at least one
  patient per split, a warning when a split would be empty) or the manual lists; a patient in two lists, or one
  that does not exist, is a :class:`DataError`.
* Every referenced image is decoded once (gray, resized to ``image_size``²) into a memory-mapped ``uint8``
  :class:`~medtrain.io.images.ImageCache` keyed by a fingerprint of the image files and the size; a later run
  on the same files opens the cache instead of decoding PNGs again.
* Actions are z-scored per DOF with statistics of the **training patients only** (:class:`ActionStats`):
  ``at1`` and ``at2`` share one set (both are guidance actions, predicted by the same head), the probe motion
  ``action_change_6dof`` has its own. The statistics travel with the model.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from medtrain.engine.datamodule import MedtrainDataModule, Split
from medtrain.errors import DataError
from medtrain.io.fingerprint import cache_key, fingerprint_files
from medtrain.io.images import ImageCache
from medtrain.io.splits import GroupSplit, manual_split, split_groups
from medtrain.recipes.cardiac_guidance.records import (
    DOF_NAMES,
    DOF_UNITS,
    Transition,
    discover_patients,
    read_dataset,
    transition_arrays,
)
from medtrain.recipes.cardiac_guidance.schema import CardiacConfig, CardiacData

log = logging.getLogger("medtrain")

CACHE_FOLDER = ".medtrain_cache"
MIN_STD = 1e-6


def split_patients(patients: list[str], data: CardiacData, seed: int) -> GroupSplit:
    """The patient split: the manual lists when ``data.uses_manual_splits``, else ``split_groups`` by ratios."""
    if data.uses_manual_splits:
        if not data.train_patients:
            raise DataError("data.manual_splits is on but data.train_patients is empty: list the training patients")
        return manual_split(data.train_patients, data.val_patients, data.test_patients, known=patients)
    return split_groups(patients, ratios=data.ratios, seed=seed)


@dataclass(frozen=True)
class ActionStats:
    """Per-DOF mean and std of the guidance targets (at1 ∪ at2) and of the probe motion (action_change_6dof),
    from the training patients; ``normalised = (value − mean) / std`` (a std below 1e-6 counts as 1)."""

    target_mean: tuple[float, ...]
    target_std: tuple[float, ...]
    action_mean: tuple[float, ...]
    action_std: tuple[float, ...]

    @classmethod
    def fit(cls, arrays: dict[str, np.ndarray]) -> ActionStats:
        """Statistics of ``transition_arrays`` of the training transitions."""
        targets = np.concatenate([arrays["at1"], arrays["at2"]]).astype(np.float64)
        actions = arrays["action"].astype(np.float64)

        def std(values: np.ndarray) -> tuple[float, ...]:
            deviation = values.std(axis=0)
            return tuple(float(s) if s > MIN_STD else 1.0 for s in deviation)

        return cls(
            tuple(float(m) for m in targets.mean(axis=0)),
            std(targets),
            tuple(float(m) for m in actions.mean(axis=0)),
            std(actions),
        )

    def normalise_targets(self, values: np.ndarray) -> np.ndarray:
        return ((values - np.asarray(self.target_mean)) / np.asarray(self.target_std)).astype(np.float32)

    def normalise_actions(self, values: np.ndarray) -> np.ndarray:
        return ((values - np.asarray(self.action_mean)) / np.asarray(self.action_std)).astype(np.float32)

    def to_dict(self) -> dict[str, Any]:
        return {
            "dof_names": list(DOF_NAMES),
            "dof_units": list(DOF_UNITS),
            "target_mean": list(self.target_mean),
            "target_std": list(self.target_std),
            "action_mean": list(self.action_mean),
            "action_std": list(self.action_std),
        }

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ActionStats:
        keys = ("target_mean", "target_std", "action_mean", "action_std")
        return cls(*(tuple(float(v) for v in values[key]) for key in keys))


def open_frame_cache(root: Path, records: dict[str, list[Transition]], data: CardiacData) -> ImageCache:
    """The frame cache of every image ``records`` reference (built when missing or stale).

    The key covers the image files (size, mtime, content of head and tail, path relative to ``root``) and the
    frame size, so changing, adding or removing an image, or changing ``image_size``, rebuilds it.
    """
    images = sorted({path for transitions in records.values() for t in transitions for path in (t.ft1, t.ft2)})
    size = (data.image_size, data.image_size)
    key = cache_key(fingerprint_files(images, root=root.resolve()), {"size": list(size), "format": "uint8-gray"})
    folder = Path(data.cache_dir) if data.cache_dir is not None else root / CACHE_FOLDER
    cache_file = folder / f"frames_{size[0]}x{size[1]}.npy"
    cache = ImageCache.open(cache_file, key=key)
    if cache is None:
        log.info("decoding %d frames into the cache %s", len(images), cache_file)
        cache = ImageCache.build(images, cache_file, size=size, key=key)
    else:
        log.info("frame cache hit: %s (%d frames)", cache_file, len(cache))
    return cache


class TransitionDataset(Dataset):
    """Samples ``(ft1, ft2, action, at1, at2, patient)``: frames ``uint8 [1, H, W]`` read from the memory-mapped
    cache (the task scales them to [0, 1] on its device), normalised ``float32 [6]`` vectors, patient index."""

    def __init__(
        self, cache: ImageCache, frames: np.ndarray, vectors: dict[str, np.ndarray], patients: np.ndarray
    ) -> None:
        self.cache = cache
        self.frames = frames  # [N, 2] cache indices of ft1 and ft2
        self.action = torch.from_numpy(vectors["action"])
        self.at1 = torch.from_numpy(vectors["at1"])
        self.at2 = torch.from_numpy(vectors["at2"])
        self.patients = torch.from_numpy(patients)

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, ...]:
        first, second = self.frames[index]
        ft1 = torch.from_numpy(np.array(self.cache[first]))[None]
        ft2 = torch.from_numpy(np.array(self.cache[second]))[None]
        return ft1, ft2, self.action[index], self.at1[index], self.at2[index], self.patients[index]


@dataclass
class SplitArrays:
    """The transitions of one split as arrays (raw physical-unit vectors, cache indices, patient indices)."""

    patients: list[str]
    frames: np.ndarray
    raw: dict[str, np.ndarray]
    patient_index: np.ndarray

    def __len__(self) -> int:
        return len(self.frames)


class CardiacDataModule(MedtrainDataModule):
    """Patient split, frame cache and normalised actions; ``dataset(split)`` serves :class:`TransitionDataset`."""

    def __init__(self, cfg: CardiacConfig) -> None:
        super().__init__(cfg.data, seed=cfg.seed)
        self.cfg = cfg
        self.split: GroupSplit | None = None
        self.stats: ActionStats | None = None
        self.cache: ImageCache | None = None
        self.arrays: dict[str, SplitArrays] = {}
        self.patient_names: list[str] = []

    def setup(self, stage: str | None = None) -> None:
        if self.arrays:
            return
        data = self.cfg.data
        if data.root is None:
            raise DataError("data.root is not set: pass --data_dir PATH (or --override data.root=PATH)")
        root = Path(data.root)
        patients = discover_patients(root)
        self.split = split_patients(patients, data, self.seed)
        records = read_dataset(root, [p for part in self.split.as_dict().values() for p in part])
        self.cache = open_frame_cache(root, records, data)
        self.patient_names = sorted(records)
        position = {patient: index for index, patient in enumerate(self.patient_names)}
        for name, members in self.split.as_dict().items():
            transitions = [t for patient in members for t in records[patient]]
            self.arrays[name] = SplitArrays(
                patients=list(members),
                frames=np.array(
                    [[self.cache.index_of(t.ft1), self.cache.index_of(t.ft2)] for t in transitions], np.int64
                ).reshape(-1, 2),
                raw=transition_arrays(transitions),
                patient_index=np.array([position[t.patient] for t in transitions], np.int64),
            )
        if not len(self.arrays["train"]):
            raise DataError(f"the training split of {root} has no transitions: check the patient lists and ratios")
        self.stats = ActionStats.fit(self.arrays["train"].raw)

    def normalised(self, split: Split) -> dict[str, np.ndarray]:
        """``at1``, ``at2`` (target statistics) and ``action`` (motion statistics) of ``split``, normalised."""
        assert self.stats is not None
        raw = self.arrays[split].raw
        return {
            "at1": self.stats.normalise_targets(raw["at1"]),
            "at2": self.stats.normalise_targets(raw["at2"]),
            "action": self.stats.normalise_actions(raw["action"]),
        }

    def dataset(self, split: Split) -> Dataset:
        assert self.cache is not None
        arrays = self.arrays[split]
        return TransitionDataset(self.cache, arrays.frames, self.normalised(split), arrays.patient_index)

    def data_summary(self) -> dict[str, Any]:
        assert self.split is not None and self.stats is not None
        per_patient = {
            patient: int((arrays.patient_index == self.patient_names.index(patient)).sum())
            for arrays in self.arrays.values()
            for patient in arrays.patients
        }
        return {
            "split_by": "patient",
            "split_mode": "manual" if self.cfg.data.uses_manual_splits else "auto",
            "split": self.split.as_dict(),
            "samples": {name: len(arrays) for name, arrays in self.arrays.items()},
            "samples_per_patient": per_patient,
            "image_size": self.cfg.data.image_size,
            "frames_cached": len(self.cache) if self.cache is not None else 0,
            "action_statistics": self.stats.to_dict(),
            "train_action_ranges": {
                key: {"min": values.min(axis=0).tolist(), "max": values.max(axis=0).tolist()}
                for key, values in self.arrays["train"].raw.items()
            },
        }
