"""A tiny regression recipe used only by the tests: proves the engine, CLI and API without a real recipe.

Data: ``<root>/table.npz`` with ``x [N, F]``, ``y [N]`` and ``groups [N]`` (patients); the split is by group.
Model: MLP with dropout (so resuming must restore RNG state to be bit-exact). ``model.step_sleep`` slows
training steps down for the interruption tests.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset, TensorDataset

from medtrain.config.schema import DataConfig, ModelConfig, RunConfig
from medtrain.engine.datamodule import MedtrainDataModule, Split
from medtrain.engine.predictor import Predictor
from medtrain.engine.task import TaskModule
from medtrain.errors import DataError
from medtrain.io.splits import split_groups
from medtrain.registry import FlagAlias, Recipe, SyntheticData


class ToyData(DataConfig):
    features: int = 8


class ToyModel(ModelConfig):
    hidden: int = 16
    dropout: float = 0.1
    step_sleep: float = 0.0


class ToyConfig(RunConfig):
    recipe: str = "toy"
    data: ToyData = ToyData()
    model: ToyModel = ToyModel()


def make_table(root: Path, *, samples: int = 256, features: int = 8, groups: int = 10, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(samples, features)).astype(np.float32)
    weights = rng.normal(size=features).astype(np.float32)
    y = (x @ weights + 0.1 * rng.normal(size=samples)).astype(np.float32)
    group_ids = np.array([f"p{i % groups:02d}" for i in range(samples)])
    root.mkdir(parents=True, exist_ok=True)
    np.savez(root / "table.npz", x=x, y=y, groups=group_ids)
    return root


def load_table(root: Path) -> dict[str, np.ndarray]:
    path = root / "table.npz"
    if not path.is_file():
        raise DataError(f"toy data not found: {path} (expected table.npz with x, y, groups)")
    with np.load(path, allow_pickle=False) as table:
        return {key: table[key] for key in ("x", "y", "groups")}


class ToyDataModule(MedtrainDataModule):
    def __init__(self, cfg: ToyConfig) -> None:
        super().__init__(cfg.data, seed=cfg.seed)
        self.cfg = cfg
        self.datasets: dict[str, TensorDataset] = {}

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        table = load_table(Path(self.cfg.data.root))
        self.split = split_groups(table["groups"].tolist(), seed=self.seed)
        for name in ("train", "val", "test"):
            mask = np.isin(table["groups"], getattr(self.split, name))
            self.datasets[name] = TensorDataset(torch.from_numpy(table["x"][mask]), torch.from_numpy(table["y"][mask]))

    def dataset(self, split: Split) -> Dataset:
        return self.datasets[split]

    def data_summary(self) -> dict[str, Any]:
        return {"split": self.split.as_dict(), "samples": {k: len(v) for k, v in self.datasets.items()}}


def build_mlp(features: int, hidden: int, dropout: float) -> nn.Module:
    return nn.Sequential(nn.Linear(features, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, 1))


class ToyTask(TaskModule):
    input_names = ("x",)
    output_names = ("y",)

    def __init__(self, cfg: ToyConfig, train_mean: float) -> None:
        super().__init__(cfg)
        self.net = build_mlp(cfg.data.features, cfg.model.hidden, cfg.model.dropout)
        self.register_buffer("train_mean", torch.tensor(train_mean))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(-1)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        if self.cfg.model.step_sleep:
            time.sleep(self.cfg.model.step_sleep)
        x, y = batch
        loss = nn.functional.mse_loss(self(x), y)
        self.log_train("train_loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        self.log("val_loss", nn.functional.mse_loss(self(x), y), prog_bar=True)

    def test_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        prediction = self(x)
        self.log("test_mse", nn.functional.mse_loss(prediction, y))
        self.log("test_baseline_mse", nn.functional.mse_loss(self.train_mean.expand_as(y), y))

    def export_module(self) -> nn.Module:
        return self.net

    def example_inputs(self) -> tuple[torch.Tensor, ...]:
        return (torch.zeros(1, self.cfg.data.features),)

    def model_spec(self) -> dict[str, Any]:
        return {"features": self.cfg.data.features, "hidden": self.cfg.model.hidden}


class ToyPredictor(Predictor):
    def build_model(self, manifest: dict[str, Any]) -> nn.Module:
        spec = manifest["spec"]
        return build_mlp(spec["features"], spec["hidden"], 0.0)

    def predict_path(self, input_path: Path, output_path: Path, **options: Any) -> Path:
        with np.load(input_path, allow_pickle=False) as table:
            x = torch.from_numpy(table["x"])
        with torch.no_grad():
            y = self.model(x).squeeze(-1).numpy()
        output_path.mkdir(parents=True, exist_ok=True)
        target = output_path / "predictions.npy"
        with open(target, "wb") as handle:
            np.save(handle, y)
        return target


class ToyRecipe(Recipe):
    name = "toy"
    summary = "test-only MLP regression on a table"
    config_class = ToyConfig
    flag_aliases = (
        FlagAlias(("-i", "--input-table"), "data.root", "folder with table.npz"),
        FlagAlias(("--wide",), "model.hidden", "hidden width"),
    )
    env_aliases: ClassVar[dict[str, str]] = {"TOY_EPOCHS": "trainer.max_epochs"}

    def build_datamodule(self, cfg: ToyConfig) -> ToyDataModule:
        return ToyDataModule(cfg)

    def build_task(self, cfg: ToyConfig, datamodule: ToyDataModule) -> ToyTask:
        train_y = datamodule.dataset("train").tensors[1]
        return ToyTask(cfg, float(train_y.mean()))

    def load_predictor(self, model_dir: Path) -> ToyPredictor:
        return ToyPredictor(model_dir)

    def generate_synthetic(self, output: Path, *, seed: int) -> SyntheticData:
        root = make_table(output, seed=seed)
        predict_input = output / "predict.npz"
        with np.load(root / "table.npz", allow_pickle=False) as table:
            x = table["x"][:5]
        np.savez(predict_input, x=x)
        return SyntheticData(root=root, predict_input=predict_input)


__all__ = ["ToyConfig", "ToyRecipe", "make_table"]
