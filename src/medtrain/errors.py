"""The exceptions that decide medtrain's exit codes (ARCHITECTURE.md, "Exit codes").

:class:`UserError` and its subclasses: bad arguments, bad data, unusable checkpoints → exit 2 with one readable
line. Configuration errors live in :mod:`medtrain.config.errors` (``config/`` imports nothing of medtrain but
itself) and are treated the same way. :class:`TrainingInterrupted` → 128 + signal (130 SIGINT, 143 SIGTERM);
:class:`TrainingFailed` and anything else → exit 1. This module imports nothing heavy, so the CLI can name
these classes without loading torch.
"""

from __future__ import annotations

import signal
from pathlib import Path


class UserError(Exception):
    """A problem the user can fix: the message names the file, key or value and what was expected."""

    exit_code = 2


class DataError(UserError):
    """Input data is missing, malformed or inconsistent with the config."""


class CheckpointError(UserError):
    """A checkpoint or exported model cannot be used (missing, corrupt, other recipe, incompatible config)."""


class UsageError(UserError):
    """Command-line arguments are wrong or contradict each other."""


class TrainingInterrupted(Exception):
    """Raised at a batch boundary after SIGINT/SIGTERM; the exit code is ``128 + signum``."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"training interrupted by {signal.Signals(signum).name}")
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


class TrainingFailed(RuntimeError):
    """Training raised; ``recovery`` names recovery.json when a checkpoint could be saved (exit code 1)."""

    exit_code = 1

    def __init__(self, message: str, recovery: Path | None) -> None:
        super().__init__(message)
        self.recovery = recovery
