"""`nesy-gedi evaluate`: a perception network + circuit scored on a tuple data set, and a
train run read back from its directory (`load_run`).

Energies of the concept images
------------------------------
Beside the accuracies, `evaluate_run` reports how familiar each example's images are to the
perception: the energy E(x) = -T logsumexp(f(x) / T) of the backbone's logits f(x) for every
concept image (T: gedi.temperature in an sl+gedi or gedi->sl run of scope shared, else 1; the
energy the GEDI term trains), per example averaged and maximised over its images. With an OOD
data set (`data.ood_dataset`, or Fashion-MNIST by default for MNIST tasks when its files are
there) every test example gets a twin whose images come from that data set's test split (the
same image positions, modulo its size), and the AUROC of telling the real test examples from
their twins by -energy says whether a prediction can be flagged as resting on images the
perception never learned. Per-example energies go to `example_energies.csv` in the run.
"""
from __future__ import annotations

import csv
import io
from pathlib import Path

import torch
import torch.nn.functional as F

from .builders import TRAIN_KIND, build_circuit, build_perception
from .circuit import KnowledgeCircuit
from .clustering import energy_auroc, predict
from .config import TaskConfig
from .data.files import resolve_data_root
from .data.images import load_images, to_float
from .data.tasks import TupleDataset, build_task_data
from .errors import DataError, NesyError
from .runs import CHECKPOINT, atomic_write, load_checkpoint, load_run_config, load_weights, select_device, write_json

ENERGY_MODES = ("sl+gedi", "gedi->sl")  # the train modes whose GEDI term trains an energy
DEFAULT_OOD = {"mnist": "fashion_mnist"}  # the OOD data set of a task that names none
ENERGIES_FILE = "example_energies.csv"


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


def energy_temperature(config: TaskConfig) -> float:
    """T of the energy -T logsumexp(f / T) a run's GEDI term trains (1 without one)."""
    if config.train.mode in ENERGY_MODES and config.gedi.temperature_scope == "shared":
        return config.gedi.temperature
    return 1.0


def example_energies(perception, images: torch.Tensor, indices: torch.Tensor, batch_size: int,
                     temperature: float = 1.0) -> torch.Tensor:
    """Energies [E, P] of the concept images `images[indices]` under the perception's backbone."""
    flat = images[indices.flatten()]
    return predict(perception.backbone, flat, batch_size, temperature)[1].view(indices.shape)


def ood_images(config: TaskConfig, data_root, sample_shape: tuple) -> tuple[str | None, torch.Tensor | None, str | None]:
    """(name, test images in [-1, 1], why not) of the task's OOD data set: data.ood_dataset, or
    DEFAULT_OOD's for the task's data set when its files are at hand (never downloaded). A named
    data set that is missing or has another image shape is an error; a default one is skipped."""
    name = config.data.ood_dataset
    explicit = name is not None
    if not explicit:
        name = DEFAULT_OOD.get(config.data.dataset.strip().lower())
        if name is None:
            return None, None, f"no data.ood_dataset for data set {config.data.dataset}"
    name = name.strip().lower()
    try:
        if name.startswith("fake"):
            images = load_images(name, ".", "test")[0]
        elif name in ("folder", "arrays"):
            path = Path(config.data.path) if config.data.path else None  # absolute since loading
            images = load_images(name, ".", "test", path=path)[0]
        else:
            images = load_images(name, resolve_data_root(data_root or config.data.root), "test",
                                 download=explicit)[0]
    except DataError as error:
        if explicit:
            raise
        return None, None, f"{name} not found ({error})"
    if tuple(images.shape[1:]) != tuple(sample_shape):
        if explicit:
            raise DataError(f"data.ood_dataset {name!r} has images of shape {tuple(images.shape[1:])}, but the "
                            f"task's are {tuple(sample_shape)}: OOD images must have the same shape", config.source)
        return None, None, f"{name} has images of shape {tuple(images.shape[1:])}"
    if len(images) == 0:
        raise DataError(f"data.ood_dataset {name!r} has no test images", config.source)
    return name, to_float(images), None


def evaluate_energies(config: TaskConfig, perception, splits: dict, data_root, run_dir: Path | None = None) -> dict:
    """Energy figures of every held-out split and, with an OOD data set, the AUROC of telling the
    test examples from their OOD twins (by the mean and by the max energy of their images);
    per-example energies are written to `run_dir / ENERGIES_FILE` when `run_dir` is given."""
    batch = config.train.eval_batch_size
    temperature = energy_temperature(config)
    per_split = {name: example_energies(perception, split.images, split.indices, batch, temperature)
                 for name, split in splits.items() if name != "train"}
    test = splits["test"]
    name, pool, skipped = ood_images(config, data_root, tuple(test.images.shape[1:]))
    results = {"energy_temperature": temperature, "ood_dataset": name}
    if pool is not None:
        per_split["ood"] = example_energies(perception, pool, test.indices % len(pool), batch, temperature)
    else:
        results["ood_skipped"] = skipped
    for split, energies in per_split.items():
        results[f"{split}_energy"] = float(energies.mean(dim=1).mean())
        results[f"{split}_energy_max"] = float(energies.max(dim=1).values.mean())
    if pool is not None:
        results["ood_examples"] = len(test)
        results["ood_auroc"] = energy_auroc(per_split["test"].mean(dim=1), per_split["ood"].mean(dim=1))
        results["ood_auroc_max"] = energy_auroc(per_split["test"].max(dim=1).values,
                                                per_split["ood"].max(dim=1).values)
    if run_dir is not None:
        text = io.StringIO()
        writer = csv.writer(text, lineterminator="\n")
        positions = next(iter(per_split.values())).shape[1]
        writer.writerow(["split", "example", "energy_mean", "energy_max",
                         *(f"energy_{p}" for p in range(positions))])
        for split, energies in per_split.items():
            for row, values in enumerate(energies.tolist()):
                writer.writerow([split, row, f"{sum(values) / len(values):.6g}", f"{max(values):.6g}",
                                 *(f"{v:.6g}" for v in values)])
        atomic_write(run_dir / ENERGIES_FILE, lambda stream: stream.write(text.getvalue().encode()))
        results["example_energies"] = ENERGIES_FILE
    return results


def evaluate_run(run_dir, data_root=None, device=None) -> dict:
    """Re-evaluate a run's checkpoint on its held-out splits, with the energies of the concept
    images and their OOD AUROC (module docstring); writes evaluation.json."""
    run_dir = Path(run_dir)
    config, circuit, splits, perception, device = load_run(run_dir, data_root, device)
    results = {"run": str(run_dir), "prediction": circuit.prediction_method}
    for name, split in splits.items():
        if name != "train":
            for key, value in evaluate_split(perception, circuit, split, config.train.eval_batch_size,
                                             device).items():
                results[f"{name}_{key}"] = value
    results.update(evaluate_energies(config, perception, splits, data_root, run_dir))
    write_json(run_dir / "evaluation.json", results)
    return results
