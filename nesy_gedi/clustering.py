"""Scoring a backbone's cluster logits: assignments and energies, clustering metrics against
labels, collapse statistics, and the energy score's OOD AUROC."""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from . import metrics
from .data.images import to_float
from .objectives import energy


def as_input(batch: Tensor) -> Tensor:
    """uint8 images -> the model's [-1, 1] floats; float inputs (toy points) pass as they are."""
    return to_float(batch) if batch.dtype == torch.uint8 else batch.float()


@torch.no_grad()
def predict(backbone: nn.Module, inputs: Tensor, batch_size: int = 1000,
            temperature: float = 1.0) -> tuple[Tensor, Tensor]:
    """(cluster assignments [N] int64, energies [N] float) on the CPU, in eval mode; the energy
    -T logsumexp(f / T) at the objective's energy temperature T."""
    device = next(backbone.parameters()).device
    was_training = backbone.training
    backbone.eval()
    assignments, energies = [], []
    for start in range(0, len(inputs), batch_size):
        logits = backbone(as_input(inputs[start:start + batch_size]).to(device)).float()
        assignments.append(logits.argmax(dim=-1).cpu())
        energies.append(energy(logits, temperature).cpu())
    backbone.train(was_training)
    if not assignments:
        return torch.zeros(0, dtype=torch.int64), torch.zeros(0)
    return torch.cat(assignments), torch.cat(energies)


def cluster_statistics(assignments: Tensor, num_clusters: int) -> dict:
    """Collapse diagnostics of hard assignments: the largest cluster's fraction of the inputs,
    the entropy of the cluster histogram divided by log C (1 = perfectly balanced), clusters used."""
    counts = torch.bincount(assignments, minlength=num_clusters).double()
    fractions = counts / counts.sum().clamp_min(1)
    nonzero = fractions[fractions > 0]
    entropy = max(0.0, float(-(nonzero * nonzero.log()).sum()) / math.log(num_clusters)) if num_clusters > 1 else 0.0
    return {"largest_cluster": float(fractions.max()), "cluster_entropy": entropy,
            "clusters_used": int((counts > 0).sum())}


def cluster_metrics(labels: Tensor, assignments: Tensor, energies: Tensor, num_clusters: int,
                    num_classes: int | None = None) -> dict:
    """Hungarian cluster accuracy, NMI and ARI against `labels`, `cluster_statistics`, and the
    mean energy of the inputs ("energy_test")."""
    classes = max(num_classes or 0, int(labels.max()) + 1)
    accuracy, _ = metrics.cluster_accuracy(labels, assignments, num_classes=classes)
    return {"cluster_accuracy": accuracy, "nmi": metrics.nmi(labels, assignments),
            "ari": metrics.ari(labels, assignments), **cluster_statistics(assignments, num_clusters),
            "energy_test": float(energies.mean())}


def evaluate_clusters(backbone: nn.Module, inputs: Tensor, labels: Tensor, num_clusters: int,
                      batch_size: int = 1000, num_classes: int | None = None, temperature: float = 1.0) -> dict:
    """`cluster_metrics` of the backbone's argmax-logit clusters on `inputs`."""
    assignments, energies = predict(backbone, inputs, batch_size, temperature)
    return cluster_metrics(labels, assignments, energies, num_clusters, num_classes)


def energy_auroc(energy_in: Tensor, energy_out: Tensor) -> float | None:
    """AUROC with -energy as the in-distribution score; None when an energy is not finite."""
    if not (torch.isfinite(energy_in).all() and torch.isfinite(energy_out).all()):
        return None
    return metrics.auroc(-energy_in, -energy_out)


def ood_auroc_by_class(test_energy: Tensor, ood_energy: Tensor, ood_labels: Tensor,
                       names: list[str]) -> dict[str, float | None]:
    """AUROC of the in-distribution test set against each OOD class on its own: where the
    overall figure is lost (e.g. MNIST vs Fashion-MNIST's trousers, dresses and sneakers)."""
    return {names[k]: energy_auroc(test_energy, ood_energy[ood_labels == k])
            for k in range(len(names)) if bool((ood_labels == k).any())}
