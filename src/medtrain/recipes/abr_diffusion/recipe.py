"""The abr-diffusion recipe: how the shared engine builds its data, task, demo data and predictor, and the flags and
environment variables of seed 003 (``train.py`` / ``evaluate.py`` / ``inference.py``) that differ from medtrain's.

Generic flags that already cover the seed: ``--config --experiment --resume --epochs --batch-size --lr --devices
--precision --fast-dev-run --overfit-batches --output-dir/--output_dir`` (train), ``--checkpoint --split
--output-dir`` (evaluate), ``--output/--output-dir`` (predict).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import ClassVar

import numpy as np

from medtrain.recipes.abr_diffusion.data import ABRDataModule
from medtrain.recipes.abr_diffusion.predict import ABRPredictor
from medtrain.recipes.abr_diffusion.schema import ABRConfig
from medtrain.recipes.abr_diffusion.synthetic import write_abr_dataset
from medtrain.recipes.abr_diffusion.table import CLASS_NAMES, read_abr_table, split_patients
from medtrain.recipes.abr_diffusion.task import ABRTask
from medtrain.registry import FlagAlias, Recipe, SyntheticData

_TRAIN = ("train",)
_PREDICT = ("predict",)
DEMO_PATIENTS = 200


class ABRDiffusionRecipe(Recipe):
    """ABR waveforms + static parameters → conditional diffusion (v-prediction, DDIM, CFG) + clinical heads."""

    name = "abr-diffusion"
    summary = (
        "ABR waveforms: conditional diffusion (DDIM + guidance) with wave-V, hearing-loss class and threshold heads"
    )
    config_class = ABRConfig
    flag_aliases = (
        FlagAlias(("--batch_size",), "data.batch_size", "data.batch_size (seed spelling)", commands=_TRAIN),
        FlagAlias(("--learning_rate", "--learning-rate"), "optim.lr", "optim.lr (seed spelling)", commands=_TRAIN),
        FlagAlias(
            ("--fast_dev_run",), "trainer.fast_dev_run", "one batch of train/val/test", switch=True, commands=_TRAIN
        ),
        FlagAlias(
            ("--overfit_batch",),
            "trainer.overfit_batches",
            "train and validate on one batch",
            switch=True,
            commands=_TRAIN,
        ),
        FlagAlias(("--device",), "trainer.accelerator", "cpu, cuda or auto", commands=_TRAIN),
        FlagAlias(("--dataset_path", "--dataset-path"), "data.root", "the ABR table (.npz/.csv/.parquet)"),
        FlagAlias(
            ("--generate-samples", "--generate_samples"),
            "evaluation.generate_samples",
            "DDIM-generate waveforms for the first N test conditions",
            commands=("evaluate",),
        ),
    )
    predict_options = (
        FlagAlias(("--age",), "age", "age in years (single prediction)", commands=_PREDICT),
        FlagAlias(("--intensity",), "intensity", "stimulus intensity in dB nHL", commands=_PREDICT),
        FlagAlias(("--rate", "--stimulus-rate", "--stimulus_rate"), "rate", "stimulus rate in Hz", commands=_PREDICT),
        FlagAlias(("--fmp",), "fmp", "FMP recording quality", commands=_PREDICT),
        FlagAlias(("--confidence",), "confidence", "intervals for every output", switch=True, commands=_PREDICT),
        FlagAlias(
            ("--input-file", "--input_file"), "input_file", "conditions or recordings (.npz/.csv)", commands=_PREDICT
        ),
        FlagAlias(("--generate",), "generate", "generate N waveforms", commands=_PREDICT),
        FlagAlias(("--format",), "format", "json or npz", commands=_PREDICT),
    )
    env_aliases: ClassVar[Mapping[str, str]] = {
        "ABR_BATCH_SIZE": "data.batch_size",
        "ABR_LEARNING_RATE": "optim.lr",
        "ABR_EPOCHS": "trainer.max_epochs",
    }

    def build_datamodule(self, cfg: ABRConfig) -> ABRDataModule:
        return ABRDataModule(cfg)

    def build_task(self, cfg: ABRConfig, datamodule: ABRDataModule) -> ABRTask:
        return ABRTask(cfg, datamodule)

    def load_predictor(self, model_dir: Path) -> ABRPredictor:
        return ABRPredictor(model_dir)

    def check_data(self, cfg: ABRConfig) -> list[str]:
        """Read and validate the whole table (every check of ``read_abr_table``) and split it by patient."""
        super().check_data(cfg)
        root = Path(cfg.data.root)  # type: ignore[arg-type]
        table = read_abr_table(root, signal_length=cfg.data.signal_length)
        split = split_patients(table, cfg.data.ratios, seed=cfg.seed)
        counts = np.bincount(table.labels, minlength=len(CLASS_NAMES))
        classes = ", ".join(f"{name} {count}" for name, count in zip(CLASS_NAMES, counts, strict=True))
        patients = ", ".join(f"{name} {len(members)}" for name, members in split.as_dict().items())
        return [
            f"data.root: {root}",
            f"{len(table)} recordings of {len(np.unique(table.patient_ids))} patients, {table.signal_length} samples "
            f"at {table.sampling_rate_hz:g} Hz; wave V annotated in {int(table.peak_present.sum())}",
            f"recordings per class: {classes}",
            f"patients per split: {patients}",
        ]

    def generate_synthetic(self, output: Path, *, seed: int) -> SyntheticData:
        """A synthetic ABR table of :data:`DEMO_PATIENTS` patients (about 4.5 recordings each); ``predict`` runs on
        the same table (batch prediction on its recorded signals, with generated waveforms plotted beside them)."""
        table = write_abr_dataset(output / "abr_table.npz", n_patients=DEMO_PATIENTS, seed=seed)
        return SyntheticData(root=table, predict_input=table)
