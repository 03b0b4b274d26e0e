"""Task configuration: YAML files validated into typed dataclasses, with `--set key=value`.

Every section is a dataclass; loading checks every key and type against it and names
the file and the key on any problem. Bare `--set NAME=value` keys that are not config
keys set parameters of the logic file (e.g. `--set N=4`).
"""
from __future__ import annotations

import dataclasses
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .errors import ConfigError

TRAINING_MODES = ("sl", "sl+gedi", "gedi->sl", "sl+entropy", "sl+swav", "sl+concepts")
SELF_SUPERVISED_METHODS = ("gedi", "no-gen", "jem", "swav", "barlow")


@dataclass
class LogicConfig:
    file: str = ""
    params: dict = field(default_factory=dict)
    vtree: str = "blocks"


@dataclass
class SupportConfig:
    """Restrict which ground-truth concept tuples may appear in training (shortcut-prone tasks)."""
    tuples: typing.Optional[list] = None  # allowed concept tuples, e.g. [[0, 6], [6, 0]]
    constraint: typing.Optional[str] = None  # a condition in the logic language over concepts
    symmetric: bool = False  # also allow every permutation of each listed tuple


@dataclass
class DataConfig:
    dataset: str = "mnist"
    root: typing.Optional[str] = None
    train_examples: typing.Optional[int] = None  # None: every image used once per epoch
    test_examples: typing.Optional[int] = None
    train_support: typing.Optional[SupportConfig] = None
    ood_dataset: typing.Optional[str] = None  # for GEDI's OOD evaluation, e.g. fashion_mnist
    toy_samples: int = 2000
    toy_noise: float = 0.08


@dataclass
class ModelConfig:
    backbone: str = "mnist_net"
    num_clusters: int = 10
    init: typing.Optional[str] = None  # a pretrain run directory whose backbone starts training
    options: dict = field(default_factory=dict)  # keyword options of the backbone (e.g. width, hidden, depth)


@dataclass
class SGLDConfig:
    buffer_size: int = 10000
    reinit_prob: float = 0.05
    steps: int = 20
    step_size: float = 1.0
    noise_std: float = 0.01
    low: float = -1.0  # buffer noise range; samples are clamped to [low, high] after each step
    high: float = 1.0  # (images live in [-1, 1]; standardised toy points need a wider box)
    clamp: bool = True


@dataclass
class GediConfig:
    method: str = "gedi"  # gedi | no-gen | jem | swav | barlow
    generative: float = 1.0
    invariance: float = 1.0
    prior: float = 1.0
    energy_magnitude: float = 0.0
    temperature: float = 1.0  # p(y|x) = softmax(f(x) / temperature) in the invariance and prior terms
    augment: str = "digits"
    augment_options: dict = field(default_factory=dict)  # keyword options of the augmentation
    sgld: SGLDConfig = field(default_factory=SGLDConfig)
    swav_temperature: float = 0.1
    swav_epsilon: float = 0.05
    weight: float = 1.0  # weight of the whole self-supervised objective next to the semantic loss
    pretrain_epochs: int = 0  # for the gedi->sl mode


@dataclass
class TrainConfig:
    mode: str = "sl"
    epochs: int = 1
    batch_size: int = 32
    lr: float = 1e-3
    lr_schedule: str = "constant"  # constant | cosine (per step, to zero at the last epoch)
    weight_decay: float = 0.0
    seed: int = 0
    device: str = "auto"
    eval_batch_size: int = 1000
    eval_every: int = 1  # evaluate the test splits every k epochs (and always after the last)
    augment: str = "none"  # augmentation of the perception's images under the semantic loss: none | digits | natural
    augment_options: dict = field(default_factory=dict)  # keyword options of that augmentation
    concept_supervision: float = 0.0  # fraction of training examples whose concepts are observed
    entropy_weight: float = 1.0  # for sl+entropy
    max_nonfinite_recoveries: int = 3
    progress: bool = True
    num_threads: typing.Optional[int] = None  # torch CPU threads; None keeps torch's default


@dataclass
class CircuitConfig:
    compile: typing.Union[bool, str] = "auto"  # torch.compile KLay's module: true | false | auto (CUDA only)
    max_label_candidates: int = 256


@dataclass
class TaskConfig:
    name: str = "task"
    logic: typing.Optional[LogicConfig] = None
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    gedi: GediConfig = field(default_factory=GediConfig)
    circuit: CircuitConfig = field(default_factory=CircuitConfig)
    source: str = field(default="", metadata={"internal": True})

    def to_dict(self) -> dict:
        data = dataclasses.asdict(self)
        data.pop("source", None)
        return data


# ----------------------------------------------------------------------------- validation
def _type_name(expected) -> str:
    origin = typing.get_origin(expected)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(expected) if a is not type(None)) + " or null"
    if dataclasses.is_dataclass(expected):
        return "a mapping"
    return getattr(expected, "__name__", str(expected))


_DECIMAL_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def _convert(value, expected, key: str, path: str):
    origin = typing.get_origin(expected)
    if origin in (typing.Union, types.UnionType):
        arguments = typing.get_args(expected)
        if value is None and type(None) in arguments:
            return None
        for argument in arguments:
            if argument is type(None):
                continue
            try:
                return _convert(value, argument, key, path)
            except ConfigError:
                continue
        raise ConfigError(f"{key}: expected {_type_name(expected)}, got {value!r}", path)
    if dataclasses.is_dataclass(expected):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}", path)
        return _build(expected, value, path, key + ".")
    if expected is bool:
        if isinstance(value, bool):
            return value
    elif expected is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif expected is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        # PyYAML follows YAML 1.1, which reads exponents without a dot ("1e-4") as strings.
        if isinstance(value, str) and _DECIMAL_NUMBER.fullmatch(value.strip()):
            return float(value)
    elif expected is str:
        if isinstance(value, str):
            return value
    elif expected in (list, dict) or typing.get_origin(expected) in (list, dict):
        if isinstance(value, typing.get_origin(expected) or expected):
            return value
    raise ConfigError(f"{key}: expected {_type_name(expected)}, got {value!r}", path)


def _build(cls, data: dict, path: str, prefix: str = ""):
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls) if not f.metadata.get("internal")}
    for key in data:
        if key not in known:
            raise ConfigError(f"unknown key {prefix}{key} (valid keys: {', '.join(sorted(known))})", path)
    values = {key: _convert(value, hints[key], prefix + key, path) for key, value in data.items()}
    return cls(**values)


def _check(config: TaskConfig, path: str) -> None:
    if config.train.mode not in TRAINING_MODES:
        raise ConfigError(f"train.mode: unknown mode {config.train.mode!r} "
                          f"(choose from {', '.join(TRAINING_MODES)})", path)
    if config.gedi.method not in SELF_SUPERVISED_METHODS:
        raise ConfigError(f"gedi.method: unknown method {config.gedi.method!r} "
                          f"(choose from {', '.join(SELF_SUPERVISED_METHODS)})", path)
    positive = {"train.epochs": config.train.epochs, "train.batch_size": config.train.batch_size,
                "train.eval_batch_size": config.train.eval_batch_size, "train.eval_every": config.train.eval_every,
                "gedi.sgld.steps": config.gedi.sgld.steps,
                "gedi.sgld.buffer_size": config.gedi.sgld.buffer_size}
    for key, value in positive.items():
        if value < 1:
            raise ConfigError(f"{key}: must be at least 1, got {value}", path)
    for key, value in (("train.concept_supervision", config.train.concept_supervision),
                       ("gedi.sgld.reinit_prob", config.gedi.sgld.reinit_prob)):
        if not 0.0 <= value <= 1.0:
            raise ConfigError(f"{key}: must be between 0 and 1, got {value}", path)
    from .data.augment import AUGMENT_NAMES, build_augment

    for key, section in (("train", config.train), ("gedi", config.gedi)):
        if section.augment not in AUGMENT_NAMES:
            raise ConfigError(f"{key}.augment: unknown augmentation {section.augment!r} "
                              f"(choose from {', '.join(AUGMENT_NAMES)})", path)
        try:
            build_augment(section.augment, **section.augment_options)
        except (TypeError, ValueError) as error:
            raise ConfigError(f"{key}.augment_options: {error}", path) from None
    if config.train.lr_schedule not in ("constant", "cosine"):
        raise ConfigError(f"train.lr_schedule: expected constant or cosine, got {config.train.lr_schedule!r}", path)
    if config.train.lr <= 0:
        raise ConfigError(f"train.lr: must be positive, got {config.train.lr}", path)
    if config.circuit.compile not in (True, False, "auto"):
        raise ConfigError(f"circuit.compile: expected true, false or auto, got {config.circuit.compile!r}", path)
    for name, value in (config.logic.params.items() if config.logic else ()):
        if not isinstance(value, int) or isinstance(value, bool):
            raise ConfigError(f"logic.params.{name}: expected an integer, got {value!r}", path)
    for key in ("train_examples", "test_examples"):
        value = getattr(config.data, key)
        if value is not None and value < 1:
            raise ConfigError(f"data.{key}: must be at least 1, got {value}", path)


def parse_overrides(overrides: list[str] | None) -> list[tuple[str, object]]:
    """`key=value` strings -> (key, YAML-parsed value)."""
    parsed = []
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key=value")
        key, text = item.split("=", 1)
        key = key.strip()
        if not key:
            raise ConfigError(f"--set {item!r}: empty key")
        try:
            value = yaml.safe_load(text) if text.strip() else ""
        except yaml.YAMLError:
            value = text
        parsed.append((key, value))
    return parsed


def apply_overrides(data: dict, overrides: list[str] | None) -> dict:
    top_level = {f.name for f in dataclasses.fields(TaskConfig)}
    for key, value in parse_overrides(overrides):
        parts = key.split(".")
        if len(parts) == 1 and parts[0] not in top_level:
            # A bare name sets a parameter of the logic file, e.g. --set N=4.
            parts = ["logic", "params", parts[0]]
        node = data
        for part in parts[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"--set {key}: {part} is not a section")
            node = child
        node[parts[-1]] = value
    return data


def load_config(path: str | Path, overrides: list[str] | None = None) -> TaskConfig:
    """Read a task file, apply overrides, validate; relative logic paths resolve against the project."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("task file not found", str(path)) from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"cannot read the task file: {error}", str(path)) from None
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(error, "problem", None) or "invalid YAML"
        raise ConfigError(f"invalid YAML: {problem}", str(path), line) from None
    if not isinstance(data, dict):
        raise ConfigError("a task file must be a mapping of sections", str(path))
    return config_from_dict(apply_overrides(data, overrides), str(path))


def config_from_dict(data: dict, source: str = "<config>") -> TaskConfig:
    config = _build(TaskConfig, data, source)
    config.source = source
    # Modes that imply a setting resolve it here, so config.yaml shows what actually ran.
    if config.train.mode == "sl+concepts" and config.train.concept_supervision == 0.0:
        config.train.concept_supervision = 0.1
    if config.train.mode == "sl+swav":
        config.gedi.method = "swav"
    if config.logic is not None:
        config.logic.file = str(resolve_logic_path(config.logic.file, source))
    _check(config, source)
    return config


def resolve_logic_path(file: str, source: str) -> Path:
    """Logic paths in task files are relative to the task file's project (its parent's parent)
    when not found relative to the working directory."""
    candidate = Path(file)
    if candidate.is_absolute() or candidate.exists():
        return candidate
    for base in (Path(source).parent, Path(source).parent.parent):
        if (base / file).exists():
            return base / file
    return candidate


def save_config(config: TaskConfig, path: Path) -> None:
    path.write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
