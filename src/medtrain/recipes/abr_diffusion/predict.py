"""Predictor of abr-diffusion: clinical predictions and generated ABR waveforms from an exported ``model/`` folder.

Three uses, from Python (``medtrain.load_predictor(run)``) or ``medtrain predict``:

* :meth:`ABRPredictor.predict_single` (``--age --intensity --rate --fmp [--confidence]``): one waveform is generated
  for the condition by DDIM with batched classifier-free guidance (the model's configured steps, guidance and η;
  initial noise from the model's seed), then the clinical heads run on it at t = 0 (the clean-signal path they
  were trained on). With ``return_confidence``, ``K = confidence_samples`` waveforms are generated (the first is the
  one above, so the values do not change) and every output gets an interval:

  - ``model_variance`` (wave-V latency and amplitude): ``value ± z·σ``, σ from the heads' predicted log-variance,
    ``z = Φ⁻¹((1 + level) / 2)``;
  - ``guided_samples`` (every output: class probabilities, threshold, wave-V probability / latency / amplitude, and
    the waveform point by point): the ``(1 − level)/2`` and ``(1 + level)/2`` quantiles over the K samples.

* :meth:`ABRPredictor.predict_batch` (``--input-file x.npz|csv|parquet``, or ``--input``): conditions ``[N, 4]``
  (age, intensity dB, stimulus rate Hz, FMP), from an array or a table: npz with ``static [N, 4]``, CSV/Parquet with
  the columns ``age, intensity_db, stimulus_rate_hz, fmp``; optional ``signals [N, L]`` (``signal_0..`` columns)
  and ``patient_ids``. **When the input has recorded signals, the heads run on them** (classifying and measuring
  what was recorded); without signals they run on a waveform generated for each condition (as for a single
  prediction). An ABR training table is a valid input.
* :meth:`ABRPredictor.generate` (``--generate N``): N waveforms for conditions from a file (``--input-file``; its
  rows are cycled or cut to N) or sampled with replacement from the training conditions stored in the model
  (``condition_pool``), with the wave V detected on each.

``--format json`` (default) writes strict JSON (NaN → null); ``--format npz`` writes plain arrays (no pickle: strings
are unicode arrays; nested single-prediction keys are joined with dots). Files under ``--output``:
``prediction.*`` (single), ``predictions.*`` (batch), ``generated.*`` (generation), and ``generated_waveforms.png``
(generated waveforms with detected wave V; beside the recorded ones for a batch with signals).
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Mapping
from pathlib import Path
from statistics import NormalDist
from typing import Any

import numpy as np
import torch

from medtrain.engine.predictor import Predictor
from medtrain.errors import DataError, UsageError
from medtrain.io.atomic import atomic_write_bytes, atomic_write_text
from medtrain.io.tables import ArraySpec, read_table
from medtrain.nn.diffusion import CosineSchedule
from medtrain.recipes.abr_diffusion.data import TargetStats
from medtrain.recipes.abr_diffusion.metrics import detect_wave_v
from medtrain.recipes.abr_diffusion.model import ABROutput
from medtrain.recipes.abr_diffusion.plots import plot_waveforms
from medtrain.recipes.abr_diffusion.table import STATIC_NAMES, ABRTable, NormalizationStats, _refuse_pickle
from medtrain.recipes.abr_diffusion.task import (
    OUTPUT_NAMES,
    ABRExport,
    HeadPredictions,
    build_network,
    generate_normalized,
)

FORMATS = ("json", "npz")
CHUNK = 64
PLOT_FILE = "generated_waveforms.png"
PLOT_ROWS = 6
SINGLE_OPTIONS = {"age": "age", "intensity": "intensity_db", "rate": "stimulus_rate_hz", "fmp": "fmp"}


def validate_conditions(static: np.ndarray, where: str) -> np.ndarray:
    """``static`` as a float64 ``[N, 4]`` array (:data:`STATIC_NAMES`), or :class:`DataError` naming ``where`` and
    the parameter: every value finite, age, intensity and FMP ≥ 0, stimulus rate > 0."""
    values = np.asarray(static, dtype=np.float64)
    if values.ndim == 1:
        values = values[None, :]
    if values.ndim != 2 or values.shape[1] != len(STATIC_NAMES):
        raise DataError(f"{where}: conditions must be [N, {len(STATIC_NAMES)}] {STATIC_NAMES}, got {values.shape}")
    for k, name in enumerate(STATIC_NAMES):
        column = values[:, k]
        bad = ~np.isfinite(column) | ((column <= 0) if name == "stimulus_rate_hz" else (column < 0))
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            expected = "a finite number > 0" if name == "stimulus_rate_hz" else "a finite number >= 0"
            raise DataError(f"{where}: {name} must be {expected}, got {column[row]:g} (row {row})")
    return values


def read_conditions(path: Path, signal_length: int) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """``(static [N, 4], signals [N, L] µV or None, patient_ids [N] or None)`` from a predict input file (layout
    in the module docstring). Raises :class:`DataError` naming the file for a pickle, a missing array/column,
    signals of another length than ``signal_length``, non-finite signals and invalid conditions."""
    path = Path(path)
    _refuse_pickle(path)
    optional = {
        "signals": ArraySpec("float32", (None, signal_length), required=False),
        "patient_ids": ArraySpec("str", (None,), required=False),
    }
    if path.suffix.lower() == ".npz":
        arrays = read_table(path, arrays={"static": ArraySpec("float32", (None, len(STATIC_NAMES))), **optional})
        static = arrays["static"]
    else:
        columns = {name: ArraySpec("float32", (None,)) for name in STATIC_NAMES}
        arrays = read_table(path, arrays={**columns, **optional}, prefixed={"signals": ("signal_", signal_length)})
        static = np.stack([arrays[name] for name in STATIC_NAMES], axis=1)
    signals = arrays.get("signals")
    if signals is not None:
        if signals.shape[1] != signal_length:
            raise DataError(f"{path}: signals have {signals.shape[1]} samples; the model expects {signal_length}")
        if not np.isfinite(signals).all():
            row = int(np.flatnonzero(~np.isfinite(signals).all(axis=1))[0])
            raise DataError(f"{path}: signals hold NaN or inf (first row {row})")
    return validate_conditions(static, str(path)), signals, arrays.get("patient_ids")


def _number(value: Any, flag: str) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise UsageError(f"{flag} needs a number, got {value!r}") from None


def _switch(value: Any) -> bool:
    return str(value).strip().lower() in {"1", "true", "yes", "on"}


def _json_ready(value: Any) -> Any:
    """Plain JSON values: numpy scalars and arrays as Python numbers and lists, NaN/inf as None."""
    if isinstance(value, Mapping):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_json_ready(v) for v in (value.tolist() if isinstance(value, np.ndarray) else value)]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return value


def _flatten(value: Mapping[str, Any], prefix: str = "") -> dict[str, np.ndarray]:
    """A nested dict as ``{"a.b.c": array}`` for an npz (lists become arrays, None becomes NaN)."""
    flat: dict[str, np.ndarray] = {}
    for key, item in value.items():
        name = f"{prefix}{key}"
        if isinstance(item, Mapping):
            flat.update(_flatten(item, f"{name}."))
        else:
            flat[name] = np.asarray(np.nan if item is None else item)
    return flat


def write_output(folder: Path, name: str, payload: Mapping[str, Any], fmt: str) -> Path:
    """Write ``payload`` as ``folder/name.json`` (strict JSON) or ``folder/name.npz`` (arrays, no pickle)."""
    if fmt == "json":
        text = json.dumps(_json_ready(payload), indent=2, allow_nan=False)
        return atomic_write_text(folder / f"{name}.json", text + "\n")
    buffer = io.BytesIO()
    np.savez(buffer, allow_pickle=False, **_flatten(payload))
    return atomic_write_bytes(folder / f"{name}.npz", buffer.getvalue())


class ABRPredictor(Predictor):
    """The exported abr-diffusion network with its training statistics, for predictions and generation."""

    def __init__(self, model_dir: Path, *, device: str | torch.device = "cpu") -> None:
        super().__init__(model_dir, device=device)
        spec = self.spec
        self.stats = NormalizationStats.from_dict(spec["normalization"])
        self.targets = TargetStats.from_dict(spec["targets"])
        self.schedule = CosineSchedule(int(spec["diffusion"]["num_steps"]))
        self.class_names: tuple[str, ...] = tuple(spec["class_names"])
        self.signal_length = int(spec["signal_length"])
        self.sampling_rate_hz = float(spec["sampling_rate_hz"])
        self.seed = int(spec["seed"])

    def build_model(self, manifest: dict[str, Any]) -> ABRExport:
        return ABRExport(build_network(manifest["spec"]))

    # -- building blocks -------------------------------------------------------------------------------------------
    def _static_tensor(self, static: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(self.stats.normalize_static(static)).to(self.device)

    @torch.no_grad()
    def heads(self, signals_uv: np.ndarray, static: np.ndarray) -> HeadPredictions:
        """The clinical heads at t = 0 on waveforms ``[N, L]`` (µV) recorded or generated under conditions
        ``[N, 4]`` (raw units)."""
        parts = []
        for start in range(0, len(signals_uv), CHUNK):
            x0 = self.stats.normalize_signal(np.asarray(signals_uv[start : start + CHUNK], dtype=np.float32))
            x0_t = torch.from_numpy(x0.astype(np.float32))[:, None, :].to(self.device)
            t = torch.zeros(x0_t.shape[0], dtype=torch.long, device=self.device)
            outputs = self.model(x0_t, t, self._static_tensor(static[start : start + CHUNK]))
            parts.append(
                HeadPredictions.decode(ABROutput(**dict(zip(OUTPUT_NAMES, outputs, strict=True))), self.targets)
            )
        return HeadPredictions.concat(parts)

    def generate_signals(self, static: np.ndarray, *, seed: int | None = None) -> np.ndarray:
        """Waveforms ``[N, L]`` (µV) for conditions ``[N, 4]`` (raw units) by guided DDIM with the model's settings;
        row i starts from the noise of :func:`~medtrain.recipes.abr_diffusion.task.initial_noise` row i."""
        diffusion = self.spec["diffusion"]
        seed = self.seed if seed is None else seed
        chunks = []
        for start in range(0, len(static), CHUNK):
            x0 = generate_normalized(
                self.model.net,
                self.schedule,
                self._static_tensor(static[start : start + CHUNK]),
                steps=int(diffusion["sampling_steps"]),
                guidance_scale=float(diffusion["guidance_scale"]),
                eta=float(diffusion["eta"]),
                seed=seed,
                first_row=start,
            )
            chunks.append(x0[:, 0].double().cpu().numpy())
        if not chunks:
            return np.zeros((0, self.signal_length))
        return self.stats.denormalize_signal(np.concatenate(chunks))

    # -- the three uses --------------------------------------------------------------------------------------------
    def predict_single(
        self,
        age: float,
        intensity: float,
        stimulus_rate: float,
        fmp: float,
        return_confidence: bool = False,
        *,
        seed: int | None = None,
    ) -> dict[str, Any]:
        """Predictions for one condition (see the module docstring): ``{"input", "classification":
        {"predicted_category", "probabilities"}, "threshold": {"value", "unit"}, "peaks": {"exists_probability",
        "present", "latency_ms", "latency_std_ms", "amplitude_uv", "amplitude_std_uv"}, "generated_signal",
        "generated_wave_v", "sampling_rate_hz", "method"}``; with ``return_confidence`` also
        ``classification.intervals``, ``threshold.interval``, ``peaks.intervals``, ``generated_signal_interval``
        (each interval under its method's name) and ``confidence`` (level, K and the methods)."""
        condition = validate_conditions(np.array([[age, intensity, stimulus_rate, fmp]]), "predict_single")
        samples = int(self.spec["confidence_samples"]) if return_confidence else 1
        static = np.repeat(condition, samples, axis=0)
        signals = self.generate_signals(static, seed=seed)
        heads = self.heads(signals, static)
        level = float(self.spec["confidence_level"])
        latency, amplitude = detect_wave_v(signals[:1], self.sampling_rate_hz)
        diffusion = self.spec["diffusion"]
        probabilities = heads.class_probabilities[0]
        result: dict[str, Any] = {
            "input": dict(zip(STATIC_NAMES, condition[0].tolist(), strict=True)),
            "classification": {
                "predicted_category": self.class_names[int(probabilities.argmax())],
                "probabilities": dict(zip(self.class_names, probabilities.tolist(), strict=True)),
            },
            "threshold": {"value": float(heads.threshold_db[0]), "unit": "dB nHL"},
            "peaks": {
                "exists_probability": float(heads.exists_probability[0]),
                "present": bool(heads.exists_probability[0] >= 0.5),
                "latency_ms": float(heads.latency_ms[0]),
                "latency_std_ms": float(heads.latency_std_ms[0]),
                "amplitude_uv": float(heads.amplitude_uv[0]),
                "amplitude_std_uv": float(heads.amplitude_std_uv[0]),
            },
            "generated_signal": signals[0].tolist(),
            "generated_wave_v": {"latency_ms": float(latency[0]), "amplitude_uv": float(amplitude[0])},
            "sampling_rate_hz": self.sampling_rate_hz,
            "method": (
                f"one waveform generated by DDIM ({diffusion['sampling_steps']} steps, classifier-free guidance "
                f"{diffusion['guidance_scale']}, seed {self.seed if seed is None else seed}); clinical heads at t = 0 "
                "on it"
            ),
        }
        if return_confidence:
            self._add_intervals(result, heads, signals, level)
        return result

    def _add_intervals(self, result: dict[str, Any], heads: HeadPredictions, signals: np.ndarray, level: float) -> None:
        """Add the ``model_variance`` and ``guided_samples`` intervals of :meth:`predict_single`."""
        low_q, high_q = (1.0 - level) / 2.0, (1.0 + level) / 2.0
        z = NormalDist().inv_cdf(high_q)

        def spread(values: np.ndarray) -> dict[str, Any]:
            low, high = np.quantile(values, [low_q, high_q], axis=0)
            return {
                "low": low.tolist() if np.ndim(low) else float(low),
                "high": high.tolist() if np.ndim(high) else float(high),
            }

        def variance(value: float, std: float) -> dict[str, float]:
            return {"low": value - z * std, "high": value + z * std}

        result["classification"]["intervals"] = {
            name: {"guided_samples": spread(heads.class_probabilities[:, k])} for k, name in enumerate(self.class_names)
        }
        result["threshold"]["interval"] = {"guided_samples": spread(heads.threshold_db)}
        result["peaks"]["intervals"] = {
            "exists_probability": {"guided_samples": spread(heads.exists_probability)},
            "latency_ms": {
                "model_variance": variance(float(heads.latency_ms[0]), float(heads.latency_std_ms[0])),
                "guided_samples": spread(heads.latency_ms),
            },
            "amplitude_uv": {
                "model_variance": variance(float(heads.amplitude_uv[0]), float(heads.amplitude_std_uv[0])),
                "guided_samples": spread(heads.amplitude_uv),
            },
        }
        result["generated_signal_interval"] = {"guided_samples": spread(signals)}
        result["confidence"] = {
            "level": level,
            "samples": len(signals),
            "methods": {
                "model_variance": f"value ± {z:.3f}·σ, σ from the heads' predicted log-variance (wave V only)",
                "guided_samples": (
                    f"{100 * low_q:g}th and {100 * high_q:g}th percentiles over {len(signals)} guided DDIM samples of "
                    "the condition, heads at t = 0 on each"
                ),
            },
        }

    def predict_batch(self, array_or_table: np.ndarray | ABRTable | str | Path) -> dict[str, np.ndarray]:
        """Predictions for many rows (module docstring): from conditions ``[N, 4]``, an :class:`ABRTable`, or a table
        file. Returns arrays: ``static``, ``signals`` (µV; the recorded ones, or the generated ones), ``source``
        ("recorded" | "generated"), ``peak_exists_probability``, ``peak_present``, ``peak_latency_ms``,
        ``peak_latency_std_ms``, ``peak_amplitude_uv``, ``peak_amplitude_std_uv``, ``class_probabilities [N, K]``,
        ``class_names``, ``predicted_class``, ``predicted_category``, ``threshold_db`` (and ``patient_ids`` when the
        input has them)."""
        patient_ids = None
        if isinstance(array_or_table, ABRTable):
            static, signals = array_or_table.static.astype(np.float64), array_or_table.signals
            patient_ids = array_or_table.patient_ids
        elif isinstance(array_or_table, (str, Path)):
            static, signals, patient_ids = read_conditions(Path(array_or_table), self.signal_length)
        else:
            static, signals = validate_conditions(array_or_table, "predict_batch"), None
        source = "recorded" if signals is not None else "generated"
        if signals is None:
            signals = self.generate_signals(static)
        heads = self.heads(signals, static)
        predicted = heads.class_probabilities.argmax(axis=1)
        result = {
            "static": static,
            "signals": np.asarray(signals, dtype=np.float64),
            "source": np.array(source),
            "peak_exists_probability": heads.exists_probability,
            "peak_present": heads.exists_probability >= 0.5,
            "peak_latency_ms": heads.latency_ms,
            "peak_latency_std_ms": heads.latency_std_ms,
            "peak_amplitude_uv": heads.amplitude_uv,
            "peak_amplitude_std_uv": heads.amplitude_std_uv,
            "class_probabilities": heads.class_probabilities,
            "class_names": np.array(self.class_names),
            "predicted_class": predicted,
            "predicted_category": np.array(self.class_names)[predicted],
            "threshold_db": heads.threshold_db,
        }
        if patient_ids is not None:
            result["patient_ids"] = np.asarray(patient_ids).astype(str)
        return result

    def generate(
        self, n: int, conditions: np.ndarray | str | Path | None = None, *, seed: int | None = None
    ) -> dict[str, np.ndarray]:
        """``n`` generated waveforms: ``{"static" [n, 4], "signals" [n, L] µV, "wave_v_latency_ms",
        "wave_v_amplitude_uv"}`` (wave V detected on each, NaN where none is found). Conditions come from
        ``conditions`` (an array or a predict input file; rows cycled or cut to ``n``) or, when None, are drawn with
        replacement from the training conditions stored in the model (seeded)."""
        if n < 1:
            raise UsageError(f"--generate needs a positive number of waveforms, got {n}")
        seed = self.seed if seed is None else seed
        if conditions is None:
            pool = np.asarray(self.spec["condition_pool"], dtype=np.float64)
            static = pool[np.random.default_rng(seed).integers(0, len(pool), n)]
        elif isinstance(conditions, (str, Path)):
            static = np.resize(read_conditions(Path(conditions), self.signal_length)[0], (n, len(STATIC_NAMES)))
        else:
            static = np.resize(validate_conditions(conditions, "generate"), (n, len(STATIC_NAMES)))
        signals = self.generate_signals(static, seed=seed)
        latency, amplitude = detect_wave_v(signals, self.sampling_rate_hz)
        return {"static": static, "signals": signals, "wave_v_latency_ms": latency, "wave_v_amplitude_uv": amplitude}

    # -- the CLI's entry -------------------------------------------------------------------------------------------
    def predict_path(self, input_path: Path | None, output_path: Path, **options: Any) -> Path:
        """Run the use the options select and write its file under the folder ``output_path`` (module docstring).

        Options (strings from the CLI, or values from Python): ``age``, ``intensity``, ``rate``, ``fmp`` (single),
        ``confidence`` (single only), ``input_file`` (or ``input_path``: a table for batch, conditions for
        ``generate``), ``generate`` (N), ``format`` (``json`` | ``npz``). Raises :class:`UsageError` for unknown,
        incomplete or contradicting options and :class:`DataError` for bad values or files.
        """
        fmt = str(options.pop("format", "json")).strip().lower()
        if fmt not in FORMATS:
            raise UsageError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
        confidence = _switch(options.pop("confidence", False))
        source = options.pop("input_file", None) or input_path
        single = {key: options.pop(key) for key in list(SINGLE_OPTIONS) if key in options}
        count = options.pop("generate", None)
        if options:
            raise UsageError(f"unknown predict option(s) for abr-diffusion: {sorted(options)}")
        folder = Path(output_path)
        folder.mkdir(parents=True, exist_ok=True)
        if count is not None:
            if single or confidence:
                raise UsageError("--generate takes its conditions from --input-file or the training distribution")
            n = _number(count, "--generate")
            if not n.is_integer():
                raise UsageError(f"--generate needs a whole number of waveforms, got {count!r}")
            generated = self.generate(int(n), conditions=source)
            plot_waveforms(generated["signals"], generated["static"], self.sampling_rate_hz, folder / PLOT_FILE)
            origin = str(source) if source is not None else "training distribution (condition_pool of the model)"
            return write_output(
                folder, "generated", {"conditions_from": origin, **self._generated_payload(generated)}, fmt
            )
        if single:
            missing = [f"--{key}" for key in SINGLE_OPTIONS if key not in single]
            if missing:
                raise UsageError(
                    f"a single prediction needs --age --intensity --rate --fmp; missing {' '.join(missing)}"
                )
            if source is not None:
                raise UsageError("give either --age/--intensity/--rate/--fmp or --input-file, not both")
            values = [_number(single[key], f"--{key}") for key in SINGLE_OPTIONS]
            result = self.predict_single(*values, return_confidence=confidence)
            plot_waveforms(
                np.asarray([result["generated_signal"]]),
                np.asarray([values]),
                self.sampling_rate_hz,
                folder / PLOT_FILE,
            )
            return write_output(folder, "prediction", result, fmt)
        if source is None:
            raise UsageError(
                "predict abr-diffusion needs --age/--intensity/--rate/--fmp, --input-file TABLE or --generate N"
            )
        if confidence:
            raise UsageError(
                "--confidence applies to single predictions; batch outputs carry the predicted σ of wave V"
            )
        batch = self.predict_batch(Path(source))
        self._plot_batch(batch, folder / PLOT_FILE)
        return write_output(folder, "predictions", self._batch_payload(batch) if fmt == "json" else batch, fmt)

    def _plot_batch(self, batch: Mapping[str, np.ndarray], out_png: Path) -> Path:
        """Generated waveforms for the first rows of a batch, beside the recorded ones when the batch had them."""
        rows = min(PLOT_ROWS, len(batch["static"]))
        static = batch["static"][:rows]
        if str(batch["source"]) == "recorded":
            generated = self.generate_signals(static)
            return plot_waveforms(
                generated, static, self.sampling_rate_hz, out_png, recorded=batch["signals"][:rows],
                title="generated vs recorded waveforms",
            )  # fmt: skip
        return plot_waveforms(batch["signals"][:rows], static, self.sampling_rate_hz, out_png)

    def _batch_payload(self, batch: Mapping[str, np.ndarray]) -> dict[str, Any]:
        """JSON layout of :meth:`predict_batch`: one record per row (the waveform only when it was generated)."""
        generated = str(batch["source"]) == "generated"
        records = []
        for i in range(len(batch["static"])):
            record: dict[str, Any] = {
                "input": dict(zip(STATIC_NAMES, batch["static"][i].tolist(), strict=True)),
                "classification": {
                    "predicted_category": str(batch["predicted_category"][i]),
                    "probabilities": dict(zip(self.class_names, batch["class_probabilities"][i].tolist(), strict=True)),
                },
                "threshold": {"value": float(batch["threshold_db"][i]), "unit": "dB nHL"},
                "peaks": {
                    "exists_probability": float(batch["peak_exists_probability"][i]),
                    "present": bool(batch["peak_present"][i]),
                    "latency_ms": float(batch["peak_latency_ms"][i]),
                    "latency_std_ms": float(batch["peak_latency_std_ms"][i]),
                    "amplitude_uv": float(batch["peak_amplitude_uv"][i]),
                    "amplitude_std_uv": float(batch["peak_amplitude_std_uv"][i]),
                },
            }
            if "patient_ids" in batch:
                record["patient_id"] = str(batch["patient_ids"][i])
            if generated:
                record["generated_signal"] = batch["signals"][i].tolist()
            records.append(record)
        return {
            "source": str(batch["source"]),
            "method": "clinical heads at t = 0 on the " + ("generated" if generated else "recorded") + " waveforms",
            "class_names": list(self.class_names),
            "sampling_rate_hz": self.sampling_rate_hz,
            "predictions": records,
        }

    def _generated_payload(self, generated: Mapping[str, np.ndarray]) -> dict[str, Any]:
        """The arrays of :meth:`generate` with the static names and sampling rate."""
        return {**generated, "static_names": np.array(STATIC_NAMES), "sampling_rate_hz": self.sampling_rate_hz}
