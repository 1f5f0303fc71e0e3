"""From what the user typed to a recipe and a validated config: the one place the CLI and API share."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from medtrain import registry
from medtrain.config import ConfigError, load_config, read_yaml
from medtrain.config.schema import RunConfig
from medtrain.errors import UsageError
from medtrain.registry import Recipe


def recipe_name_of(config_file: Path | None, recipe: str | None, embedded: Mapping[str, Any] | None) -> str:
    """The recipe named by ``--recipe``, else by the config file's ``recipe:`` key, else by a checkpoint."""
    from_file = read_yaml(config_file).get("recipe") if config_file is not None else None
    if recipe and from_file and recipe != from_file:
        raise UsageError(f"--recipe {recipe} contradicts recipe: {from_file} in {config_file}")
    name = recipe or from_file or (embedded or {}).get("recipe")
    if not name:
        raise UsageError("no recipe given: pass --recipe NAME or a --config file with a 'recipe:' key")
    return str(name)


def resolve_config(
    *,
    recipe: str | None = None,
    config_file: Path | None = None,
    overrides: Sequence[str] = (),
    flags: Mapping[str, Any] | None = None,
    embedded: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
) -> tuple[Recipe, RunConfig]:
    """Recipe and config from defaults < file < env < overrides < flags.

    The base layer is the recipe's shipped ``default.yaml``, or ``embedded`` (a checkpoint's resolved config)
    when resuming without a config file. ``env`` defaults to ``os.environ``.
    """
    if config_file is not None and not Path(config_file).is_file():
        raise ConfigError(f"config file not found: {config_file}")
    the_recipe = registry.get(recipe_name_of(config_file, recipe, embedded))
    defaults: Path | Mapping[str, Any] = the_recipe.default_config_path()
    if embedded is not None and config_file is None:
        defaults = embedded
    cfg = load_config(
        the_recipe.config_class,
        defaults=defaults,
        config_file=config_file,
        env=os.environ if env is None else env,
        env_aliases=the_recipe.env_aliases,
        overrides=overrides,
        flags=flags,
    )
    if cfg.recipe != the_recipe.name:
        raise ConfigError(f"config says recipe: {cfg.recipe}, but recipe '{the_recipe.name}' was selected")
    return the_recipe, cfg
