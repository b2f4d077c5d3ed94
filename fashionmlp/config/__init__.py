"""Typed, frozen run configuration: loaded from YAML once, validated once, never changed after.

schema.py holds the sections and their defaults, rules.py the validation, files.py the YAML files, `--set`
texts and configs derived with typed values (`with_values`).
"""

from fashionmlp.config.files import (
    Overrides,
    StrictLoader,
    Values,
    apply_overrides,
    check_shortcut,
    config_from_dict,
    load_config,
    parse_override,
    read_yaml,
    safe_load,
    set_value,
    shortcut_values,
    whole_training_set,
    with_values,
)
from fashionmlp.config.rules import check_choice, check_int, float_problem, number, show, unknown_key
from fashionmlp.config.schema import (
    ACTIVATIONS,
    DECAY_PARAMS,
    LOADERS,
    MODEL_DEFAULTS,
    MODELS,
    OPTIMIZERS,
    PRECISIONS,
    SCHEDULES,
    TTA,
    DataConfig,
    DistillConfig,
    ModelConfig,
    OptimConfig,
    RunConfig,
    TrainConfig,
)

__all__ = [
    "ACTIVATIONS", "DECAY_PARAMS", "LOADERS", "MODELS", "MODEL_DEFAULTS", "OPTIMIZERS", "PRECISIONS", "SCHEDULES",
    "TTA", "DataConfig", "DistillConfig", "ModelConfig", "OptimConfig", "Overrides", "RunConfig", "StrictLoader",
    "TrainConfig",
    "Values", "apply_overrides", "check_choice", "check_int", "check_shortcut", "config_from_dict", "float_problem",
    "load_config",
    "number", "parse_override", "read_yaml", "safe_load", "set_value", "shortcut_values", "show", "unknown_key",
    "whole_training_set",
    "with_values",
]
