"""Task configuration: loading, overrides, validation in one place, the public API.

Hostile and broken inputs, case by case, are in tests/test_bad_input_config.py.
"""
from __future__ import annotations

import ast
import dataclasses
import inspect
from pathlib import Path

import numpy as np
import pytest
import yaml
import torch

from nesy_gedi import cli
from nesy_gedi.config import load as load_module, overrides as overrides_module, paths as paths_module
from nesy_gedi.config import reader as reader_module, schema as schema_module, validate as validate_module
from nesy_gedi.config import (
    MODES,
    SELF_SUPERVISED_METHODS,
    TRAINING_MODES,
    GediConfig,
    TaskConfig,
    apply_overrides,
    config_from_dict,
    load_config,
    parse_overrides,
    resolve_task_path,
    save_config,
)
from nesy_gedi.data.augment import AUGMENT_NAMES
from nesy_gedi.data.images import load_images
from nesy_gedi.errors import ConfigError, NesyError
from nesy_gedi.models.backbones import BACKBONE_NAMES

ROOT = Path(__file__).resolve().parents[1]
ADDITION = ROOT / "tasks" / "mnist_addition.yaml"
LOGIC = ROOT / "logic" / "addition.logic"
TASK_FILES = sorted((ROOT / "tasks").glob("*.yaml"))


def write_task(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "task.yaml"
    path.write_text(text)
    return path


# ----------------------------------------------------------------------------- copied from test_train.py
def test_unknown_key_names_key_and_file(tmp_path):
    path = write_task(tmp_path, "name: x\ntrain:\n  epochz: 3\n")
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert str(error.value).startswith(str(path))
    assert "train.epochz" in str(error.value)


def test_wrong_type_names_key(tmp_path):
    path = write_task(tmp_path, "name: x\ntrain:\n  batch_size: big\n")
    with pytest.raises(ConfigError, match=r"train\.batch_size: expected int, got 'big'"):
        load_config(path)


def test_invalid_yaml_reports_line(tmp_path):
    path = write_task(tmp_path, "name: x\ntrain:\n  epochs: [1,\n")
    with pytest.raises(ConfigError, match=rf"^{path}:\d+: invalid YAML"):
        load_config(path)


def test_overrides_reach_config_and_logic_params():
    config = load_config(ADDITION, ["train.epochs=3", "N=4", "train.lr=0.01", "data.train_examples=10"])
    assert config.train.epochs == 3
    assert config.train.lr == pytest.approx(0.01)
    assert config.logic.params == {"N": 4}
    assert config.data.train_examples == 10


def test_exponent_notation_is_a_float_in_files_and_overrides(tmp_path):
    # YAML 1.1 (PyYAML) reads "1e-4" as a string; a float key takes it as the number it means.
    path = write_task(tmp_path, "name: x\ntrain:\n  lr: 3e-4\n")
    assert load_config(path).train.lr == pytest.approx(3e-4)
    config = load_config(ADDITION, ["train.lr=1e-4", "train.mode=sl+gedi", "gedi.sgld.noise_std=5E-3"])
    assert config.train.lr == pytest.approx(1e-4) and config.gedi.sgld.noise_std == pytest.approx(5e-3)
    with pytest.raises(ConfigError, match=r"train\.epochs: expected int, got '1e2'"):
        load_config(ADDITION, ["train.epochs=1e2"])  # an int key still wants an int
    with pytest.raises(ConfigError, match=r"train\.lr: expected float, got '1e-4x'"):
        load_config(ADDITION, ["train.lr=1e-4x"])


def test_bad_override_value_is_rejected():
    with pytest.raises(ConfigError, match="train.epochs"):
        load_config(ADDITION, ["train.epochs=many"])
    with pytest.raises(ConfigError, match="unknown mode"):
        load_config(ADDITION, ["train.mode=magic"])


def test_cli_reports_config_errors_without_traceback(tmp_path, capsys):
    path = write_task(tmp_path, "name: x\nmodel:\n  layers: 3\n")
    assert cli.main(["train", str(path), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "model.layers" in err and "Traceback" not in err


# ----------------------------------------------------------------------------- task files
@pytest.mark.parametrize("path", TASK_FILES, ids=[p.stem for p in TASK_FILES])
def test_every_task_file_loads_and_round_trips(path, tmp_path):
    config = load_config(path)
    assert config.name == path.stem and config.source == str(path)
    save_config(config, tmp_path / "config.yaml")
    again = load_config(tmp_path / "config.yaml")
    assert again.to_dict() == config.to_dict()
    assert config_from_dict(config.to_dict(), "stored").to_dict() == config.to_dict()


def test_defaults_are_valid():
    assert config_from_dict({}).to_dict() == TaskConfig().to_dict()


def test_empty_file_is_all_defaults(tmp_path):
    assert load_config(write_task(tmp_path, "# nothing\n")).to_dict() == TaskConfig().to_dict()


# ----------------------------------------------------------------------------- lines and overrides
def test_errors_name_the_line_of_the_key(tmp_path):
    path = write_task(tmp_path, "name: x\ntrain:\n  epochs: 2\n  lr: -1\n")
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert error.value.path == str(path) and error.value.line == 4
    assert str(error.value) == f"{path}:4: train.lr: must be positive, got -1.0"


def test_a_key_the_file_leaves_out_points_at_its_section(tmp_path):
    path = write_task(tmp_path, "name: x\ngedi:\n  sgld:\n    high: -2\n")
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert error.value.line == 3 and "gedi.sgld.low: needs low < high" in str(error.value)


def test_overridden_values_name_the_override_not_a_line(tmp_path):
    path = write_task(tmp_path, "name: x\ntrain:\n  lr: 0.1\n")
    with pytest.raises(ConfigError) as error:
        load_config(path, ["train.lr=0"])
    assert error.value.line is None
    assert str(error.value) == f"{path}: train.lr: must be positive, got 0.0 (from --set train.lr)"


def test_parse_and_apply_overrides_keep_their_api():
    assert parse_overrides(["a.b=1", "c=[1, 2]", "d=", "e=[unclosed"]) == [
        ("a.b", 1), ("c", [1, 2]), ("d", ""), ("e", "[unclosed")]
    assert apply_overrides({"train": {"lr": 1}}, ["train.lr=2", "N=3"]) == {
        "train": {"lr": 2}, "logic": {"params": {"N": 3}}}
    with pytest.raises(ConfigError, match="YAML anchor"):
        parse_overrides(["x=&a [*a]"])


# ----------------------------------------------------------------------------- values
def test_values_that_need_a_definition():
    config = config_from_dict({"name": "a.b-c_1", "data": {"ood_dataset": "none", "classes": [0, "cat"]},
                               "train": {"num_threads": None, "seed": 2**32 - 1}})
    assert config.data.ood_dataset is None  # "none" means no OOD set
    assert config.data.classes == [0, "cat"] and config.train.seed == 2**32 - 1
    assert config_from_dict({"data": {"ood_dataset": "fake:1x28x28:10:64"}}).data.ood_dataset.startswith("fake:")


def test_timestamps_stay_strings(tmp_path):
    assert load_config(write_task(tmp_path, "name: 2024-01-31\n")).name == "2024-01-31"


def test_options_are_converted_like_config_values(tmp_path):
    path = write_task(tmp_path, "gedi:\n  augment_options: {stroke: 5e-1, scale: [1, 1.2]}\n"
                                "model:\n  backbone: resnet_small\n  options: {width: 8, blocks: [1, 2]}\n")
    config = load_config(path)
    assert config.gedi.augment_options == {"stroke": 0.5, "scale": [1.0, 1.2]}
    assert config.model.options == {"width": 8, "blocks": [1, 2]}


def test_checking_augmentations_leaves_the_global_rng_alone():
    state = torch.random.get_rng_state()
    config_from_dict({"train": {"augment": "natural", "augment_options": {"flip_prob": 0.2}},
                      "gedi": {"augment_options": {"stroke": 0.3}}})
    assert torch.equal(state, torch.random.get_rng_state())


def test_pretrain_keys_are_checked_and_kept():
    config = config_from_dict({"model": {"pretrain": "tasks/gedi_mnist.yaml",
                                         "pretrain_overrides": ["train.epochs=2", "gedi.weight=3"]},
                               "train": {"concept_labels": 5, "keep_best": True, "tensorboard": True},
                               "data": {"val_examples": 100, "path": "images/"}})
    assert config.model.pretrain_overrides == ["train.epochs=2", "gedi.weight=3"]
    assert config.train.concept_labels == 5 and config.data.val_examples == 100


def test_mode_implications_still_resolve():
    assert config_from_dict({"train": {"mode": "sl+concepts"}}).train.concept_supervision == 0.1
    assert config_from_dict({"train": {"mode": "sl+swav"}}).gedi.method == "swav"


def test_config_from_dict_names_its_source():
    with pytest.raises(ConfigError, match=r"^stored: train\.lr: must be a finite number"):
        config_from_dict({"train": {"lr": float("inf")}}, "stored")
    with pytest.raises(ConfigError, match="must be a mapping of sections"):
        config_from_dict([1, 2], "stored")
    with pytest.raises(ConfigError, match="train.lr: must be a finite number"):
        config_from_dict({"train": {"lr": 10**400}})  # beyond the float range


def test_errors_are_nesy_errors_of_one_line():
    error = ConfigError("a\nb", "c\td.yaml", 3)
    assert isinstance(error, NesyError) and str(error) == "c\\td.yaml:3: a\\nb"


# ----------------------------------------------------------------------------- the rules' own consistency
def test_every_range_names_a_real_number_field():
    config = TaskConfig()
    for key in validate_module._RANGES:
        value = validate_module._value_at(config, key)
        assert value is None or isinstance(value, (int, float)), key


def test_every_number_field_has_a_range():
    def number_keys(section, prefix):
        for item in dataclasses.fields(section):
            value, key = getattr(section, item.name), f"{prefix}{item.name}"
            if dataclasses.is_dataclass(value):
                yield from number_keys(value, key + ".")
            elif item.type in ("int", "float", "typing.Optional[int]", "typing.Optional[float]"):
                yield key

    unranged = set(number_keys(TaskConfig(), "")) - set(validate_module._RANGES)
    assert unranged == {"gedi.sgld.low", "gedi.sgld.high"}  # checked together: low < high
    for key, value in (("map.epochs", -1), ("map.lr", 0), ("map.balance", -0.5), ("map.noise", 1.0)):
        with pytest.raises(ConfigError, match=key):
            load_config(ADDITION, [f"{key}={value}", "map.epochs=1" if key != "map.epochs" else "map.lr=1"])
    load_config(ADDITION, ["train.concept_labels=0"])  # 0: no labelled images


def test_the_map_keys_live_in_their_own_section_and_need_a_map_phase():
    for old, new in (("train.map_epochs", "map.epochs"), ("train.map_search", "map.search"),
                     ("train.map_balance", "map.balance"), ("train.map_lr", "map.lr")):
        with pytest.raises(ConfigError, match=f"{old} is now {new}"):
            load_config(ADDITION, [f"{old}=1"])
    with pytest.raises(ConfigError, match="map.balance: is read by the map phase, which only map.epochs > 0 runs"):
        load_config(ADDITION, ["map.balance=1"])
    with pytest.raises(ConfigError, match="map.mode: unknown naming mode"):
        load_config(ADDITION, ["map.epochs=1", "map.mode=two-to-one"])
    config = load_config(ADDITION, ["map.epochs=2", "map.mode=many-to-one", "map.restarts=3"])
    assert (config.map.epochs, config.map.mode, config.map.restarts, config.map.search) == (2, "many-to-one", 3, True)


def test_a_key_the_chosen_mode_does_not_read_is_refused_naming_the_mode():
    with pytest.raises(ConfigError, match=r"--set gedi.generative: train.mode sl does not read gedi \(only sl\+gedi"):
        load_config(ADDITION, ["gedi.generative=3"])
    with pytest.raises(ConfigError, match=r"train.mode sl\+gedi does not read gedi.pretrain_epochs"):
        load_config(ADDITION, ["train.mode=sl+gedi", "gedi.pretrain_epochs=2"])
    with pytest.raises(ConfigError, match="train.mode sl does not read train.entropy_weight"):
        load_config(ADDITION, ["train.entropy_weight=2"])
    assert load_config(ADDITION, ["train.mode=sl+gedi", "gedi.generative=3"]).gedi.generative == 3
    assert load_config(ADDITION, ["train.mode=gedi->sl", "gedi.pretrain_epochs=2"]).gedi.pretrain_epochs == 2


def test_a_task_file_key_the_mode_does_not_read_is_refused_with_its_line(tmp_path):
    task = write_task(tmp_path, f"logic: {{file: {LOGIC}}}\ntrain:\n  mode: sl\ngedi:\n  generative: 3\n")
    with pytest.raises(ConfigError, match=r"task.yaml:5: gedi.generative: train.mode sl does not read gedi "
                                          r"\(only sl\+gedi, gedi->sl and sl\+swav do\)"):
        load_config(task)
    assert load_config(task, ["train.mode=sl+gedi"]).gedi.generative == 3
    entropy = write_task(tmp_path, f"logic: {{file: {LOGIC}}}\ntrain:\n  mode: sl+gedi\n  entropy_weight: 2\n")
    with pytest.raises(ConfigError, match="task.yaml:4: train.entropy_weight: train.mode sl\\+gedi does not read"):
        load_config(entropy)
    swav = write_task(tmp_path, f"logic: {{file: {LOGIC}}}\ntrain: {{mode: sl+swav}}\ngedi: {{method: jem}}\n")
    with pytest.raises(ConfigError, match="gedi.method: train.mode sl\\+swav sets gedi.method to swav"):
        load_config(swav)
    # a pretrain task (no logic section) reads its whole gedi section whatever train.mode says
    assert load_config(write_task(tmp_path, "gedi: {generative: 3}\n")).gedi.generative == 3


def test_a_stored_run_config_holding_every_key_loads_in_its_mode(tmp_path):
    """config.yaml holds every key; those the mode does not read sit at their defaults."""
    for mode in TRAINING_MODES:
        config = load_config(ROOT / "tasks" / "mnist_evenodd.yaml", [f"train.mode={mode}"])
        save_config(config, tmp_path / "config.yaml")
        again = load_config(tmp_path / "config.yaml")
        assert again.to_dict() == config.to_dict()
        stored = config.to_dict()
        stored["gedi"]["prior"] = 7.0  # a stored config holding a value its mode never read
        read = config_from_dict(stored, "stored").to_dict()
        assert read["gedi"]["prior"] == (7.0 if MODES[mode].self_supervised else GediConfig().prior)


def test_the_modes_section_adds_the_chosen_modes_settings(tmp_path):
    task = write_task(tmp_path, f"""logic: {{file: {LOGIC}}}
train: {{mode: sl}}
modes:
  sl+gedi, gedi->sl:
    gedi: {{prior: 10.0, sgld: {{steps: 5}}}}
  gedi->sl:
    gedi: {{pretrain_epochs: 2}}
""")
    plain = load_config(task)
    assert (plain.gedi.prior, plain.gedi.sgld.steps, plain.gedi.pretrain_epochs) == (1.0, 20, 0)
    joint = load_config(task, ["train.mode=sl+gedi"])
    assert (joint.gedi.prior, joint.gedi.sgld.steps, joint.gedi.pretrain_epochs) == (10.0, 5, 0)
    first = load_config(task, ["train.mode=gedi->sl", "gedi.prior=3"])  # --set wins over the section
    assert (first.gedi.prior, first.gedi.sgld.steps, first.gedi.pretrain_epochs) == (3.0, 5, 2)
    assert "modes" not in first.to_dict()
    both = write_task(tmp_path, f"logic: {{file: {LOGIC}}}\nmodes:\n  pretrain:\n    gedi: {{method: no-gen}}\n")
    assert load_config(both).gedi.method == "gedi"  # train reads no gedi section in mode sl
    assert load_config(both, pretrain=True).gedi.method == "no-gen"
    for text, message in (
            ("modes:\n  sl+magic:\n    gedi: {prior: 2}\n",
             r"task.yaml:\d+: modes.sl\+magic: unknown mode 'sl\+magic'"),
            ("modes:\n  sl+gedi:\n    gedi: {pretrain_epochs: 2}\n",
             r"task.yaml:5: gedi.pretrain_epochs: train.mode sl\+gedi does not read gedi.pretrain_epochs"),
            ("gedi: {prior: 2}\nmodes:\n  sl: {gedi: {prior: 3}}\n", r"gedi.prior is given twice"),
            ("modes: [sl]\n", "modes: expected a mapping of training modes")):
        bad = write_task(tmp_path, f"logic: {{file: {LOGIC}}}\ntrain: {{mode: sl}}\n{text}")
        with pytest.raises(ConfigError, match=message):
            load_config(bad)


@pytest.mark.parametrize("path", TASK_FILES, ids=lambda p: p.stem)
def test_every_task_file_loads_in_every_mode_its_modes_section_names(path):
    data = yaml.safe_load(path.read_text())
    names = {name.strip() for key in data.get("modes", {}) for name in key.split(",")}
    for mode in sorted(names) or [None]:
        config = load_config(path, [f"train.mode={mode}"] if mode else [])
        assert config.train.mode == (mode or data.get("train", {}).get("mode", "sl"))


# ----------------------------------------------------------------------------- a task's own files
def _project(tmp_path: Path) -> tuple[Path, Path]:
    """A project (tasks/, logic/, images/, runs/) and, beside it, a working directory holding a
    decoy of every file the task names."""
    project, working = tmp_path / "project", tmp_path / "working"
    for root in (project, working):
        (root / "logic").mkdir(parents=True)
        (root / "logic" / "sum.logic").write_text((ROOT / "logic" / "addition.logic").read_text())
        (root / "images").mkdir()
        (root / "tasks").mkdir()
        (root / "tasks" / "pre.yaml").write_text("name: pre\n")
        (root / "runs" / "start").mkdir(parents=True)
    task = project / "tasks" / "task.yaml"
    task.write_text("logic: {file: logic/sum.logic}\ndata: {dataset: folder, path: images}\n"
                    "model: {pretrain: pre.yaml, init: runs/start}\n")
    return task, working


def test_a_task_files_paths_resolve_beside_it_not_in_the_working_directory(tmp_path, monkeypatch):
    task, working = _project(tmp_path)
    project = task.parent.parent
    monkeypatch.chdir(working)  # every name below also exists here: the task's own must win
    config = load_config(task)
    assert Path(config.logic.file) == project / "logic" / "sum.logic"
    assert Path(config.data.path) == project / "images"
    assert Path(config.model.pretrain) == project / "tasks" / "pre.yaml"
    assert Path(config.model.init) == project / "runs" / "start"
    # typed on the command line, a relative path means the working directory's
    changed = load_config(task, ["logic.file=logic/sum.logic", "data.path=images"])
    assert Path(changed.logic.file) == working / "logic" / "sum.logic"
    assert Path(changed.data.path) == working / "images"
    # a name only the working directory holds is still found
    (working / "logic" / "only_here.logic").write_text((ROOT / "logic" / "addition.logic").read_text())
    task.write_text("logic: {file: logic/only_here.logic}\n")
    assert Path(load_config(task).logic.file) == working / "logic" / "only_here.logic"


def test_a_run_reads_the_task_files_own_images_not_the_working_directorys(tmp_path, monkeypatch):
    """The data sources read config.data.path as loaded: the task's folder, not the decoy."""
    task, working = _project(tmp_path)
    project = task.parent.parent
    for root, value in ((project, 0), (working, 1)):
        np.savez(root / "images" / "digits.npz", images=np.full((4, 1, 2, 2), value, np.uint8),
                 labels=np.zeros(4, np.int64), test_images=np.full((2, 1, 2, 2), value, np.uint8),
                 test_labels=np.zeros(2, np.int64))
    task.write_text("logic: {file: logic/sum.logic}\ndata: {dataset: arrays, path: images/digits.npz}\n")
    monkeypatch.chdir(working)
    config = load_config(task)
    images, _ = load_images("arrays", tmp_path, "train", path=config.data.path)
    assert Path(config.data.path) == project / "images" / "digits.npz" and int(images.max()) == 0


def test_every_backbone_and_augmentation_is_known_to_the_checks():
    assert set(validate_module._BACKBONE_CLASSES) == set(BACKBONE_NAMES)
    assert set(validate_module._AUGMENT_PROBES) == set(AUGMENT_NAMES)


def test_config_has_no_function_level_imports():
    for module in (load_module, overrides_module, paths_module, reader_module, schema_module, validate_module):
        tree = ast.parse(inspect.getsource(module))
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                inner = [n for n in ast.walk(node) if isinstance(n, (ast.Import, ast.ImportFrom))]
                assert not inner, f"{module.__name__}.{node.name} imports inside the function"


def test_public_api_is_kept():
    assert "sl" in TRAINING_MODES and "gedi" in SELF_SUPERVISED_METHODS
    config = load_config(ADDITION)
    assert dataclasses.asdict(config)["train"]["lr"] == config.train.lr
    assert "source" not in config.to_dict() and config.source == str(ADDITION)
    assert resolve_task_path("logic/addition.logic", str(ADDITION), from_file=True).exists()
    assert [f.name for f in dataclasses.fields(TaskConfig)] == [
        "name", "logic", "data", "model", "train", "map", "gedi", "circuit", "source"]


def test_the_documented_defaults_are_the_configs_defaults():
    """docs/tasks.md lists every key with its default; it must not drift from config.schema."""
    from nesy_gedi.config import LogicConfig, SupportConfig, TaskConfig

    text = (ROOT / "docs" / "tasks.md").read_text(encoding="utf-8")
    documented = yaml.safe_load(text.split("```yaml\n", 1)[1].split("```", 1)[0])
    config = TaskConfig()
    config.logic = LogicConfig(file="logic/addition.logic", params={"N": 1})
    config.data.train_support = SupportConfig()
    assert documented == config.to_dict()
