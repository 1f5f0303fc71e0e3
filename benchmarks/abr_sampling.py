"""abr-diffusion speed: DDIM generation with batched classifier-free guidance against two unbatched passes, and the
engine's training step against a plain PyTorch loop — each pair alternated in one process, printed as ratios.

**Generation** (waveforms/s of DDIM with ``--steps`` steps and guidance 2 for ``--waveforms`` conditions, eval mode,
no gradients; both arms start from the same noise and give the same waveforms, checked once):

- *batched*: :func:`~medtrain.nn.diffusion.guided_v` — the conditional and unconditional rows in one forward of
  ``2B`` rows per step (what the recipe uses);
- *two-pass*: :func:`~medtrain.nn.diffusion.guided_v_two_pass` — two forwards of ``B`` rows per step.

**Training** (samples/s over ``--epochs`` epochs of the training split; same network, data, loader, losses, AdamW,
validation off in both):

- *engine*: the trainer of :func:`~medtrain.engine.trainer.build_trainer` (default callbacks, checkpoints, CSV +
  TensorBoard loggers) fitting the recipe's ``ABRTask``; timed over ``trainer.fit``;
- *plain*: a hand-written loop over the engine's DataLoader calling the same ``ABRTask.step_losses`` (noisy + clean
  path in one forward, full loss weights), backward, AdamW step.

The network is the demo's (``recipes/abr_diffusion/demo.yaml``) on a synthetic table of ``--patients`` patients.
Usage: ``python benchmarks/abr_sampling.py [--rounds 3] [--waveforms 32] [--steps 50] [--patients 60]
[--epochs 1] [--threads 1]``. No threshold; exits 0.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from _ab_timing import engine_fit_rate, print_ratio_table
from medtrain.config import load_config
from medtrain.engine.optim import build_optimizer
from medtrain.engine.trainer import quiet_lightning
from medtrain.recipes.abr_diffusion.data import ABRDataModule
from medtrain.recipes.abr_diffusion.schema import ABRConfig
from medtrain.recipes.abr_diffusion.synthetic import write_abr_dataset
from medtrain.recipes.abr_diffusion.task import ABRTask, generate_normalized

SEED = 0
GUIDANCE = 2.0


def make_config(args: argparse.Namespace, table: Path, output: Path) -> ABRConfig:
    return load_config(
        ABRConfig,
        defaults=Path(__file__).parents[1] / "src/medtrain/recipes/abr_diffusion/demo.yaml",
        overrides=[
            f"data.root={table}",
            f"output_dir={output}",
            f"trainer.max_epochs={args.epochs}",
            f"trainer.num_threads={args.threads}",
            "trainer.progress=quiet",
            "trainer.limit_val_batches=0",
            "scheduler.name=none",
            "evaluation.generate_samples=0",
            "checkpoint.monitor=train_loss_epoch",
        ],
    )


def generation_rate(task: ABRTask, static: torch.Tensor, steps: int, *, batched: bool) -> tuple[float, torch.Tensor]:
    """Waveforms/s of one guided DDIM run over ``static`` (and the waveforms)."""
    started = time.perf_counter()
    x0 = generate_normalized(
        task.network, task.schedule, static, steps=steps, guidance_scale=GUIDANCE, eta=0.0, seed=SEED,
        batched_cfg=batched,
    )  # fmt: skip
    return len(static) / (time.perf_counter() - started), x0


def train_plain(cfg: ABRConfig, datamodule: ABRDataModule) -> float:
    """Samples/s of the hand-written loop."""
    torch.manual_seed(SEED)
    task = ABRTask(cfg, datamodule)
    optimizer = build_optimizer(task.network.parameters(), cfg.optim)
    loader = datamodule.make_loader(datamodule.dataset("train"), shuffle=True)
    weights = task.full_weights()
    task.network.train()
    samples = 0
    started = time.perf_counter()
    for _ in range(cfg.trainer.max_epochs):
        for batch in loader:
            loss = task.step_losses(batch, weights)["loss"]
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            samples += len(batch["signal"])
    return samples / (time.perf_counter() - started)


def train_engine(cfg: ABRConfig, datamodule: ABRDataModule) -> float:
    """Samples/s of ``trainer.fit`` with the engine's default callbacks and loggers."""
    torch.manual_seed(SEED)
    return engine_fit_rate(cfg, ABRTask(cfg, datamodule), datamodule)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds, each runs both arms of both pairs")
    parser.add_argument("--waveforms", type=int, default=32, help="conditions generated per run (default 32)")
    parser.add_argument("--steps", type=int, default=50, help="DDIM steps (default 50)")
    parser.add_argument("--patients", type=int, default=60, help="patients of the synthetic table (default 60)")
    parser.add_argument("--epochs", type=int, default=1, help="training epochs per run (default 1)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    args = parser.parse_args(argv)
    if min(args.rounds, args.waveforms, args.steps, args.patients, args.epochs, args.threads) < 1:
        parser.error("every count must be >= 1")
    quiet_lightning()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="medtrain-bench-") as tmp:
        table = write_abr_dataset(Path(tmp) / "abr_table.npz", n_patients=args.patients, seed=SEED)
        cfg = make_config(args, table, Path(tmp) / "runs")
        datamodule = ABRDataModule(cfg)
        datamodule.setup("fit")
        task = ABRTask(cfg, datamodule).eval()
        train = datamodule.tables["train"]
        rows = torch.arange(args.waveforms) % len(train)
        static = torch.from_numpy(task.stats.normalize_static(train.static[rows.numpy()]))
        print(
            f"abr-diffusion on CPU, {torch.get_num_threads()} thread(s), torch {torch.__version__}; demo network "
            f"({sum(p.numel() for p in task.network.parameters()):,} parameters), {len(train)} training rows"
        )
        _, batched = generation_rate(task, static, args.steps, batched=True)  # warm-up, and the equality check
        _, two_pass = generation_rate(task, static, args.steps, batched=False)
        print(f"batched and two-pass waveforms agree: max |difference| {float((batched - two_pass).abs().max()):.2e}")
        generation: list[dict[str, float]] = []
        training: list[dict[str, float]] = []
        for index in range(args.rounds):
            order = ("batched", "two-pass") if index % 2 == 0 else ("two-pass", "batched")
            generation.append(
                {name: generation_rate(task, static, args.steps, batched=name == "batched")[0] for name in order}
            )
            order = ("engine", "plain") if index % 2 == 0 else ("plain", "engine")
            training.append(
                {name: (train_engine if name == "engine" else train_plain)(cfg, datamodule) for name in order}
            )
        print_ratio_table(
            f"generation: DDIM-{args.steps} waveforms/s, guidance {GUIDANCE}, {args.waveforms} conditions "
            "(batched CFG vs two passes)",
            generation,
            "batched",
            "two-pass",
            "wf/s",
        )
        print_ratio_table("training (engine vs plain PyTorch loop)", training, "engine", "plain", "samples/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
