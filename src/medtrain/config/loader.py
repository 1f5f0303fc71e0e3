"""Loading a run's configuration from layers, and writing and hashing the result.

Layers, lowest to highest precedence: schema defaults < recipe defaults (``default.yaml`` or an already
resolved dict) < the user's config file < environment (``MEDTRAIN_A__B=v`` and aliases) < ``--override a.b=v``
< shortcut flags. YAML is read by OmegaConf: a file may inherit from others with ``_base_``, dicts deep-merge,
lists are replaced and ``${...}`` interpolations resolve once every layer is merged. The loader remembers
which layer set each key last, so an unknown key or a wrong value is reported with where it came from.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any, TypeVar

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails, to_jsonable_python

from medtrain.config.errors import ConfigError
from medtrain.config.overrides import (
    Setting,
    child_annotation,
    env_settings,
    find_unknown_keys,
    flag_settings,
    override_settings,
    setting_tree,
    union_members,
)
from medtrain.config.schema import RunConfig
from medtrain.config.suggest import UnknownKey

RunConfigT = TypeVar("RunConfigT", bound=RunConfig)

DEFAULT_HASH_EXCLUDE = ("experiment", "output_dir", "logging", "trainer.progress", "trainer.num_threads")
"""Keys that name, place or show a run without changing what it computes: left out of :func:`config_hash`."""

_BASE_KEY = "_base_"
_SCHEMA_DEFAULT = "from schema default"
_MAPPING_DEFAULTS = "from defaults"
_MAX_SHOWN = 80
_BOOL_WORDS = "a boolean (true/false/yes/no/on/off/1/0)"
_SECTION = "a mapping of section keys"
_EXPECTED = {
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "an integer",
    "float_type": "a number",
    "float_parsing": "a number",
    "bool_type": _BOOL_WORDS,
    "bool_parsing": _BOOL_WORDS,
    "string_type": "a string",
    "path_type": "a path",
    "list_type": "a list",
    "tuple_type": "a list",
    "set_type": "a list",
    "dict_type": "a mapping",
    "model_type": _SECTION,
    "model_attributes_type": _SECTION,
    "none_required": "null",
}
_BOUNDS = {
    "greater_than": ("gt", ">"),
    "greater_than_equal": ("ge", ">="),
    "less_than": ("lt", "<"),
    "less_than_equal": ("le", "<="),
}


@dataclass(frozen=True)
class _Layer:
    """One layer's nested values and, per dotted leaf key, where it came from (``"from file X"``)."""

    tree: dict[str, Any]
    sources: dict[str, str]


def load_config(
    schema: type[RunConfigT],
    *,
    defaults: Path | Mapping[str, Any] | None = None,
    config_file: Path | None = None,
    env: Mapping[str, str] | None = None,
    env_aliases: Mapping[str, str] | None = None,
    overrides: Sequence[str] = (),
    flags: Mapping[str, Any] | None = None,
) -> RunConfigT:
    """Merge every layer and validate the result as a frozen ``schema`` instance.

    ``defaults`` is the recipe's ``default.yaml`` or an already resolved dict (a checkpoint's config);
    ``env`` is usually ``os.environ`` (None: no environment layer), ``env_aliases`` maps extra variable
    names to dotted keys; ``overrides`` are ``KEY=VALUE`` texts; ``flags`` maps dotted keys to a raw string,
    a typed value or a :class:`~medtrain.config.overrides.FlagValue` (a value of None means not given).
    Raw strings are typed by the schema. Raises ConfigError listing every unknown key, or else every invalid
    value, one per line, each with its source.
    """
    layers = [_schema_layer(schema)]
    if defaults is not None:
        layers.append(_defaults_layer(defaults))
    if config_file is not None:
        layers.append(_file_layer(config_file))
    problems = [
        unknown.message(_source_of(layer.sources, ".".join(unknown.path)))
        for layer in layers[1:]
        for unknown in find_unknown_keys(schema, layer.tree)
    ]
    settings = [*env_settings(env, env_aliases), *override_settings(overrides), *flag_settings(flags)]
    for setting in settings:
        try:
            layers.append(_setting_layer(schema, setting))
        except UnknownKey as unknown:
            problems.append(unknown.message(setting.source))
    if problems:
        raise ConfigError("\n".join(problems))
    sources = {key: source for layer in layers for key, source in layer.sources.items()}
    merged = _merge([layer.tree for layer in layers], resolve=True, sources=sources)
    try:
        return schema.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError("\n".join(_describe_errors(schema, exc, sources))) from None


def read_yaml(path: Path) -> dict[str, Any]:
    """The mapping in the YAML file ``path`` with its ``_base_`` files merged underneath, as a plain dict.

    ``_base_`` is a path or a list of paths relative to the file's folder, merged in order (recursively)
    before the file itself. Interpolations are kept as written, to resolve once all layers are merged.
    Raises ConfigError for a missing file or base, invalid YAML, a non-mapping top level or a cycle.
    """
    return _read_tree(Path(path), ())[0]


def config_to_dict(cfg: BaseModel) -> dict[str, Any]:
    """The config as a JSON-safe plain dict (paths as strings, tuples as lists)."""
    return cfg.model_dump(mode="json")


def config_to_yaml(cfg: BaseModel) -> str:
    """The config as readable YAML in schema key order; ``load_config(defaults=...)`` reads it back equal."""
    return yaml.dump(
        config_to_dict(cfg),
        Dumper=_ReadableDumper,
        sort_keys=False,
        default_flow_style=False,
        allow_unicode=True,
    )


def config_hash(cfg: BaseModel, exclude: Iterable[str] = DEFAULT_HASH_EXCLUDE) -> str:
    """16 hex digits of the sha256 of the config's canonical JSON without the dotted keys in ``exclude``.

    Equal configs give equal hashes across processes; keys in ``exclude`` (absent ones ignored) do not count.
    """
    tree = config_to_dict(cfg)
    for dotted in exclude:
        _drop(tree, dotted.split("."))
    return _digest(tree)


def section_hash(cfg: BaseModel, *dotted: str) -> str:
    """Like :func:`config_hash` but over the named sections only (e.g. ``"data"``): a cache key.

    Raises ValueError when no section is named and KeyError for a key the config does not have.
    """
    if not dotted:
        raise ValueError("section_hash needs at least one section name, e.g. section_hash(cfg, 'data')")
    tree = config_to_dict(cfg)
    return _digest({key: _lookup(tree, key) for key in dotted})


def _schema_layer(schema: type[BaseModel]) -> _Layer:
    """The schema's own defaults, so interpolations can refer to keys no file sets."""
    tree = {
        name: to_jsonable_python(field.get_default(call_default_factory=True, validated_data={}))
        for name, field in schema.model_fields.items()
        if not field.is_required()
    }
    return _Layer(tree, dict.fromkeys(_leaf_keys(tree), _SCHEMA_DEFAULT))


def _defaults_layer(defaults: Path | Mapping[str, Any]) -> _Layer:
    if isinstance(defaults, Mapping):
        tree = to_jsonable_python(dict(defaults))
        return _Layer(tree, dict.fromkeys(_leaf_keys(tree), _MAPPING_DEFAULTS))
    return _file_layer(defaults)


def _file_layer(path: Path) -> _Layer:
    tree, sources = _read_tree(Path(path), ())
    return _Layer(tree, sources)


def _setting_layer(schema: type[BaseModel], setting: Setting) -> _Layer:
    tree = setting_tree(schema, setting)
    return _Layer(tree, dict.fromkeys(_leaf_keys(tree), setting.source))


def _read_tree(path: Path, chain: tuple[Path, ...]) -> tuple[dict[str, Any], dict[str, str]]:
    """``path``'s mapping over its merged bases, and the file that set each leaf key."""
    resolved = path.resolve()
    if resolved in chain:
        cycle = " -> ".join(str(file) for file in (*chain, resolved))
        raise ConfigError(f"cyclic _base_ inheritance: {cycle}")
    own = _load_mapping(path)
    trees: list[dict[str, Any]] = []
    sources: dict[str, str] = {}
    for base in _base_paths(path, own.pop(_BASE_KEY, None)):
        base_tree, base_sources = _read_tree(base, (*chain, resolved))
        trees.append(base_tree)
        sources.update(base_sources)
    sources.update(dict.fromkeys(_leaf_keys(own), f"from file {path}"))
    return _merge([*trees, own], resolve=False, sources=sources), sources


def _load_mapping(path: Path) -> dict[str, Any]:
    """The top-level mapping of one YAML file, interpolations unresolved; ConfigError naming the file."""
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        node = OmegaConf.load(path)
    except yaml.YAMLError as exc:
        raise ConfigError(_yaml_problem(path, exc)) from None
    except OSError as exc:
        # OmegaConf raises OSError("Invalid loaded object type: ...") for a scalar top level.
        if str(exc).startswith("Invalid loaded object type"):
            raise ConfigError(_not_a_mapping(path, str(exc).rsplit(" ", 1)[-1])) from None
        raise ConfigError(f"cannot read config file {path}: {exc}") from None
    except OmegaConfBaseException as exc:
        raise ConfigError(f"cannot read config file {path}: {_first_line(exc)}") from None
    if not isinstance(node, DictConfig):
        raise ConfigError(_not_a_mapping(path, "list"))
    return OmegaConf.to_container(node, resolve=False)  # type: ignore[return-value]


def _base_paths(path: Path, value: Any) -> list[Path]:
    """The files named by ``path``'s ``_base_`` value, relative to its folder; each must exist."""
    if value is None:
        return []
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
        raise ConfigError(f"config file {path}: _base_ must be a path or a list of paths, not {value!r}")
    bases = [path.parent / Path(name).expanduser() for name in names]
    for name, base in zip(names, bases, strict=True):
        if not base.is_file():
            raise ConfigError(f"config file {path}: _base_ '{name}' not found (looked for {base})")
    return bases


def _merge(trees: Sequence[dict[str, Any]], *, resolve: bool, sources: Mapping[str, str]) -> dict[str, Any]:
    """Deep-merge ``trees`` in order with OmegaConf (lists replaced), resolving interpolations if asked."""
    try:
        merged = OmegaConf.merge(*(OmegaConf.create(tree) for tree in trees))
        return OmegaConf.to_container(merged, resolve=resolve)  # type: ignore[return-value]
    except OmegaConfBaseException as exc:
        key = str(getattr(exc, "full_key", "") or "")
        source = _source_of(sources, key) if key else None
        where = f" '{key}'" + (f" ({source})" if source else "") if key else ""
        raise ConfigError(f"cannot resolve config key{where}: {_first_line(exc)}") from None


def _describe_errors(schema: type[BaseModel], exc: ValidationError, sources: Mapping[str, str]) -> list[str]:
    """One line per invalid key (the errors pydantic reports for each member of a union joined)."""
    groups: dict[tuple[str, ...], list[ErrorDetails]] = {}
    for error in exc.errors(include_url=False):
        groups.setdefault(_error_path(schema, error["loc"]), []).append(error)
    return [_describe_group(path, errors, sources) for path, errors in groups.items()]


def _error_path(schema: type[BaseModel], loc: tuple[int | str, ...]) -> tuple[str, ...]:
    """The config path of a pydantic error location: union member tags dropped, indices as ``[i]``."""
    annotation: Any = schema
    path: list[str] = []
    for item in loc:
        members, _ = union_members(annotation)
        if len(members) > 1 and isinstance(item, str):
            annotation = next((member for member in members if getattr(member, "__name__", None) == item), Any)
            continue
        path.append(f"[{item}]" if isinstance(item, int) else item)
        try:
            annotation = child_annotation(annotation, str(item), path)
        except UnknownKey:
            annotation = Any
    return tuple(path)


def _describe_group(path: tuple[str, ...], errors: list[ErrorDetails], sources: Mapping[str, str]) -> str:
    """One line for the errors at one path: key, value (unless a whole section), source, expectation."""
    key = "".join(part if part.startswith("[") or not i else f".{part}" for i, part in enumerate(path))
    first = errors[0]
    if first["type"] == "missing":
        return f"missing required config key '{key}'"
    source = _source_of(sources, ".".join(part for part in path if not part.startswith("[")))
    where = f" ({source})" if source else ""
    if first["type"] == "extra_forbidden":
        return f"unknown config key '{key}'{where}"
    if not path:
        return f"invalid configuration: {_expectation(errors)}"
    value = "" if isinstance(first["input"], dict) else f" = {_show(first['input'])}"
    return f"config key '{key}'{value}{where}: {_expectation(errors)}"


def _expectation(errors: list[ErrorDetails]) -> str:
    """What the value should have been, in words: ``expected an integer or a string``."""
    wanted = dict.fromkeys(phrase for error in errors if (phrase := _expected(error)))
    notes = dict.fromkeys(error["msg"].removeprefix("Value error, ") for error in errors if not _expected(error))
    parts = ([f"expected {' or '.join(wanted)}"] if wanted else []) + list(notes)
    return "; ".join(parts)


def _expected(error: ErrorDetails) -> str | None:
    """The expected kind of value for a type or constraint error, or None for other errors."""
    kind, ctx = error["type"], error.get("ctx", {})
    if kind in _EXPECTED:
        return _EXPECTED[kind]
    if kind == "literal_error":
        return "one of " + ", ".join(str(ctx["expected"]).rsplit(" or ", 1))
    if kind in _BOUNDS:
        name, operator = _BOUNDS[kind]
        return f"a value {operator} {ctx[name]:g}"
    if kind == "too_short":
        return f"at least {ctx['min_length']} items"
    if kind == "too_long":
        return f"at most {ctx['max_length']} items"
    return None


def _source_of(sources: Mapping[str, str], dotted: str) -> str | None:
    """Where ``dotted`` was set: its own or an enclosing key's source, else the one source of all its
    sub-keys; None when unknown."""
    parts = dotted.split(".")
    for end in range(len(parts), 0, -1):
        if (source := sources.get(".".join(parts[:end]))) is not None:
            return source
    below = {source for key, source in sources.items() if key.startswith(f"{dotted}.")}
    return below.pop() if len(below) == 1 else None


def _leaf_keys(tree: Mapping[Any, Any], prefix: str = "") -> Iterator[str]:
    """Dotted keys of the values in a nested mapping (an empty mapping counts as a value)."""
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            yield from _leaf_keys(value, f"{dotted}.")
        else:
            yield dotted


def _yaml_problem(path: Path, exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    line = f", line {mark.line + 1}" if mark is not None else ""
    problem = getattr(exc, "problem", None) or str(exc)
    return f"invalid YAML in config file {path}{line}: {problem}"


def _not_a_mapping(path: Path, found: str) -> str:
    return f"config file {path}: the top level must be a mapping of config keys (found {found})"


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _show(value: Any) -> str:
    """A value as error messages print it: repr, paths as strings, cut to a readable length."""
    text = repr(str(value)) if isinstance(value, PurePath) else repr(value)
    return text if len(text) <= _MAX_SHOWN else text[: _MAX_SHOWN - 3] + "..."


def _drop(tree: dict[str, Any], path: list[str]) -> None:
    """Remove the dotted ``path`` from ``tree`` if present."""
    for key in path[:-1]:
        tree = tree.get(key)  # type: ignore[assignment]
        if not isinstance(tree, dict):
            return
    tree.pop(path[-1], None)


def _lookup(tree: dict[str, Any], dotted: str) -> Any:
    value: Any = tree
    for key in dotted.split("."):
        if not isinstance(value, dict) or key not in value:
            raise KeyError(f"config has no key '{dotted}'")
        value = value[key]
    return value


def _digest(value: Any) -> str:
    canonical = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


class _ReadableDumper(yaml.SafeDumper):
    """YAML for people: sections in block style, lists of plain values in flow style, no anchors."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _represent_list(dumper: yaml.SafeDumper, data: list[Any]) -> yaml.Node:
    flow = all(not isinstance(item, dict | list) for item in data)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flow)


_ReadableDumper.add_representer(list, _represent_list)
