"""Predictor of volume-seg: whole volumes → per-target label maps (or probabilities / values) by sliding windows.

Input: one volume file (``.zarr``, ``.tif``, ``.nii(.gz)``), a folder of volume files, or a dataset folder (its
``images/``). Each volume is normalised with the training statistics, predicted chunk by chunk
(:func:`~medtrain.nn.sliding_window.sliding_window_inference_chunked`: Gaussian-weighted windows, the
configured overlap and test-time mirroring, batched on the device) and written as

* ``<output>/<volume>_<target>.<ext>`` — labels (``uint8``): ``argmax`` for softmax targets, ``p > 0.5`` per
  channel for sigmoid targets; the values themselves for regression targets (``float32``);
* ``<output>/<volume>_<target>_probabilities.<ext>`` — with ``save_probabilities``: ``float32`` ``[C, *spatial]``;

(an output with one channel has no channel axis; 2-D NIfTI with channels is written with one z slice)

in the requested format with the input's spacing (a NIfTI input's affine is kept for NIfTI output). Chunks go to
a partial zarr store under ``<output>/.partial/<volume>/`` (which becomes the output itself for zarr) with a
``progress.json`` of the finished chunks, so an interrupted prediction of a very large volume resumes where it
stopped (same model, input and options); the final files appear only when a volume is complete.
``predictions.json`` lists what was written.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from medtrain.engine.predictor import Predictor
from medtrain.errors import DataError, UsageError
from medtrain.io.atomic import atomic_write_bytes, atomic_write_json
from medtrain.io.fingerprint import cache_key, fingerprint_path
from medtrain.io.volumes import open_volume, supported_suffix, volume_stem, write_volume
from medtrain.nn.sliding_window import default_chunk_size, sliding_window_inference_chunked
from medtrain.recipes.volume_seg.normalization import normalize
from medtrain.recipes.volume_seg.task import activate, build_network

log = logging.getLogger("medtrain")

EXTENSIONS = {"zarr": ".zarr", "tif": ".tif", "nifti": ".nii.gz"}
PARTIAL = ".partial"


def list_volumes(input_path: Path) -> list[Path]:
    """The volumes to predict: ``input_path`` itself when it is a volume, else the volumes in the folder (or in its
    ``images/`` sub-folder), sorted. Raises :class:`DataError` when there is none."""
    input_path = Path(input_path)
    if supported_suffix(input_path) is not None and input_path.exists():
        return [input_path]
    if not input_path.is_dir():
        raise DataError(f"predict input not found or not a volume: {input_path} (expected .zarr, .tif, .nii(.gz))")
    folder = input_path / "images" if (input_path / "images").is_dir() else input_path
    volumes = sorted(path for path in folder.iterdir() if supported_suffix(path) is not None)
    if not volumes:
        raise DataError(f"predict input {folder}: no volumes (.zarr, .tif, .nii, .nii.gz) in this folder")
    return volumes


def _ints(key: str, value: Any) -> list[int]:
    items = value.split(",") if isinstance(value, str) else list(value)
    try:
        return [int(item) for item in items if str(item).strip() != ""]
    except ValueError:
        raise UsageError(f"--{key.replace('_', '-')} {value!r}: expected integers separated by commas") from None


def parse_option(key: str, value: Any) -> Any:
    """A prediction option from the command line (a string) or Python, checked and typed; UsageError names the
    option and what it takes."""
    if key == "overlap":
        try:
            overlap = float(value)
        except ValueError:
            overlap = -1.0
        if not 0 <= overlap < 1:
            raise UsageError(f"--overlap {value!r}: expected a number in [0, 1)")
        return overlap
    if key == "output_format":
        if value not in EXTENSIONS:
            raise UsageError(f"--output-format {value!r}: expected one of {', '.join(EXTENSIONS)}")
        return value
    if key == "save_probabilities":
        return value in (True, "true", "1", "yes")
    if key in ("mirror_axes", "chunk_size"):
        return _ints(key, value)
    if key == "batch_size":
        (size,) = _ints(key, [value])
        if size < 1:
            raise UsageError(f"--window-batch-size {value!r}: expected a positive integer")
        return size
    raise UsageError(f"unknown prediction option {key!r}")


class VolumeSegPredictor(Predictor):
    """The exported U-Net of a trained volume-seg model applied to whole volumes."""

    def build_model(self, manifest: dict[str, Any]) -> nn.Module:
        return build_network(manifest["spec"], deep_supervision=False)

    def predict_path(self, input_path: Path, output_path: Path, **options: Any) -> Path:
        """Predict every volume of ``input_path`` into the folder ``output_path``; returns ``predictions.json``.

        Options (default: the training config's ``inference`` section): ``overlap``, ``mirror_axes``,
        ``output_format`` (zarr | tif | nifti), ``save_probabilities``, ``chunk_size``, ``batch_size``.
        """
        given = {key: parse_option(key, value) for key, value in options.items() if value is not None}
        settings = {**self.spec.get("inference", {}), **given}
        output_path = Path(output_path)
        written: dict[str, list[str]] = {}
        for path in list_volumes(Path(input_path)):
            written[str(path)] = [str(p) for p in self.predict_volume(path, output_path, settings)]
        return atomic_write_json(output_path / "predictions.json", {"model": str(self.model_dir), "outputs": written})

    # -- one volume ------------------------------------------------------------------------------------
    def _geometry(self, path: Path) -> tuple[Any, tuple[int, ...], int]:
        spec = self.spec
        volume = open_volume(path)
        dims = int(spec["spatial_dims"])
        spatial = tuple(volume.spatial_shape)
        extra = len(spatial) - dims
        if extra < 0 or any(size != 1 for size in spatial[:extra]):
            raise DataError(f"{path}: a {len(spatial)}-D volume of shape {list(spatial)}; the model is {dims}-D")
        if volume.channels != int(spec["in_channels"]):
            raise DataError(f"{path}: {volume.channels} channel(s); the model expects {spec['in_channels']}")
        return volume, spatial[extra:], extra

    def predict_volume(self, path: Path, output: Path, settings: dict[str, Any]) -> list[Path]:
        """Predict one volume (resuming a partial prediction with the same key); returns the files written."""
        spec = self.spec
        volume, shape, extra = self._geometry(path)
        patch = tuple(int(p) for p in spec["patch_size"])
        chunk = tuple(settings.get("chunk_size") or default_chunk_size(shape, patch))
        stem = volume_stem(path)
        partial = output / PARTIAL / stem
        files = json.dumps(
            [fingerprint_path(path), fingerprint_path(self.model_dir / "model.safetensors")], sort_keys=True
        )
        key = cache_key(
            files,
            {k: settings.get(k) for k in ("overlap", "mirror_axes", "save_probabilities", "batch_size")}
            | {"chunk": list(chunk)},
        )
        progress = self._open_progress(partial, key)
        stores = self._open_stores(partial, shape, settings)
        normalization = spec["normalization"]

        def read_region(starts: tuple[int, ...], sizes: tuple[int, ...]) -> np.ndarray:
            data = volume.region([0] * extra + list(starts), [1] * extra + list(sizes))
            if not volume.has_channel_axis:
                data = data[None]
            data = data.reshape(data.shape[0], *data.shape[1 + extra :])
            return normalize(data.astype(np.float32), normalization["channels"], normalization["scheme"])

        def write_chunk(starts: tuple[int, ...], sizes: tuple[int, ...], logits: dict[str, np.ndarray]) -> None:
            box = tuple(slice(s, s + n) for s, n in zip(starts, sizes, strict=True))
            for name, values in logits.items():
                for suffix, array in self._outputs(name, torch.from_numpy(values), settings).items():
                    store = stores[f"{name}{suffix}"]
                    store[(slice(None), *box) if store.ndim > len(shape) else box] = array
            progress["done"].append(list(starts))
            atomic_write_json(partial / "progress.json", progress)

        finished = {tuple(s) for s in progress["done"]}
        computed = sliding_window_inference_chunked(
            self.model,
            read_region,
            shape,
            patch,
            chunk_size=chunk,
            write_chunk=write_chunk,
            done=lambda starts: tuple(starts) in finished,
            overlap=float(settings.get("overlap", 0.5)),
            batch_size=int(settings.get("batch_size", 4)),
            mirror_axes=tuple(settings.get("mirror_axes") or ()),
            device=self.device,
            weighting="gaussian" if settings.get("gaussian", True) else "constant",
            out_channels={name: int(t["out_channels"]) for name, t in spec["targets"].items()},
        )
        log.info("%s: %d chunk(s) predicted, %d resumed", path, computed, len(finished))
        written = self._finalise(path, volume, stores, partial, output, stem, settings)
        shutil.rmtree(partial)
        return written

    def _outputs(self, name: str, logits: torch.Tensor, settings: dict[str, Any]) -> dict[str, np.ndarray]:
        """``{"": labels or values, "_probabilities": probabilities}`` of one target's chunk of logits."""
        target = self.spec["targets"][name]
        activation = target["activation"]
        probabilities = activate(logits[None], activation)[0]
        if activation == "softmax":
            result = {"": probabilities.argmax(dim=0, keepdim=True).to(torch.uint8)}
        elif activation == "sigmoid":
            result = {"": (probabilities > 0.5).to(torch.uint8)}
        else:
            result = {"": probabilities.float()}
        if settings.get("save_probabilities") and activation != "none":
            result["_probabilities"] = probabilities.float()
        return {key: (value[0] if value.shape[0] == 1 else value).numpy() for key, value in result.items()}

    def _open_progress(self, partial: Path, key: str) -> dict[str, Any]:
        progress_file = partial / "progress.json"
        if progress_file.is_file():
            progress = json.loads(progress_file.read_text())
            if progress.get("key") == key:
                return progress
            log.info("discarding a partial prediction made with another model, input or options: %s", partial)
        if partial.exists():
            shutil.rmtree(partial)
        partial.mkdir(parents=True)
        return {"key": key, "done": []}

    def _open_stores(self, partial: Path, shape: tuple[int, ...], settings: dict[str, Any]) -> dict[str, Any]:
        import zarr

        stores = {}
        for name, target in self.spec["targets"].items():
            channels = int(target["out_channels"])
            single = 1 if target["activation"] == "softmax" else channels
            layouts = {"": (single, np.uint8 if target["activation"] != "none" else np.float32)}
            if settings.get("save_probabilities") and target["activation"] != "none":
                layouts["_probabilities"] = (channels, np.float32)
            for suffix, (count, dtype) in layouts.items():
                full = shape if count == 1 else (count, *shape)  # one channel: no channel axis
                store_path = partial / f"{name}{suffix}.zarr"
                if store_path.exists():
                    stores[f"{name}{suffix}"] = zarr.open_array(str(store_path), mode="r+")
                else:
                    chunks = tuple(min(64, s) for s in full)
                    stores[f"{name}{suffix}"] = zarr.create_array(
                        store=str(store_path), shape=full, dtype=dtype, chunks=chunks, fill_value=0
                    )
        return stores

    def _finalise(
        self,
        path: Path,
        volume: Any,
        stores: dict[str, Any],
        partial: Path,
        output: Path,
        stem: str,
        settings: dict[str, Any],
    ) -> list[Path]:
        fmt = settings.get("output_format", "zarr")
        dims = int(self.spec["spatial_dims"])
        spacing = tuple(volume.spacing[-dims:]) if volume.spacing is not None else tuple(self.spec["spacing"])
        written = []
        for key, store in stores.items():
            target = output / f"{stem}_{key}{EXTENSIONS[fmt]}"
            if fmt == "zarr":  # the partial store becomes the output: never loaded whole
                store.attrs.update({"axes": prediction_axes(dims, store.ndim), "spacing": list(spacing)})
                if target.exists():
                    shutil.rmtree(target)
                os.replace(partial / f"{key}.zarr", target)
                written.append(target)
                continue
            reference = path if fmt == "nifti" and supported_suffix(path) == "nii" else None
            written.append(write_prediction(target, np.asarray(store[...]), spacing, reference=reference))
        return written


def prediction_axes(spatial_dims: int, ndim: int) -> str:
    """medtrain's axis letters of a prediction array (a channel axis only when it has more than one channel)."""
    return {(2, 2): "yx", (2, 3): "cyx", (3, 3): "zyx", (3, 4): "czyx"}[(spatial_dims, ndim)]


def write_prediction(path: Path, array: np.ndarray, spacing: Sequence[float], *, reference: Path | None) -> Path:
    """Write one prediction; for NIfTI with a NIfTI ``reference`` the reference's affine is kept (the voxel grid
    and orientation of the input), else :func:`~medtrain.io.volumes.write_volume` with ``spacing``."""
    dims = len(spacing)
    if dims == 2 and array.ndim == 3 and supported_suffix(path) == "nii":  # NIfTI has no (c, y, x): one z slice
        array, spacing, dims = array[:, None], (1.0, *spacing), 3
    axes = prediction_axes(dims, array.ndim)
    if reference is None:
        return write_volume(path, array, spacing=spacing, axes=axes)
    import nibabel as nib

    source = nib.load(str(reference))
    channels_last = np.moveaxis(array, 0, -1) if array.ndim > dims else array
    data = channels_last.transpose(*reversed(range(dims)), *range(dims, channels_last.ndim))  # NIfTI is (x, y, z, c)
    image = nib.Nifti1Image(np.ascontiguousarray(data), source.affine)
    image.header.set_zooms(tuple(reversed(tuple(spacing))) + ((1.0,) if array.ndim > dims else ()))
    payload = image.to_bytes()
    return atomic_write_bytes(path, gzip.compress(payload) if path.name.endswith(".gz") else payload)
