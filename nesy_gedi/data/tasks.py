"""Neuro-symbolic tasks: tuples of images whose labels the logic file computes.

DeepProbLog's protocol: the shuffled images are cut into consecutive groups of P (one
per concept), so every example uses images no other example uses; the labels are the
unique completion the knowledge gives to the images' true classes. A restricted
training support (shortcut-prone tasks) instead draws, for each example, an allowed
concept tuple and then unused images of those classes.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import torch

from ..circuit import KnowledgeCircuit
from ..config import SupportConfig, TaskConfig
from ..errors import ConfigError, DataError
from ..logic.ground import evaluate_condition
from ..logic.syntax import parse_expression
from .images import load_images, to_float

MAX_ENUMERATED_SUPPORT = 1_000_000


@dataclass
class TupleDataset:
    """Examples over a shared image pool: example e shows images[indices[e, p]] for concept p."""

    images: torch.Tensor  # float [M, C, H, W] in [-1, 1]
    indices: torch.Tensor  # long [E, P]
    concepts: torch.Tensor  # long [E, P] concept values (the images' true classes)
    labels: torch.Tensor  # long [E, L] label values deduced by the knowledge

    def __len__(self) -> int:
        return self.indices.shape[0]

    def batch(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.images[self.indices[rows]], self.concepts[rows], self.labels[rows]


def class_to_position(circuit: KnowledgeCircuit, classes: torch.Tensor, dataset: str) -> torch.Tensor:
    """Image classes -> concept domain positions (classes must be values of the concept domain)."""
    positions = circuit.concept_positions(classes)
    if bool((positions < 0).any()):
        missing = sorted(set(classes[positions < 0].tolist()))
        raise DataError(f"{dataset} has classes {missing} that are not values of the concept domain "
                        f"{list(circuit.concepts[0].domain)} of {circuit.compiled.knowledge.path}")
    return positions


def _protocol_tuples(classes: torch.Tensor, arity: int, limit: int | None, generator: torch.Generator):
    order = torch.randperm(len(classes), generator=generator)
    count = len(order) // arity
    if limit is not None:
        if limit > count:
            raise ConfigError(f"asked for {limit} examples but the split has images for only {count} "
                              f"(each example uses {arity} fresh images)")
        count = limit
    return order[: count * arity].view(count, arity)


def _sample_tuples(classes: torch.Tensor, allowed: np.ndarray, limit: int | None, generator: torch.Generator):
    """Examples whose class tuples are drawn uniformly from `allowed`, each image used once."""
    pools = {}
    for value in torch.unique(classes).tolist():
        members = torch.nonzero(classes == value).flatten()
        pools[value] = members[torch.randperm(len(members), generator=generator)].tolist()
    limit = limit if limit is not None else len(classes) // allowed.shape[1]
    rows = []
    # Draw more tuples than needed: a drawn tuple whose classes ran out is skipped.
    for choice in torch.randint(len(allowed), (limit * 4 + 16,), generator=generator).tolist():
        if len(rows) == limit:
            break
        wanted = allowed[choice].tolist()
        if any(len(pools.get(value, ())) < wanted.count(value) for value in wanted):
            continue
        rows.append([pools[value].pop() for value in wanted])
    if not rows:
        raise DataError("no example can be built from the allowed concept tuples with the available images")
    return torch.tensor(rows, dtype=torch.long)


def allowed_support(config: SupportConfig, circuit: KnowledgeCircuit, source: str) -> np.ndarray:
    """The allowed ground-truth concept tuples (as values), from a list and/or a logic condition."""
    concepts = circuit.concepts
    domains = [v.domain for v in concepts]
    if config.tuples is not None:
        tuples = set()
        for row in config.tuples:
            if not isinstance(row, list) or len(row) != len(concepts):
                raise ConfigError(f"data.train_support.tuples: {row!r} must list {len(concepts)} concept values",
                                  source)
            for value, variable in zip(row, concepts):
                if value not in variable.domain:
                    raise ConfigError(f"data.train_support.tuples: {value!r} is not in the domain of "
                                      f"{variable.name}", source)
            variants = itertools.permutations(row) if config.symmetric else [row]
            tuples.update(tuple(v) for v in variants)
        candidates = np.array(sorted(tuples), dtype=np.int64)
    else:
        size = int(np.prod([len(d) for d in domains], dtype=object))
        if size > MAX_ENUMERATED_SUPPORT:
            raise ConfigError(f"data.train_support.constraint: the concept space has {size} tuples; "
                              f"list the allowed tuples instead", source)
        candidates = np.array(list(itertools.product(*domains)), dtype=np.int64)
    if config.constraint is not None:
        where = f"{source}: data.train_support.constraint"
        node = parse_expression(config.constraint, where)
        values = {v.name: candidates[:, i] for i, v in enumerate(concepts)}
        keep = evaluate_condition(node, circuit.compiled.knowledge, values, where)
        candidates = candidates[keep]
    if len(candidates) == 0:
        raise ConfigError("data.train_support allows no concept tuple", source)
    return candidates


def _complement(allowed: np.ndarray, circuit: KnowledgeCircuit) -> np.ndarray:
    allowed_set = set(map(tuple, allowed.tolist()))
    everything = itertools.product(*(v.domain for v in circuit.concepts))
    return np.array([t for t in everything if t not in allowed_set], dtype=np.int64)


def _build_split(images, classes, circuit, tuples: torch.Tensor) -> TupleDataset:
    positions = class_to_position(circuit, classes, "data")
    concept_positions = positions[tuples]
    labels, consistent = circuit.deduce_labels(concept_positions)
    keep = consistent.nonzero().flatten()
    return TupleDataset(images, tuples[keep], circuit.concept_values(concept_positions[keep]), labels[keep])


def build_task_data(config: TaskConfig, circuit: KnowledgeCircuit, data_root) -> dict:
    """The splits of a task: "train", "test" and, with a restricted support, "test_ood"."""
    arity = len(circuit.concepts)
    generator = torch.Generator().manual_seed(config.train.seed)
    splits = {}
    support = None
    if config.data.train_support is not None:
        support = allowed_support(config.data.train_support, circuit, config.source)
    for split in ("train", "test"):
        raw_images, classes = load_images(config.data.dataset, data_root, split)
        images = to_float(raw_images)
        limit = config.data.train_examples if split == "train" else config.data.test_examples
        if support is None:
            tuples = _protocol_tuples(classes, arity, limit, generator)
            splits[split] = _build_split(images, classes, circuit, tuples)
        else:
            splits[split] = _build_split(images, classes, circuit,
                                         _sample_tuples(classes, support, limit, generator))
            if split == "test":
                outside = _complement(support, circuit)
                if len(outside):
                    splits["test_ood"] = _build_split(images, classes, circuit,
                                                      _sample_tuples(classes, outside, limit, generator))
    return splits
