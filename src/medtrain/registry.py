"""Recipe registry: recipe name → :class:`Recipe`, the one way recipes plug into the CLI, API and engine.

A recipe is a vertical slice (``recipes/<name>/``) that tells the shared core how to build its config schema,
data, LightningModule, optional prepare/plan steps, synthetic demo data and predictor. The core never branches
on a recipe's name; it calls these methods.

Built-in recipes are listed in ``BUILTIN_RECIPES`` (one line per recipe). Third-party recipes register through
the ``medtrain.recipes`` entry-point group, or for a session through ``MEDTRAIN_RECIPE_PLUGINS=pkg.module,...``
(each module calls :func:`register` on import).
"""

from __future__ import annotations

import difflib
import importlib
import os
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import metadata, resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from medtrain.errors import UsageError

if TYPE_CHECKING:
    import lightning as L

    from medtrain.config.schema import RunConfig
    from medtrain.engine.datamodule import MedtrainDataModule
    from medtrain.engine.predictor import Predictor
    from medtrain.engine.task import TaskModule

#: "module:ClassName" of every built-in recipe; adding a recipe adds one line here.
BUILTIN_RECIPES: tuple[str, ...] = (
    "medtrain.recipes.ultrasound_ae.recipe:UltrasoundAERecipe",
    "medtrain.recipes.cardiac_guidance.recipe:CardiacGuidanceRecipe",
    "medtrain.recipes.abr_diffusion.recipe:ABRDiffusionRecipe",
    "medtrain.recipes.volume_seg.recipe:VolumeSegRecipe",
)

PLUGIN_ENV = "MEDTRAIN_RECIPE_PLUGINS"
ENTRY_POINT_GROUP = "medtrain.recipes"


@dataclass(frozen=True)
class FlagAlias:
    """An extra command-line flag of a recipe that sets one config key (or, for ``predict``, one option).

    ``names`` are the spellings users type (``("-i", "--input")``); ``key`` is the dotted config key it sets;
    a ``switch`` takes no value and sets ``True``. ``commands`` limits the commands that accept it.
    """

    names: tuple[str, ...]
    key: str
    help: str = ""
    switch: bool = False
    commands: tuple[str, ...] = ("train", "validate", "plan", "prepare", "evaluate")


@dataclass(frozen=True)
class SyntheticData:
    """What a recipe's synthetic generator produced: the ``data.root`` to train on, a file or folder to run
    ``predict`` on, and config overrides the demo needs (e.g. split lists)."""

    root: Path
    predict_input: Path
    overrides: tuple[str, ...] = ()


class Recipe(ABC):
    """Contract between one recipe and the shared core. Subclasses set the class attributes and implement
    the abstract methods; optional steps raise :class:`UsageError` by default."""

    name: ClassVar[str]
    summary: ClassVar[str]
    config_class: ClassVar[type[RunConfig]]
    flag_aliases: ClassVar[tuple[FlagAlias, ...]] = ()
    predict_options: ClassVar[tuple[FlagAlias, ...]] = ()
    env_aliases: ClassVar[Mapping[str, str]] = {}

    def config_resource(self, filename: str) -> Path:
        """Path of a YAML shipped next to the recipe's module (``default.yaml``, ``demo.yaml``)."""
        package = type(self).__module__.rpartition(".")[0] or type(self).__module__
        return Path(str(resources.files(package).joinpath(filename)))

    def default_config_path(self) -> Path:
        """The recipe's shipped defaults (``recipes/<name>/default.yaml``)."""
        return self.config_resource("default.yaml")

    def demo_config_path(self) -> Path:
        """The small, fast config used by ``medtrain demo`` (``recipes/<name>/demo.yaml``)."""
        return self.config_resource("demo.yaml")

    @abstractmethod
    def build_datamodule(self, cfg: RunConfig) -> MedtrainDataModule:
        """The LightningDataModule for ``cfg`` (splits by group, loaders from ``cfg.data``)."""

    @abstractmethod
    def build_task(self, cfg: RunConfig, datamodule: L.LightningDataModule) -> TaskModule:
        """The LightningModule for ``cfg``; ``datamodule`` has been ``setup("fit")`` already."""

    @abstractmethod
    def load_predictor(self, model_dir: Path) -> Predictor:
        """A predictor built from an exported ``model/`` folder (model.json + model.safetensors)."""

    @abstractmethod
    def generate_synthetic(self, output: Path, *, seed: int) -> SyntheticData:
        """Write realistic synthetic input data under ``output`` for the demo and the end-to-end tests."""

    def check_data(self, cfg: RunConfig) -> list[str]:
        """Check the data ``cfg`` points to; return human-readable findings, raise DataError when unusable.

        The default checks that ``data.root`` is set and exists.
        """
        from medtrain.errors import DataError

        root = cfg.data.root
        if root is None:
            raise DataError("data.root is not set: pass --override data.root=PATH (or the recipe's input flag)")
        if not Path(root).exists():
            raise DataError(f"data.root does not exist: {root}")
        return [f"data.root: {root}"]

    def prepare(self, cfg: RunConfig, input_dir: Path | None, output_dir: Path) -> Path:
        """Turn raw input into what ``data.root`` expects; returns the folder written. ``input_dir`` is None when
        the user gave no ``--input`` (a recipe may take its input from one of its flags instead)."""
        raise UsageError(f"recipe '{self.name}' has no prepare step: point data.root at the raw data directly")

    def plan(self, cfg: RunConfig, datamodule: MedtrainDataModule | None = None) -> dict[str, Any] | None:
        """The recipe's automatic plan for ``cfg`` (topology, patch size, statistics), or None if it plans nothing.

        Training passes its set-up ``datamodule``, so a recipe can report the plan the data were built with instead
        of planning again; ``medtrain plan`` passes none.
        """
        return None

    def write_run_files(self, cfg: RunConfig, datamodule: MedtrainDataModule, run_dir: Path) -> list[Path]:
        """Write the recipe's own files into a new or resumed run directory before training starts (after
        config.yaml and data_summary.json); returns their paths. The default writes nothing."""
        return []


_REGISTRY: dict[str, Recipe] = {}
_LOADED = False


def register(recipe: Recipe | type[Recipe]) -> Recipe:
    """Add a recipe (instance or class) under its ``name``; registering the same class twice is a no-op."""
    instance = recipe() if isinstance(recipe, type) else recipe
    existing = _REGISTRY.get(instance.name)
    if existing is not None and type(existing) is not type(instance):
        raise ValueError(f"recipe name '{instance.name}' is already registered by {type(existing).__qualname__}")
    _REGISTRY[instance.name] = instance
    return instance


def _load_reference(ref: str) -> None:
    module_name, _, attr = ref.partition(":")
    module = importlib.import_module(module_name)
    if attr:
        register(getattr(module, attr))


def _load_all() -> None:
    global _LOADED
    if _LOADED:
        return
    _LOADED = True
    for ref in BUILTIN_RECIPES:
        _load_reference(ref)
    for entry_point in metadata.entry_points(group=ENTRY_POINT_GROUP):
        register(entry_point.load())
    for ref in filter(None, (part.strip() for part in os.environ.get(PLUGIN_ENV, "").split(","))):
        try:
            _load_reference(ref)
        except ImportError as exc:
            raise UsageError(f"{PLUGIN_ENV}: cannot import recipe plugin '{ref}': {exc}") from exc


def available() -> list[str]:
    """Sorted names of every registered recipe."""
    _load_all()
    return sorted(_REGISTRY)


def get(name: str) -> Recipe:
    """The recipe called ``name``; UsageError with a suggestion when there is none."""
    _load_all()
    if name in _REGISTRY:
        return _REGISTRY[name]
    known = sorted(_REGISTRY)
    close = difflib.get_close_matches(name, known, n=1)
    hint = f"; did you mean '{close[0]}'?" if close else f"; available: {', '.join(known) or 'none registered'}"
    raise UsageError(f"unknown recipe '{name}'{hint}")
