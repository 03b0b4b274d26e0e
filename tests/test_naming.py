"""The naming room: scoring namings through the circuit, the search, near-shortcuts, the map.

References are independent of the code under test: brute force over every naming in
plain Python (the label function written as a Python expression), planted namings, and
hand-computed shares.
"""
from __future__ import annotations

import itertools
import math
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from nesy_gedi.builders import build_circuit
from nesy_gedi.circuit import KnowledgeCircuit
from nesy_gedi.compiler import compile_file
from nesy_gedi.config import load_config
from nesy_gedi.count_shortcuts import count_shortcuts_for_task
from nesy_gedi.errors import NesyError
from nesy_gedi.naming import (ClusterMap, ConceptDomains, NamingScorer, map_balance_loss, map_label_share,
                              near_shortcuts, search_naming, wrong_maps)
from nesy_gedi.naming.search import _climb

REPO = Path(__file__).resolve().parents[1]


def _circuit(tmp_path: Path, text: str, params: dict | None = None) -> KnowledgeCircuit:
    path = tmp_path / "knowledge.logic"
    path.write_text(text)
    return KnowledgeCircuit(compile_file(path, params or {}, cache_dir=tmp_path / "cache"))


def _addition(n: int) -> KnowledgeCircuit:
    return KnowledgeCircuit(compile_file(REPO / "logic" / "addition.logic", {"N": n}))


def _planted(circuit: KnowledgeCircuit, examples: int, noise: float, seed: int, clusters: int = 10):
    """True digits, their labels, and clusters: a planted permutation with `noise` random clusters."""
    rng = np.random.default_rng(seed)
    digits = rng.integers(0, 10, size=(examples, len(circuit.concepts)))
    labels, consistent = circuit.deduce_labels(torch.as_tensor(digits))
    assert bool(consistent.all())
    relabel = rng.permutation(clusters)  # the cluster of digit v is relabel[v]
    tuples = relabel[digits]
    flip = rng.random(tuples.shape) < noise
    tuples[flip] = rng.integers(0, clusters, size=int(flip.sum()))
    return tuples, labels.numpy(), np.argsort(relabel)  # truth: the value of each cluster


# ----------------------------------------------------------------------------- brute force on random files
def _random_task(rng: random.Random):
    """A random knowledge base over P concepts of one domain 0..V-1 and one label that is a
    random function of them, as (logic text, Python function, P, V)."""
    positions, size = rng.choice([2, 3]), rng.choice([3, 4])
    names = [f"x{i}" for i in range(positions)]
    terms = []
    for name in names:
        weight = rng.randint(1, 3)
        terms.append((f"{weight} * {name}", lambda env, n=name, w=weight: w * env[n]))
    kind = rng.choice(["sum", "mod", "max", "compare"])
    modulus = rng.randint(2, 5)
    if kind == "sum":
        logic = " + ".join(t for t, _ in terms)
        function = lambda env: sum(f(env) for _, f in terms)  # noqa: E731
    elif kind == "mod":
        logic = f"({' + '.join(t for t, _ in terms)}) % {modulus}"
        function = lambda env: sum(f(env) for _, f in terms) % modulus  # noqa: E731
    elif kind == "max":
        logic = f"max({', '.join(names)})" if positions == 2 else f"max(max({names[0]}, {names[1]}), {names[2]})"
        function = lambda env: max(env[n] for n in names)  # noqa: E731
    else:
        logic = f"(if {terms[0][0]} > {names[-1]} + 1 then 1 else 0)"
        function = lambda env: 1 if terms[0][1](env) > env[names[-1]] + 1 else 0  # noqa: E731
    values = [function(dict(zip(names, t))) for t in itertools.product(range(size), repeat=positions)]
    text = "".join(f"concept {n} : 0..{size - 1}\n" for n in names)
    text += f"label y : {min(values)}..{max(values)}\nconstraint y == {logic}\n"
    return text, function, names, size


@pytest.mark.parametrize("case", range(20))
def test_the_search_finds_the_brute_force_optimum_on_random_knowledge(tmp_path, case):
    rng = random.Random(case)
    text, function, names, size = _random_task(rng)
    circuit = _circuit(tmp_path, text)
    generator = np.random.default_rng(case)
    concepts = generator.integers(0, size, size=(150, len(names)))
    labels = np.array([[function(dict(zip(names, row)))] for row in concepts.tolist()])
    relabel = generator.permutation(size)
    clusters = relabel[concepts]
    noisy = generator.random(clusters.shape) < 0.1
    clusters[noisy] = generator.integers(0, size, size=int(noisy.sum()))

    def explained(naming) -> int:
        named = np.asarray(naming)[clusters]
        return sum(function(dict(zip(names, row))) == label for row, label in zip(named.tolist(), labels[:, 0]))

    best = max(explained(p) for p in itertools.permutations(range(size)))
    for exhaustive in (True, False):
        found = search_naming(circuit, clusters, labels, size, noise=0.0, exhaustive=exhaustive, seed=case)
        assert explained(found.naming[0]) == best, (text, exhaustive)
        assert found.labels_explained == pytest.approx(best / len(clusters))
        assert found.method == ("exhaustive" if exhaustive else "em+local")
        assert found.runner_up_labels_explained <= found.labels_explained


def test_stopping_at_unanimous_restarts_finds_the_full_search_optimum(tmp_path):
    """The first restarts all ending at one naming end the search: on random knowledge it
    finds what the full restart budget finds, and that is the brute-force optimum."""
    stopped_early = 0
    for case in range(20):
        rng = random.Random(case)  # the knowledge of the brute-force test above, noisier clusters
        text, function, names, size = _random_task(rng)
        (tmp_path / str(case)).mkdir()
        circuit = _circuit(tmp_path / str(case), text)
        generator = np.random.default_rng(case)
        concepts = generator.integers(0, size, size=(150, len(names)))
        labels = np.array([[function(dict(zip(names, row)))] for row in concepts.tolist()])
        clusters = generator.permutation(size)[concepts]
        noisy = generator.random(clusters.shape) < 0.2
        clusters[noisy] = generator.integers(0, size, size=int(noisy.sum()))
        best = max(sum(function(dict(zip(names, row))) == label
                       for row, label in zip(np.asarray(p)[clusters].tolist(), labels[:, 0]))
                   for p in itertools.permutations(range(size)))
        early = search_naming(circuit, clusters, labels, size, noise=0.0, exhaustive=False, seed=case)
        full = search_naming(circuit, clusters, labels, size, noise=0.0, exhaustive=False, seed=case, unanimous=0)
        assert full.restarts > 8  # eight restarts, then the kicks
        assert early.labels_explained == full.labels_explained == pytest.approx(best / len(clusters)), text
        assert early.restarts <= full.restarts
        stopped_early += early.restarts < full.restarts
    assert stopped_early >= 10


def test_a_climb_that_reaches_an_earlier_climb_ends_where_that_one_ended():
    circuit = _addition(2)
    tuples, labels, _ = _planted(circuit, 1500, 0.05, seed=2)
    scorer = NamingScorer(circuit, tuples, labels, 10)
    modes = ("one-to-one",)
    starts = [np.random.default_rng(seed).permutation(10)[None] for seed in range(4)]
    alone = [_climb(scorer, start, modes) for start in starts]
    climbed = {}
    shared = [_climb(scorer, start, modes, climbed) for start in starts + starts]
    for (naming, score), (again, again_score) in zip(alone + alone, shared):
        assert np.array_equal(naming, again) and score == pytest.approx(again_score)
    assert all(climbed[start.tobytes()][0] is not None for start in starts)


def test_long_tuples_are_scored_through_a_memo_of_their_rows(tmp_path):
    """20 positions of 10 values: too many tuples for integer keys; scores still match the
    circuit evaluated row by row, and a second call evaluates nothing new."""
    circuit = _circuit(tmp_path, "concept x[i in 0..19] : 0..9\nlabel y : 0..1\nconstraint y == (x[0] + x[19]) % 2\n")
    rng = np.random.default_rng(0)
    tuples = rng.integers(0, 10, size=(40, 20))
    labels = ((tuples[:, 0] + tuples[:, 19]) % 2)[:, None]
    scorer = NamingScorer(circuit, tuples, labels, 10, noise=0.1)
    namings = np.stack([np.arange(10)[None], rng.permutation(10)[None], np.arange(10)[None]])
    scores = scorer.example_scores(namings)
    concepts = namings[:, 0][:, scorer.tuples]  # [S, E, P]
    direct = np.stack([scorer._evaluate(named, scorer.label_ids, 0.1) for named in concepts])
    assert scores == pytest.approx(direct)
    assert np.isfinite(scores).all() and scores[0] == pytest.approx(scores[2])
    evaluated = []
    scorer._evaluate = lambda rows, ids, noise: evaluated.append(len(rows))  # noqa: E731
    assert scorer.example_scores(namings[::-1]) == pytest.approx(scores[::-1])
    assert evaluated == []


def test_scores_match_a_hand_count_and_the_noisy_likelihood(tmp_path):
    circuit = _circuit(tmp_path, "concept a : 0..2\nconcept b : 0..2\nlabel s : 0..4\nconstraint s == a + b\n")
    clusters = np.array([[0, 1], [2, 2], [1, 0], [0, 0]])
    labels = np.array([[1], [4], [2], [0]])
    scorer = NamingScorer(circuit, clusters, labels, 3, noise=0.1)
    identity, swapped = np.array([[0, 1, 2]]), np.array([[1, 0, 2]])
    # identity: 1, 4, 0 right (1 + 0 is not 2); swap: [0,1] -> 1 + 0 = 1 and [2,2] right, [0,0] -> 2 wrong
    assert scorer.explained(np.stack([identity, swapped])).tolist() == [3, 2]
    # By hand: P(s | named a, b) with each value kept with 0.9, else 0.05 each.
    kept, other = 0.9, 0.05
    p = lambda a, b, s: sum((kept if x == a else other) * (kept if y == b else other)  # noqa: E731
                            for x in range(3) for y in range(3) if x + y == s)
    expected = math.log(p(0, 1, 1)) + math.log(p(2, 2, 4)) + math.log(p(1, 0, 2)) + math.log(p(0, 0, 0))
    assert scorer.log_likelihood(identity[None])[0] == pytest.approx(expected, rel=1e-5)


# ----------------------------------------------------------------------------- planted namings
def test_a_planted_permutation_is_recovered_at_four_positions():
    circuit = _addition(2)
    tuples, labels, truth = _planted(circuit, 6000, 0.05, seed=1)
    found = search_naming(circuit, tuples, labels, 10, seed=0)
    assert found.naming == [truth.tolist()]
    assert found.labels_explained > found.runner_up_labels_explained
    assert found.restarts_agreeing >= 2


@pytest.mark.slow
def test_a_planted_permutation_is_recovered_at_two_hundred_positions():
    """N = 100 addition: no naming explains any example exactly at 5 % noise (0.95**200), the
    likelihood still tells the truth from v -> v+5, which keeps every sum digit up to carries."""
    circuit = _addition(100)
    tuples, labels, truth = _planted(circuit, 300, 0.05, seed=0)
    found = search_naming(circuit, tuples, labels, 10, seed=0)
    assert found.naming == [truth.tolist()]
    assert found.log_likelihood > found.runner_up_log_likelihood


def test_an_over_clustered_backbone_is_named_many_to_one():
    circuit = _addition(1)
    rng = np.random.default_rng(3)
    digits = rng.integers(0, 10, size=(5000, 2))
    labels, _ = circuit.deduce_labels(torch.as_tensor(digits))
    relabel = rng.permutation(20)  # digit v shows as cluster relabel[v] or relabel[v + 10]
    tuples = relabel[digits + 10 * rng.integers(0, 2, size=digits.shape)]
    found = search_naming(circuit, tuples, labels.numpy(), 20, seed=0)
    assert found.modes == ["many-to-one"]
    assert found.naming == [(np.argsort(relabel) % 10).tolist()]
    with pytest.raises(NesyError, match="one-to-one naming needs at most as many clusters"):
        search_naming(circuit, tuples, labels.numpy(), 20, mode="one-to-one")


def test_two_domains_get_one_naming_each(tmp_path):
    circuit = _circuit(tmp_path, "concept d[i in 0..1] : 0..5\nconcept k : 0..2\nlabel y : 0..20\n"
                                 "constraint y == d[0] + d[1] * (k + 1)\n")
    domains = ConceptDomains.of(circuit)
    assert domains.sizes == (6, 3) and domains.group_of == (0, 0, 1)
    rng = np.random.default_rng(0)
    concepts = np.stack([rng.integers(0, 6, 3000), rng.integers(0, 6, 3000), rng.integers(0, 3, 3000)], axis=1)
    labels = (concepts[:, 0] + concepts[:, 1] * (concepts[:, 2] + 1))[:, None]
    digit_clusters, factor_clusters = rng.permutation(6), rng.permutation(6)
    tuples = np.stack([digit_clusters[concepts[:, 0]], digit_clusters[concepts[:, 1]],
                       factor_clusters[concepts[:, 2]]], axis=1)
    found = search_naming(circuit, tuples, labels, 6, seed=0)
    assert found.modes == ["one-to-one", "many-to-one"]
    assert found.naming[0] == np.argsort(digit_clusters).tolist()
    seen = sorted(set(tuples[:, 2].tolist()))  # clusters never seen at k's position may be named anything
    assert [found.naming[1][c] for c in seen] == [int(np.argsort(factor_clusters)[c]) for c in seen]
    assert found.labels_explained == 1.0


def test_a_domain_of_26_values(tmp_path):
    circuit = _circuit(tmp_path, "concept a : 0..25\nconcept b : 0..25\nlabel s : 0..50\nconstraint s == a + b\n")
    rng = np.random.default_rng(0)
    concepts = rng.integers(0, 26, size=(8000, 2))
    relabel = rng.permutation(26)
    tuples = relabel[concepts]
    noisy = rng.random(tuples.shape) < 0.05
    tuples[noisy] = rng.integers(0, 26, size=int(noisy.sum()))
    found = search_naming(circuit, tuples, concepts.sum(axis=1, keepdims=True), 26, seed=0)
    assert found.method == "em+local" and found.naming == [np.argsort(relabel).tolist()]


def test_labelled_images_decide_a_permutation_shortcut():
    """EvenOdd's support cannot tell d from d+5 (a tie); one labelled image of 3 can."""
    circuit = build_circuit(load_config(REPO / "tasks" / "mnist_evenodd.yaml"))
    support = np.array([[0, 6], [2, 8], [4, 6], [4, 8], [1, 5], [3, 7], [1, 9], [3, 9]])
    concepts = np.concatenate([support, support[:, ::-1]])
    relabel = np.array([7, 2, 9, 0, 4, 1, 8, 3, 6, 5])
    sums = concepts.sum(axis=1)
    labels = np.stack([sums // 10, sums % 10], axis=1)
    shift = ((np.arange(10) + 5) % 10).tolist()
    unlabelled = search_naming(circuit, relabel[concepts], labels, 10, noise=0.0)
    assert unlabelled.labels_explained == 1.0
    assert np.array(unlabelled.naming[0])[relabel].tolist() in (list(range(10)), shift)
    labelled = search_naming(circuit, relabel[concepts], labels, 10, noise=0.0,
                             labelled=(relabel[[3]], np.array([0]), np.array([3])))
    assert np.array(labelled.naming[0])[relabel].tolist() == list(range(10)) and labelled.labelled_right == 1
    wrong = search_naming(circuit, relabel[concepts], labels, 10, noise=0.0,
                          labelled=(relabel[[3]], np.array([0]), np.array([8])))
    assert np.array(wrong.naming[0])[relabel].tolist() == shift  # a label is obeyed first, then the knowledge


def test_an_exhaustive_search_that_does_not_fit_is_refused():
    circuit = _addition(2)
    tuples, labels, _ = _planted(circuit, 3000, 0.05, seed=0)
    with pytest.raises(NesyError, match="exhaustively scores"):
        search_naming(circuit, tuples, labels, 10, exhaustive=True)


# ----------------------------------------------------------------------------- near-shortcuts
def test_near_shortcut_shares_match_brute_force(tmp_path):
    circuit = _circuit(tmp_path, "concept x[i in 0..2] : 0..3\nlabel m : 0..3\n"
                                 "constraint m == max(max(x[0], x[1]), x[2])\n")
    rng = np.random.default_rng(0)
    concepts = rng.integers(0, 4, size=(500, 3))
    labels = concepts.max(axis=1, keepdims=True)
    result = near_shortcuts(circuit, concepts, labels, top=1000)
    assert result["maps_scored"] == len(wrong_maps(4)) == 12 + 6 + 8
    assert result["identity_label_share"] == 1.0
    for entry in result["near_shortcuts"]:
        mapped = np.array(entry["mapping"])[concepts]
        assert entry["label_share"] == pytest.approx(float((mapped.max(axis=1) == labels[:, 0]).mean()))
        assert entry["excluded_by"] == [v for v in range(4) if entry["mapping"][v] != v]
        assert entry["label_share"] == pytest.approx(map_label_share(circuit, concepts, labels, entry["mapping"]))
    shares = [e["label_share"] for e in result["near_shortcuts"]]
    assert shares == sorted(shares, reverse=True)
    top = result["near_shortcuts"][0]
    assert top["map"] == "0->1" and top["kind"] == "merge"  # only all-zero triples (1/64) see it


@pytest.mark.slow
def test_near_shortcuts_work_where_the_concept_space_cannot_be_counted():
    circuit = _addition(15)  # 10**30 concept tuples
    rng = np.random.default_rng(0)
    digits = rng.integers(0, 10, size=(200, 30))
    labels, _ = circuit.deduce_labels(torch.as_tensor(digits))
    result = near_shortcuts(circuit, digits, labels.numpy(), top=3)
    assert result["identity_label_share"] == 1.0 and result["maps_scored"] == 90 + 45 + 240
    assert all(entry["label_share"] < 0.1 for entry in result["near_shortcuts"])


# ----------------------------------------------------------------------------- the learned map
def test_the_cluster_map_starts_at_a_naming_and_mixes_per_domain():
    cluster_map = ClusterMap(group_of=(0, 0, 1), sizes=(3, 2), width=3, clusters=3)
    cluster_map.set_naming(np.array([[2, 0, 1], [1, 1, 0]]), confidence=0.9)
    probs = cluster_map.value_given_cluster().detach()
    assert probs[0, 0].tolist() == pytest.approx([0.05, 0.05, 0.9])
    assert probs[1, 2].tolist() == pytest.approx([0.9, 0.1, 0.0])  # value 2 is outside the second domain
    cluster = torch.log(torch.tensor([[[1.0, 0.0, 0.0]] * 3]).clamp_min(1e-30))
    values = cluster_map(cluster).exp()[0]
    assert values[0].tolist() == pytest.approx([0.05, 0.05, 0.9], abs=1e-6)
    assert values[2].tolist() == pytest.approx([0.1, 0.9, 0.0], abs=1e-6)
    # The gradient stays finite although value 2 is outside the second domain.
    cluster_map(torch.log_softmax(torch.randn(4, 3, 3), dim=-1)).logsumexp(-1).sum().backward()
    assert bool(torch.isfinite(cluster_map.logits.grad).all())


def test_the_balance_prior_is_zero_for_a_permutation_and_positive_for_a_merge():
    cluster_map = ClusterMap(group_of=(0,), sizes=(3,), width=3, clusters=3)
    with torch.no_grad():
        cluster_map.logits.copy_(50.0 * torch.eye(3)[[2, 0, 1]][None])
    assert float(map_balance_loss(cluster_map)) == pytest.approx(0.0, abs=1e-6)
    with torch.no_grad():
        cluster_map.logits.copy_(50.0 * torch.tensor([[[1.0, 1.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 1.0]]]))
    # Mean over clusters: value 0 gets 2/3, value 2 gets 1/3.
    expected = 1 - (-(2 / 3) * math.log(2 / 3) - (1 / 3) * math.log(1 / 3)) / math.log(3)
    assert float(map_balance_loss(cluster_map)) == pytest.approx(expected, abs=1e-6)


# ----------------------------------------------------------------------------- the naming tasks
@pytest.mark.parametrize("task, exact, nearest, share", [
    ("mnist_max3", 0, "0->1", 0.995), ("mnist_extremes4", 0, None, 0.95),
    ("mnist_count_above6", None, None, 0.94), ("mnist_pick3", None, None, 0.88)])
def test_the_naming_tasks_have_the_shortcuts_their_headers_state(task, exact, nearest, share):
    result = count_shortcuts_for_task(REPO / "tasks" / f"{task}.yaml", suggest=False)
    assert result["shortcuts"] == exact  # None: too large to count, or two domains
    top = result["near_shortcuts"][0]
    assert share <= top["label_share"] < 1.0  # near, but no shortcut of the drawn tuples
    if nearest:
        assert top["map"] == nearest
