"""A task configuration checked: every key and type against the schema (`build`), then
every value (`check`: ranges, names, options, the keys the training mode reads; the one
place where what a value may be is decided), so a bad task file fails at load time, never
later in a traceback. Every error is a one-line `ConfigError` naming the file, the line
where known, and the key.
"""
from __future__ import annotations

import copy
import dataclasses
import inspect
import math
import re
import types
import typing
from dataclasses import dataclass, field

import torch

from ..compiler import VTREE_TYPES
from ..data.augment import AUGMENT_NAMES, build_augment
from ..data.images import DATASET_NAMES
from ..errors import ConfigError
from ..models import backbones
from ..naming import NAMING_MODES
from .overrides import parse_override
from .reader import describe, first_line, show
from .schema import (MODE_KEYS, MODES, MOVED_KEYS, SELF_SUPERVISED_METHODS, TEMPERATURE_SCOPES, TRAINING_MODES,
                     DataConfig, MapConfig, ModelConfig, TaskConfig)

@dataclass(frozen=True)
class Where:
    """Where a configuration came from: its file (or other source), the line of each key in
    that file, and the keys that `--set` replaced (no line of the file applies to those)."""
    path: str
    lines: dict = field(default_factory=dict)
    overridden: tuple = ()

    def fail(self, message: str, key: str = "") -> ConfigError:
        for changed in self.overridden:
            if key == changed or key.startswith((changed + ".", changed + "[")):
                return ConfigError(f"{message} (from --set {changed})", self.path)
        return ConfigError(message, self.path, self.line(key))

    def error(self, key: str, message: str) -> ConfigError:
        return self.fail(f"{key}: {message}" if key else message, key)

    def given(self) -> tuple:
        """Every key the file or `--set` gives, sections and their keys alike."""
        return tuple(dict.fromkeys([*self.lines, *self.overridden]))

    def from_file(self, key: str) -> bool:
        """Whether the value of `key` is the task file's own (no `--set` replaced it)."""
        return key in self.lines and not any(key == changed or key.startswith(changed + ".")
                                             for changed in self.overridden)

    def line(self, key: str) -> int | None:
        """The line of `key` or, when the file leaves it out, of its section."""
        while key:
            if key in self.lines:
                return self.lines[key]
            cut = max(key.rfind("."), key.rfind("["))
            key = key[:cut] if cut > 0 else ""
        return None


# ----------------------------------------------------------------------------- types
_INT64 = 2**63


def _type_name(expected) -> str:
    origin = typing.get_origin(expected)
    if origin in (typing.Union, types.UnionType):
        arguments = typing.get_args(expected)
        names = " or ".join(_type_name(a) for a in arguments if a is not type(None))
        return names + " or null" if type(None) in arguments else names
    if dataclasses.is_dataclass(expected):
        return "a mapping"
    return getattr(expected, "__name__", str(expected))


_DECIMAL_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def _convert(value, expected, key: str, where: Where):
    origin = typing.get_origin(expected)
    if origin in (typing.Union, types.UnionType):
        arguments = typing.get_args(expected)
        if value is None and type(None) in arguments:
            return None
        options = [a for a in arguments if a is not type(None)]
        if len(options) == 1:  # Optional[X]: X's own message (e.g. "does not fit in 64 bits")
            try:
                return _convert(value, options[0], key, where)
            except ConfigError as error:
                if not error.message.startswith(f"{key}: expected "):
                    raise
                raise where.error(key, f"expected {_type_name(expected)}, got {show(value)}") from None
        for argument in options:
            try:
                return _convert(value, argument, key, where)
            except ConfigError:
                continue
        raise where.error(key, f"expected {_type_name(expected)}, got {show(value)}")
    if dataclasses.is_dataclass(expected):
        if not isinstance(value, dict):
            raise where.error(key, f"expected a mapping, got {show(value)}")
        return build(expected, value, where, key + ".")
    if expected is bool:
        if isinstance(value, bool):
            return value
    elif expected is int:
        if isinstance(value, int) and not isinstance(value, bool):
            if not -_INT64 <= value < _INT64:
                raise where.error(key, f"{show(value)} does not fit in 64 bits")
            return value
    elif expected is float:
        number = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = value
        # PyYAML follows YAML 1.1, which reads exponents without a dot ("1e-4") as strings.
        elif isinstance(value, str) and _DECIMAL_NUMBER.fullmatch(value.strip()):
            number = value
        if number is not None:
            try:
                number = float(number)
            except OverflowError:  # an integer beyond the float range
                number = math.inf
            if not math.isfinite(number):
                raise where.error(key, f"must be a finite number, got {show(value)}")
            return number
    elif expected is str:
        if isinstance(value, str):
            if "\x00" in value:
                raise where.error(key, f"must not contain a NUL character, got {show(value)}")
            return value
    elif expected is dict or origin is dict:
        if isinstance(value, dict):
            for name in value:
                if not isinstance(name, str):
                    raise where.error(key, f"keys must be strings, got {show(name)}")
            return value
    elif expected is list or origin is list:
        if isinstance(value, list):
            return value
    raise where.error(key, f"expected {_type_name(expected)}, got {show(value)}")


_PLAIN_KEY = re.compile(r"[A-Za-z0-9_.\-]+")


def build(cls, data: dict, where: Where, prefix: str = ""):
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls) if not f.metadata.get("internal")}
    for key in data:
        if not isinstance(key, str):
            raise where.error(prefix[:-1], f"keys must be strings, got {show(key)}")
        if key not in known:
            shown = key if _PLAIN_KEY.fullmatch(key) else repr(key)
            if prefix + key in MOVED_KEYS:
                raise where.fail(f"{prefix}{shown} is now {MOVED_KEYS[prefix + key]} (the map phase and the naming "
                                 "search have their own section, map:)", prefix + key)
            raise where.fail(f"unknown key {prefix}{shown} (valid keys: {', '.join(sorted(known))})", prefix + key)
    values = {key: _convert(value, hints[key], prefix + key, where) for key, value in data.items()}
    return cls(**values)


# ----------------------------------------------------------------------------- values
class _Range(typing.NamedTuple):
    low: float
    high: float | None = None
    open_low: bool = False  # low itself excluded
    hint: str = ""
    open_high: bool = False  # high itself excluded

    def admits(self, value) -> bool:
        if value < self.low or (self.open_low and value == self.low):
            return False
        return self.high is None or value < self.high or (value == self.high and not self.open_high)

    def describe(self) -> str:
        if self.high is not None and self.open_low and self.open_high:
            text = f"must be strictly between {self.low:g} and {self.high:g}"
        elif self.high is not None:
            text = f"must be between {self.low:g} and {self.high:g}" if isinstance(self.low, float) \
                else f"must be between {self.low} and {self.high}"
        elif self.open_low:
            text = "must be positive" if self.low == 0 else f"must be above {self.low}"
        else:
            text = f"must be at least {self.low}"
        return f"{text} ({self.hint})" if self.hint else text


_AT_LEAST_ONE = _Range(1)
_NON_NEGATIVE = _Range(0)
_POSITIVE = _Range(0, open_low=True)
_FRACTION = _Range(0.0, 1.0)

# The range of every number (null, where allowed, is always fine). A key here that is no
# field any more is a programming error that tests/test_config.py catches.
_RANGES: dict[str, _Range] = {
    "data.train_examples": _AT_LEAST_ONE,
    "data.test_examples": _AT_LEAST_ONE,
    "data.val_examples": _AT_LEAST_ONE,
    "data.toy_samples": _AT_LEAST_ONE,
    "data.toy_noise": _NON_NEGATIVE,
    "model.num_clusters": _AT_LEAST_ONE,
    "train.epochs": _AT_LEAST_ONE,
    "train.batch_size": _AT_LEAST_ONE,
    "train.lr": _POSITIVE,
    "train.weight_decay": _NON_NEGATIVE,
    # numpy's random_state (toy data) takes 0 <= seed < 2**32; the run's derived seeds
    # (seed * 1_000_003 + epoch) then stay inside torch's 64-bit manual_seed.
    "train.seed": _Range(0, 2**32 - 1, hint="the seed range of numpy and of every derived torch seed"),
    "train.eval_batch_size": _AT_LEAST_ONE,
    "train.eval_every": _AT_LEAST_ONE,
    "train.concept_supervision": _FRACTION,
    "train.concept_labels": _Range(0, hint="0 or null: no labelled images"),
    "train.entropy_weight": _NON_NEGATIVE,
    "map.epochs": _NON_NEGATIVE,
    "map.lr": _POSITIVE,
    "map.balance": _NON_NEGATIVE,
    "map.noise": _Range(0.0, 0.99),
    "map.restarts": _AT_LEAST_ONE,
    "train.max_nonfinite_recoveries": _NON_NEGATIVE,
    "train.max_rollbacks": _NON_NEGATIVE,
    "train.max_grad_norm": _POSITIVE,
    "train.ema_decay": _Range(0.0, 1.0, open_low=True, open_high=True, hint="null: no averaging"),
    "train.num_threads": _Range(1, hint="null keeps torch's default"),
    "gedi.generative": _NON_NEGATIVE,
    "gedi.invariance": _NON_NEGATIVE,
    "gedi.prior": _NON_NEGATIVE,
    "gedi.energy_magnitude": _NON_NEGATIVE,
    "gedi.temperature": _POSITIVE,
    "gedi.swav_temperature": _POSITIVE,
    "gedi.swav_epsilon": _POSITIVE,
    "gedi.weight": _NON_NEGATIVE,
    "gedi.pretrain_epochs": _NON_NEGATIVE,
    "gedi.sgld.buffer_size": _AT_LEAST_ONE,
    "gedi.sgld.reinit_prob": _FRACTION,
    "gedi.sgld.steps": _AT_LEAST_ONE,
    "gedi.sgld.step_size": _POSITIVE,
    "gedi.sgld.noise_std": _NON_NEGATIVE,
    "gedi.sgld.batch_fraction": _Range(0.0, 1.0, open_low=True, hint="0 excluded"),
    "gedi.sgld.short_steps": _Range(0, hint="null: every call runs gedi.sgld.steps"),
    "gedi.sgld.long_every": _AT_LEAST_ONE,
    "circuit.max_label_candidates": _AT_LEAST_ONE,
}

# A task's name is its run folder's name: no separators, no "..", nothing hidden.
_TASK_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")
_PARAMETER_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

# The class behind each backbone name, and the arguments build_backbone passes itself.
_BACKBONE_CLASSES = {"mnist_net": backbones.MNISTNet, "mlp": backbones.MLP, "resnet_small": backbones.ResNetSmall}
_BACKBONE_ARGUMENTS = ("num_outputs", "in_channels")
# A small input each augmentation accepts: a dry run on it checks the options' values.
_AUGMENT_PROBES = {"digits": (2, 1, 8, 8), "natural": (2, 3, 8, 8), "points": (2, 2), "none": (2, 2)}
_DRY_RUN_ERRORS = (TypeError, ValueError, RuntimeError, LookupError, ArithmeticError)


def _value_at(config: TaskConfig, key: str):
    value = config
    for part in key.split("."):
        value = getattr(value, part)
    return value


_MISSING = object()


def _lookup(config: TaskConfig, key: str):
    """The value at a given key (`gedi.augment_options.scale[1]`), through sections, option
    mappings and lists; _MISSING where the configuration has none."""
    value = config
    for part in re.split(r"\.|(?=\[)", key):
        if part.startswith("["):
            index = int(part[1:-1])
            value = value[index] if isinstance(value, list) and index < len(value) else _MISSING
        elif isinstance(value, dict):
            value = value.get(part, _MISSING)
        else:
            value = getattr(value, part, _MISSING)
        if value is _MISSING:
            break
    return value


def _set_at(config: TaskConfig, key: str, value) -> None:
    owner, _, name = key.rpartition(".")
    setattr(_value_at(config, owner) if owner else config, name, value)


def _choose(where: Where, key: str, value, choices, what: str) -> None:
    if value not in choices:
        raise where.error(key, f"unknown {what} {show(value)} (choose from {', '.join(map(str, choices))})")


def _not_empty(where: Where, key: str, value: str | None, what: str = "null for none") -> None:
    if value is not None and not value.strip():
        raise where.error(key, f"must not be empty ({what})")


def _option_value(where: Where, key: str, value, default, fixed_length: bool):
    """`value` of a keyword option whose default is `default`, of the same type (decimal
    strings become floats); lists for tuple defaults."""
    if default is inspect.Parameter.empty or default is None:
        return value
    if isinstance(default, (tuple, list)):
        if not isinstance(value, list) or not value or (fixed_length and len(value) != len(default)):
            size = f"{len(default)} values" if fixed_length else "values"
            raise where.error(key, f"expected a list of {size} like {list(default)}, got {show(value)}")
        return [_option_value(where, f"{key}[{i}]", item, default[0] if default else None, fixed_length)
                for i, item in enumerate(value)]
    return _convert(value, type(default), key, where)


def _check_options(where: Where, key: str, options: dict, function, skip: int, exclude=(),
                   fixed_length: bool = False) -> dict:
    """`options` checked against the keyword parameters of `function` (the first `skip` and
    those in `exclude` are not options); returns them with converted values."""
    parameters = dict(list(inspect.signature(function).parameters.items())[skip:])
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return dict(options)
    valid = [name for name in parameters if name not in exclude]
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise where.error(f"{key}.{unknown[0]}", f"unknown option (valid options: {', '.join(valid) or 'none'})")
    return {name: _option_value(where, f"{key}.{name}", value, parameters[name].default, fixed_length)
            for name, value in options.items()}


def _check_model(model: ModelConfig, where: Where) -> None:
    _choose(where, "model.backbone", model.backbone, backbones.BACKBONE_NAMES, "backbone")
    for key in ("init", "pretrain", "pretrain_dir"):
        _not_empty(where, f"model.{key}", getattr(model, key))
    for index, item in enumerate(model.pretrain_overrides):
        key = f"model.pretrain_overrides[{index}]"
        if not isinstance(item, str):
            raise where.error(key, f"expected a key=value string, got {show(item)}")
        try:
            parse_override(item, f"{key} {show(item)}")
        except ConfigError as error:
            raise where.fail(error.message, key) from None
    if not model.options:
        return
    cls = _BACKBONE_CLASSES.get(model.backbone)
    if cls is not None:
        model.options = _check_options(where, "model.options", model.options, cls.__init__, skip=1,
                                       exclude=_BACKBONE_ARGUMENTS)
    try:  # the constructor's own checks, on the meta device: no memory, no time
        with torch.device("meta"):
            backbones.build_backbone(model.backbone, model.num_clusters, 1, **model.options)
    except _DRY_RUN_ERRORS as error:
        raise where.error("model.options", first_line(error)) from None


def _check_augment(where: Where, key: str, section) -> None:
    _choose(where, f"{key}.augment", section.augment, AUGMENT_NAMES, "augmentation")
    options_key = f"{key}.augment_options"
    try:
        function = build_augment(section.augment)
        build_augment(section.augment, **section.augment_options)  # its own message for unknown options
    except (TypeError, ValueError) as error:
        raise where.error(options_key, first_line(error)) from None
    section.augment_options = _check_options(where, options_key, section.augment_options, function, skip=2,
                                             fixed_length=True)
    probe = _AUGMENT_PROBES.get(section.augment)
    if probe is None or not section.augment_options:
        return
    # build_augment checks only the options' names; the augmentation checks their values
    # when it first runs, so run it once on a tiny input with a generator of its own.
    try:
        build_augment(section.augment, **section.augment_options)(torch.zeros(probe), torch.Generator().manual_seed(0))
    except _DRY_RUN_ERRORS as error:
        raise where.error(options_key, first_line(error)) from None


def _check_data(data: DataConfig, where: Where) -> None:
    _not_empty(where, "data.dataset", data.dataset, "a data set name")
    for key in ("root", "path"):
        _not_empty(where, f"data.{key}", getattr(data, key))
    if data.classes is not None:
        if not data.classes:
            raise where.error("data.classes", "must list at least one class (null for the data set's own)")
        seen = set()
        for index, value in enumerate(data.classes):
            key = f"data.classes[{index}]"
            if isinstance(value, bool) or not isinstance(value, (int, str)):
                raise where.error(key, f"expected a class index or name, got {show(value)}")
            if isinstance(value, int) and not 0 <= value < _INT64:
                raise where.error(key, f"a class index must be a non-negative 64-bit integer, got {show(value)}")
            if isinstance(value, str) and (not value.strip() or "\x00" in value):
                raise where.error(key, f"not a class name: {show(value)}")
            if value in seen:
                raise where.error(key, f"class {show(value)} is listed twice")
            seen.add(value)
    support = data.train_support
    if support is not None and support.tuples is not None:
        if not support.tuples:
            raise where.error("data.train_support.tuples", "must list at least one tuple (null for no list)")
        width = None
        for index, row in enumerate(support.tuples):
            key = f"data.train_support.tuples[{index}]"
            if not isinstance(row, list) or not row:
                raise where.error(key, f"expected a list of concept values, got {show(row)}")
            for position, value in enumerate(row):
                if isinstance(value, bool) or not isinstance(value, int) or not -_INT64 <= value < _INT64:
                    raise where.error(f"{key}[{position}]", f"expected an integer concept value, got {show(value)}")
            if width is None:
                width = len(row)
            elif len(row) != width:
                raise where.error(key, f"has {len(row)} values, the first tuple {width}")
    if support is not None:
        _not_empty(where, "data.train_support.constraint", support.constraint)
    ood = data.ood_dataset
    if ood is not None and ood.strip().lower() == "none":
        data.ood_dataset = None
    elif ood is not None and ood not in DATASET_NAMES and not ood.startswith("fake:"):
        raise where.error("data.ood_dataset", f"unknown data set {show(ood)} (choose from "
                                              f"{', '.join(DATASET_NAMES)}, fake:CxHxW[:classes[:samples]] or null)")


def check(config: TaskConfig, where: Where, train_task: bool) -> None:
    """Every value of a type-checked configuration; the one place that decides what each may be."""
    if not _TASK_NAME.fullmatch(config.name):
        raise where.error("name", f"{show(config.name)} cannot name a run folder: use letters, digits, '.', "
                                  "'_' and '-' (at most 128, not starting with '.' or '-')")
    _choose(where, "train.mode", config.train.mode, TRAINING_MODES, "mode")
    _choose(where, "gedi.method", config.gedi.method, SELF_SUPERVISED_METHODS, "method")
    _choose(where, "gedi.temperature_scope", config.gedi.temperature_scope, TEMPERATURE_SCOPES, "temperature scope")
    for key, rule in _RANGES.items():
        value = _value_at(config, key)
        if value is not None and not rule.admits(value):
            raise where.error(key, f"{rule.describe()}, got {show(value)}")
    _choose(where, "map.mode", config.map.mode, NAMING_MODES, "naming mode")
    _check_keys_read(config, where, train_task)
    sgld = config.gedi.sgld
    if not sgld.low < sgld.high:
        raise where.error("gedi.sgld.low", f"needs low < high (the SGLD box), got low {sgld.low:g}, "
                                           f"high {sgld.high:g}")
    if (sgld.short_steps is None) != (sgld.long_every == 1):
        raise where.error("gedi.sgld.short_steps" if sgld.short_steps is not None else "gedi.sgld.long_every",
                          "short_steps and long_every > 1 go together (every long_every-th sampler call runs "
                          "gedi.sgld.steps, the others short_steps)")
    if config.logic is not None:
        if not config.logic.file.strip():
            raise where.error("logic.file", "missing: the task's logic file")
        for name, value in config.logic.params.items():
            key = f"logic.params.{name}" if _PLAIN_KEY.fullmatch(name) else f"logic.params[{name!r}]"
            if not _PARAMETER_NAME.fullmatch(name):
                raise where.error(key, "not a parameter name")
            if isinstance(value, bool) or not isinstance(value, int):
                raise where.error(key, f"expected an integer, got {show(value)}")
            if not -_INT64 <= value < _INT64:
                raise where.error(key, f"{show(value)} does not fit in 64 bits")
        _choose(where, "logic.vtree", config.logic.vtree, VTREE_TYPES, "vtree")
    _check_data(config.data, where)
    _check_model(config.model, where)
    for key, section in (("train", config.train), ("gedi", config.gedi)):
        _check_augment(where, key, section)
    _choose(where, "train.lr_schedule", config.train.lr_schedule, ("constant", "cosine"), "schedule")
    if config.train.device != "auto":
        try:
            torch.device(config.train.device)
        except (RuntimeError, ValueError, TypeError):
            raise where.error("train.device", f"unknown device {show(config.train.device)} "
                                              "(use auto, cpu, cuda or cuda:N)") from None
    if config.circuit.compile not in (True, False, "auto"):
        raise where.error("circuit.compile", f"expected true, false or auto, got {show(config.circuit.compile)}")


def _modes_reading(key: str) -> str:
    names = [name for name, mode in MODES.items() if mode.reads_key(key)]
    return " and ".join(", ".join(names).rsplit(", ", 1)) + (" do" if len(names) > 1 else " does")


def _check_keys_read(config: TaskConfig, where: Where, train_task: bool) -> None:
    """Refuse settings, in the task file or from `--set`, that the run would ignore: a key of
    another training mode given a value other than its default (in a train task; pretraining
    reads the whole gedi section), another value of a key the mode fixes, and map keys
    set without a map phase. (A run's stored config.yaml, which holds every key, loads.)"""
    mode = MODES[config.train.mode]
    if train_task:
        defaults = TaskConfig()
        ignored = [key for key in where.given() if not mode.reads_key(key)
                   and (key in where.overridden or _lookup(config, key) != _lookup(defaults, key))]
        for key in ignored:  # the innermost key names the setting best (gedi.prior, not gedi)
            if not any(other.startswith((key + ".", key + "[")) for other in ignored):
                entry = max((e for e in MODE_KEYS if key == e or key.startswith(e + ".")), key=len)
                message = f"train.mode {mode.name} does not read {entry} (only {_modes_reading(entry)})"
                if key in where.overridden:
                    raise ConfigError(f"--set {key}: {message}; set train.mode too", where.path)
                raise where.error(key, f"{message}; set train.mode, or give it under modes: for the modes "
                                       "that read it")
        for key, value in mode.sets.items():
            if key in where.given() and _value_at(config, key) != value:
                raise where.error(key, f"train.mode {mode.name} sets {key} to {value}")
    if config.map.epochs == 0:
        for field_ in dataclasses.fields(MapConfig):
            key = f"map.{field_.name}"
            if field_.name != "epochs" and any(key == changed or key.startswith(changed + ".")
                                               for changed in where.overridden):
                raise where.error(key, "is read by the map phase, which only map.epochs > 0 runs")
    elif config.logic is None:
        raise where.error("map.epochs", "the map phase names clusters for a train run's knowledge; "
                                        "this task has no logic section")


def apply_mode(config: TaskConfig, train_task: bool) -> None:
    """Settle what `train.mode` implies, so that config.yaml shows what runs: the settings
    it fixes or fills in and, for a train task, every key it does not read at its default
    (a stored run's config carries every key; those changed nothing)."""
    mode = MODES[config.train.mode]
    defaults = TaskConfig()
    for key, value in mode.defaults.items():
        if _value_at(config, key) == _value_at(defaults, key):
            _set_at(config, key, value)
    for key, value in mode.sets.items():
        _set_at(config, key, value)
    if train_task:
        for key in MODE_KEYS:
            if not mode.reads_key(key):
                _set_at(config, key, copy.deepcopy(_value_at(defaults, key)))
