"""cardiac-guidance data module: patient splits, action statistics from training patients, the frame cache, and
the guidance metrics against scikit-learn / hand computations."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import r2_score

from medtrain.config import load_config
from medtrain.errors import DataError
from medtrain.io.images import write_grayscale
from medtrain.recipes.cardiac_guidance.data import ActionStats, CardiacDataModule, split_patients
from medtrain.recipes.cardiac_guidance.metrics import guidance_metrics
from medtrain.recipes.cardiac_guidance.schema import CardiacConfig, CardiacData
from medtrain.recipes.cardiac_guidance.synthetic import generate_phantom_dataset

PATIENTS = [f"patient_{index:02d}" for index in range(7)]


@pytest.fixture(scope="module")
def phantom(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cg_data") / "patients"
    generate_phantom_dataset(root, patients=4, transitions_per_patient=6, image_size=48, seed=0)
    return root


def config(root: Path, *overrides: str) -> CardiacConfig:
    return load_config(CardiacConfig, overrides=[f"data.root={root}", "data.image_size=32", *overrides])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auto_split_is_disjoint_and_covers_every_patient(seed: int) -> None:
    split = split_patients(PATIENTS, CardiacData(), seed)
    parts = [set(split.train), set(split.val), set(split.test)]
    assert sum(len(part) for part in parts) == len(PATIENTS) and set().union(*parts) == set(PATIENTS)
    assert [len(part) for part in parts] == [5, 1, 1]


def test_auto_split_warns_when_a_split_would_be_empty() -> None:
    with pytest.warns(UserWarning, match="test split is empty"):
        split = split_patients(PATIENTS[:2], CardiacData(), 0)
    assert len(split.train) == 1 and len(split.val) == 1 and split.test == ()


def test_manual_split_rejects_overlap_unknown_patients_and_empty_train() -> None:
    data = CardiacData(manual_splits=True, train_patients=("patient_00", "patient_01"), val_patients=("patient_01",))
    with pytest.raises(DataError, match="'patient_01' is listed in both train and val"):
        split_patients(PATIENTS, data, 0)
    with pytest.raises(DataError, match="'patient_99' in test is not a known group"):
        split_patients(PATIENTS, CardiacData(train_patients=("patient_00",), test_patients=("patient_99",)), 0)
    with pytest.raises(DataError, match="train_patients is empty"):
        split_patients(PATIENTS, CardiacData(manual_splits=True), 0)
    split = split_patients(PATIENTS, CardiacData(train_patients=("patient_03",), val_patients=("patient_00",)), 0)
    assert (split.train, split.val, split.test) == (("patient_03",), ("patient_00",), ())


def test_action_stats_from_training_patients_only() -> None:
    arrays = {
        "at1": np.array([[1, 2, 3, 4, 5, 6], [3, 2, 3, 4, 5, 6]], np.float32),
        "at2": np.array([[1, 2, 3, 4, 5, 6], [3, 2, 3, 4, 5, 6]], np.float32),
        "action": np.array([[0, 0, 0, 0, 0, 0], [2, 2, 2, 2, 2, 2]], np.float32),
    }
    stats = ActionStats.fit(arrays)
    assert stats.target_mean == (2, 2, 3, 4, 5, 6)
    assert stats.target_std == (1, 1, 1, 1, 1, 1)  # x: std 1; constant DOFs: std 0 → 1
    assert stats.action_mean == (1,) * 6 and stats.action_std == (1,) * 6
    np.testing.assert_allclose(stats.normalise_targets(arrays["at1"])[:, 0], [-1, 1])
    assert ActionStats.from_dict(stats.to_dict()) == stats


def test_datamodule_serves_normalised_samples_and_caches_frames(phantom: Path, tmp_path: Path) -> None:
    cfg = config(phantom, f"data.cache_dir={tmp_path / 'cache'}", "data.train_patients=[patient_00,patient_01]",
                 "data.val_patients=[patient_02]", "data.test_patients=[patient_03]")  # fmt: skip
    datamodule = CardiacDataModule(cfg)
    datamodule.setup("fit")
    ft1, ft2, action, at1, at2, patient = datamodule.dataset("train")[0]
    assert ft1.shape == ft2.shape == (1, 32, 32) and ft1.dtype.is_floating_point is False
    assert action.shape == at1.shape == at2.shape == (6,)
    train = datamodule.normalised("train")
    np.testing.assert_allclose(np.concatenate([train["at1"], train["at2"]]).mean(0), 0, atol=1e-5)
    assert datamodule.patient_names[int(patient)] == "patient_00"
    summary = datamodule.data_summary()
    assert summary["samples"] == {"train": 12, "val": 6, "test": 6} and summary["split_mode"] == "manual"

    cache_file = tmp_path / "cache" / "frames_32x32.npy"
    built = cache_file.stat().st_mtime_ns
    again = CardiacDataModule(cfg)
    again.setup("fit")  # cache hit: the file is not rewritten
    assert cache_file.stat().st_mtime_ns == built
    np.testing.assert_array_equal(again.dataset("test")[3][0], datamodule.dataset("test")[3][0])

    image = phantom / "patient_03" / "ft1"
    first = sorted(image.glob("*.png"))[0]
    write_grayscale(first, np.full((48, 48), 255, np.uint8))  # changing an image rebuilds the cache
    os.utime(first, ns=(built + 10**9, built + 10**9))
    changed = CardiacDataModule(cfg)
    changed.setup("fit")
    assert cache_file.stat().st_mtime_ns != built
    assert any(int(changed.dataset("test")[i][0].min()) == 255 for i in range(6))


def test_guidance_metrics_against_sklearn_and_hand() -> None:
    truth = np.array([[0, 0, 0, 0, 0, 0], [2, 4, 6, 8, 10, 12], [4, 2, 0, 1, 1, 1]], np.float64)
    prediction = truth + np.array([[1, -1, 0, 0, 2, 0], [0, 1, 0, 3, 0, 0], [1, 0, 0, 0, 1, 0]])
    std = [1, 2, 1, 1, 1, 4]
    metrics = guidance_metrics(prediction, truth, std)
    assert metrics["mae_x"] == pytest.approx(2 / 3) and metrics["mae_pitch"] == pytest.approx(1.0)
    assert metrics["mae_translation_mm"] == pytest.approx((2 / 3 + 2 / 3 + 0) / 3)
    assert metrics["mae_rotation_deg"] == pytest.approx((1 + 1 + 0) / 3)
    assert metrics["main_task_mae"] == pytest.approx((2 / 3 + 1 / 3 + 0 + 1 + 1 + 0) / 6)
    expected = r2_score(truth, prediction, multioutput="raw_values")
    assert [metrics[f"r2_{n}"] for n in ("x", "y", "z", "roll", "pitch", "yaw")] == pytest.approx(expected)
    assert metrics["r2"] == pytest.approx(expected.mean())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert "r2" not in guidance_metrics(prediction[:1], truth[:1], std)
    assert guidance_metrics(np.zeros((0, 6)), np.zeros((0, 6)), std) == {}
