"""The ``medtrain`` command line (typer + rich); thin: each command parses, then calls :mod:`medtrain.api`.

Exit codes (ARCHITECTURE.md): 0 success · 1 runtime failure · 2 bad config, arguments or data (one readable
line, traceback only with ``--debug``) · 130 SIGINT · 143 SIGTERM.

Recipes may declare extra flags (:class:`medtrain.registry.FlagAlias`) that set config keys, so each seed
system's own flags work; the CLI never branches on a recipe's name.
"""

from __future__ import annotations

import difflib
import json
import logging
import sys
import traceback
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape
from rich.table import Table

from medtrain import registry
from medtrain.config import ConfigError, FlagValue
from medtrain.errors import TrainingFailed, TrainingInterrupted, UsageError, UserError

app = typer.Typer(
    name="medtrain",
    help="Train, evaluate and deploy medical and scientific models from one config system.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    rich_markup_mode="rich",
)
# soft_wrap: never insert line breaks, so piped output (YAML, paths, one-line errors) stays intact
console = Console(stderr=True, soft_wrap=True)
out = Console(soft_wrap=True)
log = logging.getLogger("medtrain")

EXTRA_ARGS = {"allow_extra_args": True, "ignore_unknown_options": True}


class _State:
    debug = False


STATE = _State()

# -- shared options --------------------------------------------------------------------------------------------
LogLevel = Annotated[
    str, typer.Option("--log-level", envvar="MEDTRAIN_LOG_LEVEL", help="DEBUG, INFO, WARNING or ERROR.")
]
Debug = Annotated[bool, typer.Option("--debug", help="Show tracebacks and Lightning's own messages.")]
RecipeOpt = Annotated[str | None, typer.Option("--recipe", "-r", help="Recipe name (see `medtrain recipes`).")]
ConfigOpt = Annotated[
    Path | None, typer.Option("--config", "-c", "--config-path", help="YAML config (may use `_base_:`).")
]
OverrideOpt = Annotated[
    list[str] | None, typer.Option("--override", help="a.b.c=value, typed by the schema; repeatable.")
]
Epochs = Annotated[int | None, typer.Option("--epochs", help="trainer.max_epochs")]
BatchSize = Annotated[int | None, typer.Option("--batch-size", help="data.batch_size")]
LR = Annotated[float | None, typer.Option("--lr", help="optim.lr")]
Devices = Annotated[str | None, typer.Option("--devices", help="trainer.devices (e.g. 1, 4, auto)")]
Precision = Annotated[str | None, typer.Option("--precision", help="trainer.precision (32-true, bf16-mixed, ...)")]
Seed = Annotated[int | None, typer.Option("--seed", help="seed")]
Experiment = Annotated[str | None, typer.Option("--experiment", help="experiment name (runs/<experiment>/...)")]
OutputDir = Annotated[
    Path | None, typer.Option("--output-dir", "--output_dir", help="output_dir: where runs are written")
]

SHORTCUTS = {
    "epochs": ("trainer.max_epochs", "--epochs"),
    "batch_size": ("data.batch_size", "--batch-size"),
    "lr": ("optim.lr", "--lr"),
    "devices": ("trainer.devices", "--devices"),
    "precision": ("trainer.precision", "--precision"),
    "seed": ("seed", "--seed"),
    "experiment": ("experiment", "--experiment"),
    "output_dir": ("output_dir", "--output-dir"),
}


def setup_logging(level: str, debug: bool) -> None:
    """Rich log lines on stderr for medtrain; ``--debug`` implies DEBUG and keeps tracebacks."""
    STATE.debug = debug
    chosen = "DEBUG" if debug else level.upper()
    if chosen not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
        raise UsageError(f"--log-level must be DEBUG, INFO, WARNING or ERROR, got {level!r}")
    handler = RichHandler(console=console, show_path=debug, show_time=False, markup=False)
    handler.setLevel(chosen)
    logging.basicConfig(level=logging.WARNING, handlers=[handler], format="%(message)s", force=True)
    log.setLevel(min(logging.INFO, logging.getLevelName(chosen)))  # the run's log file keeps INFO lines


def shortcut_flags(**values: Any) -> dict[str, FlagValue]:
    """The seed systems' shortcut flags (``--epochs`` ...) as config flags; unset ones are skipped."""
    return {
        SHORTCUTS[name][0]: FlagValue(str(value), SHORTCUTS[name][1])
        for name, value in values.items()
        if value is not None
    }


def recipe_flags(command: str, args: list[str], aliases: tuple[registry.FlagAlias, ...]) -> dict[str, FlagValue]:
    """Parse a recipe's extra flags (``-i DIR``, ``--patch-size=1,2,3``, switches) into config flags."""
    table = {name: alias for alias in aliases if command in alias.commands for name in alias.names}
    flags: dict[str, FlagValue] = {}
    position = 0
    while position < len(args):
        token = args[position]
        name, has_inline, inline = token.partition("=") if token.startswith("--") else (token, False, "")
        alias = table.get(name)
        if alias is None:
            close = difflib.get_close_matches(name, list(table), n=1)
            hint = f"; did you mean {close[0]}?" if close else ""
            what = "option" if token.startswith("-") else "argument"
            raise UsageError(f"unexpected {what} '{token}' for 'medtrain {command}'{hint}")
        if alias.switch:
            value = "true"
        elif has_inline:
            value = inline
        elif position + 1 < len(args):
            position += 1
            value = args[position]
        else:
            raise UsageError(f"option {name} needs a value ({alias.help or alias.key})")
        flags[alias.key] = FlagValue(value, name)
        position += 1
    return flags


def config_args(
    ctx: typer.Context, command: str, recipe: str | None, config: Path | None, resume: str | None = None
) -> dict[str, FlagValue]:
    """Recipe-specific flags from the unparsed arguments, once the recipe is known (from ``--recipe``, the
    config file, or the checkpoint ``--resume`` names)."""
    if not ctx.args:
        return {}
    from medtrain.engine.resolve import recipe_name_of

    embedded = None
    if recipe is None and config is None and resume not in (None, "auto"):
        from medtrain.engine.checkpoint_io import checkpoint_meta, read_checkpoint

        embedded = checkpoint_meta(read_checkpoint(Path(resume)))["config"]
    name = recipe_name_of(config, recipe, embedded)
    return recipe_flags(command, list(ctx.args), registry.get(name).flag_aliases)


def print_config(cfg: Any) -> None:
    from medtrain.config import config_hash, config_to_yaml

    out.print(f"# config_hash: {config_hash(cfg)}", markup=False)
    out.print(config_to_yaml(cfg), markup=False, highlight=False)


# -- commands --------------------------------------------------------------------------------------------------
@app.command("recipes")
def recipes_command(
    name: Annotated[str | None, typer.Argument(help="Show one recipe's flags and defaults.")] = None,
    log_level: LogLevel = "INFO",
    debug: Debug = False,
) -> None:
    """List the registered recipes, or show one.

    [bold]Examples[/bold]
      medtrain recipes
      medtrain recipes volume-seg
    """
    setup_logging(log_level, debug)
    if name is None:
        names = registry.available()
        if not names:
            out.print("No recipes are registered yet.")
            return
        table = Table("recipe", "what it does")
        for recipe_name in names:
            table.add_row(recipe_name, registry.get(recipe_name).summary)
        out.print(table)
        return
    recipe = registry.get(name)
    out.print(f"[bold]{recipe.name}[/bold]: {recipe.summary}")
    out.print(f"defaults: {recipe.default_config_path()}")
    if recipe.flag_aliases:
        table = Table("flag", "config key", "commands", "help")
        for alias in recipe.flag_aliases:
            table.add_row(", ".join(alias.names), alias.key, ", ".join(alias.commands), alias.help)
        out.print(table)
    for env_name, key in recipe.env_aliases.items():
        out.print(f"env {env_name} → {key}")


@app.command("train", context_settings=EXTRA_ARGS)
def train_command(
    ctx: typer.Context,
    recipe: RecipeOpt = None,
    config: ConfigOpt = None,
    override: OverrideOpt = None,
    epochs: Epochs = None,
    batch_size: BatchSize = None,
    lr: LR = None,
    devices: Devices = None,
    precision: Precision = None,
    seed: Seed = None,
    experiment: Experiment = None,
    output_dir: OutputDir = None,
    resume: Annotated[
        str | None,
        typer.Option(
            "--resume",
            "--resume-from-checkpoint",
            "--resume_from_checkpoint",
            help="'auto' (newest usable checkpoint of the experiment) or a path.",
        ),
    ] = None,
    fast_dev_run: Annotated[bool, typer.Option("--fast-dev-run", help="One batch of train/val/test.")] = False,
    overfit_batches: Annotated[
        float | None, typer.Option("--overfit-batches", help="Train and validate on N batches.")
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the resolved config (and plan), exit.")] = False,
    validate_config: Annotated[
        bool, typer.Option("--validate-config", help="Validate config and data, then exit.")
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar; one line per epoch.")] = False,
    log_level: LogLevel = "INFO",
    debug: Debug = False,
) -> None:
    """Train a recipe: fit, checkpoints, test with the best weights, model/ export and report.

    [bold]Examples[/bold]
      medtrain train --recipe volume-seg --override data.root=data/ --epochs 50
      medtrain train --config my.yaml --override optim.lr=3e-4 --override trainer.precision=bf16-mixed
      MEDTRAIN_DATA__BATCH_SIZE=4 medtrain train --config my.yaml --dry-run
      medtrain train --config my.yaml --resume auto
      medtrain train --config runs/x/run_…/config.yaml --resume runs/x/run_…/checkpoints/interrupted.ckpt
    """
    setup_logging("WARNING" if quiet and log_level == "INFO" else log_level, debug)
    from medtrain import api

    flags = shortcut_flags(
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        devices=devices,
        precision=precision,
        seed=seed,
        experiment=experiment,
        output_dir=output_dir,
    )
    if fast_dev_run:
        flags["trainer.fast_dev_run"] = FlagValue("true", "--fast-dev-run")
    if overfit_batches is not None:
        flags["trainer.overfit_batches"] = FlagValue(str(overfit_batches), "--overfit-batches")
    if quiet:
        flags["trainer.progress"] = FlagValue("quiet", "--quiet")
    flags.update(config_args(ctx, "train", recipe, config, resume))
    if dry_run or validate_config:
        the_recipe, cfg = api.config_for(config, recipe=recipe, overrides=override or (), flags=flags, resume=resume)
        if validate_config:
            for finding in the_recipe.check_data(cfg):
                out.print(f"  {finding}", markup=False)
            out.print("[green]config and data are valid[/green]")
            return
        print_config(cfg)
        plan = the_recipe.plan(cfg)
        if plan is not None:
            out.print("# plan", markup=False)
            out.print_json(json.dumps(plan))
        return
    result = api.train(config, recipe=recipe, overrides=override or (), flags=flags, resume=resume, debug=debug)
    out.print(f"run directory: {result.run_dir}", markup=False)
    for key, value in sorted(result.test_metrics.items()):
        out.print(f"  test {key}: {value:.6g}", markup=False)
    out.print(f"report: {result.run_dir / 'report.html'}", markup=False)


@app.command("validate", context_settings=EXTRA_ARGS)
def validate_command(
    ctx: typer.Context,
    recipe: RecipeOpt = None,
    config: ConfigOpt = None,
    override: OverrideOpt = None,
    log_level: LogLevel = "INFO",
    debug: Debug = False,
) -> None:
    """Check a config and the data it points to; exit 0 when usable, 2 otherwise.

    [bold]Examples[/bold]
      medtrain validate --recipe cardiac-guidance --override data.root=data/
      medtrain validate --config my.yaml --override trainer.max_epochs=5
    """
    setup_logging(log_level, debug)
    from medtrain import api

    flags = config_args(ctx, "validate", recipe, config)
    cfg, findings = api.validate(config, recipe=recipe, overrides=override or (), flags=flags)
    for finding in findings:
        out.print(f"  {finding}", markup=False)
    out.print(f"[green]valid[/green]: recipe {cfg.recipe}, experiment {cfg.experiment}")


@app.command("plan", context_settings=EXTRA_ARGS)
def plan_command(
    ctx: typer.Context,
    recipe: RecipeOpt = None,
    config: ConfigOpt = None,
    override: OverrideOpt = None,
    output: Annotated[Path | None, typer.Option("--output", help="Also write the plan to this JSON file.")] = None,
    log_level: LogLevel = "INFO",
    debug: Debug = False,
) -> None:
    """Show the recipe's automatic plan (topology, patch size, normalisation statistics).

    [bold]Examples[/bold]
      medtrain plan --recipe volume-seg --override data.root=data/
      medtrain plan --config my.yaml --output plan.json
    """
    setup_logging(log_level, debug)
    from medtrain import api
    from medtrain.io.atomic import atomic_write_json

    flags = config_args(ctx, "plan", recipe, config)
    result = api.plan(config, recipe=recipe, overrides=override or (), flags=flags)
    if result is None:
        out.print("this recipe has no automatic plan")
        return
    out.print_json(json.dumps(result))
    if output is not None:
        atomic_write_json(output, result)


@app.command("prepare", context_settings=EXTRA_ARGS)
def prepare_command(
    ctx: typer.Context,
    recipe: Annotated[str, typer.Argument(help="Recipe name.")],
    output: Annotated[Path, typer.Option("--output", help="Where prepared data is written.")],
    input_dir: Annotated[
        Path | None, typer.Option("--input", help="Raw data folder (a recipe may take its input from a flag).")
    ] = None,
    config: ConfigOpt = None,
    override: OverrideOpt = None,
    log_level: LogLevel = "INFO",
    debug: Debug = False,
) -> None:
    """Turn raw data into what training reads (cached: a second run with the same inputs does nothing).

    [bold]Examples[/bold]
      medtrain prepare ultrasound-ae --input raw/ --output processed/
      medtrain prepare volume-seg --input data/ --output prepared/
      medtrain prepare volume-seg --from-nnunet Dataset001_Liver --output liver/
    """
    setup_logging(log_level, debug)
    from medtrain import api

    flags = recipe_flags("prepare", list(ctx.args), registry.get(recipe).flag_aliases)
    written = api.prepare(recipe, input_dir, output, config=config, overrides=override or (), flags=flags)
    out.print(f"prepared data: {written}", markup=False)


@app.command("evaluate", context_settings=EXTRA_ARGS)
def evaluate_command(
    ctx: typer.Context,
    checkpoint: Annotated[
        Path, typer.Option("--checkpoint", "--run", help="A .ckpt file or a run directory (uses its best).")
    ],
    split: Annotated[str, typer.Option("--split", help="test or val.")] = "test",
    output_dir: Annotated[Path | None, typer.Option("--output-dir", help="Where the report goes.")] = None,
    override: OverrideOpt = None,
    log_level: LogLevel = "INFO",
    debug: Debug = False,
) -> None:
    """Evaluate a checkpoint on a split; writes report.json / report.md / report.html.

    [bold]Examples[/bold]
      medtrain evaluate --checkpoint runs/exp/run_…/checkpoints/last.ckpt
      medtrain evaluate --run runs/exp/run_… --split val --output-dir eval/
    """
    setup_logging(log_level, debug)
    from medtrain import api
    from medtrain.engine.checkpoint_io import checkpoint_meta, read_checkpoint
    from medtrain.engine.run import checkpoint_of

    overrides = list(override or ())
    if ctx.args:
        meta = checkpoint_meta(read_checkpoint(checkpoint_of(checkpoint)))
        flags = recipe_flags("evaluate", list(ctx.args), registry.get(meta["recipe"]).flag_aliases)
        overrides += [f"{key}={flag.value}" for key, flag in flags.items()]
    report = api.evaluate(checkpoint, split=split, overrides=overrides, output_dir=output_dir)
    table = Table("metric", "model", "baseline")
    metrics = report["test"]
    for key, value in sorted(metrics.items()):
        if not key.startswith("baseline_"):
            baseline = metrics.get(f"baseline_{key}")
            table.add_row(key, f"{value:.6g}", "—" if baseline is None else f"{baseline:.6g}")
    out.print(table)


@app.command("predict", context_settings=EXTRA_ARGS)
def predict_command(
    ctx: typer.Context,
    model: Annotated[Path, typer.Option("--model", "-m", help="A run directory or an exported model/ folder.")],
    input_path: Annotated[Path | None, typer.Option("--input", "-i", help="Input file or folder.")] = None,
    output: Annotated[
        Path, typer.Option("--output", "-o", "--output-dir", help="Where predictions are written.")
    ] = Path("predictions"),
    log_level: LogLevel = "INFO",
    debug: Debug = False,
) -> None:
    """Predict with an exported model on new files.

    [bold]Examples[/bold]
      medtrain predict --model runs/exp/run_… --input new_cases/ --output predictions/
    """
    setup_logging(log_level, debug)
    from medtrain import api

    predictor = api.load_predictor(model)
    aliases = registry.get(predictor.manifest["recipe"]).predict_options
    options = {key: flag.value for key, flag in recipe_flags("predict", list(ctx.args), aliases).items()}
    if input_path is None and not options:
        raise UsageError("predict needs --input PATH (or the recipe's own input options)")
    written = predictor.predict_path(input_path, output, **options)  # type: ignore[arg-type]
    out.print(f"predictions: {written}", markup=False)


@app.command("export")
def export_command(
    checkpoint: Annotated[
        Path, typer.Option("--checkpoint", "--run", help="A .ckpt file or a run directory (uses its best).")
    ],
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder for model.safetensors/json/onnx.")],
    onnx: Annotated[bool, typer.Option("--onnx/--no-onnx", help="Also write ONNX (checked against torch).")] = True,
    override: OverrideOpt = None,
    log_level: LogLevel = "INFO",
    debug: Debug = False,
) -> None:
    """Export a checkpoint as safetensors + model.json (+ ONNX verified with onnxruntime).

    [bold]Examples[/bold]
      medtrain export --run runs/exp/run_… --output exported/
      medtrain export --checkpoint best.ckpt --output exported/ --no-onnx
    """
    setup_logging(log_level, debug)
    from medtrain import api

    written = api.export(checkpoint, output, onnx=onnx, overrides=override or ())
    for kind, path in sorted(written.items()):
        out.print(f"{kind}: {path}", markup=False)


@app.command("demo")
def demo_command(
    recipe: Annotated[str, typer.Argument(help="A recipe name, or 'all'.")] = "all",
    output: Annotated[Path, typer.Option("--output", help="Where demo data and runs go.")] = Path("medtrain-demo"),
    log_level: LogLevel = "INFO",
    debug: Debug = False,
) -> None:
    """Generate synthetic data and run a recipe's whole path: prepare → train → evaluate → predict → export.

    [bold]Examples[/bold]
      medtrain demo all
      medtrain demo ultrasound-ae --output /tmp/demo
    """
    setup_logging(log_level, debug)
    from medtrain import api

    names = registry.available() if recipe == "all" else [recipe]
    if not names:
        out.print("No recipes are registered yet: nothing to demo.")
        return
    for name in names:
        out.print(f"[bold]demo {name}[/bold]")
        report = api.demo(name, output)
        out.print(f"report: {report}", markup=False)


# -- entry point -----------------------------------------------------------------------------------------------
def _print_user_error(error: BaseException) -> None:
    console.print(f"[bold red]error:[/bold red] {escape(str(error))}", highlight=False)
    if STATE.debug:
        console.print(traceback.format_exc(), markup=False, highlight=False)


def run(argv: list[str] | None = None) -> int:
    """Run the CLI and return the process exit code (see module docstring)."""
    STATE.debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    try:
        app(args=argv, prog_name="medtrain")  # standalone: usage errors print and raise SystemExit(2)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except (UserError, ConfigError) as exc:
        _print_user_error(exc)
        return 2
    except TrainingInterrupted as exc:
        console.print(f"[yellow]{exc}[/yellow]; see recovery.json in the run directory to resume")
        return exc.exit_code
    except TrainingFailed as exc:
        _print_user_error(exc)
        if exc.recovery is not None:
            console.print(f"recovery information: {exc.recovery}", markup=False)
        return 1
    except Exception as exc:
        console.print(f"[bold red]error:[/bold red] {type(exc).__name__}: {escape(str(exc))}", highlight=False)
        if STATE.debug:
            console.print(traceback.format_exc(), markup=False, highlight=False)
        else:
            console.print("run again with --debug for the traceback")
        return 1
    return 0


def main() -> None:
    """Console-script entry point."""
    sys.exit(run())
