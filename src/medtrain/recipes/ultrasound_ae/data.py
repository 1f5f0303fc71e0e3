"""Data module of ultrasound-ae: prepared experiments → group split → normalised token or sequence datasets.

Splits are by session (or experiment), never by token or sequence, so overlapping windows cannot cross a split.
Normalisation statistics come from the training split only and travel with the model (``model_spec``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from medtrain.engine.datamodule import MedtrainDataModule, Split
from medtrain.errors import DataError
from medtrain.io.hdf5 import h5_attrs, read_h5
from medtrain.io.splits import GroupSplit, holdout_split, split_groups
from medtrain.recipes.ultrasound_ae.prepare import METADATA, PreparedExperiment, processing_params, read_metadata
from medtrain.recipes.ultrasound_ae.schema import UltrasoundConfig, UltrasoundData
from medtrain.recipes.ultrasound_ae.signal import ChannelStats, channel_stats, normalize
from medtrain.recipes.ultrasound_ae.tokens import CLASS_NAMES, sequence_starts


def read_prepared(root: Path, data: UltrasoundData) -> list[PreparedExperiment]:
    """The prepared experiments under ``root``; DataError when missing or prepared with other parameters."""
    metadata = root / METADATA
    if not metadata.is_file():
        raise DataError(
            f"{metadata} not found: data.root must be a prepared folder "
            f"(run: medtrain prepare ultrasound-ae --input RAW_FOLDER --output {root})"
        )
    rows = read_metadata(metadata)
    if not rows:
        raise DataError(f"{metadata} lists no experiments")
    expected = processing_params(data.signal, data.tokens)
    for row in rows:
        path = root / row.file
        if not path.is_file():
            raise DataError(f"{path} is listed in {metadata} but missing: run medtrain prepare again")
        if h5_attrs(path).get("params") != expected:
            raise DataError(
                f"{path} was prepared with other signal/token parameters than this config: "
                f"run medtrain prepare ultrasound-ae again with the same config"
            )
    return rows


def group_of(row: PreparedExperiment, split_by: str) -> str:
    """The split unit of an experiment: its session, or ``session/experiment``."""
    return row.session if split_by == "session" else f"{row.session}/{row.experiment}"


def split_experiments(rows: list[PreparedExperiment], data: UltrasoundData, seed: int) -> GroupSplit:
    """Split the groups: named ``test_groups`` held out (validation by ratio from the rest), else by ``ratios``."""
    groups = sorted({group_of(row, data.split_by) for row in rows})
    if data.test_groups:
        train, val, _ = data.ratios
        return holdout_split(groups, test_groups=data.test_groups, val_ratio=val / (train + val), seed=seed)
    return split_groups(groups, ratios=data.ratios, seed=seed)


def augment_tokens(
    x: torch.Tensor, *, zero: torch.Tensor, gain: float, shift: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Random gain and depth shift of normalised tokens ``[B, C, D, P]`` (training batches only); a new tensor.

    * gain: ``x' = zero + s · (x − zero)`` with ``s ~ U(1 − gain, 1 + gain)`` per token and channel, ``zero`` ``[C]``
      being what a raw 0 normalises to — the raw signal multiplied by ``s``, as a different coupling or receiver
      gain would;
    * shift: ``x'[..., d, :] = x[..., clamp(d − k, 0, D − 1), :]`` with ``k`` uniform in ``[−shift, shift]`` per
      token — the scene a few samples deeper or shallower, the edge sample repeated.
    """
    batch, channels, depth, _ = x.shape
    if shift > 0:
        k = torch.randint(-shift, shift + 1, (batch, 1), generator=generator, device=x.device)
        index = (torch.arange(depth, device=x.device) - k).clamp(0, depth - 1)  # [B, D]
        x = torch.gather(x, 2, index[:, None, :, None].expand_as(x))
    if gain > 0:
        s = 1 + gain * (2 * torch.rand((batch, channels, 1, 1), generator=generator, device=x.device) - 1)
        centre = zero.view(1, channels, 1, 1).to(x)
        x = centre + s.to(x) * (x - centre)
    return x


class TokenDataset(Dataset):
    """Tokens ``[C, depth, P]`` with their class label (token mode)."""

    def __init__(self, tokens: np.ndarray, labels: np.ndarray) -> None:
        self.tokens = torch.from_numpy(tokens)
        self.labels = torch.from_numpy(labels)

    def __len__(self) -> int:
        return len(self.tokens)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.tokens[index], self.labels[index]


class SequenceDataset(Dataset):
    """Sequences ``[T, C, depth, P]`` of consecutive tokens of one experiment, with their labels ``[T]``."""

    def __init__(self, parts: list[tuple[np.ndarray, np.ndarray]], tokens_per_sequence: int) -> None:
        self.parts = [(torch.from_numpy(tokens), torch.from_numpy(labels)) for tokens, labels in parts]
        self.length = tokens_per_sequence
        self.index = [
            (part, int(start))
            for part, (tokens, _) in enumerate(parts)
            for start in sequence_starts(len(tokens), tokens_per_sequence=tokens_per_sequence)
        ]

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        part, start = self.index[index]
        tokens, labels = self.parts[part]
        return tokens[start : start + self.length], labels[start : start + self.length]


class UltrasoundDataModule(MedtrainDataModule):
    """Loads prepared tokens per split, normalised with training-split statistics."""

    def __init__(self, cfg: UltrasoundConfig) -> None:
        super().__init__(cfg.data, seed=cfg.seed)
        self.cfg = cfg
        self.split: GroupSplit | None = None
        self.stats: ChannelStats | None = None
        self.parts: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
        self.experiments: dict[str, list[str]] = {}

    def setup(self, stage: str | None = None) -> None:
        if self.parts:
            return
        data = self.cfg.data
        root = Path(data.root)
        rows = read_prepared(root, data)
        self.split = split_experiments(rows, data, self.seed)
        raw: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {"train": [], "val": [], "test": []}
        for row in rows:
            split = self.split.split_of(group_of(row, data.split_by))
            arrays = read_h5(root / row.file, ["tokens", "labels"])
            raw[split].append((arrays["tokens"].astype(np.float32), arrays["labels"].astype(np.int64)))
            self.experiments.setdefault(split, []).append(f"{row.session}/{row.experiment}")
        if not raw["train"]:
            raise DataError(f"the training split of {root} is empty: check data.test_groups and data.ratios")
        self.stats = channel_stats(tokens.transpose(1, 0, 2, 3) for tokens, _ in raw["train"])
        self.parts = {
            split: [(self.normalized(tokens), labels) for tokens, labels in parts] for split, parts in raw.items()
        }

    def normalized(self, tokens: np.ndarray) -> np.ndarray:
        """Tokens ``[N, C, depth, P]`` normalised per channel with the training statistics."""
        assert self.stats is not None
        channel_first = tokens.transpose(1, 0, 2, 3)
        out = normalize(channel_first, self.stats, mode=self.cfg.data.normalization)
        return np.ascontiguousarray(out.transpose(1, 0, 2, 3), dtype=np.float32)

    def normalized_zero(self) -> np.ndarray:
        """``[C]``: what a raw value of 0 becomes after normalisation (the centre of :func:`augment_tokens`' gain)."""
        assert self.stats is not None
        zeros = np.zeros((self.stats.channels, 1), np.float32)
        return normalize(zeros, self.stats, mode=self.cfg.data.normalization)[:, 0]

    def tokens_and_labels(self, split: Split) -> tuple[np.ndarray, np.ndarray]:
        """All normalised tokens ``[N, C, D, P]`` and labels ``[N]`` of ``split``, experiments concatenated."""
        parts = self.parts[split]
        if not parts:
            return np.zeros((0, *self.token_shape), np.float32), np.zeros(0, np.int64)
        return np.concatenate([t for t, _ in parts]), np.concatenate([y for _, y in parts])

    def dataset(self, split: Split) -> Dataset:
        if self.cfg.data.mode == "sequence":
            return SequenceDataset(self.parts[split], self.cfg.data.tokens.tokens_per_sequence)
        return TokenDataset(*self.tokens_and_labels(split))

    @property
    def token_shape(self) -> tuple[int, int, int]:
        """``(C, depth, pulses_per_token)`` of every token."""
        tokens = self.parts["train"][0][0]
        return (int(tokens.shape[1]), int(tokens.shape[2]), int(tokens.shape[3]))

    def data_summary(self) -> dict[str, Any]:
        assert self.split is not None and self.stats is not None
        counts = {
            split: {
                "experiments": self.experiments.get(split, []),
                "tokens": int(sum(len(labels) for _, labels in parts)),
                "class_counts": {
                    name: int(sum((labels == index).sum() for _, labels in parts))
                    for index, name in enumerate(CLASS_NAMES)
                },
            }
            for split, parts in self.parts.items()
        }
        return {
            "split_by": self.cfg.data.split_by,
            "split": self.split.as_dict(),
            "splits": counts,
            "token_shape": list(self.token_shape),
            "normalization": self.cfg.data.normalization,
            "train_channel_stats": self.stats.to_dict(),
        }
