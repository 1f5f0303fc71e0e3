"""abr-diffusion data module, task and predictor pieces: patient split disjointness and summary, statistics from the
training split only, class weights and the class-balanced sampler, curriculum weights used by the training step,
validation with full weights, decoding the heads, seeded initial noise, slopes and condition checks."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from medtrain.config import load_config
from medtrain.errors import DataError
from medtrain.recipes.abr_diffusion.data import (
    ABRDataModule,
    ClassBalancedSampler,
    TargetStats,
    balanced_class_weights,
)
from medtrain.recipes.abr_diffusion.model import ABROutput
from medtrain.recipes.abr_diffusion.predict import validate_conditions
from medtrain.recipes.abr_diffusion.schema import ABRConfig
from medtrain.recipes.abr_diffusion.synthetic import write_abr_dataset
from medtrain.recipes.abr_diffusion.table import NormalizationStats, read_abr_table
from medtrain.recipes.abr_diffusion.task import (
    ABRExport,
    ABRTask,
    HeadPredictions,
    initial_noise,
    take_rows,
    wave_v_slope,
)

pytestmark = pytest.mark.usefixtures("seeded_one_thread")

TINY = [
    "model.base_channels=8",
    "model.channel_mult=[1,2]",
    "model.d_state=4",
    "model.num_heads=2",
    "model.embed_dim=16",
    "model.dropout=0.0",
    "model.cfg_dropout=0.0",
]
RAMPS = [
    "loss.curriculum.peak_latency.start_epoch=2",
    "loss.curriculum.peak_latency.ramp_epochs=4",
    "loss.curriculum.threshold.ramp_epochs=2",
    "loss.curriculum.classification.start_epoch=1",
    "loss.weights.threshold=0.5",
]


@pytest.fixture(scope="module")
def table_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_abr_dataset(tmp_path_factory.mktemp("abr_task") / "table.npz", n_patients=40, seed=3)


def config(table_path: Path, *overrides: str) -> ABRConfig:
    return load_config(ABRConfig, overrides=[f"data.root={table_path}", *TINY, *overrides])


@pytest.fixture(scope="module")
def datamodule(table_path: Path) -> ABRDataModule:
    module = ABRDataModule(config(table_path, *RAMPS))
    module.setup("fit")
    return module


@pytest.fixture(scope="module")
def task(datamodule: ABRDataModule) -> ABRTask:
    torch.manual_seed(0)
    return ABRTask(datamodule.cfg, datamodule)


def batch_of(datamodule: ABRDataModule, split: str = "train", size: int = 6) -> dict[str, torch.Tensor]:
    dataset = datamodule.dataset(split)  # type: ignore[arg-type]
    rows = [dataset[i] for i in range(size)]
    return {key: torch.stack([row[key] for row in rows]) for key in rows[0]}


# -- data ---------------------------------------------------------------------------------------------------------
def test_patient_split_is_disjoint_and_the_summary_lists_it(datamodule: ABRDataModule, table_path: Path) -> None:
    patients = {name: set(part.patient_ids.tolist()) for name, part in datamodule.tables.items()}
    assert not (patients["train"] & patients["val"] or patients["train"] & patients["test"])
    assert not patients["val"] & patients["test"]
    table = read_abr_table(table_path)
    assert set().union(*patients.values()) == set(table.patient_ids.tolist())
    assert sum(len(part) for part in datamodule.tables.values()) == len(table)
    summary = datamodule.data_summary()
    for name, members in summary["split"].items():
        assert set(members) == patients[name]
        assert summary["splits"][name]["patients"] == len(members)
        assert sum(summary["splits"][name]["class_counts"].values()) == summary["splits"][name]["rows"]
    assert summary["splits"]["train"]["rows"] == len(datamodule.dataset("train"))


def test_statistics_come_from_the_training_split_only(datamodule: ABRDataModule, table_path: Path) -> None:
    table = read_abr_table(table_path)
    train = np.isin(table.patient_ids, datamodule.data_summary()["split"]["train"])
    assert 0 < train.sum() < len(table)
    static = table.static[train].astype(np.float64)
    assert datamodule.stats is not None and datamodule.targets is not None
    np.testing.assert_allclose(datamodule.stats.static_mean, static.mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(datamodule.stats.static_std, static.std(axis=0), rtol=1e-6)
    assert datamodule.stats.signal_mean == pytest.approx(table.signals[train].astype(np.float64).mean())
    peaks = table.peak_v[train & table.peak_present].astype(np.float64)
    np.testing.assert_allclose(datamodule.targets.peak_mean, peaks.mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(datamodule.targets.peak_std, peaks.std(axis=0), rtol=1e-6)
    assert datamodule.targets.threshold_mean == pytest.approx(table.thresholds_db[train].mean())
    everything = NormalizationStats.fit(table)
    assert everything.static_mean != datamodule.stats.static_mean
    np.testing.assert_allclose(datamodule.mean_waveform(), table.signals[train].mean(axis=0), atol=1e-6)


def test_normalised_dataset_rows(datamodule: ABRDataModule) -> None:
    part, row = datamodule.tables["val"], datamodule.dataset("val")[0]
    assert datamodule.stats is not None and datamodule.targets is not None
    np.testing.assert_allclose(row["signal"][0].numpy(), datamodule.stats.normalize_signal(part.signals[0]), atol=1e-5)
    assert row["present"].item() == bool(part.peak_present[0]) and row["label"].item() == part.labels[0]
    expected = (part.thresholds_db[0] - datamodule.targets.threshold_mean) / datamodule.targets.threshold_std
    assert row["threshold"].item() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        ([0, 0, 0, 1], [4 / 6, 4 / 2, 1.0, 1.0, 1.0]),  # N / (K_present · n_k); absent classes 1
        ([0, 1, 2, 3, 4], [1.0] * 5),
        ([2, 2], [1.0, 1.0, 1.0, 1.0, 1.0]),
    ],
)
def test_balanced_class_weights(labels: list[int], expected: list[float]) -> None:
    np.testing.assert_allclose(balanced_class_weights(np.array(labels), 5), expected, rtol=1e-6)


def test_class_balanced_sampler_is_seeded_by_the_epoch() -> None:
    labels = np.array([0] * 90 + [1] * 8 + [2] * 2)
    epoch = {"now": 0}
    sampler = ClassBalancedSampler(labels, seed=7, epoch_of=lambda: epoch["now"])
    first, again = list(sampler), list(sampler)
    assert first == again and len(first) == len(labels)
    epoch["now"] = 3
    third = list(sampler)
    assert third != first
    resumed = ClassBalancedSampler(labels, seed=7, epoch_of=lambda: 3)  # a new process at epoch 3
    assert list(resumed) == third
    assert list(ClassBalancedSampler(labels, seed=8, epoch_of=lambda: 3)) != third
    draws = np.concatenate([labels[list(ClassBalancedSampler(labels, seed=s, epoch_of=lambda: 0))] for s in range(20)])
    np.testing.assert_allclose(np.bincount(draws) / len(draws), [1 / 3] * 3, atol=0.03)


def test_training_loader_uses_the_balanced_sampler_when_asked(table_path: Path) -> None:
    module = ABRDataModule(config(table_path, "data.class_balanced_sampling=true", "data.batch_size=8"))
    module.setup("fit")
    loader = module.train_dataloader()
    assert isinstance(loader.sampler, ClassBalancedSampler) and loader.batch_size == 8
    labels = torch.cat([batch["label"] for batch in loader]).numpy()
    assert len(labels) == len(module.dataset("train"))
    plain = ABRDataModule(config(table_path))
    plain.setup("fit")
    assert not isinstance(plain.train_dataloader().sampler, ClassBalancedSampler)


# -- task ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("epoch", "expected"),
    [
        (0.0, {"diffusion": 1.0, "peak_exist": 0.5, "peak_latency": 0.0, "classification": 0.0, "threshold": 0.0}),
        (1.0, {"diffusion": 1.0, "peak_exist": 0.5, "peak_latency": 0.0, "classification": 1.0, "threshold": 0.25}),
        (3.0, {"diffusion": 1.0, "peak_exist": 0.5, "peak_latency": 0.25, "classification": 1.0, "threshold": 0.5}),
        (7.5, {"diffusion": 1.0, "peak_exist": 0.5, "peak_latency": 1.0, "classification": 1.0, "threshold": 0.5}),
    ],
)
def test_curriculum_weights_at_an_epoch(task: ABRTask, epoch: float, expected: dict[str, float]) -> None:
    assert task.loss_weights(epoch) == pytest.approx(expected)


def test_training_step_weighs_the_terms_at_its_fractional_epoch(task: ABRTask, datamodule: ABRDataModule) -> None:
    batch = batch_of(datamodule)
    task.trainer = SimpleNamespace(current_epoch=3, num_training_batches=4, global_step=1, log_every_n_steps=50)
    task.train()
    torch.manual_seed(1)
    loss = task.training_step(batch, batch_idx=2)  # epoch 3.5: peak_latency 1.5/4 of its weight
    torch.manual_seed(1)
    terms = task.step_losses(batch, task.loss_weights(3.5))
    assert loss.item() == pytest.approx(terms["loss"].item(), rel=1e-6)
    weights = task.loss_weights(3.5)
    assert weights["peak_latency"] == pytest.approx(0.375)
    clean = weights["diffusion"] * terms["diffusion"] + sum(
        weights[k] * terms[k] for k in ("peak_exist", "peak_latency", "classification", "threshold")
    )
    noisy = task.cfg.loss.noisy_head_weight * terms["noisy_heads"]
    assert terms["loss"].item() == pytest.approx((clean + noisy).item(), rel=1e-6)
    assert task._train_sums["train_peak_latency_loss"][1] == 1  # logged (once) through log_train
    task._train_sums = {}
    task.trainer = None


def test_a_zero_weight_removes_a_term(task: ABRTask, datamodule: ABRDataModule) -> None:
    batch = batch_of(datamodule)
    only_diffusion = dict.fromkeys(task.loss_weights(0.0), 0.0) | {"diffusion": 1.0}
    terms = task.step_losses(batch, only_diffusion, torch.Generator().manual_seed(0))
    assert terms["loss"].item() == pytest.approx(terms["diffusion"].item())
    assert all(torch.isfinite(terms[k]) for k in terms)


def test_validation_losses_are_seeded_and_use_full_weights(task: ABRTask, datamodule: ABRDataModule) -> None:
    batch = batch_of(datamodule, "val")
    task.eval()
    assert task.full_weights() == {
        "diffusion": 1.0, "peak_exist": 0.5, "peak_latency": 1.0, "classification": 1.0, "threshold": 0.5,
    }  # fmt: skip
    first = task.step_losses(batch, task.full_weights(), torch.Generator().manual_seed(5))
    second = task.step_losses(batch, task.full_weights(), torch.Generator().manual_seed(5))
    assert first["loss"].item() == second["loss"].item()


def test_export_module_returns_the_network_outputs_as_a_tuple(task: ABRTask) -> None:
    task.eval()
    x_t, t, static = (torch.randn(3, 1, 200), torch.tensor([0, 10, 999]), torch.randn(3, 4))
    exported = task.export_module()
    assert isinstance(exported, ABRExport) and exported.net is task.network
    outputs = exported(x_t, t, static)
    reference = task.network(x_t, t, static)
    for name, value in zip(task.output_names, outputs, strict=True):
        torch.testing.assert_close(value, getattr(reference, name))
    assert [tuple(e.shape) for e in task.example_inputs()] == [(1, 1, 200), (1,), (1, 4)]
    spec = task.model_spec()
    assert spec["architecture"]["channel_mult"] == [1, 2] and len(spec["condition_pool"]) <= 512
    assert take_rows(reference, slice(1, 3)).v.shape == (2, 1, 200)


def test_heads_are_decoded_into_clinical_units() -> None:
    targets = TargetStats(peak_mean=(6.0, 0.3), peak_std=(0.5, 0.1), threshold_mean=30.0, threshold_std=10.0)
    out = ABROutput(
        v=torch.zeros(2, 1, 4),
        peak_logit=torch.tensor([0.0, math.log(3.0)]),
        peak_mean=torch.tensor([[0.0, 0.0], [2.0, -1.0]]),
        peak_log_var=torch.tensor([[0.0, 0.0], [2 * math.log(2.0), 2 * math.log(0.5)]]),
        class_logits=torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0]]),
        threshold=torch.tensor([0.0, -1.5]),
    )
    heads = HeadPredictions.decode(out, targets)
    np.testing.assert_allclose(heads.exists_probability, [0.5, 0.75])
    np.testing.assert_allclose(heads.latency_ms, [6.0, 7.0])
    np.testing.assert_allclose(heads.amplitude_uv, [0.3, 0.2])
    np.testing.assert_allclose(heads.latency_std_ms, [0.5, 1.0])
    np.testing.assert_allclose(heads.amplitude_std_uv, [0.1, 0.05])
    np.testing.assert_allclose(heads.class_probabilities, [[0.5, 0.5], [0.75, 0.25]])
    np.testing.assert_allclose(heads.threshold_db, [30.0, 15.0])
    assert TargetStats.from_dict(targets.to_dict()) == targets


def test_initial_noise_of_a_row_does_not_depend_on_its_batch() -> None:
    three = initial_noise(3, 16, seed=4)
    assert three.shape == (3, 1, 16)
    torch.testing.assert_close(initial_noise(1, 16, seed=4, first_row=2)[0], three[2])
    assert not torch.equal(three[0], three[1])
    assert not torch.equal(initial_noise(1, 16, seed=5)[0], three[0])


@pytest.mark.parametrize(
    ("intensity", "latency", "slope"),
    [
        ([40, 60, 80], [6.4, 6.0, 5.6], -0.02),
        ([40, 60, 80, 80], [6.4, 6.0, math.nan, 5.6], -0.02),
        ([40, 40, 80], [6.0, math.nan, math.nan], math.nan),
        ([50, 50], [6.0, 6.2], math.nan),
    ],
)
def test_wave_v_slope(intensity: list[float], latency: list[float], slope: float) -> None:
    value = wave_v_slope(np.array(intensity, dtype=float), np.array(latency))
    assert (math.isnan(value) and math.isnan(slope)) or value == pytest.approx(slope)


@pytest.mark.parametrize(
    ("row", "fragment"),
    [
        ([30, -5, 21.1, 2.0], "intensity_db must be a finite number >= 0, got -5"),
        ([-1, 60, 21.1, 2.0], "age must be"),
        ([30, 60, 0, 2.0], "stimulus_rate_hz must be a finite number > 0"),
        ([30, 60, 21.1, math.nan], "fmp must be"),
    ],
)
def test_conditions_are_checked(row: list[float], fragment: str) -> None:
    with pytest.raises(DataError, match=fragment.replace("(", r"\(")):
        validate_conditions(np.array([row]), "here")
    assert validate_conditions(np.array([30, 60, 21.1, 2.0]), "here").shape == (1, 4)
