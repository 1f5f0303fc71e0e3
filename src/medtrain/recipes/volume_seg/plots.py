"""Plots of volume-seg, in medtrain's one style.

- the validation debug visual (``<model>_debug.png`` for 2-D data, ``<model>_debug.gif`` for 3-D): one row per
  target, columns image | label | prediction, of the first sample of the first validation batch; a GIF steps
  through z;
- ``dice_per_target.png`` for the report: held-out Dice per target (and per class), model beside baseline.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import Colormap, ListedColormap, to_rgb
from matplotlib.figure import Figure
from matplotlib.image import AxesImage
from PIL import Image

from medtrain.io.atomic import atomic_path
from medtrain.reporting.style import PALETTE, plot_style, save_figure

KINDS = ("binary", "multiclass", "regression", "vector")
GIF_FRAME_MS = 150
_CELL_INCHES = 2.6
_MAX_CLASS_TICKS = 12  # a multiclass colour bar labels every class up to this many
_PROBABILITY_CMAP = "viridis"
_SIGNED_CMAP = "RdBu_r"
_CLASS_CMAP_NAME = "volume_seg_classes"
_BACKGROUND_COLOUR = "#1a1a1a"
_CLASS_COLOURS = tuple(colour for colour in PALETTE if colour != "#000000")  # black is the background
_INVALID_ALPHA = (0.45, 0.8)  # darkening of invalid voxels: between and on the hatch stripes


@dataclass(frozen=True)
class _Panel:
    """What one label or prediction panel shows: ``values`` ``[Z, Y, X]`` drawn with ``cmap`` over
    ``[vmin, vmax]``, and the voxels to darken (``invalid``, ``[Z, Y, X]`` bool) or None."""

    values: np.ndarray
    cmap: str | Colormap
    vmin: float
    vmax: float
    invalid: np.ndarray | None


def write_debug_image(
    image: np.ndarray,
    targets: Mapping[str, np.ndarray],
    predictions: Mapping[str, np.ndarray],
    path: str | os.PathLike[str],
    *,
    kinds: Mapping[str, str],
    masks: Mapping[str, np.ndarray] | None = None,
    max_frames: int = 32,
) -> Path:
    """Draw one sample's image, labels and predictions, one row per target (columns image | label | prediction),
    and write it atomically beside ``path`` with the suffix replaced: ``.png`` for 2-D data, an animated ``.gif``
    (loop forever, 150 ms per frame) for 3-D data. Returns the written path.

    ``image`` is ``[C, *spatial]`` with spatial ``(y, x)`` or ``(z, y, x)``; channel 0 is shown in grey, mapped
    linearly from its 1st–99th percentile (over the shown slices) to black–white. ``targets`` and
    ``predictions`` map each target name to ``[K, *spatial]``; predictions are already activated. Per
    ``kinds[name]``:

    - ``"binary"``: channel 0 of label and probability, colour map over ``[0, 1]``;
    - ``"multiclass"``: class index maps (argmax over channels, or the single channel rounded when ``K == 1``),
      one qualitative colour per class, class 0 dark;
    - ``"regression"`` / ``"vector"``: channel 0 with a diverging colour map over ``[-m, m]``,
      ``m = max |value|`` of label and prediction over the shown slices (1 when all are 0).

    ``masks`` (optional) maps a target to ``[1, *spatial]``; voxels where it is 0 are unlabelled and drawn
    darkened and hatched over that target's label and prediction. A 3-D sample gives ``min(Z, max_frames)``
    frames at z slices spread evenly from the first to the last. Raises ``ValueError`` for an unknown or missing
    kind, target names that differ between ``targets``, ``predictions`` and ``kinds``, a mask for an unknown
    target, spatial shapes that differ from the image's, an image that is not 3-D or 4-D, or ``max_frames < 1``.
    """
    image = np.asarray(image)
    if image.ndim not in (3, 4):
        raise ValueError(f"image must be [C, y, x] or [C, z, y, x], got shape {image.shape}")
    if max_frames < 1:
        raise ValueError(f"max_frames must be at least 1, got {max_frames}")
    masks = masks or {}
    _check_names(targets, predictions, kinds, masks)
    spatial = image.shape[1:]
    volumetric = image.ndim == 4
    depth = spatial[0] if volumetric else 1
    slices = np.linspace(0, depth - 1, min(depth, max_frames)).round().astype(int)

    def as_stack(array: np.ndarray, what: str) -> np.ndarray:
        """``[K, *spatial]`` → ``[K, Z, Y, X]`` at the shown z slices (Z = 1 for 2-D)."""
        array = np.asarray(array)
        if array.ndim != image.ndim or array.shape[1:] != spatial:
            raise ValueError(f"{what} must be [K, {', '.join(map(str, spatial))}], got shape {array.shape}")
        return array[:, slices] if volumetric else array[:, None]

    grey = _normalised(as_stack(image, "image")[0])
    rows: list[tuple[str, str, _Panel, _Panel]] = []
    for name, kind in ((name, kinds[name]) for name in targets):
        invalid = as_stack(masks[name], f"mask of {name!r}")[0] == 0 if name in masks else None
        label = as_stack(targets[name], f"label of {name!r}")
        prediction = as_stack(predictions[name], f"prediction of {name!r}")
        rows.append((name, kind, *_panels(kind, label, prediction, invalid)))

    with plot_style():
        fig, show = _debug_figure(grey, rows)
        if not volumetric:
            show(0)
            return save_figure(fig, Path(path).with_suffix(".png"))
        try:
            palette = _gif_palette([panel.cmap for row in rows for panel in row[2:]])
            frames = []
            for index, z in enumerate(slices):
                show(index)
                fig.suptitle(f"z = {z}  (slices 0–{depth - 1})")
                fig.canvas.draw()
                if index == 0:
                    fig.set_layout_engine("none")  # freeze the layout so frames line up
                rgb = Image.fromarray(np.asarray(fig.canvas.buffer_rgba())[..., :3].copy())
                frames.append(rgb.quantize(palette=palette, dither=Image.Dither.NONE))
        finally:
            plt.close(fig)
    gif = Path(path).with_suffix(".gif")
    with atomic_path(gif) as tmp:
        frames[0].save(tmp, format="GIF", save_all=True, append_images=frames[1:], duration=GIF_FRAME_MS, loop=0)
    return gif


def plot_dice_per_target(
    metrics: Mapping[str, float],
    baselines: Mapping[str, float],
    path: str | os.PathLike[str],
    *,
    title: str = "held-out Dice per target",
) -> Path:
    """Bar chart of Dice scores, the model's bar beside the baseline's for each key of ``metrics``, written as
    PNG to ``path``; returns it.

    Keys are shown sorted (so ``dice_<target>`` is followed by its per-class ``dice_<target>_<class>``) and
    labelled without a leading ``dice_``; each bar carries its value. A key missing from ``baselines`` (or a
    NaN value) has no bar there. Raises ``ValueError`` when ``metrics`` is empty.
    """
    if not metrics:
        raise ValueError("plot_dice_per_target needs at least one metric")
    keys = sorted(metrics)
    labels = [key.removeprefix("dice_") for key in keys]
    positions = np.arange(len(keys))
    width = 0.4
    with plot_style():
        fig, ax = plt.subplots(figsize=(max(4.0, 0.9 * len(keys) + 1.5), 4.0))
        series = (
            ("model", [metrics[key] for key in keys], -width / 2),
            ("baseline", [baselines.get(key, np.nan) for key in keys], width / 2),
        )
        for label, values, offset in series:
            bars = ax.bar(positions + offset, np.asarray(values, dtype=float), width, label=label)
            ax.bar_label(bars, labels=[_bar_text(value) for value in values], fontsize=8, padding=2)
        ax.set_xticks(positions, labels, rotation=30 if len(keys) > 4 else 0, ha="right" if len(keys) > 4 else "center")
        ax.set_ylim(0.0, 1.12)
        ax.set_ylabel("Dice")
        ax.set_title(title)
        ax.grid(axis="x", visible=False)
        ax.legend(loc="upper right", ncol=2)
        return save_figure(fig, path)


def _bar_text(value: float) -> str:
    return "" if np.isnan(value) else f"{value:.2f}"


def _check_names(
    targets: Mapping[str, np.ndarray],
    predictions: Mapping[str, np.ndarray],
    kinds: Mapping[str, str],
    masks: Mapping[str, np.ndarray],
) -> None:
    """Raise ``ValueError`` unless targets, predictions and kinds name the same targets (at least one) with
    known kinds, and every mask belongs to one of them."""
    if not targets:
        raise ValueError("write_debug_image needs at least one target")
    names = set(targets)
    for what, others in (("predictions", predictions), ("kinds", kinds)):
        if set(others) != names:
            raise ValueError(f"{what} name {sorted(others)} but targets name {sorted(names)}")
    unknown = sorted(set(masks) - names)
    if unknown:
        raise ValueError(f"masks given for unknown targets {unknown}; targets are {sorted(names)}")
    for name, kind in kinds.items():
        if kind not in KINDS:
            raise ValueError(f"kind of target {name!r} must be one of {KINDS}, got {kind!r}")


def _normalised(volume: np.ndarray) -> np.ndarray:
    """``volume`` mapped linearly from its [1st, 99th] percentile to [0, 1], clipped (all 0 when constant)."""
    low, high = np.percentile(volume, [1.0, 99.0])
    span = high - low if high > low else 1.0
    return np.clip((volume.astype(np.float32) - low) / span, 0.0, 1.0)


def _class_map(array: np.ndarray) -> np.ndarray:
    """Class indices ``[Z, Y, X]`` of ``[K, Z, Y, X]``: argmax over channels, or channel 0 rounded if K = 1."""
    return np.rint(array[0]).astype(np.int64) if array.shape[0] == 1 else np.argmax(array, axis=0)


def _class_colours(count: int) -> ListedColormap:
    """``count`` colours: dark for class 0, then the house palette (cycled)."""
    return ListedColormap(
        [_BACKGROUND_COLOUR, *(_CLASS_COLOURS[i % len(_CLASS_COLOURS)] for i in range(count - 1))],
        name=_CLASS_CMAP_NAME,
    )


def _panels(kind: str, label: np.ndarray, prediction: np.ndarray, invalid: np.ndarray | None) -> tuple[_Panel, _Panel]:
    """The (label, prediction) panels of one target of ``kind`` from ``[K, Z, Y, X]`` stacks; a multiclass
    colour map has one colour per class of the prediction's channels and of the labelled voxels."""
    if kind == "binary":
        return tuple(_Panel(array[0], _PROBABILITY_CMAP, 0.0, 1.0, invalid) for array in (label, prediction))
    if kind == "multiclass":
        label_classes, predicted_classes = _class_map(label), _class_map(prediction)
        labelled = label_classes if invalid is None else label_classes[~invalid]  # ignore values may be huge
        count = max(2, label.shape[0], prediction.shape[0], int(labelled.max(initial=0)) + 1)
        cmap = _class_colours(count)
        return tuple(_Panel(c, cmap, -0.5, count - 0.5, invalid) for c in (label_classes, predicted_classes))
    limit = float(max(np.abs(label[0]).max(), np.abs(prediction[0]).max())) or 1.0
    return tuple(_Panel(array[0], _SIGNED_CMAP, -limit, limit, invalid) for array in (label, prediction))


def _gif_palette(cmaps: list[str | Colormap]) -> Image.Image:
    """A ``P`` image whose 256-colour palette holds, for every GIF frame alike: every colour of each listed
    (class) colour map with its two darkened shades under the invalid overlay, then an even share of the
    remaining entries sampled evenly along the grey map (image, text) and each continuous colour map."""
    listed: dict[tuple[float, ...], None] = {}
    continuous: dict[str, Colormap] = {"gray": matplotlib.colormaps["gray"]}
    for cmap in cmaps:
        resolved = matplotlib.colormaps[cmap] if isinstance(cmap, str) else cmap
        if isinstance(resolved, ListedColormap) and resolved.name == _CLASS_CMAP_NAME:
            for colour in resolved.colors:
                rgb = np.asarray(to_rgb(colour))
                listed.update({tuple(rgb * (1.0 - alpha)): None for alpha in (0.0, *_INVALID_ALPHA)})
        else:
            continuous[resolved.name] = resolved
    share = (256 - len(listed)) // len(continuous)
    samples = [cmap(np.linspace(0.0, 1.0, share))[:, :3] for cmap in continuous.values()]
    colours = np.concatenate([np.asarray(list(listed), dtype=float).reshape(-1, 3), *samples])
    palette = Image.new("P", (1, 1))
    palette.putpalette(np.rint(colours * 255).astype(np.uint8).tobytes())
    return palette


def _invalid_overlay(invalid: np.ndarray) -> np.ndarray:
    """RGBA ``[Z, Y, X, 4]``: black over invalid voxels, denser on diagonal stripes (the hatch), clear elsewhere."""
    y, x = np.indices(invalid.shape[1:])
    period = max(2, min(invalid.shape[1:]) // 12)
    stripes = (y + x) % (2 * period) < period
    overlay = np.zeros((*invalid.shape, 4), dtype=np.float32)
    overlay[..., 3] = np.where(invalid, np.where(stripes, _INVALID_ALPHA[1], _INVALID_ALPHA[0]), 0.0)
    return overlay


def _debug_figure(
    grey: np.ndarray, rows: list[tuple[str, str, _Panel, _Panel]]
) -> tuple[Figure, Callable[[int], None]]:
    """The debug figure and a function that shows frame ``index`` (position along the Z of the stacks) in it."""
    height, width = grey.shape[1:]
    aspect = height / width
    fig, axes = plt.subplots(
        len(rows),
        3,
        figsize=(3 * _CELL_INCHES + 0.6, len(rows) * _CELL_INCHES * min(max(aspect, 0.5), 2.0) + 0.4),
        squeeze=False,
    )
    updates: list[tuple[AxesImage, np.ndarray]] = []
    for (name, kind, label, prediction), row in zip(rows, axes, strict=True):
        for ax in row:
            ax.set_xticks([])
            ax.set_yticks([])
            ax.grid(False)
        updates.append((row[0].imshow(grey[0], cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest"), grey))
        row[0].set_title("image")
        for ax, panel in ((row[1], label), (row[2], prediction)):
            shown = ax.imshow(
                panel.values[0], cmap=panel.cmap, vmin=panel.vmin, vmax=panel.vmax, interpolation="nearest"
            )
            updates.append((shown, panel.values))
            if panel.invalid is not None:
                overlay = _invalid_overlay(panel.invalid)
                updates.append((ax.imshow(overlay[0], interpolation="nearest"), overlay))
        colourbar = fig.colorbar(shown, ax=row[2], fraction=0.046)
        if kind == "multiclass" and prediction.vmax < _MAX_CLASS_TICKS:
            colourbar.set_ticks(range(round(prediction.vmax + 0.5)))
        row[1].set_title(f"{name}: label")
        row[2].set_title(f"{name}: prediction ({kind})")

    def show(index: int) -> None:
        for shown, stack in updates:
            shown.set_data(stack[index])

    return fig, show
