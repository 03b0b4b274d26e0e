"""Task files, config validation, data protocol and end-to-end training on real MNIST."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from nesy_gedi import cli
from nesy_gedi.config import load_config
from nesy_gedi.data.tasks import build_task_data
from nesy_gedi.errors import ConfigError, NesyError
from nesy_gedi.runs import CHECKPOINT, read_metrics
from nesy_gedi.train import build_circuit, train

ROOT = Path(__file__).resolve().parents[1]
ADDITION = ROOT / "tasks" / "mnist_addition.yaml"
QUICK = ["train.progress=false", "train.num_threads=1"]


def write_task(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "task.yaml"
    path.write_text(text)
    return path


# ----------------------------------------------------------------------------- config
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
    config = load_config(ADDITION, ["train.lr=1e-4", "gedi.sgld.noise_std=5E-3"])
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


# ----------------------------------------------------------------------------- data protocol
@pytest.mark.mnist
def test_addition_protocol_uses_disjoint_images_and_logic_labels(mnist_root):
    config = load_config(ADDITION)
    circuit = build_circuit(config)
    splits = build_task_data(config, circuit, mnist_root)
    train_set, test_set = splits["train"], splits["test"]
    assert len(train_set) == 30_000 and len(test_set) == 5_000
    for split in (train_set, test_set):
        flat = split.indices.flatten()
        assert len(torch.unique(flat)) == len(flat)  # no image shared between examples
        total = split.concepts[:, 0] + split.concepts[:, 1]
        assert torch.equal(split.labels[:, 0] * 10 + split.labels[:, 1], total)


@pytest.mark.mnist
def test_two_digit_labels_are_the_sum_digits(mnist_root):
    config = load_config(ADDITION, ["N=2", "data.train_examples=500", "data.test_examples=100"])
    circuit = build_circuit(config)
    train_set = build_task_data(config, circuit, mnist_root)["train"]
    c = train_set.concepts
    total = (c[:, 0] * 10 + c[:, 1]) + (c[:, 2] * 10 + c[:, 3])
    labels = train_set.labels
    assert torch.equal(labels[:, 0] * 100 + labels[:, 1] * 10 + labels[:, 2], total)
    assert len(torch.unique(train_set.indices.flatten())) == 4 * 500


# ----------------------------------------------------------------------------- training
def quick_config(*extra):
    return load_config(ADDITION, QUICK + ["data.train_examples=1500", "data.test_examples=500",
                                          "train.batch_size=8", "train.lr=0.003", *extra])


@pytest.mark.mnist
@pytest.mark.slow
def test_short_training_beats_chance_by_far(mnist_root, tmp_path):
    final = train(quick_config("train.epochs=2"), tmp_path / "run", data_root=str(mnist_root))
    # Chance for the sum is the frequency of the commonest sum, 10 %; this setting measured
    # 85-88 % over seeds 0-2.
    assert final["test_label_accuracy"] > 0.6
    assert final["test_concept_accuracy"] > 0.8
    for name in ("config.yaml", "metrics.jsonl", CHECKPOINT, "final.json"):
        assert (tmp_path / "run" / name).exists()
    written = json.loads((tmp_path / "run" / "final.json").read_text())
    assert written["test_label_accuracy"] == pytest.approx(final["test_label_accuracy"])


@pytest.mark.mnist
@pytest.mark.slow
def test_killed_run_resumes_to_the_same_metrics(mnist_root, tmp_path, monkeypatch):
    import nesy_gedi.train as train_module

    config = quick_config("train.epochs=2", "data.train_examples=400")
    straight = train(config, tmp_path / "straight", data_root=str(mnist_root))

    calls = {"n": 0}
    real_loss = train_module.semantic_loss

    def dying_loss(log_probability):
        calls["n"] += 1
        if calls["n"] == 75:  # in the middle of the second epoch (50 batches per epoch)
            raise KeyboardInterrupt
        return real_loss(log_probability)

    monkeypatch.setattr(train_module, "semantic_loss", dying_loss)
    with pytest.raises(KeyboardInterrupt):
        train(quick_config("train.epochs=2", "data.train_examples=400"), tmp_path / "killed",
              data_root=str(mnist_root))
    assert [r["epoch"] for r in read_metrics(tmp_path / "killed")] == [1]
    monkeypatch.setattr(train_module, "semantic_loss", real_loss)
    resumed = train(quick_config("train.epochs=2", "data.train_examples=400"), tmp_path / "killed",
                    resume=True, data_root=str(mnist_root))
    assert resumed["test_label_accuracy"] == straight["test_label_accuracy"]
    assert resumed["test_concept_accuracy"] == straight["test_concept_accuracy"]
    assert [r["epoch"] for r in read_metrics(tmp_path / "killed")] == [1, 2]


@pytest.mark.mnist
def test_eval_every_skips_epochs_but_always_evaluates_the_last(mnist_root, tmp_path):
    config = quick_config("train.epochs=3", "train.eval_every=2", "data.train_examples=80",
                          "data.test_examples=40")
    final = train(config, tmp_path / "run", data_root=str(mnist_root))
    records = [r for r in read_metrics(tmp_path / "run") if "epoch" in r]
    assert [r["epoch"] for r in records] == [1, 2, 3]
    assert ["test_label_accuracy" in r for r in records] == [False, True, True]
    assert final["test_label_accuracy"] == records[-1]["test_label_accuracy"]
    with pytest.raises(ConfigError, match="train.eval_every"):
        quick_config("train.eval_every=0")


@pytest.mark.mnist
def test_cli_train_then_evaluate(mnist_root, tmp_path, capsys):
    run = tmp_path / "run"
    args = ["train", str(ADDITION), "--out", str(run), "--data-root", str(mnist_root),
            "--set", "data.train_examples=200", "--set", "data.test_examples=100"]
    for item in QUICK:
        args += ["--set", item]
    assert cli.main(args) == 0
    assert "test_label_accuracy" in capsys.readouterr().out
    # A second run into the same directory without --resume must not overwrite it.
    assert cli.main(args) == 2
    assert "--resume" in capsys.readouterr().err
    assert cli.main(["evaluate", str(run), "--data-root", str(mnist_root)]) == 0
    evaluation = json.loads((run / "evaluation.json").read_text())
    final = json.loads((run / "final.json").read_text())
    assert evaluation["test_label_accuracy"] == pytest.approx(final["test_label_accuracy"])


def test_evaluate_rejects_a_folder_that_is_not_a_run(tmp_path):
    with pytest.raises(NesyError, match="not a run directory"):
        from nesy_gedi.evaluate import evaluate_run
        evaluate_run(tmp_path)


def test_missing_data_root_is_one_clear_line(tmp_path, capsys):
    args = ["train", str(ADDITION), "--out", str(tmp_path / "run"), "--data-root", str(tmp_path / "empty")]
    for item in QUICK:
        args += ["--set", item]
    assert cli.main(args) == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1
    assert "MNIST" in err
