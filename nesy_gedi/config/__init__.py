"""Task configuration: YAML files validated into typed dataclasses, with `--set key=value`.

One job per module:
    schema     the dataclasses of every section and the table of what each train.mode reads
    reader     untrusted YAML text -> plain values and the line of every key
    overrides  `--set key=value` parsed and applied
    validate   every key, type and value checked, one-line errors naming file, line and key
    paths      a task's relative paths resolved beside the task file
    load       a task file or a stored run's dict -> `TaskConfig`
The names below are the public API.
"""
from .load import config_from_dict, load_config, save_config, upgrade_run_config
from .overrides import apply_overrides, parse_overrides
from .paths import PATH_KEYS, resolve_task_path
from .reader import MAX_INT_DIGITS, MAX_NESTING, MAX_TASK_FILE_BYTES
from .schema import (MODES, SELF_SUPERVISED_METHODS, SELF_SUPERVISED_MODES, TEMPERATURE_SCOPES, TRAINING_MODES,
                     CircuitConfig, DataConfig, GediConfig, LogicConfig, MapConfig, ModelConfig, SGLDConfig,
                     SupportConfig, TaskConfig, TrainConfig, TrainingMode, keys_read)

__all__ = [
    "MAX_INT_DIGITS", "MAX_NESTING", "MAX_TASK_FILE_BYTES", "MODES", "PATH_KEYS", "SELF_SUPERVISED_METHODS",
    "SELF_SUPERVISED_MODES", "TEMPERATURE_SCOPES", "TRAINING_MODES", "CircuitConfig", "DataConfig", "GediConfig",
    "LogicConfig", "MapConfig", "ModelConfig", "SGLDConfig", "SupportConfig", "TaskConfig", "TrainConfig",
    "TrainingMode", "apply_overrides", "config_from_dict", "load_config", "parse_overrides", "resolve_task_path",
    "keys_read", "save_config", "upgrade_run_config",
]
