"""End-to-end engine behaviour with the test-only toy recipe: run directory, checkpoints, resume, reports."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import medtrain
from medtrain import api
from medtrain.config import config_hash
from medtrain.engine.checkpoint_io import read_checkpoint
from medtrain.errors import CheckpointError
from medtrain.reporting.curves import read_metrics_csv


def _train(overrides: list[str], **kwargs):
    return medtrain.train(recipe="toy", overrides=overrides, **kwargs)


def test_train_writes_the_whole_run_directory(toy_overrides: list[str]) -> None:
    result = _train(toy_overrides)
    run = result.run_dir
    assert run.parent.name == "toy" and run.name.startswith("run_")
    for name in (
        "config.yaml",
        "environment.json",
        "data_summary.json",
        "report.json",
        "report.md",
        "report.html",
    ):
        assert (run / name).is_file(), name
    checkpoints = sorted(p.name for p in (run / "checkpoints").iterdir())
    best = [name for name in checkpoints if name.startswith("toy-epoch=")]
    assert len(best) == 3 and all("-val_loss=" in name for name in best)
    assert {"last.ckpt", "final.ckpt"} <= set(checkpoints)
    assert not any(name.endswith(".tmp") for name in checkpoints)
    assert (run / "logs" / "metrics.csv").is_file()
    assert "epoch 3/3" in (run / "logs" / "medtrain.log").read_text()
    assert list((run / "logs" / "tensorboard").glob("events.out.tfevents.*"))
    assert (run / "plots" / "training_curves.png").stat().st_size > 10_000
    assert (run / "model" / "model.safetensors").is_file()
    manifest = json.loads((run / "model" / "model.json").read_text())
    assert manifest["recipe"] == "toy" and manifest["inputs"][0]["shape"] == [1, 8]

    environment = json.loads((run / "environment.json").read_text())
    assert environment["seed"] == 7 and environment["torch"] == torch.__version__
    summary = json.loads((run / "data_summary.json").read_text())
    groups = [set(summary["split"][name]) for name in ("train", "val", "test")]
    assert not (groups[0] & groups[1] or groups[0] & groups[2] or groups[1] & groups[2])

    report = json.loads((run / "report.json").read_text())
    assert set(report["test"]) == {"mse", "baseline_mse"}
    assert report["best_epoch"] in {0, 1, 2}
    # learning check: the model beats predicting the training mean on held-out groups
    assert report["test"]["mse"] < 0.5 * report["test"]["baseline_mse"]

    checkpoint = read_checkpoint(run / "checkpoints" / "final.ckpt")
    assert checkpoint["medtrain"]["recipe"] == "toy"
    cfg = api.config_for(run / "config.yaml")[1]
    assert checkpoint["medtrain"]["config_hash"] == config_hash(cfg) == report["config_hash"]
    assert f"config_hash: {report['config_hash']}" in (run / "config.yaml").read_text()


def test_periodic_checkpoints_keep_the_newest(toy_overrides: list[str]) -> None:
    result = _train(
        [*toy_overrides, "trainer.max_epochs=4", "checkpoint.every_n_epochs=1", "checkpoint.keep_periodic=2"]
    )
    periodic = sorted(p.name for p in (result.run_dir / "checkpoints").glob("periodic-*.ckpt"))
    assert periodic == ["periodic-epoch=002.ckpt", "periodic-epoch=003.ckpt"]


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return read_checkpoint(path)["state_dict"]


def test_resume_at_epoch_boundary_is_bit_identical(toy_overrides: list[str], tmp_path: Path) -> None:
    common = [*toy_overrides, "scheduler.name=step", "scheduler.step_epochs=1", "scheduler.gamma=0.7"]
    straight = _train([*common, "trainer.max_epochs=4", "experiment=straight"])
    first = _train([*common, "trainer.max_epochs=2", "experiment=split"])
    resumed = medtrain.train(overrides=["trainer.max_epochs=4"], resume=first.run_dir / "checkpoints" / "last.ckpt")
    assert resumed.run_dir == first.run_dir  # resuming continues in the same run directory
    expected, actual = _weights(straight.final_checkpoint), _weights(resumed.final_checkpoint)
    assert expected.keys() == actual.keys()
    for key in expected:
        assert torch.equal(expected[key], actual[key]), key
    assert read_checkpoint(resumed.final_checkpoint)["epoch"] == 4  # epochs completed
    # metrics.csv continues across the resume: the epochs before it keep their rows, each validated epoch once
    frame = read_metrics_csv(resumed.run_dir / "logs" / "metrics.csv")
    assert sorted(frame.dropna(subset=["val_loss"])["epoch"].astype(int)) == [0, 1, 2, 3]


def test_resume_auto_picks_newest_usable_checkpoint(toy_overrides: list[str]) -> None:
    first = _train([*toy_overrides, "trainer.max_epochs=1"])
    (first.run_dir / "checkpoints" / "broken.ckpt").write_bytes(b"not a checkpoint")
    resumed = _train([*toy_overrides, "trainer.max_epochs=2"], resume="auto")
    assert resumed.run_dir == first.run_dir
    assert read_checkpoint(resumed.final_checkpoint)["epoch"] == 2  # epochs completed


def test_resume_rejects_other_recipe_and_other_model(toy_overrides: list[str], tmp_path: Path) -> None:
    result = _train([*toy_overrides, "trainer.max_epochs=1"])
    with pytest.raises(CheckpointError, match=r"incompatible model config \(model.hidden: checkpoint 16"):
        _train([*toy_overrides, "model.hidden=32"], resume=result.final_checkpoint)
    checkpoint = read_checkpoint(result.final_checkpoint)
    checkpoint["medtrain"]["recipe"] = "volume-seg"
    foreign = tmp_path / "foreign.ckpt"
    torch.save(checkpoint, foreign)
    with pytest.raises(CheckpointError, match="written by recipe 'volume-seg', not 'toy'"):
        _train(toy_overrides, resume=foreign)


def test_unsafe_checkpoint_is_refused(tmp_path: Path) -> None:
    unsafe = tmp_path / "unsafe.ckpt"
    torch.save({"medtrain": {}, "payload": np.dtype("float32").type}, unsafe)  # a global needs unpickling
    with pytest.raises(CheckpointError, match="cannot be read"):
        read_checkpoint(unsafe)


def test_evaluate_predict_export_from_a_run(toy_overrides: list[str], tmp_path: Path) -> None:
    result = _train(toy_overrides)
    report = medtrain.evaluate(result.run_dir, split="val")
    assert report["split"] == "val" and report["test"]["mse"] < report["test"]["baseline_mse"]
    assert (result.run_dir / "evaluation_val" / "report.html").is_file()

    predictor = medtrain.load_predictor(result.run_dir)
    from toyrecipe import load_table

    table = load_table(Path(toy_overrides[0].split("=", 1)[1]))
    np.savez(tmp_path / "new.npz", x=table["x"][:4])
    written = predictor.predict_path(tmp_path / "new.npz", tmp_path / "pred")
    predicted = np.load(written)
    assert predicted.shape == (4,)
    state = read_checkpoint(Path(report["checkpoint"]))["state_dict"]
    x = torch.from_numpy(table["x"][:4])
    hidden = torch.relu(x @ state["net.0.weight"].T + state["net.0.bias"])
    expected = (hidden @ state["net.3.weight"].T + state["net.3.bias"]).squeeze(-1).numpy()
    np.testing.assert_allclose(predicted, expected, rtol=1e-5, atol=1e-6)

    exported = api.export(Path(report["checkpoint"]), tmp_path / "export")  # checkpoint: rebuilt with the data
    assert {"weights", "onnx", "manifest"} <= set(exported)

    data_root = Path(toy_overrides[0].split("=", 1)[1])
    data_root.rename(data_root.with_name("moved"))  # a run directory re-exports its model/ without the data
    again = api.export(result.run_dir, tmp_path / "export_from_run")
    assert again["weights"].read_bytes() == (result.run_dir / "model" / "model.safetensors").read_bytes()
    assert json.loads(again["manifest"].read_text())["files"] == {"weights": "model.safetensors", "onnx": "model.onnx"}


def test_ema_and_overfit_batches_run(toy_overrides: list[str]) -> None:
    result = _train([*toy_overrides, "trainer.ema.enabled=true", "trainer.overfit_batches=2"])
    assert result.final_checkpoint.is_file()
