"""volume-seg end to end through the CLI on small synthetic sheet/ink volumes: prepare → plan → train → resume →
evaluate → predict → export in 3-D (with an auxiliary target), a 2-D run, the nnU-Net import, bad input, and the
learning check on a held-out volume."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from cli_runner import cli
from medtrain.cli import run
from medtrain.engine.checkpoint_io import read_checkpoint
from medtrain.io.volumes import open_volume, write_volume
from medtrain.recipes.volume_seg import task as task_module
from medtrain.recipes.volume_seg.synthetic import generate_volume_dataset

VOLUMES = [f"vol_{index:03d}" for index in range(6)]
SPLIT = [
    f"--override=data.train_volumes=[{','.join(VOLUMES[:4])}]",
    f"--override=data.val_volumes=[{VOLUMES[4]}]",
    f"--override=data.test_volumes=[{VOLUMES[5]}]",
]
SMALL_3D = [
    "--patch-size", "16,32,32",
    "--override=data.batch_size=2",
    "--override=model.base_features=8",
    "--override=model.max_features=32",
    "--override=data.samples_per_epoch=16",
    "--override=validation.max_patches=8",
    "--override=validation.debug_every_n_epochs=2",
    "--override=optim.name=adamw",
    "--override=optim.lr=3e-3",
    "--override=optim.weight_decay=1e-4",
    "--override=scheduler.name=cosine",
    "--override=data.targets={sheet: {activation: sigmoid}, ink: {activation: sigmoid}}",
    "--override=auxiliary_tasks={sheet_sdt: {type: distance_transform, source_target: sheet, loss_weight: 0.1}}",
]  # fmt: skip


@pytest.fixture(scope="module")
def volumes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("vs") / "data"
    assert generate_volume_dataset(root, n_volumes=6, shape=(24, 48, 48), spacing=(2.0, 1.0, 1.0), seed=1) == VOLUMES
    return root


@pytest.fixture(scope="module")
def trained(volumes: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    work = tmp_path_factory.mktemp("vs_runs")
    prepared = work / "prepared"
    cli("prepare", "volume-seg", "--input", volumes, "--output", prepared, *SPLIT, *SMALL_3D)
    common = ["--recipe", "volume-seg", "-i", prepared, "-o", work / "runs", "--quiet", *SPLIT, *SMALL_3D]
    cli("train", *common, "--epochs", "2")
    (run_dir,) = (work / "runs").glob("volume-seg/run_*")
    cli("train", "--config", run_dir / "config.yaml", "--resume", run_dir / "checkpoints" / "last.ckpt",
        "--epochs", "4", "--quiet")  # fmt: skip
    return {"run": run_dir, "work": work, "data": volumes, "prepared": prepared}


def test_prepare_writes_plan_statistics_and_patch_index(trained: dict[str, Path]) -> None:
    prepared = trained["prepared"]
    assert json.loads((prepared / "prepared.json").read_text())["dataset"] == str(trained["data"].resolve())
    assert list(prepared.glob("patches_*.npz")) and list(prepared.glob("intensity_*.json"))
    plan = json.loads((prepared / "plan.json").read_text())
    assert plan["spacing"] == [2.0, 1.0, 1.0] and plan["spatial_dims"] == 3
    # anisotropic spacing: z (2.0) is not pooled until the in-plane axes reach it (nnU-Net's rule)
    assert plan["topology"]["strides"][1] == [1, 2, 2]
    assert plan["topology"]["kernel_sizes"][0] == [1, 3, 3]


def test_run_directory_plan_split_and_resume(trained: dict[str, Path]) -> None:
    run_dir = trained["run"]
    plan = json.loads((run_dir / "plan.json").read_text())
    assert plan["patch_size"] == [16, 32, 32] and plan["batch_size"] == 2
    assert set(plan["targets"]) == {"sheet", "ink", "sheet_sdt"}
    assert plan["targets"]["sheet_sdt"]["source"] == "sheet"
    assert plan["normalization"]["scheme"] == "zscore" and len(plan["normalization"]["channels"]) == 1
    summary = json.loads((run_dir / "data_summary.json").read_text())
    assert summary["split"] == {"train": VOLUMES[:4], "val": [VOLUMES[4]], "test": [VOLUMES[5]]}
    final = read_checkpoint(run_dir / "checkpoints" / "final.ckpt")
    assert final["epoch"] == 4 and final["global_step"] == 4 * 8  # 16 samples / batch 2, across the resume
    assert list((run_dir / "plots" / "debug").glob("val_epoch_*.gif"))
    keys = list(read_checkpoint(run_dir / "checkpoints" / "final.ckpt")["state_dict"])
    assert not [key for key in keys if key.startswith("network.decoders") and ".encoder." in key]


def test_learning_held_out_volume_dice(trained: dict[str, Path]) -> None:
    """The main target (sheet) on the held-out volume: Dice ≥ 0.8 and above the all-foreground baseline."""
    test = json.loads((trained["run"] / "report.json").read_text())["test"]
    assert test["dice_sheet"] >= 0.8, test
    assert test["dice_sheet"] > test["baseline_dice_sheet"] + 0.2
    assert test[f"dice_sheet_{VOLUMES[5]}"] == pytest.approx(test["dice_sheet"])
    assert test["mae_sheet_sdt"] < test["baseline_mae_sheet_sdt"]
    assert (trained["run"] / "plots" / "dice_per_target.png").is_file()


def test_evaluate_predict_and_export(trained: dict[str, Path]) -> None:
    run_dir, work, data = trained["run"], trained["work"], trained["data"]
    cli("evaluate", "--run", run_dir, "--split", "val", "--output-dir", work / "eval")
    report = json.loads((work / "eval" / "report.json").read_text())
    assert report["split"] == "val" and f"dice_sheet_{VOLUMES[4]}" in report["test"]

    image = data / "images" / f"{VOLUMES[5]}.zarr"
    cli("predict", "--model", run_dir, "--input", image, "--output", work / "pred")
    written = json.loads((work / "pred" / "predictions.json").read_text())["outputs"][str(image)]
    sheet = open_volume(work / "pred" / f"{VOLUMES[5]}_sheet.zarr")
    assert sheet.shape == (24, 48, 48) and sheet.spacing == (2.0, 1.0, 1.0) and len(written) == 3
    label = open_volume(data / "labels" / f"{VOLUMES[5]}_sheet.zarr").read() > 0
    predicted = sheet.read() > 0
    dice = 2 * (predicted & label).sum() / (predicted.sum() + label.sum())
    report = json.loads((run_dir / "report.json").read_text())["test"]
    assert dice == pytest.approx(report["dice_sheet"], abs=0.02)  # same sliding window as the test step
    assert not (work / "pred" / ".partial" / VOLUMES[5]).exists()

    cli("export", "--run", run_dir, "--output", work / "export")
    assert (work / "export" / "model.onnx").stat().st_size > 10_000


def test_testing_chunk_by_chunk_scores_as_one_pass(
    trained: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_dir = trained["run"]
    cli("evaluate", "--run", run_dir, "--output-dir", tmp_path / "whole")
    chunks: list[int] = []
    chunked_inference = task_module.sliding_window_inference_chunked

    def counting(*args: object, **kwargs: object) -> int:
        chunks.append(chunked_inference(*args, **kwargs))  # type: ignore[arg-type]
        return chunks[-1]

    monkeypatch.setattr(task_module, "sliding_window_inference_chunked", counting)
    monkeypatch.setattr(task_module, "default_chunk_size", lambda shape, patch: tuple(patch))
    cli("evaluate", "--run", run_dir, "--output-dir", tmp_path / "chunked")
    assert chunks == [8]  # the 24×48×48 test volume in 16×32×32 chunks: 2 × 2 × 2
    whole = json.loads((tmp_path / "whole" / "report.json").read_text())["test"]
    chunked = json.loads((tmp_path / "chunked" / "report.json").read_text())["test"]
    for key in ("dice_sheet", "dice_ink", f"dice_sheet_{VOLUMES[5]}", "baseline_dice_sheet", "baseline_dice_ink"):
        assert chunked[key] == pytest.approx(whole[key], abs=1e-6), key  # same logits, labels and masks
    assert np.isfinite(chunked["mae_sheet_sdt"])  # the distance transform is derived per chunk: close, not equal


def test_predict_resumes_an_interrupted_volume_by_chunk(trained: dict[str, Path], tmp_path: Path) -> None:
    from medtrain.api import load_predictor
    from medtrain.recipes.volume_seg import predict as predict_module

    predictor = load_predictor(trained["run"])
    image = trained["data"] / "images" / f"{VOLUMES[0]}.zarr"
    options = {"chunk_size": [8, 48, 48]}  # three chunks along z
    predictor.predict_path(image, tmp_path / "whole", **options)
    reference = open_volume(tmp_path / "whole" / f"{VOLUMES[0]}_sheet.zarr").read()

    calls = {"n": 0}
    normalize = predict_module.normalize

    def interrupt_after_one(*args: object, **kwargs: object) -> np.ndarray:
        calls["n"] += 1
        if calls["n"] > 1:
            raise KeyboardInterrupt
        return normalize(*args, **kwargs)

    predict_module.normalize = interrupt_after_one  # type: ignore[assignment]
    try:
        with pytest.raises(KeyboardInterrupt):
            predictor.predict_path(image, tmp_path / "resumed", **options)
    finally:
        predict_module.normalize = normalize  # type: ignore[assignment]
    progress = json.loads((tmp_path / "resumed" / ".partial" / VOLUMES[0] / "progress.json").read_text())
    assert progress["done"] == [[0, 0, 0]]
    predictor.predict_path(image, tmp_path / "resumed", **options)
    np.testing.assert_array_equal(open_volume(tmp_path / "resumed" / f"{VOLUMES[0]}_sheet.zarr").read(), reference)


def test_two_dimensional_tif_run_with_nifti_predictions(tmp_path: Path) -> None:
    data = tmp_path / "data2d"
    names = generate_volume_dataset(data, n_volumes=4, spatial_dims=2, shape=(64, 64), file_format="tif", seed=2)
    cli("train", "--recipe", "volume-seg", "-i", data, "-o", tmp_path / "runs", "--quiet", "--epochs", "2",
        "--patch-size", "32,32", "--override=model.base_features=8", "--override=model.max_features=32",
        "--override=data.samples_per_epoch=8", "--override=validation.debug_every_n_epochs=1",
        "--override=inference.output_format=nifti", "--override=model.shared_decoder=true",
        f"--override=data.train_volumes=[{names[0]},{names[1]}]", f"--override=data.val_volumes=[{names[2]}]",
        f"--override=data.test_volumes=[{names[3]}]")  # fmt: skip
    (run_dir,) = (tmp_path / "runs").glob("volume-seg/run_*")
    plan = json.loads((run_dir / "plan.json").read_text())
    assert plan["spatial_dims"] == 2 and len(plan["topology"]["strides"][0]) == 2
    assert list((run_dir / "plots" / "debug").glob("val_epoch_*.png"))
    cli("predict", "--model", run_dir, "--input", data, "--output", tmp_path / "pred", "--save-probabilities",
        "--overlap", "0.25", "--mirror-axes", "0,1")  # fmt: skip
    prediction = nib.load(tmp_path / "pred" / f"{names[0]}_ink.nii.gz")
    assert prediction.shape == (64, 64)
    probabilities = np.asarray(nib.load(tmp_path / "pred" / f"{names[0]}_ink_probabilities.nii.gz").dataobj)
    assert probabilities.shape == (64, 64) and probabilities.min() >= 0 and probabilities.max() <= 1
    assert run(["predict", "--model", str(run_dir), "--input", str(data), "--output", str(tmp_path / "x"),
                "--overlap", "1.5"]) == 2  # fmt: skip


def test_nnunet_import_then_train_one_batch(tmp_path: Path) -> None:
    dataset = tmp_path / "Dataset001_Toy"
    (dataset / "imagesTr").mkdir(parents=True)
    (dataset / "labelsTr").mkdir()
    rng = np.random.default_rng(0)
    for case in ("case_a", "case_b", "case_c"):
        label = np.zeros((24, 24, 16), np.uint8)
        label[4:12, 4:12, 2:10] = 1
        label[14:20, 14:20, 4:12] = 2
        image = rng.normal(size=label.shape).astype(np.float32) + label
        nib.save(nib.Nifti1Image(image, np.diag([1.0, 1.0, 2.0, 1.0])), dataset / "imagesTr" / f"{case}_0000.nii.gz")
        nib.save(nib.Nifti1Image(label, np.diag([1.0, 1.0, 2.0, 1.0])), dataset / "labelsTr" / f"{case}.nii.gz")
    (dataset / "dataset.json").write_text(
        json.dumps(
            {
                "channel_names": {"0": "CT"},
                "labels": {"background": 0, "liver": 1, "tumour": 2},
                "numTraining": 3,
                "file_ending": ".nii.gz",
            }
        )
    )
    out = tmp_path / "imported"
    cli("prepare", "volume-seg", "--from-nnunet", dataset, "--nnunet-labels", "multiclass", "--output", out,
        "--override=data.targets={label: {activation: softmax, out_channels: 3}}", "--patch-size", "8,16,16",
        "--override=data.ratios=[0.34,0.33,0.33]")  # fmt: skip
    assert sorted(p.name for p in (out / "labels").iterdir()) == [
        f"{c}_label.zarr" for c in ("case_a", "case_b", "case_c")
    ]
    cli("train", "--recipe", "volume-seg", "-i", out, "-o", tmp_path / "runs", "--fast-dev-run", "--quiet",
        "--override=data.targets={label: {activation: softmax, out_channels: 3}}", "--patch-size", "8,16,16",
        "--override=model.base_features=4", "--override=data.ratios=[0.34,0.33,0.33]")  # fmt: skip


@pytest.mark.parametrize(
    ("problem", "expected"),
    [
        ("shape_mismatch", "does not match"),
        ("label_values", "vol_001_sheet"),
        ("missing_image", "vol_009"),
        ("nan_image", "images/vol_000.zarr: nan"),
        ("unreadable_zarr", "vol_002"),
    ],
)
def test_bad_input_exits_2_naming_the_file(
    problem: str, expected: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "data"
    generate_volume_dataset(root, n_volumes=3, shape=(16, 32, 32), seed=4)
    if problem == "shape_mismatch":
        write_volume(root / "labels" / "vol_000_ink.zarr", np.zeros((16, 32, 30), np.uint8))
    elif problem == "label_values":
        label = open_volume(root / "labels" / "vol_001_sheet.zarr").read()
        label[0, 0, 0] = 7
        write_volume(root / "labels" / "vol_001_sheet.zarr", label)
    elif problem == "missing_image":
        write_volume(root / "labels" / "vol_009_sheet.zarr", np.zeros((16, 32, 32), np.uint8))
    elif problem == "nan_image":
        image = open_volume(root / "images" / "vol_000.zarr").read().astype(np.float32)
        image[3, 4, 5] = np.nan
        write_volume(root / "images" / "vol_000.zarr", image)
    else:
        for meta in (root / "images" / "vol_002.zarr").rglob("zarr.json"):
            meta.write_text("{not json")
    assert run(["validate", "--recipe", "volume-seg", "-i", str(root), "--patch-size", "16,32,32"]) == 2
    err = capsys.readouterr().err
    assert expected in err, err
    assert "Traceback" not in err
