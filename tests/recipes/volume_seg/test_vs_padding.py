"""volume-seg with volumes smaller than the patch: nnU-Net-style zero padding, left out of the loss, end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cli_runner import cli
from medtrain.io.volumes import box_inside, open_volume
from medtrain.recipes.volume_seg.data import SampleBuilder
from medtrain.recipes.volume_seg.dataset_plan import build_dataset_plan
from medtrain.recipes.volume_seg.normalization import normalize
from medtrain.recipes.volume_seg.schema import VolumeSegConfig
from medtrain.recipes.volume_seg.synthetic import generate_volume_dataset


@pytest.mark.parametrize(
    ("starts", "sizes", "shape", "expected"),
    [
        ((0, 2), (4, 4), (8, 8), ((0, 2), (4, 4), ((0, 0), (0, 0)))),  # inside: nothing to pad
        ((-1, -1), (10, 11), (8, 8), ((0, 0), (8, 8), ((1, 1), (1, 2)))),  # larger than the volume on both axes
        ((0, 6), (1, 4), (1, 8), ((0, 6), (1, 2), ((0, 0), (0, 2)))),  # past the end
    ],
)
def test_box_inside_splits_a_box_into_the_part_in_the_volume_and_its_padding(
    starts: tuple[int, ...], sizes: tuple[int, ...], shape: tuple[int, ...], expected: tuple[object, ...]
) -> None:
    assert box_inside(starts, sizes, shape) == expected


def test_box_inside_rejects_a_box_outside_the_volume() -> None:
    with pytest.raises(ValueError, match="outside the extent 8"):
        box_inside((8, 0), (2, 2), (8, 8))


def test_a_padded_sample_is_zero_outside_the_volume_and_masked_out_of_the_loss(tmp_path: Path) -> None:
    root = tmp_path / "data"
    generate_volume_dataset(root, n_volumes=3, shape=(8, 16, 16), seed=1)
    cfg = VolumeSegConfig.model_validate({"data": {"root": str(root), "patch_size": [10, 16, 16]}})
    plan = build_dataset_plan(cfg)
    builder = SampleBuilder(plan, plan.cases, on_label_only=False, augment=None)
    sample = builder.build(0, (-1, 0, 0), (10, 16, 16))  # one slice of padding before the volume, one after
    case = plan.cases[0]
    image = open_volume(case.image).read().astype(np.float32)[None]
    expected = normalize(image, plan.normalization_stats, plan.normalization)
    assert sample["image"].shape == (1, 10, 16, 16)
    np.testing.assert_allclose(sample["image"][:, 1:9].numpy(), expected, rtol=1e-6)
    assert not sample["image"][:, [0, 9]].any()
    for target in ("sheet", "ink"):
        label = open_volume(case.labels[target]).read()
        np.testing.assert_array_equal(sample["targets"][target][0, 1:9].numpy(), label > 0)
        assert not sample["targets"][target][:, [0, 9]].any()
        assert not sample["masks"][target][:, [0, 9]].any()  # padding never counts in the loss
    assert sample["masks"]["sheet"][:, 1:9].all()  # the sheet has no mask file: every voxel inside counts


def test_volumes_smaller_than_the_patch_train_evaluate_and_predict(tmp_path: Path) -> None:
    root = tmp_path / "data"
    names = generate_volume_dataset(root, n_volumes=3, shape=(10, 24, 24), seed=4)
    cli("train", "--recipe", "volume-seg", "-i", root, "-o", tmp_path / "runs", "--quiet", "--epochs", "1",
        "--patch-size", "16,32,24", "--override=model.base_features=4", "--override=model.max_features=16",
        "--override=data.samples_per_epoch=4", f"--override=data.train_volumes=[{names[0]}]",
        f"--override=data.val_volumes=[{names[1]}]", f"--override=data.test_volumes=[{names[2]}]")  # fmt: skip
    (run_dir,) = (tmp_path / "runs").glob("volume-seg/run_*")
    test = json.loads((run_dir / "report.json").read_text())["test"]
    assert 0.0 <= test["dice_sheet"] <= 1.0
    cli("predict", "--model", run_dir, "--input", root, "--output", tmp_path / "pred")
    prediction = open_volume(tmp_path / "pred" / f"{names[2]}_sheet.zarr")
    assert prediction.spatial_shape == (10, 24, 24)
