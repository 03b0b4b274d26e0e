"""KnowledgeCircuit (KLay, log semiring) against brute-force enumeration and PySDD's own WMC."""
from __future__ import annotations

import itertools
import math
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from nesy_gedi.circuit import PREDICTION_ARGMAX_CONCEPTS, PREDICTION_EXACT, KnowledgeCircuit
from nesy_gedi.compiler import compile_file
from nesy_gedi.errors import LogicError
from random_logic import random_kb

LOGIC = Path(__file__).resolve().parents[1] / "logic"
ADDITION = LOGIC / "addition.logic"


def circuit_for(path, params=None, vtree_type="blocks", cache_dir=None) -> KnowledgeCircuit:
    compiled = compile_file(path, params, vtree_type=vtree_type, cache_dir=cache_dir, use_cache=cache_dir is not None)
    return KnowledgeCircuit(compiled, compile_module=False)


def random_log_probs(rng: np.random.Generator, circuit: KnowledgeCircuit, batch: int) -> torch.Tensor:
    """[B, P, C] log-probabilities; slots past a smaller concept's domain hold garbage (ignored)."""
    width = circuit.concept_domain_size
    result = torch.from_numpy(rng.normal(size=(batch, len(circuit.concepts), width)) * 3)
    for p, variable in enumerate(circuit.concepts):
        size = len(variable.domain)
        result[:, p, :size] = torch.log_softmax(result[:, p, :size], dim=-1)
    return result


def pysdd_log_wmc(compiled, log_probs: np.ndarray, evidence: list | None) -> float:
    """PySDD's own log-space WMC with the same literal weights (one example)."""
    manager, root = compiled.sdd()
    if root.is_false():
        return -math.inf
    wmc = root.wmc(log_mode=True)
    knowledge = compiled.knowledge
    concepts, labels = knowledge.concepts, knowledge.labels
    for variable in knowledge.variables:
        for p, literal in enumerate(compiled.literals(variable)):
            positive = 0.0
            if variable in concepts:
                positive = float(log_probs[concepts.index(variable), p])
            elif variable in labels and evidence is not None:
                observed = evidence[labels.index(variable)]
                if observed >= 0 and variable.domain[p] != observed:
                    positive = -math.inf
            wmc.set_literal_weight(manager.literal(literal), positive)
            wmc.set_literal_weight(manager.literal(-literal), 0.0)
    return wmc.propagate()


def close(a: float, b: float, tol: float = 1e-7) -> bool:
    if math.isinf(a) or math.isinf(b):
        return a == b
    return abs(a - b) <= tol * max(1.0, abs(b))


# ----------------------------------------------------------------------------- random knowledge
CASES = 60


def test_random_knowledge_matches_brute_force_and_pysdd(tmp_path):
    """Random knowledge bases (tests/random_logic.py): the circuit, PySDD's WMC and brute force agree,
    without label evidence, with full and partial (-1) evidence, and the exact prediction too."""
    checked = unsatisfiable = 0
    np_rng = np.random.default_rng(0)
    rng = random.Random(1234)
    for case in range(CASES):
        kb = random_kb(rng)
        path = tmp_path / f"kb{case}.logic"
        path.write_text(kb.text)
        models = kb.models()
        if not models:
            with pytest.raises(LogicError, match=r"^" + str(path) + r":\d+: "):
                compile_file(path, use_cache=False)
            unsatisfiable += 1
            continue
        compiled = compile_file(path, use_cache=False)
        assert compiled.model_count == len(models), kb.text
        circuit = KnowledgeCircuit(compiled, compile_module=False)
        assert [v.name for v in circuit.concepts] == kb.concepts
        assert [v.name for v in circuit.labels] == kb.labels

        log_probs = random_log_probs(np_rng, circuit, batch=4)
        evidence_rows = []
        for _ in range(4):  # full, partial (-1 = unobserved) and possibly inconsistent evidence
            evidence_rows.append([rng.choice([-1] + kb.domains[name]) for name in kb.labels])
        evidence_rows[0] = [models[0][name] for name in kb.labels]
        evidence = torch.tensor(evidence_rows)
        without = circuit(log_probs).tolist()
        with_evidence = circuit(log_probs, evidence).tolist()
        for row in range(4):
            probs = {name: log_probs[row, p, :len(kb.domains[name])].exp().tolist()
                     for p, name in enumerate(kb.concepts)}
            observed = {name: (value if value >= 0 else None) for name, value in zip(kb.labels, evidence_rows[row])}
            expected_free = kb.log_probability(models, probs)
            expected_evidence = kb.log_probability(models, probs, observed)
            assert close(without[row], expected_free), kb.text
            assert close(with_evidence[row], expected_evidence), (kb.text, evidence_rows[row])
            assert close(pysdd_log_wmc(compiled, log_probs[row].numpy(), None), expected_free, 1e-6)
            assert close(pysdd_log_wmc(compiled, log_probs[row].numpy(), evidence_rows[row]), expected_evidence, 1e-6)

        # The exact prediction is the brute-force most probable label tuple.
        assert circuit.prediction_method == PREDICTION_EXACT
        candidates = sorted({tuple(m[name] for name in kb.labels) for m in models})
        assert [tuple(t) for t in circuit.label_candidates()] == candidates
        predicted = circuit.predict(log_probs).tolist()
        for row in range(4):
            probs = {name: log_probs[row, p, :len(kb.domains[name])].exp().tolist()
                     for p, name in enumerate(kb.concepts)}
            scores = [kb.log_probability(models, probs, dict(zip(kb.labels, t))) for t in candidates]
            assert tuple(predicted[row]) == candidates[int(np.argmax(scores))]
        checked += 1
    assert checked >= CASES // 2 and unsatisfiable + checked == CASES


# ----------------------------------------------------------------------------- gradients
def test_gradcheck_float64():
    circuit = circuit_for(ADDITION, {"N": 1})
    torch.manual_seed(0)
    log_probs = torch.log_softmax(torch.randn(3, 2, 10, dtype=torch.float64), -1).requires_grad_(True)
    labels = torch.tensor([[0, 7], [-1, 3], [1, -1]])
    assert circuit(log_probs, labels).dtype == torch.float64  # KLay's module follows its input's dtype
    assert torch.autograd.gradcheck(lambda x: circuit(x, labels), (log_probs,), eps=1e-6, atol=1e-5)
    assert torch.autograd.gradcheck(lambda x: circuit(x), (log_probs,), eps=1e-6, atol=1e-5)


def test_gradient_is_the_posterior_of_each_concept():
    # d log P(K, y) / d log p(c = v) = P(c = v | K, y): compare with enumeration over digit pairs.
    circuit = circuit_for(ADDITION, {"N": 1})
    torch.manual_seed(1)
    log_probs = torch.log_softmax(torch.randn(2, 2, 10, dtype=torch.float64), -1).requires_grad_(True)
    labels = torch.tensor([[1, 2], [0, -1]])  # sum 12; leading digit 0 (sum < 10)
    circuit(log_probs, labels).sum().backward()
    probs = log_probs.detach().exp().numpy()
    for row, (tens, ones) in enumerate(labels.tolist()):
        joint = np.zeros((10, 10))
        for a, b in itertools.product(range(10), range(10)):
            total = a + b
            if (tens < 0 or total // 10 == tens) and (ones < 0 or total % 10 == ones):
                joint[a, b] = probs[row, 0, a] * probs[row, 1, b]
        joint /= joint.sum()
        np.testing.assert_allclose(log_probs.grad[row, 0].numpy(), joint.sum(1), atol=1e-9)
        np.testing.assert_allclose(log_probs.grad[row, 1].numpy(), joint.sum(0), atol=1e-9)


def test_gradient_matches_autograd_through_enumeration(tmp_path):
    kb = None
    rng = random.Random(7)
    while kb is None or not kb.models():
        kb = random_kb(rng)
    path = tmp_path / "kb.logic"
    path.write_text(kb.text)
    circuit = circuit_for(path)
    models = kb.models()
    log_probs = random_log_probs(np.random.default_rng(3), circuit, batch=2).requires_grad_(True)
    circuit(log_probs).sum().backward()
    reference = log_probs.detach().clone().requires_grad_(True)
    total = 0
    for row in range(2):
        terms = []
        for model in models:
            terms.append(sum(reference[row, p, kb.domains[name].index(model[name])]
                             for p, name in enumerate(kb.concepts)))
        total = total + torch.logsumexp(torch.stack(terms), 0)
    total.backward()
    torch.testing.assert_close(log_probs.grad, reference.grad, atol=1e-9, rtol=1e-7)


# ----------------------------------------------------------------------------- reasoning
def _digits(number: int, count: int) -> list:
    return [int(d) for d in str(number).zfill(count)]


def test_deduce_labels_addition_one_digit_exhaustive():
    circuit = circuit_for(ADDITION, {"N": 1})
    positions = torch.tensor(list(itertools.product(range(10), range(10))))
    labels, consistent = circuit.deduce_labels(positions, chunk=37)
    assert consistent.all()
    expected = [_digits(a + b, 2) for a, b in positions.tolist()]
    assert labels.tolist() == expected


def test_deduce_labels_addition_two_digits_sampled():
    circuit = circuit_for(ADDITION, {"N": 2})
    generator = torch.Generator().manual_seed(5)
    positions = torch.randint(0, 10, (400, 4), generator=generator)
    labels, consistent = circuit.deduce_labels(positions)
    assert consistent.all()
    for row, (a0, a1, b0, b1) in enumerate(positions.tolist()):
        assert labels[row].tolist() == _digits(10 * a0 + a1 + 10 * b0 + b1, 3)


def test_deduce_labels_flags_inconsistent_concepts(tmp_path):
    path = tmp_path / "k.logic"
    path.write_text("concept a : 0..9\nconcept b : {1, 2, 4}\nlabel s : 0..13\nconstraint s == a + b\n"
                    "constraint a != 3\n")
    circuit = circuit_for(path)
    positions = torch.tensor([[3, 0], [2, 2], [9, 1]])  # b positions: 0 -> 1, 2 -> 4
    labels, consistent = circuit.deduce_labels(positions)
    assert consistent.tolist() == [False, True, True]
    assert labels[1:].tolist() == [[6], [11]]


def test_predict_exact_matches_brute_force_argmax():
    circuit = circuit_for(ADDITION, {"N": 1})
    assert circuit.prediction_method == PREDICTION_EXACT
    assert circuit.label_candidates() == [_digits(s, 2) for s in range(19)]
    torch.manual_seed(2)
    log_probs = torch.log_softmax(torch.randn(16, 2, 10, dtype=torch.float64) * 2, -1)
    predicted = circuit.predict(log_probs).tolist()
    probs = log_probs.exp().numpy()
    for row in range(16):
        by_sum = np.zeros(19)
        for a, b in itertools.product(range(10), range(10)):
            by_sum[a + b] += probs[row, 0, a] * probs[row, 1, b]
        assert predicted[row] == _digits(int(by_sum.argmax()), 2)


def test_predict_falls_back_to_argmax_concepts_when_labels_are_many():
    circuit = circuit_for(ADDITION, {"N": 3})  # 1999 label tuples > 256
    assert circuit.label_candidates() is None
    assert circuit.prediction_method == PREDICTION_ARGMAX_CONCEPTS
    log_probs = torch.full((1, 6, 10), -20.0)
    for p, digit in enumerate([1, 2, 3, 9, 9, 9]):
        log_probs[0, p, digit] = 0.0
    assert circuit.predict(log_probs).tolist() == [_digits(123 + 999, 4)]
    big = KnowledgeCircuit(circuit.compiled, compile_module=False, max_label_candidates=2000)
    assert len(big.label_candidates()) == 1999 and big.prediction_method == PREDICTION_EXACT


def test_label_candidates_of_long_addition_are_quick():
    circuit = circuit_for(ADDITION, {"N": 15})
    assert circuit.label_candidates() is None
    uniform = torch.full((2, 30, 10), -math.log(10), dtype=torch.float64)
    torch.testing.assert_close(circuit(uniform), torch.zeros(2, dtype=torch.float64), atol=1e-9, rtol=0)


@pytest.mark.parametrize("name, params", [("product", {}), ("parity", {"K": 3}), ("sum_of_digits", {"K": 3})])
def test_example_files_deduce_their_labels(name, params):
    circuit = circuit_for(LOGIC / f"{name}.logic", params)
    generator = torch.Generator().manual_seed(0)
    positions = torch.randint(0, 10, (200, len(circuit.concepts)), generator=generator)
    labels, consistent = circuit.deduce_labels(positions)
    assert consistent.all()
    for row, digits in enumerate(positions.tolist()):
        expected = {"product": lambda d: d[0] * d[1], "parity": lambda d: sum(d) % 2,
                    "sum_of_digits": lambda d: sum(d)}[name](digits)
        assert labels[row].tolist() == [expected]


def test_vtree_types_give_identical_outputs(tmp_path):
    rng = random.Random(99)
    kb = random_kb(rng)
    while not kb.models():
        kb = random_kb(rng)
    random_path = tmp_path / "kb.logic"
    random_path.write_text(kb.text)
    for path, params in ((ADDITION, {"N": 2}), (random_path, None)):
        outputs = []
        for vtree_type in ("blocks", "block-tree", "right", "balanced"):
            circuit = circuit_for(path, params, vtree_type=vtree_type)
            log_probs = random_log_probs(np.random.default_rng(4), circuit, batch=5)
            labels = torch.tensor([[v.domain[i % len(v.domain)] if i % 2 else -1 for v in circuit.labels]
                                   for i in range(5)])
            outputs.append(torch.stack([circuit(log_probs), circuit(log_probs, labels)]))
        for other in outputs[1:]:
            torch.testing.assert_close(other, outputs[0], atol=1e-9, rtol=1e-9)


def test_cached_circuit_gives_identical_outputs(tmp_path):
    first = compile_file(ADDITION, {"N": 2}, cache_dir=tmp_path)
    second = compile_file(ADDITION, {"N": 2}, cache_dir=tmp_path)
    assert (first.cache_hit, second.cache_hit) == (False, True)
    log_probs = torch.log_softmax(torch.randn(4, 4, 10, dtype=torch.float64), -1)
    labels = torch.tensor([[0, 9, 9], [-1, 5, -1], [1, 0, 0], [-1, -1, -1]])
    a = KnowledgeCircuit(first, compile_module=False)
    b = KnowledgeCircuit(second, compile_module=False)
    torch.testing.assert_close(a(log_probs, labels), b(log_probs, labels), atol=0, rtol=0)
    assert a.label_candidates() == b.label_candidates()


def test_input_validation():
    circuit = circuit_for(ADDITION, {"N": 1})
    with pytest.raises(ValueError, match=r"expected concept log-probabilities of shape \[batch, 2, 10\]"):
        circuit(torch.zeros(3, 2, 11))
    with pytest.raises(ValueError, match=r"expected labels of shape \[batch, 2\]"):
        circuit(torch.zeros(3, 2, 10), torch.zeros(3, 3))
    with pytest.raises(ValueError, match="label value 10 is outside its declared domain"):
        circuit(torch.zeros(1, 2, 10), torch.tensor([[0, 10]]))
