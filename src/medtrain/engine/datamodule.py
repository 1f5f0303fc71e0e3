"""Base LightningDataModule of every recipe: one loader factory, split selection for evaluation, a summary.

Recipes implement :meth:`MedtrainDataModule.dataset` (the dataset of a split) and
:meth:`MedtrainDataModule.data_summary` (what goes into ``data_summary.json``); loaders, worker seeding and
thread budgeting are the same everywhere.

Shuffling uses :class:`EpochSeededSampler`: the order of epoch ``e`` is a function of ``(seed, e)`` alone, not
of how many random numbers the model or Lightning drew before, so a resumed run sees the same batches as an
uninterrupted one.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable, Iterator
from typing import Any, Literal

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from medtrain.config.schema import DataConfig

Split = Literal["train", "val", "test"]


class EpochSeededSampler(Sampler[int]):
    """Random permutation of ``range(length)`` drawn when iteration starts, from a generator seeded with
    ``seed * 1_000_003 + epoch_of()`` (``epoch_of`` returns the trainer's ``current_epoch``).

    Seeding at iteration time, from the epoch alone, keeps the order independent of when Lightning creates the
    iterator and of what else drew random numbers (Lightning's ``set_epoch`` argument counts *processed*
    epochs and lags by one after resuming from an end-of-epoch checkpoint, so it is deliberately not used).
    """

    def __init__(self, length: int, *, seed: int, shuffle: bool, epoch_of: Callable[[], int]) -> None:
        self.length = length
        self.seed = seed
        self.shuffle = shuffle
        self.epoch_of = epoch_of

    def __iter__(self) -> Iterator[int]:
        if not self.shuffle:
            return iter(range(self.length))
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch_of())
        return iter(torch.randperm(self.length, generator=generator).tolist())

    def __len__(self) -> int:
        return self.length


class MedtrainDataModule(L.LightningDataModule):
    """Loaders for ``train``/``val``/``test`` built from :meth:`dataset`.

    ``eval_split`` chooses which split ``test_dataloader`` serves, so ``medtrain evaluate --split val`` runs
    the same test step on the validation split.
    """

    def __init__(self, data_cfg: DataConfig, *, seed: int) -> None:
        super().__init__()
        self.data_cfg = data_cfg
        self.seed = seed
        self.eval_split: Split = "test"

    @abstractmethod
    def dataset(self, split: Split) -> Dataset:
        """The dataset of ``split`` (available after ``setup``)."""

    @abstractmethod
    def data_summary(self) -> dict[str, Any]:
        """Dataset statistics and the split (which groups went where), JSON-serialisable."""

    def make_loader(self, dataset: Dataset, *, shuffle: bool, batch_size: int | None = None) -> DataLoader:
        """A DataLoader with medtrain's defaults: an :class:`EpochSeededSampler`, a private generator for
        the workers' base seed (the global RNG stays the model's), persistent workers when there are workers,
        pinned memory only when CUDA is present, ``drop_last`` never (metrics see every sample)."""
        cfg = self.data_cfg
        workers = cfg.num_workers
        sampler = EpochSeededSampler(
            len(dataset),  # type: ignore[arg-type]
            seed=self.seed,
            shuffle=shuffle,
            epoch_of=lambda: self.trainer.current_epoch if self.trainer is not None else 0,
        )
        return DataLoader(
            dataset,
            batch_size=batch_size or cfg.batch_size,
            sampler=sampler,
            generator=torch.Generator().manual_seed(self.seed),
            num_workers=workers,
            pin_memory=cfg.pin_memory and torch.cuda.is_available(),
            persistent_workers=cfg.persistent_workers and workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self.make_loader(self.dataset("train"), shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self.make_loader(self.dataset("val"), shuffle=False, batch_size=self.data_cfg.eval_batch_size)

    def test_dataloader(self) -> DataLoader:
        return self.make_loader(self.dataset(self.eval_split), shuffle=False, batch_size=self.data_cfg.eval_batch_size)
