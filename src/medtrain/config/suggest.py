""" "Did you mean" support for the config system: close-match suggestions and unknown-key messages.

An unknown key is reported with where it came from and, when a key at the same level is spelled alike,
the key the user probably meant; otherwise the valid keys at that level are listed.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence


def suggest(name: str, candidates: Iterable[str]) -> str | None:
    """The candidate closest to ``name`` (a case-insensitive exact match first, then difflib), or None."""
    choices = list(candidates)
    for choice in choices:
        if choice.lower() == name.lower():
            return choice
    matches = difflib.get_close_matches(name, choices, n=1, cutoff=0.6)
    return matches[0] if matches else None


class UnknownKey(Exception):
    """A dotted key that the schema does not have; ``candidates`` are the valid keys at the same level.

    Empty ``candidates`` means the parent key holds a value, not a section, so it has no sub-keys.
    """

    def __init__(self, path: Sequence[str], candidates: Sequence[str]) -> None:
        super().__init__(".".join(path))
        self.path = tuple(path)
        self.candidates = tuple(candidates)

    def message(self, source: str | None) -> str:
        """One line naming the key, its source (``"from file X"``) and a suggestion or the valid keys."""
        dotted = ".".join(self.path)
        parent = ".".join(self.path[:-1])
        head = f"unknown config key '{dotted}'" + (f" ({source})" if source else "")
        if not self.candidates:
            return f"{head}; '{parent}' takes a value, not sub-keys"
        match = suggest(self.path[-1], self.candidates)
        if match is not None:
            return f"{head}; did you mean '{f'{parent}.{match}' if parent else match}'?"
        where = f"under '{parent}'" if parent else "at the top level"
        return f"{head}; valid keys {where}: {', '.join(self.candidates)}"
