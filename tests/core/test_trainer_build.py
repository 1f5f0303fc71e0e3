"""The Trainer built from config: Lightning receives every trainer setting, callbacks follow the config,
precision falls back where the device lacks it, threads respect the core budget."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from lightning.pytorch.callbacks import EarlyStopping, EMAWeightAveraging, LearningRateMonitor, ModelCheckpoint

import medtrain
from medtrain import api
from medtrain.engine.callbacks import EpochSummary, PeriodicPlots, ThroughputProgressBar
from medtrain.engine.rundir import RunPaths
from medtrain.engine.trainer import build_trainer, configure_threads, resolve_precision


def _config(toy_overrides: list[str], *extra: str):
    return api.config_for(recipe="toy", overrides=[*toy_overrides, *extra])[1]


def _build(cfg, tmp_path: Path):
    return build_trainer(cfg, RunPaths(tmp_path / "run").make(), resume_command=["medtrain", "train"])


def test_trainer_receives_the_trainer_section(toy_overrides: list[str], tmp_path: Path) -> None:
    cfg = _config(
        toy_overrides,
        "trainer.max_epochs=7",
        "trainer.accumulate_grad_batches=3",
        "trainer.gradient_clip_val=0.5",
        "trainer.gradient_clip_algorithm=value",
        "trainer.check_val_every_n_epoch=2",
        "trainer.log_every_n_steps=9",
        "trainer.limit_train_batches=2.0",
        "trainer.precision=bf16-mixed",
    )
    trainer, _ = _build(cfg, tmp_path)
    assert trainer.max_epochs == 7
    assert trainer.accumulate_grad_batches == 3
    assert trainer.gradient_clip_val == 0.5 and trainer.gradient_clip_algorithm == "value"
    assert trainer.check_val_every_n_epoch == 2 and trainer.log_every_n_steps == 9
    assert trainer.limit_train_batches == 2 and isinstance(trainer.limit_train_batches, int)
    assert trainer.precision == "bf16-mixed"


def test_callbacks_follow_the_config(toy_overrides: list[str], tmp_path: Path) -> None:
    cfg = _config(
        toy_overrides,
        "trainer.early_stopping.enabled=true",
        "trainer.early_stopping.patience=2",
        "trainer.ema.enabled=true",
        "checkpoint.every_n_epochs=5",
        "checkpoint.monitor=val_mae",
        "checkpoint.mode=max",
        "logging.plot_every_n_epochs=2",
        "trainer.progress=rich",
    )
    trainer, callbacks = _build(cfg, tmp_path)
    kinds = {type(callback) for callback in trainer.callbacks}
    assert {EarlyStopping, EMAWeightAveraging, LearningRateMonitor, PeriodicPlots, ThroughputProgressBar} <= kinds
    stop = next(cb for cb in trainer.callbacks if isinstance(cb, EarlyStopping))
    assert stop.monitor == "val_mae" and stop.mode == "max" and stop.patience == 2
    checkpoints = [cb for cb in trainer.callbacks if isinstance(cb, ModelCheckpoint)]
    assert callbacks.best.monitor == "val_mae" and callbacks.best.filename == "toy-{epoch:02d}-{val_mae:.4f}"
    periodic = next(cb for cb in checkpoints if cb is not callbacks.best)
    assert periodic._every_n_epochs == 5 and periodic.save_top_k == 2

    quiet, _ = _build(_config(toy_overrides, "trainer.progress=quiet", "scheduler.name=none"), tmp_path)
    quiet_kinds = {type(callback) for callback in quiet.callbacks}
    assert EpochSummary in quiet_kinds and ThroughputProgressBar not in quiet_kinds
    assert LearningRateMonitor not in quiet_kinds and EarlyStopping not in quiet_kinds


@pytest.mark.parametrize(
    ("accelerator", "asked", "expected"),
    [("cpu", "16-mixed", "32-true"), ("cpu", "16-true", "32-true"), ("cpu", "bf16-mixed", "bf16-mixed")],
)
def test_precision_falls_back_where_unsupported(toy_overrides, accelerator: str, asked: str, expected: str) -> None:
    assert resolve_precision(_config(toy_overrides, f"trainer.precision={asked}"), accelerator) == expected


def test_threads_leave_room_for_workers(toy_overrides: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    previous = torch.get_num_threads()
    monkeypatch.setattr("os.sched_getaffinity", lambda _pid: {0, 1, 2, 3})
    try:
        assert configure_threads(_config(toy_overrides, "data.num_workers=3")) == 1
        assert configure_threads(_config(toy_overrides, "data.num_workers=1")) == 3
        assert configure_threads(_config(toy_overrides, "trainer.num_threads=2")) == 2
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(previous)


def test_bf16_training_runs_on_cpu(toy_overrides: list[str]) -> None:
    result = medtrain.train(recipe="toy", overrides=[*toy_overrides, "trainer.precision=bf16-mixed"])
    assert result.test_metrics["mse"] < result.test_metrics["baseline_mse"]


def test_dataloader_workers_are_seeded_deterministically(toy_overrides: list[str]) -> None:
    runs = [
        medtrain.train(
            recipe="toy", overrides=[*toy_overrides, "data.num_workers=1", f"experiment=w{i}", "trainer.max_epochs=2"]
        )
        for i in range(2)
    ]
    from medtrain.engine.checkpoint_io import read_checkpoint

    first, second = (read_checkpoint(run.final_checkpoint)["state_dict"] for run in runs)
    assert all(torch.equal(first[key], second[key]) for key in first)


@pytest.mark.slow
def test_torch_compile_trains(toy_overrides: list[str]) -> None:
    result = medtrain.train(recipe="toy", overrides=[*toy_overrides, "trainer.compile=true", "trainer.max_epochs=2"])
    assert result.final_checkpoint.is_file()


def test_epoch_summary_shows_the_optimizer_lr_not_the_last_logged_one(caplog: pytest.LogCaptureFixture) -> None:
    """LearningRateMonitor's ``lr`` is refreshed every log_every_n_steps steps; the summary reads the optimizer."""
    from types import SimpleNamespace

    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.0123)
    trainer = SimpleNamespace(
        is_global_zero=True,
        sanity_checking=False,
        callback_metrics={"lr": torch.tensor(0.5), "val_loss": torch.tensor(0.25), "loss_step": torch.tensor(9.0)},
        optimizers=[optimizer],
        current_epoch=1,
        max_epochs=3,
    )
    summary = EpochSummary(SimpleNamespace(recent_samples_per_second=1234.0))  # type: ignore[arg-type]
    with caplog.at_level("INFO", logger="medtrain"):
        summary.on_train_epoch_end(trainer, None)  # type: ignore[arg-type]
    (line,) = [record.getMessage() for record in caplog.records if "epoch 2/3" in record.getMessage()]
    assert line == "epoch 2/3 · lr 0.0123 · val_loss 0.25 · 1.23e+03 samples/s"
