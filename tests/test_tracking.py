"""TensorBoard: every scalar of metrics.jsonl, the pretraining sample grid and energy
histograms, diagnose's confusion matrix, read back from the event files; a clear hint when
tensorboard is missing."""
from __future__ import annotations

import builtins
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from nesy_gedi.config import load_config
from nesy_gedi.diagnose import diagnose_run
from nesy_gedi.errors import ConfigError
from nesy_gedi.pretrain import pretrain
from nesy_gedi.runs import read_metrics
from nesy_gedi.tracking import TENSORBOARD_HINT, Tracker
from nesy_gedi.train import train

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[1]


def events(run_dir: Path) -> EventAccumulator:
    accumulator = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"images": 0, "histograms": 0})
    accumulator.Reload()
    return accumulator


def test_pretrain_writes_every_scalar_the_sample_grid_and_energy_histograms(tmp_path):
    config = load_config(ROOT / "tasks" / "gedi_mnist.yaml",
                         ["data.dataset=fake:1x28x28:10:64", "data.ood_dataset=null", "train.epochs=2",
                          "train.batch_size=32", "gedi.sgld.steps=2", "gedi.sgld.buffer_size=64",
                          "train.progress=false", "train.tensorboard=true", "train.device=cpu"])
    pretrain(config, tmp_path)
    accumulator = events(tmp_path)
    records = [r for r in read_metrics(tmp_path) if "event" not in r]
    for record in records:
        for key, value in record.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and key != "epoch":
                logged = {e.step: e.value for e in accumulator.Scalars(key)}
                assert logged[record["epoch"]] == pytest.approx(value, rel=1e-6), key
    assert "samples" in accumulator.Tags()["images"]
    assert {"energy/test", "energy/uniform noise"} <= set(accumulator.Tags()["histograms"])


@pytest.mark.mnist
def test_train_writes_its_metrics_to_tensorboard(mnist_root, tmp_path):
    config = load_config(ROOT / "tasks" / "mnist_addition.yaml",
                         ["data.train_examples=64", "data.test_examples=20", "train.epochs=2", "train.progress=false"])
    config.train.tensorboard = True
    train(config, tmp_path, data_root=str(mnist_root))
    accumulator = events(tmp_path)
    accuracy = [e.value for e in accumulator.Scalars("test_label_accuracy")]
    assert accuracy == pytest.approx([r["test_label_accuracy"] for r in read_metrics(tmp_path)])
    diagnose_run(tmp_path, data_root=str(mnist_root), quiet=True)
    image = events(tmp_path).Images("diagnose/confusion_matrix")[-1]
    assert image.width > 100 and image.height > 100


def test_missing_tensorboard_is_a_one_line_install_hint(tmp_path, monkeypatch):
    real_import = builtins.__import__

    def no_tensorboard(name, *args, **kwargs):
        if name.startswith("torch.utils.tensorboard"):
            raise ImportError("No module named 'tensorboard'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tensorboard)
    with pytest.raises(ConfigError) as caught:
        Tracker(tmp_path, tensorboard=True, source="task.yaml")
    assert str(caught.value) == f"task.yaml: {TENSORBOARD_HINT}"
