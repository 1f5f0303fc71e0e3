"""abr-diffusion end to end through the CLI on a small synthetic table: validate → train (seed flags, env alias) →
resume → evaluate with generated samples → predict (single, confidence, batch npz/csv, generate, npz format) →
export (ONNX), the Python API, bad input (exit 2), and the learning check of the clinical heads against their
trivial baselines. The learning check of generation (wave-V latency falling with intensity) needs a longer training
and is marked slow."""

from __future__ import annotations

import json
import math
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import medtrain
from cli_runner import cli
from medtrain import api, registry
from medtrain.cli import run
from medtrain.engine.checkpoint_io import read_checkpoint
from medtrain.recipes.abr_diffusion.metrics import detect_wave_v
from medtrain.recipes.abr_diffusion.synthetic import generate_abr_table, write_abr_dataset
from medtrain.recipes.abr_diffusion.table import read_abr_table, write_abr_table
from medtrain.reporting.curves import read_metrics_csv

pytestmark = pytest.mark.usefixtures("seeded_one_thread")

SMALL = [
    "--override=model.base_channels=16",
    "--override=model.channel_mult=[1,2]",
    "--override=model.d_state=16",
    "--override=model.num_heads=1",
    "--override=model.embed_dim=32",
    "--override=diffusion.sampling_steps=20",
    "--override=evaluation.generate_samples=0",
    "--override=evaluation.confidence_samples=4",
    "--override=trainer.num_threads=1",
    "--override=loss.curriculum.peak_latency.ramp_epochs=1",
]
FIRST_EPOCHS, EPOCHS = 3, 10
SINGLE = ["--age", "45", "--intensity", "80", "--rate", "30", "--fmp", "0.75"]


def strict_json(path: Path) -> dict:
    """The JSON file, refusing NaN/Infinity (not valid JSON)."""

    def refuse(constant: str) -> None:
        raise ValueError(f"{path} holds {constant}")

    return json.loads(path.read_text(), parse_constant=refuse)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    root = tmp_path_factory.mktemp("abr")
    table = write_abr_dataset(root / "abr_table.npz", n_patients=120, seed=1)
    demo = registry.get("abr-diffusion").demo_config_path()
    cli("validate", "--config", demo, "--dataset_path", table)
    with pytest.MonkeyPatch.context() as env:
        env.setenv("ABR_EPOCHS", str(FIRST_EPOCHS))
        cli("train", "--config", demo, "--dataset_path", table, "--output-dir", root / "runs", "--quiet", *SMALL,
            "--batch_size", "32", "--learning_rate", "3e-3")  # fmt: skip
    (run_dir,) = (root / "runs").glob("abr-diffusion-demo/run_*")
    first_epochs = read_checkpoint(run_dir / "checkpoints" / "final.ckpt")["epoch"]
    cli("train", "--config", run_dir / "config.yaml", "--resume", run_dir / "checkpoints" / "last.ckpt",
        "--epochs", EPOCHS, "--quiet")  # fmt: skip
    return {"root": root, "table": table, "run": run_dir, "first_epochs": first_epochs}


def test_seed_flags_env_alias_and_resume(trained: dict) -> None:
    run_dir = trained["run"]
    assert trained["first_epochs"] == FIRST_EPOCHS  # ABR_EPOCHS
    config = (run_dir / "config.yaml").read_text()
    assert "batch_size: 32" in config and "lr: 0.003" in config
    assert read_checkpoint(run_dir / "checkpoints" / "final.ckpt")["epoch"] == EPOCHS
    epochs = read_metrics_csv(run_dir / "logs" / "metrics.csv")["epoch"].dropna().astype(int)
    assert set(range(FIRST_EPOCHS, EPOCHS)) <= set(epochs)  # the resumed run continued at epoch 3
    summary = json.loads((run_dir / "data_summary.json").read_text())
    assert not set(summary["split"]["train"]) & set(summary["split"]["test"])
    assert summary["splits"]["test"]["patients"] == len(summary["split"]["test"])
    spec = json.loads((run_dir / "model" / "model.json").read_text())["spec"]
    assert spec["normalization"] == summary["train_normalization"]
    for plot in ("training_curves", "confusion_matrix", "threshold_scatter", "peak_latency_scatter",
                 "generated_waveforms"):  # fmt: skip
        assert (run_dir / "plots" / f"{plot}.png").stat().st_size > 10_000, plot


def test_clinical_heads_beat_the_trivial_baselines(trained: dict) -> None:
    test = json.loads((trained["run"] / "report.json").read_text())["test"]
    assert test["peak_latency_mae_ms"] <= 0.6 * test["baseline_peak_latency_mae_ms"], test
    assert test["threshold_mae_db"] < test["baseline_threshold_mae_db"], test
    assert test["class_macro_f1"] > test["baseline_class_macro_f1"], test
    assert test["signal_mse"] < test["baseline_signal_mse"]
    assert "age_18_40/threshold_mae_db" in test and "baseline_age_18_40/threshold_mae_db" in test


def test_evaluate_writes_json_markdown_and_generation_metrics(trained: dict) -> None:
    out = trained["root"] / "eval"
    cli("evaluate", "--checkpoint", trained["run"], "--split", "test", "--output-dir", out, "--generate-samples", 8)
    report = json.loads((out / "report.json").read_text())
    assert report["split"] == "test"
    test = report["test"]
    for key in ("generated_signal_mse", "generated_wave_v_detected_fraction", "baseline_generated_signal_mse",
                "reference_wave_v_slope_ms_per_db", "class_macro_auc", "clinical_loss_sensitivity"):  # fmt: skip
        assert key in test and not math.isinf(test[key]), key
    assert "generated_signal_mse" in (out / "report.md").read_text()
    assert (out / "plots" / "confusion_matrix.png").is_file() and (out / "plots" / "generated_waveforms.png").is_file()


def test_predict_single_with_and_without_confidence(trained: dict) -> None:
    out = trained["root"] / "single"
    cli("predict", "--model", trained["run"], *SINGLE, "--output-dir", out)
    result = strict_json(out / "prediction.json")
    assert set(result["classification"]) == {"predicted_category", "probabilities"}
    assert sum(result["classification"]["probabilities"].values()) == pytest.approx(1.0)
    assert result["threshold"]["unit"] == "dB nHL" and math.isfinite(result["threshold"]["value"])
    assert {"exists_probability", "latency_ms", "amplitude_uv", "latency_std_ms"} <= set(result["peaks"])
    assert len(result["generated_signal"]) == 200 and (out / "generated_waveforms.png").is_file()

    cli("predict", "--model", trained["run"], *SINGLE, "--confidence", "--output-dir", out / "confident")
    confident = strict_json(out / "confident" / "prediction.json")
    assert confident["threshold"]["value"] == pytest.approx(result["threshold"]["value"], rel=1e-5)
    interval = confident["threshold"]["interval"]["guided_samples"]
    assert interval["low"] <= interval["high"]
    latency = confident["peaks"]["intervals"]["latency_ms"]
    assert set(latency) == {"model_variance", "guided_samples"}
    low, high = latency["model_variance"]["low"], latency["model_variance"]["high"]
    assert low < confident["peaks"]["latency_ms"] < high
    assert set(confident["classification"]["intervals"]["NORMAL"]) == {"guided_samples"}
    assert len(confident["generated_signal_interval"]["guided_samples"]["low"]) == 200
    assert confident["confidence"]["samples"] == 4 and set(confident["confidence"]["methods"]) == set(latency)

    cli("predict", "--model", trained["run"], *SINGLE, "--format", "npz", "--output-dir", out / "npz")
    with np.load(out / "npz" / "prediction.npz", allow_pickle=False) as arrays:
        assert str(arrays["classification.predicted_category"]) == result["classification"]["predicted_category"]
        assert arrays["generated_signal"].shape == (200,)


def test_predict_batch_from_npz_and_csv(trained: dict) -> None:
    root = trained["root"]
    conditions = root / "conditions.npz"
    np.savez(conditions, static=np.array([[45, 80, 31.1, 3.0], [65, 90, 21.1, 2.0], [8, 40, 11.1, 1.5]]))
    cli("predict", "--model", trained["run"], "--input-file", conditions, "--output-dir", root / "batch_npz")
    generated = strict_json(root / "batch_npz" / "predictions.json")
    assert generated["source"] == "generated" and len(generated["predictions"]) == 3
    assert len(generated["predictions"][0]["generated_signal"]) == 200

    recorded = read_abr_table(trained["table"]).subset(np.arange(5))
    csv = write_abr_table(root / "recordings.csv", recorded)
    out = root / "batch_csv"
    cli("predict", "--model", trained["run"], "--input_file", csv, "--format", "npz", "--output-dir", out)
    with np.load(out / "predictions.npz", allow_pickle=False) as arrays:
        assert str(arrays["source"]) == "recorded"
        np.testing.assert_allclose(arrays["signals"], recorded.signals, rtol=1e-5)
        assert arrays["class_probabilities"].shape == (5, 5) and arrays["predicted_category"].dtype.kind == "U"
        assert arrays["patient_ids"].tolist() == recorded.patient_ids.tolist()
    assert (out / "generated_waveforms.png").is_file()


def test_generate_from_the_training_distribution(trained: dict) -> None:
    out = trained["root"] / "generated"
    cli("predict", "--model", trained["run"], "--generate", 8, "--output-dir", out)
    generated = strict_json(out / "generated.json")
    assert np.asarray(generated["signals"]).shape == (8, 200) and np.asarray(generated["static"]).shape == (8, 4)
    assert generated["conditions_from"].startswith("training distribution")
    assert len(generated["wave_v_latency_ms"]) == 8 and (out / "generated_waveforms.png").stat().st_size > 10_000


def test_python_api(trained: dict) -> None:
    predictor = medtrain.load_predictor(trained["run"])
    single = predictor.predict_single(age=45, intensity=80, stimulus_rate=30, fmp=0.75, return_confidence=True)
    assert single["classification"]["predicted_category"] in predictor.class_names
    assert "interval" in single["threshold"] and "intervals" in single["peaks"]
    batch = predictor.predict_batch(np.array([[45, 80, 30, 0.75], [65, 90, 20, 0.60]]))
    assert batch["signals"].shape == (2, 200) and batch["threshold_db"].shape == (2,)


def test_export_onnx(trained: dict) -> None:
    out = trained["root"] / "export"
    cli("export", "--run", trained["run"], "--output", out)
    manifest = json.loads((out / "model.json").read_text())
    assert [spec["name"] for spec in manifest["inputs"]] == ["x_t", "t", "static"]
    assert manifest["inputs"][1]["dtype"] == "int64" and manifest["outputs"][0] == "v"
    assert (out / "model.onnx").stat().st_size > 10_000


def _bad_tables(root: Path) -> dict[str, tuple[Path, str]]:
    """name → (a table with one problem, a fragment the error message must contain)."""
    arrays = generate_abr_table(12, seed=2)
    cases: dict[str, tuple[Path, str]] = {}

    def npz(name: str, fragment: str, **changes: np.ndarray) -> None:
        path = root / f"{name}.npz"
        np.savez(path, **{**arrays, **changes})
        cases[name] = (path, fragment)

    npz("short_signals", "expected the configured signal length 200", signals=arrays["signals"][:, :180])
    nan = arrays["signals"].copy()
    nan[3, 10] = np.nan
    npz("nan_signals", "'signals' must be finite", signals=nan)
    npz("unknown_class", "unknown class", class_names=np.array(["NORMAL", "NEUROPATHY", "SNHL", "TOTAL", "DEAF"]))
    static = arrays["static"].copy()
    static[2, 1] = -10
    npz("negative_intensity", "'intensity_db' must be >= 0", static=static)
    npz("valid", "")
    csv = root / "missing_column.csv"
    frame = pd.read_csv(write_abr_table(root / "valid.csv", read_abr_table(cases.pop("valid")[0])))
    frame.drop(columns=["fmp"]).to_csv(csv, index=False)
    cases["missing_column"] = (csv, "fmp")
    pickled = root / "table.pkl"
    pickled.write_bytes(pickle.dumps(arrays))
    cases["pickle"] = (pickled, "pickle files are not read")
    return cases


def test_bad_input_exits_2_naming_the_problem(
    trained: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    demo = registry.get("abr-diffusion").demo_config_path()
    for name, (path, fragment) in _bad_tables(tmp_path).items():
        assert run(["validate", "--config", str(demo), "--dataset_path", str(path)]) == 2, name
        err = capsys.readouterr().err
        assert fragment in err and path.name in err, (name, err)
    model = str(trained["run"])
    bad_predictions = {
        "negative --intensity": ([*SINGLE[:2], "--intensity", "-5", *SINGLE[4:]], "intensity_db must be"),
        "--format xml": ([*SINGLE, "--format", "xml"], "--format must be one of json, npz"),
        "incomplete single": (SINGLE[:4], "missing --rate --fmp"),
    }
    for name, (args, fragment) in bad_predictions.items():
        assert run(["predict", "--model", model, *args, "--output-dir", str(tmp_path / "p")]) == 2, name
        assert fragment in capsys.readouterr().err, name


@pytest.mark.slow
def test_generated_wave_v_latency_falls_with_intensity(tmp_path: Path) -> None:
    """The demo's training (``medtrain demo abr-diffusion``): every model metric the issue names beats its baseline,
    and waveforms generated for a normal-hearing adult at 30–90 dB have a wave V whose detected latency falls with
    the requested intensity."""
    report = api.demo("abr-diffusion", tmp_path)
    test = json.loads(report.with_name("report.json").read_text())["test"]
    assert test["peak_latency_mae_ms"] <= 0.6 * test["baseline_peak_latency_mae_ms"], test
    assert test["threshold_mae_db"] < test["baseline_threshold_mae_db"]
    assert test["class_macro_f1"] > test["baseline_class_macro_f1"]
    predictor = medtrain.load_predictor(report.parent)
    intensity = np.repeat(np.arange(30.0, 91.0, 10.0), 6)
    conditions = np.stack([np.full_like(intensity, 30.0), intensity, np.full_like(intensity, 21.1),
                           np.full_like(intensity, 7.0)], axis=1)  # fmt: skip
    generated = predictor.generate(len(conditions), conditions)
    latency, _ = detect_wave_v(generated["signals"], predictor.sampling_rate_hz)
    found = np.isfinite(latency)
    assert found.mean() >= 0.7, latency
    slope = np.polyfit(intensity[found], latency[found], 1)[0]
    assert slope < 0, (slope, latency)
