import itertools
import math

import numpy as np
import pytest
import torch
from scipy import stats
from sklearn import metrics as skm

from nesy_gedi.data.toy import make_toy
from nesy_gedi.metrics import (
    all_right_probability,
    ari,
    auroc,
    cluster_accuracy,
    confusion_matrix,
    macro_f1,
    matched_accuracy,
    nmi,
)


def test_cluster_accuracy_of_permuted_labelling_is_one_and_returns_permutation():
    rng = np.random.default_rng(0)
    true = rng.integers(0, 5, size=200)
    perm = np.array([3, 0, 4, 1, 2])  # true class c -> cluster perm[c]
    pred = perm[true]
    acc, mapping = cluster_accuracy(true, pred)
    assert acc == 1.0
    assert mapping == {int(perm[c]): c for c in range(5)}
    # Torch input gives the same answer.
    acc_t, mapping_t = cluster_accuracy(torch.from_numpy(true), torch.from_numpy(pred))
    assert acc_t == 1.0 and mapping_t == mapping


def test_cluster_accuracy_hand_case():
    true = [0, 0, 0, 1, 1, 1]
    pred = [1, 1, 0, 0, 0, 0]
    # Best matching: cluster 1 -> class 0 (2 right), cluster 0 -> class 1 (3 right).
    acc, mapping = cluster_accuracy(true, pred)
    assert acc == pytest.approx(5 / 6)
    assert mapping == {1: 0, 0: 1}
    assert matched_accuracy(true, pred) == pytest.approx(5 / 6)


def test_cluster_accuracy_more_clusters_than_classes_is_one_to_one():
    true = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    pred = np.array([0, 0, 2, 2, 1, 1, 1, 3])
    acc, mapping = cluster_accuracy(true, pred)
    # Only two clusters can be matched; the other clusters' samples are errors.
    assert acc == pytest.approx(5 / 8)
    assert mapping[1] == 1 and len(mapping) == 2 and mapping.get(3) is None
    assert set(mapping.values()) == {0, 1}


def test_cluster_accuracy_num_classes_and_validation():
    acc, mapping = cluster_accuracy([0, 1], [0, 0], num_classes=3)
    assert acc == 0.5 and mapping[0] in (0, 1)
    with pytest.raises(ValueError):
        cluster_accuracy([0, 3], [0, 1], num_classes=3)
    with pytest.raises(ValueError):
        cluster_accuracy([0, 1, 2], [0, 1])
    with pytest.raises(ValueError):
        cluster_accuracy([0, -1], [0, 1])


def _brute_force_accuracy(true: np.ndarray, pred: np.ndarray, n_clusters: int, n_classes: int) -> float:
    """The best one-to-one matching of clusters to classes, by trying every injective map."""
    best = 0
    small, large = min(n_clusters, n_classes), max(n_clusters, n_classes)
    for chosen in itertools.permutations(range(large), small):
        if n_clusters <= n_classes:  # cluster k -> class chosen[k]
            right = sum(int(np.sum((pred == k) & (true == c))) for k, c in enumerate(chosen))
        else:  # class c -> cluster chosen[c]
            right = sum(int(np.sum((pred == k) & (true == c))) for c, k in enumerate(chosen))
        best = max(best, right)
    return best / true.size


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("n_clusters", [4, 5, 3])
def test_cluster_accuracy_equals_brute_force_over_all_matchings(seed, n_clusters):
    rng = np.random.default_rng(seed)
    true = rng.integers(0, 4, size=40)
    # partly informative clusters, so that the best matching is not the identity
    pred = np.where(rng.random(40) < 0.5, rng.permutation(n_clusters)[true % n_clusters],
                    rng.integers(0, n_clusters, size=40))
    pred[:n_clusters] = np.arange(n_clusters)  # every cluster used
    accuracy, mapping = cluster_accuracy(true, pred, num_classes=4)
    assert accuracy == pytest.approx(_brute_force_accuracy(true, pred, n_clusters, 4), abs=1e-12)
    # The mapping is one-to-one, matches min(clusters, classes) of the clusters in use (with fewer
    # clusters than classes it also names unused cluster ids, which hold no sample), and achieves
    # the accuracy it reports.
    assert len(set(mapping.values())) == len(mapping) == 4
    assert len(set(mapping) & set(pred.tolist())) == min(n_clusters, 4)
    assert accuracy == pytest.approx(sum(int(np.sum((pred == k) & (true == c))) for k, c in mapping.items()) / 40)


def _entropy(counts: np.ndarray) -> float:
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


def test_nmi_and_ari_hand_values():
    true = [0, 0, 0, 1, 1, 1]
    pred = [1, 1, 0, 0, 0, 0]
    # Contingency [[1, 2], [3, 0]] (rows: class, columns: cluster): I = H(class) + H(cluster) - H(joint),
    # NMI = 2 I / (H(class) + H(cluster)) (arithmetic normalisation).
    h_true, h_pred, h_joint = _entropy(np.array([3, 3])), _entropy(np.array([4, 2])), _entropy(np.array([1, 2, 3]))
    assert nmi(true, pred) == pytest.approx(2 * (h_true + h_pred - h_joint) / (h_true + h_pred), abs=1e-12)
    # ARI: sum C(n_ij, 2) = 1 + 3 = 4, rows 3 + 3 = 6, columns C(4, 2) + C(2, 2) = 7, C(6, 2) = 15:
    # (4 - 6 * 7 / 15) / ((6 + 7) / 2 - 6 * 7 / 15) = 12 / 37
    assert ari(true, pred) == pytest.approx(12 / 37, abs=1e-12)
    # Independent labellings: NMI 0; ARI below 0 (worse than chance: (0 - 2 * 2 / 6) / (2 - 2 * 2 / 6) = -1/2)
    assert nmi([0, 0, 1, 1], [0, 1, 0, 1]) == pytest.approx(0.0, abs=1e-12)
    assert ari([0, 0, 1, 1], [0, 1, 0, 1]) == pytest.approx(-0.5, abs=1e-12)
    # A single cluster carries no information.
    assert nmi([0, 1, 2, 0], [3, 3, 3, 3]) == pytest.approx(0.0, abs=1e-12)
    assert ari([0, 1, 2, 0], [3, 3, 3, 3]) == pytest.approx(0.0, abs=1e-12)
    # Splitting each class in two: I = H(class) = log 2, H(cluster) = log 4 -> NMI = 2 log 2 / (log 2 + log 4) = 2/3
    assert nmi([0, 0, 1, 1], [0, 1, 2, 3]) == pytest.approx(2 / 3, abs=1e-12)
    assert math.isclose(nmi([5, 5, 7, 7], [1, 1, 0, 0]), 1.0)


def test_nmi_ari_match_sklearn_on_random_case():
    rng = np.random.default_rng(1)
    true = rng.integers(0, 4, size=300)
    pred = np.where(rng.random(300) < 0.7, true, rng.integers(0, 6, size=300))
    assert nmi(true, pred) == pytest.approx(skm.normalized_mutual_info_score(true, pred))
    assert ari(torch.from_numpy(true), pred) == pytest.approx(skm.adjusted_rand_score(true, pred))
    assert isinstance(nmi(true, pred), float) and isinstance(ari(true, pred), float)
    assert nmi(true, (true + 1) % 4) == pytest.approx(1.0)


def test_auroc():
    assert auroc([2.0, 3.0, 4.0], [0.0, 1.0]) == 1.0
    assert auroc(torch.tensor([0.0, 1.0]), torch.tensor([2.0, 3.0])) == 0.0
    assert auroc([1.0, 1.0], [1.0, 1.0]) == 0.5
    # One of 2 x 2 pairs misordered.
    assert auroc([1.0, 3.0], [2.0, 0.0]) == pytest.approx(0.75)
    # Pairs (in, out): 3 > 1, 3 > 2, 3 = 3 (1/2), 2 > 1, 2 = 2 (1/2), 2 < 3 -> 4 / 6
    assert auroc([3.0, 2.0], [1.0, 2.0, 3.0]) == pytest.approx(4 / 6, abs=1e-12)
    with pytest.raises(ValueError, match="finite"):
        auroc([0.0, float("nan")], [1.0])
    with pytest.raises(ValueError, match="at least one"):
        auroc([], [1.0])


@pytest.mark.parametrize("seed", range(3))
def test_auroc_is_the_mann_whitney_probability_with_ties(seed):
    rng = np.random.default_rng(seed)
    scores_in = rng.integers(0, 6, size=23).astype(float)  # few distinct values: many ties
    scores_out = rng.integers(-2, 4, size=17).astype(float)
    pairs = (scores_in[:, None] > scores_out[None, :]).sum() + 0.5 * (scores_in[:, None] == scores_out[None, :]).sum()
    assert auroc(scores_in, scores_out) == pytest.approx(pairs / (23 * 17), abs=1e-12)
    u = stats.mannwhitneyu(scores_in, scores_out).statistic
    assert auroc(scores_in, scores_out) == pytest.approx(u / (23 * 17), abs=1e-12)


def test_confusion_matrix_and_macro_f1():
    true = [0, 0, 1, 1, 1, 2]
    pred = [0, 1, 1, 1, 0, 1]
    counts = confusion_matrix(true, pred, num_classes=4, normalise_rows=False)
    np.testing.assert_array_equal(
        counts, [[1, 1, 0, 0], [1, 2, 0, 0], [0, 1, 0, 0], [0, 0, 0, 0]]
    )
    rows = confusion_matrix(true, pred, num_classes=4)
    np.testing.assert_allclose(rows[:3].sum(1), 1.0)
    np.testing.assert_allclose(rows[3], 0.0)  # absent class: zeros, not NaN
    expected = skm.f1_score(true, pred, labels=[0, 1, 2, 3], average="macro", zero_division=0)
    assert macro_f1(true, pred, num_classes=4) == pytest.approx(expected)


@pytest.mark.parametrize("name", ["moons", "circles"])
def test_make_toy_standardised_and_seeded(name):
    points, labels = make_toy(name, n_samples=200, noise=0.1, seed=0)
    assert points.dtype == torch.float32 and points.shape == (200, 2)
    assert labels.dtype == torch.int64 and set(labels.tolist()) == {0, 1}
    torch.testing.assert_close(points.mean(0), torch.zeros(2), atol=1e-5, rtol=0)
    torch.testing.assert_close(points.std(0, unbiased=False), torch.ones(2), atol=1e-5, rtol=0)
    again, _ = make_toy(name, n_samples=200, noise=0.1, seed=0)
    torch.testing.assert_close(points, again)
    with pytest.raises(ValueError, match="unknown"):
        make_toy("spirals", 10, 0.1, 0)


@pytest.mark.parametrize("total,wrong,group", [(8, 0, 3), (8, 2, 3), (9, 4, 5), (7, 7, 2), (10, 1, 10)])
def test_all_right_probability_is_the_share_of_all_right_groups_over_every_draw(total, wrong, group):
    correct = [False] * wrong + [True] * (total - wrong)
    draws = list(itertools.combinations(range(total), group))
    brute = sum(all(correct[i] for i in draw) for draw in draws) / len(draws)
    result = all_right_probability(wrong, total, group)
    assert result["mean"] == pytest.approx(brute, rel=1e-12, abs=1e-15)
    assert result["low"] <= ((total - wrong) / total) ** group <= result["high"]


def test_all_right_probability_matches_random_pairings_of_test_images():
    rng = np.random.default_rng(0)
    correct = np.ones(10_000, dtype=bool)
    correct[rng.choice(10_000, size=45, replace=False)] = False  # 99.55 % of the digits right
    sums = [correct[rng.permutation(10_000)].reshape(-1, 200).all(axis=1).mean() for _ in range(400)]
    result = all_right_probability(45, 10_000, 200)
    assert np.mean(sums) == pytest.approx(result["mean"], abs=0.01)
    assert result["mean"] == pytest.approx(0.9955 ** 200, rel=0.02)  # the usual p ** (2N) rule
    assert result["low"] < result["mean"] < result["high"]


def test_all_right_probability_refuses_impossible_counts():
    with pytest.raises(ValueError, match="wrong=5"):
        all_right_probability(5, 4, 2)
    with pytest.raises(ValueError, match="group=0"):
        all_right_probability(0, 4, 0)
