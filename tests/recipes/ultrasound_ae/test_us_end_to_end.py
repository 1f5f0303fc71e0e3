"""ultrasound-ae end to end through the CLI on small synthetic recordings: prepare → train → resume → evaluate →
predict → export, with the learning check on held-out sessions."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from cli_runner import cli
from medtrain.engine.checkpoint_io import read_checkpoint
from medtrain.recipes.ultrasound_ae.synthetic import generate_raw_dataset

SMALL = [
    "--override=model.embedding_dim=32",
    "--override=model.widths=[16,32,64,128]",
    "--override=optim.lr=3e-3",
    "--override=trainer.early_stopping.enabled=false",
    "--override=logging.plot_every_n_epochs=0",
    "--override=data.batch_size=32",
]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("us")
    raw, processed = root / "raw", root / "processed"
    # 7 train, 1 val, 2 test sessions; 600 pulses (12 s) so that every experiment visits rest and all four quadrants
    generate_raw_dataset(raw, sessions=10, experiments_per_session=1, pulses=600, seed=1)
    cli("prepare", "ultrasound-ae", "--input", raw, "--output", processed)
    return {"raw": raw, "processed": processed, "root": root}


@pytest.fixture(scope="module")
def trained(prepared: dict[str, Path]) -> dict[str, Path]:
    raw, processed, root = prepared["raw"], prepared["processed"], prepared["root"]
    runs = root / "runs"
    common = ["--recipe", "ultrasound-ae", "--override", f"data.root={processed}", "--output-dir", runs, "--quiet"]
    cli("train", *common, *SMALL, "--override", "data.test_groups=[session_08,session_09]", "--epochs", "4")
    (run_dir,) = runs.glob("ultrasound-ae/run_*")
    cli("train", "--config", run_dir / "config.yaml", "--resume", run_dir / "checkpoints" / "last.ckpt",
        "--epochs", "12", "--quiet")  # fmt: skip
    return {"raw": raw, "processed": processed, "run": run_dir, "root": root}


def test_run_directory_and_resume(trained: dict[str, Path]) -> None:
    run_dir = trained["run"]
    assert read_checkpoint(run_dir / "checkpoints" / "final.ckpt")["epoch"] == 12
    summary = json.loads((run_dir / "data_summary.json").read_text())
    assert summary["split"]["test"] == ["session_08", "session_09"]
    assert summary["token_shape"] == [3, 130, 5]
    for plot in ("training_curves.png", "reconstructions.png", "scan_lines.png", "embeddings.png"):
        assert (run_dir / "plots" / plot).stat().st_size > 5_000, plot


def test_learning_beats_trivial_baselines_on_held_out_sessions(trained: dict[str, Path]) -> None:
    test = json.loads((trained["run"] / "report.json").read_text())["test"]
    assert test["r2"] >= 0.8 and test["baseline_r2"] < 0.05  # issue 5
    assert test["mse"] < 0.6 * test["baseline_mse"]
    assert test["psnr"] > test["baseline_psnr"] + 2
    assert test["probe_accuracy"] >= test["baseline_probe_accuracy"] + 0.15
    assert test["probe_macro_f1"] > test["baseline_probe_macro_f1"] + 0.3


def test_evaluate_predict_export(trained: dict[str, Path]) -> None:
    run_dir, root = trained["run"], trained["root"]
    cli("evaluate", "--run", run_dir, "--split", "val", "--output-dir", root / "eval")
    assert json.loads((root / "eval" / "report.json").read_text())["split"] == "val"

    experiment = trained["raw"] / "session_09" / "experiment_00"
    cli("predict", "--model", run_dir, "--input", experiment, "--output", root / "pred_raw")
    cli("predict", "--model", run_dir, "--input", trained["processed"] / "session_09" / "experiment_00.h5",
        "--output", root / "pred_h5")  # fmt: skip
    from_raw = np.load(root / "pred_raw" / "embeddings.npy")
    from_h5 = np.load(root / "pred_h5" / "embeddings.npy")
    assert from_raw.shape == (298, 32)  # (600 − 5) // 2 + 1 tokens
    np.testing.assert_allclose(from_raw, from_h5, rtol=1e-5, atol=1e-5)
    with h5py.File(root / "pred_raw" / "embeddings.h5") as handle:
        assert handle["pulse_index"][:5].tolist() == [0, 2, 4, 6, 8]
        np.testing.assert_allclose(handle["timestamps"][:2], [2 / 50, 4 / 50])

    cli("export", "--run", run_dir, "--output", root / "export")
    manifest = json.loads((root / "export" / "model.json").read_text())
    assert manifest["inputs"][0]["shape"] == [1, 3, 130, 5] and manifest["outputs"] == ["embedding"]
    assert (root / "export" / "model.onnx").stat().st_size > 10_000


def test_sequence_mode_trains_and_evaluates_through_the_cli(prepared: dict[str, Path]) -> None:
    runs = prepared["root"] / "sequence_runs"
    cli("train", "--recipe", "ultrasound-ae", "--override", f"data.root={prepared['processed']}", "--output-dir", runs,
        "--quiet", *SMALL, "--override", "data.mode=sequence", "--override", "data.tokens.tokens_per_sequence=4",
        "--override", "data.test_groups=[session_08,session_09]", "--epochs", "2")  # fmt: skip
    (run_dir,) = runs.glob("ultrasound-ae/run_*")
    test = json.loads((run_dir / "report.json").read_text())["test"]
    assert np.isfinite(test["r2"]) and 0 <= test["probe_accuracy"] <= 1
    assert json.loads((run_dir / "data_summary.json").read_text())["token_shape"] == [3, 130, 5]
