"""GEDI pretraining loop: real MNIST, toy data, FakeData/ResNet shapes, NaN recovery, resume,
loading a pretrained backbone, task files."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

import nesy_gedi.pretrain as pretrain_module
import nesy_gedi.sgld as sgld_module
from nesy_gedi import selfsup as selfsup_module
from nesy_gedi.config import config_from_dict, load_config
from nesy_gedi.errors import ConfigError, NesyError
from nesy_gedi.pretrain import (NonFiniteGuard, build_model, evaluate_clusters, load_pretrain_data,
                                load_pretrained_backbone, pretrain, pretrain_epoch)
from nesy_gedi.runs import load_checkpoint, read_metrics
from nesy_gedi.selfsup import SelfSupervised

torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]


def _moons(**train) -> dict:
    return {
        "name": "moons_test",
        "data": {"dataset": "moons", "toy_samples": 200, "toy_noise": 0.08},
        "model": {"backbone": "mlp", "num_clusters": 2, "options": {"hidden": 32, "depth": 2}},
        "train": {"epochs": 2, "batch_size": 50, "lr": 0.002, "seed": 0, "device": "cpu", "progress": False,
                  **train},
        "gedi": {"method": "gedi", "energy_magnitude": 0.1, "augment": "points",
                 "sgld": {"buffer_size": 100, "steps": 3, "step_size": 0.01, "noise_std": 0.14,
                          "low": -3.0, "high": 3.0}},
    }


def _epoch_records(run_dir):
    return [r for r in read_metrics(run_dir) if "event" not in r]


# ----------------------------------------------------------------------------- real MNIST
@pytest.mark.mnist
def test_short_mnist_pretrain_writes_a_run_and_beats_a_random_network(mnist_root, tmp_path):
    has_fashion = (Path(mnist_root) / "FashionMNIST" / "raw").is_dir()
    config = config_from_dict({
        "name": "gedi_mnist_test",
        "data": {"dataset": "mnist", "train_examples": 256, "test_examples": 500,
                 "ood_dataset": "fashion_mnist" if has_fashion else None},
        "model": {"backbone": "mnist_net", "num_clusters": 10},
        "train": {"epochs": 2, "batch_size": 32, "lr": 0.001, "seed": 0, "device": "cpu", "progress": False},
        "gedi": {"method": "gedi", "prior": 3.0, "energy_magnitude": 0.1, "temperature": 0.1, "augment": "digits",
                 "sgld": {"buffer_size": 256, "steps": 5, "step_size": 1.0, "noise_std": 0.01}},
    })
    data = load_pretrain_data(config, str(mnist_root))
    torch.manual_seed(0)
    untrained = evaluate_clusters(build_model(config.model, data.sample_shape), data.test, data.test_labels, 10)

    run = tmp_path / "run"
    final = pretrain(config, run, data_root=str(mnist_root))

    assert final == json.loads((run / "final.json").read_text())
    for key in ("cluster_accuracy", "nmi", "ari", "ood_auroc_noise", "seconds_per_epoch"):
        assert isinstance(final[key], float), key
    assert final["nmi"] > untrained["nmi"] + 0.05
    assert final["ood_auroc_noise"] > 0.9  # uniform noise gets a much higher energy than digits
    if has_fashion:
        assert 0.0 <= final["ood_auroc"] <= 1.0
        by_class = final["ood_auroc_by_class"]
        assert "Trouser" in by_class and len(by_class) == 10
        # The AUROC against a union of classes is the count-weighted mean of the per-class AUROCs.
        fashion_labels = pretrain_module.load_images("fashion_mnist", str(mnist_root), "test")[1][:500]
        counts = torch.bincount(fashion_labels, minlength=10).tolist()
        weighted = sum(count * auroc for count, auroc in zip(counts, by_class.values())) / sum(counts)
        assert weighted == pytest.approx(final["ood_auroc"], abs=1e-9)
    records = _epoch_records(run)
    assert [r["epoch"] for r in records] == [1, 2]
    assert {"loss_total", "loss_generative", "nmi", "energy_test", "energy_noise", "seconds"} <= set(records[0])
    if has_fashion:  # every evaluation epoch tracks the OOD AUROC; the last one is the final model's
        assert records[-1]["ood_auroc"] == pytest.approx(final["ood_auroc"], abs=1e-12)
    checkpoint = load_checkpoint(run)
    assert checkpoint["epoch"] == 2 and checkpoint["selfsup"]["sampler.buffer.samples"].shape == (256, 1, 28, 28)
    assert (run / "config.yaml").exists()
    for png in ("samples.png", "energy_histogram.png", "curves.png"):
        assert (run / png).stat().st_size > 1000, png


# ----------------------------------------------------------------------------- toy data
def test_moons_pretrain_writes_toy_plots(tmp_path):
    final = pretrain(config_from_dict(_moons()), tmp_path)
    assert 0.0 <= final["nmi"] <= 1.0 and final["ood_dataset"] is None and final["ood_auroc"] is None
    for png in ("samples.png", "energy_histogram.png", "curves.png", "clusters.png", "energy_landscape.png"):
        assert (tmp_path / png).stat().st_size > 1000, png
    assert set(final["plots"]) >= {"clusters.png", "energy_landscape.png"}


@pytest.mark.parametrize("schedule", ["constant", "cosine"])
def test_resume_reproduces_the_uninterrupted_run(tmp_path, monkeypatch, schedule):
    straight = tmp_path / "straight"
    pretrain(config_from_dict(_moons(epochs=3, lr_schedule=schedule)), straight)

    real_epoch = pretrain_module.pretrain_epoch

    def killed_in_epoch_3(*args, epoch, **kwargs):
        if epoch == 3:
            raise KeyboardInterrupt
        return real_epoch(*args, epoch=epoch, **kwargs)

    interrupted = tmp_path / "interrupted"
    monkeypatch.setattr(pretrain_module, "pretrain_epoch", killed_in_epoch_3)
    with pytest.raises(KeyboardInterrupt):
        pretrain(config_from_dict(_moons(epochs=3, lr_schedule=schedule)), interrupted)
    monkeypatch.setattr(pretrain_module, "pretrain_epoch", real_epoch)
    # A run killed after logging epoch 3 but before its checkpoint: the stale record is dropped.
    with open(interrupted / "metrics.jsonl", "a") as stream:
        stream.write(json.dumps({"epoch": 3, "nmi": -1.0}) + "\n")
    final = pretrain(config_from_dict(_moons(epochs=3, lr_schedule=schedule)), interrupted, resume=True)

    def strip(records):
        return [{k: v for k, v in r.items() if k != "seconds"} for r in records]

    assert strip(_epoch_records(interrupted)) == strip(_epoch_records(straight))
    assert final["nmi"] == json.loads((straight / "final.json").read_text())["nmi"]
    assert torch.equal(load_checkpoint(interrupted)["selfsup"]["sampler.buffer.samples"],
                       load_checkpoint(straight)["selfsup"]["sampler.buffer.samples"])


def test_pretrain_follows_the_lr_schedule_and_eval_every(tmp_path):
    pretrain(config_from_dict(_moons(epochs=3, eval_every=2, lr_schedule="cosine")), tmp_path)
    records = _epoch_records(tmp_path)
    assert [r["epoch"] for r in records] == [1, 2, 3]
    assert ["nmi" in r for r in records] == [False, True, True]  # every 2nd epoch, and always the last
    rates = [r["lr"] for r in records]
    steps = 200 // 50  # toy_samples / batch_size, per epoch
    for epoch, rate in enumerate(rates, start=1):
        assert rate == pytest.approx(0.002 * 0.5 * (1 + math.cos(math.pi * epoch * steps / (3 * steps))), abs=1e-9)
    constant = tmp_path / "constant"
    pretrain(config_from_dict(_moons(epochs=2)), constant)
    assert [r["lr"] for r in _epoch_records(constant)] == [0.002, 0.002]


def test_existing_run_needs_resume(tmp_path):
    pretrain(config_from_dict(_moons(epochs=1)), tmp_path)
    with pytest.raises(NesyError, match="--resume"):
        pretrain(config_from_dict(_moons(epochs=1)), tmp_path)


# ----------------------------------------------------------------------------- CIFAR-style shapes
def test_fake_data_resnet_one_step(tmp_path):
    config = config_from_dict({
        "name": "fake_test",
        "data": {"dataset": "fake", "train_examples": 16, "test_examples": 32, "ood_dataset": "fake"},
        "model": {"backbone": "resnet_small", "num_clusters": 10, "options": {"width": 8}},
        "train": {"epochs": 1, "batch_size": 16, "seed": 0, "device": "cpu", "progress": False,
                  "eval_batch_size": 16},
        "gedi": {"method": "gedi", "augment": "natural", "sgld": {"buffer_size": 32, "steps": 2}},
    })
    final = pretrain(config, tmp_path)
    [record] = _epoch_records(tmp_path)
    assert record["steps"] == 1 and record["skipped_steps"] == 0
    checkpoint = load_checkpoint(tmp_path)
    assert checkpoint["selfsup"]["sampler.buffer.samples"].shape == (32, 3, 32, 32)
    assert checkpoint["backbone"]["head.weight"].shape == (10, 32)
    assert checkpoint["model"]["sample_shape"] == [3, 32, 32]
    assert final["test_inputs"] == 32 and final["ood_auroc"] is not None
    assert (tmp_path / "samples.png").exists()


def test_backbone_that_cannot_take_the_data_is_a_config_error():
    config = config_from_dict({"data": {"dataset": "fake"}, "model": {"backbone": "mnist_net"}})
    with pytest.raises(ConfigError, match="mnist_net"):
        build_model(config.model, (3, 32, 32))


# ----------------------------------------------------------------------------- non-finite values
def _nan_after(monkeypatch, good_calls: int):
    """From SGLD call number good_calls + 1 on, every energy the sampler sees is NaN."""
    real = sgld_module.sgld
    calls = {"n": 0}

    def patched(energy_fn, x, **kw):
        calls["n"] += 1
        if calls["n"] > good_calls:
            return real(lambda z: energy_fn(z) * float("nan"), x, **kw)
        return real(energy_fn, x, **kw)

    monkeypatch.setattr(sgld_module, "sgld", patched)
    return calls


def test_diverging_sgld_recovers_then_stops_with_a_usable_checkpoint(tmp_path, monkeypatch):
    _nan_after(monkeypatch, good_calls=4)  # 4 steps per epoch: epoch 1 is clean, epoch 2 diverges
    config = config_from_dict(_moons(epochs=3, max_nonfinite_recoveries=2))
    with pytest.raises(NesyError) as caught:
        pretrain(config, tmp_path)
    message = str(caught.value)
    assert "training stopped" in message and "max_nonfinite_recoveries" in message
    assert "last good epoch (1)" in message and "checkpoint.pt" in message

    events = [r for r in read_metrics(tmp_path) if r.get("event") == "nonfinite"]
    assert [e["recoveries"] for e in events] == [1, 2, 3]
    assert [e["action"] for e in events] == ["reset buffer, skip step"] * 2 + ["stop"]
    assert all(e["epoch"] == 2 and "SGLD" in e["reason"] for e in events)
    assert [r["epoch"] for r in _epoch_records(tmp_path)] == [1]

    checkpoint = load_checkpoint(tmp_path)
    assert checkpoint["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in checkpoint["backbone"].values())
    backbone = build_model(config.model, (2,))
    assert load_pretrained_backbone(tmp_path, backbone)["epoch"] == 1


def test_nonfinite_loss_never_steps_the_optimizer(monkeypatch):
    config = config_from_dict(_moons())
    torch.manual_seed(0)
    backbone = build_model(config.model, (2,))
    selfsup = SelfSupervised.from_config(config.gedi, (2,), 2)
    optimizer = torch.optim.Adam(backbone.parameters(), lr=0.1)
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    real = selfsup_module.gedi_objective

    def nan_objective(*args, **kwargs):
        terms = real(*args, **kwargs)
        terms["total"] = terms["total"] * float("nan")
        return terms

    monkeypatch.setattr(selfsup_module, "gedi_objective", nan_objective)
    guard = NonFiniteGuard(max_recoveries=100)
    stats = pretrain_epoch(backbone, selfsup, optimizer, torch.randn(200, 2), batch_size=50, seed=0, epoch=1,
                           guard=guard)
    assert stats["steps"] == 0 and stats["skipped_steps"] == 4 and guard.count == 4
    assert all(torch.equal(before[k], v) for k, v in backbone.state_dict().items())
    assert not optimizer.state  # Adam never stepped


# ----------------------------------------------------------------------------- pretrained backbones
def test_load_pretrained_backbone_round_trip_and_errors(tmp_path):
    config = config_from_dict(_moons(epochs=1))
    pretrain(config, tmp_path / "run")
    torch.manual_seed(123)
    fresh = build_model(config.model, (2,))
    meta = load_pretrained_backbone(tmp_path / "run", fresh)
    saved = load_checkpoint(tmp_path / "run")["backbone"]
    assert all(torch.equal(saved[k], v) for k, v in fresh.state_dict().items())
    assert meta["epoch"] == 1 and meta["method"] == "gedi" and meta["backbone"] == "mlp"

    config.model.num_clusters = 3
    with pytest.raises(NesyError, match="architecture mismatch"):
        load_pretrained_backbone(tmp_path / "run", build_model(config.model, (2,)))
    (tmp_path / "empty").mkdir()
    with pytest.raises(NesyError, match="no checkpoint.pt"):
        load_pretrained_backbone(tmp_path / "empty", fresh)
    with pytest.raises(NesyError, match="not found"):
        load_pretrained_backbone(tmp_path / "missing", fresh)


# ----------------------------------------------------------------------------- task files
@pytest.mark.parametrize("name", ["gedi_mnist", "gedi_moons", "gedi_circles", "gedi_cifar10", "gedi_cifar100",
                                  "gedi_svhn"])
def test_task_files_load(name):
    config = load_config(REPO / "tasks" / f"{name}.yaml")
    assert config.name == name
    sample_shape = (2,) if config.data.dataset in ("moons", "circles") else \
        ((1, 28, 28) if config.data.dataset == "mnist" else (3, 32, 32))
    backbone = build_model(config.model, sample_shape)
    SelfSupervised.from_config(config.gedi, sample_shape, config.model.num_clusters)
    assert backbone(torch.zeros(2, *sample_shape)).shape == (2, config.model.num_clusters)
