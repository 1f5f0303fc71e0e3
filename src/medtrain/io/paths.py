"""Safe paths: keep paths taken from configs and manifests inside their data root, and check they exist.

Every path that comes from user data (a manifest row, a config entry) goes through :func:`resolve_inside`
before it is opened, so that an absolute path, a ``..`` or a symlink cannot make medtrain read or write
outside the folder the user pointed it at.
"""

from __future__ import annotations

from pathlib import Path

from medtrain.errors import DataError


def resolve_inside(root: Path, relative: str | Path, *, what: str = "path") -> Path:
    """Return ``root / relative`` fully resolved (symlinks followed), or raise if it leaves ``root``.

    ``relative`` may be absolute; it is accepted only when it resolves inside ``root``. The check runs on
    resolved paths, so ``..`` components and symlinks pointing outside ``root`` are rejected alike. The
    target need not exist. Raises :class:`DataError` naming ``what``, the path and the root.
    """
    base = Path(root).resolve()
    candidate = (base / Path(relative)).resolve()
    if not candidate.is_relative_to(base):
        raise DataError(f"{what} {str(relative)!r} resolves to {candidate}, outside the root {base}")
    return candidate


def require_file(path: Path, what: str) -> Path:
    """Return ``path`` if it is an existing file.

    Raises :class:`DataError` "<what> not found: PATH", or "<what> is not a file: PATH".
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{what} not found: {path}")
    if not path.is_file():
        raise DataError(f"{what} is not a file: {path}")
    return path


def require_dir(path: Path, what: str) -> Path:
    """Return ``path`` if it is an existing folder.

    Raises :class:`DataError` "<what> not found: PATH", or "<what> is not a folder: PATH".
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{what} not found: {path}")
    if not path.is_dir():
        raise DataError(f"{what} is not a folder: {path}")
    return path
