"""Checkpoint files: atomic writes, safe loading, medtrain metadata, compatibility and ``--resume auto``.

Lightning's ``TorchCheckpointIO`` writes in place, so a kill during ``torch.save`` leaves a truncated file;
:class:`AtomicCheckpointIO` writes to a temporary file in the same folder and renames it. Loading always uses
``torch.load(weights_only=True)``: a checkpoint can never execute code.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from medtrain.config.schema import RunConfig
from medtrain.engine.task import CHECKPOINT_META_KEY
from medtrain.errors import CheckpointError
from medtrain.io.atomic import atomic_open

log = logging.getLogger(__name__)

#: checkpoint file names the engine writes besides the best-k ones
INTERRUPTED = "interrupted.ckpt"
LAST = "last.ckpt"
FINAL = "final.ckpt"


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` with write-then-rename saves and ``weights_only=True`` loads."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        with atomic_open(path) as handle:
            torch.save(checkpoint, handle)

    def load_checkpoint(self, path: Any, map_location: Any | None = None, weights_only: bool | None = None) -> Any:
        return read_checkpoint(Path(path), map_location=map_location)


def read_checkpoint(path: Path, *, map_location: Any = "cpu") -> dict[str, Any]:
    """Load a checkpoint safely (``weights_only=True``); CheckpointError naming the file when unusable."""
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises many types for truncated, corrupt or unsafe files
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"checkpoint {path} cannot be read (truncated, corrupt or unsafe): {first_line}") from exc
    if not isinstance(checkpoint, dict) or CHECKPOINT_META_KEY not in checkpoint:
        raise CheckpointError(f"{path} is not a medtrain checkpoint (no '{CHECKPOINT_META_KEY}' metadata)")
    return checkpoint


def checkpoint_meta(checkpoint: dict[str, Any]) -> dict[str, Any]:
    """The medtrain metadata of a loaded checkpoint: recipe, config (dict), config_hash, medtrain_version."""
    return checkpoint[CHECKPOINT_META_KEY]


def check_compatible(meta: dict[str, Any], cfg: RunConfig, *, path: Path) -> None:
    """Reject a checkpoint from another recipe or with another model architecture than ``cfg``.

    Other differences (epochs, learning rate, data) are allowed: resuming or fine-tuning with them is the
    point of ``--resume``. Raises CheckpointError naming the file and the differing keys.
    """
    if meta.get("recipe") != cfg.recipe:
        raise CheckpointError(f"checkpoint {path} was written by recipe '{meta.get('recipe')}', not '{cfg.recipe}'")
    saved = meta.get("config", {}).get("model", {})
    current = cfg.model.model_dump(mode="json")
    differing = sorted(
        key for key in set(saved) | set(current) if saved.get(key, "<missing>") != current.get(key, "<missing>")
    )
    if differing:
        details = ", ".join(
            f"model.{key}: checkpoint {saved.get(key, '<missing>')!r} vs config {current.get(key, '<missing>')!r}"
            for key in differing
        )
        raise CheckpointError(f"checkpoint {path} has an incompatible model config ({details})")


def _usable(path: Path, recipe: str) -> bool:
    with contextlib.suppress(CheckpointError):
        return checkpoint_meta(read_checkpoint(path)).get("recipe") == recipe
    log.warning("skipping unusable checkpoint %s", path)
    return False


def find_resume_checkpoint(output_dir: Path, experiment: str, recipe: str) -> Path | None:
    """Newest usable checkpoint (by modification time) of any run of ``experiment`` under ``output_dir``.

    Candidates are every ``*.ckpt`` in ``<output_dir>/<experiment>/run_*/checkpoints/``; unreadable files and
    checkpoints of other recipes are skipped. None when there is none.
    """
    experiment_dir = output_dir / experiment
    candidates = sorted(
        experiment_dir.glob("run_*/checkpoints/*.ckpt"), key=lambda p: p.stat().st_mtime_ns, reverse=True
    )
    return next((path for path in candidates if _usable(path, recipe)), None)
