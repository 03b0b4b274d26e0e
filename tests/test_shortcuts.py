"""Exact reasoning-shortcut counts (PySDD) against brute-force enumeration of concept maps."""
from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from nesy_gedi.circuit import KnowledgeCircuit
from nesy_gedi.cli import main
from nesy_gedi.compiler import compile_file
from nesy_gedi.errors import NesyError
from nesy_gedi.shortcuts import count_shortcuts, is_shortcut_map, preserves_labels

REPO = Path(__file__).resolve().parents[1]

ADDITION = """
concept a : 0..{high}
concept b : 0..{high}
label s : 0..{top}
constraint a + b == s
"""

PARITY = """
concept x[i in 0..2] : 0..1
label p : 0..1
constraint sum(i in 0..2: x[i]) % 2 == p
"""

# Two labels, one not symmetric in the concepts; a constraint that rules concept tuples out.
COMPARE = """
concept a : 0..3
concept b : 0..3
label s : 0..6
label less : 0..1
constraint a + b == s
constraint less == (if a < b then 1 else 0)
constraint a != 3 or b != 3
"""

SUM3 = """
concept c[i in 0..2] : 0..2
label s : 0..6
constraint c[0] + c[1] + c[2] == s
"""


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch, tmp_path):
    torch.set_num_threads(1)
    monkeypatch.setenv("NESY_GEDI_CACHE", str(tmp_path / "cache"))


def _circuit(tmp_path: Path, text: str, name: str = "task.logic") -> KnowledgeCircuit:
    path = tmp_path / name
    path.write_text(text)
    return KnowledgeCircuit(compile_file(path, cache_dir=tmp_path / "cache"), compile_module=False)


def _brute_force(domains: list, label_of, support, per_position: bool):
    """Every map, checked on every consistent support tuple; label_of returns None when ruled out."""
    if support is None:
        support = list(itertools.product(*domains))
    support = [tuple(g) for g in support if label_of(tuple(g)) is not None]
    if per_position:
        choices = [itertools.product(d, repeat=len(d)) for d in domains]
        maps = ([dict(zip(d, m)) for d, m in zip(domains, combo)] for combo in itertools.product(*choices))
    else:
        domain = domains[0]
        maps = ([dict(zip(domain, m))] * len(domains) for m in itertools.product(domain, repeat=len(domain)))
    found = []
    for alpha in maps:
        if all(label_of(tuple(alpha[p][v] for p, v in enumerate(g))) == label_of(g) for g in support):
            if per_position:
                found.append([[alpha[p][v] for v in d] for p, d in enumerate(domains)])
            else:
                found.append([alpha[0][v] for v in domains[0]])
    return sorted(found)


def _check(circuit, domains, label_of, support=None):
    for per_position in (False, True):
        expected = _brute_force(domains, label_of, support, per_position)
        result = count_shortcuts(circuit, None if support is None else np.array(support), per_position,
                                 list_limit=10**6)
        assert result["concept_maps"] == len(expected), (per_position, result["concept_maps"], len(expected))
        assert result["shortcuts"] == len(expected) - 1
        assert result["maps"] == expected
        assert result["per_position"] is per_position
        permutations = [m for m in expected
                        if all(sorted(row) == sorted(d) for row, d in zip(m if per_position else [m], domains))]
        assert result["permutation_maps"] == len(permutations) >= 1
        assert result["permutation_shortcuts"] == len(permutations) - 1
        identity = [list(d) for d in domains] if per_position else list(domains[0])
        assert identity in result["maps"]
    return result


def test_addition_0_to_3_matches_brute_force(tmp_path):
    circuit = _circuit(tmp_path, ADDITION.format(high=3, top=6))
    result = _check(circuit, [range(4)] * 2, lambda g: sum(g))
    assert result["concept_maps"] == 1 and result["support_size"] == 16


def test_parity_matches_brute_force(tmp_path):
    circuit = _circuit(tmp_path, PARITY)
    # Parity keeps the identity and nothing else for a shared map (swapping 0/1 flips odd sums).
    _check(circuit, [range(2)] * 3, lambda g: sum(g) % 2)
    result = count_shortcuts(circuit, None, per_position=True)
    assert result["concept_maps"] == 4  # flip any even number of positions


def test_evenodd_style_restricted_support_matches_brute_force(tmp_path):
    circuit = _circuit(tmp_path, ADDITION.format(high=3, top=6))
    support = [[0, 2], [2, 0], [1, 3], [3, 1], [1, 1]]
    result = _check(circuit, [range(4)] * 2, lambda g: sum(g), support)
    assert result["shortcuts"] > 0
    # A larger domain, shared map only (5**5 maps; per position would be 5**10).
    circuit5 = _circuit(tmp_path, ADDITION.format(high=4, top=8), "five.logic")
    support5 = [[0, 4], [4, 0], [1, 3], [3, 1], [2, 2], [0, 1], [1, 0]]
    expected = _brute_force([range(5)] * 2, lambda g: sum(g), support5, False)
    result5 = count_shortcuts(circuit5, np.array(support5), per_position=False)
    assert result5["concept_maps"] == len(expected) > 1
    assert result5["maps"] == expected
    assert result5["support_size"] == len(support5)


def test_two_labels_and_ruled_out_tuples_match_brute_force(tmp_path):
    circuit = _circuit(tmp_path, COMPARE)

    def label_of(g):
        a, b = g
        return None if (a, b) == (3, 3) else (a + b, int(a < b))

    _check(circuit, [range(4)] * 2, label_of)
    support = [[0, 1], [1, 2], [2, 2], [3, 3], [0, 3]]  # (3, 3) is ruled out: dropped from the support
    result = _check(circuit, [range(4)] * 2, label_of, support)
    assert result["support_size"] == 4


def test_three_concepts_matches_brute_force(tmp_path):
    circuit = _circuit(tmp_path, SUM3)
    _check(circuit, [range(3)] * 3, lambda g: sum(g))
    support = [[0, 0, 2], [0, 2, 0], [2, 0, 0], [1, 1, 1]]
    _check(circuit, [range(3)] * 3, lambda g: sum(g), support)


def test_is_shortcut_map(tmp_path):
    circuit = _circuit(tmp_path, ADDITION.format(high=3, top=6))
    support = np.array([[0, 2], [2, 0], [1, 3], [3, 1], [1, 1]])
    result = count_shortcuts(circuit, support)
    for concept_map in result["maps"]:
        assert preserves_labels(circuit, concept_map, support)
        assert is_shortcut_map(circuit, concept_map, support) == (concept_map != [0, 1, 2, 3])
    assert not is_shortcut_map(circuit, [0, 1, 2, 3], support)
    assert not preserves_labels(circuit, [3, 2, 1, 0], None)  # the full support has no shortcut
    assert is_shortcut_map(circuit, {0: 1, 2: 1, 1: 2, 3: 0}, np.array([[0, 2], [2, 0]]))
    assert is_shortcut_map(circuit, [[1, 1, 3, 3], [1, 1, 1, 1]], np.array([[0, 2]]), per_position=True)
    with pytest.raises(NesyError):
        is_shortcut_map(circuit, [0, 1, 2], support)


def test_concept_space_limit(tmp_path, monkeypatch):
    import nesy_gedi.shortcuts as shortcuts

    circuit = _circuit(tmp_path, ADDITION.format(high=3, top=6))
    monkeypatch.setattr(shortcuts, "MAX_CONCEPT_SPACE", 10)
    with pytest.raises(NesyError, match="concept space"):
        count_shortcuts(circuit)


def test_cli_count_shortcuts_json(capsys):
    assert main(["count-shortcuts", str(REPO / "tasks" / "mnist_evenodd.yaml"), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert {"concept_maps", "shortcuts", "per_position", "support_size"} <= set(result)
    assert result["shortcuts"] == result["concept_maps"] - 1 > 0
    assert result["support_size"] == 16 and result["per_position"] is False
    assert [0, 1, 2, 3, 4, 5, 6, 7, 8, 9] in result["maps"]
    # EvenOdd's one permutation shortcut: d -> d + 5 (mod 10) keeps every training sum.
    assert result["permutation_shortcuts"] == 1
    assert [m for m in result["maps"] if sorted(m) == list(range(10))] == [list(range(10)),
                                                                           [5, 6, 7, 8, 9, 0, 1, 2, 3, 4]]

    assert main(["count-shortcuts", str(REPO / "tasks" / "mnist_addition.yaml"), "--json", "--per-position"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["concept_maps"] == 1 and result["shortcuts"] == 0 and result["per_position"] is True

    assert main(["count-shortcuts", str(REPO / "tasks" / "mnist_addition_restricted.yaml")]) == 0
    text = capsys.readouterr().out
    assert "reasoning shortcuts" in text and ": 1" in text
