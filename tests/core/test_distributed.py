"""DDP on CPU (gloo): two ranks share one run directory; rank 0 alone tests, exports and reports."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.slow
def test_ddp_two_cpu_ranks_share_one_run_directory(toy_data: Path, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    result = subprocess.run(
        [sys.executable, "-m", "medtrain", "train", "--recipe", "toy", "--override", f"data.root={toy_data}",
         "--output-dir", str(runs), "--override", "trainer.accelerator=cpu", "--devices", "2",
         "--override", "trainer.strategy=ddp", "--epochs", "2", "--quiet"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    (run_dir,) = runs.glob("toy/run_*")
    report = json.loads((run_dir / "report.json").read_text())
    assert report["test"]["mse"] < report["test"]["baseline_mse"]
    assert (run_dir / "checkpoints" / "final.ckpt").is_file()
