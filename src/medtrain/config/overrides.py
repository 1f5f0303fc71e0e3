"""Config values given as text (environment, ``--override``, shortcut flags), typed by the schema.

A raw string is typed by the annotation of the field it sets, found by walking the actual schema class
(recipe subclasses that narrow a section included): ``str``/``Path``/string literals keep the text verbatim,
numbers and booleans are parsed, lists accept ``[1, 2]`` or ``1,2``, dicts and whole sections accept a YAML
flow mapping, ``X | None`` accepts ``null``/``none``/``~`` and other unions take the YAML reading of the text.
Pydantic does the final validation; this module only turns text into the value the user meant.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import PurePath
from types import NoneType, UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import BaseModel
from pydantic_core import to_jsonable_python

from medtrain.config.errors import ConfigError
from medtrain.config.suggest import UnknownKey

ENV_PREFIX = "MEDTRAIN_"
RESERVED_ENV = frozenset({"MEDTRAIN_RECIPE_PLUGINS", "MEDTRAIN_LOG_LEVEL", "MEDTRAIN_RUN_DIR"})
"""``MEDTRAIN_*`` variables that configure the program itself, not a run: never read as config keys."""

_ENV_LEVEL_SEPARATOR = "__"
_NULL_WORDS = frozenset({"null", "none", "~"})
_BOOL_WORDS = {
    **dict.fromkeys(("true", "yes", "on", "1"), True),
    **dict.fromkeys(("false", "no", "off", "0"), False),
}
_EXPONENT_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")
_SEQUENCE_ORIGINS = (list, tuple, set, frozenset, Sequence)
_MAPPING_ORIGINS = (dict, Mapping)
_YAML_SCALARS = (str, int, float, bool, NoneType, list, dict)


@dataclass(frozen=True)
class FlagValue:
    """A value given by a shortcut CLI flag, with the flag's name so errors can say ``from flag --epochs``."""

    value: Any
    flag_name: str

    @property
    def source(self) -> str:
        """Where the value came from, as error messages print it (``--`` added to a bare name)."""
        name = self.flag_name
        return f"from flag {name if name.startswith('-') else '--' + name}"


@dataclass(frozen=True)
class Setting:
    """One dotted key set by a text source: ``value`` is a raw string or an already-typed value."""

    key: str
    value: Any
    source: str


def parse_override(text: str) -> tuple[str, str]:
    """Split ``"a.b=c"`` into ``("a.b", "c")`` at the first ``=``; the value is kept verbatim.

    Raises ConfigError naming ``text`` when there is no ``=`` or the key (or one of its levels) is empty.
    """
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep:
        raise ConfigError(f"invalid override '{text}': expected KEY=VALUE, e.g. trainer.max_epochs=5")
    if not key or not all(key.split(".")):
        raise ConfigError(f"invalid override '{text}': empty key; expected KEY=VALUE, e.g. optim.lr=1e-3")
    return key, value


def env_settings(env: Mapping[str, str] | None, aliases: Mapping[str, str] | None) -> list[Setting]:
    """Config settings from environment variables: aliases first, then ``MEDTRAIN_A__B=v`` (sorted by name).

    ``MEDTRAIN_TRAINER__MAX_EPOCHS`` sets ``trainer.max_epochs``: ``__`` separates levels, names are
    lower-cased, :data:`RESERVED_ENV` names are skipped. An alias name is only read as its alias.
    """
    if env is None:
        return []
    aliases = dict(aliases or {})
    keys = {name: key for name, key in aliases.items() if name in env}
    for name in sorted(env):
        if name.startswith(ENV_PREFIX) and name not in RESERVED_ENV and name not in aliases:
            levels = name[len(ENV_PREFIX) :].split(_ENV_LEVEL_SEPARATOR)
            keys[name] = ".".join(level.lower() for level in levels)
    return [Setting(key, env[name], f"from environment {name}") for name, key in keys.items()]


def override_settings(overrides: Iterable[str]) -> list[Setting]:
    """Config settings from ``--override KEY=VALUE`` texts, in the order given (a later one wins)."""
    return [Setting(*parse_override(text), f"from override '{text}'") for text in overrides]


def flag_settings(flags: Mapping[str, Any] | None) -> list[Setting]:
    """Config settings from shortcut flags (dotted key -> value or :class:`FlagValue`); None: not given."""
    settings = []
    for key, given in (flags or {}).items():
        value, source = (given.value, given.source) if isinstance(given, FlagValue) else (given, None)
        if value is not None:
            settings.append(Setting(key, value, source or f"from flag for '{key}'"))
    return settings


def setting_tree(schema: type[BaseModel], setting: Setting) -> dict[str, Any]:
    """The nested dict ``{a: {b: value}}`` that ``setting`` contributes, its value typed by the schema.

    Raises :class:`UnknownKey` when the key, or a key inside a mapping value for a section, is unknown.
    """
    path = tuple(setting.key.split("."))
    annotation = annotation_at(schema, path)
    if isinstance(setting.value, str):
        value = parse_raw(setting.value, annotation, path)
    else:
        value = to_jsonable_python(setting.value)
        if isinstance(value, Mapping) and (unknown := find_unknown_keys(annotation, value, path)):
            raise unknown[0]
    for level in reversed(path):
        value = {level: value}
    return value


def annotation_at(schema: type[BaseModel], path: Sequence[str]) -> Any:
    """The annotation of the field at dotted ``path`` in ``schema``; raises :class:`UnknownKey` if none."""
    annotation: Any = schema
    for depth, key in enumerate(path):
        annotation = child_annotation(annotation, key, path[: depth + 1])
    return annotation


def child_annotation(annotation: Any, key: str, path: Sequence[str]) -> Any:
    """The annotation of ``key`` inside a value annotated ``annotation`` (a section, a dict or Any)."""
    if annotation is Any:
        return Any
    model = section_model(annotation)
    if model is not None:
        if key not in model.model_fields:
            raise UnknownKey(path, tuple(model.model_fields))
        return model.model_fields[key].annotation
    mapping = mapping_args(annotation)
    if mapping is not None:
        return mapping[1]
    raise UnknownKey(path, ())


def find_unknown_keys(annotation: Any, tree: Mapping[Any, Any], path: Sequence[str] = ()) -> list[UnknownKey]:
    """Every key of the nested ``tree`` (set at ``path``) that the schema ``annotation`` does not have."""
    problems: list[UnknownKey] = []
    for key, value in tree.items():
        try:
            child = child_annotation(annotation, str(key), (*path, str(key)))
        except UnknownKey as exc:
            problems.append(exc)
            continue
        if isinstance(value, Mapping) and (section_model(child) or mapping_args(child)):
            problems.extend(find_unknown_keys(child, value, (*path, str(key))))
    return problems


def parse_raw(text: str, annotation: Any, path: Sequence[str]) -> Any:
    """Type the raw string ``text`` for a field annotated ``annotation`` (see the module docstring).

    Text containing an interpolation ``${...}`` is kept for OmegaConf to resolve. Text that does not parse
    as the annotation asks is returned as is, so pydantic reports it with the expected type.
    """
    if "${" in text:
        return text
    return _coerce(text, annotation, tuple(path))


def section_model(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model a (possibly optional) annotation names, or None."""
    single = _single_member(annotation)
    is_class = isinstance(single, type) and get_origin(single) is None
    return single if is_class and issubclass(single, BaseModel) else None


def mapping_args(annotation: Any) -> tuple[Any, Any] | None:
    """``(key, value)`` annotations of a (possibly optional) dict/Mapping annotation, or None."""
    single = _single_member(annotation)
    if single is dict or get_origin(single) in _MAPPING_ORIGINS:
        args = get_args(single)
        return (args[0], args[1]) if len(args) == 2 else (Any, Any)
    return None


def union_members(annotation: Any) -> tuple[list[Any], bool]:
    """Members of ``annotation`` other than None (``Annotated`` stripped), and whether None is allowed."""
    annotation = _strip_annotated(annotation)
    is_union = get_origin(annotation) in (Union, UnionType)
    members = [_strip_annotated(arg) for arg in (get_args(annotation) if is_union else (annotation,))]
    return [member for member in members if member is not NoneType], NoneType in members


def _strip_annotated(annotation: Any) -> Any:
    while get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    return annotation


def _single_member(annotation: Any) -> Any:
    members, _ = union_members(annotation)
    return members[0] if len(members) == 1 else None


def _coerce(node: Any, annotation: Any, path: tuple[str, ...]) -> Any:
    """Type ``node`` (a string, or a list/dict of strings read by YAML's BaseLoader) by ``annotation``."""
    members, nullable = union_members(annotation)
    if nullable and isinstance(node, str) and node.strip().lower() in _NULL_WORDS:
        return None
    if len(members) != 1:
        return _yaml_typed(node)
    (member,) = members
    if (model := section_model(member)) is not None:
        return _coerce_section(node, model, path)
    if member in (list, tuple, set, frozenset) or get_origin(member) in _SEQUENCE_ORIGINS:
        return _coerce_sequence(node, member, path)
    if (mapping := mapping_args(member)) is not None:
        return _coerce_mapping(node, mapping, path)
    return _coerce_scalar(node, member) if isinstance(node, str) else _yaml_typed(node)


def _coerce_section(node: Any, model: type[BaseModel], path: tuple[str, ...]) -> Any:
    tree = _flow(node) if isinstance(node, str) else node
    if not isinstance(tree, dict):
        return node
    typed = {}
    for key, value in tree.items():
        if key not in model.model_fields:
            raise UnknownKey((*path, key), tuple(model.model_fields))
        typed[key] = _coerce(value, model.model_fields[key].annotation, (*path, key))
    return typed


def _coerce_sequence(node: Any, annotation: Any, path: tuple[str, ...]) -> Any:
    items = _split_list(node) if isinstance(node, str) else node
    if not isinstance(items, list):
        return node
    item_types = _item_types(annotation, len(items))
    return [_coerce(item, item_type, path) for item, item_type in zip(items, item_types, strict=True)]


def _coerce_mapping(node: Any, args: tuple[Any, Any], path: tuple[str, ...]) -> Any:
    tree = _flow(node) if isinstance(node, str) else node
    if not isinstance(tree, dict):
        return node
    key_type, value_type = args
    return {_coerce(key, key_type, path): _coerce(value, value_type, (*path, key)) for key, value in tree.items()}


def _coerce_scalar(text: str, annotation: Any) -> Any:
    if get_origin(annotation) is Literal:
        return text if all(isinstance(choice, str) for choice in get_args(annotation)) else _yaml_scalar(text)
    if not isinstance(annotation, type) or get_origin(annotation) is not None:
        return _yaml_scalar(text)
    if issubclass(annotation, bool):
        return _BOOL_WORDS.get(text.strip().lower(), text)
    if issubclass(annotation, int | float):
        number = _yaml_scalar(text)
        return number if isinstance(number, int | float) and not isinstance(number, bool) else text
    if issubclass(annotation, str | PurePath):
        return text
    return _yaml_scalar(text)


def _item_types(annotation: Any, count: int) -> list[Any]:
    """The annotation of each of ``count`` items of a list/tuple/set annotation."""
    args = get_args(annotation)
    if get_origin(annotation) is tuple and args and args[-1] is not Ellipsis:
        return [args[index] if index < len(args) else Any for index in range(count)]
    return [args[0] if args else Any] * count


def _split_list(text: str) -> Any:
    """``[a, b]`` (YAML flow list) or ``a,b`` (comma-separated) as a list of strings; ``""`` is empty."""
    stripped = text.strip()
    if stripped.startswith("["):
        return _flow(stripped)
    return [item.strip() for item in stripped.split(",")] if stripped else []


def _flow(text: str) -> Any:
    """YAML text read with every scalar left a string (so items can be typed by the schema), or ``text``."""
    try:
        return yaml.load(text, Loader=yaml.BaseLoader)
    except yaml.YAMLError:
        return text


def _yaml_typed(node: Any) -> Any:
    """Strings inside ``node`` typed as YAML reads them (for unions and untyped fields)."""
    if isinstance(node, list):
        return [_yaml_typed(item) for item in node]
    if isinstance(node, dict):
        return {key: _yaml_typed(value) for key, value in node.items()}
    return _yaml_scalar(node) if isinstance(node, str) else node


def _yaml_scalar(text: str) -> Any:
    """The YAML reading of ``text`` (``1e-3`` read as a float too); ``text`` itself if YAML fails or reads
    something that is not plain data (a date, say)."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if isinstance(value, str) and _EXPONENT_FLOAT.fullmatch(value.strip()):
        return float(value)
    return value if isinstance(value, _YAML_SCALARS) else text
