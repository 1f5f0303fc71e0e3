"""nnU-Net raw import: a tiny two-case, two-channel dataset written with nibabel, both modes, and bad inputs."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medtrain.errors import DataError
from medtrain.io.volumes import open_volume
from medtrain.recipes.volume_seg.cases import check_cases, discover_cases
from medtrain.recipes.volume_seg.nnunet_import import import_nnunet

SPACING_XYZ = {"case_001": (0.5, 0.75, 2.0), "case_002": (1.0, 1.0, 3.0)}
LABELS = {"background": 0, "a": 1, "b": 2}


def _nifti(path: Path, array_xyz: np.ndarray, zooms: tuple[float, ...]) -> None:
    image = nib.Nifti1Image(array_xyz, np.diag([*zooms, 1.0]))
    image.header.set_zooms(zooms)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(image, str(path))


def _nnunet(root: Path) -> dict[str, dict[str, np.ndarray]]:
    """Dataset001_Tiny: 2 cases × 2 channels (x, y, z) = (5, 4, 3) and labels {0, 1, 2}; returns the arrays."""
    rng = np.random.default_rng(0)
    arrays: dict[str, dict[str, np.ndarray]] = {}
    for case, zooms in SPACING_XYZ.items():
        channels = [rng.normal(size=(5, 4, 3)).astype(np.float32) for _ in range(2)]
        label = rng.integers(0, 3, size=(5, 4, 3)).astype(np.uint8)
        for number, channel in enumerate(channels):
            _nifti(root / f"imagesTr/{case}_{number:04d}.nii.gz", channel, zooms)
        _nifti(root / f"labelsTr/{case}.nii.gz", label, zooms)
        arrays[case] = {"channels": np.stack([c.transpose(2, 1, 0) for c in channels]), "label": label.T}
    payload = {"channel_names": {"0": "T1", "1": "T2"}, "labels": LABELS, "numTraining": 2, "file_ending": ".nii.gz"}
    (root / "dataset.json").write_text(json.dumps(payload))
    return arrays


def test_per_label_import_writes_binary_targets_spacing_and_names(tmp_path: Path) -> None:
    arrays = _nnunet(tmp_path / "Dataset001_Tiny")
    out = import_nnunet(tmp_path / "Dataset001_Tiny", tmp_path / "out")
    index = discover_cases(out)
    assert index.names == ("case_001", "case_002") and index.targets == ("a", "b")
    assert index.channel_names == ("T1", "T2") and index.target_classes == {"a": 2, "b": 2}
    for case in index.cases:
        image = open_volume(case.image)
        assert image.shape == (2, 3, 4, 5) and image.spacing == tuple(reversed(SPACING_XYZ[case.name]))
        np.testing.assert_array_equal(image.read(), arrays[case.name]["channels"])
        for name, value in (("a", 1), ("b", 2)):
            binary = open_volume(case.labels[name]).read()
            assert binary.dtype == np.uint8
            np.testing.assert_array_equal(binary, (arrays[case.name]["label"] == value).astype(np.uint8))
    written = json.loads((out / "dataset.json").read_text())
    assert written["spacing"]["case_001"] == [2.0, 0.75, 0.5] and written["source"]["mode"] == "per_label"
    summary = check_cases(index, target_classes={"a": 2, "b": 2})
    assert summary.channels == 2 and summary.cases[0].spacing_source == "file"


def test_multiclass_import_keeps_class_indices_in_one_target(tmp_path: Path) -> None:
    arrays = _nnunet(tmp_path / "Dataset001_Tiny")
    out = import_nnunet(tmp_path / "Dataset001_Tiny", tmp_path / "out", mode="multiclass", target_name="organs")
    index = discover_cases(out)
    assert index.targets == ("organs",) and index.target_classes == {"organs": 3}
    assert json.loads((out / "dataset.json").read_text())["targets"]["organs"]["class_names"] == [
        "background",
        "a",
        "b",
    ]
    for case in index.cases:
        np.testing.assert_array_equal(open_volume(case.labels["organs"]).read(), arrays[case.name]["label"])
    with pytest.raises(DataError, match="already exists"):
        import_nnunet(tmp_path / "Dataset001_Tiny", tmp_path / "out")
    import_nnunet(tmp_path / "Dataset001_Tiny", tmp_path / "out", overwrite=True)
    assert discover_cases(tmp_path / "out").targets == ("a", "b")


def test_region_labels_become_unions_in_per_label_mode(tmp_path: Path) -> None:
    arrays = _nnunet(tmp_path / "ds")
    payload = json.loads((tmp_path / "ds/dataset.json").read_text())
    payload["labels"] = {"background": 0, "a": 1, "whole": [1, 2]}
    (tmp_path / "ds/dataset.json").write_text(json.dumps(payload))
    out = import_nnunet(tmp_path / "ds", tmp_path / "out")
    whole = open_volume(discover_cases(out).case("case_002").labels["whole"]).read()
    np.testing.assert_array_equal(whole, (arrays["case_002"]["label"] > 0).astype(np.uint8))
    with pytest.raises(DataError, match="region labels"):
        import_nnunet(tmp_path / "ds", tmp_path / "out2", mode="multiclass")


def _break(root: Path, what: str) -> None:
    if what == "no dataset.json":
        (root / "dataset.json").unlink()
    elif what == "missing channel":
        (root / "imagesTr/case_002_0001.nii.gz").unlink()
    elif what == "missing label":
        (root / "labelsTr/case_001.nii.gz").unlink()
    elif what == "undeclared value":
        _nifti(root / "labelsTr/case_002.nii.gz", np.full((5, 4, 3), 7, np.uint8), SPACING_XYZ["case_002"])
    elif what == "shape":
        _nifti(root / "labelsTr/case_002.nii.gz", np.zeros((5, 4, 2), np.uint8), SPACING_XYZ["case_002"])
    elif what == "file ending":
        payload = json.loads((root / "dataset.json").read_text())
        (root / "dataset.json").write_text(json.dumps({**payload, "file_ending": ".png"}))


BAD = [
    ("no dataset.json", "nnU-Net dataset.json not found"),
    ("missing channel", r"imagesTr/case_002_0001.nii.gz: missing channel 1 \(T2\)"),
    ("missing label", "labelsTr/case_001.nii.gz: missing label file"),
    ("undeclared value", r"labelsTr/case_002.nii.gz: label values \[7\] are not in dataset.json labels \[0, 1, 2\]"),
    ("shape", r"labelsTr/case_002.nii.gz: shape \(2, 4, 5\) does not match"),
    ("file ending", "file_ending '.png' is not supported"),
]


@pytest.mark.parametrize(("what", "message"), BAD, ids=[row[0] for row in BAD])
def test_bad_nnunet_datasets_raise_data_errors_naming_the_file(tmp_path: Path, what: str, message: str) -> None:
    _nnunet(tmp_path / "ds")
    _break(tmp_path / "ds", what)
    with pytest.raises(DataError, match=message):
        import_nnunet(tmp_path / "ds", tmp_path / "out")
