"""The one error type of the config system: its message names the key, the value, where it came from and
what was expected. The CLI turns it into exit code 2."""

from __future__ import annotations


class ConfigError(ValueError):
    """A configuration problem the user can fix (unknown key, wrong type, bad file, bad override)."""

    exit_code = 2
