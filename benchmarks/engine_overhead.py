"""Engine overhead: medtrain's engine against a hand-written PyTorch loop, same model, data and optimizer.

What is measured, in one process, alternating the two in every round (A-B then B-A, to cancel slow drift):

- **hand**: a minimal PyTorch loop. Per epoch: iterate the DataLoader, forward, cross-entropy, backward,
  ``optimizer.step()``, ``optimizer.zero_grad()``, then one validation batch under ``torch.no_grad()``. Timed
  from building the loader and the optimizer to the end of the last epoch.
- **engine**: the same network wrapped in a :class:`~medtrain.engine.task.TaskModule`, trained by the
  ``lightning.Trainer`` that :func:`~medtrain.engine.trainer.build_trainer` returns with the default callbacks
  as users get them (best-k + last checkpoints written each epoch, CSV and TensorBoard loggers, throughput,
  RNG state, signal handling, quiet progress), ``log_every_n_steps=50``, the same single validation batch per
  epoch. Timed over the ``trainer.fit`` call, nothing subtracted (setup and checkpoint writes included).

Both use the same in-memory dataset, the same DataLoader (``MedtrainDataModule.make_loader``, no workers), the
same AdamW from :func:`~medtrain.engine.optim.build_optimizer`, no LR schedule, and the same initial weights.
Steps/s = optimizer steps / seconds; ratio = engine / hand (1.0 = no overhead). Both the median of the per-round
ratios and the ratio of the median steps/s are printed. The engine's cost is mostly fixed per step (Lightning's
loop and ``self.log``, about 1-1.5 ms on a 2-core CPU) and per epoch (checkpoint writes, validation set-up), so it
weighs more on cheap steps and short epochs: the output names the step cost it was measured at and the overhead
in ms/step.

Usage: ``python benchmarks/engine_overhead.py [--rounds 5] [--epochs 2] [--batches 50] [--batch-size 64]
[--threads 2] [--device cpu|cuda] [--budget-s 150]``.
No timing threshold is enforced: the script always exits 0 after printing its table.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn
from torch.utils.data import Dataset, TensorDataset

from medtrain.config import load_config
from medtrain.config.schema import RunConfig
from medtrain.engine.callbacks import graceful_signals
from medtrain.engine.datamodule import MedtrainDataModule, Split
from medtrain.engine.optim import build_optimizer
from medtrain.engine.rundir import create_run_dir
from medtrain.engine.task import TaskModule
from medtrain.engine.trainer import build_trainer, quiet_lightning

IMAGE = 32
CLASSES = 10
SEED = 0
MIN_ROUNDS = 3


class BenchConfig(RunConfig):
    recipe: str = "engine_overhead"


def build_net() -> nn.Module:
    """A small conv net on 1x32x32 images (about 137k parameters)."""
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(32 * (IMAGE // 4) ** 2, 64),
        nn.ReLU(),
        nn.Linear(64, CLASSES),
    )


class BenchData(MedtrainDataModule):
    """Serves the shared in-memory tensors; loaders come from the engine's ``make_loader``."""

    def __init__(self, cfg: BenchConfig, datasets: dict[str, TensorDataset]) -> None:
        super().__init__(cfg.data, seed=cfg.seed)
        self.datasets = datasets

    def dataset(self, split: Split) -> Dataset:
        return self.datasets[split]

    def data_summary(self) -> dict[str, Any]:
        return {"samples": {name: len(data) for name, data in self.datasets.items()}}


class BenchTask(TaskModule):
    def __init__(self, cfg: BenchConfig, net: nn.Module) -> None:
        super().__init__(cfg)
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = nn.functional.cross_entropy(self(x), y)
        self.log_train("train_loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        self.log("val_loss", nn.functional.cross_entropy(self(x), y), prog_bar=True)

    def test_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        self.log("test_loss", nn.functional.cross_entropy(self(x), y))

    def export_module(self) -> nn.Module:
        return self.net

    def example_inputs(self) -> tuple[torch.Tensor, ...]:
        return (torch.zeros(1, 1, IMAGE, IMAGE),)


def make_datasets(batches: int, batch_size: int) -> dict[str, TensorDataset]:
    """``batches`` training batches and exactly one validation batch of random images and labels."""
    generator = torch.Generator().manual_seed(SEED)

    def split(samples: int) -> TensorDataset:
        x = torch.randn(samples, 1, IMAGE, IMAGE, generator=generator)
        y = torch.randint(0, CLASSES, (samples,), generator=generator)
        return TensorDataset(x, y)

    return {"train": split(batches * batch_size), "val": split(batch_size), "test": split(batch_size)}


def make_config(args: argparse.Namespace, output_dir: Path) -> BenchConfig:
    return load_config(
        BenchConfig,
        defaults={
            "output_dir": str(output_dir),
            "seed": SEED,
            "data": {"batch_size": args.batch_size, "eval_batch_size": args.batch_size, "num_workers": 0},
            "scheduler": {"name": "none"},
            "trainer": {
                "max_epochs": args.epochs,
                "accelerator": args.device,
                "devices": 1,
                "progress": "quiet",
                "log_every_n_steps": 50,
                "num_sanity_val_steps": 0,
                "num_threads": args.threads,
            },
        },
    )


class Timing(NamedTuple):
    """One timed run: optimizer steps, wall-clock seconds, CPU seconds of this process (all threads)."""

    steps: int
    wall: float
    cpu: float


def fresh_net(device: torch.device) -> nn.Module:
    torch.manual_seed(SEED)
    return build_net().to(device)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_hand(cfg: BenchConfig, datasets: dict[str, TensorDataset], device: torch.device) -> Timing:
    """The hand-written loop."""
    net = fresh_net(device)
    data = BenchData(cfg, datasets)
    synchronize(device)
    started, cpu_started = time.perf_counter(), time.process_time()
    train_loader = data.train_dataloader()
    val_loader = data.val_dataloader()
    optimizer = build_optimizer(net.parameters(), cfg.optim)
    steps = 0
    for _ in range(cfg.trainer.max_epochs):
        net.train()
        for x, y in train_loader:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            loss = nn.functional.cross_entropy(net(x), y)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            steps += 1
        net.eval()
        with torch.no_grad():
            for x, y in val_loader:
                nn.functional.cross_entropy(net(x.to(device)), y.to(device))
    synchronize(device)
    return Timing(steps, time.perf_counter() - started, time.process_time() - cpu_started)


def run_engine(cfg: BenchConfig, datasets: dict[str, TensorDataset], device: torch.device) -> Timing:
    """``trainer.fit`` of the trainer ``build_trainer`` returns."""
    task = BenchTask(cfg, fresh_net(device))
    data = BenchData(cfg, datasets)
    paths = create_run_dir(Path(cfg.output_dir), cfg.experiment)
    trainer, _ = build_trainer(cfg, paths, resume_command=["medtrain", "train"])
    synchronize(device)
    started, cpu_started = time.perf_counter(), time.process_time()
    with graceful_signals():
        trainer.fit(task, datamodule=data)
    synchronize(device)
    return Timing(trainer.global_step, time.perf_counter() - started, time.process_time() - cpu_started)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds, each runs both arms (default 5)")
    parser.add_argument("--epochs", type=int, default=2, help="epochs per run (default 2)")
    parser.add_argument("--batches", type=int, default=50, help="training batches per epoch (default 50)")
    parser.add_argument("--batch-size", type=int, default=64, help="samples per batch: sets the step cost (default 64)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument(
        "--threads", type=int, default=2, help="torch intra-op threads (default 2; 1 is steadier on a busy machine)"
    )
    parser.add_argument(
        "--budget-s",
        type=float,
        default=150.0,
        help=f"stop after the round that passes this many seconds, once {MIN_ROUNDS} rounds are done (default 150)",
    )
    args = parser.parse_args(argv)
    if min(args.rounds, args.epochs, args.batches, args.batch_size, args.threads) < 1:
        parser.error("--rounds, --epochs, --batches, --batch-size and --threads must be >= 1")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    quiet_lightning()
    device = torch.device(args.device)
    datasets = make_datasets(args.batches, args.batch_size)
    arms: dict[str, Callable[..., Timing]] = {"hand": run_hand, "engine": run_engine}
    runs: dict[str, list[Timing]] = {"hand": [], "engine": []}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="medtrain-bench-") as tmp:
        cfg = make_config(args, Path(tmp))
        warm_up = cfg.model_copy(update={"trainer": cfg.trainer.model_copy(update={"max_epochs": 1})})
        for arm in arms.values():  # imports, allocator, first-fit costs: not timed
            arm(warm_up, datasets, device)
        for index in range(args.rounds):
            for name in ("hand", "engine") if index % 2 == 0 else ("engine", "hand"):
                runs[name].append(arms[name](cfg, datasets, device))
                if torch.get_num_threads() != args.threads:
                    raise RuntimeError(f"the {name} run changed torch's thread count to {torch.get_num_threads()}")
            if index + 1 >= MIN_ROUNDS and time.perf_counter() - started > args.budget_s:
                print(f"time budget of {args.budget_s:.0f} s spent: stopping after {index + 1} rounds (machine busy?)")
                break
    report(args, runs)
    return 0


def report(args: argparse.Namespace, runs: dict[str, list[Timing]]) -> None:
    """The table: wall-clock steps/s per round, medians, bests, ratios, and the CPU-time ratio on CPU."""
    rates = {name: [run.steps / run.wall for run in timings] for name, timings in runs.items()}
    ratios = [engine / hand for hand, engine in zip(rates["hand"], rates["engine"], strict=True)]
    hand, engine = statistics.median(rates["hand"]), statistics.median(rates["engine"])
    best_hand, best_engine = max(rates["hand"]), max(rates["engine"])
    ratio = statistics.median(ratios)
    overhead_ms = statistics.median(
        1000 * (run_e.wall / run_e.steps - run_h.wall / run_h.steps)
        for run_h, run_e in zip(runs["hand"], runs["engine"], strict=True)
    )
    params = sum(p.numel() for p in build_net().parameters())
    print(f"engine overhead on {args.device} ({torch.get_num_threads()} threads), torch {torch.__version__}")
    print(
        f"workload: conv net ({params:,} params), batch {args.batch_size} of 1x{IMAGE}x{IMAGE}, AdamW, "
        f"{args.epochs} epochs x {args.batches} steps + 1 val batch per epoch, {len(ratios)} rounds (A-B/B-A)"
    )
    print(f"step cost measured: {1000 / hand:.1f} ms/step (hand loop, median wall clock)")
    print()
    print(f"{'round':>6}  {'hand steps/s':>12}  {'engine steps/s':>14}  {'ratio':>6}")
    for index, (h, e, r) in enumerate(zip(rates["hand"], rates["engine"], ratios, strict=True), start=1):
        print(f"{index:>6}  {h:>12.1f}  {e:>14.1f}  {r:>6.3f}")
    print(f"{'median':>6}  {hand:>12.1f}  {engine:>14.1f}  {ratio:>6.3f}")
    print(f"{'best':>6}  {best_hand:>12.1f}  {best_engine:>14.1f}  {best_engine / best_hand:>6.3f}")
    print()
    print(
        f"ratio engine/hand: {ratio:.3f} (median of per-round ratios, range {min(ratios):.3f}-{max(ratios):.3f}; "
        f"ratio of medians {engine / hand:.3f}; of bests {best_engine / best_hand:.3f}); "
        f"goal >= 0.95 {'met' if ratio >= 0.95 else 'NOT met'}"
    )
    needed = f"steps of >= {overhead_ms * 19:.0f} ms give a ratio >= 0.95" if overhead_ms > 0 else "no overhead seen"
    print(f"engine overhead: {overhead_ms:+.2f} ms/step (median of per-round differences): {needed}")
    if args.device == "cpu":  # CPU seconds leave out time spent waiting for a core: a second opinion under load
        cpu = {name: statistics.median(run.cpu / run.steps for run in timings) for name, timings in runs.items()}
        print(
            f"CPU time (less sensitive to other load): hand {1000 * cpu['hand']:.1f} ms/step, "
            f"engine {1000 * cpu['engine']:.1f} ms/step, ratio {cpu['hand'] / cpu['engine']:.3f}"
        )


if __name__ == "__main__":
    raise SystemExit(main())
