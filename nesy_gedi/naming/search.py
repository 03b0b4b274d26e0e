"""The naming search: which concept value each cluster means, per concept domain.

`search_naming` finds the naming that explains the training labels best (scored by
`NamingScorer`): exhaustively where the namings are few (an exact optimum), otherwise EM on a
soft cluster -> value map (the circuit's posterior marginals as the E-step, a one-to-one
projection with scipy's Hungarian matching) followed by a local search over swaps and
reassignments, from several restarts. It reports the labels explained by the naming found and
by the runner-up, and how many restarts agree.
"""
from __future__ import annotations

import itertools
import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from ..circuit import KnowledgeCircuit
from ..errors import NesyError
from .score import DEFAULT_NOISE, EVALUATION_CHUNK, ConceptDomains, NamingScorer

NAMING_MODES = ("auto", "one-to-one", "many-to-one")
# Namings x distinct examples scored at most by the exhaustive search: 9! namings of 9 clusters
# against a few hundred examples take seconds; 10! (3.6e6) namings take longer than the EM and
# local search do to find the same optimum.
MAX_EXHAUSTIVE_WORK = 100_000_000
MAX_EXHAUSTIVE_NAMINGS = 1_000_000
# Examples the EM and local search look at (the result is scored on all of them); the restarts
# that must agree on the best naming, else more restarts run (up to this factor); the first
# restarts that, all ending at one naming, end the search.
DEFAULT_SEARCH_EXAMPLES = 4000
SEARCH_POSITIONS = 16000
MIN_SEARCH_EXAMPLES = 100
# The restarts (EM and climb) look at this share of the search examples: a soft map of K x D
# values settles on a few hundred examples; the best endpoints then climb on all of them.
EM_SHARE = 0.25
RESTARTS_TO_AGREE = 2
UNANIMOUS_RESTARTS = 3
UNANIMOUS_EXPLAINED = 0.5
EXTRA_RESTART_FACTOR = 3
# Distinct restart endpoints (best first, on the EM's examples) that climb on all search examples.
POLISHED_ENDPOINTS = 2
# Single moves the local search scores exactly per step, the most promising by first-order gain.
GUIDED_MOVES = 8
KICKS = 30


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


def _promising(scorer: NamingScorer, naming: np.ndarray, moves: np.ndarray, candidates: int) -> np.ndarray:
    """The `candidates` moves from `naming` with the largest first-order gain (the posterior
    counts at `naming`), or every move where scoring them all costs little."""
    if len(moves) <= candidates or scorer.cheap_moves:
        return moves
    with np.errstate(divide="ignore"):
        gain = np.log(_posterior_counts(scorer, _hard(naming, scorer.circuit.concept_domain_size)) + 1e-3)
    groups = np.arange(naming.shape[0])[:, None]
    clusters = np.arange(naming.shape[1])[None, :]
    estimate = gain[groups, clusters, moves].sum(axis=(1, 2))
    return moves[np.argsort(-estimate, kind="stable")[:candidates]]


def _climb(scorer: NamingScorer, naming: np.ndarray, modes: tuple, climbed: dict | None = None,
           max_steps: int = 200, candidates: int = GUIDED_MOVES):
    """Local search from `naming`: each step ranks the single moves by their first-order gain
    (the posterior counts at the current naming) and scores the most promising exactly.

    `climbed` maps namings passed by earlier climbs to where they ended: the climb is
    deterministic, so a restart that reaches one of them ends there too, without rescoring
    (restarts that agree mostly share their last steps)."""
    sizes = scorer.domains.sizes
    climbed = {} if climbed is None else climbed
    path = [naming.tobytes()]
    if path[0] in climbed:
        return climbed[path[0]]
    current = scorer.score(naming[None])[0]
    for _ in range(max_steps):
        moves = _neighbours(naming, sizes, modes)
        if not len(moves):
            break
        moves = _promising(scorer, naming, moves, candidates)
        scores = scorer.score(moves)
        best = int(np.argmax(scores))
        if scores[best] <= current + 1e-9:
            break
        naming, current = moves[best], scores[best]
        key = naming.tobytes()
        if key in climbed:
            naming, current = climbed[key]
            break
        path.append(key)
    for key in path:
        climbed[key] = (naming, current)
    return naming, current


def _kicked(scorer: NamingScorer, start: tuple, modes: tuple, generator: np.random.Generator,
            climbed: dict, kicks: int = KICKS) -> tuple:
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
        moved, moved_score = _climb(scorer, moved, modes, climbed)
        if moved_score > score + 1e-9:
            naming, score = moved, moved_score
    return naming, score


def search_naming(circuit: KnowledgeCircuit, cluster_tuples, labels, num_clusters: int, labelled=None,
                  mode: str = "auto", noise: float = DEFAULT_NOISE, restarts: int = 8, seed: int = 0,
                  em_iterations: int = 30, exhaustive: bool | None = None,
                  search_examples: int | None = DEFAULT_SEARCH_EXAMPLES,
                  unanimous: int = UNANIMOUS_RESTARTS, em_share: float = EM_SHARE) -> NamingResult:
    """The naming of clusters by concept values that explains the training labels best.

    `mode`: one-to-one (distinct clusters get distinct values), many-to-one (an over-clustered
    backbone: several clusters may share a value) or auto (one-to-one when every domain has at
    least as many values as there are clusters). `exhaustive`: None decides by the work
    (MAX_EXHAUSTIVE_WORK); True insists (an error when the namings are too many to score).
    The EM and local search look at `search_examples` examples drawn at random (all when
    None; fewer for long tuples, SEARCH_POSITIONS concept positions): a few thousand pin a
    naming, and the search's cost grows with them; the restarts look at `em_share` of those,
    and the best two endpoints climb on all of them; the naming found and its runner-up are
    then scored on every example. The search stops as soon as its first `unanimous` restarts
    all end at one naming that explains at least half of the labels they searched on (0: never
    early); otherwise after `restarts`, or later (up to three times as many) until two agree on
    the best naming. `restarts_agreeing` of `restarts`
    reports which rule ended it.
    """
    started = time.perf_counter()
    scorer = NamingScorer(circuit, cluster_tuples, labels, num_clusters, labelled, noise)
    searcher = scorer
    tuples = np.asarray(cluster_tuples)
    if search_examples is not None:
        # Long tuples say more each: keep about as many concept positions as a short task's examples.
        search_examples = max(MIN_SEARCH_EXAMPLES, min(search_examples, SEARCH_POSITIONS // max(tuples.shape[1], 1)))
    labels = np.asarray(labels)

    def subset(rows: np.ndarray) -> NamingScorer:
        return NamingScorer(circuit, tuples[rows], labels[rows], num_clusters, labelled, noise)

    chosen = np.random.default_rng(seed).permutation(len(tuples))
    if search_examples is not None and len(tuples) > search_examples:
        chosen = chosen[:search_examples]
        searcher = subset(chosen)
    em_examples = max(MIN_SEARCH_EXAMPLES, int(em_share * len(chosen)))
    em_scorer = searcher if em_examples >= len(chosen) else subset(chosen[:em_examples])
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
        coarse, climbed_coarse = [], {}
        # EM lands in the best basin from some starts only (long additions: about one in three;
        # the others end at v -> v+5 or worse): run `restarts`, then more until two agree.
        # Where the first `unanimous` restarts all end at one naming that explains most labels,
        # the basins are few and that one draws the starts: the search stops there. Where no
        # naming explains most labels (long noisy tuples), a wrong basin (v -> v+5) can draw
        # most starts, so the full budget runs. Restarts run on the EM's examples; only the
        # best endpoints climb on all search examples (confirming a local optimum there costs
        # as much as a whole restart).
        while len(coarse) < EXTRA_RESTART_FACTOR * max(restarts, 1):
            coarse.append(_climb(em_scorer, _em(em_scorer, modes, generator, em_iterations), modes, climbed_coarse))
            leader = max(coarse, key=lambda final: final[1])[0]
            agreeing = sum(np.array_equal(leader, n) for n, _ in coarse)
            if (unanimous and len(coarse) >= unanimous and agreeing == len(coarse)
                    and em_scorer.explained(leader[None])[0] >= UNANIMOUS_EXPLAINED * em_scorer.total):
                break
            if len(coarse) >= restarts and agreeing >= RESTARTS_TO_AGREE:
                break
        endpoints = {}
        for naming, _ in sorted(coarse, key=lambda final: -final[1]):
            endpoints.setdefault(naming.tobytes(), naming)
        climbed = climbed_coarse if em_scorer is searcher else {}
        polished = {key: _climb(searcher, naming, modes, climbed)
                    for key, naming in list(endpoints.items())[:POLISHED_ENDPOINTS]}
        finals = [polished.get(naming.tobytes(), (naming, -math.inf)) for naming, _ in coarse]
        if searcher.cheap_moves:  # small problems: kick the best out of two-swap local optima
            finals.append(_kicked(searcher, max(finals, key=lambda final: final[1]), modes, generator, climbed))
        order = sorted(range(len(finals)), key=lambda i: -finals[i][1])
        best = finals[order[0]][0]
        agreeing = sum(np.array_equal(best, naming) for naming, _ in finals)
        # The runner-up: the best other restart, or the best single move away from the best
        # (of the most promising moves where scoring all of them would cost more than a climb).
        others = [finals[i][0] for i in order if not np.array_equal(finals[i][0], best)]
        candidates = np.concatenate([np.array(others[:1], dtype=np.int64).reshape(-1, *best.shape),
                                     _promising(searcher, best, _neighbours(best, sizes, modes),
                                                GUIDED_MOVES)])
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
