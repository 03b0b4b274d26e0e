import numpy as np
import pytest
import torch
from sklearn import metrics as skm

from nesy_gedi.data.toy import make_toy
from nesy_gedi.metrics import (
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
