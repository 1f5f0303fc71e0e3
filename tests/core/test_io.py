"""Safe paths, file fingerprints and group splits from :mod:`medtrain.io` against hand-computed values."""

from __future__ import annotations

import hashlib
import os
import random
import warnings
from pathlib import Path

import pytest

from medtrain.errors import DataError
from medtrain.io.fingerprint import cache_key, fingerprint_file, fingerprint_files
from medtrain.io.paths import require_dir, require_file, resolve_inside
from medtrain.io.splits import GroupSplit, holdout_split, manual_split, split_groups

# ---------------------------------------------------------------------------------------------- paths


def test_resolve_inside_accepts_paths_that_stay_inside(tmp_path: Path) -> None:
    root = tmp_path / "data"
    (root / "a").mkdir(parents=True)
    (root / "inner_link").symlink_to(root / "a")
    assert resolve_inside(root, "a/x.npy") == root.resolve() / "a" / "x.npy"
    assert resolve_inside(root, "a/../b.npy") == root.resolve() / "b.npy"
    assert resolve_inside(root, root / "a" / "x.npy") == root.resolve() / "a" / "x.npy"
    assert resolve_inside(root, "inner_link/x.npy") == root.resolve() / "a" / "x.npy"


@pytest.mark.parametrize("relative", ["../secret.npy", "a/../../secret.npy", "/etc/passwd", "outer_link/x"])
def test_resolve_inside_rejects_escapes(tmp_path: Path, relative: str) -> None:
    root = tmp_path / "data"
    (root / "a").mkdir(parents=True)
    (root / "outer_link").symlink_to(tmp_path)
    with pytest.raises(DataError) as error:
        resolve_inside(root, relative, what="manifest entry")
    message = str(error.value)
    assert "manifest entry" in message and relative in message and str(root.resolve()) in message


def test_require_file_and_dir(tmp_path: Path) -> None:
    file = tmp_path / "w.safetensors"
    file.write_bytes(b"x")
    assert require_file(file, "weights") == file
    assert require_dir(tmp_path, "data folder") == tmp_path
    with pytest.raises(DataError, match=f"weights not found: {tmp_path / 'missing'}"):
        require_file(tmp_path / "missing", "weights")
    with pytest.raises(DataError, match="weights is not a file"):
        require_file(tmp_path, "weights")
    with pytest.raises(DataError, match="data folder not found"):
        require_dir(tmp_path / "missing", "data folder")
    with pytest.raises(DataError, match="data folder is not a folder"):
        require_dir(file, "data folder")


# ---------------------------------------------------------------------------------------------- fingerprint


def _write(path: Path, data: bytes, mtime_ns: int = 1_700_000_000_000_000_000) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.utime(path, ns=(mtime_ns, mtime_ns))
    return path


def test_fingerprint_file_hashes_head_and_tail(tmp_path: Path) -> None:
    big = _write(tmp_path / "big.bin", b"0123456789abcdef")
    small = _write(tmp_path / "small.bin", b"0123456")
    assert fingerprint_file(big, head_bytes=4) == {
        "name": "big.bin",
        "size": 16,
        "mtime_ns": 1_700_000_000_000_000_000,
        "head_sha256": hashlib.sha256(b"0123cdef").hexdigest(),
    }
    assert fingerprint_file(small, head_bytes=4)["head_sha256"] == hashlib.sha256(b"0123456").hexdigest()


def test_fingerprint_detects_mtime_size_and_edge_changes_not_middle_ones(tmp_path: Path) -> None:
    data = b"H" * 100 + b"M" * 200_000 + b"T" * 100
    path = _write(tmp_path / "vol.raw", data)
    reference = fingerprint_file(path)
    assert fingerprint_file(_write(path, data)) == reference
    assert fingerprint_file(_write(path, data, mtime_ns=1_700_000_000_000_000_001)) != reference  # touched
    assert fingerprint_file(_write(path, data + b"x")) != reference
    assert fingerprint_file(_write(path, b"X" + data[1:])) != reference
    assert fingerprint_file(_write(path, data[:-1] + b"X")) != reference
    middle = data[:100_000] + b"X" + data[100_001:]
    assert fingerprint_file(_write(path, middle)) == reference  # the documented trade-off


def test_fingerprint_files_is_order_independent_and_root_relative(tmp_path: Path) -> None:
    first = [_write(tmp_path / "one" / name, name.encode()) for name in ("a/x.npy", "b/y.npy")]
    second = [_write(tmp_path / "two" / name, name.encode()) for name in ("a/x.npy", "b/y.npy")]
    key = fingerprint_files(first, root=tmp_path / "one")
    assert len(key) == 64
    assert fingerprint_files(reversed(first), root=tmp_path / "one") == key
    assert fingerprint_files(second, root=tmp_path / "two") == key  # same tree elsewhere
    assert fingerprint_files(first, root=tmp_path) != key  # names now include "one/"
    assert fingerprint_files(first) != key  # bare file names
    with pytest.raises(DataError, match="outside the fingerprint root"):
        fingerprint_files(first, root=tmp_path / "two")


def test_cache_key() -> None:
    key = cache_key("f" * 64, {"spacing": [1.0, 1.0], "norm": "z"})
    assert len(key) == 16 and int(key, 16) >= 0
    assert cache_key("f" * 64, {"norm": "z", "spacing": [1.0, 1.0]}) == key
    assert cache_key("f" * 64, {"norm": "minmax", "spacing": [1.0, 1.0]}) != key
    assert cache_key("e" * 64, {"spacing": [1.0, 1.0], "norm": "z"}) != key


# ---------------------------------------------------------------------------------------------- splits


def _groups(n: int) -> list[str]:
    return [f"p{i:03d}" for i in range(n)]


def _sizes(split: GroupSplit) -> tuple[int, int, int]:
    return len(split.train), len(split.val), len(split.test)


# (n groups, ratios, min_per_split, expected sizes); comments show quotas -> floors -> leftovers -> fix-up.
SIZE_CASES = [
    (10, (0.7, 0.15, 0.15), 1, (7, 2, 1)),  # 7, 1.5, 1.5 -> tie goes to val
    (20, (0.7, 0.15, 0.15), 1, (14, 3, 3)),
    (100, (0.7, 0.15, 0.15), 1, (70, 15, 15)),
    (7, (0.7, 0.15, 0.15), 1, (5, 1, 1)),  # 4.9, 1.05, 1.05 -> 4,1,1 + train
    (3, (0.7, 0.15, 0.15), 1, (1, 1, 1)),  # 2.1, .45, .45 -> 2,1,0 -> test takes from train
    (4, (0.8, 0.1, 0.1), 1, (2, 1, 1)),  # 3.2, .4, .4 -> 3,1,0 -> test takes from train
    (11, (0.5, 0.25, 0.25), 1, (5, 3, 3)),  # 5.5, 2.75, 2.75 -> 5,2,2 + val + test
    (9, (0.6, 0.2, 0.2), 1, (5, 2, 2)),  # 5.4, 1.8, 1.8
    (5, (0.6, 0.4, 0.0), 1, (3, 2, 0)),  # zero ratio: empty without warning
    (4, (1.0, 0.0, 0.0), 1, (4, 0, 0)),
    (10, (0.8, 0.1, 0.1), 2, (6, 2, 2)),  # 8,1,1 -> val then test take from train
]


@pytest.mark.parametrize(("n", "ratios", "min_per_split", "expected"), SIZE_CASES)
def test_split_sizes_by_largest_remainder(
    n: int, ratios: tuple[float, float, float], min_per_split: int, expected: tuple[int, int, int]
) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        split = split_groups(_groups(n), ratios=ratios, seed=0, min_per_split=min_per_split)
    assert _sizes(split) == expected
    assert sorted(split.train + split.val + split.test) == _groups(n)
    assert all(list(part) == sorted(part) for part in (split.train, split.val, split.test))


def test_split_is_deterministic_and_independent_of_input_order() -> None:
    groups = _groups(30)
    shuffled = groups + groups[:5]
    random.Random(3).shuffle(shuffled)
    reference = split_groups(groups, seed=7)
    assert split_groups(shuffled, seed=7) == reference
    assert split_groups(iter(groups), seed=7) == reference
    assert split_groups(groups, seed=8) != reference


@pytest.mark.parametrize(
    ("n", "empty"),
    [(2, ["test"]), (1, ["val", "test"])],  # 2 groups: 2,0,0 -> val takes one from train; test stays empty
)
def test_too_few_groups_warns_naming_empty_splits(n: int, empty: list[str]) -> None:
    with pytest.warns(UserWarning) as record:
        split = split_groups(_groups(n), seed=0)
    messages = [str(warning.message) for warning in record]
    assert len(messages) == len(empty)
    for name, message in zip(empty, messages, strict=True):
        assert message.startswith(f"{name} split is empty")
        assert getattr(split, name) == ()


def test_split_groups_rejects_bad_arguments() -> None:
    for ratios in [(0.5, 0.5, 0.5), (-0.1, 0.6, 0.5), (0.5, 0.5), (float("nan"), 0.5, 0.5)]:
        with pytest.raises(ValueError, match="ratios"):
            split_groups(_groups(5), ratios=ratios)
    split_groups(_groups(5), ratios=(0.7, 0.15, 0.15 + 1e-7))  # within tolerance
    with pytest.raises(ValueError, match="min_per_split"):
        split_groups(_groups(5), min_per_split=-1)
    with pytest.raises(DataError, match="no groups"):
        split_groups([])


def test_stratified_split_spreads_each_stratum_over_every_split() -> None:
    groups = _groups(16)
    strata = {group: "lesion" if i < 10 else "healthy" for i, group in enumerate(groups)}
    split = split_groups(groups, seed=1, strata=strata)
    per_stratum = {
        label: tuple(sum(strata[group] == label for group in part) for part in (split.train, split.val, split.test))
        for label in ("healthy", "lesion")
    }
    # healthy first (sorted labels): 6 -> 4.2, .9, .9 -> 4,1,1, val and test both short by .1;
    # lesion: 10 -> 7, 1.5, 1.5 -> the tie goes to val -> 7,2,1
    assert per_stratum == {"healthy": (4, 1, 1), "lesion": (7, 2, 1)}
    assert split_groups(list(reversed(groups)), seed=1, strata=strata) == split


def test_stratified_ties_alternate_between_val_and_test() -> None:
    groups = _groups(20)
    strata = {group: "a" if i % 2 else "b" for i, group in enumerate(groups)}
    split = split_groups(groups, seed=0, strata=strata)
    # a: 7, 1.5, 1.5 -> 7,2,1, leaving test short by .5; b: the same tie now goes to test -> 7,1,2
    assert _sizes(split) == (14, 3, 3)
    for label in ("a", "b"):
        assert all(any(strata[group] == label for group in part) for part in (split.train, split.val, split.test))


def test_stratified_split_requires_a_label_per_group() -> None:
    with pytest.raises(DataError, match=r"1 group.*no stratum label: 'p004'"):
        split_groups(_groups(5), strata={group: "x" for group in _groups(4)})


def test_manual_split() -> None:
    split = manual_split(["p2", "p1"], ["p3"], [], known=["p1", "p2", "p3", "p4"])
    assert split == GroupSplit(train=("p2", "p1"), val=("p3",), test=())
    assert split.as_dict() == {"train": ["p2", "p1"], "val": ["p3"], "test": []}
    assert [split.split_of(group) for group in ("p1", "p2", "p3")] == ["train", "train", "val"]
    with pytest.raises(DataError, match="'p4' is in no split"):
        split.split_of("p4")


@pytest.mark.parametrize(
    ("lists", "pattern"),
    [
        ((["p1", "p2"], ["p3"], ["p2"]), "'p2' is listed in both train and test"),
        ((["p1", "p1"], ["p3"], []), "'p1' is listed twice in train"),
        ((["p1"], ["patient_1"], []), "'patient_1' in val is not a known group; did you mean 'patient_01'"),
        (([], ["p1"], []), "train split is empty"),
    ],
)
def test_manual_split_errors(lists: tuple[list[str], list[str], list[str]], pattern: str) -> None:
    with pytest.raises(DataError, match=pattern):
        manual_split(*lists, known=["p1", "p2", "p3", "patient_01"])


@pytest.mark.parametrize(
    ("val_ratio", "expected_val"),
    [(0.25, 2), (0.1, 1), (0.05, 1), (0.0, 0)],  # 8 left: 2.0 | .8 -> 1 | .4 -> 0 -> topped up to 1 | 0
)
def test_holdout_split(val_ratio: float, expected_val: int) -> None:
    groups = _groups(10)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        split = holdout_split(groups, test_groups=["p009", "p008"], val_ratio=val_ratio, seed=0)
    assert split.test == ("p008", "p009")
    assert len(split.val) == expected_val and len(split.train) == 8 - expected_val
    assert sorted(split.train + split.val) == groups[:8]


def test_holdout_split_errors() -> None:
    with pytest.raises(DataError, match="'p10' is not a known group; did you mean 'p1'"):
        holdout_split(["p1", "p2"], test_groups=["p10"], val_ratio=0.2, seed=0)
    with pytest.raises(DataError, match="none is left for training"):
        holdout_split(["p1", "p2"], test_groups=["p1", "p2"], val_ratio=0.2, seed=0)
    with pytest.raises(ValueError, match="val_ratio"):
        holdout_split(["p1", "p2"], test_groups=["p1"], val_ratio=1.0, seed=0)
    with pytest.warns(UserWarning, match="val split is empty"):
        holdout_split(["p1", "p2"], test_groups=["p1"], val_ratio=0.2, seed=0)
