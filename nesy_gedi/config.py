"""Task configuration: YAML files validated into typed dataclasses, with `--set key=value`.

Every section is a dataclass. Loading checks every key and type against it (`_convert`)
and then every value (`_check`: ranges, names, options; the one place where what a value
may be is decided), so a bad task file fails at load time, never later in a traceback.
Every error is a one-line `ConfigError` naming the file, the line where known, and the
key. Bare `--set NAME=value` keys that are not config keys set parameters of the logic
file (e.g. `--set N=4`).

Task files and `--set` values are untrusted input, read with `_TaskLoader` (a
`yaml.SafeLoader`) that refuses, with the file and line:
  * anchors and aliases: an alias bomb ("billion laughs") is a few lines that expand
    exponentially, and a recursive alias never ends, in whatever walks the value later;
  * merge keys (`<<`) and duplicate keys (YAML would silently keep the last one);
  * nesting deeper than `MAX_NESTING`, integers longer than `MAX_INT_DIGITS` and files
    larger than `MAX_TASK_FILE_BYTES`.
YAML timestamps stay strings (`name: 2024-01-31` is a name, not a date).

Why hand-written dataclasses and not pydantic (evaluated with pydantic 2.13):
  * messages: a pydantic `ValidationError` is several lines, one entry per union branch
    (`circuit.compile: maybe` gives `compile.bool` and `compile.literal['auto']` errors)
    plus a URL, and it cannot know YAML lines; the key -> line map and a formatter stay;
  * coercion: lax mode accepts `epochs: "3"`, `epochs: 3.0`, `epochs: true` (as 1),
    `progress: "yes"` and `compile: "yes"`; strict mode refuses YAML 1.1's string
    `1e-4` for a float. Either way each number needs a custom validator, i.e. the
    hand-written converter comes back; unknown keys need `extra="forbid"` on every class;
  * the rest of the code needs the dataclass API (`config.train.lr`, `to_dict()`,
    `dataclasses.asdict`, `config.source`), which pydantic dataclasses keep, but it would
    be a new dependency (neither in pyproject.toml nor in the project's environment) to
    replace about 80 lines of type conversion; the value rules in `_check` stay either way.
"""
from __future__ import annotations

import dataclasses
import inspect
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import torch
import yaml

from .compiler import VTREE_TYPES
from .data.augment import AUGMENT_NAMES, build_augment
from .data.images import DATASET_NAMES
from .errors import ConfigError
from .models import backbones
from .naming import NAMING_MODES

TRAINING_MODES = ("sl", "sl+gedi", "gedi->sl", "sl+entropy", "sl+swav", "sl+concepts")
SELF_SUPERVISED_METHODS = ("gedi", "no-gen", "jem", "swav", "barlow")
TEMPERATURE_SCOPES = ("shared", "posterior")  # gedi.temperature_scope: see nesy_gedi.selfsup


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
    dataset: str = "mnist"  # mnist | fashion_mnist | ... | folder (data.path: an ImageFolder) | arrays (data.path: .npz)
    root: typing.Optional[str] = None
    path: typing.Optional[str] = None  # the image folder or .npz file of `folder` / `arrays`
    classes: typing.Optional[list] = None  # data-set class (index or name) of each concept value, in domain order
    train_examples: typing.Optional[int] = None  # None: every image used once per epoch
    test_examples: typing.Optional[int] = None
    val_examples: typing.Optional[int] = None  # examples held out of the training images for validation
    train_support: typing.Optional[SupportConfig] = None
    ood_dataset: typing.Optional[str] = None  # for GEDI's OOD evaluation, e.g. fashion_mnist
    toy_samples: int = 2000
    toy_noise: float = 0.08


@dataclass
class ModelConfig:
    backbone: str = "mnist_net"
    num_clusters: int = 10
    init: typing.Optional[str] = None  # a pretrain run directory whose backbone starts training
    pretrain: typing.Optional[str] = None  # a pretrain task file run (or reused) before training starts
    pretrain_overrides: list = field(default_factory=list)  # --set overrides of that pretrain task
    pretrain_dir: typing.Optional[str] = None  # where model.pretrain's runs are kept (None: pretrained/ beside the run)
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
    batch_fraction: float = 1.0  # negatives for ceil(fraction * batch) inputs, not the whole batch
    short_steps: typing.Optional[int] = None  # SGLD steps of the calls between long ones (None: always `steps`)
    long_every: int = 1  # every long_every-th sampler call runs `steps`, the others short_steps


@dataclass
class GediConfig:
    method: str = "gedi"  # gedi | no-gen | jem | swav | barlow
    generative: float = 1.0
    invariance: float = 1.0
    prior: float = 1.0
    # weight of mean(E_data^2 + E_neg^2) beside the generative term: contrastive divergence alone
    # is unbounded (the energies can run off to -1e7 within an epoch); no-gen has no energy term
    energy_magnitude: float = 0.1
    temperature: float = 1.0  # T of p(y|x) = softmax(f(x) / T) and, in scope shared, of E(x) = -T logsumexp(f(x) / T)
    temperature_scope: str = "shared"  # shared: energy and posterior use T (GEDI) | posterior: T only in p(y|x), E = -logsumexp f
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
    concept_labels: typing.Optional[int] = None  # exactly K labelled training images of each concept value
    keep_best: bool = False  # also keep best.pt: the checkpoint with the best validation label accuracy
    tensorboard: bool = False  # write TensorBoard event files into the run directory
    entropy_weight: float = 1.0  # for sl+entropy
    max_nonfinite_recoveries: int = 3
    max_rollbacks: int = 3  # diverged or collapsed epochs retried at half the learning rate; one more ends the run
    max_grad_norm: typing.Optional[float] = None  # clip the global gradient norm (None: off)
    progress: bool = True
    num_threads: typing.Optional[int] = None  # torch CPU threads; None keeps torch's default


@dataclass
class MapConfig:
    """How a pretrained clustering's clusters become concept values (nesy_gedi.naming)."""
    epochs: int = 0  # first epochs: only the cluster -> value map trains, on the frozen model.init backbone
    lr: float = 0.05  # learning rate of that map (it has only values x clusters entries per domain)
    balance: float = 0.0  # weight of a prior that the map gives every value an equal share of clusters
    search: bool = True  # start the map at the naming that explains the training labels best
    mode: str = "auto"  # one-to-one | many-to-one (more clusters than values) | auto
    noise: float = 0.05  # the search's chance that an image's cluster is not its named value
    restarts: int = 8  # EM + local search restarts (where the namings are too many to score all)


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
    map: MapConfig = field(default_factory=MapConfig)
    gedi: GediConfig = field(default_factory=GediConfig)
    circuit: CircuitConfig = field(default_factory=CircuitConfig)
    source: str = field(default="", metadata={"internal": True})

    def to_dict(self) -> dict:
        data = dataclasses.asdict(self)
        data.pop("source", None)
        return data


# ----------------------------------------------------------------------------- reading YAML
MAX_TASK_FILE_BYTES = 1 << 20  # task files are a few KiB; anything this large is not one
MAX_NESTING = 20  # mappings and lists inside each other (a task file needs about 6)
MAX_INT_DIGITS = 40  # longer integers are not counts or seeds (and Python refuses > 4300 digits)
_MERGE_TAG = "tag:yaml.org,2002:merge"


class _TaskLoader(yaml.SafeLoader):
    """A `yaml.SafeLoader` for untrusted text (see the module docstring).

    `fail(message, mark)` makes the `ConfigError` of a refusal: it knows whether the text is
    a task file (file and line) or a `--set` value.
    """

    def __init__(self, text: str, fail: typing.Callable[[str, typing.Any], ConfigError]):
        super().__init__(text)
        self._fail = fail
        self._nesting = 0

    def fetch_flow_collection_start(self, TokenClass):
        # Bound flow nesting ([[[...) while scanning: the scanner looks ahead over every
        # open bracket for simple keys, in time quadratic in their number.
        super().fetch_flow_collection_start(TokenClass)
        if self.flow_level > MAX_NESTING:
            raise self._fail(f"nested deeper than {MAX_NESTING} levels", self.get_mark())

    def compose_node(self, parent, index):
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            raise self._fail(f"YAML alias *{event.anchor} is not allowed (anchors and aliases can expand "
                             "without bound; write the value out)", event.start_mark)
        if getattr(event, "anchor", None) is not None:
            raise self._fail(f"YAML anchor &{event.anchor} is not allowed (anchors and aliases can expand "
                             "without bound; write the value out)", event.start_mark)
        self._nesting += 1
        try:
            if self._nesting > MAX_NESTING:
                raise self._fail(f"nested deeper than {MAX_NESTING} levels", event.start_mark)
            return super().compose_node(parent, index)
        finally:
            self._nesting -= 1

    def construct_object(self, node, deep=False):
        try:
            return super().construct_object(node, deep=deep)
        except (ValueError, TypeError, ArithmeticError) as error:  # e.g. `!!float abc`
            raise self._fail(f"cannot read the value {_show(node.value)}: {_first_line(error)}",
                             node.start_mark) from None

    def construct_mapping(self, node, deep=False):
        # _walk refuses duplicate spellings with the key's full name; this also catches
        # keys that are equal once read (`1` and `0x1`) and keys that cannot be keys.
        if isinstance(node, yaml.MappingNode):
            seen = {}
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True)
                try:
                    duplicate = key in seen
                except TypeError:
                    raise self._fail(f"a key must be a plain value, not {_describe(key)}",
                                     key_node.start_mark) from None
                if duplicate:
                    raise self._fail(f"duplicate key {_show(key)} (first given on line {seen[key]})",
                                     key_node.start_mark)
                seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)

    def construct_yaml_int(self, node):
        if len(node.value) > MAX_INT_DIGITS:
            raise self._fail(f"integer {node.value[:12]}... has more than {MAX_INT_DIGITS} digits", node.start_mark)
        return super().construct_yaml_int(node)


_TaskLoader.add_constructor("tag:yaml.org,2002:int", _TaskLoader.construct_yaml_int)
_TaskLoader.add_constructor("tag:yaml.org,2002:timestamp", yaml.SafeLoader.construct_yaml_str)


def _walk(node, key: str, lines: dict, fail) -> None:
    """Record the line of every key (`train.lr`, `data.classes[2]`) and refuse merge keys,
    non-scalar keys and duplicate keys, naming the key in full."""
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            where = key or "the top level"
            if key_node.tag == _MERGE_TAG:
                raise fail(f"{where}: YAML merge keys (<<) are not allowed", key_node.start_mark)
            if not isinstance(key_node, yaml.ScalarNode):
                kind = "list" if isinstance(key_node, yaml.SequenceNode) else "mapping"
                raise fail(f"{where}: a key must be a plain value, not a {kind}", key_node.start_mark)
            child = f"{key}.{key_node.value}" if key else key_node.value
            line = key_node.start_mark.line + 1
            if key_node.value in seen:
                raise fail(f"duplicate key {child} (first given on line {seen[key_node.value]})",
                           key_node.start_mark)
            seen[key_node.value] = line
            lines.setdefault(child, line)
            _walk(value_node, child, lines, fail)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            child = f"{key}[{index}]"
            lines.setdefault(child, item.start_mark.line + 1)
            _walk(item, child, lines, fail)


def _parse_yaml(text: str, fail) -> tuple[object, dict[str, int]]:
    """(value, line of each key) of one YAML document; refusals raise `fail(...)`, syntax
    errors `yaml.YAMLError`."""
    loader = _TaskLoader(text, fail)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, {}
        lines: dict[str, int] = {}
        _walk(node, "", lines, fail)
        return loader.construct_document(node), lines
    finally:
        loader.dispose()


def _yaml_problem(error: yaml.YAMLError, text: str) -> tuple[str, int | None]:
    """A one-line description of a YAML syntax error and its line."""
    if isinstance(error, yaml.reader.ReaderError):
        character = error.character
        shown = f"#x{character:04x}" if isinstance(character, int) else repr(character)
        return f"invalid YAML: character {shown} is not allowed ({error.reason})", \
            text.count("\n", 0, max(error.position, 0)) + 1
    mark = getattr(error, "problem_mark", None) or getattr(error, "context_mark", None)
    problem, context = getattr(error, "problem", None), getattr(error, "context", None)
    text = f"{problem} ({context})" if problem and context else problem or context or "not YAML"
    return f"invalid YAML: {text}", (mark.line + 1 if mark is not None else None)


def _read_task_file(path: Path) -> str:
    try:
        with path.open("rb") as stream:
            raw = stream.read(MAX_TASK_FILE_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError("task file not found", str(path)) from None
    except (OSError, ValueError) as error:  # a folder, no permission, a NUL in the path, ...
        raise ConfigError(f"cannot read the task file: {getattr(error, 'strerror', None) or error}",
                          str(path)) from None
    if len(raw) > MAX_TASK_FILE_BYTES:
        raise ConfigError(f"larger than {MAX_TASK_FILE_BYTES >> 10} KiB: not a task file", str(path))
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ConfigError(f"not UTF-8 text (byte 0x{raw[error.start]:02x})", str(path),
                          raw.count(b"\n", 0, error.start) + 1) from None


# ----------------------------------------------------------------------------- where errors point
def _show(value, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _describe(value) -> str:
    kinds = {list: "a list", tuple: "a list", dict: "a mapping", str: "a string", int: "a number",
             float: "a number", bool: "a boolean"}
    return kinds.get(type(value), type(value).__name__)


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


@dataclass(frozen=True)
class _Where:
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


def _convert(value, expected, key: str, where: _Where):
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
                raise where.error(key, f"expected {_type_name(expected)}, got {_show(value)}") from None
        for argument in options:
            try:
                return _convert(value, argument, key, where)
            except ConfigError:
                continue
        raise where.error(key, f"expected {_type_name(expected)}, got {_show(value)}")
    if dataclasses.is_dataclass(expected):
        if not isinstance(value, dict):
            raise where.error(key, f"expected a mapping, got {_show(value)}")
        return _build(expected, value, where, key + ".")
    if expected is bool:
        if isinstance(value, bool):
            return value
    elif expected is int:
        if isinstance(value, int) and not isinstance(value, bool):
            if not -_INT64 <= value < _INT64:
                raise where.error(key, f"{_show(value)} does not fit in 64 bits")
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
                raise where.error(key, f"must be a finite number, got {_show(value)}")
            return number
    elif expected is str:
        if isinstance(value, str):
            if "\x00" in value:
                raise where.error(key, f"must not contain a NUL character, got {_show(value)}")
            return value
    elif expected is dict or origin is dict:
        if isinstance(value, dict):
            for name in value:
                if not isinstance(name, str):
                    raise where.error(key, f"keys must be strings, got {_show(name)}")
            return value
    elif expected is list or origin is list:
        if isinstance(value, list):
            return value
    raise where.error(key, f"expected {_type_name(expected)}, got {_show(value)}")


_PLAIN_KEY = re.compile(r"[A-Za-z0-9_.\-]+")


def _build(cls, data: dict, where: _Where, prefix: str = ""):
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls) if not f.metadata.get("internal")}
    for key in data:
        if not isinstance(key, str):
            raise where.error(prefix[:-1], f"keys must be strings, got {_show(key)}")
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

    def admits(self, value) -> bool:
        if value < self.low or (self.open_low and value == self.low):
            return False
        return self.high is None or value <= self.high

    def describe(self) -> str:
        if self.high is not None:
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


def _choose(where: _Where, key: str, value, choices, what: str) -> None:
    if value not in choices:
        raise where.error(key, f"unknown {what} {_show(value)} (choose from {', '.join(map(str, choices))})")


def _not_empty(where: _Where, key: str, value: str | None, what: str = "null for none") -> None:
    if value is not None and not value.strip():
        raise where.error(key, f"must not be empty ({what})")


def _option_value(where: _Where, key: str, value, default, fixed_length: bool):
    """`value` of a keyword option whose default is `default`, of the same type (decimal
    strings become floats); lists for tuple defaults."""
    if default is inspect.Parameter.empty or default is None:
        return value
    if isinstance(default, (tuple, list)):
        if not isinstance(value, list) or not value or (fixed_length and len(value) != len(default)):
            size = f"{len(default)} values" if fixed_length else "values"
            raise where.error(key, f"expected a list of {size} like {list(default)}, got {_show(value)}")
        return [_option_value(where, f"{key}[{i}]", item, default[0] if default else None, fixed_length)
                for i, item in enumerate(value)]
    return _convert(value, type(default), key, where)


def _check_options(where: _Where, key: str, options: dict, function, skip: int, exclude=(),
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


def _check_model(model: ModelConfig, where: _Where) -> None:
    _choose(where, "model.backbone", model.backbone, backbones.BACKBONE_NAMES, "backbone")
    for key in ("init", "pretrain", "pretrain_dir"):
        _not_empty(where, f"model.{key}", getattr(model, key))
    for index, item in enumerate(model.pretrain_overrides):
        key = f"model.pretrain_overrides[{index}]"
        if not isinstance(item, str):
            raise where.error(key, f"expected a key=value string, got {_show(item)}")
        try:
            _parse_override(item, f"{key} {_show(item)}")
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
        raise where.error("model.options", _first_line(error)) from None


def _check_augment(where: _Where, key: str, section) -> None:
    _choose(where, f"{key}.augment", section.augment, AUGMENT_NAMES, "augmentation")
    options_key = f"{key}.augment_options"
    try:
        function = build_augment(section.augment)
        build_augment(section.augment, **section.augment_options)  # its own message for unknown options
    except (TypeError, ValueError) as error:
        raise where.error(options_key, _first_line(error)) from None
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
        raise where.error(options_key, _first_line(error)) from None


def _check_data(data: DataConfig, where: _Where) -> None:
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
                raise where.error(key, f"expected a class index or name, got {_show(value)}")
            if isinstance(value, int) and not 0 <= value < _INT64:
                raise where.error(key, f"a class index must be a non-negative 64-bit integer, got {_show(value)}")
            if isinstance(value, str) and (not value.strip() or "\x00" in value):
                raise where.error(key, f"not a class name: {_show(value)}")
            if value in seen:
                raise where.error(key, f"class {_show(value)} is listed twice")
            seen.add(value)
    support = data.train_support
    if support is not None and support.tuples is not None:
        if not support.tuples:
            raise where.error("data.train_support.tuples", "must list at least one tuple (null for no list)")
        width = None
        for index, row in enumerate(support.tuples):
            key = f"data.train_support.tuples[{index}]"
            if not isinstance(row, list) or not row:
                raise where.error(key, f"expected a list of concept values, got {_show(row)}")
            for position, value in enumerate(row):
                if isinstance(value, bool) or not isinstance(value, int) or not -_INT64 <= value < _INT64:
                    raise where.error(f"{key}[{position}]", f"expected an integer concept value, got {_show(value)}")
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
        raise where.error("data.ood_dataset", f"unknown data set {_show(ood)} (choose from "
                                              f"{', '.join(DATASET_NAMES)}, fake:CxHxW[:classes[:samples]] or null)")


def _check(config: TaskConfig, where: _Where) -> None:
    """Every value of a type-checked configuration; the one place that decides what each may be."""
    if not _TASK_NAME.fullmatch(config.name):
        raise where.error("name", f"{_show(config.name)} cannot name a run folder: use letters, digits, '.', "
                                  "'_' and '-' (at most 128, not starting with '.' or '-')")
    _choose(where, "train.mode", config.train.mode, TRAINING_MODES, "mode")
    _choose(where, "gedi.method", config.gedi.method, SELF_SUPERVISED_METHODS, "method")
    _choose(where, "gedi.temperature_scope", config.gedi.temperature_scope, TEMPERATURE_SCOPES, "temperature scope")
    for key, rule in _RANGES.items():
        value = _value_at(config, key)
        if value is not None and not rule.admits(value):
            raise where.error(key, f"{rule.describe()}, got {_show(value)}")
    _choose(where, "map.mode", config.map.mode, NAMING_MODES, "naming mode")
    _check_keys_read(config, where)
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
                raise where.error(key, f"expected an integer, got {_show(value)}")
            if not -_INT64 <= value < _INT64:
                raise where.error(key, f"{_show(value)} does not fit in 64 bits")
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
            raise where.error("train.device", f"unknown device {_show(config.train.device)} "
                                              "(use auto, cpu, cuda or cuda:N)") from None
    if config.circuit.compile not in (True, False, "auto"):
        raise where.error("circuit.compile", f"expected true, false or auto, got {_show(config.circuit.compile)}")


# Settings only some training modes read (train runs); a key set for a mode that ignores it
# would change nothing, so it is refused.
SELF_SUPERVISED_MODES = ("sl+gedi", "gedi->sl", "sl+swav")
_READ_BY_MODES = {
    "gedi": SELF_SUPERVISED_MODES,
    "gedi.pretrain_epochs": ("gedi->sl",),
    "train.entropy_weight": ("sl+entropy",),
}
# Moved keys and their new names.
MOVED_KEYS = {"train.map_epochs": "map.epochs", "train.map_lr": "map.lr", "train.map_balance": "map.balance",
              "train.map_search": "map.search"}


def upgrade_run_config(data: dict) -> dict:
    """A run's stored config.yaml as this version reads it: configs written before the map
    section had its keys in `train` (and no naming search unless train.map_search)."""
    train = data.get("train")
    if isinstance(train, dict) and any(key.split(".", 1)[1] in train for key in MOVED_KEYS):
        section = data.setdefault("map", {})
        if isinstance(section, dict):
            for old, new in MOVED_KEYS.items():
                name = old.split(".", 1)[1]
                if name in train:
                    section[new.split(".", 1)[1]] = train.pop(name)
            section.setdefault("search", False)
            if not section.get("epochs"):  # no map phase ran: its keys changed nothing
                data["map"] = {k: v for k, v in section.items() if k not in ("epochs", "lr", "balance", "search")}
    return data


def _modes(modes: tuple) -> str:
    return " and ".join(", ".join(modes).rsplit(", ", 1)) if len(modes) > 1 else modes[0]


def _check_keys_read(config: TaskConfig, where: _Where) -> None:
    """Refuse `--set` settings the run would ignore: keys of another training mode, and map
    keys without a map phase. (A task file may carry the settings of the variants its header
    lists, e.g. a gedi section for `--set train.mode=sl+gedi`, or a map section for
    `--set map.epochs=3`.)"""
    mode = config.train.mode
    if config.logic is not None:
        for changed in where.overridden:
            for key, modes in sorted(_READ_BY_MODES.items(), key=lambda item: -len(item[0])):
                if (changed == key or changed.startswith(key + ".")) and mode not in modes:
                    raise ConfigError(f"--set {changed}: train.mode {mode} does not read {key} (only "
                                      f"{_modes(modes)} do{'es' if len(modes) == 1 else ''}); set train.mode too",
                                      where.path)
    if config.map.epochs == 0:
        for field_ in dataclasses.fields(MapConfig):
            key = f"map.{field_.name}"
            if field_.name != "epochs" and any(key == changed or key.startswith(changed + ".")
                                               for changed in where.overridden):
                raise where.error(key, "is read by the map phase, which only map.epochs > 0 runs")
    elif config.logic is None:
        raise where.error("map.epochs", "the map phase names clusters for a train run's knowledge; "
                                        "this task has no logic section")


# ----------------------------------------------------------------------------- overrides
def _parse_override(item, label: str) -> tuple[str, object]:
    """`key=value` -> (key, YAML value); `label` names the item in errors."""
    if not isinstance(item, str) or "=" not in item:
        raise ConfigError(f"{label}: expected key=value")
    key, text = item.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"{label}: empty key")
    if not all(part.strip() for part in key.split(".")):
        raise ConfigError(f"{label}: empty part in the key {_show(key)}")
    if not text.strip():
        return key, ""

    def fail(message: str, mark) -> ConfigError:
        return ConfigError(f"{label}: {message}")

    try:
        value, _ = _parse_yaml(text, fail)
    except yaml.YAMLError:
        value = text  # not YAML (e.g. an unclosed bracket): the text as it is
    return key, value


def parse_overrides(overrides: list[str] | None) -> list[tuple[str, object]]:
    """`key=value` strings -> (key, YAML-parsed value), read as untrusted as task files."""
    return [_parse_override(item, f"--set {_show(item)}") for item in overrides or []]


def _apply(data: dict, parsed: list[tuple[str, object]]) -> tuple[str, ...]:
    """Apply parsed overrides to `data`; returns the full keys they set."""
    top_level = {f.name for f in dataclasses.fields(TaskConfig)}
    changed = []
    for key, value in parsed:
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
        changed.append(".".join(parts))
    return tuple(changed)


def apply_overrides(data: dict, overrides: list[str] | None) -> dict:
    _apply(data, parse_overrides(overrides))
    return data


# ----------------------------------------------------------------------------- loading
def load_config(path: str | Path, overrides: list[str] | None = None) -> TaskConfig:
    """Read a task file, apply overrides, validate; relative logic paths resolve against the project."""
    path = Path(path)
    source = str(path)
    text = _read_task_file(path)

    def fail(message: str, mark) -> ConfigError:
        return ConfigError(message, source, mark.line + 1 if mark is not None else None)

    try:
        data, lines = _parse_yaml(text, fail)
    except yaml.YAMLError as error:
        message, line = _yaml_problem(error, text)
        raise ConfigError(message, source, line) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"a task file must be a mapping of sections, not {_describe(data)}", source)
    changed = _apply(data, parse_overrides(overrides))
    return _config(data, _Where(source, lines, changed))


def config_from_dict(data: dict, source: str = "<config>") -> TaskConfig:
    return _config(data, _Where(source))


def _config(data: dict, where: _Where) -> TaskConfig:
    if not isinstance(data, dict):
        raise ConfigError(f"a configuration must be a mapping of sections, not {_describe(data)}", where.path)
    config = _build(TaskConfig, data, where)
    config.source = where.path
    # Modes that imply a setting resolve it here, so config.yaml shows what actually ran.
    if config.train.mode == "sl+concepts" and config.train.concept_supervision == 0.0:
        config.train.concept_supervision = 0.1
    if config.train.mode == "sl+swav":
        config.gedi.method = "swav"
    _check(config, where)
    if config.logic is not None:
        config.logic.file = str(resolve_logic_path(config.logic.file, where.path))
    return config


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except (OSError, ValueError):  # a name too long for the file system, ...
        return False


def resolve_logic_path(file: str, source: str) -> Path:
    """Logic paths in task files are relative to the task file's project (its parent's parent)
    when not found relative to the working directory."""
    candidate = Path(file)
    if candidate.is_absolute() or _exists(candidate):
        return candidate
    for base in (Path(source).parent, Path(source).parent.parent):
        if _exists(base / file):
            return base / file
    return candidate


def save_config(config: TaskConfig, path: Path) -> None:
    path.write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
