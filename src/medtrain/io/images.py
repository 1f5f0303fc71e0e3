"""Grayscale frames (PNG/JPEG/TIFF via Pillow) and a memory-mapped cache of many decoded frames.

Conversion to 8-bit gray, exactly:

* 8-bit gray (``L``) is kept as is; ``1`` (bilevel) becomes 0/255.
* RGB, RGBA, palette and other colour modes go through Pillow's ``convert("L")``: ITU-R 601-2 luma,
  ``L = R * 299/1000 + G * 587/1000 + B * 114/1000`` (alpha is ignored), so pure red (255, 0, 0) → 76.
* 16-bit (and 32-bit integer) gray is scaled by 1/257 and rounded, ``round(v / 257)`` clipped to 0..255, so
  65535 → 255 and 257 → 1 (no value falls on .5, so the rounding rule does not matter).
* Float images (``F``) are refused: their range is unknown.

Multi-frame files (TIFF stacks) give their first frame. With ``size=(H, W)`` the 8-bit frame is resized with
Pillow's bilinear filter (``Image.resize((W, H), Image.Resampling.BILINEAR)``).

:class:`ImageCache` holds many frames decoded once into one ``uint8 [N, H, W]`` ``.npy``; every epoch then reads
the memory map instead of decoding PNGs again.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from medtrain.errors import DataError
from medtrain.io.atomic import atomic_write_bytes, atomic_write_json
from medtrain.io.paths import require_file

_INTEGER_MODES = ("I", "I;16", "I;16L", "I;16B", "I;16N")


def read_grayscale(path: Path, *, size: tuple[int, int] | None = None) -> np.ndarray:
    """Read the image at ``path`` as ``uint8 [H, W]`` gray (conversion rules in the module docstring).

    ``size=(H, W)`` resizes bilinearly. Raises :class:`DataError` naming the file when it is missing, cannot be
    decoded, or is a float image.
    """
    path = require_file(Path(path), "image")
    try:
        with Image.open(path) as image:
            image.load()
            if image.mode in _INTEGER_MODES:
                gray = Image.fromarray(np.clip(np.rint(np.asarray(image) / 257.0), 0, 255).astype(np.uint8))
            elif image.mode == "F":
                raise DataError(f"image {path}: float images (mode F) are not supported; expected 8/16-bit gray or RGB")
            else:
                gray = image.convert("L")
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as error:
        raise DataError(f"cannot read image {path}: {error}") from error
    if size is not None:
        gray = gray.resize((size[1], size[0]), Image.Resampling.BILINEAR)
    return np.asarray(gray, dtype=np.uint8)


def write_grayscale(path: Path, array: np.ndarray) -> Path:
    """Write a ``uint8 [H, W]`` array atomically as the format of ``path``'s suffix (PNG, JPEG, TIFF, ...).

    Raises ``ValueError`` for any other dtype or rank. JPEG is lossy: reading it back gives close, not equal,
    values.
    """
    array = np.asarray(array)
    if array.dtype != np.uint8 or array.ndim != 2:
        raise ValueError(f"expected a uint8 [H, W] array, got {array.dtype} {array.shape}")
    path = Path(path)
    image_format = Image.registered_extensions().get(path.suffix.lower())
    if image_format is None:
        raise ValueError(f"unknown image suffix {path.suffix!r} for {path}")
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=image_format)
    return atomic_write_bytes(path, buffer.getvalue())


class ImageCache:
    """Frames decoded once into ``cache_file`` (``uint8 [N, H, W]`` ``.npy``, memory-mapped read-only).

    A sidecar ``<cache_file>.json`` holds ``{"key", "size", "paths"}``: the caller's fingerprint string (it
    should cover the image files and the size), the frame size and the ordered image paths, each relative to
    the cache file's folder (so moving the cache together with the data keeps it valid).
    """

    def __init__(self, frames: np.ndarray, paths: Sequence[str], key: str, folder: Path) -> None:
        self._frames = frames
        self._index = {relative: i for i, relative in enumerate(paths)}
        self._folder = folder
        self.key = key

    @staticmethod
    def sidecar(cache_file: Path) -> Path:
        """The JSON file that describes ``cache_file``: ``<cache_file>.json``."""
        return Path(cache_file).with_name(Path(cache_file).name + ".json")

    @classmethod
    def build(
        cls, paths: Sequence[Path], cache_file: Path, *, size: tuple[int, int] = (224, 224), key: str
    ) -> ImageCache:
        """Decode ``paths`` (each with :func:`read_grayscale` at ``size``) into a new cache at ``cache_file``.

        Atomic: frames go to a temporary ``.npy`` in the same folder; then the old sidecar is removed, the
        ``.npy`` is moved into place with ``os.replace`` and the sidecar is written last, so a crash leaves
        either no sidecar (no cache) or a complete one. Raises :class:`DataError` for an unreadable image and
        ``ValueError`` for a path given twice.
        """
        cache_file = Path(cache_file)
        folder = cache_file.parent.resolve()
        relative = [_relative(path, folder) for path in paths]
        if len(set(relative)) != len(relative):
            raise ValueError(f"ImageCache.build: a path is given more than once in {cache_file}'s list")
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{cache_file.name}.", suffix=".tmp.npy", dir=folder)
        os.close(fd)
        try:
            frames = np.lib.format.open_memmap(tmp_name, mode="w+", dtype=np.uint8, shape=(len(relative), *size))
            for i, path in enumerate(paths):
                frames[i] = read_grayscale(Path(path), size=size)
            frames.flush()
            del frames
            cls.sidecar(cache_file).unlink(missing_ok=True)
            os.replace(tmp_name, cache_file)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp_name)
            raise
        atomic_write_json(cls.sidecar(cache_file), {"key": key, "size": list(size), "paths": relative})
        return cls(np.load(cache_file, mmap_mode="r", allow_pickle=False), relative, key, folder)

    @classmethod
    def open(cls, cache_file: Path, *, key: str) -> ImageCache | None:
        """The cache at ``cache_file``, or ``None`` when it is missing, unreadable, inconsistent with its sidecar
        or was built under another ``key`` (stale): in every such case the caller rebuilds it."""
        cache_file = Path(cache_file)
        try:
            meta = json.loads(cls.sidecar(cache_file).read_text(encoding="utf-8"))
            if meta["key"] != key:
                return None
            frames = np.load(cache_file, mmap_mode="r", allow_pickle=False)
            if frames.dtype != np.uint8 or frames.shape != (len(meta["paths"]), *meta["size"]):
                return None
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return cls(frames, meta["paths"], key, cache_file.parent.resolve())

    def __len__(self) -> int:
        return len(self._frames)

    def __getitem__(self, index: int) -> np.ndarray:
        """Frame ``index`` as a read-only ``uint8 [H, W]`` view of the memory map (no copy, no decoding)."""
        return self._frames[index]

    def index_of(self, path: Path) -> int:
        """The position of ``path`` in the list the cache was built from; ``KeyError`` if it is not there."""
        relative = _relative(path, self._folder)
        if relative not in self._index:
            raise KeyError(f"{path} is not in the image cache")
        return self._index[relative]


def _relative(path: Path, folder: Path) -> str:
    """``path`` resolved, as a POSIX path relative to ``folder`` (may start with ``..``)."""
    return Path(os.path.relpath(Path(path).resolve(), folder)).as_posix()
