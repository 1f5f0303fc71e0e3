"""volume-seg loader speed: the recipe's training loader with full augmentation against the model's training step
and against a standard MONAI pipeline on the same data — alternated in one process, printed as ratios.

Data: ``--volumes`` synthetic zarr volumes of ``--shape`` (``generate_volume_dataset``: targets ``sheet`` and
``ink``, a mask for ``ink``) in a temporary folder, all of them training volumes, with the demo's config
(``demo.yaml``: zscore normalisation, the auxiliary target ``sheet_distance``, U-Net features 8 → 64, AdamW) and
``--patch``/``--batch-size``. Every loader is a DataLoader with ``num_workers=0`` (``default.yaml``'s value; this
machine has 2 cores shared with other work, so a worker process would only move the same work elsewhere, and one
process keeps the arms on equal terms) and shuffling; a loader rate is patches/s over ``--batches`` batches after
one warm-up batch. Torch runs ``--threads`` threads (default 1: on a loaded 2-core machine, 2 OpenMP threads made
the U-Net step several times slower, waiting for each other).

**Loader vs model** (patches/s):

- *loader* (= *ours*): the recipe's own ``VolumeSegDataModule.train_dataloader()``; per patch: nnU-Net's foreground
  oversampling (0.33) from the valid-patch index, lazy zarr reads of the image, both labels and the mask,
  normalisation, label encodings, the full augmentation (``augment.build_train_augmentation`` with nnU-Net's
  probabilities: rotation/scaling, noise, blur, brightness, contrast, low resolution, gamma inverted and not,
  mirroring), then the auxiliary target (a signed distance transform) and its mask;
- *model*: the training step of the recipe's planned U-Net (``VolumeSegTask``'s network and ``MultiTaskLoss`` with
  deep supervision, the config's optimiser, gradient clipping as the trainer does): forward + backward + step over
  ``--steps`` batches collected from the loader beforehand (the loader is not in this timing), on the CPU.

A ratio loader/model ≥ 1.5 means the loader is not the bottleneck of training on the CPU. On a GPU the step is
much faster; divide the GPU's patches/s by the loader's rate to get the loader processes (workers) it needs.

**Ours vs MONAI** (patches/s, same volumes, normalisation, patch and batch size):

- *ours*: the loader above; *ours-noaux*: the same without the auxiliary target (what MONAI's arm computes);
- *monai*: a standard MONAI pipeline on cached in-memory arrays, as ``CacheDataset(copy_cache=False)`` holds them:
  each volume read whole once, normalised, its labels and mask encoded (the recipe's ``SampleBuilder`` without
  augmentation) and ``FgBgToIndicesd`` on the ``sheet`` label precomputed (MONAI's documented way to make
  ``RandCropByPosNegLabeld`` fast; without it every crop scans the volume); then per patch
  ``RandCropByPosNegLabeld`` (pos 1, neg 2: a foreground-centred patch with probability 1/3, as nnU-Net)
  + ``RandAffined`` (rotation U(±30°) per axis and scale U(0.7, 1.4) per axis in one resampling; its one
  probability is 0.36 = 1 − 0.8², the chance that nnU-Net's independent rotation (0.2) or scaling (0.2) fires;
  bilinear for the image, nearest for labels and mask, zero padding) + ``RandGaussianNoised`` (0.1, σ 0.1)
  + ``RandGaussianSmoothd`` (0.2, σ U(0.5, 1)) + ``RandScaleIntensityd`` (0.15, ×U(0.75, 1.25))
  + ``RandAdjustContrastd`` (0.3, γ U(0.7, 1.5)) + ``RandFlipd`` (0.5 per axis), with MONAI's defaults
  (``MetaTensor`` tracking on), batched by ``monai.data.DataLoader``.

What differs, in MONAI's favour: it reads nothing per patch (ours reads four zarr boxes lazily per patch and
normalises and encodes them), it computes no auxiliary target (*ours* computes a distance transform per patch;
*ours-noaux* does not) and it has fewer intensity transforms (ours adds contrast, low-resolution simulation and
inverted gamma). In ours' favour: metadata tracking is off during our augmentation (MONAI's default keeps it on)
and our rotation and scaling resample every key in one ``grid_sample`` per interpolation mode. MONAI's negative
crops are centred on a background voxel; ours are a random valid patch of the index.

Usage: ``python benchmarks/volume_loader.py [--rounds 3] [--volumes 6] [--shape 64,128,128] [--patch 64,64,64]
[--batch-size 2] [--batches 12] [--steps 3] [--threads 1] [--quick]``. No threshold; exits 0.
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from _ab_timing import print_ratio_table
from medtrain.config import load_config
from medtrain.engine.optim import build_optimizer
from medtrain.recipes.volume_seg.data import SampleBuilder, VolumeSegDataModule
from medtrain.recipes.volume_seg.schema import VolumeSegConfig
from medtrain.recipes.volume_seg.synthetic import generate_volume_dataset
from medtrain.recipes.volume_seg.task import VolumeSegTask

SEED = 0
ROTATION = math.radians(30.0)  # nnU-Net's 3-D rotation range, as augment.build_train_augmentation
SCALE = (0.7, 1.4)  # nnU-Net's scale range


def parse_size(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(","))


def make_config(args: argparse.Namespace, root: Path, output: Path) -> VolumeSegConfig:
    """The demo's config on ``root`` with the benchmark's patch, batch and thread settings; every volume trains."""
    return load_config(
        VolumeSegConfig,
        defaults=Path(__file__).parents[1] / "src/medtrain/recipes/volume_seg/demo.yaml",
        overrides=[
            f"data.root={root}",
            f"output_dir={output}",
            f"data.patch_size=[{','.join(str(p) for p in args.patch)}]",
            f"data.batch_size={args.batch_size}",
            f"data.samples_per_epoch={args.batch_size * (args.batches + 1)}",
            "data.num_workers=0",
            "data.ratios=[1.0,0.0,0.0]",
            f"trainer.num_threads={args.threads}",
        ],
    )


def loader_rate(loader: Any, batches: int) -> float:
    """Patches/s over ``batches`` batches of ``loader`` after one warm-up batch (a new iterator each call)."""
    iterator = iter(loader)
    next(iterator)
    started = time.perf_counter()
    count = sum(len(next(iterator)["image"]) for _ in range(batches))
    return count / (time.perf_counter() - started)


class TrainStep:
    """Forward + backward + optimiser step of the task's network and loss on pre-collected batches."""

    def __init__(self, cfg: VolumeSegConfig, datamodule: VolumeSegDataModule, batches: list[dict[str, Any]]) -> None:
        torch.manual_seed(SEED)
        task = VolumeSegTask(cfg, datamodule)
        self.network, self.criterion = task.network.train(), task.criterion
        self.optimizer = build_optimizer(self.network.parameters(), cfg.optim)
        self.clip = cfg.trainer.gradient_clip_val
        self.batches = batches
        self.rate(1)  # warm-up: allocator and oneDNN kernels

    def rate(self, steps: int | None = None) -> float:
        """Patches/s over ``steps`` steps (default: one per collected batch)."""
        steps = steps or len(self.batches)
        samples = 0
        started = time.perf_counter()
        for step in range(steps):
            batch = self.batches[step % len(self.batches)]
            outputs = self.network(batch["image"])
            loss, _ = self.criterion(outputs, batch["targets"], batch["masks"], epoch=0)
            loss.backward()
            if self.clip:
                torch.nn.utils.clip_grad_norm_(self.network.parameters(), self.clip)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            samples += len(batch["image"])
        return samples / (time.perf_counter() - started)


def monai_loader(datamodule: VolumeSegDataModule, args: argparse.Namespace) -> Any:
    """The MONAI pipeline of the module docstring over the training volumes held in memory."""
    from monai.data import DataLoader as MonaiDataLoader
    from monai.data import Dataset as MonaiDataset
    from monai.transforms import (
        Compose,
        FgBgToIndicesd,
        RandAdjustContrastd,
        RandAffined,
        RandCropByPosNegLabeld,
        RandFlipd,
        RandGaussianNoised,
        RandGaussianSmoothd,
        RandScaleIntensityd,
    )

    plan = datamodule.plan
    assert plan is not None
    builder = SampleBuilder(plan, plan.split_cases("train"), on_label_only=False, augment=None)
    labels = list(plan.label_target_names)
    cached = []
    for case_index in range(len(builder.reader.cases)):
        sample = builder.build(case_index, None, None)
        item = {"image": sample["image"].numpy()}
        for name in labels:
            item[f"label_{name}"] = sample["targets"][name].numpy()
            item[f"mask_{name}"] = sample["masks"][name].numpy()
        cached.append(FgBgToIndicesd(f"label_{labels[0]}")(item))
    keys = ["image", *(f"label_{name}" for name in labels), *(f"mask_{name}" for name in labels)]
    modes = ["bilinear"] + ["nearest"] * (len(keys) - 1)
    indices = f"label_{labels[0]}"
    scales = [(SCALE[0] - 1, SCALE[1] - 1)] * 3  # MONAI's factor is 1 + U(range)
    transform = Compose(
        [
            RandCropByPosNegLabeld(keys, label_key=indices, spatial_size=args.patch, pos=1, neg=2, num_samples=1,
                                   fg_indices_key=f"{indices}_fg_indices", bg_indices_key=f"{indices}_bg_indices"),
            RandAffined(keys, prob=1 - 0.8**2, rotate_range=[ROTATION] * 3, scale_range=scales,
                        mode=modes, padding_mode="zeros", spatial_size=args.patch, cache_grid=True),
            RandGaussianNoised("image", prob=0.1, mean=0.0, std=0.1),
            RandGaussianSmoothd("image", sigma_x=(0.5, 1.0), sigma_y=(0.5, 1.0), sigma_z=(0.5, 1.0), prob=0.2),
            RandScaleIntensityd("image", factors=0.25, prob=0.15),
            RandAdjustContrastd("image", prob=0.3, gamma=(0.7, 1.5)),
            *(RandFlipd(keys, prob=0.5, spatial_axis=axis) for axis in range(3)),
        ]
    )  # fmt: skip
    transform.set_random_state(seed=SEED)
    length = args.batch_size * (args.batches + 1)
    dataset = MonaiDataset([cached[i % len(cached)] for i in range(length)], transform=transform)
    return MonaiDataLoader(dataset, batch_size=args.batch_size, shuffle=True, num_workers=0)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--volumes", type=int, default=6)
    parser.add_argument("--shape", type=parse_size, default=(64, 128, 128))
    parser.add_argument("--patch", type=parse_size, default=(64, 64, 64))
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--batches", type=int, default=12, help="timed batches per loader pass")
    parser.add_argument("--steps", type=int, default=3, help="timed training steps per model pass")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="4 volumes 48,64,64, patch 32,32,32, 2 rounds")
    args = parser.parse_args(argv)
    if args.quick:
        args.volumes, args.shape, args.patch, args.rounds = 4, (48, 64, 64), (32, 32, 32), 2
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "volumes"
        started = time.perf_counter()
        generate_volume_dataset(root, n_volumes=args.volumes, shape=args.shape, seed=SEED)
        generated = time.perf_counter() - started
        cfg = make_config(args, root, Path(tmp) / "runs")
        datamodule = VolumeSegDataModule(cfg)
        datamodule.setup("fit")
        plain = VolumeSegDataModule(cfg.model_copy(update={"auxiliary_tasks": {}}))
        plain.setup("fit")
        loaders = {"ours": datamodule.train_dataloader(), "ours-noaux": plain.train_dataloader()}
        loaders["monai"] = monai_loader(datamodule, args)
        batches = [batch for _, batch in zip(range(args.steps), iter(loaders["ours"]), strict=False)]
        model = TrainStep(cfg, datamodule, batches)
        plan = datamodule.plan
        assert plan is not None
        print(
            f"{args.volumes} zarr volumes {list(args.shape)} (generated in {generated:.1f} s), patch "
            f"{list(plan.patch_size)}, batch {plan.batch_size}, targets {list(plan.targets)}, U-Net features "
            f"{list(plan.topology.features_per_stage)}, {args.threads} thread(s), DataLoader num_workers=0"
        )
        rounds: list[dict[str, float]] = []
        for index in range(args.rounds):
            order = ["ours", "model", "ours-noaux", "monai"]
            rates = {}
            for name in order if index % 2 == 0 else order[::-1]:
                rates[name] = model.rate() if name == "model" else loader_rate(loaders[name], args.batches)
            rates["loader"] = rates["ours"]
            rounds.append(rates)
        print_ratio_table("training loader vs model step: patches/s (≥ 1.5: the loader is not the bottleneck)",
                          rounds, "loader", "model")  # fmt: skip
        step = statistics.median(args.batch_size / values["model"] for values in rounds)
        print(f"  model step: {step:.2f} s per batch of {args.batch_size} (median)")
        print_ratio_table(
            "training loader: patches/s (ours with the auxiliary target vs MONAI)", rounds, "ours", "monai"
        )
        print_ratio_table("training loader: patches/s (ours without auxiliary target vs MONAI)", rounds, "ours-noaux",
                          "monai")  # fmt: skip


if __name__ == "__main__":
    main()
