"""Interruptions: SIGTERM/SIGINT stop at a batch boundary with interrupted.ckpt + recovery.json and exit
143/130; the resume command in recovery.json finishes the run; a kill during a checkpoint save never leaves a
truncated file behind."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from medtrain.engine.checkpoint_io import AtomicCheckpointIO, read_checkpoint


def _start_training(toy_data: Path, runs: Path) -> subprocess.Popen[str]:
    command = [
        sys.executable, "-m", "medtrain", "train", "--recipe", "toy",
        "--override", f"data.root={toy_data}", "--output-dir", str(runs),
        "--override", "model.step_sleep=0.02", "--epochs", "200", "--quiet",
    ]  # fmt: skip
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(path_glob: str, root: Path, process: subprocess.Popen[str], timeout: float = 60) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = sorted(root.glob(path_glob))
        if found:
            return found[0]
        if process.poll() is not None:
            raise AssertionError(f"training ended early: {process.communicate()}")
        time.sleep(0.1)
    process.kill()
    raise AssertionError(f"{path_glob} did not appear under {root}")


@pytest.mark.parametrize(("signum", "exit_code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_saves_checkpoint_and_resume_command_finishes(
    toy_data: Path, tmp_path: Path, signum: int, exit_code: int
) -> None:
    runs = tmp_path / "runs"
    process = _start_training(toy_data, runs)
    last = _wait_for("toy/run_*/checkpoints/last.ckpt", runs, process)
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == exit_code, stderr
    assert "Traceback" not in stderr

    run_dir = last.parent.parent
    interrupted = run_dir / "checkpoints" / "interrupted.ckpt"
    checkpoint = read_checkpoint(interrupted)
    assert checkpoint["medtrain"]["recipe"] == "toy"
    recovery = json.loads((run_dir / "recovery.json").read_text())
    assert recovery["status"] == "interrupted" and recovery["exit_code"] == exit_code
    assert recovery["checkpoint"] == str(interrupted)
    assert recovery["global_step"] == checkpoint["global_step"] > 0

    # the recorded command resumes in the same run directory; finish one more epoch
    command = shlex.split(recovery["resume_command"])
    assert command[:2] == ["medtrain", "train"]
    finished_epoch = checkpoint["epoch"] + 1
    resumed = subprocess.run(
        [sys.executable, "-m", "medtrain", *command[1:], "--epochs", str(finished_epoch + 1), "--quiet"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert resumed.returncode == 0, resumed.stderr
    final = read_checkpoint(run_dir / "checkpoints" / "final.ckpt")
    assert final["epoch"] == finished_epoch + 1
    assert final["global_step"] > checkpoint["global_step"]
    assert not (run_dir / "recovery.json").exists()
    assert len(list(runs.glob("toy/run_*"))) == 1


KILL_DURING_SAVE = textwrap.dedent(
    """
    import os, signal, sys, torch
    from medtrain.engine.checkpoint_io import AtomicCheckpointIO

    real_save = torch.save

    def save_then_die(obj, target, *args, **kwargs):
        real_save(obj, target, *args, **kwargs)
        handle = target if hasattr(target, "write") else open(target, "r+b")
        handle.flush()
        handle.truncate(100)  # half-written file on disk
        handle.flush()
        os.kill(os.getpid(), signal.SIGKILL)

    checkpoint = {"medtrain": {}, "weights": torch.full((1000,), 2.0)}
    if sys.argv[2] == "atomic":
        torch.save = save_then_die
        AtomicCheckpointIO().save_checkpoint(checkpoint, sys.argv[1])
    else:  # an in-place writer, killed the same way
        save_then_die(checkpoint, sys.argv[1])
    """
)


@pytest.mark.parametrize("io_kind", ["atomic", "plain"])
def test_kill_during_save_keeps_previous_checkpoint(tmp_path: Path, io_kind: str) -> None:
    path = tmp_path / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"medtrain": {}, "weights": torch.ones(1000)}, path)
    killed = subprocess.run(
        [sys.executable, "-c", KILL_DURING_SAVE, str(path), io_kind], capture_output=True, text=True, timeout=60
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    if io_kind == "plain":  # the control: writing in place leaves a truncated file
        assert path.stat().st_size == 100
        return
    assert torch.equal(read_checkpoint(path)["weights"], torch.ones(1000))


def test_failure_writes_recovery_and_exits_1(toy_data: Path, tmp_path: Path) -> None:
    env = os.environ | {"MEDTRAIN_MODEL__STEP_SLEEP": "-1"}  # time.sleep(-1) raises inside training_step
    result = subprocess.run(
        [sys.executable, "-m", "medtrain", "train", "--recipe", "toy", "--override", f"data.root={toy_data}",
         "--output-dir", str(tmp_path / "runs"), "--quiet"],
        capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert "training failed" in result.stderr and "Traceback" not in result.stderr
    (recovery_path,) = (tmp_path / "runs").glob("toy/run_*/recovery.json")
    recovery = json.loads(recovery_path.read_text())
    assert recovery["status"] == "failed" and recovery["exit_code"] == 1
    assert "ValueError" in recovery["reason"]
    assert recovery["resume_command"].endswith("interrupted.ckpt")
