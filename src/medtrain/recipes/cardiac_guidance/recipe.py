"""The cardiac-guidance recipe: how the shared engine builds its data, task, run files, demo data and predictor."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from medtrain.config import config_to_dict
from medtrain.io.atomic import atomic_write_json
from medtrain.recipes.cardiac_guidance.data import CardiacDataModule, split_patients
from medtrain.recipes.cardiac_guidance.plots import plot_dataset_statistics
from medtrain.recipes.cardiac_guidance.predict import CardiacGuidancePredictor
from medtrain.recipes.cardiac_guidance.records import discover_patients, read_dataset
from medtrain.recipes.cardiac_guidance.schema import CardiacConfig
from medtrain.recipes.cardiac_guidance.synthetic import generate_phantom_dataset
from medtrain.recipes.cardiac_guidance.task import CardiacGuidanceTask
from medtrain.registry import FlagAlias, Recipe, SyntheticData

_DATA_COMMANDS = ("train", "validate", "plan", "evaluate")


def _alias(names: tuple[str, ...], key: str, help_text: str, *, switch: bool = False) -> FlagAlias:
    return FlagAlias(names, key, help_text, switch=switch, commands=_DATA_COMMANDS)


class CardiacGuidanceRecipe(Recipe):
    """6-DOF ultrasound probe guidance from frame pairs with a transformer "dreamer", cross-patient validated."""

    name = "cardiac-guidance"
    summary = "6-DOF probe guidance from ultrasound frames: ResNet tokens → transformer dreamer → guidance head"
    config_class = CardiacConfig
    #: seed 004's flags (``--config``, ``--output_dir`` and ``--resume_from_checkpoint`` are generic CLI options)
    flag_aliases = (
        _alias(("--data_dir", "--data-dir"), "data.root", "folder of patient folders"),
        _alias(("--manual_splits", "--manual-splits"), "data.manual_splits", "split by the lists", switch=True),
        _alias(("--train_patients", "--train-patients"), "data.train_patients", "training patients a,b,c"),
        _alias(("--val_patients", "--val-patients"), "data.val_patients", "validation patients a,b"),
        _alias(("--test_patients", "--test-patients"), "data.test_patients", "test patients a,b"),
        _alias(("--token_type", "--token-type"), "model.token_type", "channel or spatial"),
    )

    def build_datamodule(self, cfg: CardiacConfig) -> CardiacDataModule:
        return CardiacDataModule(cfg)

    def build_task(self, cfg: CardiacConfig, datamodule: CardiacDataModule) -> CardiacGuidanceTask:
        return CardiacGuidanceTask(cfg, datamodule)

    def load_predictor(self, model_dir: Path) -> CardiacGuidancePredictor:
        return CardiacGuidancePredictor(model_dir)

    def check_data(self, cfg: CardiacConfig) -> list[str]:
        """Read every patient's records and check every image path (inside the patient folder, existing), and
        the split; decoding is left to the frame cache."""
        super().check_data(cfg)
        root = Path(cfg.data.root)  # type: ignore[arg-type]
        patients = discover_patients(root)
        split = split_patients(patients, cfg.data, cfg.seed)
        records = read_dataset(root, patients)
        images = {path for transitions in records.values() for t in transitions for path in (t.ft1, t.ft2)}
        parts = [
            f"{name} {len(members)} ({sum(len(records[p]) for p in members)} transitions)"
            for name, members in split.as_dict().items()
        ]
        return [
            f"data.root: {root}",
            f"{len(patients)} patients, {sum(len(t) for t in records.values())} transitions, {len(images)} images",
            "split by patient: " + ", ".join(parts),
        ]

    def write_run_files(self, cfg: CardiacConfig, datamodule: CardiacDataModule, run_dir: Path) -> list[Path]:
        """Seed 004's run files: ``experiment_config.json``, ``dataset_stats.json`` and
        ``plots/dataset_statistics.png``."""
        summary = datamodule.data_summary()
        examples: dict[str, Any] = {}
        assert datamodule.cache is not None
        for name, arrays in datamodule.arrays.items():
            if len(arrays):
                examples[name] = np.asarray(datamodule.cache[int(arrays.frames[0, 0])])
        return [
            atomic_write_json(run_dir / "experiment_config.json", config_to_dict(cfg)),
            atomic_write_json(run_dir / "dataset_stats.json", summary),
            plot_dataset_statistics(
                summary["split"], summary["samples_per_patient"], examples, run_dir / "plots" / "dataset_statistics.png"
            ),
        ]

    def generate_synthetic(self, output: Path, *, seed: int) -> SyntheticData:
        root = output / "patients"
        patients = generate_phantom_dataset(root, patients=8, transitions_per_patient=80, image_size=128, seed=seed)
        last = root / patients[-1] / "ft1"
        return SyntheticData(
            root=root,
            predict_input=last,
            overrides=(
                f"data.train_patients=[{','.join(patients[:5])}]",
                f"data.val_patients=[{patients[5]}]",
                f"data.test_patients=[{','.join(patients[6:])}]",
            ),
        )
