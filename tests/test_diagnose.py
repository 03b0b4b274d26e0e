"""`diagnose`: a tiny real-MNIST run end to end, and the metrics on synthetic predictions."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import yaml

import nesy_gedi.diagnose as diagnose_module
from nesy_gedi.builders import build_circuit
from nesy_gedi.cli import main
from nesy_gedi.config import load_config
from nesy_gedi.count_shortcuts import count_shortcuts_for_task, task_support
from nesy_gedi.diagnose import DIAGNOSIS, REPORT, diagnose_predictions, diagnose_run, name_shortcut
from nesy_gedi.errors import NesyError
from nesy_gedi.shortcuts import count_shortcuts

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
    assert stored["suggested_labels"]["values"] == [0, 1]
    assert stored["suggested_labels"]["shortcuts_left_by_budget"] == [35, 5, 0]
    if stored["concept_map_is_shortcut"]:
        assert stored["learned_shortcut"]["suggested_labels_moved"]
    else:
        assert stored["learned_shortcut"] is None
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
    monkeypatch.setattr(diagnose_module, "DIAGNOSE_MAX_CONCEPT_SPACE", 10)
    unchecked = diagnose_run(run_dir, data_root=str(mnist_root), device="cpu", quiet=True)
    assert unchecked["shortcuts"] is None and unchecked["concept_map_is_shortcut"] is None
    assert unchecked["learned_shortcut"] is None and unchecked["suggested_labels"] is None
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
    assert shortcut["concept_nmi"] == pytest.approx(1.0)  # names wrong, partition right
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
    assert collapsed["concept_nmi"] == pytest.approx(0.0, abs=1e-12)  # one value says nothing about the digit
    assert not collapsed["concept_map_is_permutation"] and broken["concept_map_is_permutation"]
    assert collapsed["matched_concept_accuracy"] >= collapsed["concept_accuracy"]


def test_name_shortcut_names_the_map_and_the_labels_that_exclude_it():
    config = load_config(EVENODD)
    circuit = build_circuit(config)
    count = count_shortcuts(circuit, task_support(config, circuit))
    values = list(range(10))
    named = name_shortcut(values, SHIFT_BY_FIVE.tolist(), count)
    assert named == {"map": "0->5 1->6 2->7 3->8 4->9 5->0 6->1 7->2 8->3 9->4", "moved_values": values,
                     "suggested_labels": [0, 1], "suggested_labels_moved": [0, 1],
                     "permutation_suggested_labels": [0], "permutation_suggested_labels_moved": [0]}
    shortcuts = [m for m in count["maps"] if m != values]
    assert len(shortcuts) == 35
    for concept_map in shortcuts:
        named = name_shortcut(values, concept_map, count)
        moved = [v for v in values if concept_map[v] != v]
        assert named["moved_values"] == moved and named["map"].split() == [f"{v}->{concept_map[v]}" for v in moved]
        # The suggested labels exclude every shortcut: each one moves at least one of them.
        assert named["suggested_labels_moved"] == [v for v in (0, 1) if v in moved] != []
        assert ("permutation_suggested_labels" in named) == (sorted(concept_map) == values)
    # With one label of 0 five shortcuts are left: they fix 0, so only the label of 1 excludes them.
    fixing_zero = [m for m in shortcuts if m[0] == 0]
    assert len(fixing_zero) == count["suggested_labels"]["shortcuts_left_by_budget"][1] == 5
    assert all(name_shortcut(values, m, count)["suggested_labels_moved"] == [1] for m in fixing_zero)


class _Split:
    def __init__(self, concepts: np.ndarray):
        self.concepts = concepts

    def __len__(self) -> int:
        return len(self.concepts)


def test_diagnose_run_names_a_learned_shortcut(tmp_path, monkeypatch, capsys):
    """diagnose_run on a run whose perception network predicts the shift-by-five shortcut
    (loading and prediction replaced: no data or training needed)."""
    config = load_config(EVENODD)
    circuit = build_circuit(config)
    support = task_support(config, circuit)
    rng = np.random.default_rng(1)
    inside = set(map(tuple, support.tolist()))
    outside = np.array([(a, b) for a in range(10) for b in range(10) if (a, b) not in inside])
    splits = {"test": _Split(support[rng.integers(0, len(support), size=300)]),
              "test_ood": _Split(outside[rng.integers(0, len(outside), size=300)])}
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
    learned = {"map": SHIFT_BY_FIVE}
    monkeypatch.setattr(diagnose_module, "load_run", lambda *args: (config, circuit, splits, None, "cpu"))
    monkeypatch.setattr(diagnose_module, "predict_split", lambda perception, circuit, split, batch, device:
                        _synthetic_predictions(circuit, split.concepts, learned["map"]))

    diagnosis = diagnose_run(run_dir)
    printed = capsys.readouterr().out
    assert diagnosis["concept_map_is_shortcut"] and diagnosis["label_accuracy"] == 1.0
    assert diagnosis["label_accuracy_ood"] < 1.0
    named = diagnosis["learned_shortcut"]
    assert named["map"] == "0->5 1->6 2->7 3->8 4->9 5->0 6->1 7->2 8->3 9->4"
    assert named["suggested_labels"] == [0, 1] and named["suggested_labels_moved"] == [0, 1]
    assert named["permutation_suggested_labels_moved"] == [0]
    assert diagnosis["suggested_labels"]["values"] == [0, 1]
    stored = json.loads((run_dir / DIAGNOSIS).read_text())
    assert stored["learned_shortcut"] == named
    assert stored["shortcut_count"]["permutation_suggested_labels"]["values"] == [0]
    report = (run_dir / REPORT).read_text()
    assert "The learned shortcut is `0->5 1->6 2->7 3->8 4->9 5->0 6->1 7->2 8->3 9->4`" in report
    assert "One labelled image of each of the values **0 1** excludes every shortcut" in report
    assert "this map moves 0 1 of them" in report
    assert "learned shortcut         0->5 1->6 2->7 3->8 4->9 5->0 6->1 7->2 8->3 9->4" in printed
    assert "suggested labels         0 1 exclude every shortcut; this map moves 0 1" in printed

    # A merging shortcut that fixes 0: only the label of 1 among the suggested ones excludes it.
    merge = next(np.array(m) for m in count_shortcuts(circuit, support)["maps"]
                 if m[0] == 0 and m != list(range(10)) and sorted(m) != list(range(10)))
    learned["map"] = merge
    named = diagnose_run(run_dir, quiet=True)["learned_shortcut"]
    assert named["suggested_labels_moved"] == [1] and "permutation_suggested_labels" not in named
    assert named["moved_values"] == [v for v in range(10) if merge[v] != v]

    # The truth: no shortcut to name, the task's suggestion is still reported.
    learned["map"] = np.arange(10)
    truth = diagnose_run(run_dir)
    assert truth["learned_shortcut"] is None and truth["concept_map_is_identity"]
    assert "suggested labels         0 1 exclude every shortcut of the task" in capsys.readouterr().out
    assert "learned shortcut is" not in (run_dir / REPORT).read_text()


def test_count_shortcuts_for_task_lives_in_the_command_layer():
    restricted = Path(__file__).resolve().parents[1] / "tasks" / "mnist_addition_restricted.yaml"
    result = count_shortcuts_for_task(restricted, ["data.train_support.constraint=a[0] < 5 and b[0] >= 5"])
    # Its header: this restriction leaves 5 shortcuts, the shifts a -> a + k, b -> b - k.
    assert result["support_size"] == 25 and result["shortcuts"] == 5
    assert result["task"] == "mnist_addition_restricted" and result["params"] == {"N": 1}
    assert result["suggested_labels"]["shortcuts_left_by_budget"] == [5, 0]
    assert "maps" not in count_shortcuts_for_task(restricted, list_limit=1)
