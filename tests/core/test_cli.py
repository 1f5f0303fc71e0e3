"""The ``medtrain`` command line with the test-only toy recipe: commands, flags, config precedence, exit codes.

Most cases run in-process through :func:`medtrain.cli.run` (it returns the exit code); a few start
``python -m medtrain`` to prove the real entry point and that an exit-2 error shows no traceback.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from medtrain.cli import run
from medtrain.engine.checkpoint_io import read_checkpoint

COMMANDS = ("train", "validate", "plan", "prepare", "evaluate", "predict", "export", "demo", "recipes")
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def cli(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    """Run the CLI in-process: exit code, stdout, stderr (ANSI codes stripped)."""
    code = run([str(arg) for arg in argv])
    captured = capsys.readouterr()
    return code, ANSI.sub("", captured.out), ANSI.sub("", captured.err)


def words(text: str) -> str:
    """Whitespace collapsed to single spaces (rich wraps long lines at the console width)."""
    return " ".join(text.split())


def squash(text: str) -> str:
    """All whitespace removed: compares paths that rich may have folded across lines."""
    return "".join(text.split())


def dry_run(capsys: pytest.CaptureFixture[str], data: Path, tmp_path: Path, *extra: object) -> str:
    """``train --recipe toy ... --dry-run``: asserts exit 0 and returns stdout."""
    code, stdout, stderr = cli(
        capsys,
        "train",
        "--recipe",
        "toy",
        "--override",
        f"data.root={data}",
        "--override",
        f"output_dir={tmp_path / 'runs'}",
        "--dry-run",
        *extra,
    )
    assert code == 0, stderr
    return stdout


def assert_user_error(code: int, stderr: str, *fragments: str) -> None:
    """Exit code 2, an ``error:`` message containing every fragment, and no traceback."""
    assert code == 2, stderr
    assert "error:" in stderr
    assert "Traceback" not in stderr
    for fragment in fragments:
        assert words(fragment) in words(stderr), (fragment, stderr)


def subprocess_cli(*argv: object) -> subprocess.CompletedProcess[str]:
    """The real entry point; conftest puts the toy plugin and its PYTHONPATH into os.environ."""
    return subprocess.run(
        [sys.executable, "-m", "medtrain", *map(str, argv)],
        capture_output=True,
        text=True,
        env=os.environ | {"NO_COLOR": "1"},
        timeout=120,
    )


# -- recipes ---------------------------------------------------------------------------------------------------
def test_recipes_lists_toy_with_summary(capsys: pytest.CaptureFixture[str]) -> None:
    code, stdout, _ = cli(capsys, "recipes")
    assert code == 0
    assert re.search(r"toy\s.*test-only MLP regression on a table", stdout)


def test_recipes_toy_shows_flag_aliases_and_env_alias(capsys: pytest.CaptureFixture[str]) -> None:
    code, stdout, _ = cli(capsys, "recipes", "toy")
    assert code == 0
    assert "toy: test-only MLP regression on a table" in stdout
    for fragment in ("-i, --input-table", "data.root", "--wide", "model.hidden", "env TOY_EPOCHS → trainer.max_epochs"):
        assert fragment in stdout, fragment
    assert "default.yaml" in squash(stdout)


def test_recipes_unknown_name_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, stderr = cli(capsys, "recipes", "nope")
    assert_user_error(code, stderr, "unknown recipe 'nope'", "toy")


# -- help ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_help_has_examples_and_shared_options(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, stdout, _ = cli(capsys, command, "--help")
    assert code == 0
    assert "Examples" in stdout
    assert f"medtrain {command}" in stdout
    assert "--log-level" in stdout and "--debug" in stdout


def test_python_m_medtrain_help_lists_every_command() -> None:
    result = subprocess_cli("--help")
    assert result.returncode == 0, result.stderr
    for command in COMMANDS:
        assert command in result.stdout, command


def test_subprocess_exit_2_is_one_readable_error_without_traceback(toy_data: Path) -> None:
    result = subprocess_cli(
        "train", "--recipe", "toy", "--override", f"data.root={toy_data}", "--override", "trainer.max_epoch=3"
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert "did you mean 'trainer.max_epochs'" in words(result.stderr)
    assert result.stdout == ""


# -- dry run and config precedence -----------------------------------------------------------------------------
def test_dry_run_prints_resolved_config_and_hash(
    capsys: pytest.CaptureFixture[str], toy_data: Path, tmp_path: Path
) -> None:
    stdout = dry_run(capsys, toy_data, tmp_path)
    assert re.search(r"^# config_hash: [0-9a-f]{8,}$", stdout, re.MULTILINE)
    assert re.search(r"^  max_epochs: 3$", stdout, re.MULTILINE)  # from the recipe's default.yaml
    assert re.search(r"^recipe: toy$", stdout, re.MULTILINE)
    assert f"root:{toy_data}" in squash(stdout)
    assert not (tmp_path / "runs").exists()  # a dry run writes nothing

    assert re.search(r"^  max_epochs: 5$", dry_run(capsys, toy_data, tmp_path, "--epochs", "5"), re.MULTILINE)


def test_dry_run_hash_changes_with_the_config(
    capsys: pytest.CaptureFixture[str], toy_data: Path, tmp_path: Path
) -> None:
    def hash_of(stdout: str) -> str:
        match = re.search(r"config_hash: (\S+)", stdout)
        assert match is not None
        return match.group(1)

    first = hash_of(dry_run(capsys, toy_data, tmp_path))
    assert hash_of(dry_run(capsys, toy_data, tmp_path)) == first
    assert hash_of(dry_run(capsys, toy_data, tmp_path, "--lr", "0.5")) != first


def test_precedence_file_env_override_flag(
    capsys: pytest.CaptureFixture[str], toy_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def max_epochs(*extra: object) -> int:
        match = re.search(r"^  max_epochs: (\d+)$", dry_run(capsys, toy_data, tmp_path, *extra), re.MULTILINE)
        assert match is not None
        return int(match.group(1))

    monkeypatch.setenv("MEDTRAIN_TRAINER__MAX_EPOCHS", "4")
    assert max_epochs() == 4  # env beats the file
    assert max_epochs("--override", "trainer.max_epochs=6") == 6  # override beats env
    assert max_epochs("--override", "trainer.max_epochs=6", "--epochs", "7") == 7  # flag beats override


def test_recipe_env_alias(
    capsys: pytest.CaptureFixture[str], toy_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TOY_EPOCHS", "9")
    assert re.search(r"^  max_epochs: 9$", dry_run(capsys, toy_data, tmp_path), re.MULTILINE)


def test_user_config_with_base_infers_the_recipe(
    capsys: pytest.CaptureFixture[str], toy_data: Path, tmp_path: Path
) -> None:
    (tmp_path / "base.yaml").write_text("recipe: toy\ntrainer:\n  max_epochs: 11\nmodel:\n  hidden: 20\n")
    user = tmp_path / "user.yaml"
    user.write_text(f"_base_: base.yaml\ndata:\n  root: {toy_data}\nmodel:\n  hidden: 24\n")
    code, stdout, stderr = cli(capsys, "train", "--config", user, "--dry-run")
    assert code == 0, stderr
    assert re.search(r"^recipe: toy$", stdout, re.MULTILINE)
    assert re.search(r"^  max_epochs: 11$", stdout, re.MULTILINE)  # from the base file
    assert re.search(r"^  hidden: 24$", stdout, re.MULTILINE)  # the user file beats its base
    assert f"root:{toy_data}" in squash(stdout)
    assert not re.search(r"^_base_:", stdout, re.MULTILINE)

    # the recipe inferred from the file also provides its alias flags
    code, stdout, stderr = cli(capsys, "train", "--config", user, "--dry-run", "--wide", "32")
    assert code == 0, stderr
    assert re.search(r"^  hidden: 32$", stdout, re.MULTILINE)


# -- recipe alias flags ----------------------------------------------------------------------------------------
def test_recipe_alias_flags_set_config_keys(capsys: pytest.CaptureFixture[str], toy_data: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    stdout = dry_run(capsys, toy_data, tmp_path, "-i", elsewhere, "--wide", "32")
    assert f"root:{elsewhere}" in squash(stdout)  # -i beats --override data.root
    assert re.search(r"^  hidden: 32$", stdout, re.MULTILINE)

    stdout = dry_run(capsys, toy_data, tmp_path, "--wide=48", "--input-table", elsewhere)
    assert re.search(r"^  hidden: 48$", stdout, re.MULTILINE)
    assert f"root:{elsewhere}" in squash(stdout)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--widee", "3"], "unexpected option '--widee' for 'medtrain train'; did you mean --wide?"),
        (["--wide"], "option --wide needs a value"),
        (["stray"], "unexpected argument 'stray' for 'medtrain train'"),
        (["--wide", "abc"], "config key 'model.hidden' = 'abc' (from flag --wide): expected an integer"),
    ],
)
def test_bad_recipe_flags_are_usage_errors(
    extra: list[str], message: str, capsys: pytest.CaptureFixture[str], toy_data: Path, tmp_path: Path
) -> None:
    code, _, stderr = cli(
        capsys, "train", "--recipe", "toy", "--override", f"data.root={toy_data}", "--dry-run", *extra
    )
    assert_user_error(code, stderr, message)


# -- bad input: exit 2 and one readable message ----------------------------------------------------------------
@pytest.mark.parametrize(
    ("extra", "fragments"),
    [
        (["--override", "trainer.max_epoch=3"], ["unknown config key", "did you mean 'trainer.max_epochs'"]),
        (["--override", "trainer.max_epochs=abc"], ["trainer.max_epochs", "'abc'", "integer"]),
        (["--precision", "17"], ["trainer.precision", "'17'", "--precision", "'32-true'", "'bf16-mixed'"]),
        (["--override", "no_equals_sign"], ["invalid override 'no_equals_sign'", "KEY=VALUE"]),
        (["--log-level", "bogus"], ["--log-level", "'bogus'"]),
        (["--epochs", "abc"], ["--epochs"]),
    ],
)
def test_bad_config_values_are_usage_errors(
    extra: list[str], fragments: list[str], capsys: pytest.CaptureFixture[str], toy_data: Path, tmp_path: Path
) -> None:
    code, stdout, stderr = cli(
        capsys, "train", "--recipe", "toy", "--override", f"data.root={toy_data}", "--dry-run", *extra
    )
    assert code == 2, stderr
    assert "Traceback" not in stderr
    assert "config_hash" not in stdout
    for fragment in fragments:
        assert fragment in words(stderr), (fragment, stderr)


def test_debug_shows_the_traceback(capsys: pytest.CaptureFixture[str], toy_data: Path) -> None:
    argv = ["train", "--recipe", "toy", "--override", f"data.root={toy_data}", "--override", "trainer.max_epoch=3"]
    code, _, stderr = cli(capsys, *argv, "--dry-run")
    assert_user_error(code, stderr, "did you mean 'trainer.max_epochs'")
    code, _, stderr = cli(capsys, *argv, "--dry-run", "--debug")
    assert code == 2
    assert "Traceback" in stderr and "ConfigError" in stderr
    assert "did you mean 'trainer.max_epochs'" in words(stderr)


def test_missing_data_root_is_a_usage_error(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    missing = tmp_path / "nonexistent"
    common = ["--recipe", "toy", "--override", f"data.root={missing}", "--override", f"output_dir={tmp_path / 'runs'}"]
    code, _, stderr = cli(capsys, "train", *common, "--validate-config")
    assert_user_error(code, stderr, "data.root")
    assert str(missing) in squash(stderr)
    code, _, stderr = cli(capsys, "train", *common, "--epochs", "1", "--quiet")
    assert_user_error(code, stderr, "data.root")
    assert str(missing) in squash(stderr)
    code, _, stderr = cli(capsys, "validate", *common)
    assert_user_error(code, stderr, "data.root")
    assert not (tmp_path / "runs").exists()  # refused before a run directory was made


def test_missing_files_are_usage_errors(capsys: pytest.CaptureFixture[str], toy_data: Path, tmp_path: Path) -> None:
    missing_config = tmp_path / "nope.yaml"
    code, _, stderr = cli(capsys, "train", "--config", missing_config, "--dry-run")
    assert_user_error(code, stderr, "config file not found")
    assert str(missing_config) in squash(stderr)

    missing_ckpt = tmp_path / "nonexistent.ckpt"
    code, _, stderr = cli(
        capsys,
        "train",
        "--recipe",
        "toy",
        "--override",
        f"data.root={toy_data}",
        "--output-dir",
        tmp_path / "runs",
        "--epochs",
        "1",
        "--resume",
        missing_ckpt,
    )
    assert_user_error(code, stderr, "checkpoint not found")
    assert str(missing_ckpt) in squash(stderr)
    assert not (tmp_path / "runs").exists()

    code, _, stderr = cli(capsys, "evaluate", "--checkpoint", tmp_path / "nonexistent")
    assert_user_error(code, stderr, "not a checkpoint or run directory")
    code, _, stderr = cli(capsys, "evaluate", "--run", tmp_path / "nonexistent", "--split", "train")
    assert_user_error(code, stderr, "--split must be 'test' or 'val'")
    code, _, stderr = cli(capsys, "predict", "--model", tmp_path / "nonexistent", "--input", tmp_path / "x.npz")
    assert_user_error(code, stderr, "no exported model")
    code, _, stderr = cli(capsys, "export", "--run", tmp_path / "nonexistent", "--output", tmp_path / "exp")
    assert_user_error(code, stderr, "not a checkpoint or run directory")
    assert not (tmp_path / "exp").exists()


def test_recipe_flag_contradicting_the_config_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    other = tmp_path / "other.yaml"
    other.write_text("recipe: volume-seg\n")
    code, _, stderr = cli(capsys, "train", "--recipe", "toy", "--config", other, "--dry-run")
    assert_user_error(code, stderr, "--recipe toy contradicts recipe: volume-seg")
    code, _, stderr = cli(capsys, "train", "--dry-run")
    assert_user_error(code, stderr, "no recipe given")


# -- validate --------------------------------------------------------------------------------------------------
def test_validate_and_validate_config(capsys: pytest.CaptureFixture[str], toy_data: Path, tmp_path: Path) -> None:
    code, stdout, stderr = cli(capsys, "validate", "--recipe", "toy", "--override", f"data.root={toy_data}")
    assert code == 0, stderr
    assert "valid: recipe toy, experiment toy" in stdout

    runs = tmp_path / "runs"
    code, stdout, stderr = cli(
        capsys,
        "train",
        "--recipe",
        "toy",
        "--override",
        f"data.root={toy_data}",
        "--output-dir",
        runs,
        "--validate-config",
    )
    assert code == 0, stderr
    assert "config and data are valid" in stdout
    assert not runs.exists()


# -- the whole path through the CLI ----------------------------------------------------------------------------
def test_train_evaluate_predict_export_plan_prepare(
    capsys: pytest.CaptureFixture[str], toy_data: Path, tmp_path: Path
) -> None:
    runs = tmp_path / "runs"
    common = ["--recipe", "toy", "--override", f"data.root={toy_data}", "--epochs", "2", "--output-dir", runs]
    code, stdout, stderr = cli(capsys, "train", *common, "--dry-run")
    assert code == 0, stderr
    planned_hash = re.search(r"config_hash: (\S+)", stdout).group(1)  # type: ignore[union-attr]

    code, stdout, stderr = cli(capsys, "train", *common, "--quiet")
    assert code == 0, stderr
    run_dirs = list((runs / "toy").iterdir())
    assert len(run_dirs) == 1
    run_dir = run_dirs[0]
    assert f"rundirectory:{run_dir}" in squash(stdout)
    assert re.search(r"test mse: \d", stdout) and re.search(r"test baseline_mse: \d", stdout)
    assert f"report:{run_dir / 'report.html'}" in squash(stdout)
    assert "━" not in stdout + stderr  # --quiet: no rich progress bar
    assert "epoch 1/2" not in stderr  # --quiet: WARNING level, per-epoch lines hidden
    report = json.loads((run_dir / "report.json").read_text())
    assert report["config_hash"] == planned_hash  # --dry-run printed the config that was trained
    assert read_checkpoint(run_dir / "checkpoints" / "final.ckpt")["epoch"] == 2

    code, stdout, stderr = cli(
        capsys, "evaluate", "--run", run_dir, "--split", "val", "--output-dir", tmp_path / "eval"
    )
    assert code == 0, stderr
    evaluation = json.loads((tmp_path / "eval" / "report.json").read_text())
    assert evaluation["split"] == "val"
    assert "mse" in stdout and "baseline" in stdout

    np.savez(tmp_path / "X.npz", x=np.random.default_rng(0).normal(size=(5, 8)).astype(np.float32))
    code, stdout, stderr = cli(
        capsys, "predict", "--model", run_dir, "--input", tmp_path / "X.npz", "--output", tmp_path / "pred"
    )
    assert code == 0, stderr
    predictions = tmp_path / "pred" / "predictions.npy"
    assert np.load(predictions).shape == (5,)
    assert f"predictions:{predictions}" in squash(stdout)

    code, stdout, stderr = cli(capsys, "export", "--run", run_dir, "--output", tmp_path / "exp")
    assert code == 0, stderr
    assert {"model.safetensors", "model.json", "model.onnx"} <= {p.name for p in (tmp_path / "exp").iterdir()}

    code, stdout, stderr = cli(capsys, "plan", "--recipe", "toy", "--override", f"data.root={toy_data}")
    assert code == 0, stderr
    assert "no automatic plan" in stdout

    code, _, stderr = cli(capsys, "prepare", "toy", "--input", tmp_path / "a", "--output", tmp_path / "b")
    assert_user_error(code, stderr, "has no prepare step")
    assert not (tmp_path / "b").exists()


def test_runtime_failure_exits_1_without_traceback(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    from toyrecipe import make_table

    narrow = make_table(tmp_path / "narrow", samples=64, features=4)  # the model expects 8 features
    code, _, stderr = cli(
        capsys,
        "train",
        "--recipe",
        "toy",
        "--override",
        f"data.root={narrow}",
        "--output-dir",
        tmp_path / "runs",
        "--epochs",
        "1",
        "--quiet",
    )
    assert code == 1, stderr
    assert "training failed" in words(stderr)
    assert "Traceback" not in stderr


def test_resume_auto_continues_in_the_same_run_directory(
    capsys: pytest.CaptureFixture[str], toy_data: Path, tmp_path: Path
) -> None:
    runs = tmp_path / "runs"
    common = ["--recipe", "toy", "--override", f"data.root={toy_data}", "--output-dir", runs, "--quiet"]
    code, _, stderr = cli(capsys, "train", *common, "--epochs", "2")
    assert code == 0, stderr
    first = list((runs / "toy").iterdir())
    code, stdout, stderr = cli(capsys, "train", *common, "--epochs", "3", "--resume", "auto")
    assert code == 0, stderr
    run_dirs = list((runs / "toy").iterdir())
    assert run_dirs == first
    assert f"rundirectory:{run_dirs[0]}" in squash(stdout)
    assert read_checkpoint(run_dirs[0] / "checkpoints" / "final.ckpt")["epoch"] == 3


# -- progress modes --------------------------------------------------------------------------------------------
def test_quiet_progress_logs_one_line_per_epoch_at_info(
    capsys: pytest.CaptureFixture[str], toy_data: Path, tmp_path: Path
) -> None:
    code, stdout, stderr = cli(
        capsys,
        "train",
        "--recipe",
        "toy",
        "--override",
        f"data.root={toy_data}",
        "--output-dir",
        tmp_path / "runs",
        "--epochs",
        "2",
        "--override",
        "trainer.progress=quiet",
        "--log-level",
        "INFO",
    )
    assert code == 0, stderr
    assert stderr.count("epoch 1/2 ·") == 1 and stderr.count("epoch 2/2 ·") == 1
    assert "val_loss" in stderr
    assert "━" not in stdout + stderr
    assert "epoch" not in stdout


@pytest.mark.parametrize(("progress", "bars", "summaries"), [("rich", 1, 0), ("quiet", 0, 1)])
def test_build_callbacks_picks_the_progress_display(
    progress: str, bars: int, summaries: int, toy_data: Path, tmp_path: Path
) -> None:
    from medtrain import api
    from medtrain.engine.callbacks import EpochSummary, ThroughputProgressBar
    from medtrain.engine.rundir import RunPaths
    from medtrain.engine.trainer import build_callbacks

    _, cfg = api.config_for(recipe="toy", overrides=[f"data.root={toy_data}", f"trainer.progress={progress}"])
    built = build_callbacks(cfg, RunPaths(tmp_path), resume_command=["medtrain", "train"])
    assert sum(isinstance(callback, ThroughputProgressBar) for callback in built.all) == bars
    assert sum(isinstance(callback, EpochSummary) for callback in built.all) == summaries


def test_auto_progress_is_quiet_in_ci(toy_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from medtrain import api
    from medtrain.engine.callbacks import EpochSummary, ThroughputProgressBar
    from medtrain.engine.rundir import RunPaths
    from medtrain.engine.trainer import build_callbacks

    monkeypatch.setenv("CI", "1")
    _, cfg = api.config_for(recipe="toy", overrides=[f"data.root={toy_data}", "trainer.progress=auto"])
    built = build_callbacks(cfg, RunPaths(tmp_path), resume_command=["medtrain", "train"])
    assert any(isinstance(callback, EpochSummary) for callback in built.all)
    assert not any(isinstance(callback, ThroughputProgressBar) for callback in built.all)


# -- demo ------------------------------------------------------------------------------------------------------
def test_demo_runs_the_whole_path(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, stdout, stderr = cli(capsys, "demo", "toy", "--output", tmp_path / "demo")
    assert code == 0, stderr
    root = tmp_path / "demo" / "toy"
    reports = list((root / "runs" / "toy").glob("run_*/report.html"))
    assert len(reports) == 1
    assert f"report:{reports[0]}" in squash(stdout)
    assert (root / "data").is_dir()
    assert (root / "predictions" / "predictions.npy").is_file()
    assert (root / "export" / "model.onnx").is_file()


# -- regressions: long paths, resume + recipe flags ------------------------------------------------
def _long_dir(tmp_path: Path) -> Path:
    """A folder whose path is far wider than any console (rich wraps at 80 columns when not on a terminal)."""
    return tmp_path / ("a" * 120) / ("b" * 120) / ("c" * 120)


def test_dry_run_output_is_valid_yaml_for_long_paths(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    from toyrecipe import make_table

    data = make_table(_long_dir(tmp_path))
    stdout = dry_run(capsys, data, tmp_path)
    assert f"  root: {data}\n" in stdout
    assert yaml.safe_load(stdout)["data"]["root"] == str(data)


def test_exit_2_error_is_a_single_line_for_long_paths(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    missing = _long_dir(tmp_path) / "missing"
    code, _, stderr = cli(capsys, "validate", "--recipe", "toy", "--override", f"data.root={missing}")
    assert code == 2
    assert stderr.strip().splitlines() == [f"error: data.root does not exist: {missing}"]


def test_recipe_flags_with_resume_from_a_checkpoint(
    capsys: pytest.CaptureFixture[str], toy_data: Path, tmp_path: Path
) -> None:
    import medtrain

    result = medtrain.train(
        recipe="toy", overrides=[f"data.root={toy_data}", f"output_dir={tmp_path / 'runs'}", "trainer.max_epochs=1"]
    )
    # without recipe flags the checkpoint's embedded config names the recipe
    code, stdout, stderr = cli(capsys, "train", "--resume", result.final_checkpoint, "--epochs", "2", "--dry-run")
    assert code == 0, stderr
    assert re.search(r"^recipe: toy$", stdout, re.MULTILINE)
    # the same with one of the toy recipe's own flags
    elsewhere = tmp_path / "elsewhere"
    code, stdout, stderr = cli(
        capsys, "train", "--resume", result.final_checkpoint, "--epochs", "2", "--dry-run", "-i", elsewhere
    )
    assert code == 0, stderr
    assert f"root:{elsewhere}" in squash(stdout)
