"""The layered config loader of :mod:`medtrain.config`: precedence, ``_base_`` inheritance, interpolation,
typing of raw strings by the schema, error messages that name key, value, source and expectation, YAML
round-trips and hashes. A toy recipe schema narrows ``data`` to cover tuple, list and dict fields.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import pytest
from pydantic import Field, ValidationError, model_validator

from medtrain.config import (
    DEFAULT_HASH_EXCLUDE,
    RESERVED_ENV,
    ConfigError,
    DataConfig,
    FlagValue,
    RunConfig,
    config_hash,
    config_to_dict,
    config_to_yaml,
    load_config,
    parse_override,
    read_yaml,
    section_hash,
    suggest,
)


class ToyData(DataConfig):
    """A recipe's narrowed data section."""

    patch_size: tuple[int, ...] = (64, 64)
    targets: list[str] = Field(default_factory=list)
    spacing: dict[str, float] = Field(default_factory=dict)
    layout: Literal["2d", "3d"] = "2d"
    threshold: float | str = "auto"

    @model_validator(mode="after")
    def _patch_fits_layout(self) -> ToyData:
        if self.layout == "3d" and len(self.patch_size) != 3:
            raise ValueError("layout '3d' needs a patch_size of 3 entries")
        return self


class ToyConfig(RunConfig):
    """A recipe's run config: ``recipe`` has a default so tests need not set it."""

    recipe: str = "toy"
    data: ToyData = ToyData()


def write(folder: Path, name: str, text: str) -> Path:
    """Write ``text`` to ``folder/name`` (creating sub-folders) and return the path."""
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def load(**kwargs: Any) -> ToyConfig:
    return load_config(ToyConfig, **kwargs)


def load_error(**kwargs: Any) -> str:
    """The message of the ConfigError that loading ``kwargs`` must raise."""
    with pytest.raises(ConfigError) as info:
        load(**kwargs)
    return str(info.value)


def get(cfg: Any, dotted: str) -> Any:
    for key in dotted.split("."):
        cfg = getattr(cfg, key)
    return cfg


# ---------------------------------------------------------------------------------------------- precedence

# Layer i (1 = defaults ... 5 = flags) sets STAIR_KEYS[i - 1:] to i, so key j ends up with value j: every
# layer overrides the one below it, and keys it does not set fall through from below.
STAIR_KEYS = ["seed", "data.batch_size", "trainer.max_epochs", "data.num_workers", "checkpoint.save_top_k"]


def _nested(pairs: dict[str, Any]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for dotted, value in pairs.items():
        *parents, leaf = dotted.split(".")
        node = tree
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return tree


def _yaml_lines(pairs: dict[str, Any]) -> str:
    tree = _nested(pairs)
    return "\n".join(f"{key}: {value}" for key, value in tree.items()) + "\n"


def _layers(tmp_path: Path, top: int, defaults_as_file: bool) -> dict[str, Any]:
    """``load_config`` arguments for layers 1..top, each setting the stair keys it owns."""
    owned = {layer: {key: layer for key in STAIR_KEYS[layer - 1 :]} for layer in range(1, top + 1)}
    kwargs: dict[str, Any] = {}
    if 1 in owned:
        defaults = _nested(owned[1])
        kwargs["defaults"] = write(tmp_path, "default.yaml", _yaml_lines(owned[1])) if defaults_as_file else defaults
    if 2 in owned:
        kwargs["config_file"] = write(tmp_path, "user.yaml", _yaml_lines(owned[2]))
    if 3 in owned:
        kwargs["env"] = {"MEDTRAIN_" + key.upper().replace(".", "__"): str(v) for key, v in owned[3].items()}
    if 4 in owned:
        kwargs["overrides"] = [f"{key}={value}" for key, value in owned[4].items()]
    if 5 in owned:
        kwargs["flags"] = {key: str(value) for key, value in owned[5].items()}
    return kwargs


@pytest.mark.parametrize("defaults_as_file", [True, False], ids=["defaults-yaml", "defaults-dict"])
@pytest.mark.parametrize("top", range(6), ids=["schema", "defaults", "file", "env", "override", "flag"])
def test_each_layer_overrides_the_one_below(tmp_path: Path, top: int, defaults_as_file: bool) -> None:
    cfg = load(**_layers(tmp_path, top, defaults_as_file))
    schema_defaults = [42, 32, 10, 0, 3]
    expected = [min(index + 1, top) for index in range(len(STAIR_KEYS))] if top else schema_defaults
    assert [get(cfg, key) for key in STAIR_KEYS] == expected


def test_typed_flags_and_flag_values_are_the_top_layer() -> None:
    cfg = load(
        overrides=["seed=1", "trainer.max_epochs=1", "data.batch_size=1"],
        flags={"seed": 7, "trainer.max_epochs": FlagValue("9", "--epochs"), "data.batch_size": None},
    )
    assert (cfg.seed, cfg.trainer.max_epochs, cfg.data.batch_size) == (7, 9, 1)


def test_result_is_a_frozen_instance_of_the_schema() -> None:
    cfg = load()
    assert type(cfg) is ToyConfig and type(cfg.data) is ToyData
    with pytest.raises(ValidationError):
        cfg.seed = 1  # type: ignore[misc]


# ---------------------------------------------------------------------------------------- _base_ and YAML


def test_single_base_is_merged_under_the_file(tmp_path: Path) -> None:
    write(tmp_path, "base.yaml", "seed: 1\ndata: {batch_size: 4, targets: [a, b], spacing: {x: 1.0}}\n")
    child = write(tmp_path, "child.yaml", "_base_: base.yaml\ndata: {targets: [c], spacing: {y: 2.0}}\n")
    assert read_yaml(child) == {
        "seed": 1,
        "data": {"batch_size": 4, "targets": ["c"], "spacing": {"x": 1.0, "y": 2.0}},  # lists replaced
    }


def test_list_of_bases_merges_in_order(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", "seed: 1\nexperiment: a\n")
    write(tmp_path, "b.yaml", "seed: 2\n")
    child = write(tmp_path, "child.yaml", "_base_: [a.yaml, b.yaml]\n")
    assert read_yaml(child) == {"seed": 2, "experiment": "a"}


def test_bases_nest_and_resolve_relative_to_their_own_folder(tmp_path: Path) -> None:
    write(tmp_path, "shared/root.yaml", "seed: 1\nexperiment: root\ntrainer: {max_epochs: 5}\n")
    write(tmp_path, "shared/mid/mid.yaml", "_base_: ../root.yaml\nexperiment: mid\n")
    top = write(tmp_path, "runs/top.yaml", "_base_: ../shared/mid/mid.yaml\nseed: 3\n")
    assert read_yaml(top) == {"seed": 3, "experiment": "mid", "trainer": {"max_epochs": 5}}
    cfg = load(config_file=top)
    assert (cfg.seed, cfg.experiment, cfg.trainer.max_epochs) == (3, "mid", 5)


def test_base_cycle_names_the_files(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", "_base_: b.yaml\n")
    write(tmp_path, "b.yaml", "_base_: a.yaml\n")
    with pytest.raises(ConfigError, match=r"cyclic _base_ .*a\.yaml -> .*b\.yaml -> .*a\.yaml"):
        read_yaml(tmp_path / "a.yaml")


def test_missing_base_names_the_file_and_the_value(tmp_path: Path) -> None:
    child = write(tmp_path, "child.yaml", "_base_: nowhere.yaml\n")
    with pytest.raises(ConfigError, match=rf"config file {re.escape(str(child))}: _base_ 'nowhere.yaml' not found"):
        load(config_file=child)


def test_interpolations_resolve_after_all_layers(tmp_path: Path) -> None:
    defaults = write(tmp_path, "d.yaml", "data: {eval_batch_size: '${data.batch_size}'}\nexperiment: run-${seed}\n")
    cfg = load(defaults=defaults, overrides=["data.batch_size=8", "seed=${data.batch_size}"])
    assert (cfg.data.eval_batch_size, cfg.seed, cfg.experiment) == (8, 8, "run-8")


def test_unresolvable_interpolation_names_key_and_source() -> None:
    message = load_error(overrides=["experiment=${nope}"])
    assert message.startswith("cannot resolve config key 'experiment' (from override 'experiment=${nope}')")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("seed: [1\n", r"invalid YAML in config file .*bad\.yaml, line 2: "),
        ("- 1\n- 2\n", r"config file .*bad\.yaml: the top level must be a mapping .*list"),
        ("42\n", r"config file .*bad\.yaml: the top level must be a mapping .*int"),
    ],
    ids=["invalid-yaml", "list-top-level", "scalar-top-level"],
)
def test_bad_yaml_file_is_named(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, "bad.yaml", text)
    with pytest.raises(ConfigError, match=expected):
        read_yaml(path)
    with pytest.raises(ConfigError, match=expected):
        load(config_file=path)


def test_missing_config_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.yaml"
    assert load_error(config_file=path) == f"config file not found: {path}"


def test_empty_yaml_file_is_an_empty_layer(tmp_path: Path) -> None:
    assert load(config_file=write(tmp_path, "empty.yaml", "")) == load()


# ------------------------------------------------------------------------------------ typing of raw strings

# (override, dotted key, expected value); the expected value's type is checked too (1 vs 1.0 vs True).
TYPING_CASES = [
    ("experiment=001", "experiment", "001"),
    ("recipe=007", "recipe", "007"),
    ("optim.lr=1e-3", "optim.lr", 0.001),
    ("optim.lr=2.5E-4", "optim.lr", 0.00025),
    ("trainer.gradient_clip_val=1", "trainer.gradient_clip_val", 1.0),
    ("seed=-3", "seed", -3),
    ("data.patch_size=32,48", "data.patch_size", (32, 48)),
    ("data.patch_size=[16, 16, 8]", "data.patch_size", (16, 16, 8)),
    ("optim.betas=0.8, 0.95", "optim.betas", (0.8, 0.95)),
    ("data.targets=a,b", "data.targets", ["a", "b"]),
    ("data.targets=[001, x]", "data.targets", ["001", "x"]),
    ("data.targets=", "data.targets", []),
    ("data.spacing={x: 1, y: 2.5}", "data.spacing", {"x": 1.0, "y": 2.5}),
    ("data.spacing.z=0.5", "data.spacing", {"z": 0.5}),
    ("data.root=/data/in", "data.root", Path("/data/in")),
    ("data.root=null", "data.root", None),
    ("data.root=None", "data.root", None),
    ("data.root=~", "data.root", None),
    ("data.eval_batch_size=16", "data.eval_batch_size", 16),
    ("data.eval_batch_size=null", "data.eval_batch_size", None),
    ("trainer.early_stopping.monitor=none", "trainer.early_stopping.monitor", None),
    ("trainer.devices=2", "trainer.devices", 2),
    ("trainer.devices=auto", "trainer.devices", "auto"),
    ("trainer.fast_dev_run=3", "trainer.fast_dev_run", 3),
    ("trainer.fast_dev_run=true", "trainer.fast_dev_run", True),
    ("trainer.overfit_batches=0.25", "trainer.overfit_batches", 0.25),
    ("data.threshold=1e-3", "data.threshold", 0.001),
    ("data.threshold=2", "data.threshold", 2.0),
    ("data.threshold=auto", "data.threshold", "auto"),
    ("trainer.precision=32", "trainer.precision", "32"),
    ("trainer.gradient_clip_algorithm=value", "trainer.gradient_clip_algorithm", "value"),
    *[(f"data.pin_memory={word}", "data.pin_memory", True) for word in ["true", "Yes", "ON", "1"]],
    *[(f"data.persistent_workers={word}", "data.persistent_workers", False) for word in ["FALSE", "no", "Off", "0"]],
]


@pytest.mark.parametrize(("override", "key", "expected"), TYPING_CASES, ids=[case[0] for case in TYPING_CASES])
def test_raw_override_is_typed_by_the_schema(override: str, key: str, expected: Any) -> None:
    value = get(load(overrides=[override]), key)
    assert value == expected
    assert type(value) is type(expected)


def test_override_of_a_whole_section_merges_into_it() -> None:
    cfg = load(overrides=["trainer.log_every_n_steps=5", "trainer={max_epochs: 3, compile: on}"])
    assert (cfg.trainer.max_epochs, cfg.trainer.compile, cfg.trainer.log_every_n_steps) == (3, True, 5)


def test_env_and_flags_are_typed_like_overrides() -> None:
    env = {"MEDTRAIN_DATA__PATCH_SIZE": "32,32", "MEDTRAIN_OPTIM__LR": "1e-3", "MEDTRAIN_EXPERIMENT": "007"}
    flags = {"data.targets": "a,b", "trainer.devices": FlagValue("4", "gpus"), "data.spacing": {"x": 2}}
    cfg = load(env=env, flags=flags)
    assert (cfg.data.patch_size, cfg.optim.lr, cfg.experiment) == ((32, 32), 0.001, "007")
    assert (cfg.data.targets, cfg.trainer.devices, cfg.data.spacing) == (["a", "b"], 4, {"x": 2.0})


# ---------------------------------------------------------------------------------------------- environment


def test_env_reserved_and_foreign_names_are_ignored() -> None:
    env = {name: "not a config value" for name in RESERVED_ENV} | {"HOME": "/root", "SEED": "x"}
    assert sorted(RESERVED_ENV) == ["MEDTRAIN_LOG_LEVEL", "MEDTRAIN_RECIPE_PLUGINS", "MEDTRAIN_RUN_DIR"]
    assert load(env=env) == load()


def test_env_none_means_no_env_layer() -> None:
    assert load(env=None, env_aliases={"ABR_BATCH_SIZE": "data.batch_size"}).data.batch_size == 32


def test_env_double_underscore_separates_levels_single_stays_in_key() -> None:
    cfg = load(env={"MEDTRAIN_TRAINER__EARLY_STOPPING__PATIENCE": "4", "MEDTRAIN_TRAINER__MAX_EPOCHS": "6"})
    assert (cfg.trainer.early_stopping.patience, cfg.trainer.max_epochs) == (4, 6)


def test_env_aliases_set_their_key_and_canonical_name_wins() -> None:
    aliases = {"ABR_BATCH_SIZE": "data.batch_size", "ABR_SEED": "seed"}
    cfg = load(env={"ABR_BATCH_SIZE": "12", "ABR_SEED": "1", "MEDTRAIN_SEED": "2"}, env_aliases=aliases)
    assert (cfg.data.batch_size, cfg.seed) == (12, 2)


# ------------------------------------------------------------------------------------------- unknown keys


def _unknown_from(tmp_path: Path, source: str) -> tuple[dict[str, Any], str]:
    """``load_config`` arguments setting the misspelt ``trainer.max_epoch`` from ``source``, and its label."""
    path = tmp_path / "user.yaml"
    cases: dict[str, tuple[dict[str, Any], str]] = {
        "file": ({"config_file": write(tmp_path, "user.yaml", "trainer:\n  max_epoch: 3\n")}, f"file {path}"),
        "defaults": ({"defaults": {"trainer": {"max_epoch": 3}}}, "defaults"),
        "env": ({"env": {"MEDTRAIN_TRAINER__MAX_EPOCH": "3"}}, "environment MEDTRAIN_TRAINER__MAX_EPOCH"),
        "alias": (
            {"env": {"EPOCHS": "3"}, "env_aliases": {"EPOCHS": "trainer.max_epoch"}},
            "environment EPOCHS",
        ),
        "override": ({"overrides": ["trainer.max_epoch=3"]}, "override 'trainer.max_epoch=3'"),
        "section-override": ({"overrides": ["trainer={max_epoch: 3}"]}, "override 'trainer={max_epoch: 3}'"),
        "flag": ({"flags": {"trainer.max_epoch": FlagValue("3", "--epochs")}}, "flag --epochs"),
        "flag-no-dashes": ({"flags": {"trainer.max_epoch": FlagValue(3, "epochs")}}, "flag --epochs"),
        "plain-flag": ({"flags": {"trainer.max_epoch": "3"}}, "flag for 'trainer.max_epoch'"),
        "typed-section-flag": ({"flags": {"trainer": {"max_epoch": 3}}}, "flag for 'trainer'"),
    }
    return cases[source]


UNKNOWN_KEY_SOURCES = ["file", "defaults", "env", "alias", "override", "section-override", "flag"]
UNKNOWN_KEY_SOURCES += ["flag-no-dashes", "plain-flag", "typed-section-flag"]


@pytest.mark.parametrize("source", UNKNOWN_KEY_SOURCES)
def test_unknown_key_names_source_and_suggests(tmp_path: Path, source: str) -> None:
    kwargs, label = _unknown_from(tmp_path, source)
    assert load_error(**kwargs) == (
        f"unknown config key 'trainer.max_epoch' (from {label}); did you mean 'trainer.max_epochs'?"
    )


def test_unknown_key_from_a_base_file_names_that_file(tmp_path: Path) -> None:
    base = write(tmp_path, "base.yaml", "optim: {lrate: 0.1}\n")
    child = write(tmp_path, "child.yaml", "_base_: base.yaml\nseed: 1\n")
    assert load_error(config_file=child).startswith(f"unknown config key 'optim.lrate' (from file {base})")


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("zzz=1", "unknown config key 'zzz' (from override 'zzz=1'); valid keys at the top level: recipe, "),
        (
            "trainer.qqq=1",
            "unknown config key 'trainer.qqq' (from override 'trainer.qqq=1'); valid keys under",
        ),
        (
            "seed.x=1",
            "unknown config key 'seed.x' (from override 'seed.x=1'); 'seed' takes a value, not sub-keys",
        ),
    ],
)
def test_unknown_key_without_close_match_lists_the_level(override: str, expected: str) -> None:
    assert load_error(overrides=[override]).startswith(expected)


def test_every_unknown_key_of_a_file_is_reported(tmp_path: Path) -> None:
    text = "sed: 1\ndata: {batch_sise: 2}\ntraner: {max_epochs: 3, devices: 1}\n"
    path = write(tmp_path, "user.yaml", text)
    assert load_error(config_file=path).splitlines() == [
        f"unknown config key 'sed' (from file {path}); did you mean 'seed'?",
        f"unknown config key 'data.batch_sise' (from file {path}); did you mean 'data.batch_size'?",
        f"unknown config key 'traner' (from file {path}); did you mean 'trainer'?",
    ]


# -------------------------------------------------------------------------------------------- wrong values

WRONG_VALUES = [
    ("trainer.max_epochs=abc", "config key 'trainer.max_epochs' = 'abc'", "expected an integer"),
    ("trainer.max_epochs=1.5", "config key 'trainer.max_epochs' = 1.5", "expected an integer"),
    ("optim.lr=fast", "config key 'optim.lr' = 'fast'", "expected a number"),
    ("data.pin_memory=maybe", "config key 'data.pin_memory' = 'maybe'", "expected a boolean (true/false/"),
    ("optim.name=adamax", "config key 'optim.name' = 'adamax'", "expected one of 'adamw', 'adam', 'sgd'"),
    ("data.layout=4d", "config key 'data.layout' = '4d'", "expected one of '2d', '3d'"),
    ("data.batch_size=0", "config key 'data.batch_size' = 0", "expected a value > 0"),
    ("data.patch_size=8,x", "config key 'data.patch_size[1]' = 'x'", "expected an integer"),
    ("optim.betas=1,2,3", "config key 'optim.betas' = [1, 2, 3]", "expected at most 2 items"),
    ("trainer.devices=[0, 1]", "config key 'trainer.devices' = [0, 1]", "expected an integer or a string"),
    ("data.spacing={x: far}", "config key 'data.spacing.x' = 'far'", "expected a number"),
    ("trainer=5", "config key 'trainer' = '5'", "expected a mapping of section keys"),
]


@pytest.mark.parametrize(("override", "head", "expected"), WRONG_VALUES, ids=[case[0] for case in WRONG_VALUES])
def test_wrong_value_names_key_value_source_and_expectation(override: str, head: str, expected: str) -> None:
    message = load_error(overrides=[override])
    assert message.startswith(f"{head} (from override '{override}'): {expected}")
    assert "\n" not in message


@pytest.mark.parametrize(
    ("kwargs", "source"),
    [
        ({"env": {"MEDTRAIN_TRAINER__MAX_EPOCHS": "abc"}}, "environment MEDTRAIN_TRAINER__MAX_EPOCHS"),
        ({"flags": {"trainer.max_epochs": FlagValue("abc", "--epochs")}}, "flag --epochs"),
        ({"defaults": {"trainer": {"max_epochs": "abc"}}}, "defaults"),
    ],
    ids=["env", "flag", "defaults-dict"],
)
def test_wrong_value_names_each_kind_of_source(kwargs: dict[str, Any], source: str) -> None:
    expected = f"config key 'trainer.max_epochs' = 'abc' (from {source}): expected an integer"
    assert load_error(**kwargs) == expected


def test_wrong_value_from_a_file_names_the_file_that_set_it_last(tmp_path: Path) -> None:
    base = write(tmp_path, "base.yaml", "trainer: {max_epochs: 2}\n")
    child = write(tmp_path, "child.yaml", "_base_: base.yaml\ntrainer: {max_epochs: many}\n")
    assert load_error(defaults=base, config_file=child) == (
        f"config key 'trainer.max_epochs' = 'many' (from file {child}): expected an integer"
    )


def test_all_wrong_values_are_reported_one_per_line() -> None:
    message = load_error(overrides=["seed=x", "optim.lr=-1", "trainer.compile=perhaps"])
    assert message.splitlines() == [
        "config key 'seed' = 'x' (from override 'seed=x'): expected an integer",
        "config key 'optim.lr' = -1 (from override 'optim.lr=-1'): expected a value > 0",
        "config key 'trainer.compile' = 'perhaps' (from override 'trainer.compile=perhaps'): "
        "expected a boolean (true/false/yes/no/on/off/1/0)",
    ]


def test_section_validator_error_names_the_section_without_a_mixed_source() -> None:
    assert load_error(overrides=["data.layout=3d"]) == (
        "config key 'data': layout '3d' needs a patch_size of 3 entries"
    )
    assert load(overrides=["data.layout=3d", "data.patch_size=4,4,4"]).data.layout == "3d"


def test_interpolation_in_a_list_value_is_left_to_omegaconf() -> None:
    assert load(overrides=["data.patch_size=${oc.select:data.nothing,[8, 8]}"]).data.patch_size == (8, 8)


def test_missing_required_key() -> None:
    with pytest.raises(ConfigError, match=r"^missing required config key 'recipe'$"):
        load_config(RunConfig)
    assert load_config(RunConfig, overrides=["recipe=anything"]).recipe == "anything"


# -------------------------------------------------------------------------------------- parse_override


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a.b=c", ("a.b", "c")),
        ("a=b=c", ("a", "b=c")),
        ("a=", ("a", "")),
        (" a.b =x y", ("a.b", "x y")),
    ],
)
def test_parse_override(text: str, expected: tuple[str, str]) -> None:
    assert parse_override(text) == expected


@pytest.mark.parametrize("text", ["abc", "=x", " =x", "a..b=1", ".a=1", "a.=1"])
def test_parse_override_rejects_malformed_text(text: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(f"invalid override '{text}'")):
        parse_override(text)
    with pytest.raises(ConfigError, match=re.escape(f"invalid override '{text}'")):
        load(overrides=[text])


# ----------------------------------------------------------------------------------- serialization, hashes


def _custom() -> ToyConfig:
    return load(
        overrides=[
            "experiment=001",
            "data.root=/data/in",
            "data.patch_size=8,8,4",
            "data.targets=[a, '7']",
            "data.spacing={x: 0.5}",
            "optim.eps=1e-10",
            "trainer.devices=2",
            "trainer.gradient_clip_val=null",
            "logging.wandb.tags=[x, y]",
        ]
    )


def test_config_to_yaml_round_trips(tmp_path: Path) -> None:
    cfg = _custom()
    text = config_to_yaml(cfg)
    assert load(defaults=write(tmp_path, "resolved.yaml", text)) == cfg
    assert load(defaults=config_to_dict(cfg)) == cfg
    top_level = [line.split(":")[0] for line in text.splitlines() if not line.startswith(" ")]
    assert top_level == list(ToyConfig.model_fields)
    assert "patch_size: [8, 8, 4]" in text and "experiment: '001'" in text


def test_config_to_dict_is_json_safe() -> None:
    tree = config_to_dict(_custom())
    assert tree["data"]["root"] == "/data/in" and tree["data"]["patch_size"] == [8, 8, 4]


def test_config_hash_is_stable_and_ignores_run_naming_keys() -> None:
    cfg = _custom()
    digest = config_hash(cfg)
    assert re.fullmatch(r"[0-9a-f]{16}", digest)
    assert config_hash(_custom()) == digest
    assert "experiment" in DEFAULT_HASH_EXCLUDE
    renamed = ["experiment=other", "output_dir=/elsewhere", "logging.level=DEBUG", "trainer.progress=quiet"]
    assert config_hash(load(defaults=config_to_dict(cfg), overrides=renamed)) == digest
    assert config_hash(load(defaults=config_to_dict(cfg), overrides=["optim.lr=0.5"])) != digest
    assert config_hash(load(defaults=config_to_dict(cfg), overrides=["experiment=x"]), exclude=()) != digest


def test_section_hash_covers_only_the_named_sections() -> None:
    cfg = _custom()
    digest = section_hash(cfg, "data")
    assert section_hash(load(defaults=config_to_dict(cfg), overrides=["optim.lr=0.5"]), "data") == digest
    assert section_hash(load(defaults=config_to_dict(cfg), overrides=["data.batch_size=3"]), "data") != digest
    assert section_hash(cfg, "data", "model") != digest
    assert section_hash(cfg, "data", "model") == section_hash(cfg, "data", "model")
    with pytest.raises(ValueError, match="at least one section"):
        section_hash(cfg)
    with pytest.raises(KeyError, match="dta"):
        section_hash(cfg, "dta")


# ----------------------------------------------------------------------------------------------- suggest


@pytest.mark.parametrize(
    ("name", "expected"),
    [("max_epoch", "max_epochs"), ("MAX_EPOCHS", "max_epochs"), ("lr", "lr"), ("zzzz", None)],
)
def test_suggest(name: str, expected: str | None) -> None:
    assert suggest(name, ["max_epochs", "max_steps", "lr"]) == expected
