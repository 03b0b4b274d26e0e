"""Evaluation of a perception network + circuit on a tuple data set."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .circuit import KnowledgeCircuit
from .data.tasks import TupleDataset


@torch.no_grad()
def predict_split(perception, circuit: KnowledgeCircuit, dataset: TupleDataset, batch_size: int,
                  device) -> dict:
    """Predicted labels and concepts for every example, next to the truth (all on the CPU)."""
    was_training = perception.training
    perception.eval()
    predicted_labels, predicted_concepts, concept_probs = [], [], []
    for rows in torch.arange(len(dataset)).split(batch_size):
        images, _, _ = dataset.batch(rows)
        log_probs = F.log_softmax(perception(images.to(device)), dim=-1)
        predicted_labels.append(circuit.predict(log_probs).cpu())
        predicted_concepts.append(circuit.concept_values(log_probs.argmax(dim=-1)).cpu())
        concept_probs.append(log_probs.exp().cpu())
    perception.train(was_training)
    return {
        "labels": dataset.labels,
        "concepts": dataset.concepts,
        "predicted_labels": torch.cat(predicted_labels),
        "predicted_concepts": torch.cat(predicted_concepts),
        "concept_probs": torch.cat(concept_probs),
    }


def evaluate_split(perception, circuit: KnowledgeCircuit, dataset: TupleDataset, batch_size: int,
                   device) -> dict:
    """label_accuracy: every label of the example right; concept_accuracy: per concept position."""
    predictions = predict_split(perception, circuit, dataset, batch_size, device)
    label_correct = (predictions["predicted_labels"] == predictions["labels"]).all(dim=1)
    concept_correct = predictions["predicted_concepts"] == predictions["concepts"]
    return {
        "label_accuracy": float(label_correct.float().mean()),
        "concept_accuracy": float(concept_correct.float().mean()),
        "examples": len(dataset),
    }


def load_run(run_dir, data_root=None, device=None):
    """Config, circuit, data splits and trained perception network of a `train` run."""
    from .config import config_from_dict
    from .data.images import resolve_data_root
    from .data.tasks import build_task_data
    from .errors import NesyError
    from .runs import CONFIG, load_checkpoint, select_device
    from .train import build_circuit, build_perception

    import yaml

    config_path = run_dir / CONFIG
    if not config_path.exists():
        raise NesyError(f"not a run directory (no {CONFIG})", str(run_dir))
    config = config_from_dict(yaml.safe_load(config_path.read_text()), str(config_path))
    checkpoint = load_checkpoint(run_dir)
    if checkpoint is None or "perception" not in checkpoint:
        raise NesyError("the run has no training checkpoint yet", str(run_dir))
    device = select_device(device or config.train.device)
    circuit = build_circuit(config).to(device)
    splits = build_task_data(config, circuit, resolve_data_root(data_root or config.data.root))
    config.model.init = None  # the checkpoint already holds the trained weights
    perception = build_perception(config, circuit, splits["train"].images.shape[1])
    perception.load_state_dict(checkpoint["perception"])
    return config, circuit, splits, perception.to(device), device


def evaluate_run(run_dir, data_root=None, device=None) -> dict:
    """Re-evaluate a run's checkpoint on its test splits; writes evaluation.json."""
    from .runs import write_json

    config, circuit, splits, perception, device = load_run(run_dir, data_root, device)
    results = {"run": str(run_dir), "prediction": circuit.prediction_method}
    for name, split in splits.items():
        if name != "train":
            for key, value in evaluate_split(perception, circuit, split, config.train.eval_batch_size,
                                             device).items():
                results[f"{name}_{key}"] = value
    write_json(run_dir / "evaluation.json", results)
    return results
