"""The ultrasound-ae recipe: how the shared engine builds its data, task, prepare step, demo data and predictor."""

from __future__ import annotations

from pathlib import Path

from medtrain.errors import DataError, UsageError
from medtrain.recipes.ultrasound_ae.data import UltrasoundDataModule, read_prepared
from medtrain.recipes.ultrasound_ae.predict import UltrasoundPredictor
from medtrain.recipes.ultrasound_ae.prepare import prepare_dataset
from medtrain.recipes.ultrasound_ae.schema import UltrasoundConfig
from medtrain.recipes.ultrasound_ae.synthetic import generate_raw_dataset
from medtrain.recipes.ultrasound_ae.task import UltrasoundAETask
from medtrain.registry import Recipe, SyntheticData


class UltrasoundAERecipe(Recipe):
    """Raw multi-channel ultrasound → filtered, tokenized sequences → CNN autoencoder embeddings."""

    name = "ultrasound-ae"
    summary = "raw multi-channel ultrasound → tokens → CNN autoencoder embeddings (+ joystick probe)"
    config_class = UltrasoundConfig

    def build_datamodule(self, cfg: UltrasoundConfig) -> UltrasoundDataModule:
        return UltrasoundDataModule(cfg)

    def build_task(self, cfg: UltrasoundConfig, datamodule: UltrasoundDataModule) -> UltrasoundAETask:
        return UltrasoundAETask(cfg, datamodule)

    def load_predictor(self, model_dir: Path) -> UltrasoundPredictor:
        return UltrasoundPredictor(model_dir)

    def check_data(self, cfg: UltrasoundConfig) -> list[str]:
        super().check_data(cfg)
        rows = read_prepared(Path(cfg.data.root), cfg.data)
        sessions = sorted({row.session for row in rows})
        if cfg.data.test_groups:
            known = sessions if cfg.data.split_by == "session" else [f"{r.session}/{r.experiment}" for r in rows]
            unknown = [group for group in cfg.data.test_groups if group not in known]
            if unknown:
                raise DataError(f"data.test_groups names {unknown}, not in {cfg.data.root} (it has {known})")
        return [
            f"data.root: {cfg.data.root}",
            f"{len(rows)} prepared experiments in {len(sessions)} sessions, {sum(r.tokens for r in rows)} tokens",
        ]

    def prepare(self, cfg: UltrasoundConfig, input_dir: Path | None, output_dir: Path) -> Path:
        if input_dir is None:
            raise UsageError("medtrain prepare ultrasound-ae needs --input RAW_FOLDER (raw/<session>/<experiment>/)")
        prepare_dataset(input_dir, output_dir, cfg.data)
        return output_dir

    def generate_synthetic(self, output: Path, *, seed: int) -> SyntheticData:
        raw = output / "raw"
        folders = generate_raw_dataset(raw, sessions=6, experiments_per_session=2, pulses=700, seed=seed)
        return SyntheticData(root=raw, predict_input=sorted(folders)[-1])
