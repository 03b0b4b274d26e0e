"""Symbolic reasoning on compiled knowledge, without torch: which label tuples the knowledge allows.

The torch layer (`nesy_gedi.circuit`) uses it to predict labels exactly when the allowed
label tuples are few.
"""
from __future__ import annotations

import array

from .compiler import CompiledKnowledge, exact_model_count


def enumerate_label_tuples(compiled: CompiledKnowledge, limit: int) -> list:
    """Label tuples consistent with the knowledge (concepts and hidden variables projected away),
    sorted; [] when there are more than `limit`.

    The other variables are projected away and the label tuples counted exactly first;
    only when they are few does a depth-first search over the labels condition the
    projected SDD on one label value at a time, pruning prefixes that no model extends
    (every prefix kept extends to a tuple, so the search is short). Enumerating
    `SddNode.models()` instead would also enumerate every assignment of the projected-away
    indicators (2**(that many) of them).
    """
    knowledge = compiled.knowledge
    labels = knowledge.labels
    if not labels:
        return []
    manager, full_root = compiled.sdd()
    exists_map = array.array("i", [0] * (manager.var_count() + 1))
    quantified = 0
    for variable in knowledge.variables:
        if variable.role != "label":
            for literal in compiled.literals(variable):
                exists_map[literal] = 1
                quantified += 1
    root = manager.exists_multiple(exists_map, full_root)
    if root.is_false() or exact_model_count(manager, root) // 2**quantified > limit:
        return []
    tuples: list = []

    def search(depth: int, node, prefix: list) -> bool:
        if depth == len(labels):
            tuples.append(list(prefix))
            return len(tuples) <= limit
        label = labels[depth]
        for position, value in enumerate(label.domain):
            child = manager.condition(compiled.literal_of[(label.id, position)], node)
            if child.is_false():
                continue
            prefix.append(value)
            keep_going = search(depth + 1, child, prefix)
            prefix.pop()
            if not keep_going:
                return False
        return True

    search(0, root, [])
    return sorted(tuples)
