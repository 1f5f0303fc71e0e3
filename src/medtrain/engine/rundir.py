"""The run directory: one layout for every recipe (ARCHITECTURE.md, "Run directory").

``<output_dir>/<experiment>/run_YYYYmmdd_HHMMSS/`` with config.yaml, environment.json, data_summary.json,
plan.json, checkpoints/, logs/, plots/, model/, report.{json,md,html} and, after an interruption,
recovery.json.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from medtrain import __version__
from medtrain.config import config_hash, config_to_yaml
from medtrain.config.schema import RunConfig
from medtrain.io.atomic import atomic_write_json, atomic_write_text


@dataclass(frozen=True)
class RunPaths:
    """Every path of one run directory."""

    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def environment(self) -> Path:
        return self.root / "environment.json"

    @property
    def data_summary(self) -> Path:
        return self.root / "data_summary.json"

    @property
    def plan(self) -> Path:
        return self.root / "plan.json"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def metrics_csv(self) -> Path:
        return self.logs / "metrics.csv"

    @property
    def plots(self) -> Path:
        return self.root / "plots"

    @property
    def model(self) -> Path:
        return self.root / "model"

    @property
    def report_json(self) -> Path:
        return self.root / "report.json"

    @property
    def recovery(self) -> Path:
        return self.root / "recovery.json"

    def make(self) -> RunPaths:
        """Create the folders of the layout; returns self."""
        for folder in (self.checkpoints, self.logs, self.plots):
            folder.mkdir(parents=True, exist_ok=True)
        return self


def create_run_dir(output_dir: Path, experiment: str, *, now: datetime | None = None) -> RunPaths:
    """A new ``<output_dir>/<experiment>/run_<timestamp>`` (``_2``, ``_3``... if that name is taken)."""
    stamp = (now or datetime.now()).strftime("%Y%m%d_%H%M%S")
    base = output_dir / experiment / f"run_{stamp}"
    candidate, index = base, 1
    while True:
        try:
            candidate.mkdir(parents=True, exist_ok=False)
            return RunPaths(candidate).make()
        except FileExistsError:
            index += 1
            candidate = base.with_name(f"{base.name}_{index}")


def run_dir_of(path: Path) -> RunPaths | None:
    """The run directory a checkpoint (``run/checkpoints/x.ckpt``) or a run folder belongs to, if any."""
    for candidate in (path, path.parent.parent):
        if (candidate / "config.yaml").is_file() and (candidate / "checkpoints").is_dir():
            return RunPaths(candidate)
    return None


def write_config(paths: RunPaths, cfg: RunConfig) -> Path:
    """Write the fully resolved config (with its hash as a comment) to ``config.yaml``."""
    header = f"# medtrain {__version__} resolved config; config_hash: {config_hash(cfg)}\n"
    return atomic_write_text(paths.config, header + config_to_yaml(cfg))


def _git_sha() -> str | None:
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, cwd=Path(__file__).parent
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() or None if result.returncode == 0 else None


def environment_info(cfg: RunConfig, *, device: str) -> dict[str, Any]:
    """Versions, device, seed, command line and config hash of this process."""
    import lightning
    import torch

    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": torch.__version__,
        "lightning": lightning.__version__,
        "medtrain": __version__,
        "git_sha": _git_sha(),
        "device": device,
        "cuda": torch.version.cuda,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "seed": cfg.seed,
        "config_hash": config_hash(cfg),
        "command": sys.argv,
        "started": datetime.now().isoformat(timespec="seconds"),
    }


def write_environment(paths: RunPaths, cfg: RunConfig, *, device: str) -> Path:
    """Write ``environment.json``."""
    return atomic_write_json(paths.environment, environment_info(cfg, device=device))
