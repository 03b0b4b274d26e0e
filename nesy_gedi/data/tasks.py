"""Neuro-symbolic tasks: tuples of images whose labels the logic file computes.

DeepProbLog's protocol: the shuffled images are cut into consecutive groups of P (one
per concept), so every example uses images no other example uses; the labels are the
unique completion the knowledge gives to the images' true classes. A restricted
training support (shortcut-prone tasks) instead draws, for each example, an allowed
concept tuple and then unused images of those classes.

Concept values and data classes
-------------------------------
By default concept value v (of the first concept's domain, which the perception
predicts) shows images of data class v; `data.classes` instead lists, in domain order,
the data class of each value, by index or by name (`class_names`, e.g. Fashion-MNIST's
"Trouser"). Images of a class that is no concept value are left out of every example;
a concept value without any image in a split is an error.

Splits
------
"train", "val" (only with `data.val_examples`), "test" and, with a restricted support,
"test_ood". "val" is built first, from training images drawn by its own generator (seed
`train.seed + VAL_SEED_OFFSET`), with the training support; "train" uses only the other
training images, so both are disjoint (and disjoint from "test", another split of the
data set). Without "val" every split is exactly what it was before "val" existed.

Observed concepts
-----------------
The train split's `observed` (bool [E, P]) marks the concept positions whose true value
the training may use: every position of the examples chosen by `supervised_rows`
(`train.concept_supervision`, a fraction of the examples) or'ed with exactly K images of
each concept value (`train.concept_labels: K`, generator seed `train.seed +
LABELS_SEED_OFFSET`); None when no position is observed. The other splits have
`observed = None`.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import torch

from ..circuit import KnowledgeCircuit
from ..config.schema import SupportConfig, TaskConfig
from ..errors import ConfigError, DataError
from ..logic.ground import evaluate_condition
from ..logic.syntax import parse_expression
from .images import class_names, load_images, to_float

MAX_ENUMERATED_SUPPORT = 1_000_000
SUPERVISED_SEED_OFFSET = 17  # supervised_rows (as train.py always drew it)
VAL_SEED_OFFSET = 29  # images of the validation split
LABELS_SEED_OFFSET = 31  # the K labelled images of each concept value


@dataclass
class TupleDataset:
    """Examples over a shared image pool: example e shows images[indices[e, p]] for concept p.

    `images` is the whole split of the data set (indices are the data set's image indices;
    "train" and "val" share one pool). `observed` (train split only) marks the concept
    positions whose true value (`concepts`) the training may use; None: none is observed."""

    images: torch.Tensor  # float [M, C, H, W] in [-1, 1]
    indices: torch.Tensor  # long [E, P]
    concepts: torch.Tensor  # long [E, P] concept values (the images' true classes)
    labels: torch.Tensor  # long [E, L] label values deduced by the knowledge
    observed: torch.Tensor | None = None  # bool [E, P] concept positions whose value training may use

    def __len__(self) -> int:
        return self.indices.shape[0]

    def batch(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.images[self.indices[rows]], self.concepts[rows], self.labels[rows]


def class_to_position(circuit: KnowledgeCircuit, classes: torch.Tensor, dataset: str,
                      value_classes: list[int] | None = None) -> torch.Tensor:
    """Image classes -> concept domain positions; -1 for images of a class that is no concept value.

    `value_classes[i]` is the data class of domain position i; by default value v is class v.
    (`dataset` is accepted and unused; images outside the domain are not an error.)"""
    if value_classes is None:
        return circuit.concept_positions(classes)
    lookup = torch.full((max(int(classes.max()) if len(classes) else 0, max(value_classes)) + 1,), -1,
                        dtype=torch.long)
    lookup[torch.tensor(value_classes, dtype=torch.long)] = torch.arange(len(value_classes))
    return lookup[classes.long()]


def supervised_rows(num_examples: int, fraction: float, seed: int) -> torch.Tensor:
    """A fixed mask [E] of the training examples whose concepts are all observed (train.py's draw)."""
    mask = torch.zeros(num_examples, dtype=torch.bool)
    count = round(fraction * num_examples)
    if count:
        generator = torch.Generator().manual_seed(seed + SUPERVISED_SEED_OFFSET)
        mask[torch.randperm(num_examples, generator=generator)[:count]] = True
    return mask


def labelled_positions(concepts: torch.Tensor, domain: list[int], count: int, seed: int,
                       source: str = "") -> torch.Tensor:
    """A mask [E, P] with exactly `count` positions of each value of `domain` (concept values [E, P]),
    chosen by the seed; an error when some value has fewer positions."""
    mask = torch.zeros(concepts.shape, dtype=torch.bool)
    flat = mask.view(-1)
    generator = torch.Generator().manual_seed(seed + LABELS_SEED_OFFSET)
    for value in domain:
        candidates = torch.nonzero(concepts.reshape(-1) == value).flatten()
        if len(candidates) < count:
            raise DataError(f"train.concept_labels: {count} labelled images of each concept value were asked "
                            f"for, but concept value {value} has only {len(candidates)} images in the training "
                            "examples; lower train.concept_labels or use more data.train_examples", source or None)
        flat[candidates[torch.randperm(len(candidates), generator=generator)[:count]]] = True
    return mask


def concept_classes(config: TaskConfig, circuit: KnowledgeCircuit, num_classes: int,
                    data_path=None) -> list[int]:
    """The data class of each concept value (domain order): `data.classes` resolved, or the values."""
    domain = list(circuit.concepts[0].domain)
    source = config.source or None
    entries = config.data.classes
    if entries is None:
        return domain
    if len(entries) != len(domain):
        raise ConfigError(f"data.classes: lists {len(entries)} data classes but concept "
                          f"{circuit.concepts[0].name} has {len(domain)} values {domain} (one class per value, "
                          "in domain order)", source)
    names = class_names(config.data.dataset, num_classes, path=data_path)
    chosen: dict[int, int] = {}
    for i, entry in enumerate(entries):
        key = f"data.classes[{i}]"
        if isinstance(entry, bool) or not isinstance(entry, (int, str)):
            raise ConfigError(f"{key}: expected a class index or a class name, got {entry!r}", source)
        if isinstance(entry, int):
            if not 0 <= entry < num_classes:
                raise ConfigError(f"{key}: class {entry} is not a class of data set {config.data.dataset} "
                                  f"(classes 0..{num_classes - 1})", source)
            index = entry
        else:
            matches = [k for k, name in enumerate(names) if name == entry]
            if not matches:
                matches = [k for k, name in enumerate(names) if name.casefold() == entry.casefold()]
            if len(matches) != 1:
                shown = ", ".join(repr(n) for n in names[:20]) + (", ..." if len(names) > 20 else "")
                raise ConfigError(f"{key}: {entry!r} is not a class name of data set {config.data.dataset} "
                                  f"(names: {shown})", source)
            index = matches[0]
        if index in chosen:
            raise ConfigError(f"{key}: class {index} ({names[index]}) is already the class of concept value "
                              f"{domain[chosen[index]]} (data.classes[{chosen[index]}])", source)
        chosen[index] = i
    return list(chosen)


def _protocol_tuples(classes: torch.Tensor, arity: int, limit: int | None, generator: torch.Generator,
                     key: str = "", source: str | None = None):
    order = torch.randperm(len(classes), generator=generator)
    count = len(order) // arity
    if limit is not None:
        if limit > count:
            where = f"{key}: " if key else ""
            raise ConfigError(f"{where}asked for {limit} examples but the split has images for only {count} "
                              f"(each example uses {arity} fresh images)", source)
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


def _build_split(images, positions, circuit, tuples: torch.Tensor) -> TupleDataset:
    """Examples from image tuples; `positions` are the images' concept domain positions."""
    concept_positions = positions[tuples]
    labels, consistent = circuit.deduce_labels(concept_positions)
    keep = consistent.nonzero().flatten()
    return TupleDataset(images, tuples[keep], circuit.concept_values(concept_positions[keep]), labels[keep])


def _draw(values: torch.Tensor, available: torch.Tensor, arity: int, support, limit, generator, key, source):
    """Image tuples (indices into the split) over the `available` images (concept values `values`)."""
    if support is None:
        local = _protocol_tuples(values, arity, limit, generator, key, source)
    else:
        local = _sample_tuples(values, support, limit, generator)
    return available[local]


def build_task_data(config: TaskConfig, circuit: KnowledgeCircuit, data_root) -> dict:
    """The splits of a task: "train", "val" (with data.val_examples), "test" and, with a
    restricted support, "test_ood". The train split carries `observed`; see the module docstring."""
    arity = len(circuit.concepts)
    source = config.source or None
    seed = config.train.seed
    generator = torch.Generator().manual_seed(seed)
    domain = list(circuit.concepts[0].domain)
    support = None
    if config.data.train_support is not None:
        support = allowed_support(config.data.train_support, circuit, config.source)
    for key, value in (("data.val_examples", config.data.val_examples),
                       ("train.concept_labels", config.train.concept_labels)):
        if value is not None and value < (1 if key == "data.val_examples" else 0):
            raise ConfigError(f"{key}: must be at least {1 if key == 'data.val_examples' else 0}, got {value}",
                              source)
    dataset = config.data.dataset
    data_path = config.data.path  # resolved when the config was loaded
    loaded = {split: load_images(dataset, data_root, split, path=data_path) for split in ("train", "test")}
    num_classes = max(int(labels.max()) + 1 if len(labels) else 0 for _, labels in loaded.values())
    if dataset.strip().lower() in ("folder", "arrays"):
        num_classes = max(num_classes, len(class_names(dataset, None, path=data_path)))
    value_classes = concept_classes(config, circuit, num_classes, data_path)
    explicit = config.data.classes is not None

    splits = {}
    for split in ("train", "test"):
        raw_images, classes = loaded[split]
        images = to_float(raw_images)
        positions = class_to_position(circuit, classes, dataset, None if not explicit else value_classes)
        available = torch.nonzero(positions >= 0).flatten()
        counts = torch.bincount(positions[available], minlength=len(domain))
        for i, count in enumerate(counts.tolist()):
            if count == 0:
                where = f"data.classes[{i}]: " if explicit else ""
                hint = "" if explicit else "; set data.classes to map concept values to data classes"
                raise DataError(f"{where}concept value {domain[i]} (data class {value_classes[i]}) has no images in "
                                f"the {split} split of data set {dataset}{hint}", source)
        values = circuit.concept_values(positions[available])
        limit = config.data.train_examples if split == "train" else config.data.test_examples
        key = "data.train_examples" if split == "train" else "data.test_examples"
        if split == "train" and config.data.val_examples is not None:
            val_generator = torch.Generator().manual_seed(seed + VAL_SEED_OFFSET)
            val_tuples = _draw(values, available, arity, support, config.data.val_examples, val_generator,
                               "data.val_examples", source)
            held_out = torch.zeros(len(classes), dtype=torch.bool)
            held_out[val_tuples.flatten()] = True
            keep = ~held_out[available]
            # The test split must not depend on the validation split: replay the draw that
            # training would make without it, so the shared generator ends where it would.
            without_val = torch.Generator()
            without_val.set_state(generator.get_state())
            splits["train"] = _build_split(images, positions, circuit,
                                           _draw(values[keep], available[keep], arity, support, limit, generator,
                                                 key, source))
            _draw(values, available, arity, support, limit, without_val, key, source)
            generator.set_state(without_val.get_state())
        else:
            splits[split] = _build_split(images, positions, circuit,
                                         _draw(values, available, arity, support, limit, generator, key, source))
        if split == "train":
            if config.data.val_examples is not None:
                splits["val"] = _build_split(images, positions, circuit, val_tuples)
            train_set = splits["train"]
            observed = supervised_rows(len(train_set), config.train.concept_supervision, seed)[:, None]
            observed = observed.expand(len(train_set), arity).clone()
            if config.train.concept_labels:
                observed |= labelled_positions(train_set.concepts, domain, config.train.concept_labels, seed,
                                               config.source)
            train_set.observed = observed if bool(observed.any()) else None
        elif support is not None:
            outside = _complement(support, circuit)
            if len(outside):
                splits["test_ood"] = _build_split(images, positions, circuit,
                                                  _sample_tuples(values, outside, limit, generator))
    return splits
