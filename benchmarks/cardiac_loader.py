"""cardiac-guidance speed: the cached frame loader against decoding PNGs per item, and the engine's training
step against a plain PyTorch loop — each pair alternated in one process, printed as ratios.

**Loader** (samples/s over one pass of the training split, batch ``--batch-size``, no workers):

- *cached*: the recipe's ``TransitionDataset`` — both frames of a transition read from the memory-mapped
  ``uint8`` cache (built once before timing, as on every run after the first);
- *decode*: the same transitions, each item decoding its two PNGs with ``read_grayscale`` (gray + bilinear
  resize), as a loader without a cache does on every epoch.

**Training** (samples/s over ``--epochs`` epochs of the training split, same model, data, loader and AdamW):

- *engine*: ``medtrain.engine.run.fit``'s trainer (``build_trainer`` with its default callbacks, checkpoints,
  CSV + TensorBoard loggers) fitting the recipe's ``CardiacGuidanceTask``, validation off; timed over
  ``trainer.fit``;
- *plain*: a hand-written loop over the same DataLoader: frames to [0, 1], augmentation, the dreamer's forward,
  ``DreamerLoss``, backward, AdamW step.

Usage: ``python benchmarks/cardiac_loader.py [--rounds 3] [--patients 4] [--transitions 64] [--image-size 128]
[--threads 2]``. Synthetic phantom data are generated into a temporary folder. No threshold; exits 0.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from _ab_timing import engine_fit_rate, print_ratio_table
from medtrain.config import load_config
from medtrain.engine.optim import build_optimizer
from medtrain.engine.trainer import quiet_lightning
from medtrain.io.images import read_grayscale
from medtrain.recipes.cardiac_guidance.data import CardiacDataModule
from medtrain.recipes.cardiac_guidance.records import read_dataset
from medtrain.recipes.cardiac_guidance.schema import CardiacConfig
from medtrain.recipes.cardiac_guidance.synthetic import generate_phantom_dataset
from medtrain.recipes.cardiac_guidance.task import CardiacGuidanceTask, to_unit

SEED = 0


class DecodingDataset(Dataset):
    """The training transitions, decoding both PNGs of an item on every access."""

    def __init__(self, pairs: list[tuple[Path, Path]], vectors: dict[str, np.ndarray], size: int) -> None:
        self.pairs, self.vectors, self.size = pairs, vectors, (size, size)

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, ...]:
        first, second = self.pairs[index]
        ft1 = torch.from_numpy(read_grayscale(first, size=self.size).copy())[None]
        ft2 = torch.from_numpy(read_grayscale(second, size=self.size).copy())[None]
        vectors = (torch.from_numpy(self.vectors[key][index]) for key in ("action", "at1", "at2"))
        return ft1, ft2, *vectors, torch.tensor(0)


def make_config(args: argparse.Namespace, root: Path, output: Path) -> CardiacConfig:
    return load_config(
        CardiacConfig,
        defaults=Path(__file__).parents[1] / "src/medtrain/recipes/cardiac_guidance/demo.yaml",
        overrides=[
            f"data.root={root}",
            f"output_dir={output}",
            f"data.image_size={args.image_size}",
            f"data.batch_size={args.batch_size}",
            f"trainer.max_epochs={args.epochs}",
            f"trainer.num_threads={args.threads}",
            "trainer.progress=quiet",
            "trainer.limit_val_batches=0",
            "checkpoint.monitor=train_loss_epoch",  # no validation here: keep best-k on the training loss
            "scheduler.name=none",
            "data.ratios=[1.0,0.0,0.0]",
        ],
    )


def loader_rate(dataset: Dataset, batch_size: int) -> float:
    """Samples/s of one pass over ``dataset`` in batches (no workers)."""
    started = time.perf_counter()
    count = sum(len(batch[0]) for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False))
    return count / (time.perf_counter() - started)


def train_plain(cfg: CardiacConfig, datamodule: CardiacDataModule) -> float:
    """Samples/s of the hand-written loop."""
    torch.manual_seed(SEED)
    task = CardiacGuidanceTask(cfg, datamodule)
    dreamer, criterion, augment = task.dreamer, task.criterion, task.augment
    optimizer = build_optimizer(dreamer.parameters(), cfg.optim)
    loader = datamodule.make_loader(datamodule.dataset("train"), shuffle=True)
    dreamer.train()
    samples = 0
    started = time.perf_counter()
    for _ in range(cfg.trainer.max_epochs):
        for ft1, ft2, action, at1, at2, _ in loader:
            x2 = augment(to_unit(ft2)) if cfg.loss.needs_next_frame else None
            loss = criterion(dreamer(augment(to_unit(ft1)), action, x2), at1, at2)["loss"]
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            samples += len(ft1)
    return samples / (time.perf_counter() - started)


def train_engine(cfg: CardiacConfig, datamodule: CardiacDataModule) -> float:
    """Samples/s of ``trainer.fit`` with the engine's default callbacks and loggers."""
    torch.manual_seed(SEED)
    return engine_fit_rate(cfg, CardiacGuidanceTask(cfg, datamodule), datamodule)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--patients", type=int, default=4)
    parser.add_argument("--transitions", type=int, default=64)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    quiet_lightning()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "patients"
        generate_phantom_dataset(root, patients=args.patients, transitions_per_patient=args.transitions,
                                 image_size=args.image_size * 2, seed=SEED)  # fmt: skip
        cfg = make_config(args, root, Path(tmp) / "runs")
        datamodule = CardiacDataModule(cfg)
        datamodule.setup("fit")
        records = read_dataset(root)
        pairs = [(t.ft1, t.ft2) for patient in datamodule.arrays["train"].patients for t in records[patient]]
        cached = datamodule.dataset("train")
        decoding = DecodingDataset(pairs, datamodule.normalised("train"), args.image_size)
        print(f"{len(pairs)} training transitions, PNGs {args.image_size * 2}² resized to {args.image_size}², "
              f"{args.threads} threads")  # fmt: skip
        loader_rounds: list[dict[str, Any]] = []
        train_rounds: list[dict[str, Any]] = []
        for index in range(args.rounds):
            order = ("cached", "decode") if index % 2 == 0 else ("decode", "cached")
            rates = {name: loader_rate(cached if name == "cached" else decoding, args.batch_size) for name in order}
            loader_rounds.append(rates)
            order = ("engine", "plain") if index % 2 == 0 else ("plain", "engine")
            train_rounds.append(
                {name: (train_engine if name == "engine" else train_plain)(cfg, datamodule) for name in order}
            )
        print_ratio_table("loader: samples/s (cached memory map vs PNG decoding)", loader_rounds, "cached", "decode")
        print_ratio_table("training: samples/s (engine vs plain PyTorch loop)", train_rounds, "engine", "plain")


if __name__ == "__main__":
    main()
