"""The engine's log and its divergence guard: progress frames only on a terminal; an epoch whose
training terms explode or whose validation signals collapse is rolled back to the last good
epoch and retried at half the learning rate, a run that keeps diverging ends at its last good
epoch, and all of it survives a kill and `--resume` exactly."""
from __future__ import annotations

import io
import json
import re
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import nesy_gedi.pretrain as pretrain_module
from nesy_gedi import engine, guards
from nesy_gedi import selfsup as selfsup_module
from nesy_gedi.config import config_from_dict, load_config
from nesy_gedi.optim import build_optimizer
from nesy_gedi.pretrain import pretrain
from nesy_gedi.runs import FINAL, load_checkpoint, read_metrics
from nesy_gedi.train import train
from killing import kill_at_batch

torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
KIND = "guard_test"
LR = 0.01
STEPS = 4  # 32 examples, batch 8: optimiser steps per epoch
INPUTS = torch.randn(32, 2, generator=torch.Generator().manual_seed(0))
TARGETS = INPUTS @ torch.tensor([[1.0], [-2.0]]) + 0.5


def _config(**train):
    return config_from_dict({"name": "guard_test", "train": {
        "epochs": 3, "batch_size": 8, "lr": LR, "seed": 0, "device": "cpu", "progress": False, "num_threads": 1,
        **train}})


def _fit(run_dir, config, monkeypatch, *, resume=False, blow_up=lambda epoch, lr: False, accuracy=None,
         seen=None):
    """Fit a linear regression through the engine: (final.json's content, the trained model).

    `blow_up(epoch, lr)` multiplies the loss by 1e6 (a divergence); `accuracy(epoch, lr)` is the
    validation label accuracy the evaluation reports (else 1 / (1 + mse)); `seen` collects
    (epoch, weights) at every step. Both hooks read the learning rate the step runs at, so a
    replayed epoch (after a kill and --resume) diverges exactly as it did the first time.
    """
    optimizers = []

    def recording_optimizer(*args):
        optimizers.append(build_optimizer(*args))
        return optimizers[-1]

    monkeypatch.setattr(engine, "build_optimizer", recording_optimizer)
    with engine.open_run(config, run_dir, KIND, resume) as run:
        model = nn.Linear(2, 1)
        current = {"epoch": 0}

        def learning_rate() -> float:
            return optimizers[-1].param_groups[0]["lr"]

        def loss(rows, generator, epoch):
            current["epoch"] = epoch
            if seen is not None:
                seen.append((epoch, torch.cat([p.detach().flatten() for p in model.parameters()]).clone()))
            error = ((model(INPUTS[rows]) - TARGETS[rows]) ** 2).mean()
            if blow_up(epoch, learning_rate()):
                error = error * 1e6
            return {"mse": error, "total": error}

        def evaluate() -> dict:
            if accuracy is not None:
                return {"val_label_accuracy": accuracy(current["epoch"], learning_rate())}
            with torch.no_grad():
                return {"val_label_accuracy": 1.0 / (1.0 + float(((model(INPUTS) - TARGETS) ** 2).mean()))}

        job = engine.Job(model=model, loss=loss, num_examples=len(INPUTS), evaluate=evaluate,
                         finish=lambda records, tracker: {"epochs": [r["epoch"] for r in records if "event" not in r]})
        return engine.fit(run, job), model


def _epochs(run_dir) -> list:
    return [{k: v for k, v in r.items() if k != "seconds"} for r in read_metrics(run_dir) if "event" not in r]


def _events(run_dir, kind="rollback") -> list:
    return [r for r in read_metrics(run_dir) if r.get("event") == kind]


def _at_full_rate_in_epoch_2(epoch, lr):
    return epoch == 2 and lr == LR


# ----------------------------------------------------------------------------- the log
def test_a_log_that_is_not_a_terminal_gets_one_line_per_epoch_and_no_progress_frames(tmp_path, monkeypatch,
                                                                                     capfd):
    monkeypatch.setattr(pretrain_module, "_write_plots", lambda *args, **kwargs: [])
    config = config_from_dict({
        "name": "moons_log",
        "data": {"dataset": "moons", "toy_samples": 200, "toy_noise": 0.08, "val_examples": 50},
        "model": {"backbone": "mlp", "num_clusters": 2, "options": {"hidden": 32, "depth": 2}},
        "train": {"epochs": 3, "batch_size": 50, "lr": 0.002, "seed": 0, "device": "cpu", "progress": True},
        "gedi": {"method": "gedi", "energy_magnitude": 0.1, "augment": "points",
                 "sgld": {"buffer_size": 100, "steps": 3, "step_size": 0.01, "noise_std": 0.14,
                          "low": -3.0, "high": 3.0}},
    })
    final = pretrain(config, tmp_path)
    captured = capfd.readouterr()
    assert "\r" not in captured.err and "\r" not in captured.out
    epoch_lines = [line for line in captured.err.splitlines() if line.startswith("epoch ")]
    assert [line.split(":")[0] for line in epoch_lines] == ["epoch 1", "epoch 2", "epoch 3"]
    # A healthy run, its validation signals (energy gap, clusters) watched: nothing rolled back.
    records = _epochs(tmp_path)
    assert all(r["val_energy_gap"] == pytest.approx(r["energy_noise"] - r["val_energy_test"]) for r in records)
    assert final["rollbacks"] == 0 and final["diverged_epochs"] == [] and final["stopped_early"] is None
    assert not _events(tmp_path) and "diverged" not in captured.err
    assert [r["rollbacks"] for r in records] == [0, 0, 0]


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_gets_the_progress_bar(tmp_path, monkeypatch):
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    _fit(tmp_path, _config(epochs=1, progress=True), monkeypatch)
    assert "\r" in terminal.getvalue() and "epoch 1/1 (train)" in terminal.getvalue()


# ----------------------------------------------------------------------------- rollbacks
def test_an_exploding_epoch_is_rolled_back_and_retried_at_half_the_learning_rate(tmp_path, monkeypatch, capfd):
    seen = []
    final, _ = _fit(tmp_path, _config(progress=True), monkeypatch, blow_up=_at_full_rate_in_epoch_2, seen=seen)
    [event] = _events(tmp_path)
    assert event["epoch"] == 2 and event["restored_epoch"] == 1 and event["rollbacks"] == 1
    assert event["action"] == "retry at learning rate x0.5" and event["lr"] == LR / 2
    assert re.fullmatch(r"train_mse \S+e\+0\d, was \S+; train_total \S+e\+0\d, was \S+", event["reason"])
    log = capfd.readouterr().err
    assert re.search(r"^epoch 2 diverged \(train_mse \S+, was \S+; .*\): rolled back to epoch 1, "
                     r"learning rate x0\.5 \(now 0\.005\)$", log, re.MULTILINE)

    records = _epochs(tmp_path)
    assert [r["epoch"] for r in records] == [1, 2, 3]
    assert [r["lr"] for r in records] == [LR, LR / 2, LR / 2]
    assert [r["rollbacks"] for r in records] == [0, 1, 1]
    assert all(r["train_mse"] < 100 for r in records)  # the diverged attempt never became an epoch record
    assert final["rollbacks"] == 1 and final["diverged_epochs"] == [2] and final["stopped_early"] is None
    assert json.loads((tmp_path / FINAL).read_text())["rollbacks"] == 1
    # Both attempts at epoch 2 start from the weights epoch 1 ended with.
    assert [epoch for epoch, _ in seen] == [1] * STEPS + [2] * 2 * STEPS + [3] * STEPS
    assert torch.equal(seen[STEPS][1], seen[2 * STEPS][1])
    checkpoint = load_checkpoint(tmp_path)
    assert checkpoint["divergence"]["rollbacks"] == 1 and checkpoint["divergence"]["lr_scale"] == 0.5


def test_a_run_that_keeps_diverging_ends_at_its_last_good_epoch(tmp_path, monkeypatch):
    final, model = _fit(tmp_path / "diverging", _config(), monkeypatch, blow_up=lambda epoch, lr: epoch >= 2)
    events = _events(tmp_path / "diverging")
    assert [e["rollbacks"] for e in events] == [1, 2, 3, 4]
    assert [e["action"] for e in events] == ["retry at learning rate x0.5"] * 3 + ["stop"]
    assert [e["lr"] for e in events] == [LR / 2, LR / 4, LR / 8, LR]  # the stop keeps epoch 1's state as it was
    assert final["stopped_early"] == "diverged" and final["rollbacks"] == 4 and final["diverged_epochs"] == [2] * 4
    assert final["epochs"] == [1]
    # The final weights are epoch 1's: those of its checkpoint, and of a run that stopped after epoch 1.
    checkpoint = load_checkpoint(tmp_path / "diverging")
    _, one_epoch = _fit(tmp_path / "one_epoch", _config(epochs=1), monkeypatch)
    assert checkpoint["epoch"] == 1
    for name, value in model.state_dict().items():
        assert torch.equal(value, checkpoint["weights"][name]) and torch.equal(value, one_epoch.state_dict()[name])


def test_an_exploding_first_epoch_is_rolled_back_to_the_start(tmp_path, monkeypatch):
    calls = {"n": 0}

    def after_the_first_step_at_full_rate(epoch, lr):
        calls["n"] += 1
        return epoch == 1 and lr == LR and calls["n"] > 1

    seen = []
    final, _ = _fit(tmp_path, _config(epochs=2), monkeypatch, blow_up=after_the_first_step_at_full_rate, seen=seen)
    [event] = _events(tmp_path)
    assert event["epoch"] == 1 and event["restored_epoch"] == 0  # compared with the epoch's own first step
    assert torch.equal(seen[0][1], seen[STEPS][1])  # the retry starts from the initial weights
    assert [r["lr"] for r in _epochs(tmp_path)] == [LR / 2, LR / 2] and final["diverged_epochs"] == [1]


def test_a_collapsed_validation_signal_is_rolled_back(tmp_path, monkeypatch):
    def accuracy(epoch, lr):
        return 0.2 if epoch == 2 and lr == LR else 0.9

    final, _ = _fit(tmp_path, _config(), monkeypatch, accuracy=accuracy)
    [event] = _events(tmp_path)
    assert event["epoch"] == 2 and event["reason"] == "val_label_accuracy 0.2, best 0.9"
    assert [r["val_label_accuracy"] for r in _epochs(tmp_path)] == [0.9, 0.9, 0.9]
    assert final["rollbacks"] == 1 and final["ended_below_best"] is None


def test_final_json_says_when_the_run_ends_below_its_best_epoch(tmp_path, monkeypatch):
    scores = {1: 0.6, 2: 0.9, 3: 0.75}  # 0.15 below the best: no collapse, but worse than the best epoch
    final, _ = _fit(tmp_path, _config(), monkeypatch, accuracy=lambda epoch, lr: scores[epoch])
    assert final["rollbacks"] == 0
    assert final["ended_below_best"] == {"metric": "val_label_accuracy", "best_epoch": 2, "best": 0.9,
                                         "final_epoch": 3, "final": 0.75, "margin": engine.FINAL_MARGIN}


@pytest.mark.parametrize("killed_in", ["the retry of epoch 2", "epoch 3"])
def test_a_run_killed_after_a_rollback_resumes_to_the_same_result(tmp_path, monkeypatch, killed_in):
    straight, straight_model = _fit(tmp_path / "straight", _config(), monkeypatch, blow_up=_at_full_rate_in_epoch_2)
    call = {"the retry of epoch 2": 2 * STEPS + 2, "epoch 3": 3 * STEPS + 2}[killed_in]
    real_forward = engine._Step.forward
    kill_at_batch(monkeypatch, call)
    with pytest.raises(KeyboardInterrupt):
        _fit(tmp_path / "killed", _config(), monkeypatch, blow_up=_at_full_rate_in_epoch_2)
    monkeypatch.setattr(engine._Step, "forward", real_forward)
    resumed, resumed_model = _fit(tmp_path / "killed", _config(), monkeypatch, resume=True,
                                  blow_up=_at_full_rate_in_epoch_2)
    assert _epochs(tmp_path / "killed") == _epochs(tmp_path / "straight")
    strip = [{k: v for k, v in e.items() if k != "seconds"} for e in _events(tmp_path / "straight")]
    assert [{k: v for k, v in e.items() if k != "seconds"} for e in _events(tmp_path / "killed")] == strip
    assert resumed["rollbacks"] == straight["rollbacks"] == 1 and resumed["diverged_epochs"] == [2]
    for name, value in straight_model.state_dict().items():
        assert torch.equal(value, resumed_model.state_dict()[name])


# ----------------------------------------------------------------------------- the rules
def test_a_term_diverges_when_it_grows_a_hundredfold_past_the_floor():
    guard = guards.DivergenceGuard(guards.COLLAPSE_SIGNALS, max_rollbacks=3)
    guard.accept({"epoch": 1, "train_gedi_generative": -12.4, "train_semantic": 0.3})
    assert guard.verdict({"train_gedi_generative": -3.1e7, "train_semantic": 0.3}, {}) == \
        "train_gedi_generative -3.1e+07, was -12.4"
    assert guard.verdict({"train_gedi_generative": -900.0}, {}) is None  # under the floor
    assert guard.verdict({"train_gedi_generative": -1100.0}, {}) is None  # past the floor, under 100x
    assert guard.verdict({"train_semantic": float("inf")}, {}) == "train_semantic inf"
    # A term no good epoch had is compared with the epoch's first step.
    assert guard.verdict({"train_gedi_prior": 2e6}, {"gedi_prior": 2.3}) == "train_gedi_prior 2e+06, was 2.3"
    assert guard.verdict({"train_gedi_prior": 2e6}, {}) is None


def test_validation_signals_collapse_relative_to_their_best_good_epoch():
    guard = guards.DivergenceGuard(guards.COLLAPSE_SIGNALS, max_rollbacks=3)
    assert guard.verdict({"val_largest_cluster": 0.99, "val_label_accuracy": 0.0}, {}) is None  # nothing to compare
    guard.accept({"val_label_accuracy": 0.8, "val_largest_cluster": 0.5, "val_energy_gap": 4.0})
    guard.accept({"val_label_accuracy": 0.6, "val_largest_cluster": 0.6, "val_energy_gap": 2.0})
    assert guard.best == {"val_label_accuracy": 0.8, "val_largest_cluster": 0.5, "val_energy_gap": 4.0}
    assert guard.verdict({"val_label_accuracy": 0.56}, {}) is None
    assert guard.verdict({"val_label_accuracy": 0.5}, {}) == "val_label_accuracy 0.5, best 0.8"
    assert guard.verdict({"val_largest_cluster": 0.85}, {}) is None  # worse, but not near one cluster
    assert guard.verdict({"val_largest_cluster": 0.95}, {}) == "val_largest_cluster 0.95, best 0.5"
    assert guard.verdict({"val_energy_gap": -3.0}, {}) is None  # inverted, by less than its best size
    assert guard.verdict({"val_energy_gap": -5.0}, {}) == "val_energy_gap -5, best 4"
    assert guard.verdict({"val_energy_gap": float("nan")}, {}) == "val_energy_gap nan, best 4"
    assert guard.verdict({"val_concept_accuracy": 0.0, "val_label_accuracy": None}, {}) is None
    restored = guards.DivergenceGuard(guards.COLLAPSE_SIGNALS, max_rollbacks=3)
    restored.load_state_dict(guard.state_dict())
    assert restored.state_dict() == guard.state_dict()


# ----------------------------------------------------------------------------- why energies run away
@pytest.mark.mnist
def test_sl_gedi_bounds_the_energies_with_gedi_energy_magnitude(mnist_root, tmp_path, monkeypatch):
    """Contrastive divergence alone is unbounded below (data energies can fall without end while
    short-run SGLD negatives lag); the squared-energy term of gedi.energy_magnitude bounds it,
    and the sl+gedi path applies it as pretraining does."""
    real, weights = selfsup_module.gedi_objective, []

    def recording_objective(*args, **kwargs):
        weights.append(args[4])
        return real(*args, **kwargs)

    monkeypatch.setattr(selfsup_module, "gedi_objective", recording_objective)
    config = load_config(REPO / "tasks" / "mnist_addition.yaml", [
        "train.mode=sl+gedi", "gedi.energy_magnitude=0.1", "data.train_examples=32", "data.test_examples=20",
        "data.val_examples=20", "train.epochs=1", "train.batch_size=16", "train.progress=false",
        "train.num_threads=1", "gedi.sgld.steps=2", "gedi.sgld.buffer_size=32"])
    train(config, tmp_path, data_root=str(mnist_root))
    assert weights and all(w.energy_magnitude == 0.1 and w.generative == 1.0 for w in weights)
