"""Predictor of cardiac-guidance: 6-DOF guidance actions for one frame or a folder of frames → JSON.

Frames are read as the training frames were (gray, bilinear resize to the model's ``image_size``, scaled to
[0, 1]); the exported network returns actions already de-normalised with the training statistics. The output
``<output>/guidance.json`` is::

    {"model": ..., "dof_names": [...], "dof_units": [...],
     "predictions": [{"image": "frame_001.png", "action_6dof": [x, y, z, roll, pitch, yaw],
                      "action": {"x": ..., ...}}, ...]}
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from medtrain.engine.predictor import Predictor
from medtrain.errors import DataError
from medtrain.io.atomic import atomic_write_json
from medtrain.io.images import read_grayscale
from medtrain.recipes.cardiac_guidance.task import build_guidance_net

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
BATCH = 64
OUTPUT_FILE = "guidance.json"


def list_frames(input_path: Path) -> list[Path]:
    """``input_path`` itself when it is an image file, else the image files directly inside the folder (sorted).

    Raises :class:`DataError` when the path does not exist, is not an image, or the folder holds no image.
    """
    if input_path.is_file():
        if input_path.suffix.lower() not in IMAGE_SUFFIXES:
            raise DataError(f"predict input {input_path}: expected an image ({', '.join(IMAGE_SUFFIXES)}) or a folder")
        return [input_path]
    if not input_path.is_dir():
        raise DataError(f"predict input not found: {input_path}")
    frames = sorted(path for path in input_path.iterdir() if path.suffix.lower() in IMAGE_SUFFIXES)
    if not frames:
        raise DataError(f"predict input {input_path}: no image files ({', '.join(IMAGE_SUFFIXES)}) in this folder")
    return frames


class CardiacGuidancePredictor(Predictor):
    """The exported guidance network of a trained cardiac-guidance model, applied to frames."""

    def build_model(self, manifest: dict[str, Any]) -> nn.Module:
        return build_guidance_net(manifest["spec"])

    def predict_frames(self, frames: list[Path]) -> np.ndarray:
        """Actions ``[N, 6]`` in mm / degrees for the image files ``frames``."""
        size = int(self.spec["image_size"])
        outputs = []
        for start in range(0, len(frames), BATCH):
            batch = np.stack([read_grayscale(path, size=(size, size)) for path in frames[start : start + BATCH]])
            images = torch.from_numpy(batch)[:, None].float().div_(255.0).to(self.device)
            with torch.no_grad():
                outputs.append(self.model(images).cpu().numpy())
        return np.concatenate(outputs) if outputs else np.zeros((0, len(self.spec["dof_names"])), np.float32)

    def predict_path(self, input_path: Path, output_path: Path, **options: Any) -> Path:
        input_path = Path(input_path)
        frames = list_frames(input_path)
        actions = self.predict_frames(frames)
        names = self.spec["dof_names"]
        base = input_path if input_path.is_dir() else input_path.parent
        predictions = [
            {
                "image": path.relative_to(base).as_posix(),
                "action_6dof": [round(float(v), 6) for v in action],
                "action": {name: round(float(v), 6) for name, v in zip(names, action, strict=True)},
            }
            for path, action in zip(frames, actions, strict=True)
        ]
        return atomic_write_json(
            Path(output_path) / OUTPUT_FILE,
            {
                "model": str(self.model_dir),
                "dof_names": names,
                "dof_units": self.spec["dof_units"],
                "predictions": predictions,
            },
        )
