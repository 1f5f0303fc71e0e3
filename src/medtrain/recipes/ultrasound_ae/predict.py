"""Predictor of ultrasound-ae: embeddings of every token of a raw experiment folder or a prepared ``.h5`` file.

Writes ``<output>/embeddings.npy`` (``[N, E]`` float32) and ``<output>/embeddings.h5`` (``embeddings``,
``pulse_index`` = first pulse of each token, ``timestamps`` in seconds at the token centre, ``labels`` and
``joystick`` when known). Raw input goes through the exact signal chain and tokenisation the model was trained with,
then the training-split normalisation stored in ``model.json``.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from medtrain.engine.predictor import Predictor
from medtrain.errors import DataError
from medtrain.io.atomic import atomic_write_bytes
from medtrain.io.hdf5 import h5_attrs, read_h5, write_h5
from medtrain.recipes.ultrasound_ae.prepare import process_experiment, processing_params
from medtrain.recipes.ultrasound_ae.raw import read_experiment
from medtrain.recipes.ultrasound_ae.schema import SignalConfig, TokenConfig
from medtrain.recipes.ultrasound_ae.signal import ChannelStats, normalize
from medtrain.recipes.ultrasound_ae.task import build_autoencoder

BATCH = 512


class UltrasoundPredictor(Predictor):
    """Encoder of a trained ultrasound-ae model (``model/``), applied to raw or prepared experiments."""

    def build_model(self, manifest: dict[str, Any]) -> nn.Module:
        return build_autoencoder(manifest["spec"]).encoder_module()

    def _tokens(self, input_path: Path) -> dict[str, np.ndarray]:
        signal, tokens = SignalConfig(**self.spec["signal"]), TokenConfig(**self.spec["tokens"])
        if input_path.is_dir():
            return process_experiment(read_experiment(input_path), signal, tokens)
        if input_path.suffix != ".h5":
            raise DataError(f"predict input {input_path}: expected a raw experiment folder or a prepared .h5 file")
        if h5_attrs(input_path).get("params") != processing_params(signal, tokens):
            raise DataError(f"{input_path} was prepared with other parameters than this model was trained with")
        return read_h5(input_path, ["tokens", "labels", "joystick", "pulse_index", "timestamps"])

    def embed(self, tokens: np.ndarray) -> np.ndarray:
        """Embeddings ``[N, E]`` of un-normalised tokens ``[N, C, D, P]``."""
        expected = (self.spec["channels"], self.spec["depth"], self.spec["pulses"])
        if tokens.shape[1:] != expected:
            raise DataError(f"tokens of shape {tokens.shape[1:]} do not fit this model (expected {expected})")
        stats = ChannelStats.from_dict(self.spec["channel_stats"])
        normalised = normalize(tokens.transpose(1, 0, 2, 3), stats, mode=self.spec["normalization"])
        normalised = np.ascontiguousarray(normalised.transpose(1, 0, 2, 3), dtype=np.float32)
        with torch.no_grad():
            chunks = [
                self.model(torch.from_numpy(normalised[start : start + BATCH]).to(self.device)).cpu()
                for start in range(0, len(normalised), BATCH)
            ]
        return torch.cat(chunks).numpy() if chunks else np.zeros((0, self.spec["embedding_dim"]), np.float32)

    def predict_path(self, input_path: Path, output_path: Path, **options: Any) -> Path:
        arrays = self._tokens(Path(input_path))
        embeddings = self.embed(arrays["tokens"].astype(np.float32))
        buffer = io.BytesIO()
        np.save(buffer, embeddings)
        atomic_write_bytes(output_path / "embeddings.npy", buffer.getvalue())
        written = {"embeddings": embeddings, **{k: v for k, v in arrays.items() if k != "tokens"}}
        write_h5(output_path / "embeddings.h5", written, attrs={"source": str(input_path)})
        return output_path
