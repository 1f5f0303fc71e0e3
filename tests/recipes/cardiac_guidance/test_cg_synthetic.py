"""cardiac-guidance phantom: pose geometry on hand-worked rotations, frames that move with the probe as the geometry
says, records in the seed's format with ``at2 = at1 - action_change``, determinism, and a cheap learnability check
(ridge regression from frames to the guidance action on held-out patients)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from sklearn.linear_model import Ridge
from sklearn.metrics import r2_score

from medtrain.io.images import read_grayscale
from medtrain.recipes.cardiac_guidance.records import DOF_NAMES, TRANSITIONS_FILE, read_dataset, transition_arrays
from medtrain.recipes.cardiac_guidance.synthetic import (
    FOV_DEPTH_MM,
    MAX_ROTATION_DEG,
    MAX_TRANSLATION_MM,
    generate_phantom_dataset,
    pose_matrix,
    render_view,
    sample_phantom,
    sample_transition,
)

SEED_KEYS = ["ft1_image_path", "ft2_image_path", "at1_6dof", "action_change_6dof", "at2_6dof"]


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("small") / "data"
    generate_phantom_dataset(out, patients=2, transitions_per_patient=12, image_size=48, seed=5)
    return out


# --------------------------------------------------------------------------------------------------- geometry

# pose → where the probe's lateral (a) and depth (d) unit vectors point, worked out by hand from
# R = Rz(yaw) Ry(pitch) Rx(roll)
POSES = [
    ([0, 0, 0, 0, 0, 0], (1, 0, 0), (0, 0, 1)),
    ([0, 0, 0, 90, 0, 0], (1, 0, 0), (0, -1, 0)),  # roll about lateral: the beam tips toward -elevation
    ([0, 0, 0, 0, 90, 0], (0, 0, -1), (1, 0, 0)),  # pitch about elevation: in-plane, the beam turns lateral
    ([0, 0, 0, 0, 0, 90], (0, 1, 0), (0, 0, 1)),  # yaw about the beam: lateral turns into elevation
    ([0, 0, 0, 90, 0, 90], (0, 1, 0), (1, 0, 0)),  # roll first, then yaw: Rz(90) · (0, -1, 0) = (1, 0, 0)
]


@pytest.mark.parametrize(("pose", "lateral", "depth"), POSES)
def test_pose_matrix_axes(pose: list[float], lateral: tuple[int, ...], depth: tuple[int, ...]) -> None:
    rotation, translation = pose_matrix(np.array(pose, dtype=float))
    np.testing.assert_allclose(rotation @ [1.0, 0.0, 0.0], lateral, atol=1e-12)
    np.testing.assert_allclose(rotation @ [0.0, 0.0, 1.0], depth, atol=1e-12)
    np.testing.assert_allclose(rotation @ rotation.T, np.eye(3), atol=1e-12)
    np.testing.assert_array_equal(translation, [0.0, 0.0, 0.0])
    np.testing.assert_array_equal(pose_matrix(np.array([1.5, -2.0, 3.0, 0, 0, 0]))[1], [1.5, -2.0, 3.0])
    with pytest.raises(ValueError, match="a pose is 6 numbers"):
        pose_matrix(np.zeros(5))


def _smooth(frame: np.ndarray) -> np.ndarray:
    """4×4 block means: the anatomy without most of the speckle."""
    h, w = frame.shape
    return frame.astype(float).reshape(h // 4, 4, w // 4, 4).mean(axis=(1, 3))


def _best_shift(reference: np.ndarray, moved: np.ndarray, axis: int) -> int:
    """The shift (in pixels, along ``axis``) that best aligns ``moved`` back onto ``reference`` (central crop)."""
    crop = (slice(40, 100), slice(40, 88))
    scores = {}
    for shift in range(-12, 13):
        back = np.roll(moved, shift, axis=axis)
        scores[shift] = np.corrcoef(reference[crop].ravel(), back[crop].ravel())[0, 1]
    return max(scores, key=scores.__getitem__)


@pytest.mark.parametrize(("dof", "axis"), [(0, 1), (2, 0)])
def test_translating_the_probe_moves_the_anatomy_the_other_way(dof: int, axis: int) -> None:
    """x (lateral) and z (depth) move the picture by exactly that many pixel spacings, opposite to the probe."""
    size = 128
    spacing = FOV_DEPTH_MM / size
    phantom = sample_phantom(np.random.default_rng(1))
    standard = render_view(phantom, np.zeros(6), size=size, rng=np.random.default_rng(2)).astype(float)
    pose = np.zeros(6)
    pose[dof] = 7 * spacing  # probe 7 px to the right / deeper: the anatomy appears 7 px left / higher
    moved = render_view(phantom, pose, size=size, rng=np.random.default_rng(3)).astype(float)
    assert _best_shift(standard, moved, axis) == 7


def test_frames_are_sector_images_with_dark_blood_pools() -> None:
    size = 128
    phantom = sample_phantom(np.random.default_rng(0))
    frame = render_view(phantom, np.zeros(6), size=size, rng=np.random.default_rng(1))
    assert frame.dtype == np.uint8 and frame.shape == (size, size)
    spacing = FOV_DEPTH_MM / size
    rows, cols = np.mgrid[0:size, 0:size]
    depth, lateral = (rows + 0.5) * spacing, (cols + 0.5) * spacing - FOV_DEPTH_MM / 2
    outside = (np.hypot(depth, lateral) > FOV_DEPTH_MM) | (np.degrees(np.arctan2(abs(lateral), depth)) > 35.0)
    assert np.all(frame[outside] == 0)
    assert frame[~outside].mean() > 60
    # the LV's centre (heart coordinates (13, 3, -10) mm, scaled and placed) lies in a dark blood pool
    lv = next(c for c in phantom.chambers if c.name == "LV")
    x = phantom.centre[0] + phantom.scale * lv.centre[0]
    z = phantom.centre[2] + phantom.scale * lv.centre[2]
    row, col = int(z / spacing), int((x + FOV_DEPTH_MM / 2) / spacing)
    assert frame[row - 2 : row + 3, col - 2 : col + 3].mean() < 0.3 * frame[~outside].mean()
    assert {c.name for c in phantom.chambers} >= {"LV", "RV", "LA", "RA"}


def test_phantom_variation_stays_in_its_ranges() -> None:
    phantoms = [sample_phantom(np.random.default_rng([9, k])) for k in range(200)]
    scales = np.array([p.scale for p in phantoms])
    depths = np.array([p.centre[2] for p in phantoms]) / FOV_DEPTH_MM
    assert scales.min() >= 0.85 and scales.max() <= 1.15 and scales.std() > 0.06
    assert depths.min() >= 0.55 and depths.max() <= 0.60
    assert max(abs(p.centre[0]) for p in phantoms) <= 2.0


def test_sampled_transitions_keep_the_identity_and_the_ranges() -> None:
    rng = np.random.default_rng(0)
    draws = [sample_transition(rng) for _ in range(500)]
    at1, action, at2 = (np.array(part) for part in zip(*draws, strict=True))
    limits = np.array([MAX_TRANSLATION_MM] * 3 + [MAX_ROTATION_DEG] * 3)
    assert np.all(np.abs(at1) <= limits)
    np.testing.assert_allclose(at2, at1 - action, rtol=0, atol=1e-9)
    for values in (at1, action, at2):
        np.testing.assert_array_equal(values, np.round(values, 4))
    # the step goes toward the standard view: 0.3–0.8 of at1 plus noise, so |at2| < |at1| on average
    fraction = (action * at1).sum(axis=1) / (at1 * at1).sum(axis=1)
    assert 0.35 < float(np.median(fraction)) < 0.75
    assert np.abs(at2).mean() < 0.7 * np.abs(at1).mean()


# ---------------------------------------------------------------------------------------------- written files


def test_written_records_follow_the_seed_format(small: Path) -> None:
    assert sorted(p.name for p in small.iterdir()) == ["patient_00", "patient_01"]
    raw = json.loads((small / "patient_00" / TRANSITIONS_FILE).read_text())
    assert len(raw) == 12
    assert list(raw[0]) == SEED_KEYS
    assert raw[0]["ft1_image_path"] == "ft1/image_001.png" and raw[11]["ft2_image_path"] == "ft2/image_012.png"
    dataset = read_dataset(small)
    for transitions in dataset.values():
        arrays = transition_arrays(transitions)
        np.testing.assert_allclose(arrays["at2"], arrays["at1"] - arrays["action"], atol=2e-5)
        assert read_grayscale(transitions[0].ft2).shape == (48, 48)
    for item in raw:
        at1, action, at2 = (np.array(item[key]) for key in SEED_KEYS[2:])
        np.testing.assert_allclose(at2, at1 - action, rtol=0, atol=1e-9)
        assert all(round(v, 4) == v for v in [*item["at1_6dof"], *item["action_change_6dof"], *item["at2_6dof"]])


def test_generation_is_deterministic_and_per_patient(small: Path, tmp_path: Path) -> None:
    names = generate_phantom_dataset(tmp_path / "again", patients=2, transitions_per_patient=12, image_size=48, seed=5)
    assert names == ["patient_00", "patient_01"]
    for name in names:
        first, second = small / name, tmp_path / "again" / name
        assert (first / TRANSITIONS_FILE).read_bytes() == (second / TRANSITIONS_FILE).read_bytes()
        for image in sorted((first / "ft1").iterdir()) + sorted((first / "ft2").iterdir()):
            twin = second / image.parent.name / image.name
            np.testing.assert_array_equal(read_grayscale(image), read_grayscale(twin))
    # patient k depends on (seed, k) only, not on how many patients are generated
    generate_phantom_dataset(tmp_path / "one", patients=1, transitions_per_patient=12, image_size=48, seed=5)
    one = (tmp_path / "one" / "patient_00" / TRANSITIONS_FILE).read_bytes()
    assert one == (small / "patient_00" / TRANSITIONS_FILE).read_bytes()
    generate_phantom_dataset(tmp_path / "other", patients=1, transitions_per_patient=12, image_size=48, seed=6)
    assert (tmp_path / "other" / "patient_00" / TRANSITIONS_FILE).read_bytes() != one


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        generate_phantom_dataset(Path("unused"), patients=0)
    with pytest.raises(ValueError, match="at least 8 pixels"):
        render_view(sample_phantom(np.random.default_rng(0)), np.zeros(6), size=4, rng=np.random.default_rng(0))


# ---------------------------------------------------------------------------------------------- learnability


def test_a_ridge_regression_on_pixels_predicts_the_action_on_held_out_patients(tmp_path: Path) -> None:
    """6 patients × 80 transitions at 128 px (the defaults); ridge from 16×16 block means of the frames to the
    guidance action, trained on 4 patients (ft1 → at1 and ft2 → at2), scored on ft1 → at1 of the other 2."""
    names = generate_phantom_dataset(tmp_path / "data")
    dataset = read_dataset(tmp_path / "data")

    def features(paths: list[Path]) -> np.ndarray:
        frames = np.stack([read_grayscale(p) for p in paths]).astype(np.float32) / 255.0
        return frames.reshape(len(paths), 16, 8, 16, 8).mean(axis=(2, 4)).reshape(len(paths), -1)

    x, y = {}, {}
    for name, transitions in dataset.items():
        arrays = transition_arrays(transitions)
        x[name] = (features([t.ft1 for t in transitions]), features([t.ft2 for t in transitions]))
        y[name] = (arrays["at1"], arrays["at2"])
    train, test = names[:4], names[4:]
    model = Ridge(alpha=10.0).fit(
        np.concatenate([f for n in train for f in x[n]]), np.concatenate([t for n in train for t in y[n]])
    )
    truth = np.concatenate([y[n][0] for n in test])
    predicted = model.predict(np.concatenate([x[n][0] for n in test]))
    r2 = {dof: r2_score(truth[:, i], predicted[:, i]) for i, dof in enumerate(DOF_NAMES)}
    print("held-out ridge R²:", {dof: round(value, 3) for dof, value in r2.items()})
    assert float(np.mean(list(r2.values()))) > 0.12
    assert r2["z"] > 0.3 and r2["pitch"] > 0.4
    assert all(math.isfinite(value) for value in r2.values())
