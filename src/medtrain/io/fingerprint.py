"""Cache keys for derived data (preprocessed arrays, statistics) computed from input files.

A file's fingerprint is cheap: its name, size, modification time (``st_mtime_ns``) and a SHA-256 of its first
and last ``head_bytes`` bytes. Consequences, by design:

* the mtime is part of the key, so touching a file (or copying it without preserving times) invalidates
  the cache even when the content is unchanged;
* a content change in the middle of a large file that keeps the same size and mtime is **not** detected.
  This is the documented trade-off for not hashing gigabytes of volumes on every run: file formats keep
  their headers (shape, dtype, spacing) at the start, and editors and copy tools update the mtime.

Keys are SHA-256 digests of canonical JSON (sorted keys, no whitespace), so they are stable across runs,
processes and machines for the same files and parameters.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from medtrain.errors import DataError


def _canonical_json(payload: Any) -> str:
    """JSON text with sorted keys and no whitespace; non-JSON values are written with ``str``."""
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=str)


def fingerprint_file(path: Path, *, head_bytes: int = 65536) -> dict[str, Any]:
    """Return ``{"name", "size", "mtime_ns", "head_sha256"}`` for ``path``.

    ``head_sha256`` hashes the first ``head_bytes`` bytes and the last ``head_bytes`` bytes (the whole file
    when it is shorter than ``2 * head_bytes``). ``name`` is the file name only; see
    :func:`fingerprint_files` for names relative to a root. Raises ``OSError`` if the file cannot be read.
    """
    path = Path(path)
    stat = path.stat()
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        if stat.st_size <= 2 * head_bytes:
            digest.update(handle.read())
        else:
            digest.update(handle.read(head_bytes))
            handle.seek(stat.st_size - head_bytes)
            digest.update(handle.read(head_bytes))
    return {
        "name": path.name,
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "head_sha256": digest.hexdigest(),
    }


def fingerprint_files(paths: Iterable[Path], *, root: Path | None = None) -> str:
    """Return the SHA-256 hex digest of the sorted fingerprints of ``paths`` (their order is irrelevant).

    With ``root``, each ``name`` is the POSIX path relative to ``root`` (moving the whole tree keeps the key,
    renaming a sub-folder changes it) and a path outside ``root`` raises :class:`DataError`; without it,
    ``name`` is the bare file name as in :func:`fingerprint_file`.
    """
    base = Path(root).resolve() if root is not None else None
    entries = []
    for path in paths:
        entry = fingerprint_file(Path(path))
        if base is not None:
            resolved = Path(path).resolve()
            if not resolved.is_relative_to(base):
                raise DataError(f"file {path} is outside the fingerprint root {base}")
            entry["name"] = resolved.relative_to(base).as_posix()
        entries.append(entry)
    entries.sort(key=_canonical_json)
    return hashlib.sha256(_canonical_json(entries).encode("utf-8")).hexdigest()


def cache_key(files_fingerprint: str, params: Mapping[str, Any]) -> str:
    """Return a 16-hex-character key from a :func:`fingerprint_files` digest and the processing parameters.

    ``params`` are serialised as canonical JSON (key order irrelevant; non-JSON values via ``str``).
    """
    payload = files_fingerprint + "\n" + _canonical_json(dict(params))
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:16]


#: metadata files of a zarr store (v2 and v3), fingerprinted by content; chunks by size and mtime only
ZARR_METADATA = frozenset({".zarray", ".zattrs", ".zgroup", ".zmetadata", "zarr.json"})


def fingerprint_path(path: Path) -> dict[str, Any]:
    """:func:`fingerprint_file` of a file; for a folder (a zarr store), the fingerprints of its metadata files and
    a SHA-256 of every other file's relative path, size and mtime (chunks are not read)."""
    path = Path(path)
    if not path.is_dir():
        return fingerprint_file(path)
    metadata, chunks = [], []
    for folder, _, files in sorted(os.walk(path)):
        for name in sorted(files):
            file = Path(folder) / name
            relative = file.relative_to(path).as_posix()
            if name in ZARR_METADATA:
                metadata.append({**fingerprint_file(file), "name": relative})
            else:
                stat = file.stat()
                chunks.append([relative, stat.st_size, stat.st_mtime_ns])
    digest = hashlib.sha256(_canonical_json(chunks).encode("utf-8")).hexdigest()
    return {"name": path.name, "metadata": metadata, "chunks_sha256": digest}
