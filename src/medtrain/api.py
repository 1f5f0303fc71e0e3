"""The Python API; mirrors the CLI one function per command and stays thin (the work is in ``engine/``).

::

    import medtrain
    result = medtrain.train("experiment.yaml", overrides=["trainer.max_epochs=20"])
    report = medtrain.evaluate(result.run_dir, split="test")
    predictor = medtrain.load_predictor(result.run_dir)
    predictor.predict_path(Path("new_case"), Path("prediction.h5"))
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from medtrain import registry
from medtrain.config import config_to_dict, load_config
from medtrain.config.schema import RunConfig
from medtrain.engine import run as engine_run
from medtrain.engine.checkpoint_io import checkpoint_meta, read_checkpoint
from medtrain.engine.model_dir import read_manifest, reexport_model_dir, resolve_model_dir
from medtrain.engine.predictor import Predictor
from medtrain.engine.resolve import resolve_config
from medtrain.engine.run import RunResult, checkpoint_of
from medtrain.errors import CheckpointError, UsageError
from medtrain.registry import Recipe

__all__ = [
    "RunResult",
    "config_for",
    "demo",
    "evaluate",
    "export",
    "load_predictor",
    "plan",
    "prepare",
    "train",
    "validate",
]

log = logging.getLogger("medtrain")

ConfigSource = str | Path | Mapping[str, Any] | RunConfig | None


def config_for(
    config: ConfigSource = None,
    *,
    recipe: str | None = None,
    overrides: Sequence[str] = (),
    flags: Mapping[str, Any] | None = None,
    resume: str | Path | None = None,
    env: Mapping[str, str] | None = None,
) -> tuple[Recipe, RunConfig]:
    """Recipe and resolved config from a YAML path, a mapping, a RunConfig or nothing (recipe defaults).

    With ``resume`` pointing at a checkpoint and no config, the checkpoint's embedded config is the base.
    """
    if isinstance(config, RunConfig):
        the_recipe = registry.get(config.recipe)
        cfg = load_config(
            the_recipe.config_class,
            defaults=config_to_dict(config),
            overrides=overrides,
            flags=flags,
            env=env,
        )
        return the_recipe, cfg
    if isinstance(config, Mapping):
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "config.yaml"
            path.write_text(yaml.safe_dump(dict(config)))
            return config_for(path, recipe=recipe, overrides=overrides, flags=flags, resume=resume, env=env)
    embedded = None
    if config is None and resume is not None and str(resume) != "auto":
        embedded = checkpoint_meta(read_checkpoint(Path(resume)))["config"]
    return resolve_config(
        recipe=recipe,
        config_file=Path(config) if config is not None else None,
        overrides=overrides,
        flags=flags,
        embedded=embedded,
        env=env,
    )


def validate(
    config: ConfigSource = None,
    *,
    recipe: str | None = None,
    overrides: Sequence[str] = (),
    flags: Mapping[str, Any] | None = None,
) -> tuple[RunConfig, list[str]]:
    """Check the config and the data it points to; returns the config and the recipe's findings.

    Raises ConfigError/DataError (exit code 2 in the CLI) on the first problem.
    """
    the_recipe, cfg = config_for(config, recipe=recipe, overrides=overrides, flags=flags)
    return cfg, the_recipe.check_data(cfg)


def train(
    config: ConfigSource = None,
    *,
    recipe: str | None = None,
    overrides: Sequence[str] = (),
    flags: Mapping[str, Any] | None = None,
    resume: str | Path | None = None,
    debug: bool = False,
) -> RunResult:
    """Train a recipe end to end (fit → final.ckpt → test with the best weights → model/ → report).

    ``resume`` is ``"auto"`` (newest usable checkpoint of the experiment) or a checkpoint path.
    """
    the_recipe, cfg = config_for(config, recipe=recipe, overrides=overrides, flags=flags, resume=resume)
    the_recipe.check_data(cfg)
    return engine_run.fit(the_recipe, cfg, resume=resume, debug=debug)


def _checkpoint_config(checkpoint: Path, overrides: Sequence[str]) -> tuple[Recipe, RunConfig]:
    meta = checkpoint_meta(read_checkpoint(checkpoint))
    the_recipe = registry.get(meta["recipe"])
    cfg = load_config(the_recipe.config_class, defaults=meta["config"], overrides=overrides)
    return the_recipe, cfg


def evaluate(
    checkpoint_or_run: str | Path,
    *,
    split: str = "test",
    overrides: Sequence[str] = (),
    output_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Evaluate a checkpoint (or a run directory's best checkpoint) on ``split``; returns the report dict."""
    if split not in {"test", "val"}:
        raise UsageError(f"--split must be 'test' or 'val', got {split!r}")
    checkpoint = checkpoint_of(Path(checkpoint_or_run))
    the_recipe, cfg = _checkpoint_config(checkpoint, overrides)
    return engine_run.evaluate(
        the_recipe, cfg, checkpoint, split=split, output_dir=Path(output_dir) if output_dir else None
    )


def export(
    checkpoint_or_run: str | Path, output_dir: str | Path, *, onnx: bool = True, overrides: Sequence[str] = ()
) -> dict[str, Path]:
    """Export as safetensors + model.json (+ ONNX verified with onnxruntime).

    A checkpoint file is rebuilt into its task (this needs the training data, for the statistics the task derives
    from it); a run directory or model folder re-exports its ``model/`` (the best checkpoint's weights) without
    needing data.
    """
    source = Path(checkpoint_or_run)
    if source.is_dir() and not overrides:
        with contextlib.suppress(CheckpointError):
            model_dir = resolve_model_dir(source)
            predictor = load_predictor(model_dir)
            return reexport_model_dir(predictor.model, model_dir, Path(output_dir), onnx=onnx)
    checkpoint = checkpoint_of(source)
    the_recipe, cfg = _checkpoint_config(checkpoint, overrides)
    return engine_run.export(the_recipe, cfg, checkpoint, Path(output_dir), onnx=onnx)


def load_predictor(run_dir_or_model_dir: str | Path) -> Predictor:
    """The recipe's predictor for an exported model folder (or a run directory's ``model/``)."""
    model_dir = resolve_model_dir(Path(run_dir_or_model_dir))
    return registry.get(read_manifest(model_dir)["recipe"]).load_predictor(model_dir)


def prepare(
    recipe: str,
    input_dir: str | Path | None,
    output_dir: str | Path,
    *,
    config: ConfigSource = None,
    overrides: Sequence[str] = (),
    flags: Mapping[str, Any] | None = None,
) -> Path:
    """Run the recipe's prepare step (raw data → what ``data.root`` expects); returns the output folder."""
    the_recipe, cfg = config_for(config, recipe=recipe, overrides=overrides, flags=flags)
    return the_recipe.prepare(cfg, None if input_dir is None else Path(input_dir), Path(output_dir))


def plan(
    config: ConfigSource = None,
    *,
    recipe: str | None = None,
    overrides: Sequence[str] = (),
    flags: Mapping[str, Any] | None = None,
) -> dict[str, Any] | None:
    """The recipe's automatic plan for the config (None when the recipe plans nothing)."""
    the_recipe, cfg = config_for(config, recipe=recipe, overrides=overrides, flags=flags)
    return the_recipe.plan(cfg)


def demo(recipe: str, output: str | Path = "medtrain-demo", *, overrides: Sequence[str] = ()) -> Path:
    """Synthetic data → (prepare) → train → evaluate → predict → export under ``output/<recipe>``.

    Returns the path of the training report (report.html).
    """
    the_recipe = registry.get(recipe)
    root = Path(output).resolve() / recipe
    synthetic = the_recipe.generate_synthetic(root / "data", seed=0)
    base = [f"output_dir={root / 'runs'}", *synthetic.overrides, *overrides]
    data_root = synthetic.root
    if type(the_recipe).prepare is not Recipe.prepare:
        _, cfg = config_for(the_recipe.demo_config_path(), overrides=[f"data.root={data_root}", *base])
        data_root = the_recipe.prepare(cfg, synthetic.root, root / "processed")
    result = train(the_recipe.demo_config_path(), overrides=[f"data.root={data_root}", *base])
    evaluate(result.run_dir, split="test")
    predictor = load_predictor(result.run_dir)
    predictions = predictor.predict_path(synthetic.predict_input, root / "predictions")
    log.info("predictions written to %s", predictions)
    export(result.run_dir, root / "export", onnx=True)
    return result.run_dir / "report.html"
