"""How clusters become concept values: the naming search, the learned map and its prior.

A label-free backbone sorts images into clusters whose numbers mean nothing. Before the
semantic loss can use them, each cluster needs a concept value, per concept domain (the
positions of one domain share a naming; a file may declare several domains). This module
is the one place that decides it:

- `NamingScorer` scores a naming by the training labels it explains through the compiled
  knowledge itself: the circuit evaluated, batched, on the concepts the naming gives each
  example. Nothing enumerates the concept space; examples are deduplicated and every
  (concept tuple, labels) pair the search asks about is evaluated once.
- `search_naming` finds the naming: exhaustively where the namings are few (an exact
  optimum), otherwise EM on a soft cluster -> value map (the circuit's posterior marginals
  as the E-step, a one-to-one projection with scipy's Hungarian matching) followed by a
  local search over swaps and reassignments, from several restarts. It reports the labels
  explained by the naming found and by the runner-up, and how many restarts agree.
- `near_shortcuts` ranks the wrong maps (merges, swaps, 3-cycles of concept values) by the
  share of training labels they keep, with the same scorer, so it works where the concept
  space is far too large to count shortcuts exactly.
- `ClusterMap` is the learned cluster -> value map the map phase trains (one per domain),
  and `map_balance_loss` its prior.

A naming scores examples by their log-likelihood under a small naming noise (`noise`: the
chance that an image's cluster is not its named value), P(labels | named concepts, noise),
so that a naming that gets most digits of a long example right still scores above one that
gets few right, where "labels explained" would read 0 for both. Labelled images (known
concept values) come first: a naming that names more of them right always wins.
"""
from __future__ import annotations

import itertools
import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import nn

from .circuit import KnowledgeCircuit
from .errors import NesyError
from .objectives.entropy import concept_entropy_loss

__all__ = ["ConceptDomains", "NamingScorer", "NamingResult", "search_naming", "naming_positions",
           "near_shortcuts", "map_label_share", "value_positions", "wrong_maps", "ClusterMap", "map_balance_loss", "NAMING_MODES",
           "DEFAULT_NOISE"]

NAMING_MODES = ("auto", "one-to-one", "many-to-one")
DEFAULT_NOISE = 0.05
# Namings x distinct examples scored at most by the exhaustive search: 9! namings of 9 clusters
# against a few hundred examples take seconds; 10! (3.6e6) namings take longer than the EM and
# local search do to find the same optimum.
MAX_EXHAUSTIVE_WORK = 100_000_000
MAX_EXHAUSTIVE_NAMINGS = 1_000_000
# Concept tuple x label tuple pairs kept in a dense table (else a sorted memo of the pairs seen).
MAX_DENSE_TABLE = 4_000_000
# An example whose labels the named concepts cannot give at all counts as this log-likelihood.
LOG_LIKELIHOOD_FLOOR = -1e4
# Examples the EM and local search look at (the result is scored on all of them); the restarts
# that must agree on the best naming, else more restarts run (up to this factor).
DEFAULT_SEARCH_EXAMPLES = 4000
SEARCH_POSITIONS = 16000
MIN_SEARCH_EXAMPLES = 100
RESTARTS_TO_AGREE = 2
EXTRA_RESTART_FACTOR = 3
# Single moves the local search scores exactly per step, the most promising by first-order gain.
GUIDED_MOVES = 8
# Below this many distinct example positions the local search scores every move exactly.
CHEAP_MOVE_POSITIONS = 2000
KICKS = 30
# The learned map's logit for a value outside a cluster's domain.
OUTSIDE_DOMAIN_LOGIT = -1e4
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
        if keys is None:  # concept tuples too long for integer keys: evaluate every row
            flat = concepts.reshape(-1, concepts.shape[-1])
            return self._evaluate(flat, label_ids.reshape(-1), noise).reshape(concepts.shape[:2])
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


# ----------------------------------------------------------------------------- the search
@dataclass
class NamingResult:
    """A naming found by `search_naming`; `naming[g][k]` is the value cluster k means in domain g."""

    naming: list
    method: str  # exhaustive | em+local
    labels_explained: float  # share of the training examples whose labels it explains
    runner_up: list | None
    runner_up_labels_explained: float | None
    labelled_right: int
    labelled: int
    log_likelihood: float
    runner_up_log_likelihood: float | None
    restarts: int
    restarts_agreeing: int  # restarts that ended at this naming (exhaustive: every naming was scored)
    namings_scored: int
    domains: list = field(default_factory=list)
    modes: list = field(default_factory=list)  # one-to-one | many-to-one, per domain
    examples: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return dict(self.__dict__)

    def describe(self) -> str:
        lines = []
        for name, values in zip(self.domains, self.naming):
            lines.append(f"clusters named ({name}): {' '.join(map(str, values))} (cluster 0, 1, ...)")
        certificate = ("exact: every naming scored" if self.method == "exhaustive"
                       else f"{self.restarts_agreeing} of {self.restarts} restarts agree")
        line = (f"{100 * self.labels_explained:.1f} % of the training labels explained ({'/'.join(self.modes)}, "
                f"{self.method}, {certificate}")
        if self.runner_up_labels_explained is not None:
            line += f"; next best naming {100 * self.runner_up_labels_explained:.1f} %"
        line += f"; {self.examples} examples in {self.seconds:.1f} s)"
        if self.labelled:
            line += f", {self.labelled_right} of {self.labelled} labelled images named right"
        return "\n".join(lines + [line])


def _modes(mode: str, clusters: int, sizes: tuple) -> tuple:
    """The naming mode of each domain group: `auto` is one-to-one where the domain has at least
    as many values as there are clusters, many-to-one elsewhere."""
    if mode not in NAMING_MODES:
        raise NesyError(f"unknown naming mode {mode!r} (choose from {', '.join(NAMING_MODES)})")
    if mode == "one-to-one" and any(clusters > size for size in sizes):
        raise NesyError(f"a one-to-one naming needs at most as many clusters as values: {clusters} clusters, "
                        f"domains of {', '.join(map(str, sizes))} values (use many-to-one)")
    if mode == "auto":
        return tuple("one-to-one" if clusters <= size else "many-to-one" for size in sizes)
    return tuple(mode for _ in sizes)


def _group_namings(clusters: int, size: int, mode: str):
    if mode == "one-to-one":
        return itertools.permutations(range(size), clusters)
    return itertools.product(range(size), repeat=clusters)


def _count_namings(clusters: int, sizes: tuple, modes: tuple) -> int:
    return math.prod(math.perm(size, clusters) if mode == "one-to-one" else size ** clusters
                     for size, mode in zip(sizes, modes))


def _exhaustive(scorer: NamingScorer, modes: tuple, chunk: int = 50_000):
    sizes, clusters = scorer.domains.sizes, scorer.num_clusters
    namings = itertools.product(*(_group_namings(clusters, size, mode) for size, mode in zip(sizes, modes)))
    best, best_scores = [], []
    while True:
        block = np.array(list(itertools.islice(namings, chunk)), dtype=np.int64)
        if not len(block):
            break
        scores = scorer.score(block)
        top = np.argsort(-scores, kind="stable")[:2]
        best.extend(block[top])
        best_scores.extend(scores[top])
    order = np.argsort(-np.array(best_scores), kind="stable")[:2]
    return [best[i] for i in order]


def _project(soft: np.ndarray, sizes: tuple, modes: tuple) -> np.ndarray:
    """A soft map [G, K, D] (p(value | cluster)) -> a naming [G, K]."""
    naming = np.zeros(soft.shape[:2], dtype=np.int64)
    for g, size in enumerate(sizes):
        cost = -np.log(soft[g, :, :size] + 1e-12)
        if modes[g] == "one-to-one":
            rows, cols = linear_sum_assignment(cost)
            naming[g, rows] = cols
        else:
            naming[g] = cost.argmin(axis=1)
    return naming


def _valid_values(scorer: NamingScorer) -> np.ndarray:
    valid = np.zeros((len(scorer.domains.sizes), scorer.circuit.concept_domain_size), dtype=bool)
    for g, size in enumerate(scorer.domains.sizes):
        valid[g, :size] = True
    return valid


def _posterior_counts(scorer: NamingScorer, soft: np.ndarray) -> np.ndarray:
    """Expected counts [G, K, D] of each cluster showing each value, given the labels and a soft
    map `soft` [G, K, D] (mixed with the naming noise): the circuit's posterior marginals,
    which are the gradients of log P(labels) with respect to the concept log-probabilities."""
    circuit = scorer.circuit
    device = circuit.gather_index.device
    clusters, width = scorer.num_clusters, circuit.concept_domain_size
    valid = _valid_values(scorer)
    # The E-step always allows some noise: with none, one unexplained example has no gradient.
    noise = max(scorer.noise, DEFAULT_NOISE)
    mixed = np.where(valid[:, None, :], soft * (1 - noise) + noise / width, 0.0)
    with np.errstate(divide="ignore"):
        table = torch.as_tensor(np.log(mixed), dtype=torch.float32, device=device)
    tuples = torch.as_tensor(scorer.tuples, device=device)
    groups = torch.as_tensor(scorer.group_of, device=device)
    weights = torch.as_tensor(scorer.weights, device=device)
    labels = scorer.label_rows.to(device)[torch.as_tensor(scorer.label_ids, device=device)]
    counts = torch.zeros(len(valid), clusters, width, dtype=torch.float64, device=device)
    for start in range(0, len(tuples), EVALUATION_CHUNK):
        part = tuples[start:start + EVALUATION_CHUNK]
        log_probs = table[groups[None, :], part].clone().requires_grad_(True)  # [B, P, D]
        with torch.enable_grad():
            log_count = circuit(log_probs, labels[start:start + EVALUATION_CHUNK])
            keep = torch.isfinite(log_count)
            if not bool(keep.any()):
                continue
            (posterior,) = torch.autograd.grad(log_count[keep].sum(), log_probs)
        posterior = posterior.double() * weights[start:start + len(part), None, None]
        index = groups[None, :].expand_as(part) * clusters + part
        counts.view(-1, width).index_add_(0, index.reshape(-1), posterior.reshape(-1, width))
    counts = counts.cpu().numpy()
    if scorer.labelled is not None:
        g, k, v = scorer.labelled
        np.add.at(counts, (g, k, v), scorer.total + 1.0)
    return counts


def _hard(naming: np.ndarray, width: int) -> np.ndarray:
    groups, clusters = naming.shape
    soft = np.zeros((groups, clusters, width))
    soft[np.arange(groups)[:, None], np.arange(clusters)[None, :], naming] = 1.0
    return soft


def _em(scorer: NamingScorer, modes: tuple, generator: np.random.Generator, iterations: int) -> np.ndarray:
    """EM on a soft cluster -> value map: the E-step is the circuit's posterior over each
    position's value given the labels and the map; the M-step counts them per cluster."""
    sizes, width = scorer.domains.sizes, scorer.circuit.concept_domain_size
    valid = _valid_values(scorer)
    soft = generator.dirichlet(np.ones(width), size=(len(sizes), scorer.num_clusters)) * valid[:, None, :]
    soft /= soft.sum(axis=-1, keepdims=True)
    previous, stable = None, 0
    for _ in range(iterations):
        soft = (_posterior_counts(scorer, soft) + 1e-3) * valid[:, None, :]
        soft /= soft.sum(axis=-1, keepdims=True)
        naming = _project(soft, sizes, modes)
        stable = stable + 1 if previous is not None and np.array_equal(naming, previous) else 0
        previous = naming
        if stable >= 3:
            break
    return previous


def _neighbours(naming: np.ndarray, sizes: tuple, modes: tuple) -> np.ndarray:
    """Namings one swap (two clusters exchange values) or one reassignment away."""
    moves = []
    groups, clusters = naming.shape
    for g in range(groups):
        for a, b in itertools.combinations(range(clusters), 2):
            if naming[g, a] != naming[g, b]:
                moved = naming.copy()
                moved[g, a], moved[g, b] = naming[g, b], naming[g, a]
                moves.append(moved)
        used = set(naming[g].tolist())
        for a in range(clusters):
            for value in range(sizes[g]):
                if value != naming[g, a] and (modes[g] == "many-to-one" or value not in used):
                    moved = naming.copy()
                    moved[g, a] = value
                    moves.append(moved)
    return np.array(moves, dtype=np.int64).reshape(-1, groups, clusters)


def _climb(scorer: NamingScorer, naming: np.ndarray, modes: tuple, max_steps: int = 200,
           candidates: int = GUIDED_MOVES):
    """Local search from `naming`: each step ranks the single moves by their first-order gain
    (the posterior counts at the current naming) and scores the most promising exactly."""
    sizes, width = scorer.domains.sizes, scorer.circuit.concept_domain_size
    current = scorer.score(naming[None])[0]
    for _ in range(max_steps):
        moves = _neighbours(naming, sizes, modes)
        if not len(moves):
            break
        if len(moves) > candidates and scorer.cheap_moves is False:
            with np.errstate(divide="ignore"):
                gain = np.log(_posterior_counts(scorer, _hard(naming, width)) + 1e-3)
            groups = np.arange(naming.shape[0])[:, None]
            clusters = np.arange(naming.shape[1])[None, :]
            estimate = gain[groups, clusters, moves].sum(axis=(1, 2))
            moves = moves[np.argsort(-estimate, kind="stable")[:candidates]]
        scores = scorer.score(moves)
        best = int(np.argmax(scores))
        if scores[best] <= current + 1e-9:
            break
        naming, current = moves[best], scores[best]
    return naming, current


def _kicked(scorer: NamingScorer, start: tuple, modes: tuple, generator: np.random.Generator,
            kicks: int = KICKS) -> tuple:
    """Iterated local search: swap two random pairs of clusters' values, climb again, keep
    what scores higher (escapes optima that two simultaneous swaps leave, e.g. 2<->6 and 4<->8)."""
    naming, score = start
    groups, clusters = naming.shape
    for _ in range(kicks):
        moved = naming.copy()
        g = int(generator.integers(groups))
        for _ in range(2):
            a, b = generator.choice(clusters, size=2, replace=False)
            moved[g, a], moved[g, b] = moved[g, b], moved[g, a]
        moved, moved_score = _climb(scorer, moved, modes)
        if moved_score > score + 1e-9:
            naming, score = moved, moved_score
    return naming, score


def search_naming(circuit: KnowledgeCircuit, cluster_tuples, labels, num_clusters: int, labelled=None,
                  mode: str = "auto", noise: float = DEFAULT_NOISE, restarts: int = 8, seed: int = 0,
                  em_iterations: int = 30, exhaustive: bool | None = None,
                  search_examples: int | None = DEFAULT_SEARCH_EXAMPLES) -> NamingResult:
    """The naming of clusters by concept values that explains the training labels best.

    `mode`: one-to-one (distinct clusters get distinct values), many-to-one (an over-clustered
    backbone: several clusters may share a value) or auto (one-to-one when every domain has at
    least as many values as there are clusters). `exhaustive`: None decides by the work
    (MAX_EXHAUSTIVE_WORK); True insists (an error when the namings are too many to score).
    The EM and local search look at `search_examples` examples drawn at random (all when
    None; fewer for long tuples, SEARCH_POSITIONS concept positions): a few thousand pin a naming, and the search's cost grows with them; the naming
    found and its runner-up are then scored on every example. After `restarts`, more run
    (up to three times as many) until two agree on the best naming.
    """
    started = time.perf_counter()
    scorer = NamingScorer(circuit, cluster_tuples, labels, num_clusters, labelled, noise)
    searcher = scorer
    tuples = np.asarray(cluster_tuples)
    if search_examples is not None:
        # Long tuples say more each: keep about as many concept positions as a short task's examples.
        search_examples = max(MIN_SEARCH_EXAMPLES, min(search_examples, SEARCH_POSITIONS // max(tuples.shape[1], 1)))
    if search_examples is not None and len(tuples) > search_examples:
        chosen = np.random.default_rng(seed).choice(len(tuples), search_examples, replace=False)
        searcher = NamingScorer(circuit, tuples[chosen], np.asarray(labels)[chosen], num_clusters, labelled, noise)
    sizes = scorer.domains.sizes
    modes = _modes(mode, num_clusters, sizes)
    count = _count_namings(num_clusters, sizes, modes)
    work = count * len(scorer.tuples)
    fits = count <= MAX_EXHAUSTIVE_NAMINGS and work <= MAX_EXHAUSTIVE_WORK
    if exhaustive and not fits:
        raise NesyError(f"naming {num_clusters} clusters exhaustively scores {count:.3g} namings against "
                        f"{len(scorer.tuples)} distinct examples (limit {MAX_EXHAUSTIVE_NAMINGS:.0e} namings, "
                        f"{MAX_EXHAUSTIVE_WORK:.0e} steps)", str(circuit.compiled.knowledge.path))
    if exhaustive is None:
        exhaustive = fits
    if exhaustive:
        found = _exhaustive(scorer, modes)
        best, runner_up = found[0], (found[1] if len(found) > 1 else None)
        method, agreeing, restarts, scored = "exhaustive", 1, 1, count
    else:
        generator = np.random.default_rng(seed)
        finals = []
        # EM lands in the best basin from some starts only (long additions: about one in three;
        # the others end at v -> v+5 or worse): run `restarts`, then more until two agree.
        while len(finals) < EXTRA_RESTART_FACTOR * max(restarts, 1):
            start = _em(searcher, modes, generator, em_iterations)
            finals.append(_climb(searcher, start, modes))
            leader = max(finals, key=lambda final: final[1])[0]
            if len(finals) >= restarts and sum(np.array_equal(leader, n) for n, _ in finals) >= RESTARTS_TO_AGREE:
                break
        if searcher.cheap_moves:  # small problems: kick the best out of two-swap local optima
            finals.append(_kicked(searcher, max(finals, key=lambda final: final[1]), modes, generator))
        order = sorted(range(len(finals)), key=lambda i: -finals[i][1])
        best = finals[order[0]][0]
        agreeing = sum(np.array_equal(best, naming) for naming, _ in finals)
        # The runner-up: the best other restart, or the best single move away from the best.
        others = [finals[i][0] for i in order if not np.array_equal(finals[i][0], best)]
        candidates = np.concatenate([np.array(others[:1], dtype=np.int64).reshape(-1, *best.shape),
                                     _neighbours(best, sizes, modes)])
        runner_up = candidates[int(np.argmax(searcher.score(candidates)))] if len(candidates) else None
        method, restarts, scored = "em+local", len(finals), None
    pair = np.stack([best] + ([runner_up] if runner_up is not None else []))
    explained = scorer.explained(pair) / max(scorer.total, 1)
    likelihood = scorer.log_likelihood(pair)
    named = [[scorer.domains.values[g][v] for v in best[g]] for g in range(len(sizes))]
    return NamingResult(
        naming=named, method=method, labels_explained=float(explained[0]),
        runner_up=None if runner_up is None else [[scorer.domains.values[g][v] for v in runner_up[g]]
                                                  for g in range(len(sizes))],
        runner_up_labels_explained=float(explained[1]) if runner_up is not None else None,
        labelled_right=int(scorer.labelled_right(best[None])[0]),
        labelled=0 if scorer.labelled is None else len(scorer.labelled[0]),
        log_likelihood=float(likelihood[0]),
        runner_up_log_likelihood=float(likelihood[1]) if runner_up is not None else None,
        restarts=restarts, restarts_agreeing=int(agreeing), namings_scored=scored if scored is not None else 0,
        domains=list(scorer.domains.names), modes=list(modes), examples=scorer.total,
        seconds=time.perf_counter() - started)


def naming_positions(result: NamingResult, domains: ConceptDomains) -> np.ndarray:
    """A NamingResult's values -> domain positions [G, K]."""
    return np.array([[domains.values[g].index(v) for v in values] for g, values in enumerate(result.naming)],
                    dtype=np.int64)


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


# ----------------------------------------------------------------------------- the learned map
class ClusterMap(nn.Module):
    """p(value | cluster) per concept domain, learned by the map phase.

    logits [G, D, K]: for domain group g, a softmax over values (dim 1) for each cluster;
    values outside a group's domain get no mass. `forward` turns per-position cluster
    log-probabilities [B, P, K] into value log-probabilities [B, P, D].
    """

    def __init__(self, group_of: tuple, sizes: tuple, width: int, clusters: int):
        super().__init__()
        self.logits = nn.Parameter(torch.zeros(len(sizes), width, clusters))
        mask = torch.zeros(len(sizes), width, 1, dtype=torch.bool)
        for g, size in enumerate(sizes):
            mask[g, size:] = True
        self.register_buffer("invalid", mask, persistent=False)
        self.register_buffer("group_of", torch.tensor(group_of, dtype=torch.long), persistent=False)

    def log_value_given_cluster(self) -> torch.Tensor:
        # Values outside a domain get a finite, negligible weight: with -inf, a position's
        # logsumexp over clusters would be -inf everywhere and its gradient NaN.
        return torch.log_softmax(self.logits.masked_fill(self.invalid, OUTSIDE_DOMAIN_LOGIT), dim=1)  # [G, D, K]

    def forward(self, cluster_log_probs: torch.Tensor) -> torch.Tensor:
        per_position = self.log_value_given_cluster()[self.group_of]  # [P, D, K]
        return torch.logsumexp(per_position.unsqueeze(0) + cluster_log_probs.unsqueeze(-2), dim=-1)

    def value_given_cluster(self) -> torch.Tensor:
        """p(v | c) as [G, K, D]: each row one cluster's distribution over values."""
        return self.log_value_given_cluster().exp().transpose(1, 2)

    @torch.no_grad()
    def set_naming(self, naming: np.ndarray, confidence: float = 0.99) -> None:
        """Start at a naming [G, K] of domain positions: p(named value | cluster) = confidence,
        the rest shared, so the map can still move."""
        groups, width, clusters = self.logits.shape
        for g in range(groups):
            size = int((~self.invalid[g, :, 0]).sum())
            rest = (1 - confidence) / max(size - 1, 1)
            self.logits[g].fill_(math.log(rest))
            self.logits[g, torch.as_tensor(naming[g], dtype=torch.long), torch.arange(clusters)] = math.log(confidence)


def map_balance_loss(cluster_map: ClusterMap) -> torch.Tensor:
    """Over equally frequent clusters (as GEDI's prior trains them) every value gets an equal
    share: a map that merges values is penalised, a permutation is not."""
    probs = cluster_map.value_given_cluster()  # [G, K, D]
    return torch.stack([concept_entropy_loss(probs[g, :, :size]) if size > 1 else probs.new_zeros(())
                        for g, size in enumerate((~cluster_map.invalid[:, :, 0]).sum(dim=1).tolist())]).mean()
