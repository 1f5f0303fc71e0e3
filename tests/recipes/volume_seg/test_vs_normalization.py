"""volume-seg intensity normalisation: statistics against numpy, the scheme formulas, sampling and JSON round trip."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from medtrain.io.volumes import write_volume
from medtrain.recipes.volume_seg.cases import VolumeCase
from medtrain.recipes.volume_seg.normalization import compute_intensity_statistics, normalize


def _cases(tmp_path: Path) -> tuple[list[VolumeCase], np.ndarray, np.ndarray]:
    """Two 2-channel cases of different shapes (float32) with labels; returns cases, images and labels (flat)."""
    rng = np.random.default_rng(3)
    cases, images, labels = [], [], []
    for name, shape in [("a", (4, 6, 5)), ("b", (3, 7, 6))]:
        image = rng.normal([[[[10.0]]], [[[-3.0]]]], [[[[4.0]]], [[[0.5]]]], size=(2, *shape)).astype(np.float32)
        label = (rng.random(shape) < 0.3).astype(np.uint8) * rng.integers(1, 3, shape).astype(np.uint8)
        write_volume(tmp_path / f"images/{name}.zarr", image, chunks=(1, 1, 6, 5))
        write_volume(tmp_path / f"labels/{name}_ink.nii.gz", label)
        write_volume(tmp_path / f"labels/{name}_other.zarr", np.zeros(shape, np.uint8))
        labels_of = {"ink": tmp_path / f"labels/{name}_ink.nii.gz", "other": tmp_path / f"labels/{name}_other.zarr"}
        cases.append(VolumeCase(name, tmp_path / f"images/{name}.zarr", labels_of))
        images.append(image.reshape(2, -1))
        labels.append(label.reshape(-1))
    return cases, np.concatenate(images, axis=1).astype(np.float64), np.concatenate(labels)


def _expected(values: np.ndarray) -> dict[str, float]:
    percentiles = np.percentile(values, [0.5, 25, 50, 75, 99.5])
    return {
        "mean": values.mean(),
        "std": values.std(),
        "min": values.min(),
        "max": values.max(),
        **dict(zip(["p0.5", "p25", "p50", "p75", "p99.5"], percentiles, strict=True)),
    }


@pytest.mark.parametrize("scheme", ["zscore", "ct", "minmax", "robust"])
def test_statistics_equal_numpy_when_every_voxel_is_sampled(tmp_path: Path, scheme: str) -> None:
    cases, images, labels = _cases(tmp_path)
    stats = compute_intensity_statistics(cases, scheme, max_samples_per_case=10**6, max_slab_bytes=200)
    chosen = labels > 0 if scheme == "ct" else np.ones(labels.shape, bool)
    assert len(stats) == 2
    for c in range(2):
        expected = _expected(images[c, chosen])
        for key, value in expected.items():
            assert stats[c][key] == pytest.approx(value, rel=1e-9, abs=1e-9), (c, key)
        assert stats[c]["voxels"] == stats[c]["sampled"] == int(chosen.sum())
        assert stats[c]["foreground"] is (scheme == "ct")


def test_ct_uses_the_named_foreground_target_and_falls_back_to_all_voxels(tmp_path: Path) -> None:
    cases, images, _ = _cases(tmp_path)
    stats = compute_intensity_statistics(cases, "ct", foreground_target="other", max_samples_per_case=10**6)
    assert stats[0]["foreground"] is False and stats[0]["mean"] == pytest.approx(images[0].mean())


def test_sampling_is_bounded_deterministic_and_seed_dependent(tmp_path: Path) -> None:
    cases, images, _ = _cases(tmp_path)
    first = compute_intensity_statistics(cases, "robust", max_samples_per_case=20, seed=1, max_slab_bytes=100)
    again = compute_intensity_statistics(cases, "robust", max_samples_per_case=20, seed=1, max_slab_bytes=100)
    other = compute_intensity_statistics(cases, "robust", max_samples_per_case=20, seed=2, max_slab_bytes=100)
    assert first == again and first[0]["p50"] != other[0]["p50"]
    assert first[0]["sampled"] == 40 and first[0]["voxels"] == images.shape[1]
    # moments stay exact whatever the sample
    assert first[0]["mean"] == pytest.approx(images[0].mean()) and first[0]["max"] == pytest.approx(images[0].max())
    assert json.loads(json.dumps(first)) == first


STATS = [{"mean": 2.0, "std": 4.0, "min": -2.0, "max": 6.0, "p0.5": -1.0, "p99.5": 5.0, "p25": 0.0, "p50": 1.0,
          "p75": 2.5}, {"mean": 0.0, "std": 0.0, "min": 3.0, "max": 3.0, "p0.5": 0.0, "p99.5": 0.0, "p25": 1.0,
                        "p50": 1.0, "p75": 1.0}]  # fmt: skip
X = np.array([[-4.0, 0.0, 2.0, 10.0], [3.0, 3.0, 1.0, 1.0]])
FORMULAS = [
    ("zscore", [[-1.5, -0.5, 0.0, 2.0], [3e8, 3e8, 1e8, 1e8]]),
    ("ct", [[-0.75, -0.5, 0.0, 0.75], [0.0, 0.0, 0.0, 0.0]]),
    ("minmax", [[-0.25, 0.25, 0.5, 1.5], [0.0, 0.0, -2e8, -2e8]]),
    ("robust", [[-2.0, -0.4, 0.4, 3.6], [2e8, 2e8, 0.0, 0.0]]),
    ("none", X.tolist()),
]


@pytest.mark.parametrize(("scheme", "expected"), FORMULAS, ids=[row[0] for row in FORMULAS])
def test_normalize_formulas_per_channel(scheme: str, expected: list[list[float]]) -> None:
    stats = json.loads(json.dumps(STATS))
    out = normalize(X.reshape(2, 1, 2, 2), stats, scheme)
    assert out.dtype == np.float32 and out.shape == (2, 1, 2, 2)
    np.testing.assert_allclose(out.reshape(2, 4), np.array(expected), rtol=1e-6)


def test_normalize_rejects_wrong_channels_schemes_and_missing_keys() -> None:
    with pytest.raises(ValueError, match="2 channel statistics"):
        normalize(np.zeros((3, 4, 4)), STATS, "zscore")
    with pytest.raises(ValueError, match="scheme"):
        normalize(np.zeros((2, 4, 4)), STATS, "gamma")
    with pytest.raises(ValueError, match="lack"):
        normalize(np.zeros((1, 4, 4)), [{"mean": 0.0}], "zscore")


def test_statistics_then_normalize_give_zero_mean_unit_std(tmp_path: Path) -> None:
    cases, images, _ = _cases(tmp_path)
    stats = compute_intensity_statistics(cases, "zscore", max_samples_per_case=10)
    out = normalize(images, stats, "zscore")
    np.testing.assert_allclose(out.mean(axis=1), 0.0, atol=1e-5)
    np.testing.assert_allclose(out.std(axis=1), 1.0, atol=1e-5)
    assert compute_intensity_statistics(cases, "none") == [{}, {}]
