"""Scoring a naming of clusters through the compiled knowledge.

`NamingScorer` scores a naming by the training labels it explains through the circuit
itself: the circuit evaluated, batched, on the concepts the naming gives each example.
Nothing enumerates the concept space; examples are deduplicated and every (concept tuple,
labels) pair a search asks about is evaluated once (a dense memo when the pairs are few, a
sorted memo of integer keys otherwise, a memo keyed by the rows' bytes for tuples too long
for integer keys).

A naming scores examples by their log-likelihood under a small naming noise (`noise`: the
chance that an image's cluster is not its named value), P(labels | named concepts, noise),
so that a naming that gets most digits of a long example right still scores above one that
gets few right, where "labels explained" would read 0 for both. Labelled images (known
concept values) come first: a naming that names more of them right always wins.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ..circuit import KnowledgeCircuit
from ..errors import NesyError

DEFAULT_NOISE = 0.05
# Concept tuple x label tuple pairs kept in a dense table (else a sorted memo of the pairs seen).
MAX_DENSE_TABLE = 4_000_000
# An example whose labels the named concepts cannot give at all counts as this log-likelihood.
LOG_LIKELIHOOD_FLOOR = -1e4
# Below this many distinct example positions the local search scores every move exactly.
CHEAP_MOVE_POSITIONS = 2000
# Circuit rows per evaluation call.
EVALUATION_CHUNK = 4096


# ----------------------------------------------------------------------------- domains
@dataclass(frozen=True)
class ConceptDomains:
    """The knowledge's concept positions grouped by domain: `values[g]` the domain of group g,
    `names[g]` a concept of it, `group_of[p]` the group of position p."""

    values: tuple
    names: tuple
    group_of: tuple

    @classmethod
    def of(cls, circuit: KnowledgeCircuit) -> "ConceptDomains":
        values, names, group_of = [], [], []
        for variable in circuit.concepts:
            domain = tuple(variable.domain)
            if domain not in values:
                values.append(domain)
                names.append(variable.name)
            group_of.append(values.index(domain))
        return cls(tuple(values), tuple(names), tuple(group_of))

    @property
    def sizes(self) -> tuple:
        return tuple(len(v) for v in self.values)

    def positions(self, group: int) -> list:
        return [p for p, g in enumerate(self.group_of) if g == group]


# ----------------------------------------------------------------------------- scoring
class NamingScorer:
    """Scores namings of clusters by the training labels they explain through the circuit.

    cluster_tuples [E, P]: each example's cluster at each concept position (0..K-1);
    labels [E, L]: its observed labels; `labelled`: (clusters [M], positions [M], values [M])
    of images whose concept value is known. A naming is an int array [G, K]: the domain
    position (index into the group's domain) each cluster is named, per domain group.
    """

    def __init__(self, circuit: KnowledgeCircuit, cluster_tuples, labels, num_clusters: int,
                 labelled=None, noise: float = DEFAULT_NOISE):
        self.circuit = circuit
        self.domains = ConceptDomains.of(circuit)
        tuples = np.asarray(cluster_tuples, dtype=np.int64)
        labels = np.asarray(labels, dtype=np.int64)
        if tuples.ndim != 2 or tuples.shape[1] != len(circuit.concepts):
            raise NesyError(f"cluster tuples need shape [examples, {len(circuit.concepts)}], got {tuples.shape}")
        if labels.ndim != 2 or labels.shape[1] != len(circuit.labels):
            raise NesyError(f"labels need shape [examples, {len(circuit.labels)}] (the knowledge's labels "
                            f"{', '.join(v.name for v in circuit.labels)}), got {labels.shape}")
        if len(tuples) != len(labels):
            raise NesyError(f"{len(tuples)} cluster tuples but {len(labels)} label rows")
        if len(tuples) and (tuples.min() < 0 or tuples.max() >= num_clusters):
            raise NesyError(f"cluster numbers must lie in 0..{num_clusters - 1}")
        if not 0 <= noise < 1:
            raise NesyError(f"naming noise must lie in [0, 1), got {noise}")
        self.num_clusters = num_clusters
        self.noise = noise
        self.total = len(tuples)
        label_rows, label_ids = np.unique(labels.reshape(len(labels), -1), axis=0, return_inverse=True)
        self.label_rows = torch.as_tensor(label_rows.reshape(len(label_rows), labels.shape[1] if labels.ndim == 2
                                                             else 0), dtype=torch.long)
        rows = np.concatenate([tuples, label_ids.reshape(-1, 1)], axis=1)
        unique, counts = np.unique(rows, axis=0, return_counts=True)
        self.tuples = unique[:, :-1]
        self.label_ids = unique[:, -1]
        self.weights = counts.astype(np.float64)
        self.group_of = np.asarray(self.domains.group_of, dtype=np.int64)
        self.labelled = None
        if labelled is not None and len(labelled[0]):
            clusters, positions, values = (np.asarray(a, dtype=np.int64).reshape(-1) for a in labelled)
            groups = self.group_of[positions]
            targets = np.array([self.domains.values[g].index(int(v)) for g, v in zip(groups, values)])
            self.labelled = (groups, clusters, targets)
        self._tables = {}  # noise -> memo of per-example log-likelihoods
        # Few distinct examples of few positions: scoring every single move costs little.
        self.cheap_moves = len(self.tuples) * len(circuit.concepts) <= CHEAP_MOVE_POSITIONS

    # A memo keyed by (concept tuple, label id): dense when the pairs are few enough.
    def _memo(self, noise: float) -> dict:
        if noise not in self._tables:
            space = math.prod(self.domains.sizes[g] for g in self.domains.group_of) * len(self.label_rows)
            self._tables[noise] = {"dense": np.full(space, np.nan) if space <= MAX_DENSE_TABLE else None,
                                   "keys": np.zeros(0, dtype=np.int64), "values": np.zeros(0),
                                   "space": space}
        return self._tables[noise]

    def _keys(self, concepts: np.ndarray, label_ids: np.ndarray):
        """Integer keys of (concept tuple, label id) rows, or None when they would overflow."""
        sizes = [self.domains.sizes[g] for g in self.domains.group_of]
        if math.prod(sizes) * max(len(self.label_rows), 1) >= 2 ** 62:
            return None
        key = np.zeros(concepts.shape[:-1], dtype=np.int64)
        for p, size in enumerate(sizes):
            key = key * size + concepts[..., p]
        return key * len(self.label_rows) + label_ids

    def _evaluate(self, concepts: np.ndarray, label_ids: np.ndarray, noise: float) -> np.ndarray:
        """log P(labels | concepts named with this noise), by the circuit, for rows [R, P]."""
        circuit, out = self.circuit, np.empty(len(concepts))
        device = circuit.gather_index.device
        width = circuit.concept_domain_size
        sizes = torch.tensor([len(v.domain) for v in circuit.concepts], device=device)
        valid = torch.arange(width, device=device)[None, :] < sizes[:, None]  # [P, D]
        with torch.no_grad():
            for start in range(0, len(concepts), EVALUATION_CHUNK):
                part = torch.as_tensor(concepts[start:start + EVALUATION_CHUNK], device=device)
                one_hot = torch.nn.functional.one_hot(part, width).double()
                if noise > 0:
                    rest = (noise / (sizes - 1).clamp_min(1).double())[None, :, None]
                    probs = one_hot * (1 - noise) + (1 - one_hot) * rest
                else:
                    probs = one_hot
                log_probs = probs.clamp_min(0).log().masked_fill(~valid[None], -math.inf).float()
                labels = self.label_rows.to(device)[torch.as_tensor(np.array(label_ids[start:start + EVALUATION_CHUNK]),
                                                                    device=device)]
                out[start:start + len(part)] = circuit(log_probs, labels).double().cpu().numpy()
        return out

    def example_scores(self, namings: np.ndarray, noise: float | None = None) -> np.ndarray:
        """Per distinct example log-likelihoods [S, E] of namings [S, G, K]."""
        noise = self.noise if noise is None else noise
        namings = np.asarray(namings, dtype=np.int64)
        concepts = namings[:, self.group_of[None, :], self.tuples]  # [S, E, P]
        label_ids = np.broadcast_to(self.label_ids, concepts.shape[:2])
        memo = self._memo(noise)
        keys = self._keys(concepts, label_ids)
        if keys is None:  # concept tuples too long for integer keys: a memo keyed by the rows' bytes
            rows = np.concatenate([concepts.reshape(-1, concepts.shape[-1]), label_ids.reshape(-1, 1)], axis=1)
            unique, inverse = np.unique(rows, axis=0, return_inverse=True)
            known = memo.setdefault("rows", {})
            names = [row.tobytes() for row in unique]
            values = np.array([known.get(name, np.nan) for name in names])
            missing = np.flatnonzero(np.isnan(values))
            if len(missing):
                values[missing] = self._evaluate(unique[missing, :-1], unique[missing, -1], noise)
                known.update((names[i], values[i]) for i in missing)
            return values[inverse.reshape(-1)].reshape(concepts.shape[:2])
        if memo["dense"] is not None:
            table = memo["dense"]
            values = table[keys]
            missing = np.isnan(values)
            if missing.any():
                new_keys, first = np.unique(keys[missing], return_index=True)
                rows = concepts[missing][first]
                table[new_keys] = self._evaluate(rows, label_ids[missing][first], noise)
                values = table[keys]
            return values
        flat_keys = keys.reshape(-1)
        unique, inverse = np.unique(flat_keys, return_inverse=True)
        where = np.searchsorted(memo["keys"], unique)
        known = (where < len(memo["keys"])) & (memo["keys"][np.minimum(where, len(memo["keys"]) - 1)] == unique) \
            if len(memo["keys"]) else np.zeros(len(unique), dtype=bool)
        values = np.empty(len(unique))
        values[known] = memo["values"][where[known]]
        if (~known).any():
            first = np.unique(flat_keys, return_index=True)[1][~known]
            rows = concepts.reshape(-1, concepts.shape[-1])[first]
            values[~known] = self._evaluate(rows, label_ids.reshape(-1)[first], noise)
            merged = np.concatenate([memo["keys"], unique[~known]])
            order = np.argsort(merged, kind="stable")
            memo["keys"] = merged[order]
            memo["values"] = np.concatenate([memo["values"], values[~known]])[order]
        return values[inverse].reshape(keys.shape)

    def log_likelihood(self, namings: np.ndarray) -> np.ndarray:
        """Σ_examples log P(labels | named concepts, noise) of namings [S, G, K] -> [S]."""
        return np.maximum(self.example_scores(namings), LOG_LIKELIHOOD_FLOOR) @ self.weights

    def explained(self, namings: np.ndarray) -> np.ndarray:
        """Training examples whose labels the knowledge gives the named concepts, [S] (counts)."""
        scores = self.example_scores(namings, noise=0.0)
        return np.isfinite(scores) @ self.weights

    def labelled_right(self, namings: np.ndarray) -> np.ndarray:
        namings = np.asarray(namings, dtype=np.int64)
        if self.labelled is None:
            return np.zeros(len(namings), dtype=np.int64)
        groups, clusters, targets = self.labelled
        return (namings[:, groups, clusters] == targets).sum(axis=1)

    def score(self, namings: np.ndarray) -> np.ndarray:
        """What the search maximises: labelled images named right first, then the log-likelihood."""
        likelihood = self.log_likelihood(namings)
        return self.labelled_right(namings) * (-LOG_LIKELIHOOD_FLOOR * self.total + 1.0) + likelihood
