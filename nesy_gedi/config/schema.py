"""The task configuration's schema: one dataclass per section of a task file, and the table
of what each training mode reads.

Every field is typed and has its default here; `nesy_gedi.config.validate` checks a value
against its field's type and decides what each value may be, `nesy_gedi.config.load` reads
a task file into these classes.

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
    replace about 80 lines of type conversion; the value rules in `validate` stay either way.
"""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field

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
    # exponential moving average of the weights (e.g. 0.999 per step); evaluation and the saved
    # model use the average (None: off)
    ema_decay: typing.Optional[float] = None
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


# Keys that moved, and their names now (a run's stored config is upgraded on reading).
MOVED_KEYS = {"train.map_epochs": "map.epochs", "train.map_lr": "map.lr", "train.map_balance": "map.balance",
              "train.map_search": "map.search"}


def _within(key: str, entry: str) -> bool:
    """Whether `key` is `entry` or a key of the section `entry` (`gedi.sgld.steps` within `gedi`)."""
    return key == entry or key.startswith(entry + ".")


# ----------------------------------------------------------------------------- training modes
# Keys that only some training modes read (a section stands for every key in it; the longest
# matching entry decides). Every other key is read by every mode.
MODE_KEYS = ("gedi", "gedi.pretrain_epochs", "train.entropy_weight")


@dataclass(frozen=True)
class TrainingMode:
    """One `train.mode`: the entries of MODE_KEYS it reads, and the settings it implies."""
    name: str
    reads: tuple = ()
    sets: dict = field(default_factory=dict)  # settings the mode fixes; another value given is refused
    defaults: dict = field(default_factory=dict)  # settings it fills in where they keep the schema default

    @property
    def self_supervised(self) -> bool:
        """A self-supervised objective (gedi.method) trains the backbone too."""
        return "gedi" in self.reads

    @property
    def pretrains_first(self) -> bool:
        """The objective trains alone for gedi.pretrain_epochs, then the semantic loss alone."""
        return "gedi.pretrain_epochs" in self.reads

    @property
    def entropy(self) -> bool:
        """The concept-entropy regulariser (train.entropy_weight) joins the semantic loss."""
        return "train.entropy_weight" in self.reads

    def reads_key(self, key: str) -> bool:
        """Whether this mode reads `key` (`gedi.sgld.steps`, `train.lr`, ...)."""
        governing = [entry for entry in MODE_KEYS if _within(key, entry)]
        return not governing or max(governing, key=len) in self.reads


# What each mode reads, the one place that interprets train.mode (see nesy_gedi.train).
MODES = {mode.name: mode for mode in (
    TrainingMode("sl"),
    TrainingMode("sl+gedi", reads=("gedi",)),
    TrainingMode("gedi->sl", reads=("gedi", "gedi.pretrain_epochs")),
    TrainingMode("sl+entropy", reads=("train.entropy_weight",)),
    TrainingMode("sl+swav", reads=("gedi",), sets={"gedi.method": "swav"}),
    TrainingMode("sl+concepts", defaults={"train.concept_supervision": 0.1}),
)}
TRAINING_MODES = tuple(MODES)
# The task-file section of settings that only some modes read: `modes: {sl+gedi: {gedi: ...}}`
# adds its entry for the chosen mode (nesy_gedi.config.load), so one file serves every mode.
MODES_SECTION = "modes"
PRETRAIN_MODE = "pretrain"  # the modes: entry of `nesy-gedi pretrain`, which reads the whole gedi section
SELF_SUPERVISED_MODES = tuple(name for name, mode in MODES.items() if mode.self_supervised)

PRETRAIN_IGNORES = ("gedi.pretrain_epochs", "train.entropy_weight")  # mode keys `pretrain` never reads
VALUE_DICTS = ("params", "options", "augment_options")  # dict-valued keys (one value, not a section)
# The gedi keys a self-supervised method never reads (its objective lacks the term).
_SAMPLER_KEYS = ("gedi.generative", "gedi.energy_magnitude", "gedi.sgld")
METHOD_IGNORES = {
    "gedi": ("gedi.swav_temperature", "gedi.swav_epsilon"),
    "no-gen": _SAMPLER_KEYS + ("gedi.swav_temperature", "gedi.swav_epsilon"),
    "jem": ("gedi.invariance", "gedi.prior", "gedi.swav_temperature", "gedi.swav_epsilon"),
    "swav": _SAMPLER_KEYS,
    "barlow": _SAMPLER_KEYS + ("gedi.swav_temperature", "gedi.swav_epsilon"),
}


def keys_read(values: dict, *, pretrain: bool) -> dict:
    """A config as a dict (`TaskConfig.to_dict()`) without the keys its run never reads: those of
    other training modes (a `train` run; a pretrain run reads the gedi section, not the modes'
    keys) and the gedi keys its `gedi.method` lacks. Two configs that agree here train the same
    run, whatever the defaults of the ignored keys became since."""
    mode = MODES.get(values.get("train", {}).get("mode"))
    method = values.get("gedi", {}).get("method")
    ignored = METHOD_IGNORES.get(method, ())

    def reads(key: str) -> bool:
        if any(_within(key, entry) for entry in ignored):
            return False
        if pretrain:
            return not any(_within(key, entry) for entry in PRETRAIN_IGNORES)
        return mode is None or mode.reads_key(key)

    def kept(section: dict, prefix: str) -> dict:
        out = {}
        for key, value in section.items():
            name = f"{prefix}{key}"
            if reads(name):
                nested = isinstance(value, dict) and key not in VALUE_DICTS
                out[key] = kept(value, name + ".") if nested else value
        return out

    return kept(values, "")
