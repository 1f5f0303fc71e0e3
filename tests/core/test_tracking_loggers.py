"""W&B (offline) and MLflow (local file store) loggers receive the run's metrics when enabled; keys come from
the environment only, and a missing extra is a clear exit-2 error."""

from __future__ import annotations

import builtins

import pytest

import medtrain
from medtrain.errors import UsageError


def test_wandb_offline_run_writes_local_files(toy_overrides: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    result = medtrain.train(
        recipe="toy", overrides=[*toy_overrides, "trainer.max_epochs=1", "logging.wandb.enabled=true"]
    )
    offline_runs = list((result.run_dir / "logs" / "wandb").glob("offline-run-*"))
    assert len(offline_runs) == 1
    assert list(offline_runs[0].glob("*.wandb")), "no offline run file written"


def test_mlflow_logs_metrics_to_the_run_directory(toy_overrides: list[str]) -> None:
    pytest.importorskip("mlflow")
    result = medtrain.train(
        recipe="toy", overrides=[*toy_overrides, "trainer.max_epochs=2", "logging.mlflow.enabled=true"]
    )
    metric_files = {path.name for path in (result.run_dir / "mlruns").rglob("metrics/*")}
    assert {"train_loss_epoch", "val_loss"} <= metric_files


def test_missing_extra_is_a_user_error(toy_overrides: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = builtins.__import__

    def no_wandb(name: str, *args, **kwargs):
        if name == "wandb":
            raise ImportError("No module named 'wandb'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_wandb)
    with pytest.raises(UsageError, match=r"pip install 'medtrain\[wandb\]'"):
        medtrain.train(recipe="toy", overrides=[*toy_overrides, "logging.wandb.enabled=true"])


def test_no_secret_keys_in_the_schema() -> None:
    from medtrain.config.schema import MlflowConfig, WandbConfig

    for section in (WandbConfig, MlflowConfig):
        # keys are read by the libraries themselves from WANDB_API_KEY / MLFLOW_TRACKING_TOKEN only
        assert not any("key" in name or "token" in name for name in section.model_fields)
