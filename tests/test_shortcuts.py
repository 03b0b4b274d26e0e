"""Exact reasoning-shortcut counts (PySDD) against brute-force enumeration of concept maps."""
from __future__ import annotations

import collections
import itertools
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from nesy_gedi.circuit import KnowledgeCircuit
from nesy_gedi.builders import build_circuit
from nesy_gedi.cli import main
from nesy_gedi.compiler import compile_file, compile_knowledge_uncached
from nesy_gedi.config import load_config
from nesy_gedi.count_shortcuts import count_shortcuts_for_task, format_shortcut_count, task_support
from nesy_gedi.errors import NesyError
from nesy_gedi.shortcuts import (count_shortcuts, is_shortcut_map, preserves_labels, shortcut_knowledge,
                                  suggest_labels, with_permutations_only)

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


def _is_permutation(concept_map, domains, per_position: bool) -> bool:
    return all(sorted(row) == sorted(d) for row, d in zip(concept_map if per_position else [concept_map], domains))


def _brute_force_labels(maps: list, domains: list, per_position: bool) -> dict:
    """The smallest value set S fixed by no map of `maps` but the identity, by trying every subset of
    every size in lexicographic order; a label of v fixes v at every position (per_position)."""
    identity = [list(d) for d in domains] if per_position else list(domains[0])
    shortcuts = [m for m in maps if m != identity]

    def fixes(concept_map, values) -> bool:
        rows = concept_map if per_position else [concept_map]
        return all(row[list(d).index(v)] == v for row, d in zip(rows, domains if per_position else domains[:1])
                   for v in values if v in d)

    values = sorted(set().union(*map(set, domains)))
    # moved[m, i]: shortcut m moves value values[i] (at some position)
    moved = np.array([[not fixes(m, (v,)) for v in values] for m in shortcuts], dtype=bool).reshape(-1, len(values))
    left_by_budget, sets = [], []
    for size in range(len(values) + 1):
        left, best = min(((int((~moved[:, list(subset)].any(axis=1)).sum()), subset)
                          for subset in itertools.combinations(range(len(values)), size)), key=lambda pair: pair[0])
        left_by_budget.append(left)
        sets.append([values[i] for i in best])
        if left == 0:
            break
    return {"values": sets[-1], "shortcuts_left_by_budget": left_by_budget, "sets_by_budget": sets,
            "movable_values": [v for i, v in enumerate(values) if moved[:, i].any()]}


def _check_suggestion(suggestion: dict, expected: dict) -> None:
    for key, value in expected.items():
        assert suggestion[key] == value, (key, suggestion[key], value)
    assert suggestion["exact"] is True
    assert suggestion["exhausted_up_to"] == len(expected["values"])
    assert suggestion["shortcuts_left_by_budget"][-1] == 0
    # Each extra label removes at least one shortcut until none is left.
    left = suggestion["shortcuts_left_by_budget"]
    assert all(a > b for a, b in zip(left, left[1:]))


def _check(circuit, domains, label_of, support=None):
    for per_position in (False, True):
        expected = _brute_force(domains, label_of, support, per_position)
        result = count_shortcuts(circuit, None if support is None else np.array(support), per_position,
                                 list_limit=10**6)
        _check_suggestion(result["suggested_labels"], _brute_force_labels(expected, domains, per_position))
        permutation_maps = [m for m in expected if _is_permutation(m, domains, per_position)]
        _check_suggestion(result["permutation_suggested_labels"],
                          _brute_force_labels(permutation_maps, domains, per_position))
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


MAX_DISTINCT = """
concept a : 0..3
concept b : 0..3
label m : 0..3
constraint m == max(a, b)
"""

# Concepts with different domains (per-position maps only): a label of v pins v where v is in the domain.
MIXED_PARITY = """
concept a : 0..2
concept b : 1..4
label p : 0..1
constraint p == (a + b) % 2
"""


def test_suggested_labels_restricted_addition_matches_brute_force(tmp_path):
    circuit = _circuit(tmp_path, ADDITION.format(high=3, top=6))
    support = [[a, b] for a in range(4) for b in range(4) if (a + b) % 3 == 0]
    result = _check(circuit, [range(4)] * 2, lambda g: sum(g), support)
    shared = count_shortcuts(circuit, np.array(support))
    # Sums 0, 3, 6 only: 1 and 2 may swap (1+2 = 2+1) or merge into 0/3 patterns.
    assert shared["shortcuts"] == 3 and shared["permutation_shortcuts"] == 1
    assert shared["suggested_labels"]["values"] == [1]
    assert shared["suggested_labels"]["shortcuts_left_by_budget"] == [3, 0]
    assert result["per_position"] is True
    # The permutation count conjoins "differs" pairs onto the compiled maps; compiling them in agrees.
    for per_position in (False, True):
        knowledge, _ = shortcut_knowledge(circuit, np.array(support), per_position)
        compiled = compile_knowledge_uncached(with_permutations_only(knowledge))[4]
        assert compiled == count_shortcuts(circuit, np.array(support), per_position)["permutation_maps"]


def test_suggested_labels_of_a_hand_written_logic_file_match_brute_force(tmp_path):
    circuit = _circuit(tmp_path, MAX_DISTINCT)
    support = [[a, b] for a in range(4) for b in range(4) if a != b]
    _check(circuit, [range(4)] * 2, lambda g: max(g), support)
    shared = count_shortcuts(circuit, np.array(support))
    # max over distinct digits never tells 0 from 1: 0<->1 swapped, or both sent to 1.
    assert shared["maps"] == [[0, 1, 2, 3], [1, 0, 2, 3], [1, 1, 2, 3]]
    assert shared["suggested_labels"]["values"] == [0]
    assert shared["suggested_labels"]["movable_values"] == [0, 1]
    assert shared["permutation_suggested_labels"]["values"] == [0]

    mixed = _circuit(tmp_path, MIXED_PARITY, "mixed.logic")
    domains = [range(3), range(1, 5)]
    expected = _brute_force(domains, lambda g: sum(g) % 2, None, True)
    result = count_shortcuts(mixed, None, per_position=True, list_limit=10**6)
    assert result["maps"] == expected and result["concept_maps"] == len(expected) == 96
    _check_suggestion(result["suggested_labels"], _brute_force_labels(expected, domains, True))
    permutations = [m for m in expected if _is_permutation(m, domains, True)]
    _check_suggestion(result["permutation_suggested_labels"], _brute_force_labels(permutations, domains, True))
    with pytest.raises(NesyError, match="same domain"):
        count_shortcuts(mixed, None)


def test_the_exact_search_beats_greedy_and_the_greedy_fallback(tmp_path):
    """A case where adding the best single value each time needs 4 labels, but 3 suffice."""
    circuit = _circuit(tmp_path, ADDITION.format(high=4, top=8))
    support = [[1, 3], [2, 0], [3, 2], [4, 1]]
    result = count_shortcuts(circuit, np.array(support), per_position=True, list_limit=10**4)
    expected_maps = _backtrack_maps(list(range(5)), lambda g: sum(g), support, per_position=True)
    assert result["maps"] == expected_maps and len(expected_maps) == 6000
    expected = _brute_force_labels(expected_maps, [range(5)] * 2, True)
    suggestion = result["suggested_labels"]
    _check_suggestion(suggestion, expected)
    assert suggestion["values"] == [0, 3, 4] and suggestion["shortcuts_left_by_budget"] == [5999, 299, 14, 0]
    assert suggestion["greedy_values"] == [0, 1, 2, 4]
    for permutations_only, key in ((False, "suggested_labels"), (True, "permutation_suggested_labels")):
        assert suggest_labels(circuit, np.array(support), True, permutations_only) == result[key]

    # With no subset search allowed, the greedy chain stands in, flagged inexact: an upper bound.
    greedy = count_shortcuts(circuit, np.array(support), per_position=True,
                             max_label_subsets=0)["suggested_labels"]
    assert greedy["exact"] is False and greedy["exhausted_up_to"] == 0 and greedy["subsets_checked"] == 0
    assert greedy["values"] == [0, 1, 2, 4]
    left = greedy["shortcuts_left_by_budget"]
    assert len(left) == 5 and left[0] == 5999 and left[-1] == 0
    assert all(g >= e for g, e in zip(left, expected["shortcuts_left_by_budget"]))
    moved = [m for m in expected_maps if any(row[v] != v for row in m for v in greedy["values"])]
    assert len(moved) == len(expected_maps) - 1  # the greedy set excludes every shortcut
    # A budget that covers sizes 1 and 2 (5 + 10 value sets) but not 3 proves those minima only.
    partial = count_shortcuts(circuit, np.array(support), per_position=True,
                              max_label_subsets=15)["suggested_labels"]
    assert partial["exact"] is False and partial["exhausted_up_to"] == 2
    left = partial["shortcuts_left_by_budget"]
    assert left[:3] == [5999, 299, 14] and left[-1] == 0 and all(a > b for a, b in zip(left, left[1:]))
    assert partial["sets_by_budget"][2] == expected["sets_by_budget"][2]
    assert all(set(a) < set(b) for a, b in zip(partial["sets_by_budget"][2:], partial["sets_by_budget"][3:]))

    none = count_shortcuts(_circuit(tmp_path, ADDITION.format(high=3, top=6), "full.logic"))
    for key in ("suggested_labels", "permutation_suggested_labels"):
        assert none[key]["values"] == [] and none[key]["shortcuts_left_by_budget"] == [0]
        assert none[key]["sets_by_budget"] == [[]] and none[key]["movable_values"] == []
    assert "suggested_labels" not in count_shortcuts(circuit, np.array(support), suggest=False)


# ----------------------------------------------------------------------------- the shipped tasks
def _backtrack_maps(domain: list, label_of, support, per_position: bool = False, positions: int = 2) -> list:
    """Every label-preserving map by backtracking over the map's values (independent of the SDD):
    each support tuple is checked as soon as all the map values it reads are chosen."""
    support = sorted({tuple(g) for g in support if label_of(tuple(g)) is not None})
    # Tight tuples first (labels that few concept tuples share), so the search prunes early.
    sharing = collections.Counter(label_of(g) for g in itertools.product(domain, repeat=positions))
    support.sort(key=lambda g: (sharing[label_of(g)], g))

    def key(p, v):
        return (p, v) if per_position else v

    # Variables in order of first appearance in the support, so that each tuple is checked early.
    keys = list(dict.fromkeys([key(p, v) for g in support for p, v in enumerate(g)]
                              + [key(p, v) for v in domain for p in (range(positions) if per_position else [0])]))
    order = {k: i for i, k in enumerate(keys)}
    checks = [[] for _ in keys]
    for g in support:
        checks[max(order[key(p, v)] for p, v in enumerate(g))].append(g)
    chosen, found = {}, []

    def visit(i: int) -> None:
        if i == len(keys):
            found.append([[chosen[(p, v)] for v in domain] for p in range(positions)] if per_position
                         else [chosen[v] for v in domain])
            return
        for target in domain:
            chosen[keys[i]] = target
            if all(label_of(tuple(chosen[key(p, v)] for p, v in enumerate(g))) == label_of(g) for g in checks[i]):
                visit(i + 1)
        del chosen[keys[i]]

    visit(0)
    return sorted(found)


DIGITS = list(range(10))
PAIRS = [(a, b) for a in DIGITS for b in DIGITS]
EVENODD_PAIRS = {(a, b) for a, b in [(0, 6), (2, 8), (4, 6), (4, 8), (1, 5), (3, 7), (1, 9), (3, 9)]}
EVENODD_PAIRS |= {(b, a) for a, b in EVENODD_PAIRS}
# task -> (label of a pair of digits, training support, per-position maps few enough to enumerate)
TASKS = {
    "mnist_evenodd": (lambda g: g[0] + g[1], sorted(EVENODD_PAIRS), True),
    "mnist_addition_restricted": (lambda g: g[0] + g[1], [g for g in PAIRS if sum(g) % 4 == 0], True),
    "mnist_carry": (lambda g: int(g[0] + g[1] >= 10), [g for g in PAIRS if g[0] % 2 == 0], False),
    "mnist_difference_mod10": (lambda g: (g[0] - g[1]) % 10, PAIRS, True),
    "mnist_product_mod10": (lambda g: g[0] * g[1] % 10, [g for g in PAIRS if g[0] % 2 == g[1] % 2], True),
}
HEADER = re.compile(r"^# count-shortcuts( --per-position)?: (.*)$")


def _header_counts(path: Path) -> dict:
    """The `# count-shortcuts[ --per-position]: ...` lines of a task file's header comment, parsed."""
    found: dict = {}

    def values(text: str) -> list:
        return [] if text == "none" else [int(v) for v in text.split()]

    for line in path.read_text().splitlines():
        match = HEADER.match(line)
        if not match:
            continue
        entry = found.setdefault(bool(match.group(1)), {})
        text = match.group(2)
        if m := re.fullmatch(r"shortcuts (\d+), permutation shortcuts (\d+)", text):
            entry["shortcuts"], entry["permutation_shortcuts"] = int(m.group(1)), int(m.group(2))
        elif m := re.fullmatch(r"suggested labels ([\d ]+|none) \(shortcuts left by budget: ([\d ]+)\)", text):
            entry["suggested_labels"] = (values(m.group(1)), values(m.group(2)))
        elif m := re.fullmatch(r"permutation suggested labels ([\d ]+|none) \(left by budget: ([\d ]+)\)", text):
            entry["permutation_suggested_labels"] = (values(m.group(1)), values(m.group(2)))
        else:
            raise AssertionError(f"{path.name}: unreadable count line {line!r}")
    return found


@pytest.mark.parametrize("task", sorted(TASKS))
def test_shipped_tasks_match_brute_force_and_their_header(task):
    label_of, support, enumerable = TASKS[task]
    path = REPO / "tasks" / f"{task}.yaml"
    header = _header_counts(path)
    for per_position in (False, True):
        result = count_shortcuts_for_task(path, per_position=per_position, list_limit=10**4)
        if per_position and not enumerable:
            assert "maps" not in result
        else:
            expected = _backtrack_maps(DIGITS, label_of, support, per_position)
            assert result["maps"] == expected and result["concept_maps"] == len(expected)
            domains = [DIGITS, DIGITS]
            _check_suggestion(result["suggested_labels"], _brute_force_labels(expected, domains, per_position))
            permutations = [m for m in expected if _is_permutation(m, domains, per_position)]
            assert result["permutation_maps"] == len(permutations)
            _check_suggestion(result["permutation_suggested_labels"],
                              _brute_force_labels(permutations, domains, per_position))
        if task == "mnist_addition_restricted":  # not one of this suite's files: no count lines
            continue
        stated = header[per_position]
        assert stated["shortcuts"] == result["shortcuts"]
        assert stated["permutation_shortcuts"] == result["permutation_shortcuts"]
        for key in ("suggested_labels", "permutation_suggested_labels"):
            assert stated[key] == (result[key]["values"], result[key]["shortcuts_left_by_budget"]), (key, per_position)


def test_the_new_tasks_have_the_shortcut_structures_they_claim():
    counts = {task: count_shortcuts_for_task(REPO / "tasks" / f"{task}.yaml", list_limit=10**4)
              for task in ("mnist_carry", "mnist_difference_mod10", "mnist_product_mod10")}
    carry = counts["mnist_carry"]  # every shortcut merges digits
    assert carry["shortcuts"] > 0 and carry["permutation_shortcuts"] == 0
    assert all(sorted(m) != DIGITS for m in carry["maps"] if m != DIGITS)
    assert carry["suggested_labels"]["values"] == [1, 3, 5, 7, 9]
    difference = counts["mnist_difference_mod10"]  # the nine rotations, nothing else
    assert difference["maps"] == [[(d + k) % 10 for d in DIGITS] for k in range(10)]
    assert difference["permutation_shortcuts"] == difference["shortcuts"] == 9
    product = counts["mnist_product_mod10"]  # negate the evens and/or the odds
    assert product["maps"] == sorted([[(-d if d % 2 == 0 else d) % 10 for d in DIGITS],
                                      [(-d if d % 2 else d) % 10 for d in DIGITS],
                                      [(-d) % 10 for d in DIGITS], DIGITS])
    assert product["permutation_shortcuts"] == 3 and product["suggested_labels"]["values"] == [1, 2]


def test_task_support_and_the_printed_count():
    config = load_config(REPO / "tasks" / "mnist_evenodd.yaml")
    circuit = build_circuit(config)
    assert sorted(map(tuple, task_support(config, circuit).tolist())) == sorted(EVENODD_PAIRS)
    assert task_support(load_config(REPO / "tasks" / "mnist_addition.yaml"), circuit) is None
    result = count_shortcuts_for_task(REPO / "tasks" / "mnist_evenodd.yaml")
    assert result["task"] == "mnist_evenodd" and result["support"] == "data.train_support"
    text = format_shortcut_count(result)
    assert "reasoning shortcuts (maps other than the identity): 35" in text
    assert "labels that exclude every shortcut: one labelled image of each of 0 1 (2 values)" in text
    assert "shortcuts left with k labelled values (best values): 0: 35, 1: 5 (0), 2: 0 (0 1)" in text
    assert "labels that exclude every permutation shortcut: one labelled image of each of 0 (1 value)" in text
    only = format_shortcut_count(result, permutations_only=True)
    assert "reasoning shortcuts" not in only and "every shortcut" not in only
    assert "permutation shortcut: one labelled image of each of 0" in only
    full = format_shortcut_count(count_shortcuts_for_task(REPO / "tasks" / "mnist_addition.yaml"))
    assert "reasoning shortcuts (maps other than the identity): 0" in full
    assert "labels needed to exclude the shortcuts: none (there are none)" in full
    with pytest.raises(NesyError, match="no logic section"):
        count_shortcuts_for_task(REPO / "tasks" / "gedi_moons.yaml")


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
    assert result["suggested_labels"]["values"] == [0, 1]
    assert result["suggested_labels"]["shortcuts_left_by_budget"] == [35, 5, 0]
    assert result["permutation_suggested_labels"]["values"] == [0]

    assert main(["count-shortcuts", str(REPO / "tasks" / "mnist_addition.yaml"), "--json", "--per-position"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["concept_maps"] == 1 and result["shortcuts"] == 0 and result["per_position"] is True
    assert result["suggested_labels"]["values"] == []

    assert main(["count-shortcuts", str(REPO / "tasks" / "mnist_addition_restricted.yaml")]) == 0
    text = capsys.readouterr().out
    assert "reasoning shortcuts" in text and ": 1" in text
    assert "labels that exclude every shortcut: one labelled image of each of 1 (1 value)" in text

    assert main(["count-shortcuts", str(REPO / "tasks" / "mnist_product_mod10.yaml"), "--permutations-only"]) == 0
    text = capsys.readouterr().out
    assert "shortcuts that permute the concept values: 3" in text
    assert "permutation shortcut: one labelled image of each of 1 2 (2 values)" in text
    assert "reasoning shortcuts" not in text


def test_the_docs_table_of_shortcut_prone_tasks_matches_the_counts():
    rows = re.findall(r"^\| `(mnist_\w+)` \| `[\w.]+` \| .+? \| (\d+) \| (\d+) \| ([\d ]+|none needed) \|$",
                      (REPO / "docs" / "tasks.md").read_text(), flags=re.MULTILINE)
    assert len(rows) == 7
    for task, shortcuts, permutations, suggested in rows:
        result = count_shortcuts_for_task(REPO / "tasks" / f"{task}.yaml", list_limit=0)
        assert (int(shortcuts), int(permutations)) == (result["shortcuts"], result["permutation_shortcuts"]), task
        assert ([] if suggested == "none needed" else [int(v) for v in suggested.split()]) == \
            result["suggested_labels"]["values"], task


def test_a_concept_space_too_large_to_count_skips_the_count_and_lists_near_shortcuts(capsys):
    """3-digit addition has 10**6 concept tuples: counting ran for minutes before the bound;
    the near-shortcuts are scored on drawn tuples instead."""
    assert main(["count-shortcuts", str(REPO / "tasks" / "mnist_addition.yaml"), "--set", "N=3", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["shortcuts"] is None and 0.5 < result["near_shortcuts"][0]["label_share"] < 0.9
    out = format_shortcut_count(result)  # what the command prints without --json (one count, not two)
    assert "exact count skipped" in out and "has 1000000 tuples" in out and "limited to 100000" in out
    assert "near-shortcuts (wrong maps keeping the most training labels" in out