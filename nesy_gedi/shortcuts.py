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
"""
from __future__ import annotations

import math
import time
from typing import Mapping

import numpy as np
import torch

from .circuit import KnowledgeCircuit
from .errors import NesyError
from .logic.ground import Constraint, Knowledge, Variable

MAX_CONCEPT_SPACE = 1_000_000
MAX_LISTED_MAPS = 1000

__all__ = [
    "MAX_CONCEPT_SPACE",
    "MAX_LISTED_MAPS",
    "concept_label_classes",
    "support_positions",
    "shortcut_knowledge",
    "count_shortcuts",
    "count_shortcuts_for_task",
    "task_support",
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


def with_permutations_only(knowledge: Knowledge) -> Knowledge:
    """The map knowledge restricted to maps that permute each concept domain.

    A clustering objective with a uniform prior over clusters (GEDI's prior term) rules out
    maps that merge concept values, but it is blind to a relabelling of balanced clusters:
    the label-preserving permutations are the shortcuts that only concept supervision (or
    an asymmetric support) can exclude. A map of a finite domain onto itself is a
    permutation exactly when it is injective, so one "differs" table per pair of map
    variables over the same domain and position suffices.
    """
    groups: dict = {}
    for variable in knowledge.variables:
        groups.setdefault((variable.index[:-1], variable.domain), []).append(variable.id)
    constraints = list(knowledge.constraints)
    for (_, domain), ids in groups.items():
        size = len(domain)
        differs = np.array([(i, j) for i in range(size) for j in range(size) if i != j], dtype=np.int32)
        for index, first in enumerate(ids):
            for second in ids[index + 1:]:
                names = (knowledge.variables[first].name, knowledge.variables[second].name)
                constraints.append(Constraint(0, f"{names[0]} != {names[1]}", (first, second), differs))
    return Knowledge(knowledge.path, knowledge.params, list(knowledge.variables), constraints)


# ----------------------------------------------------------------------------- counting
def count_shortcuts(circuit: KnowledgeCircuit, support: np.ndarray | None = None, per_position: bool = False,
                    list_limit: int = MAX_LISTED_MAPS, max_concept_space: int | None = None,
                    classes: np.ndarray | None = None) -> dict:
    """Count the concept maps that keep every training label; shortcuts = maps - 1 (the identity).

    Also counts the label-preserving maps that permute the concept values
    (`permutation_maps`, see `with_permutations_only`): the shortcuts left over once the
    clusters are balanced and sharp, which no clustering prior can tell from the truth.

    `support`: allowed ground-truth concept tuples as values [S, P]; None means every concept
    tuple consistent with the knowledge. With at most `list_limit` maps they are listed:
    shared maps as [alpha(v) for v in domain], per-position maps as one such list per position.
    Concept spaces above `max_concept_space` (default MAX_CONCEPT_SPACE) raise NesyError;
    `classes` (from concept_label_classes) saves recomputing the labels of every concept tuple.
    """
    from .compiler import compile_knowledge_uncached

    started = time.perf_counter()
    if classes is None:
        classes, _ = concept_label_classes(circuit, max_concept_space)
    knowledge, support_size = shortcut_knowledge(circuit, support, per_position, classes)
    if support_size == 0:
        raise NesyError("no tuple of the training support is consistent with the knowledge")
    manager, root, literal_of, _, model_count = compile_knowledge_uncached(knowledge, "blocks")
    permutation_count = compile_knowledge_uncached(with_permutations_only(knowledge), "blocks")[4]
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
        "seconds": round(time.perf_counter() - started, 4),
    }
    if model_count <= list_limit:
        result["maps"] = _list_maps(manager, root, literal_of, knowledge, circuit, per_position)
    return result


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


def task_support(config, circuit: KnowledgeCircuit) -> np.ndarray | None:
    """The task's training support as value tuples, or None for every consistent concept tuple."""
    if config.data.train_support is None:
        return None
    from .data.tasks import allowed_support

    return allowed_support(config.data.train_support, circuit, config.source)


def count_shortcuts_for_task(task_path, overrides: list | None = None, per_position: bool = False) -> dict:
    """`nesy-gedi count-shortcuts TASK`: the count for a task file's logic and training support."""
    from .config import load_config
    from .train import build_circuit

    config = load_config(task_path, overrides)
    if config.logic is None:
        raise NesyError("this task has no logic section: reasoning shortcuts are counted for tasks "
                        "trained with a logic file", config.source)
    circuit = build_circuit(config)
    result = {"task": config.name, "logic": config.logic.file, "params": dict(config.logic.params),
              "support": "data.train_support" if config.data.train_support is not None
              else "every concept tuple consistent with the knowledge"}
    result.update(count_shortcuts(circuit, task_support(config, circuit), per_position))
    return result


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
