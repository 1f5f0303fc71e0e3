"""The volume-seg debug visual (PNG for 2-D, GIF through z for 3-D) and the Dice-per-target bar chart."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np
import pytest
from matplotlib.colors import to_rgb
from PIL import Image

from medtrain.recipes.volume_seg.plots import plot_dice_per_target, write_debug_image

KINDS = {"fg": "binary", "organs": "multiclass", "dist": "regression"}


def _sample(spatial: tuple[int, ...]) -> tuple[np.ndarray, dict[str, np.ndarray], dict[str, np.ndarray]]:
    """A tiny image with one binary, one 3-class and one regression target, and predictions for each."""
    rng = np.random.default_rng(0)
    image = rng.normal(size=(2, *spatial)).astype(np.float32)
    classes = rng.integers(0, 3, size=spatial)
    one_hot = np.moveaxis(np.eye(3)[classes], -1, 0)
    targets = {
        "fg": (classes > 0)[None].astype(np.float32),
        "organs": classes[None],
        "dist": rng.normal(size=(1, *spatial)),
    }
    predictions = {"fg": rng.uniform(size=(1, *spatial)), "organs": one_hot, "dist": rng.normal(size=(1, *spatial))}
    return image, targets, predictions


def _pixels(path: Path) -> np.ndarray:
    with Image.open(path) as picture:
        return np.asarray(picture.convert("RGB"))


def _rgb(colour: str | tuple[str, float]) -> np.ndarray:
    """The bytes Matplotlib paints for a named colour or for (colour map, value)."""
    if isinstance(colour, tuple):
        return np.asarray(matplotlib.colormaps[colour[0]](colour[1], bytes=True)[:3])
    return np.rint(np.asarray(to_rgb(colour)) * 255).astype(np.uint8)


def _count(pixels: np.ndarray, colour: str | tuple[str, float]) -> int:
    """Pixels painted exactly in ``colour`` (a nearest-neighbour image keeps its colours exact)."""
    return int(np.all(pixels == _rgb(colour), axis=-1).sum())


@pytest.mark.parametrize("name", ["debug", "debug.gif"])
def test_2d_writes_rgba_png_with_its_own_suffix_and_no_temp_file(tmp_path: Path, name: str) -> None:
    image, targets, predictions = _sample((12, 16))
    written = write_debug_image(image, targets, predictions, tmp_path / name, kinds=KINDS)
    assert written == tmp_path / "debug.png"
    with Image.open(written) as picture:
        assert (picture.format, picture.mode) == ("PNG", "RGBA")
    assert [p.name for p in tmp_path.iterdir()] == ["debug.png"]


@pytest.mark.parametrize(("depth", "max_frames", "frames"), [(5, 32, 5), (40, 6, 6), (1, 32, 1)])
def test_3d_writes_looping_gif_with_one_frame_per_shown_slice(
    tmp_path: Path, depth: int, max_frames: int, frames: int
) -> None:
    image, targets, predictions = _sample((depth, 6, 8))
    written = write_debug_image(image, targets, predictions, tmp_path / "debug.png", kinds=KINDS, max_frames=max_frames)
    assert written == tmp_path / "debug.gif"
    with Image.open(written) as gif:
        assert (gif.format, gif.n_frames, gif.info["loop"], gif.info["duration"]) == ("GIF", frames, 0, 150)
    assert [p.name for p in tmp_path.iterdir()] == ["debug.gif"]


# kind, label, a prediction painted in `colour`, a prediction that is not, colour (hand-derived from the rule):
# binary: viridis at 1; multiclass: class 2 = the second Okabe-Ito colour; regression/vector: RdBu_r at +max.
_ONES = np.ones((1, 12, 16))
_CLASS = [np.moveaxis(np.eye(3)[np.full((12, 16), c)], -1, 0) for c in range(3)]
_KIND_CASES = [
    ("binary", 0 * _ONES, _ONES, 0 * _ONES, ("viridis", 1.0)),
    ("multiclass", _CLASS[0], _CLASS[2], _CLASS[1], "#E69F00"),
    ("regression", 0 * _ONES, 2 * _ONES, -2 * _ONES, ("RdBu_r", 1.0)),
    ("vector", 0 * _ONES, 2 * _ONES, -2 * _ONES, ("RdBu_r", 1.0)),
]


@pytest.mark.parametrize(("kind", "label", "painted", "other", "colour"), _KIND_CASES)
def test_each_kind_paints_the_prediction_panel_in_its_colour_map(
    tmp_path: Path,
    kind: str,
    label: np.ndarray,
    painted: np.ndarray,
    other: np.ndarray,
    colour: str | tuple[str, float],
) -> None:
    image = np.zeros((1, 12, 16))
    counts = []
    for prediction, name in ((painted, "a"), (other, "b")):
        written = write_debug_image(image, {"t": label}, {"t": prediction}, tmp_path / name, kinds={"t": kind})
        counts.append(_count(_pixels(written), colour))
    total = _pixels(written).shape[0] * _pixels(written).shape[1]
    assert counts[0] - counts[1] > 0.05 * total  # the whole prediction panel, not just the colour bar


def test_masks_darken_the_invalid_voxels(tmp_path: Path) -> None:
    image, targets, predictions = _sample((12, 16))
    mask = np.ones((1, 12, 16), dtype=np.uint8)
    mask[:, :, 8:] = 0
    plain = _pixels(write_debug_image(image, targets, predictions, tmp_path / "plain", kinds=KINDS))
    masked_path = write_debug_image(
        image, targets, predictions, tmp_path / "masked", kinds=KINDS, masks={"organs": mask, "fg": mask}
    )
    masked = _pixels(masked_path)
    assert plain.shape == masked.shape
    assert masked.mean() < plain.mean() - 1.0
    volume = write_debug_image(
        image[:, None].repeat(3, 1),
        {k: v[:, None].repeat(3, 1) for k, v in targets.items()},
        {k: v[:, None].repeat(3, 1) for k, v in predictions.items()},
        tmp_path / "volume",
        kinds=KINDS,
        masks={"organs": mask[:, None].repeat(3, 1)},
    )
    assert volume.suffix == ".gif"


_IMAGE, _TARGETS, _PREDICTIONS = _sample((12, 16))
_BAD_CALLS = [
    ("unknown kind", {"kinds": {**KINDS, "fg": "probability"}}, "kind of target 'fg'"),
    ("missing kind", {"kinds": {"fg": "binary", "dist": "regression"}}, "kinds name"),
    ("missing prediction", {"predictions": {"fg": np.zeros((1, 12, 16))}}, "predictions name"),
    ("mask of unknown target", {"masks": {"other": np.ones((1, 12, 16))}}, "unknown targets"),
    ("prediction shape", {"predictions": {**_PREDICTIONS, "fg": np.zeros((1, 12, 8))}}, "prediction of 'fg'"),
    ("mask shape", {"masks": {"fg": np.ones((1, 12, 15))}}, "mask of 'fg'"),
    ("image rank", {"image": np.zeros((12, 16))}, "image must be"),
    ("max_frames", {"max_frames": 0}, "max_frames"),
]


@pytest.mark.parametrize(("case", "change", "message"), _BAD_CALLS, ids=[c[0] for c in _BAD_CALLS])
def test_invalid_arguments_raise_value_error(tmp_path: Path, case: str, change: dict, message: str) -> None:
    arguments = {"image": _IMAGE, "targets": _TARGETS, "predictions": _PREDICTIONS, "kinds": KINDS, **change}
    with pytest.raises(ValueError, match=message):
        write_debug_image(path=tmp_path / "debug", **arguments)
    assert not any(tmp_path.iterdir())


def test_dice_bar_chart_is_written_as_png_with_missing_baselines(tmp_path: Path) -> None:
    metrics = {"dice_fg": 0.91, "dice_organs": 0.8, "dice_organs_1": 0.85, "dice_organs_2": float("nan")}
    written = plot_dice_per_target(metrics, {"dice_fg": 0.3, "dice_organs": 0.2}, tmp_path / "dice.png")
    assert written == tmp_path / "dice.png"
    with Image.open(written) as picture:
        assert picture.format == "PNG"
    # the model's bars are the first palette colour, the baseline's the second
    assert _count(_pixels(written), "#0072B2") > 0 and _count(_pixels(written), "#E69F00") > 0


def test_dice_bar_chart_needs_a_metric(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least one metric"):
        plot_dice_per_target({}, {}, tmp_path / "dice.png")
