"""Data module of abr-diffusion: the ABR table → patient-level split → normalised tensors per split.

* The table (``data.root``) is read and validated by :func:`~medtrain.recipes.abr_diffusion.table.read_abr_table`
  with ``data.signal_length``; every problem is a :class:`~medtrain.errors.DataError` (exit 2).
* Rows are split by patient, stratified by each patient's majority class
  (:func:`~medtrain.recipes.abr_diffusion.table.split_patients`): no patient is on two sides.
* Everything learned from data comes from the **training split only** and travels with the model
  (``model_spec``): :class:`~medtrain.recipes.abr_diffusion.table.NormalizationStats` of the static parameters
  and signals, :class:`TargetStats` of wave-V latency / amplitude (present peaks) and thresholds, the class
  weights, the mean waveform and the pool of conditions that generation samples from.
* Optional class-balanced sampling of training rows (:class:`ClassBalancedSampler`), seeded by the epoch like
  the engine's ``EpochSeededSampler``, so a resumed run draws the same rows as an uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from medtrain.engine.datamodule import MedtrainDataModule, Split
from medtrain.errors import DataError
from medtrain.io.splits import GroupSplit
from medtrain.recipes.abr_diffusion.schema import ABRConfig
from medtrain.recipes.abr_diffusion.table import (
    CLASS_NAMES,
    STATIC_NAMES,
    ABRTable,
    NormalizationStats,
    read_abr_table,
    split_patients,
    split_rows,
)

CONDITION_POOL_SIZE = 512
"""Training conditions (static parameter rows) kept in the model for :meth:`ABRPredictor.generate`."""


@dataclass(frozen=True)
class TargetStats:
    """Mean and standard deviation of the clinical targets over the training rows: wave-V ``(latency ms,
    amplitude µV)`` over the rows where wave V is present, and the threshold (dB) over all rows. The heads
    predict ``(y − mean) / std``; a standard deviation below 1e-8 is stored as 1. The means are also the
    trivial baselines of the test metrics."""

    peak_mean: tuple[float, float]
    peak_std: tuple[float, float]
    threshold_mean: float
    threshold_std: float

    @classmethod
    def fit(cls, table: ABRTable) -> TargetStats:
        """Statistics of all rows of ``table`` (pass the training subset). Raises :class:`DataError` when no
        training row has a wave V (the latency head would have nothing to learn from)."""
        peaks = table.peak_v[table.peak_present].astype(np.float64)
        if len(peaks) == 0:
            raise DataError("no training row has an annotated wave V (peak_v is NaN everywhere)")
        thresholds = table.thresholds_db.astype(np.float64)
        lat_std, amp_std = (_safe_std(float(v)) for v in peaks.std(axis=0))
        return cls(
            peak_mean=(float(peaks[:, 0].mean()), float(peaks[:, 1].mean())),
            peak_std=(lat_std, amp_std),
            threshold_mean=float(thresholds.mean()),
            threshold_std=_safe_std(float(thresholds.std())),
        )

    def normalize_peaks(self, peaks: np.ndarray) -> np.ndarray:
        """``(peak − peak_mean) / peak_std`` per column of ``[..., 2]`` (NaN stays NaN), float32."""
        return ((peaks - np.asarray(self.peak_mean)) / np.asarray(self.peak_std)).astype(np.float32)

    def normalize_thresholds(self, thresholds: np.ndarray) -> np.ndarray:
        """``(threshold − threshold_mean) / threshold_std``, float32."""
        return ((thresholds - self.threshold_mean) / self.threshold_std).astype(np.float32)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready; :meth:`from_dict` reads it back."""
        return {
            "peak_names": ["latency_ms", "amplitude_uv"],
            "peak_mean": list(self.peak_mean),
            "peak_std": list(self.peak_std),
            "threshold_mean": self.threshold_mean,
            "threshold_std": self.threshold_std,
        }

    @classmethod
    def from_dict(cls, payload: Mapping[str, Any]) -> TargetStats:
        """The statistics written by :meth:`to_dict`."""
        lat_mean, amp_mean = (float(v) for v in payload["peak_mean"])
        lat_std, amp_std = (float(v) for v in payload["peak_std"])
        return cls(
            (lat_mean, amp_mean), (lat_std, amp_std), float(payload["threshold_mean"]), float(payload["threshold_std"])
        )


def _safe_std(value: float) -> float:
    return value if value >= 1e-8 else 1.0


def balanced_class_weights(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """``w_k = N / (K_present · n_k)`` for every class with ``n_k > 0`` training rows (sklearn's "balanced"
    weights), 1 for classes absent from ``labels`` (they are never a target, so their weight does not matter).
    ``[num_classes]`` float32."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=num_classes).astype(np.float64)
    present = counts > 0
    weights = np.ones(num_classes)
    weights[present] = counts.sum() / (present.sum() * counts[present])
    return weights.astype(np.float32)


class ClassBalancedSampler(Sampler[int]):
    """``len(labels)`` row indices drawn with replacement, row i with probability ∝ ``1 / n_{labels[i]}`` (each
    class equally likely), from a generator seeded with ``seed * 1_000_003 + epoch_of()`` when iteration starts
    — the seeding of the engine's ``EpochSeededSampler``, so the rows of epoch e depend on (seed, e) alone and a
    resumed run sees the same batches as an uninterrupted one."""

    def __init__(self, labels: np.ndarray, *, seed: int, epoch_of: Callable[[], int]) -> None:
        labels = np.asarray(labels, dtype=np.int64)
        counts = np.bincount(labels)
        self.weights = torch.from_numpy(1.0 / counts[labels]) if len(labels) else torch.zeros(0, dtype=torch.float64)
        self.seed = seed
        self.epoch_of = epoch_of

    def __iter__(self) -> Iterator[int]:
        if not len(self.weights):
            return iter([])
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch_of())
        return iter(torch.multinomial(self.weights, len(self.weights), replacement=True, generator=generator).tolist())

    def __len__(self) -> int:
        return len(self.weights)


class ABRDataset(Dataset):
    """Rows of one split as dicts of tensors: ``signal [1, L]`` and ``static [4]`` normalised with the training
    :class:`NormalizationStats`; ``peak [2]`` (latency, amplitude) normalised with :class:`TargetStats`, NaN where
    wave V is absent; ``present`` bool; ``label`` int64; ``threshold`` normalised; ``index`` the row's position in
    the split (seeded per-row noise in evaluation is drawn by it)."""

    def __init__(self, table: ABRTable, stats: NormalizationStats, targets: TargetStats) -> None:
        self.tensors = {
            "signal": torch.from_numpy(stats.normalize_signal(table.signals).astype(np.float32))[:, None, :],
            "static": torch.from_numpy(stats.normalize_static(table.static)),
            "peak": torch.from_numpy(targets.normalize_peaks(table.peak_v)),
            "present": torch.from_numpy(table.peak_present),
            "label": torch.from_numpy(table.labels),
            "threshold": torch.from_numpy(targets.normalize_thresholds(table.thresholds_db)),
            "index": torch.arange(len(table)),
        }

    def __len__(self) -> int:
        return len(self.tensors["index"])

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {name: values[index] for name, values in self.tensors.items()}


class ABRDataModule(MedtrainDataModule):
    """Reads the table once, splits it by patient and serves :class:`ABRDataset` per split; ``tables[split]``
    holds the raw (µV, ms, dB) rows of each split for metrics and plots."""

    def __init__(self, cfg: ABRConfig) -> None:
        super().__init__(cfg.data, seed=cfg.seed)
        self.cfg = cfg
        self.split: GroupSplit | None = None
        self.stats: NormalizationStats | None = None
        self.targets: TargetStats | None = None
        self.tables: dict[str, ABRTable] = {}
        self.datasets: dict[str, ABRDataset] = {}

    def setup(self, stage: str | None = None) -> None:
        if self.tables:
            return
        data = self.cfg.data
        if data.root is None:
            raise DataError("data.root is not set: pass --override data.root=TABLE (.npz, .csv or .parquet)")
        table = read_abr_table(Path(data.root), signal_length=data.signal_length)
        self.split = split_patients(table, data.ratios, seed=self.seed)
        self.tables = {name: table.subset(rows) for name, rows in split_rows(table, self.split).items()}
        train = self.tables["train"]
        if not len(train):
            raise DataError(f"the training split of {data.root} is empty: check data.ratios")
        self.stats = NormalizationStats.fit(train)
        self.targets = TargetStats.fit(train)
        self.datasets = {name: ABRDataset(part, self.stats, self.targets) for name, part in self.tables.items()}

    def dataset(self, split: Split) -> Dataset:
        return self.datasets[split]

    def train_dataloader(self) -> DataLoader:
        """The engine's training loader, or with ``data.class_balanced_sampling`` the same loader settings with a
        :class:`ClassBalancedSampler` in place of the shuffling sampler."""
        loader = self.make_loader(self.dataset("train"), shuffle=True)
        if not self.cfg.data.class_balanced_sampling:
            return loader
        sampler = ClassBalancedSampler(
            self.tables["train"].labels,
            seed=self.seed,
            epoch_of=lambda: self.trainer.current_epoch if self.trainer is not None else 0,
        )
        return DataLoader(
            loader.dataset,
            batch_size=loader.batch_size,
            sampler=sampler,
            generator=loader.generator,
            num_workers=loader.num_workers,
            pin_memory=loader.pin_memory,
            persistent_workers=loader.persistent_workers,
        )

    def class_weights(self) -> np.ndarray:
        """:func:`balanced_class_weights` of the training rows."""
        return balanced_class_weights(self.tables["train"].labels, len(CLASS_NAMES))

    def mean_waveform(self) -> np.ndarray:
        """``[L]`` mean training signal (µV): the trivial baseline of the signal metrics."""
        return self.tables["train"].signals.astype(np.float64).mean(axis=0)

    def condition_pool(self, size: int = CONDITION_POOL_SIZE) -> np.ndarray:
        """Up to ``size`` training rows' static parameters ``[n, 4]`` (raw units), a seeded subsample without
        replacement, in table order: the distribution :meth:`ABRPredictor.generate` samples conditions from."""
        static = self.tables["train"].static
        if len(static) > size:
            keep = np.sort(np.random.default_rng(self.seed).choice(len(static), size, replace=False))
            static = static[keep]
        return static.astype(np.float64)

    def data_summary(self) -> dict[str, Any]:
        assert self.split is not None and self.stats is not None and self.targets is not None
        splits = {}
        for name, part in self.tables.items():
            counts = np.bincount(part.labels, minlength=len(CLASS_NAMES))
            splits[name] = {
                "patients": len(np.unique(part.patient_ids)),
                "rows": len(part),
                "class_counts": {cls: int(n) for cls, n in zip(CLASS_NAMES, counts, strict=True)},
                "wave_v_present": int(part.peak_present.sum()),
            }
        return {
            "split_by": "patient (stratified by majority class)",
            "split": self.split.as_dict(),
            "splits": splits,
            "signal_length": self.cfg.data.signal_length,
            "sampling_rate_hz": self.tables["train"].sampling_rate_hz,
            "static_names": list(STATIC_NAMES),
            "class_names": list(CLASS_NAMES),
            "class_balanced_sampling": self.cfg.data.class_balanced_sampling,
            "train_normalization": self.stats.to_dict(),
            "train_targets": self.targets.to_dict(),
            "train_class_weights": self.class_weights().tolist(),
        }
