"""The exported model folder (``model/``): ``model.safetensors`` + ``model.json`` (+ ``model.onnx``).

``model.json`` is everything prediction needs besides the weights: the recipe, the resolved config, the
task's ``model_spec()`` (normalisation statistics, class names...), and the inputs/outputs of the network. No
pickle: weights are safetensors, the rest is JSON.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from medtrain import __version__
from medtrain.config import config_hash, config_to_dict
from medtrain.engine.export import export_onnx, save_safetensors
from medtrain.engine.task import TaskModule
from medtrain.errors import CheckpointError
from medtrain.io.atomic import atomic_write_bytes, atomic_write_json

MODEL_FORMAT = "medtrain-model/1"
MANIFEST = "model.json"
WEIGHTS = "model.safetensors"
ONNX = "model.onnx"


def write_model_dir(task: TaskModule, out: Path, *, onnx: bool = False, source: Path | None = None) -> dict[str, Path]:
    """Write ``task.export_module()`` to ``out`` as safetensors + model.json (+ ONNX checked against torch).

    Returns the written files by kind (``weights``, ``manifest``, ``onnx``).
    """
    out.mkdir(parents=True, exist_ok=True)
    module = task.export_module().cpu().eval()
    examples = tuple(example.cpu() for example in task.example_inputs())
    written = {"weights": save_safetensors(module, out / WEIGHTS, metadata={"recipe": task.cfg.recipe})}
    if onnx:
        written["onnx"] = export_onnx(
            module,
            examples,
            out / ONNX,
            input_names=list(task.input_names),
            output_names=list(task.output_names),
        )
    manifest: dict[str, Any] = {
        "format": MODEL_FORMAT,
        "recipe": task.cfg.recipe,
        "medtrain_version": __version__,
        "config": config_to_dict(task.cfg),
        "config_hash": config_hash(task.cfg),
        "inputs": [
            {"name": name, "shape": list(example.shape), "dtype": str(example.dtype).removeprefix("torch.")}
            for name, example in zip(task.input_names, examples, strict=True)
        ],
        "outputs": list(task.output_names),
        "spec": task.model_spec(),
        "source_checkpoint": str(source) if source else None,
        "files": {kind: path.name for kind, path in written.items()},
    }
    written["manifest"] = atomic_write_json(out / MANIFEST, manifest)
    return written


def reexport_model_dir(model: torch.nn.Module, model_dir: Path, out: Path, *, onnx: bool) -> dict[str, Path]:
    """Copy an exported ``model_dir`` to ``out`` and add ONNX of ``model`` (its network, already loaded from
    ``model_dir``) checked against torch; needs neither the checkpoint nor the training data."""
    manifest = read_manifest(model_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = {"weights": atomic_write_bytes(out / WEIGHTS, (model_dir / WEIGHTS).read_bytes())}
    if onnx:
        written["onnx"] = export_onnx(
            model.cpu().eval(),
            example_inputs_of(manifest),
            out / ONNX,
            input_names=[spec["name"] for spec in manifest["inputs"]],
            output_names=list(manifest["outputs"]),
        )
    manifest["files"] = {kind: path.name for kind, path in written.items()}
    written["manifest"] = atomic_write_json(out / MANIFEST, manifest)
    return written


def resolve_model_dir(path: Path) -> Path:
    """``path`` itself when it holds model.json, else ``path/model`` (a run directory); CheckpointError if neither."""
    for candidate in (path, path / "model"):
        if (candidate / MANIFEST).is_file():
            return candidate
    raise CheckpointError(f"no exported model at {path}: expected {MANIFEST} there or in {path / 'model'}")


def read_manifest(model_dir: Path) -> dict[str, Any]:
    """The parsed ``model.json`` of ``model_dir``; CheckpointError when missing, malformed or of another format."""
    path = model_dir / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise CheckpointError(f"model manifest not found: {path}") from exc
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"model manifest {path} is not valid JSON: {exc}") from exc
    if manifest.get("format") != MODEL_FORMAT:
        raise CheckpointError(f"{path}: format {manifest.get('format')!r}, expected {MODEL_FORMAT!r}")
    return manifest


def example_inputs_of(manifest: dict[str, Any]) -> tuple[torch.Tensor, ...]:
    """Tensors with the shapes and dtypes ``model.json`` records (batch size 1): seeded standard normal values for
    floating-point inputs (a constant input would make normalisation layers divide rounding noise by
    ``sqrt(eps)``, so an ONNX check would compare amplified noise), zeros for integer inputs."""
    generator = torch.Generator().manual_seed(0)
    tensors = []
    for spec in manifest["inputs"]:
        dtype = getattr(torch, spec["dtype"])
        if dtype.is_floating_point:
            tensors.append(torch.randn(spec["shape"], generator=generator).to(dtype))
        else:
            tensors.append(torch.zeros(spec["shape"], dtype=dtype))
    return tuple(tensors)
