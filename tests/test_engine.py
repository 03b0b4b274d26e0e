"""The training engine: every `train.mode` trains for real, and a run killed mid-epoch then
resumed ends exactly as an uninterrupted one; run-directory checks; non-finite steps."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from nesy_gedi import engine
from nesy_gedi.builders import Perception, _posterior_temperature
from nesy_gedi.config import SELF_SUPERVISED_MODES, TRAINING_MODES, load_config
from nesy_gedi.errors import NesyError
from nesy_gedi.naming import ClusterMap
from nesy_gedi.runs import BEST, CHECKPOINT, FINAL, load_checkpoint, load_weights, read_metrics
from nesy_gedi.pretrain import _without_defaults, pretraining_fields, pretraining_key
from nesy_gedi.evaluate import evaluate_run
from nesy_gedi.train import train
from killing import kill_at_batch

torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parents[1]
ADDITION = ROOT / "tasks" / "mnist_addition.yaml"
TINY = ["data.train_examples=64", "data.test_examples=40", "data.val_examples=20", "train.progress=false",
        "train.num_threads=1", "train.epochs=2", "train.batch_size=16"]
TINY_GEDI = ["gedi.sgld.steps=2", "gedi.sgld.buffer_size=64"]  # only the self-supervised modes read gedi.*
MODES = ([[f"train.mode={mode}"] + (TINY_GEDI if mode in SELF_SUPERVISED_MODES else [])
          + (["gedi.pretrain_epochs=1"] if mode == "gedi->sl" else []) for mode in TRAINING_MODES]
         + [["train.concept_labels=1"], ["train.ema_decay=0.9"]])


def _epochs(run_dir: Path) -> list:
    return [{k: v for k, v in r.items() if k != "seconds"} for r in read_metrics(run_dir) if "event" not in r]


@pytest.mark.mnist
@pytest.mark.parametrize("overrides", MODES, ids=[" ".join(o) for o in MODES])
def test_every_mode_trains_and_a_run_killed_mid_epoch_resumes_to_the_same_metrics(
        mnist_root, tmp_path, monkeypatch, overrides):
    config = load_config(ADDITION, TINY + overrides)
    straight = train(config, tmp_path / "straight", data_root=str(mnist_root))
    records = _epochs(tmp_path / "straight")
    assert [r["epoch"] for r in records] == list(range(1, len(records) + 1)) and records[-1]["steps"] == 4
    assert all(r["skipped_steps"] == 0 for r in records)
    expected_terms = {"sl+gedi": "train_gedi", "gedi->sl": "train_gedi", "sl+swav": "train_gedi_swav",
                      "sl+entropy": "train_entropy", "sl+concepts": "train_concepts"}
    mode = config.train.mode
    if "train.concept_labels=1" in overrides:
        assert any("train_concepts" in r for r in records)
    if mode in expected_terms:
        assert any(expected_terms[mode] in r for r in records)
    assert records[-1]["train_semantic"] > 0 and "val_label_accuracy" in records[-1]

    kill_at_batch(monkeypatch, 4 * (len(records) - 1) + 2)  # the second batch of the last epoch
    with pytest.raises(KeyboardInterrupt):
        train(config, tmp_path / "killed", data_root=str(mnist_root))
    monkeypatch.undo()
    resumed = train(config, tmp_path / "killed", resume=True, data_root=str(mnist_root))
    assert _epochs(tmp_path / "killed") == records
    for key in ("test_label_accuracy", "test_concept_accuracy", "val_label_accuracy"):
        assert resumed[key] == straight[key], key
    a, b = load_checkpoint(tmp_path / "straight"), load_checkpoint(tmp_path / "killed")
    assert all(torch.equal(a["weights"][k], b["weights"][k]) for k in a["weights"])


@pytest.mark.mnist
def test_keep_best_keeps_the_epoch_of_the_best_validation_label_accuracy(mnist_root, tmp_path):
    config = load_config(ADDITION, TINY + ["train.epochs=3", "train.keep_best=true"])
    final = train(config, tmp_path, data_root=str(mnist_root))
    records = _epochs(tmp_path)
    scores = [r["val_label_accuracy"] for r in records]
    best_epoch = scores.index(max(scores)) + 1
    assert final["best_epoch"] == best_epoch == load_checkpoint(tmp_path, name=BEST)["epoch"]
    assert final["best_test_label_accuracy"] == records[best_epoch - 1]["test_label_accuracy"]
    assert json.loads((tmp_path / FINAL).read_text())["best_epoch"] == best_epoch


@pytest.mark.mnist
def test_a_nonfinite_loss_without_recovery_stops_with_the_last_good_checkpoint(mnist_root, tmp_path, monkeypatch):
    config = load_config(ADDITION, TINY)
    real = engine._Step.forward
    calls = {"n": 0}

    def nan_in_epoch_two(self, *args):
        calls["n"] += 1
        terms = real(self, *args)
        if calls["n"] == 6:
            terms["total"] = terms["total"] * float("nan")
        return terms

    monkeypatch.setattr(engine._Step, "forward", nan_in_epoch_two)
    with pytest.raises(NesyError, match=r"non-finite values at epoch 2, step 2 .*last good epoch \(1\)"):
        train(config, tmp_path, data_root=str(mnist_root))
    assert load_checkpoint(tmp_path)["epoch"] == 1
    [event] = [r for r in read_metrics(tmp_path) if r.get("event") == "nonfinite"]
    assert event["action"] == "stop" and event["epoch"] == 2 and event["step"] == 2


def test_the_weight_average_is_the_exponential_moving_average_of_the_steps():
    model = torch.nn.Linear(2, 1)
    average = engine.weight_average(model, 0.75)
    expected = None
    for value in (1.0, 3.0, -2.0, 5.0):
        with torch.no_grad():
            model.weight.fill_(value)
        average.update_parameters(model)
        expected = value if expected is None else 0.75 * expected + 0.25 * value
    assert torch.allclose(average.module.weight, torch.full((1, 2), expected))
    with engine.averaged_weights(model, average):
        assert torch.allclose(model.weight, torch.full((1, 2), expected))
    assert torch.equal(model.weight, torch.full((1, 2), 5.0))  # its own weights again
    assert engine.weight_average(model, None) is None


def test_the_weight_average_copies_integer_and_boolean_buffers():
    """Indices and masks (a cluster map's domains) are state, not weights: averaging 1 and 1 at a
    decay of 0.999 in float arithmetic could truncate to 0."""
    model = torch.nn.Linear(2, 1)
    model.register_buffer("index", torch.tensor([0, 1, 2]))
    model.register_buffer("mask", torch.tensor([True, False]))
    average = engine.weight_average(model, 0.999)
    for step in range(3):
        model.index += 1
        model.mask = ~model.mask
        average.update_parameters(model)
        assert torch.equal(average.module.index, model.index) and average.module.index.dtype == torch.long
        assert torch.equal(average.module.mask, model.mask)


@pytest.mark.mnist
def test_with_ema_decay_evaluation_and_the_saved_model_are_the_average(mnist_root, tmp_path):
    final = train(load_config(ADDITION, TINY + ["train.ema_decay=0.5"]), tmp_path, data_root=str(mnist_root))
    checkpoint = load_checkpoint(tmp_path)
    assert checkpoint["average_updates"] == 8  # two epochs of four steps
    trained, averaged = checkpoint["training_weights"], checkpoint["weights"]
    assert any(not torch.equal(trained[k], averaged[k]) for k in trained)
    again = evaluate_run(tmp_path, data_root=str(mnist_root))  # `evaluate` loads "weights": the average
    assert again["test_label_accuracy"] == final["test_label_accuracy"]
    assert again["test_concept_accuracy"] == final["test_concept_accuracy"]


def test_steps_per_epoch_drops_only_an_incomplete_last_batch():
    assert [engine.steps_per_epoch(n, 32) for n in (1, 31, 32, 63, 64, 65)] == [1, 1, 1, 1, 2, 2]


def test_epoch_generators_are_shared_for_the_order_and_per_rank_for_the_steps():
    order0, step0 = engine.epoch_generators(3, 2, torch.device("cpu"), rank=0)
    order1, step1 = engine.epoch_generators(3, 2, torch.device("cpu"), rank=1)
    assert torch.equal(torch.randperm(50, generator=order0), torch.randperm(50, generator=order1))
    assert not torch.equal(torch.rand(5, generator=step0), torch.rand(5, generator=step1))
    again, _ = engine.epoch_generators(3, 2, torch.device("cpu"))
    other, _ = engine.epoch_generators(3, 3, torch.device("cpu"))
    assert not torch.equal(torch.randperm(50, generator=again), torch.randperm(50, generator=other))


@pytest.mark.mnist
def test_run_directory_refuses_a_second_fresh_run_and_an_empty_resume(mnist_root, tmp_path):
    config = load_config(ADDITION, TINY + ["train.epochs=1"])
    train(config, tmp_path / "run", data_root=str(mnist_root))
    assert (tmp_path / "run" / CHECKPOINT).exists()
    with pytest.raises(NesyError, match="--resume"):
        train(config, tmp_path / "run", data_root=str(mnist_root))
    with pytest.raises(NesyError, match="nothing to resume"):
        train(config, tmp_path / "elsewhere", resume=True, data_root=str(mnist_root))


# ----------------------------------------------------------------------------- from a pretraining
def _one_domain_map(clusters: int = 3) -> ClusterMap:
    return ClusterMap(group_of=(0, 0), sizes=(clusters,), width=clusters, clusters=clusters)


def test_the_cluster_map_starts_uniform_and_a_frozen_backbone_gets_no_gradient():
    backbone = torch.nn.Linear(4, 3)
    perception = Perception(backbone, _one_domain_map())
    images = torch.randn(5, 2, 4)
    assert torch.allclose(perception(images).exp(), torch.full((5, 2, 3), 1 / 3), atol=1e-6)
    with torch.no_grad():
        perception.cluster_map.logits.copy_(torch.tensor([[[2.0, 0.0, 1.0], [0.0, 3.0, 0.0], [1.0, 0.0, 0.0]]]))
    log_probs = perception(images, frozen_backbone=True)
    cluster = torch.softmax(backbone(images), dim=-1).detach()  # temperature 1 by default
    mixing = torch.softmax(perception.cluster_map.logits[0].detach(), dim=0)  # p(value | cluster), columns sum to 1
    assert torch.allclose(log_probs.exp(), cluster @ mixing.T, atol=1e-6)
    log_probs.sum().backward()
    assert backbone.weight.grad is None and perception.cluster_map.logits.grad is not None


def test_a_map_saved_as_one_matrix_loads_into_the_per_domain_map():
    perception = Perception(torch.nn.Linear(4, 3), _one_domain_map())
    old = {k: v for k, v in perception.state_dict().items() if not k.startswith("cluster_map")}
    old["cluster_map"] = torch.tensor([[2.0, 0.0, 1.0], [0.0, 3.0, 0.0], [1.0, 0.0, 0.0]])
    load_weights(perception, old, Path("checkpoint.pt"))
    assert torch.equal(perception.cluster_map.logits[0], old["cluster_map"])


def test_the_pretraining_key_ignores_where_it_runs_and_keys_left_at_their_defaults():
    task = ROOT / "tasks" / "gedi_mnist_nogen.yaml"
    key = pretraining_key(load_config(task))
    # Where and how it runs, and values restated at their defaults, name the same pretraining.
    assert pretraining_key(load_config(task, ["train.num_threads=1", "train.device=cpu", "train.progress=false",
                                              "gedi.generative=1.0"])) == key
    assert pretraining_key(load_config(task, ["model.pretrain_dir=elsewhere"])) == key  # a section of where-keys only
    for changed in ("train.seed=1", "gedi.prior=1.0", "gedi.augment_options={}", "data.val_examples=null"):
        assert pretraining_key(load_config(task, [changed])) != key, changed
    # Only what differs from the defaults is hashed, key by key within each section.
    fields = pretraining_fields(load_config(task, ["train.num_threads=1", "model.pretrain_dir=elsewhere"]))
    assert fields["train"] == {"epochs": 80, "batch_size": 256, "lr_schedule": "cosine", "eval_every": 5}
    assert "model" not in fields and fields["gedi"]["method"] == "no-gen" and "generative" not in fields["gedi"]
    # An option the toolkit adds later, at a default that keeps the old behaviour, keeps old keys.
    defaults = {"a": 1, "section": {"x": 1, "y": 3, "added": None}, "options": {}}
    assert _without_defaults({"a": 1, "section": {"x": 1, "y": 2, "added": None}, "options": {"k": 1}},
                             defaults) == {"section": {"y": 2}, "options": {"k": 1}}


def test_a_clustering_is_read_with_the_posterior_it_was_trained_with():
    backbone = torch.nn.Linear(4, 3)
    perception = Perception(backbone, _one_domain_map(), temperature=0.1)
    with torch.no_grad():
        perception.cluster_map.logits.copy_(torch.tensor([[[2.0, 0.0, 1.0], [0.0, 3.0, 0.0], [1.0, 0.0, 0.0]]]))
    images = torch.randn(5, 2, 4)
    cluster = torch.softmax(backbone(images) / 0.1, dim=-1)  # the clustering's own p(c | x)
    expected = cluster @ torch.softmax(perception.cluster_map.logits[0], dim=0).T
    assert torch.allclose(perception(images).exp(), expected.detach(), atol=1e-6)
    # The temperature is the pretraining's gedi.temperature, or a train run's own.
    assert _posterior_temperature({"kind": "pretrain", "config": {"gedi": {"temperature": 0.1}}}) == 0.1
    assert _posterior_temperature({"kind": "train", "weights": perception.state_dict()}) == pytest.approx(0.1)
    assert _posterior_temperature({"kind": "train", "weights": {}}) == 1.0
    # A checkpoint from before the temperature was kept loads, read at T = 1 as it was trained.
    older = {k: v for k, v in perception.state_dict().items() if k != "temperature"}
    load_weights(perception, older, Path("checkpoint.pt"))
    assert float(perception.temperature) == 1.0


@pytest.mark.mnist
def test_a_task_naming_its_pretraining_runs_it_once_then_reuses_it(mnist_root, tmp_path):
    pretraining = ["data.train_examples=64", "data.test_examples=50", "data.ood_dataset=null",
                   "train.epochs=1", "train.batch_size=32", "train.progress=false", "gedi.method=no-gen"]
    overrides = TINY + [f"model.pretrain={ROOT / 'tasks' / 'gedi_mnist.yaml'}", "map.epochs=1",
                        "map.balance=1.0", "map.search=true",
                        "model.pretrain_overrides=[" + ", ".join(pretraining) + "]"]
    config = load_config(ADDITION, overrides)
    train(config, tmp_path / "first", data_root=str(mnist_root))
    [folder] = (tmp_path / "pretrained").iterdir()
    assert folder.name.startswith("gedi_mnist-") and (folder / FINAL).exists()
    recorded = load_config(tmp_path / "first" / "config.yaml")
    assert Path(recorded.model.init) == folder
    phases = [r["phase"] for r in _epochs(tmp_path / "first")]
    assert phases == ["map", "train", "train"]
    assert all(math.isfinite(r["train_map_balance"]) for r in _epochs(tmp_path / "first"))  # the term ran
    written = (folder / FINAL).stat().st_mtime_ns
    train(load_config(ADDITION, overrides), tmp_path / "second", data_root=str(mnist_root))
    assert (folder / FINAL).stat().st_mtime_ns == written and len(list((tmp_path / "pretrained").iterdir())) == 1
    other_seed = load_config(ADDITION, overrides + ["train.seed=1"])
    train(other_seed, tmp_path / "third", data_root=str(mnist_root))
    assert len(list((tmp_path / "pretrained").iterdir())) == 2  # one backbone per seed: independent samples
    shared_store = load_config(ADDITION, overrides + [f"model.pretrain_dir={tmp_path / 'pretrained'}"])
    train(shared_store, tmp_path / "elsewhere" / "run", data_root=str(mnist_root))
    assert not (tmp_path / "elsewhere" / "pretrained").exists() and (folder / FINAL).stat().st_mtime_ns == written
    assert Path(load_config(tmp_path / "elsewhere" / "run" / "config.yaml").model.init) == folder
