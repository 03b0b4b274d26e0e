"""Hostile and broken task files and --set overrides: nothing read from disk is trusted.

Every case must raise a one-line `ConfigError` that names the file (or the --set item)
and the key, quickly: the same case through the CLI exits with status 2 and one line
`nesy-gedi: error: ...`, never a traceback. A case is (id, task file text, --set
overrides, expected part of the message[, expected line]).
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from nesy_gedi import cli
from nesy_gedi.config import MAX_NESTING, MAX_TASK_FILE_BYTES, load_config
from nesy_gedi.config.reader import _TaskLoader
from nesy_gedi.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def _bomb(levels: int = 9, width: int = 10, indent: str = "      ") -> str:
    """A "billion laughs" list: each level repeats the previous one `width` times."""
    lines = [f"{indent}- &l0 [0, 1]"]
    for level in range(1, levels):
        lines.append(f"{indent}- &l{level} [" + ", ".join([f"*l{level - 1}"] * width) + "]")
    return "\n".join(lines) + "\n"


def _bomb_mapping(levels: int = 9, width: int = 10, indent: str = "    ") -> str:
    lines = [f"{indent}k0: &k0 [1, 1]"]
    for level in range(1, levels):
        lines.append(f"{indent}k{level}: &k{level} [" + ", ".join([f"*k{level - 1}"] * width) + "]")
    return "\n".join(lines) + "\n"


DEEP = "[" * 5000 + "]" * 5000
LOGIC = "logic:\n  file: logic/addition.logic\n"

# (id, task file text, overrides, expected message part, expected line or None)
CASES = [
    # ------------------------------------------------------------------ YAML structure
    ("alias-bomb-in-tuples", "name: x\ndata:\n  train_support:\n    tuples:\n" + _bomb(), [],
     "YAML anchor &l0 is not allowed", 5),
    ("alias-bomb-in-model-options", "name: x\nmodel:\n  options:\n" + _bomb_mapping(), [],
     "YAML anchor &k0 is not allowed", 4),
    ("alias-without-anchor", "name: *x\n", [], "YAML alias *x is not allowed", 1),
    ("unused-anchor", "name: &n x\n", [], "YAML anchor &n is not allowed", 1),
    ("merge-key", "train: {<<: {lr: 0.5}}\n", [], "merge keys (<<) are not allowed", 1),
    ("duplicate-key", "train:\n  lr: 0.1\n  lr: 0.2\n", [], "duplicate key train.lr (first given on line 2)", 3),
    ("duplicate-section", "train:\n  lr: 0.1\nmodel: {}\ntrain:\n  epochs: 2\n", [],
     "duplicate key train (first given on line 1)", 4),
    ("duplicate-flow-key", "model: {backbone: resnet_small, options: {width: 8, width: 16}}\n", [],
     "duplicate key model.options.width", 1),
    ("duplicate-equal-keys", "logic:\n  file: a.logic\n  params: {1: 2, 0x1: 3}\n", [],
     "duplicate key 1", 3),
    ("deep-nesting", f"name: x\nmodel:\n  options:\n    x: {DEEP}\n", [], f"nested deeper than {MAX_NESTING}", 4),
    ("huge-integer", "train:\n  seed: " + "9" * 5000 + "\n", [], "has more than 40 digits", 2),
    ("bad-explicit-float", "train: {lr: !!float abc}\n", [], "cannot read the value 'abc'", 1),
    ("impossible-date", "train: {lr: 2001-13-45}\n", [], "train.lr: expected float, got '2001-13-45'", 1),
    ("python-tag", "name: !!python/object/apply:os.system [echo hi]\n", [], "could not determine a constructor", 1),
    ("tab-indentation", "train:\n\tlr: 0.1\n", [], "invalid YAML", 2),
    ("nul-character", "name: a\x00b\n", [], "character #x0000 is not allowed", 1),
    ("bell-character", "train:\n  device: cpu\x07\n", [], "character #x0007 is not allowed", 2),
    ("two-documents", "name: a\n---\nname: b\n", [], "but found another document", 2),
    ("top-level-list", "- train\n- model\n", [], "a task file must be a mapping of sections, not a list", None),
    ("top-level-string", "just some text\n", [], "must be a mapping of sections, not a string", None),
    ("section-is-a-list", "train: [1, 2]\n", [], "train: expected a mapping, got [1, 2]", 1),
    ("section-is-null", "name: x\ntrain:\n", [], "train: expected a mapping, got None", 2),
    ("non-string-top-key", "1: x\n", [], "keys must be strings, got 1", None),
    ("non-string-section-key", "train: {1: 2}\n", [], "train: keys must be strings, got 1", 1),
    ("non-string-option-key", "model: {options: {1: 2}}\n", [], "model.options: keys must be strings, got 1", 1),
    ("list-as-key", "? [a, b]\n: 1\n", [], "a key must be a plain value, not a list", 1),
    ("homoglyph-key", "tr\u0430in: {lr: 0.1}\n", [], "unknown key 'tr\u0430in'", 1),
    ("newline-in-key", 'train: {"lr\\nepochs": 1}\n', [], "unknown key train.'lr\\nepochs'", 1),
    ("unknown-nested-key", "data: {train_support: {tuples: [[0, 1]], bogus: 1}}\n", [],
     "unknown key data.train_support.bogus", 1),
    ("list-where-number", "train: {epochs: []}\n", [], "train.epochs: expected int, got []", 1),
    ("float-where-int", "train: {epochs: 1.5}\n", [], "train.epochs: expected int, got 1.5", 1),
    # ------------------------------------------------------------------ numbers
    ("lr-nan", "train:\n  lr: .nan\n", [], "train.lr: must be a finite number, got nan", 2),
    ("lr-inf", "train:\n  lr: .inf\n", [], "train.lr: must be a finite number, got inf", 2),
    ("lr-exponent-overflow", "train:\n  lr: 1e999\n", [], "train.lr: must be a finite number, got '1e999'", 2),
    ("lr-zero", "train:\n  lr: 0\n", [], "train.lr: must be positive, got 0.0", 2),
    ("weight-decay-negative", "train:\n  weight_decay: -1\n", [], "train.weight_decay: must be at least 0", 2),
    ("seed-2-to-70", "train:\n  seed: 1180591620717411303424\n", [], "train.seed: 1180591620717411303424 does not fit", 2),
    ("seed-2-to-40", "train:\n  seed: 1099511627776\n", [], "train.seed: must be between 0 and 4294967295", 2),
    ("seed-negative", "train:\n  seed: -1\n", [], "train.seed: must be between 0 and 4294967295", 2),
    ("num-threads-negative", "train:\n  num_threads: -3\n", [], "train.num_threads: must be at least 1", 2),
    ("num-threads-zero", "train:\n  num_threads: 0\n", [], "null keeps torch's default", 2),
    ("max-nonfinite-recoveries", "train:\n  max_nonfinite_recoveries: -1\n", [],
     "train.max_nonfinite_recoveries: must be at least 0", 2),
    ("eval-batch-size-zero", "train:\n  eval_batch_size: 0\n", [], "train.eval_batch_size: must be at least 1", 2),
    ("concept-labels-negative", "train:\n  concept_labels: -1\n", [], "train.concept_labels: must be at least 0", 2),
    ("entropy-weight-negative", "train:\n  entropy_weight: -0.5\n", [], "train.entropy_weight: must be at least 0", 2),
    ("keep-best-string", "train:\n  keep_best: 'yes'\n", [], "train.keep_best: expected bool, got 'yes'", 2),
    ("tensorboard-number", "train:\n  tensorboard: 1\n", [], "train.tensorboard: expected bool, got 1", 2),
    ("num-clusters-zero", "model:\n  num_clusters: 0\n", [], "model.num_clusters: must be at least 1", 2),
    ("val-examples-zero", "data:\n  val_examples: 0\n", [], "data.val_examples: must be at least 1", 2),
    ("toy-samples-zero", "data:\n  toy_samples: 0\n", [], "data.toy_samples: must be at least 1", 2),
    ("toy-noise-negative", "data:\n  toy_noise: -0.1\n", [], "data.toy_noise: must be at least 0", 2),
    ("sgld-step-size-zero", "gedi:\n  sgld:\n    step_size: 0\n", [], "gedi.sgld.step_size: must be positive", 3),
    ("sgld-noise-negative", "gedi:\n  sgld:\n    noise_std: -0.01\n", [], "gedi.sgld.noise_std: must be at least 0", 3),
    ("sgld-low-above-high", "gedi:\n  sgld:\n    low: 1\n    high: -1\n", [], "gedi.sgld.low: needs low < high", 3),
    ("sgld-low-nan", "gedi:\n  sgld:\n    low: .nan\n", [], "gedi.sgld.low: must be a finite number", 3),
    ("sgld-reinit-above-one", "gedi:\n  sgld:\n    reinit_prob: 1.5\n", [], "must be between 0 and 1", 3),
    ("sgld-batch-fraction-zero", "gedi:\n  sgld:\n    batch_fraction: 0\n", [],
     "gedi.sgld.batch_fraction: must be between 0 and 1 (0 excluded)", 3),
    ("sgld-long-every-zero", "gedi:\n  sgld:\n    long_every: 0\n", [], "gedi.sgld.long_every: must be at least 1", 3),
    ("sgld-short-steps-alone", "gedi:\n  sgld:\n    short_steps: 2\n", [],
     "gedi.sgld.short_steps: short_steps and long_every > 1 go together", 3),
    ("sgld-long-every-alone", "gedi:\n  sgld:\n    long_every: 4\n", [],
     "gedi.sgld.long_every: short_steps and long_every > 1 go together", 3),
    ("gedi-generative-negative", "gedi:\n  generative: -1\n", [], "gedi.generative: must be at least 0", 2),
    ("gedi-invariance-negative", "gedi:\n  invariance: -1\n", [], "gedi.invariance: must be at least 0", 2),
    ("gedi-prior-negative", "gedi:\n  prior: -1\n", [], "gedi.prior: must be at least 0", 2),
    ("gedi-energy-negative", "gedi:\n  energy_magnitude: -1\n", [], "gedi.energy_magnitude: must be at least 0", 2),
    ("gedi-weight-negative", "gedi:\n  weight: -1\n", [], "gedi.weight: must be at least 0", 2),
    ("gedi-temperature-zero", "gedi:\n  temperature: 0\n", [], "gedi.temperature: must be positive", 2),
    ("gedi-swav-epsilon-zero", "gedi:\n  swav_epsilon: 0\n", [], "gedi.swav_epsilon: must be positive", 2),
    ("gedi-pretrain-epochs", "gedi:\n  pretrain_epochs: -2\n", [], "gedi.pretrain_epochs: must be at least 0", 2),
    ("max-label-candidates", "circuit:\n  max_label_candidates: 0\n", [], "circuit.max_label_candidates", 2),
    # ------------------------------------------------------------------ names and choices
    ("backbone-bogus", "model:\n  backbone: bogus\n", [], "model.backbone: unknown backbone 'bogus'", 2),
    ("backbone-options-bogus", "model:\n  options: {bogus: 1}\n", [],
     "model.options.bogus: unknown option (valid options: channels, hidden)", 2),
    ("backbone-options-negative-width", "model:\n  backbone: resnet_small\n  options: {width: -3}\n", [],
     "model.options: Trying to create tensor with negative dimension", 3),
    ("backbone-options-bool-width", "model:\n  backbone: resnet_small\n  options: {width: true}\n", [],
     "model.options.width: expected int, got True", 3),
    ("backbone-options-huge-width", "model:\n  backbone: resnet_small\n  options: {width: 1180591620717411303424}\n",
     [], "model.options.width: 1180591620717411303424 does not fit in 64 bits", 3),
    ("backbone-options-activation", "model:\n  backbone: mlp\n  options: {activation: bogus}\n", [],
     "model.options: unknown activation 'bogus'", 3),
    ("backbone-options-one-hidden", "model:\n  options: {hidden: [120]}\n", [],
     "model.options: MNISTNet needs two positive conv widths", 2),
    ("backbone-options-num-outputs", "model:\n  options: {num_outputs: 3}\n", [],
     "model.options.num_outputs: unknown option", 2),
    ("augment-stroke-negative", "gedi:\n  augment_options: {stroke: -5}\n", [],
     "gedi.augment_options: digit_augment: stroke must be in [0, 1], got -5.0", 2),
    ("augment-scale-reversed", "train:\n  augment: digits\n  augment_options: {scale: [2, 1]}\n", [],
     "train.augment_options: digit_augment: scale must satisfy 0 < low <= high", 3),
    ("augment-crop-scale-short", "gedi:\n  augment: natural\n  augment_options: {crop_scale: [0.5]}\n", [],
     "gedi.augment_options.crop_scale: expected a list of 2 values", 3),
    ("augment-noise-string", "gedi:\n  augment: points\n  augment_options: {noise_std: abc}\n", [],
     "gedi.augment_options.noise_std: expected float, got 'abc'", 3),
    ("augment-bogus-option", "gedi:\n  augment_options: {bogus: 1}\n", [],
     "gedi.augment_options: augmentation 'digits' has no option(s) bogus", 2),
    ("augment-bogus-name", "train:\n  augment: blur\n", [], "train.augment: unknown augmentation 'blur'", 2),
    ("ood-dataset-bogus", "data:\n  ood_dataset: bogus\n", [], "data.ood_dataset: unknown data set 'bogus'", 2),
    ("dataset-empty", "data:\n  dataset: ''\n", [], "data.dataset: must not be empty", 2),
    ("tuples-with-bool", "data:\n  train_support:\n    tuples: [[true, 1]]\n", [],
     "data.train_support.tuples[0][0]: expected an integer concept value, got True", 3),
    ("tuples-not-lists", "data:\n  train_support:\n    tuples: [1, 2]\n", [],
     "data.train_support.tuples[0]: expected a list of concept values, got 1", 3),
    ("tuples-ragged", "data:\n  train_support:\n    tuples:\n      - [0, 1]\n      - [0]\n", [],
     "data.train_support.tuples[1]: has 1 values, the first tuple 2", 5),
    ("tuples-empty", "data:\n  train_support:\n    tuples: []\n", [], "must list at least one tuple", 3),
    ("tuples-string-value", "data:\n  train_support:\n    tuples: [[a, 1]]\n", [],
     "expected an integer concept value, got 'a'", 3),
    ("classes-bool", "data:\n  classes: [true, 1]\n", [], "data.classes[0]: expected a class index or name, got True", 2),
    ("classes-duplicate", "data:\n  classes:\n    - 3\n    - 3\n", [], "data.classes[1]: class 3 is listed twice", 4),
    ("classes-empty", "data:\n  classes: []\n", [], "data.classes: must list at least one class", 2),
    ("classes-negative", "data:\n  classes: [-1]\n", [], "data.classes[0]: a class index must be a non-negative", 2),
    ("classes-mapping", "data:\n  classes: {a: 1}\n", [], "data.classes: expected list or null, got {'a': 1}", 2),
    ("path-empty", "data:\n  path: ''\n", [], "data.path: must not be empty", 2),
    ("root-nul", 'data:\n  root: "a\\0b"\n', [], "data.root: must not contain a NUL character", 2),
    ("pretrain-number", "model:\n  pretrain: 5\n", [], "model.pretrain: expected str or null, got 5", 2),
    ("pretrain-empty", "model:\n  pretrain: ' '\n", [], "model.pretrain: must not be empty", 2),
    ("pretrain-overrides-not-key-value", "model:\n  pretrain_overrides: [abc]\n", [],
     "model.pretrain_overrides[0] 'abc': expected key=value", 2),
    ("pretrain-overrides-number", "model:\n  pretrain_overrides: [5]\n", [],
     "model.pretrain_overrides[0]: expected a key=value string, got 5", 2),
    ("pretrain-overrides-string", "model:\n  pretrain_overrides: train.lr=0.1\n", [],
     "model.pretrain_overrides: expected list, got 'train.lr=0.1'", 2),
    ("logic-file-missing", "logic:\n  params: {N: 2}\n", [], "logic.file: missing", 1),
    ("logic-param-bool", LOGIC + "  params: {N: true}\n", [], "logic.params.N: expected an integer, got True", 3),
    ("logic-param-float", LOGIC + "  params: {N: 1.5}\n", [], "logic.params.N: expected an integer, got 1.5", 3),
    ("logic-param-name", LOGIC + "  params: {'a b': 1}\n", [], "logic.params['a b']: not a parameter name", 3),
    ("logic-vtree", LOGIC + "  vtree: left\n", [], "logic.vtree: unknown vtree 'left'", 3),
    ("device-bogus", "train:\n  device: gpu\n", [], "train.device: unknown device 'gpu'", 2),
    ("compile-maybe", "circuit:\n  compile: maybe\n", [], "circuit.compile: expected true, false or auto", 2),
    ("compile-number", "circuit:\n  compile: 5\n", [], "circuit.compile: expected bool or str, got 5", 2),
    ("lr-schedule-bogus", "train:\n  lr_schedule: linear\n", [], "train.lr_schedule: unknown schedule 'linear'", 2),
    # ------------------------------------------------------------------ the task name is a folder name
    ("name-parent", "name: ../x\n", [], "name: '../x' cannot name a run folder", 1),
    ("name-absolute", "name: /abs\n", [], "name: '/abs' cannot name a run folder", 1),
    ("name-empty", "name: ''\n", [], "name: '' cannot name a run folder", 1),
    ("name-separator", "name: a/b\n", [], "name: 'a/b' cannot name a run folder", 1),
    ("name-backslash", "name: 'a\\b'\n", [], "cannot name a run folder", 1),
    ("name-nul", 'name: "a\\0b"\n', [], "name: must not contain a NUL character", 1),
    ("name-hidden", "name: .hidden\n", [], "cannot name a run folder", 1),
    ("name-dash", "name: -rf\n", [], "cannot name a run folder", 1),
    ("name-unicode", "name: t\u00e2che\n", [], "cannot name a run folder", 1),
    ("name-space", "name: my task\n", [], "cannot name a run folder", 1),
    ("name-too-long", "name: " + "x" * 200 + "\n", [], "cannot name a run folder", 1),
    ("name-number", "name: 42\n", [], "name: expected str, got 42", 1),
    # ------------------------------------------------------------------ --set overrides
    ("set-recursive-alias", "name: x\n", ["data.train_support.tuples=&a [*a]"], "YAML anchor &a is not allowed", None),
    ("set-alias-bomb", "name: x\n", ["model.options={a: &a [1, 1], b: [*a, *a, *a]}"], "YAML anchor &a", None),
    ("set-duplicate-key", "name: x\n", ["model.options={width: 1, width: 2}"], "duplicate key width", None),
    ("set-deep-nesting", "name: x\n", ["model.options=" + DEEP], "nested deeper than", None),
    ("set-huge-integer", "name: x\n", ["train.seed=" + "1" * 5000], "has more than 40 digits", None),
    ("set-empty-key-part", "name: x\n", ["train..lr=1"], "empty part in the key", None),
    ("set-empty-key", "name: x\n", ["=5"], "empty key", None),
    ("set-no-equals", "name: x\n", ["train.lr"], "expected key=value", None),
    ("set-nan", "name: x\n", ["train.lr=.nan"], "train.lr: must be a finite number, got nan (from --set train.lr)", None),
    ("set-name", "name: x\n", ["name=../x"], "name: '../x' cannot name a run folder", None),
    ("set-section-scalar", "name: x\n", ["train=5"], "train: expected a mapping, got 5", None),
    ("set-through-scalar", "name: x\n", ["name.x=5"], "--set name.x: name is not a section", None),
    ("set-seed", "name: x\n", ["train.seed=99999999999999999999999"], "does not fit in 64 bits", None),
    ("set-num-threads", "name: x\n", ["train.num_threads=0"], "train.num_threads: must be at least 1", None),
    ("set-logic-param", LOGIC, ["N=true"], "logic.params.N: expected an integer, got True (from --set", None),
    ("set-over-file-value", "train:\n  lr: 0.1\n", ["train.lr=-1"], "train.lr: must be positive, got -1.0 (from --set", None),
]


class _Hang(BaseException):
    """Raised by the alarm: a case ran far past its budget (not caught by any `except Exception`)."""


@pytest.fixture
def deadline():
    """Abort a case that runs 10 s (a hang on today's code) instead of waiting for ever."""
    def _alarm(signum, frame):
        raise _Hang("the case ran for 10 s")

    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, 10.0)
    yield
    signal.setitimer(signal.ITIMER_REAL, 0)
    signal.signal(signal.SIGALRM, previous)


@pytest.fixture
def yaml_work(monkeypatch):
    """Counts the YAML nodes the loader composes and constructs: a refusal's work, which must
    stay within the size of its input (an alias bomb expanded would be millions)."""
    counts = {"nodes": 0}
    compose, construct = _TaskLoader.compose_node, _TaskLoader.construct_object

    def counting_compose(self, parent, index):
        counts["nodes"] += 1
        return compose(self, parent, index)

    def counting_construct(self, node, deep=False):
        counts["nodes"] += 1
        return construct(self, node, deep=deep)

    monkeypatch.setattr(_TaskLoader, "compose_node", counting_compose)
    monkeypatch.setattr(_TaskLoader, "construct_object", counting_construct)
    return counts


def _write(tmp_path: Path, text: str | bytes) -> Path:
    path = tmp_path / "bad.yaml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def _assert_one_line_error(error: ConfigError, path: Path, expected: str, line: int | None) -> None:
    message = str(error)
    assert "\n" not in message and "\r" not in message, message
    assert expected in message, message
    assert message.startswith(str(path)) or message.startswith("--set "), message
    if line is not None:
        assert message.startswith(f"{path}:{line}: "), message
        assert error.line == line


@pytest.mark.parametrize("case_id, text, overrides, expected, line", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_quick_config_error(case_id, text, overrides, expected, line, tmp_path, deadline,
                                             yaml_work):
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path, overrides)
    _assert_one_line_error(caught.value, path, expected, line)
    size = min(len(text), MAX_TASK_FILE_BYTES + 1) + sum(len(item) for item in overrides)
    assert yaml_work["nodes"] <= 2 * size + 10, f"{case_id} handled {yaml_work['nodes']} YAML nodes"


@pytest.mark.parametrize("case_id, text, overrides, expected, line", CASES, ids=[c[0] for c in CASES])
def test_bad_input_through_the_cli_is_one_line(case_id, text, overrides, expected, line, tmp_path, capsys,
                                                deadline):
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError):  # never start a run from a case that is not refused
        load_config(path, overrides)
    args = ["train", str(path), "--out", str(tmp_path / "run")]
    for item in overrides:
        args += ["--set", item]
    assert cli.main(args) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("nesy-gedi: error: ") and captured.err.count("\n") == 1, captured.err
    assert expected in captured.err and "Traceback" not in captured.err
    assert not (tmp_path / "run").exists()


def test_alias_bomb_fails_at_its_first_anchor(tmp_path, deadline, yaml_work):
    path = _write(tmp_path, "name: x\ndata:\n  train_support:\n    tuples:\n" + _bomb(levels=12))
    with pytest.raises(ConfigError, match="YAML anchor"):
        load_config(path)
    # refused while composing the node that carries the first anchor: nothing was expanded
    assert yaml_work["nodes"] < 20  # expanded, the bomb would be 10**11 nodes


# ----------------------------------------------------------------------------- the file itself
def test_invalid_utf8_names_the_byte_and_line(tmp_path):
    path = _write(tmp_path, b"name: x\ntrain:\n  device: \xff\xfe\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    _assert_one_line_error(caught.value, path, "not UTF-8 text (byte 0xff)", 3)


def test_oversized_file_is_refused_without_reading_it_all(tmp_path, deadline):
    path = _write(tmp_path, "# padding\n" * (MAX_TASK_FILE_BYTES // 10 + 10))
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    _assert_one_line_error(caught.value, path, "not a task file", None)


@pytest.mark.parametrize("name, expected", [
    ("missing.yaml", "task file not found"),
    (".", "cannot read the task file: Is a directory"),
    ("a\x00b.yaml", "cannot read the task file: embedded null byte"),
])
def test_unreadable_paths(tmp_path, name, expected):
    path = tmp_path / name if name != "." else tmp_path
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert expected in message and "\n" not in message


def test_file_name_with_a_newline_stays_one_line(tmp_path):
    path = _write(tmp_path, "train:\n  lr: -1\n").rename(tmp_path / "bad\nname.yaml")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert "\n" not in message and message.startswith(str(tmp_path / "bad\\nname.yaml") + ":2: train.lr")


def test_overlong_logic_path_is_not_a_traceback(tmp_path):
    path = _write(tmp_path, "name: x\nlogic:\n  file: " + "a" * 5000 + ".logic\n")
    assert load_config(path).logic.file.endswith(".logic")  # the compiler reports it as a missing file


def test_python_module_cli_exits_2_with_one_line(tmp_path):
    path = _write(tmp_path, "name: x\ndata:\n  train_support:\n    tuples:\n" + _bomb())
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    result = subprocess.run([sys.executable, "-m", "nesy_gedi", "train", str(path), "--out", str(tmp_path / "run")],
                            capture_output=True, text=True, timeout=120, cwd=tmp_path, env=env)
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    assert result.stderr.startswith(f"nesy-gedi: error: {path}:5: YAML anchor &l0 is not allowed")
    assert result.stderr.count("\n") == 1, result.stderr
