"""Reading the small JSON files users hand to medtrain (``dataset.json``, ``meta.json``): one error per problem."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from medtrain.errors import DataError


def read_json_object(path: Path, *, expected: str = "a JSON object") -> dict[str, Any]:
    """The JSON object stored in ``path``.

    Raises :class:`DataError` naming the file when it cannot be read or decoded (with the decoder's line and
    column) or holds something other than an object (``expected`` says what it should look like).
    """
    try:
        payload = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"cannot read {path}: {exc}") from exc
    if not isinstance(payload, dict):
        raise DataError(f"{path}: expected {expected}, found {type(payload).__name__}")
    return payload
