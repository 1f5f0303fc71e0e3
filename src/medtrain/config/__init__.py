"""Typed run configuration: the schema sections, the layered loader and :class:`ConfigError`.

``load_config`` merges schema defaults, the recipe's defaults, the user's YAML, ``MEDTRAIN_*`` environment
variables, ``--override`` texts and shortcut flags (lowest to highest precedence) into a frozen config.
This package imports nothing of medtrain but itself.
"""

from medtrain.config.errors import ConfigError
from medtrain.config.loader import (
    DEFAULT_HASH_EXCLUDE,
    config_hash,
    config_to_dict,
    config_to_yaml,
    load_config,
    read_yaml,
    section_hash,
)
from medtrain.config.overrides import RESERVED_ENV, FlagValue, parse_override
from medtrain.config.schema import (
    CheckpointConfig,
    DataConfig,
    EarlyStoppingConfig,
    EMAConfig,
    LoggingConfig,
    LossConfig,
    MlflowConfig,
    ModelConfig,
    OptimConfig,
    Precision,
    RunConfig,
    SchedulerConfig,
    Section,
    TrainerConfig,
    WandbConfig,
)
from medtrain.config.suggest import suggest

__all__ = [
    "DEFAULT_HASH_EXCLUDE",
    "RESERVED_ENV",
    "CheckpointConfig",
    "ConfigError",
    "DataConfig",
    "EMAConfig",
    "EarlyStoppingConfig",
    "FlagValue",
    "LoggingConfig",
    "LossConfig",
    "MlflowConfig",
    "ModelConfig",
    "OptimConfig",
    "Precision",
    "RunConfig",
    "SchedulerConfig",
    "Section",
    "TrainerConfig",
    "WandbConfig",
    "config_hash",
    "config_to_dict",
    "config_to_yaml",
    "load_config",
    "parse_override",
    "read_yaml",
    "section_hash",
    "suggest",
]
