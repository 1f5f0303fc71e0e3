"""User-facing errors: each maps to exit code 2 and one readable line (see ARCHITECTURE.md, Exit codes).

Raise these for bad arguments, bad data and unusable checkpoints. Anything else escaping a command is a
runtime failure (exit 1). Configuration errors live in :mod:`medtrain.config.errors` (``config/`` imports
nothing of medtrain but itself); the CLI treats both families the same way.
"""

from __future__ import annotations


class UserError(Exception):
    """A problem the user can fix: the message names the file, key or value and what was expected."""

    exit_code = 2


class DataError(UserError):
    """Input data is missing, malformed or inconsistent with the config."""


class CheckpointError(UserError):
    """A checkpoint or exported model cannot be used (missing, corrupt, other recipe, incompatible config)."""


class UsageError(UserError):
    """Command-line arguments are wrong or contradict each other."""
