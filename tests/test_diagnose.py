"""`diagnose`: a tiny real-MNIST run end to end, and the metrics on synthetic predictions."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from nesy_gedi.cli import main
from nesy_gedi.config import load_config
from nesy_gedi.diagnose import DIAGNOSIS, REPORT, diagnose_predictions, diagnose_run
from nesy_gedi.errors import NesyError
from nesy_gedi.train import build_circuit

REPO = Path(__file__).resolve().parents[1]
EVENODD = REPO / "tasks" / "mnist_evenodd.yaml"
SHIFT_BY_FIVE = np.array([5, 6, 7, 8, 9, 0, 1, 2, 3, 4])  # a bijective reasoning shortcut of MNIST-EvenOdd


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch, tmp_path):
    torch.set_num_threads(1)
    monkeypatch.setenv("NESY_GEDI_CACHE", str(tmp_path / "cache"))


@pytest.mark.mnist
def test_diagnose_a_tiny_evenodd_run(tmp_path, mnist_root, capsys, monkeypatch):
    from nesy_gedi.train import train

    config = load_config(EVENODD, ["data.train_examples=200", "data.test_examples=200", "train.epochs=1",
                                   "train.num_threads=1", "train.progress=false", "train.device=cpu"])
    run_dir = tmp_path / "run"
    train(config, run_dir, data_root=str(mnist_root), device="cpu")
    capsys.readouterr()

    diagnosis = diagnose_run(run_dir, data_root=str(mnist_root), device="cpu")
    assert "label accuracy" in capsys.readouterr().out
    for name in (DIAGNOSIS, REPORT, "confusion_matrix.png", "confusion_matrix_ood.png"):
        assert (run_dir / name).stat().st_size > 0, name
    stored = json.loads((run_dir / DIAGNOSIS).read_text())
    for key in ("label_accuracy", "label_accuracy_ood", "concept_accuracy", "concept_macro_f1",
                "matched_concept_accuracy", "concept_collapse", "mean_normalised_concept_entropy",
                "confusion_matrix", "concept_map", "concept_map_is_shortcut", "shortcuts",
                "permutation_shortcuts"):
        assert key in stored, key
    assert stored["shortcuts"] == 35 and stored["concept_maps"] == 36 and stored["permutation_shortcuts"] == 1
    matrix = np.array(stored["confusion_matrix"])
    assert matrix.shape == (10, 10)
    np.testing.assert_allclose(matrix.sum(axis=1), 1.0, atol=1e-9)
    assert stored["matched_concept_accuracy"] >= stored["concept_accuracy"] - 1e-12
    assert 0.0 <= stored["concept_collapse"] < 1.0
    assert 0.0 <= stored["mean_normalised_concept_entropy"] <= 1.0
    assert [row["true"] for row in stored["concept_map"]] == list(range(10))
    assert isinstance(stored["concept_map_is_shortcut"], bool)
    assert diagnosis["label_accuracy"] == stored["label_accuracy"]
    assert "| label_accuracy |" in (run_dir / REPORT).read_text()

    # The command line wires the same function.
    assert main(["diagnose", str(run_dir), "--data-root", str(mnist_root), "--device", "cpu"]) == 0

    # Beyond the concept-space limit the metrics remain, the shortcut checks are skipped.
    import nesy_gedi.diagnose as diagnose_module

    monkeypatch.setattr(diagnose_module, "DIAGNOSE_MAX_CONCEPT_SPACE", 10)
    unchecked = diagnose_run(run_dir, data_root=str(mnist_root), device="cpu", quiet=True)
    assert unchecked["shortcuts"] is None and unchecked["concept_map_is_shortcut"] is None
    assert unchecked["concept_accuracy"] == stored["concept_accuracy"]
    assert "not counted" in (run_dir / REPORT).read_text()


def test_diagnose_rejects_directories_that_are_not_train_runs(tmp_path, capsys):
    with pytest.raises(NesyError, match="not a run directory"):
        diagnose_run(tmp_path)
    with pytest.raises(NesyError, match="not found"):
        diagnose_run(tmp_path / "missing")
    pretrain_run = tmp_path / "pretrain"
    pretrain_run.mkdir()
    (pretrain_run / "config.yaml").write_text("name: gedi_moons\ndata: {dataset: moons}\n")
    with pytest.raises(NesyError, match="not a `train` run"):
        diagnose_run(pretrain_run)
    assert main(["diagnose", str(pretrain_run)]) == 2
    assert "not a `train` run" in capsys.readouterr().err


def _synthetic_predictions(circuit, concepts: np.ndarray, concept_map: np.ndarray) -> dict:
    """A perfect predictor composed with a concept map: one-hot concepts, the labels of the mapped tuple."""
    predicted = concept_map[concepts]
    labels, _ = circuit.deduce_labels(torch.as_tensor(concepts))
    predicted_labels, _ = circuit.deduce_labels(torch.as_tensor(predicted))
    return {
        "labels": labels,
        "concepts": torch.as_tensor(concepts),
        "predicted_labels": predicted_labels,
        "predicted_concepts": torch.as_tensor(predicted),
        "concept_probs": torch.nn.functional.one_hot(torch.as_tensor(predicted), 10).float(),
    }


def test_metrics_of_permuted_perfect_predictors():
    config = load_config(EVENODD)
    circuit = build_circuit(config)
    from nesy_gedi.shortcuts import task_support

    support = task_support(config, circuit)
    rng = np.random.default_rng(0)
    concepts = support[rng.integers(0, len(support), size=400)]

    # The identity: everything right, nothing collapsed, certain.
    perfect = diagnose_predictions(_synthetic_predictions(circuit, concepts, np.arange(10)), circuit, support)
    assert perfect["concept_accuracy"] == 1.0 and perfect["matched_concept_accuracy"] == 1.0
    assert perfect["label_accuracy"] == 1.0 and perfect["concept_collapse"] == 0.0
    assert perfect["concept_map_is_identity"] and not perfect["concept_map_is_shortcut"]
    assert perfect["mean_normalised_concept_entropy"] == pytest.approx(0.0, abs=1e-6)

    # A label-preserving permutation: labels perfect, raw concepts all wrong, matched perfect: a shortcut.
    shortcut = diagnose_predictions(_synthetic_predictions(circuit, concepts, SHIFT_BY_FIVE), circuit, support)
    assert shortcut["label_accuracy"] == 1.0
    assert shortcut["concept_accuracy"] == 0.0
    assert shortcut["matched_concept_accuracy"] == 1.0
    assert shortcut["concept_macro_f1"] == 0.0
    assert shortcut["concept_map_is_shortcut"] and not shortcut["concept_map_is_identity"]
    assert shortcut["concept_map_is_permutation"]
    assert [row["predicted"] for row in shortcut["concept_map"]] == SHIFT_BY_FIVE.tolist()
    assert all(row["share"] == 1.0 for row in shortcut["concept_map"])
    matrix = np.array(shortcut["confusion_matrix"])
    np.testing.assert_allclose(matrix, np.eye(10)[SHIFT_BY_FIVE])

    # A permutation that breaks training labels: matched still perfect, but not a shortcut.
    swap = np.arange(10)
    swap[[0, 1]] = [1, 0]
    broken = diagnose_predictions(_synthetic_predictions(circuit, concepts, swap), circuit, support)
    assert broken["matched_concept_accuracy"] == 1.0 and broken["concept_accuracy"] < 1.0
    assert not broken["concept_map_preserves_labels"] and not broken["concept_map_is_shortcut"]
    assert broken["label_accuracy"] < 1.0

    # With the full support (plain addition) the shift is no shortcut; a collapse is measured.
    assert not diagnose_predictions(_synthetic_predictions(circuit, concepts, SHIFT_BY_FIVE), circuit,
                                    None)["concept_map_is_shortcut"]
    collapsed = diagnose_predictions(_synthetic_predictions(circuit, concepts, np.full(10, 5)), circuit, support)
    assert collapsed["concept_collapse"] == pytest.approx(0.9)
    assert not collapsed["concept_map_is_permutation"] and broken["concept_map_is_permutation"]
    assert collapsed["matched_concept_accuracy"] >= collapsed["concept_accuracy"]
