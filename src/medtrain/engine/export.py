"""Model export: weights as safetensors, inference graphs as ONNX checked against torch with onnxruntime.

Both writers are atomic: a reader sees the previous complete file or the new complete file, never a partial
one. No pickle is involved anywhere (safetensors stores raw tensors plus string metadata).

ONNX export uses the ``torch.export``-based exporter (``dynamo=True``) with a dynamic batch axis named
``batch``, and falls back to the TorchScript exporter (``dynamo=False``) when that raises; the exporter used
is logged at INFO level on this module's logger.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
import onnxruntime
import safetensors
import safetensors.torch
import torch

from medtrain.errors import CheckpointError
from medtrain.io.atomic import atomic_write_bytes

log = logging.getLogger(__name__)

BATCH_AXIS = "batch"

_EXPORT_NOISE = (
    (FutureWarning, r"`isinstance\(treespec, LeafSpec\)` is deprecated"),
    (UserWarning, r"# The axis name: .* will not be used"),
    (DeprecationWarning, r"You are using the legacy TorchScript-based ONNX export"),
    (DeprecationWarning, r"The feature will be removed"),
)
_NOISY_LOGGER = "torch.onnx._internal.exporter._registration"  # "torchvision is not installed" per export


def save_safetensors(module: torch.nn.Module, path: Path, metadata: Mapping[str, str] | None = None) -> Path:
    """Write ``module.state_dict()`` to ``path`` as safetensors, atomically, and return the path.

    Tensors are detached, moved to CPU and made contiguous; tensors sharing memory (tied weights) are copied
    so that each name gets its own entry, and loading into the same architecture re-fills both ties.
    ``metadata`` keys and values must be strings (``TypeError`` otherwise).
    """
    meta = dict(metadata or {})
    for key, value in meta.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise TypeError(f"safetensors metadata must map str to str, got {key!r}: {value!r}")
    tensors = {name: tensor.detach().cpu().contiguous() for name, tensor in module.state_dict().items()}
    storages = [tensor.untyped_storage().data_ptr() for tensor in tensors.values()]
    shared = {ptr for ptr in storages if storages.count(ptr) > 1}
    tensors = {
        name: tensor.clone() if tensor.untyped_storage().data_ptr() in shared else tensor
        for name, tensor in tensors.items()
    }
    return atomic_write_bytes(Path(path), safetensors.torch.save(tensors, metadata=meta or None))


def load_safetensors(module: torch.nn.Module, path: Path, *, strict: bool = True) -> dict[str, str]:
    """Load a :func:`save_safetensors` file into ``module`` and return the file's metadata.

    Raises :class:`CheckpointError` if the file is missing or not valid safetensors, if a tensor's shape
    differs from the module's, or (with ``strict``) if keys are missing or unexpected, naming those keys.
    With ``strict=False`` missing keys keep their current values and unexpected keys are ignored.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"weights file not found: {path}")
    try:
        with safetensors.safe_open(str(path), framework="pt", device="cpu") as handle:
            metadata = dict(handle.metadata() or {})
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118
    except (safetensors.SafetensorError, OSError) as error:
        raise CheckpointError(f"cannot read safetensors file {path}: {error}") from error
    expected = module.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if strict and (missing or unexpected):
        raise CheckpointError(
            f"weights in {path} do not match the model: missing keys {_names(missing)}, "
            f"unexpected keys {_names(unexpected)}"
        )
    mismatched = [
        f"{name} {tuple(tensors[name].shape)} vs model {tuple(expected[name].shape)}"
        for name in sorted(set(expected) & set(tensors))
        if tensors[name].shape != expected[name].shape
    ]
    if mismatched:
        raise CheckpointError(f"weights in {path} have other shapes than the model: {_names(mismatched)}")
    module.load_state_dict({name: tensors[name] for name in expected if name in tensors}, strict=strict)
    return metadata


def export_onnx(
    module: torch.nn.Module,
    example_inputs: tuple[torch.Tensor, ...],
    path: Path,
    *,
    input_names: Sequence[str],
    output_names: Sequence[str],
    dynamic_batch: bool = True,
    opset: int | None = None,
    check: bool = True,
    rtol: float = 1e-3,
    atol: float = 1e-4,
) -> Path:
    """Export ``module`` to ONNX at ``path`` (atomically) and return the path.

    The module runs in eval mode on CPU during export; its modes and device are restored afterwards.
    ``example_inputs`` are positional tensors whose first axis is the batch, named ``batch`` and dynamic
    when ``dynamic_batch``. The module may return a tensor, a tuple/list of tensors (named positionally by
    ``output_names``) or a mapping (the entries named by ``output_names``, in that order). Models under
    2 GB are written as a single file. With ``check``, onnxruntime runs the file on the example inputs and,
    when the batch is dynamic, on a batch of another size (2 if the example batch is 1, else 1); outputs
    must match torch within ``rtol``/``atol`` or ``RuntimeError`` reports the largest absolute difference,
    and nothing is written. Raises ``ValueError`` for inconsistent names or batch sizes.
    """
    path = Path(path)
    inputs = tuple(tensor.detach().cpu() for tensor in example_inputs)
    _check_signature(inputs, input_names, output_names, dynamic_batch)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _eval_on_cpu(module), torch.no_grad():
        flat = _FlatOutputs(module, output_names).eval()
        flat(*inputs)  # fails fast, before exporting, when the outputs do not match output_names
        tmp_dir = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
        try:
            tmp_model = tmp_dir / path.name
            exporter = _export(flat, inputs, tmp_model, input_names, output_names, dynamic_batch, opset)
            if check:
                batches = [inputs, _other_batch(inputs)] if dynamic_batch else [inputs]
                _compare_with_onnxruntime(tmp_model, flat, batches, input_names, output_names, rtol, atol)
            _publish(tmp_dir, path)
        finally:
            shutil.rmtree(tmp_dir, ignore_errors=True)
    log.info("exported ONNX model %s with the %s exporter", path, exporter)
    return path


class _FlatOutputs(torch.nn.Module):
    """Wrap a module so that it returns a tuple of tensors in ``output_names`` order."""

    def __init__(self, module: torch.nn.Module, output_names: Sequence[str]) -> None:
        super().__init__()
        self.module = module
        self.output_names = tuple(output_names)

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        outputs = self.module(*inputs)
        if isinstance(outputs, torch.Tensor):
            outputs = (outputs,)
        elif isinstance(outputs, Mapping):
            absent = [name for name in self.output_names if name not in outputs]
            if absent:
                raise ValueError(f"model outputs have no {absent}; they have {sorted(outputs)}")
            outputs = tuple(outputs[name] for name in self.output_names)
        outputs = tuple(outputs)
        if len(outputs) != len(self.output_names):
            raise ValueError(f"model returns {len(outputs)} outputs but output_names has {self.output_names}")
        return outputs


def _check_signature(
    inputs: tuple[torch.Tensor, ...], input_names: Sequence[str], output_names: Sequence[str], dynamic: bool
) -> None:
    """Raise ``ValueError`` unless names match the inputs and, for a dynamic batch, all batch sizes agree."""
    if not inputs or len(input_names) != len(inputs):
        raise ValueError(f"{len(inputs)} example inputs but input_names is {list(input_names)}")
    if not output_names or len(set(input_names) | set(output_names)) != len(input_names) + len(output_names):
        raise ValueError(f"input and output names must be unique and non-empty: {input_names}, {output_names}")
    if dynamic and (min(t.dim() for t in inputs) == 0 or len({t.shape[0] for t in inputs}) != 1):
        shapes = [tuple(tensor.shape) for tensor in inputs]
        raise ValueError(f"a dynamic batch needs inputs with one common first axis, got shapes {shapes}")


@contextlib.contextmanager
def _eval_on_cpu(module: torch.nn.Module) -> Iterator[None]:
    """Put ``module`` in eval mode on CPU; restore each submodule's mode and the device on exit."""
    devices = {tensor.device for tensor in [*module.parameters(), *module.buffers()]}
    if len(devices) > 1:
        raise ValueError(f"cannot export a module spread over several devices: {sorted(map(str, devices))}")
    modes = {submodule: submodule.training for submodule in module.modules()}
    module.cpu().eval()
    try:
        yield
    finally:
        for submodule, training in modes.items():
            submodule.train(training)
        if devices:
            module.to(devices.pop())


def _export(
    module: torch.nn.Module,
    inputs: tuple[torch.Tensor, ...],
    target: Path,
    input_names: Sequence[str],
    output_names: Sequence[str],
    dynamic_batch: bool,
    opset: int | None,
) -> str:
    """Export to ``target`` with the dynamo exporter, else the TorchScript one; return which one was used."""
    names = {"input_names": list(input_names), "output_names": list(output_names), "opset_version": opset}
    with _quiet_exporter():
        try:
            batch = torch.export.Dim(BATCH_AXIS)
            shapes = (tuple({0: batch} for _ in inputs),) if dynamic_batch else None
            program = torch.onnx.export(module, inputs, dynamo=True, dynamic_shapes=shapes, verbose=False, **names)
            program.save(target)
            return "dynamo"
        except Exception as error:
            cause = error
            while cause.__cause__ is not None:  # the exporter wraps the torch.export error
                cause = cause.__cause__
            log.warning(
                "dynamo ONNX export failed (%s: %s); using the TorchScript exporter",
                type(cause).__name__,
                next(iter(str(cause).strip().splitlines()), ""),
            )
            log.debug("dynamo ONNX export failure", exc_info=True)
            for leftover in target.parent.iterdir():  # whatever the failed export wrote
                if leftover.is_dir():
                    shutil.rmtree(leftover)
                else:
                    leftover.unlink()
        axes = {name: {0: BATCH_AXIS} for name in [*input_names, *output_names]} if dynamic_batch else None
        torch.onnx.export(module, inputs, str(target), dynamo=False, dynamic_axes=axes, verbose=False, **names)
        return "torchscript"


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Silence the exporters' known harmless warnings (see ``_EXPORT_NOISE``) for the duration of a block."""
    noisy = logging.getLogger(_NOISY_LOGGER)
    level = noisy.level
    noisy.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            for category, message in _EXPORT_NOISE:
                warnings.filterwarnings("ignore", message=message, category=category)
            yield
    finally:
        noisy.setLevel(level)


def _other_batch(inputs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    """Return inputs of another batch size: the example and a rolled copy for one sample, else one sample."""
    if inputs[0].shape[0] == 1:
        return tuple(torch.cat([tensor, tensor.roll(1, dims=-1)]) for tensor in inputs)
    return tuple(tensor[:1] for tensor in inputs)


def _compare_with_onnxruntime(
    model_path: Path,
    module: torch.nn.Module,
    batches: Sequence[tuple[torch.Tensor, ...]],
    input_names: Sequence[str],
    output_names: Sequence[str],
    rtol: float,
    atol: float,
) -> None:
    """Run the ONNX file with onnxruntime on each batch; raise ``RuntimeError`` unless it matches torch."""
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
    for batch in batches:
        expected = [tensor.numpy() for tensor in module(*batch)]
        feeds = {name: tensor.numpy() for name, tensor in zip(input_names, batch, strict=True)}
        actual = session.run(list(output_names), feeds)
        for name, want, got in zip(output_names, expected, actual, strict=True):
            size = batch[0].shape[0]
            if want.shape != got.shape:
                raise RuntimeError(f"ONNX output {name!r} has shape {got.shape}, torch {want.shape} (batch {size})")
            if not np.allclose(got, want, rtol=rtol, atol=atol, equal_nan=True):
                diff = np.nanmax(np.abs(got.astype(np.float64) - want.astype(np.float64)))
                raise RuntimeError(
                    f"ONNX output {name!r} differs from torch at batch size {size}: "
                    f"max abs diff {diff:.3g} (rtol={rtol}, atol={atol})"
                )


def _publish(tmp_dir: Path, target: Path) -> None:
    """Move the exported files from ``tmp_dir`` next to ``target``, the model file last, each durably."""
    files = sorted(tmp_dir.iterdir(), key=lambda file: file.name == target.name)
    for file in files:
        with file.open("rb") as handle:
            os.fsync(handle.fileno())
        os.replace(file, target.parent / file.name)


def _names(items: Sequence[str], limit: int = 10) -> str:
    """Format up to ``limit`` names as a readable list, with the count of the rest."""
    if not items:
        return "(none)"
    shown = ", ".join(items[:limit])
    return f"[{shown}{f', ... {len(items) - limit} more' if len(items) > limit else ''}]"
