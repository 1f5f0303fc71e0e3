"""Base class of every recipe's predictor: an exported ``model/`` folder in, predictions on files out."""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import torch
from torch import nn

from medtrain.engine.export import load_safetensors
from medtrain.engine.model_dir import WEIGHTS, read_manifest, resolve_model_dir


class Predictor(ABC):
    """Loads ``model.json`` + ``model.safetensors`` into the network :meth:`build_model` returns.

    Subclasses implement :meth:`build_model` (network from the manifest) and :meth:`predict_path`
    (read an input file or folder, write predictions).
    """

    def __init__(self, model_dir: Path, *, device: str | torch.device = "cpu") -> None:
        self.model_dir = resolve_model_dir(Path(model_dir))
        self.manifest = read_manifest(self.model_dir)
        self.device = torch.device(device)
        model = self.build_model(self.manifest)
        load_safetensors(model, self.model_dir / WEIGHTS)
        self.model = model.to(self.device).eval()

    @property
    def spec(self) -> dict[str, Any]:
        """The task's ``model_spec()`` saved at export time."""
        return self.manifest.get("spec", {})

    @abstractmethod
    def build_model(self, manifest: dict[str, Any]) -> nn.Module:
        """The (untrained) inference network described by ``manifest``."""

    @abstractmethod
    def predict_path(self, input_path: Path, output_path: Path, **options: Any) -> Path:
        """Predict on ``input_path`` (file or folder) and write the result to ``output_path``; return it."""
