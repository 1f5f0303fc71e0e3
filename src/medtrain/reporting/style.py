"""The one plotting style of medtrain: every figure medtrain draws is made under ``plot_style()`` and written
with ``save_figure``.

Importing this module forces matplotlib's non-interactive Agg backend, so plotting works on headless
training machines and never opens a window.
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Iterator
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # before pyplot is imported anywhere below

import matplotlib.pyplot as plt
from cycler import cycler
from matplotlib.figure import Figure

from medtrain.io.atomic import atomic_write_bytes

DPI = 120

# Okabe-Ito: distinguishable under the common forms of colour blindness; yellow last (low contrast on white).
PALETTE: tuple[str, ...] = (
    "#0072B2",
    "#E69F00",
    "#009E73",
    "#D55E00",
    "#CC79A7",
    "#56B4E9",
    "#000000",
    "#F0E442",
)

_RC_PARAMS: dict[str, object] = {
    "figure.dpi": DPI,
    "savefig.dpi": DPI,
    "figure.autolayout": True,
    "font.size": 10,
    "axes.titlesize": 11,
    "axes.labelsize": 10,
    "xtick.labelsize": 9,
    "ytick.labelsize": 9,
    "legend.fontsize": 9,
    "legend.frameon": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "grid.linestyle": "-",
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.prop_cycle": cycler(color=PALETTE),
}


@contextlib.contextmanager
def plot_style() -> Iterator[None]:
    """Apply medtrain's rcParams (fonts, grid, colour-blind-safe palette, dpi 120, tight layout) inside the
    block and restore the previous rcParams on exit. Create figures inside the block."""
    with matplotlib.rc_context(_RC_PARAMS):
        yield


def save_figure(fig: Figure, path: str | os.PathLike[str]) -> Path:
    """Render ``fig`` as PNG at medtrain's dpi, write it atomically to ``path`` (parents created) and close
    the figure, also when rendering fails. ``path`` must end in ``.png``; returns it as a ``Path``."""
    target = Path(path)
    try:
        if target.suffix.lower() != ".png":
            raise ValueError(f"save_figure writes PNG only, got {target}")
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=DPI)
        return atomic_write_bytes(target, buffer.getvalue())
    finally:
        plt.close(fig)
