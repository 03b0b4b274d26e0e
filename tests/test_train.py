"""The addition data protocol and end-to-end training on real MNIST (config validation is in
test_config.py)."""
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
from nesy_gedi.builders import build_circuit
from nesy_gedi.train import train

ROOT = Path(__file__).resolve().parents[1]
ADDITION = ROOT / "tasks" / "mnist_addition.yaml"
QUICK = ["train.progress=false", "train.num_threads=1"]


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


# ----------------------------------------------------------------------------- energies and OOD in evaluate
@pytest.mark.mnist
def test_evaluate_reports_example_energies_and_the_fashion_auroc(mnist_root, tmp_path):
    import csv

    from sklearn.metrics import roc_auc_score

    from nesy_gedi.data.images import load_images, to_float
    from nesy_gedi.evaluate import evaluate_run, load_run

    if not (Path(mnist_root) / "FashionMNIST" / "raw").is_dir():
        pytest.skip("Fashion-MNIST files not found next to MNIST")
    run = tmp_path / "run"
    train(load_config(ADDITION, [*QUICK, "data.train_examples=200", "data.test_examples=60"]), run,
          data_root=str(mnist_root))
    results = evaluate_run(run, data_root=str(mnist_root))
    assert results["ood_dataset"] == "fashion_mnist" and results["ood_examples"] == 60  # MNIST's default
    # Brute force: E(x) = -logsumexp of the backbone's logits, per concept image, by hand.
    _, _, splits, perception, _ = load_run(run, str(mnist_root))
    test = splits["test"]
    fashion = to_float(load_images("fashion_mnist", str(mnist_root), "test", download=False)[0])
    with torch.no_grad():
        real = -torch.logsumexp(perception.backbone(test.images[test.indices.flatten()]), dim=-1).view(60, 2)
        twins = -torch.logsumexp(perception.backbone(fashion[test.indices.flatten()]), dim=-1).view(60, 2)
    assert results["test_energy"] == pytest.approx(float(real.mean()), rel=1e-5)
    assert results["test_energy_max"] == pytest.approx(float(real.max(dim=1).values.mean()), rel=1e-5)
    assert results["ood_energy"] == pytest.approx(float(twins.mean()), rel=1e-5)
    labels = [1] * 60 + [0] * 60
    by_mean = roc_auc_score(labels, torch.cat([-real.mean(1), -twins.mean(1)]).numpy())
    by_max = roc_auc_score(labels, torch.cat([-real.max(1).values, -twins.max(1).values]).numpy())
    assert results["ood_auroc"] == pytest.approx(by_mean) and results["ood_auroc_max"] == pytest.approx(by_max)
    rows = list(csv.DictReader((run / results["example_energies"]).open()))
    assert [r["split"] for r in rows] == ["test"] * 60 + ["ood"] * 60
    assert float(rows[61]["energy_1"]) == pytest.approx(float(twins[1, 1]), rel=1e-4)
    assert json.loads((run / "evaluation.json").read_text())["ood_auroc"] == results["ood_auroc"]

    # Without Fashion-MNIST's files the default OOD set is skipped, with the reason.
    only_mnist = tmp_path / "only_mnist"
    only_mnist.mkdir()
    (only_mnist / "MNIST").symlink_to(Path(mnist_root) / "MNIST")
    skipped = evaluate_run(run, data_root=str(only_mnist))
    assert skipped["ood_dataset"] is None and "fashion_mnist not found" in skipped["ood_skipped"]
    assert "ood_auroc" not in skipped and skipped["test_energy"] == pytest.approx(results["test_energy"])
