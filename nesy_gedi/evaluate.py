"""`nesy-gedi evaluate`: a perception network + circuit scored on a tuple data set, and a\ntrain run read back from its directory (`load_run`)."""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from .builders import TRAIN_KIND, build_circuit, build_perception
from .circuit import KnowledgeCircuit
from .data.files import resolve_data_root
from .data.tasks import TupleDataset, build_task_data
from .errors import NesyError
from .runs import CHECKPOINT, load_checkpoint, load_run_config, load_weights, select_device, write_json


@torch.no_grad()
def predict_split(perception, circuit: KnowledgeCircuit, dataset: TupleDataset, batch_size: int,
                  device) -> dict:
    """Predicted labels and concepts for every example, next to the truth (all on the CPU)."""
    was_training = perception.training
    perception.eval()
    predicted_labels, predicted_concepts, concept_probs, label_log_likelihood = [], [], [], []
    for rows in torch.arange(len(dataset)).split(batch_size):
        images, _, labels = dataset.batch(rows)
        log_probs = F.log_softmax(perception(images.to(device)), dim=-1)
        label_log_likelihood.append(circuit(log_probs, labels.to(device)).cpu())
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
        "label_log_likelihood": torch.cat(label_log_likelihood),
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
        # The semantic loss on held-out examples: a label-supervised signal the engine watches.
        "label_loss": float(-predictions["label_log_likelihood"].clamp_min(-1e4).mean()),
        "examples": len(dataset),
    }


def load_run(run_dir, data_root=None, device=None, checkpoint_name: str = CHECKPOINT):
    """(config, circuit, data splits, trained perception network, device) of a `train` run,
    from any working directory: the logic file is the run's own copy."""
    run_dir = Path(run_dir)
    config = load_run_config(run_dir)
    checkpoint = load_checkpoint(run_dir, name=checkpoint_name)
    if checkpoint is None:
        raise NesyError(f"the run has no {checkpoint_name} yet", str(run_dir))
    if checkpoint.get("kind") not in (TRAIN_KIND, None):
        raise NesyError(f"not a train run (its checkpoint is of kind {checkpoint.get('kind')!r})", str(run_dir))
    device = select_device(device or config.train.device)
    circuit = build_circuit(config).to(device)
    splits = build_task_data(config, circuit, resolve_data_root(data_root or config.data.root))
    perception = build_perception(config, circuit, tuple(splits["train"].images.shape[1:]), initialise=False)
    # Checkpoints written before the engine kept the weights under "perception".
    weights = checkpoint.get("weights", checkpoint.get("perception"))
    load_weights(perception, weights, run_dir / checkpoint_name, "the perception network")
    return config, circuit, splits, perception.to(device), device


def evaluate_run(run_dir, data_root=None, device=None) -> dict:
    """Re-evaluate a run's checkpoint on its held-out splits; writes evaluation.json."""
    run_dir = Path(run_dir)
    config, circuit, splits, perception, device = load_run(run_dir, data_root, device)
    results = {"run": str(run_dir), "prediction": circuit.prediction_method}
    for name, split in splits.items():
        if name != "train":
            for key, value in evaluate_split(perception, circuit, split, config.train.eval_batch_size,
                                             device).items():
                results[f"{name}_{key}"] = value
    write_json(run_dir / "evaluation.json", results)
    return results
