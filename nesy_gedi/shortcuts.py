"""Exact counting of reasoning shortcuts with PySDD.

A concept map alpha sends every true concept value g to a predicted value alpha(g). It
keeps the training labels when, for EVERY ground-truth concept tuple g = (g1..gP) of the
training support, the knowledge gives alpha(g) = (alpha(g1)..alpha(gP)) the same labels
as g. The identity always does; every other such map is a reasoning shortcut (Marconato
et al., 2023): a perception network that learned it fits the training labels perfectly
while predicting the wrong concepts.

The maps are counted without enumerating them. A new categorical knowledge base is built
whose variables are the map's values alpha[g] (one shared map: the encoder is shared by
all positions) or alpha[p][g] (`per_position`: one map per concept position), with one
table constraint per support tuple g over the scope (alpha(g1)..alpha(gP)); its allowed
rows are all consistent concept tuples c with labels(c) == labels(g). The labels of all
concept tuples are computed once with the task's circuit (`deduce_labels`), so the
concept space must stay small (MAX_CONCEPT_SPACE tuples). The compiled SDD's exact model
count is the number of maps.

The same SDD answers which concept labels would remove the shortcuts (`suggest_labels`): a
labelled image of value v pins alpha(v) = v; conjoining the pins of a value set and
model-counting gives the maps left, and a search over value sets finds the smallest set
that leaves only the identity, exactly.
"""
from __future__ import annotations

import itertools
import math
import time
from typing import Mapping

import numpy as np
import torch

from .circuit import KnowledgeCircuit
from .compiler import compile_knowledge_uncached, exact_model_count
from .errors import NesyError
from .logic.ground import Constraint, Knowledge, Variable

# Counting stays within seconds up to here; at 10**6 tuples (3-digit addition) it ran for minutes.
MAX_CONCEPT_SPACE = 100_000
MAX_LISTED_MAPS = 1000
# Value sets model-counted at most by the exact search for suggested labels (10 values: 1023 sets).
MAX_LABEL_SUBSETS = 100_000

__all__ = [
    "MAX_CONCEPT_SPACE",
    "MAX_LISTED_MAPS",
    "MAX_LABEL_SUBSETS",
    "concept_label_classes",
    "support_positions",
    "shortcut_knowledge",
    "count_shortcuts",
    "suggest_labels",
    "with_permutations_only",
    "restrict_to_permutations",
    "preserves_labels",
    "is_shortcut_map",
    "map_positions",
]


# ----------------------------------------------------------------------------- the concept space
def _domains(circuit: KnowledgeCircuit) -> list:
    return [tuple(v.domain) for v in circuit.concepts]


def _concept_space_size(circuit: KnowledgeCircuit) -> int:
    return math.prod(len(d) for d in _domains(circuit))


def concept_label_classes(circuit: KnowledgeCircuit, max_concept_space: int | None = None
                          ) -> tuple[np.ndarray, np.ndarray]:
    """Label class of every concept tuple, indexed like itertools.product over the domain positions.

    Returns (classes [N] int64: an id per distinct label tuple, -1 for concept tuples the
    knowledge rules out; label_values [K, L]: the label tuple of each class id).
    """
    size = _concept_space_size(circuit)
    limit = MAX_CONCEPT_SPACE if max_concept_space is None else max_concept_space
    if size > limit:
        raise NesyError(
            f"the concept space of {circuit.compiled.knowledge.path} has {size} tuples; counting "
            f"reasoning shortcuts computes the labels of every concept tuple, which is limited to "
            f"{limit} (use a smaller instance of the task, e.g. --set N=1)")
    sizes = [len(d) for d in _domains(circuit)]
    grids = np.indices(sizes).reshape(len(sizes), -1).T  # row-major = itertools.product order
    device = circuit.gather_index.device
    labels, consistent = circuit.deduce_labels(torch.as_tensor(grids, dtype=torch.long, device=device))
    labels = labels.cpu().numpy().reshape(size, -1)
    consistent = consistent.cpu().numpy().astype(bool)
    classes = np.full(size, -1, dtype=np.int64)
    if consistent.any():
        values, inverse = np.unique(labels[consistent], axis=0, return_inverse=True)
        classes[consistent] = inverse.reshape(-1)
    else:
        values = np.zeros((0, labels.shape[1]), dtype=np.int64)
    return classes, values


def _flat_index(positions: np.ndarray, sizes: list) -> np.ndarray:
    return np.ravel_multi_index(tuple(positions.T), sizes) if len(positions) else np.zeros(0, dtype=np.int64)


def support_positions(circuit: KnowledgeCircuit, support: np.ndarray | None, classes: np.ndarray) -> np.ndarray:
    """The training support as domain positions [S, P]: the given value tuples (or, with None,
    every concept tuple), keeping only those consistent with the knowledge."""
    domains = _domains(circuit)
    sizes = [len(d) for d in domains]
    if support is None:
        positions = np.indices(sizes).reshape(len(sizes), -1).T
    else:
        support = np.asarray(support, dtype=np.int64)
        if support.ndim != 2 or support.shape[1] != len(domains):
            raise NesyError(f"a support must list tuples of {len(domains)} concept values, "
                            f"got an array of shape {support.shape}")
        positions = np.empty_like(support)
        for p, domain in enumerate(domains):
            lookup = {value: i for i, value in enumerate(domain)}
            try:
                positions[:, p] = [lookup[int(v)] for v in support[:, p]]
            except KeyError as error:
                raise NesyError(f"support value {error.args[0]} is not in the domain of "
                                f"{circuit.concepts[p].name}") from None
        positions = np.unique(positions, axis=0)
    keep = classes[_flat_index(positions, sizes)] >= 0
    return positions[keep]


# ----------------------------------------------------------------------------- the map knowledge
def _shared_domain(circuit: KnowledgeCircuit) -> tuple:
    domains = _domains(circuit)
    if any(d != domains[0] for d in domains):
        raise NesyError("one concept map shared by all positions needs every concept to have the same "
                        "domain; count with per_position=True (--per-position) instead")
    return domains[0]


def shortcut_knowledge(circuit: KnowledgeCircuit, support: np.ndarray | None = None,
                       per_position: bool = False, classes: np.ndarray | None = None) -> tuple[Knowledge, int]:
    """The categorical knowledge whose models are the label-preserving concept maps.

    Returns (knowledge, support size). Variables: alpha[g] (shared) or alpha[p][g], each
    with the concept domain; constraints: one table per support tuple (deduplicated).
    """
    if classes is None:
        classes, _ = concept_label_classes(circuit)
    domains = _domains(circuit)
    sizes = [len(d) for d in domains]
    num_positions = len(domains)
    path = f"<concept maps of {circuit.compiled.knowledge.path}>"
    knowledge = Knowledge(path, {})
    variable_id = {}  # (position or None, domain position) -> variable id
    if per_position:
        for p, domain in enumerate(domains):
            for i, value in enumerate(domain):
                variable_id[(p, i)] = len(knowledge.variables)
                knowledge.variables.append(Variable(len(knowledge.variables), f"alpha[{p}][{value}]", "alpha",
                                                    (p, value), "concept", domain, 0))
    else:
        domain = _shared_domain(circuit)
        for i, value in enumerate(domain):
            variable_id[(None, i)] = len(knowledge.variables)
            knowledge.variables.append(Variable(len(knowledge.variables), f"alpha[{value}]", "alpha",
                                                (value,), "concept", domain, 0))

    positions = support_positions(circuit, support, classes)
    all_tuples = np.indices(sizes).reshape(num_positions, -1).T
    members: dict = {}  # label class -> consistent concept tuples (positions) with those labels
    templates: dict = {}  # (label class, pattern) -> allowed rows over the pattern's blocks
    seen: set = set()
    support_classes = classes[_flat_index(positions, sizes)]
    for g, label_class in zip(positions.tolist(), support_classes.tolist()):
        if per_position:
            pattern = tuple(range(num_positions))
            scope = tuple(variable_id[(p, g[p])] for p in range(num_positions))
        else:
            # Positions that show the same true value share one map variable alpha[value].
            first: dict = {}
            pattern = tuple(first.setdefault(value, len(first)) for value in g)
            scope = tuple(variable_id[(None, value)] for value in first)
        key = (label_class, pattern, scope)
        if key in seen:
            continue
        seen.add(key)
        if (label_class, pattern) not in templates:
            if label_class not in members:
                members[label_class] = all_tuples[classes == label_class]
            rows = members[label_class]
            leaders = [pattern.index(b) for b in range(max(pattern) + 1)]
            same = np.ones(len(rows), dtype=bool)
            for p, block in enumerate(pattern):
                same &= rows[:, p] == rows[:, leaders[block]]
            templates[(label_class, pattern)] = np.unique(rows[same][:, leaders], axis=0).astype(np.int32)
        values = [domains[p][g[p]] for p in range(num_positions)]
        knowledge.constraints.append(Constraint(0, f"labels(alpha({values})) == labels({values})", scope,
                                                templates[(label_class, pattern)]))
    return knowledge, len(positions)


def _permutation_groups(knowledge: Knowledge) -> list:
    """The map variables that must take distinct values for the map to permute: one group per
    concept position (per_position) or a single group (shared map)."""
    groups: dict = {}
    for variable in knowledge.variables:
        groups.setdefault((variable.index[:-1], variable.domain), []).append(variable)
    return list(groups.values())


def with_permutations_only(knowledge: Knowledge) -> Knowledge:
    """The map knowledge restricted to maps that permute each concept domain.

    A clustering objective with a uniform prior over clusters (GEDI's prior term) rules out
    maps that merge concept values, but it is blind to a relabelling of balanced clusters:
    the label-preserving permutations are the shortcuts that only concept supervision (or
    an asymmetric support) can exclude. A map of a finite domain onto itself is a
    permutation exactly when it is injective, so one "differs" table per pair of map
    variables over the same domain and position suffices. (count_shortcuts does not
    compile this knowledge: it conjoins the same pairs onto the compiled map SDD, see
    `restrict_to_permutations`, which stays as small as the label-preserving maps allow.)
    """
    constraints = list(knowledge.constraints)
    for variables in _permutation_groups(knowledge):
        size = len(variables[0].domain)
        differs = np.array([(i, j) for i in range(size) for j in range(size) if i != j], dtype=np.int32)
        for index, first in enumerate(variables):
            for second in variables[index + 1:]:
                constraints.append(Constraint(0, f"{first.name} != {second.name}", (first.id, second.id), differs))
    return Knowledge(knowledge.path, knowledge.params, list(knowledge.variables), constraints)


def restrict_to_permutations(manager, root, knowledge: Knowledge, literal_of: dict):
    """The compiled map SDD `root` conjoined with "alpha[u] != alpha[w]" for every pair of map
    variables of one position: the label-preserving maps that permute the concept values.

    Conjoined onto the compiled knowledge (whose maps are few) rather than compiled with it:
    on their own the pairwise constraints are all the permutations (10! of 10 values), an
    SDD far larger than their conjunction with the labels."""
    for variables in _permutation_groups(knowledge):
        for index, first in enumerate(variables):
            for second in variables[index + 1:]:
                for position in range(len(first.domain)):
                    both = manager.conjoin(manager.literal(literal_of[(first.id, position)]),
                                           manager.literal(literal_of[(second.id, position)]))
                    root = manager.conjoin(root, manager.negate(both))
                    if root.is_false():
                        return root
    return root


# ----------------------------------------------------------------------------- counting
def count_shortcuts(circuit: KnowledgeCircuit, support: np.ndarray | None = None, per_position: bool = False,
                    list_limit: int = MAX_LISTED_MAPS, max_concept_space: int | None = None,
                    classes: np.ndarray | None = None, suggest: bool = True,
                    max_label_subsets: int = MAX_LABEL_SUBSETS) -> dict:
    """Count the concept maps that keep every training label; shortcuts = maps - 1 (the identity).

    Also counts the label-preserving maps that permute the concept values
    (`permutation_maps`, see `with_permutations_only`): the shortcuts left over once the
    clusters are balanced and sharp, which no clustering prior can tell from the truth.

    With `suggest` (default) the result also says which concept labels would remove the
    shortcuts (`suggested_labels`, and `permutation_suggested_labels` for the permutation
    shortcuts only): see `suggest_labels`.

    `support`: allowed ground-truth concept tuples as values [S, P]; None means every concept
    tuple consistent with the knowledge. With at most `list_limit` maps they are listed:
    shared maps as [alpha(v) for v in domain], per-position maps as one such list per position.
    Concept spaces above `max_concept_space` (default MAX_CONCEPT_SPACE) raise NesyError;
    `classes` (from concept_label_classes) saves recomputing the labels of every concept tuple.
    """
    started = time.perf_counter()
    if classes is None:
        classes, _ = concept_label_classes(circuit, max_concept_space)
    knowledge, support_size = shortcut_knowledge(circuit, support, per_position, classes)
    if support_size == 0:
        raise NesyError("no tuple of the training support is consistent with the knowledge")
    manager, root, literal_of, _, model_count = compile_knowledge_uncached(knowledge, "blocks")
    permutation_root = restrict_to_permutations(manager, root, knowledge, literal_of)
    permutation_count = exact_model_count(manager, permutation_root)
    result = {
        "concept_maps": int(model_count),
        "shortcuts": int(model_count) - 1,
        "permutation_maps": int(permutation_count),
        "permutation_shortcuts": int(permutation_count) - 1,
        "per_position": bool(per_position),
        "support_size": int(support_size),
        "concept_space": _concept_space_size(circuit),
        "constraints": len(knowledge.constraints),
        "sdd_size": root.size(),
    }
    if suggest:
        pins = _value_pins(knowledge, literal_of)
        result["suggested_labels"] = _suggest(manager, root, pins, max_label_subsets, int(model_count))
        result["permutation_suggested_labels"] = _suggest(manager, permutation_root, pins, max_label_subsets,
                                                          int(permutation_count))
    result["seconds"] = round(time.perf_counter() - started, 4)
    if model_count <= list_limit:
        result["maps"] = _list_maps(manager, root, literal_of, knowledge, circuit, per_position)
    return result


# ----------------------------------------------------------------------------- which labels remove them
def suggest_labels(circuit: KnowledgeCircuit, support: np.ndarray | None = None, per_position: bool = False,
                   permutations_only: bool = False, classes: np.ndarray | None = None,
                   max_subsets: int = MAX_LABEL_SUBSETS) -> dict:
    """The smallest set of concept values whose labels exclude every reasoning shortcut.

    A concept label of value v (one labelled image of class v) pins alpha(v) = v. A set S
    of values therefore excludes every shortcut iff no label-preserving map other than the
    identity fixes every value of S. With `per_position` maps a labelled image of value v
    pins alpha_p(v) = v at EVERY position p (the backbone that reads it is shared by all
    positions, so its label says what the network must answer for that image wherever it
    is shown). `permutations_only` asks the same for the permutation shortcuts (what is
    left once the clusters are right).

    Exact: the compiled map SDD is conjoined with the pins of S and model-counted. The
    values that some shortcut moves are the only useful ones; a greedy pass (add the value
    that leaves the fewest shortcuts) gives an upper bound U, then every subset of those
    values of size 1, 2, ... is checked until a size with no shortcut left (at most U),
    which proves minimality. Returns
        values: the lexicographically first smallest set (sorted),
        shortcuts_left_by_budget: [n0, n1, ..., 0], n_k = the fewest shortcuts any k labels
            leave (n0 = the shortcut count; the last entry, at k = len(values), is 0),
        sets_by_budget: for each k, the lexicographically first k values that achieve n_k,
        movable_values: the values that some shortcut moves,
        greedy_values: the greedy set (the upper bound),
        exact: False only when checking every subset of a size would exceed `max_subsets`
            subsets; then the best set of the last size checked is extended greedily, and
            `values` and the budgets past `exhausted_up_to` come from that chain (upper bounds),
        exhausted_up_to: the largest size whose subsets were all checked,
        subsets_checked: how many value sets were model-counted.
    """
    if classes is None:
        classes, _ = concept_label_classes(circuit)
    knowledge, support_size = shortcut_knowledge(circuit, support, per_position, classes)
    if support_size == 0:
        raise NesyError("no tuple of the training support is consistent with the knowledge")
    manager, root, literal_of, _, model_count = compile_knowledge_uncached(knowledge, "blocks")
    if permutations_only:
        root = restrict_to_permutations(manager, root, knowledge, literal_of)
        model_count = exact_model_count(manager, root)
    return _suggest(manager, root, _value_pins(knowledge, literal_of), max_subsets, int(model_count))


def _value_pins(knowledge: Knowledge, literal_of: dict) -> dict:
    """Concept value v -> the literals a label of v sets true: alpha[v] = v (or alpha[p][v] = v at every p)."""
    pins: dict = {}
    for variable in knowledge.variables:
        value = variable.index[-1]
        pins.setdefault(value, []).append(literal_of[(variable.id, variable.domain.index(value))])
    return dict(sorted(pins.items()))


def _suggest(manager, root, pins: dict, max_subsets: int, total: int | None = None) -> dict:
    if total is None:
        total = exact_model_count(manager, root)
    # Every count below is at most `total`: PySDD's own (64-bit, C) counter is exact below 2**63
    # and over a hundred times faster than exact_model_count's Python walk.
    count = manager.global_model_count if total < 2**62 else (lambda node: exact_model_count(manager, node))
    counts: dict = {(): (root, total)}  # sorted tuple of values -> (SDD of the maps fixing them, their number)

    def maps_fixing(values: tuple) -> int:
        if values not in counts:
            maps_fixing(values[:-1])
            node = counts[values[:-1]][0]
            for literal in pins[values[-1]]:
                node = manager.conjoin(node, manager.literal(literal))
            counts[values] = (node, int(count(node)))
        return counts[values][1]

    everything = maps_fixing(())
    movable = [v for v in pins if maps_fixing((v,)) < everything]

    # Greedy upper bound: each step adds the value leaving the fewest maps (ties: the smallest value).
    greedy: list = []  # in the order chosen
    greedy_left = [everything - 1]
    while greedy_left[-1] > 0:
        best = min((v for v in movable if v not in greedy),
                   key=lambda v: (maps_fixing(tuple(sorted(greedy + [v]))), v))
        greedy.append(best)
        greedy_left.append(maps_fixing(tuple(sorted(greedy))) - 1)

    # Exhaust the sizes 1, 2, ... up to the greedy bound: the first size leaving no shortcut is minimal.
    best_sets, best_left = [()], [everything - 1]
    exact, exhausted, checked = True, 0, 0
    found = () if everything == 1 else None
    for size in range(1, len(greedy) + 1):
        if checked + math.comb(len(movable), size) > max_subsets:
            exact = False
            break
        size_best, size_left = None, None
        for subset in itertools.combinations(movable, size):
            left = maps_fixing(subset) - 1
            checked += 1
            if size_left is None or left < size_left:
                size_best, size_left = subset, left
                if left == 0:
                    break
        best_sets.append(size_best)
        best_left.append(size_left)
        if size_left == 0:
            found = size_best
            exhausted = size
            break
        exhausted = size
    if found is None:  # the search stopped early: extend the best set found greedily, one value at a time
        chosen = list(best_sets[-1])
        while best_left[-1] > 0:
            best = min((v for v in movable if v not in chosen),
                       key=lambda v: (maps_fixing(tuple(sorted(chosen + [v]))), v))
            chosen.append(best)
            best_sets.append(tuple(sorted(chosen)))
            best_left.append(maps_fixing(best_sets[-1]) - 1)
        found = best_sets[-1]
    return {
        "values": list(found),
        "shortcuts_left_by_budget": [int(n) for n in best_left],
        "sets_by_budget": [list(s) for s in best_sets],
        "movable_values": list(movable),
        "greedy_values": sorted(greedy),
        "exact": exact,
        "exhausted_up_to": exhausted,
        "subsets_checked": checked,
    }


def _list_maps(manager, root, literal_of: dict, knowledge: Knowledge, circuit: KnowledgeCircuit,
               per_position: bool) -> list:
    """Every model of the map knowledge, by depth-first conditioning (each branch has a model)."""
    variables = knowledge.variables
    found = []

    def visit(index: int, node, chosen: list) -> None:
        if node.is_false():
            return
        if index == len(variables):
            found.append(list(chosen))
            return
        variable = variables[index]
        for position in range(len(variable.domain)):
            visit(index + 1, manager.condition(literal_of[(variable.id, position)], node), chosen + [position])

    visit(0, root, [])
    maps = []
    for chosen in found:
        values = [variables[i].domain[p] for i, p in enumerate(chosen)]
        if per_position:
            split, start = [], 0
            for domain in _domains(circuit):
                split.append(values[start:start + len(domain)])
                start += len(domain)
            maps.append(split)
        else:
            maps.append(values)
    return sorted(maps)


# ----------------------------------------------------------------------------- checking one map
def map_positions(circuit: KnowledgeCircuit, concept_map, per_position: bool = False) -> np.ndarray:
    """A concept map -> [P, D] table of domain positions (row p: the map used at position p).

    Shared maps: a list [alpha(v) for v in domain] or a dict {v: alpha(v)} (values missing
    from the dict map to themselves). Per-position maps: one such list/dict per position.
    """
    domains = _domains(circuit)
    width = max(len(d) for d in domains)
    table = np.tile(np.arange(width), (len(domains), 1))

    def fill(p: int, mapping) -> None:
        domain = domains[p]
        if isinstance(mapping, Mapping):
            items = mapping.items()
        else:
            mapping = list(mapping)
            if len(mapping) != len(domain):
                raise NesyError(f"a concept map lists {len(mapping)} values, the domain of "
                                f"{circuit.concepts[p].name} has {len(domain)}")
            items = zip(domain, mapping)
        for source, target in items:
            if int(source) not in domain or int(target) not in domain:
                raise NesyError(f"concept map {source} -> {target} leaves the domain of {circuit.concepts[p].name}")
            table[p, domain.index(int(source))] = domain.index(int(target))

    if per_position:
        concept_map = list(concept_map)
        if len(concept_map) != len(domains):
            raise NesyError(f"a per-position concept map needs {len(domains)} maps, got {len(concept_map)}")
        for p, mapping in enumerate(concept_map):
            fill(p, mapping)
    else:
        _shared_domain(circuit)
        for p in range(len(domains)):
            fill(p, concept_map)
    return table


def preserves_labels(circuit: KnowledgeCircuit, concept_map, support: np.ndarray | None = None,
                     per_position: bool = False, classes: np.ndarray | None = None) -> bool:
    """Whether the map gives every support tuple's image the labels of the tuple itself."""
    if classes is None:
        classes, _ = concept_label_classes(circuit)
    sizes = [len(d) for d in _domains(circuit)]
    table = map_positions(circuit, concept_map, per_position)
    positions = support_positions(circuit, support, classes)
    mapped = np.stack([table[p, positions[:, p]] for p in range(len(sizes))], axis=1)
    return bool(np.array_equal(classes[_flat_index(mapped, sizes)], classes[_flat_index(positions, sizes)]))


def is_identity(circuit: KnowledgeCircuit, concept_map, per_position: bool = False) -> bool:
    table = map_positions(circuit, concept_map, per_position)
    return all(np.array_equal(table[p, :len(d)], np.arange(len(d))) for p, d in enumerate(_domains(circuit)))


def is_shortcut_map(circuit: KnowledgeCircuit, concept_map, support: np.ndarray | None = None,
                    per_position: bool = False, classes: np.ndarray | None = None) -> bool:
    """Whether the map is one of the task's counted maps other than the identity: a reasoning shortcut."""
    return (not is_identity(circuit, concept_map, per_position)
            and preserves_labels(circuit, concept_map, support, per_position, classes))
