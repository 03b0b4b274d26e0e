"""nesy_gedi.clustering against known values: a backbone whose logits are set by hand, collapse
statistics computed on paper, sklearn/scipy as the reference for the clustering scores and the
AUROC, and the count-weighted identity between per-class and overall OOD AUROCs."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats
from sklearn import metrics as skm
from torch import nn

from nesy_gedi.clustering import (as_input, cluster_metrics, cluster_statistics, energy_auroc,
                                  evaluate_clusters, ood_auroc_by_class, predict)

torch.set_num_threads(1)


class FixedLogits(nn.Module):
    """logits = inputs[:, :C] @ weight: with weight = I the inputs ARE the logits."""

    def __init__(self, weight: torch.Tensor):
        super().__init__()
        self.weight = nn.Parameter(weight.clone())
        self.seen: list[torch.Tensor] = []
        self.modes: list[bool] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x.detach().clone())
        self.modes.append(self.training)
        return x.flatten(1)[:, : self.weight.shape[0]] @ self.weight


# ----------------------------------------------------------------------------- predict
def test_predict_returns_argmax_and_minus_logsumexp_of_hand_set_logits():
    logits = torch.tensor([[2.0, 0.0, 0.0],
                           [0.0, 0.0, 5.0],
                           [1.0, 3.0, -1.0],
                           [0.0, 0.0, 0.0],   # a tie: argmax takes the first
                           [-4.0, -2.0, -3.0]])
    backbone = FixedLogits(torch.eye(3))
    assignments, energies = predict(backbone, logits, batch_size=2)
    assert assignments.dtype == torch.int64 and assignments.tolist() == [0, 2, 1, 0, 1]
    expected = [-math.log(math.exp(2) + 2), -math.log(2 + math.exp(5)), -math.log(math.e + math.exp(3) + math.exp(-1)),
                -math.log(3.0), -math.log(math.exp(-4) + math.exp(-2) + math.exp(-3))]
    assert energies.dtype == torch.float32
    torch.testing.assert_close(energies, torch.tensor(expected), atol=1e-6, rtol=0)
    # Batched in chunks of 2 (2 + 2 + 1), each chunk seen once, in order, in eval mode.
    assert [len(x) for x in backbone.seen] == [2, 2, 1]
    torch.testing.assert_close(torch.cat(backbone.seen), logits)
    assert backbone.modes == [False, False, False]
    assert backbone.training  # the module's own mode is restored afterwards
    one_batch = predict(FixedLogits(torch.eye(3)), logits, batch_size=1000)
    assert torch.equal(one_batch[0], assignments) and torch.equal(one_batch[1], energies)
    # At an energy temperature T: E = -T logsumexp(f / T), tending to -max f as T -> 0; clusters unchanged.
    cold_assignments, cold = predict(FixedLogits(torch.eye(3)), logits, temperature=0.5)
    assert torch.equal(cold_assignments, assignments)
    torch.testing.assert_close(cold, -0.5 * torch.logsumexp(logits / 0.5, dim=1))
    assert cold[0] == pytest.approx(-0.5 * math.log(math.exp(4) + 2), abs=1e-6)
    frozen = predict(FixedLogits(torch.eye(3)), logits, temperature=1e-3)[1]
    torch.testing.assert_close(frozen[:3], -logits.max(dim=1).values[:3], atol=1e-5, rtol=0)


def test_predict_keeps_eval_mode_converts_uint8_and_handles_empty_inputs():
    backbone = FixedLogits(torch.eye(2)).eval()
    images = torch.tensor([[[[0, 255]]], [[[255, 0]]], [[[128, 127]]]], dtype=torch.uint8)  # [3, 1, 1, 2]
    assignments, energies = predict(backbone, images)
    # uint8 -> [-1, 1]: 0 -> -1, 255 -> 1, 128 -> 1/255, 127 -> -1/255
    assert assignments.tolist() == [1, 0, 0]
    torch.testing.assert_close(backbone.seen[0].flatten(1), torch.tensor([[-1.0, 1.0], [1.0, -1.0],
                                                                          [1 / 255, -1 / 255]]))
    torch.testing.assert_close(energies[:2], torch.full((2,), -math.log(math.e + math.exp(-1))))
    assert not backbone.training
    empty_assignments, empty_energies = predict(backbone, torch.zeros(0, 2))
    assert empty_assignments.shape == (0,) and empty_assignments.dtype == torch.int64
    assert empty_energies.shape == (0,)
    # as_input: uint8 is scaled, float passes as float32 unchanged
    torch.testing.assert_close(as_input(torch.tensor([0, 255], dtype=torch.uint8)), torch.tensor([-1.0, 1.0]))
    points = torch.tensor([[0.25, -3.0]], dtype=torch.float64)
    assert as_input(points).dtype == torch.float32 and as_input(points).tolist() == [[0.25, -3.0]]


# ----------------------------------------------------------------------------- statistics
def test_cluster_statistics_hand_values():
    statistics = cluster_statistics(torch.tensor([0, 0, 0, 1]), num_clusters=3)
    assert statistics["largest_cluster"] == 0.75 and statistics["clusters_used"] == 2
    assert statistics["cluster_entropy"] == pytest.approx(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
                                                          / math.log(3), abs=1e-12)
    balanced = cluster_statistics(torch.tensor([2, 0, 1, 3, 3, 1, 0, 2]), num_clusters=4)
    assert balanced == {"largest_cluster": 0.25, "cluster_entropy": pytest.approx(1.0, abs=1e-12),
                        "clusters_used": 4}
    collapsed = cluster_statistics(torch.tensor([1, 1, 1]), num_clusters=5)
    assert collapsed == {"largest_cluster": 1.0, "cluster_entropy": 0.0, "clusters_used": 1}
    assert cluster_statistics(torch.tensor([0, 0]), num_clusters=1)["cluster_entropy"] == 0.0


def test_cluster_metrics_hand_case_and_sklearn():
    labels = torch.tensor([0, 0, 0, 1, 1, 1])
    assignments = torch.tensor([1, 1, 0, 0, 0, 0])
    energies = torch.tensor([-1.0, -2.0, -3.0, 0.0, 1.0, 2.0])
    scores = cluster_metrics(labels, assignments, energies, num_clusters=2)
    assert scores["cluster_accuracy"] == pytest.approx(5 / 6, abs=1e-12)  # cluster 1 -> 0, cluster 0 -> 1
    # ARI by hand: sum C(n_ij, 2) = 1 + 3 = 4, rows 3 + 3 = 6, columns 1 + 6 = 7, C(6, 2) = 15:
    # (4 - 6 * 7 / 15) / ((6 + 7) / 2 - 6 * 7 / 15) = 12 / 37
    assert scores["ari"] == pytest.approx(12 / 37, abs=1e-12)
    assert scores["nmi"] == pytest.approx(skm.normalized_mutual_info_score(labels, assignments), abs=1e-12)
    assert scores["energy_test"] == pytest.approx(-0.5, abs=1e-7)
    assert scores["largest_cluster"] == pytest.approx(4 / 6) and scores["clusters_used"] == 2
    # A relabelled perfect clustering scores 1 everywhere.
    perfect = cluster_metrics(labels, 1 - labels, energies, num_clusters=2)
    assert (perfect["cluster_accuracy"], perfect["nmi"], perfect["ari"]) == (1.0, pytest.approx(1.0), 1.0)
    # More clusters than classes: one-to-one matching, the extra cluster's samples are errors.
    three = cluster_metrics(torch.tensor([0, 0, 1, 1]), torch.tensor([2, 2, 0, 1]), torch.zeros(4), num_clusters=3,
                            num_classes=3)
    assert three["cluster_accuracy"] == 0.75 and three["clusters_used"] == 3


def test_evaluate_clusters_is_cluster_metrics_of_predict():
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(40, 4, generator=generator)
    labels = torch.randint(0, 4, (40,), generator=generator)
    backbone = FixedLogits(torch.randn(4, 4, generator=generator))
    assignments, energies = predict(backbone, inputs)
    expected = cluster_metrics(labels, assignments, energies, 4)
    assert evaluate_clusters(backbone, inputs, labels, 4, batch_size=7) == expected
    with torch.no_grad():
        mean_energy = float(-torch.logsumexp(inputs @ backbone.weight, 1).mean())
    assert expected["energy_test"] == pytest.approx(mean_energy, abs=1e-6)


# ----------------------------------------------------------------------------- AUROC
def test_energy_auroc_hand_values_and_mann_whitney():
    # -energy is the in-distribution score: lower energies in-distribution -> 1.0
    assert energy_auroc(torch.tensor([-3.0, -2.0]), torch.tensor([0.0, 1.0, 5.0])) == 1.0
    assert energy_auroc(torch.tensor([0.0, 1.0]), torch.tensor([-3.0, -2.0])) == 0.0
    # Scores 2, 0 against -1, 0, 3: 3 of the 6 (in, out) pairs ordered right, one tie counted 1/2
    energy_in, energy_out = torch.tensor([-2.0, 0.0]), torch.tensor([1.0, 0.0, -3.0])
    assert energy_auroc(energy_in, energy_out) == pytest.approx(3.5 / 6, abs=1e-12)
    generator = torch.Generator().manual_seed(1)
    energy_in = torch.randint(-5, 5, (30,), generator=generator).float()  # many ties
    energy_out = torch.randint(-3, 7, (25,), generator=generator).float()
    u = stats.mannwhitneyu(-energy_in.numpy(), -energy_out.numpy()).statistic
    assert energy_auroc(energy_in, energy_out) == pytest.approx(u / (30 * 25), abs=1e-12)
    assert energy_auroc(torch.tensor([0.0, float("nan")]), torch.tensor([1.0])) is None
    assert energy_auroc(torch.tensor([0.0]), torch.tensor([float("inf")])) is None


def test_ood_auroc_by_class_count_weighted_is_the_overall_auroc():
    generator = torch.Generator().manual_seed(2)
    test_energy = torch.randn(50, generator=generator)
    ood_labels = torch.tensor([0] * 7 + [1] * 20 + [3] * 13)[torch.randperm(40, generator=generator)]
    # Each OOD class sits at its own offset, so the per-class AUROCs differ.
    ood_energy = torch.randn(40, generator=generator) + torch.tensor([-0.5, 1.0, 0.0, 3.0])[ood_labels]
    names = ["zero", "one", "two", "three"]
    by_class = ood_auroc_by_class(test_energy, ood_energy, ood_labels, names)
    assert list(by_class) == ["zero", "one", "three"]  # class 2 is absent
    for k, name in ((0, "zero"), (1, "one"), (3, "three")):
        assert by_class[name] == energy_auroc(test_energy, ood_energy[ood_labels == k])
    assert by_class["three"] > by_class["one"] > by_class["zero"]  # further out -> easier to detect
    counts = {"zero": 7, "one": 20, "three": 13}
    weighted = sum(counts[name] * value for name, value in by_class.items()) / 40
    # AUROC = (1 / (n_in n_out)) sum over pairs, and the pairs split by OOD class: exact up to rounding.
    assert weighted == pytest.approx(energy_auroc(test_energy, ood_energy), abs=1e-12)
    overall = skm.roc_auc_score(np.r_[np.ones(50), np.zeros(40)], -np.r_[test_energy.numpy(), ood_energy.numpy()])
    assert weighted == pytest.approx(overall, abs=1e-12)
