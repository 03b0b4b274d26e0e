"""Near-shortcuts: the wrong concept maps that keep the largest share of the training labels.

`near_shortcuts` ranks the merges, swaps and 3-cycles of concept values by the share of
training labels they keep, with the naming search's scorer, so it works where the concept
space is far too large to count shortcuts exactly.
"""
from __future__ import annotations

import itertools

import numpy as np

from ..circuit import KnowledgeCircuit
from .score import ConceptDomains, NamingScorer


# ----------------------------------------------------------------------------- near-shortcuts
def _describe_map(source: list, target: list) -> str:
    return " ".join(f"{s}->{t}" for s, t in zip(source, target) if s != t)


def wrong_maps(size: int) -> list:
    """(kind, map) of the maps one step from the identity: merges, swaps and 3-cycles."""
    maps = []
    for a, b in itertools.permutations(range(size), 2):
        mapping = list(range(size))
        mapping[a] = b
        maps.append(("merge", mapping))
    for a, b in itertools.combinations(range(size), 2):
        mapping = list(range(size))
        mapping[a], mapping[b] = b, a
        maps.append(("swap", mapping))
    for a, b, c in itertools.combinations(range(size), 3):
        for x, y, z in ((b, c, a), (c, a, b)):
            mapping = list(range(size))
            mapping[a], mapping[b], mapping[c] = x, y, z
            maps.append(("cycle", mapping))
    return maps


def value_positions(circuit: KnowledgeCircuit, concept_values) -> tuple[ConceptDomains, np.ndarray]:
    """True concept values [E, P] -> (the domains, domain positions [E, P]): the truth read as
    clusters named by the identity."""
    domains = ConceptDomains.of(circuit)
    values = np.asarray(concept_values, dtype=np.int64)
    positions = np.zeros_like(values)
    for p, g in enumerate(domains.group_of):
        lookup = {v: i for i, v in enumerate(domains.values[g])}
        positions[:, p] = [lookup[int(v)] for v in values[:, p]]
    return domains, positions


def near_shortcuts(circuit: KnowledgeCircuit, concept_values, labels, top: int = 10,
                   extra_maps: list | None = None) -> dict:
    """The wrong concept maps that keep the largest share of the training labels.

    concept_values [E, P]: the training examples' true concepts; labels [E, L]. Every merge
    (one value read as another), swap and 3-cycle of each domain's values is scored by the
    share of examples whose labels the knowledge still gives the mapped concepts (the
    scorer of `search_naming`, so long tuples work). A map keeping every label is a
    shortcut of the training data; one keeping most is a near-shortcut the semantic loss
    barely sees. `excluded_by`: one labelled image of any of these values rules it out.
    `extra_maps`: [(domain group, kind, map of positions)] to score as well.
    """
    domains, positions = value_positions(circuit, concept_values)
    width = max(domains.sizes)
    scorer = NamingScorer(circuit, positions, labels, width, noise=0.0)
    identity = np.tile(np.arange(width), (len(domains.sizes), 1))
    candidates, described = [], []
    for g, size in enumerate(domains.sizes):
        entries = [(kind, mapping) for kind, mapping in wrong_maps(size)]
        entries += [(kind, list(mapping)) for group, kind, mapping in (extra_maps or []) if group == g]
        for kind, mapping in entries:
            naming = identity.copy()
            naming[g, :size] = mapping
            candidates.append(naming)
            domain = domains.values[g]
            target = [domain[m] for m in mapping]
            described.append({"domain": domains.names[g], "kind": kind, "map": _describe_map(list(domain), target),
                              "mapping": target,
                              "excluded_by": [v for v, t in zip(domain, target) if v != t]})
    kept = scorer.explained(np.array(candidates)) / max(scorer.total, 1) if candidates else np.zeros(0)
    order = np.argsort(-kept, kind="stable")
    listed = []
    for i in order[:top]:
        listed.append({**described[i], "label_share": float(kept[i])})
    return {"examples": scorer.total, "maps_scored": len(candidates), "near_shortcuts": listed,
            "identity_label_share": float(scorer.explained(identity[None])[0] / max(scorer.total, 1))}


def map_label_share(circuit: KnowledgeCircuit, concept_values, labels, concept_map: list,
                    group: int = 0) -> float:
    """The share of examples whose labels the knowledge keeps when domain `group`'s values
    are read through `concept_map` (a list: the value each true value becomes)."""
    domains, positions = value_positions(circuit, concept_values)
    width = max(domains.sizes)
    naming = np.tile(np.arange(width), (len(domains.sizes), 1))
    domain = domains.values[group]
    naming[group, :len(domain)] = [domain.index(int(v)) for v in concept_map]
    scorer = NamingScorer(circuit, positions, labels, width, noise=0.0)
    return float(scorer.explained(naming[None])[0] / max(scorer.total, 1))
