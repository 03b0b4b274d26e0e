"""The compiled knowledge as a batched torch layer (KLay), evaluated in log space.

Inputs per example are the concepts' log-probabilities and, optionally, observed label
values as evidence; the output is log P(knowledge and labels). Every indicator literal
gets a log-weight: log p(X=v) for concepts, 0 or -inf (observed or ruled out) for
labels, 0 for hidden variables. All negative literals weigh log 1 = 0, because each
categorical variable carries its own exactly-one constraint in the circuit.
"""
from __future__ import annotations

import math

import klay
import torch
from torch import nn

from .compiler import CompiledKnowledge
from .reasoning import enumerate_label_tuples

PREDICTION_EXACT = "exact"
PREDICTION_ARGMAX_CONCEPTS = "argmax-concepts"


def _klay_module(compiled: CompiledKnowledge, semiring: str, compile_module: bool) -> nn.Module:
    circuit = klay.Circuit()
    circuit.add_sdd_from_file(str(compiled.sdd_file))
    return circuit.to_torch_module(semiring=semiring, compile=compile_module)


class KnowledgeCircuit(nn.Module):
    """log P(knowledge and labels | concept probabilities), batched, differentiable.

    `compile_module`: wrap KLay's module in torch.compile. It pays off on CUDA; on a CPU it
    costs seconds per circuit and gains little for circuits this small, so "auto"
    compiles only when the module is first run on a CUDA device... which KLay decides
    at construction: "auto" therefore means "compile when CUDA is available".
    """

    def __init__(self, compiled: CompiledKnowledge, compile_module: bool | str = "auto",
                 max_label_candidates: int = 256):
        super().__init__()
        if compile_module == "auto":
            compile_module = torch.cuda.is_available()
        knowledge = compiled.knowledge
        self.compiled = compiled
        self.concepts = knowledge.concepts
        self.labels = knowledge.labels
        if not self.concepts:
            raise ValueError(f"{knowledge.path}: the knowledge declares no concept")
        self.concept_domain_size = max(len(v.domain) for v in self.concepts)
        # The perception network predicts positions in the first concept's domain.
        domain = self.concepts[0].domain
        self.concept_low = min(domain)
        lookup = torch.full((max(domain) - self.concept_low + 1,), -1, dtype=torch.long)
        lookup[torch.tensor(domain) - self.concept_low] = torch.arange(len(domain))
        self.register_buffer("concept_domain", torch.tensor(domain, dtype=torch.long), persistent=False)
        self.register_buffer("concept_lookup", lookup, persistent=False)
        self.module = _klay_module(compiled, "log", bool(compile_module))

        # The literal order KLay expects is the SDD's variable order; build one gather
        # index from [concept weights | label weights | constant 0 | constant -inf].
        num_concept_slots = len(self.concepts) * self.concept_domain_size
        label_slots = [(label, p) for label in self.labels for p in range(len(label.domain))]
        zero_slot = num_concept_slots + len(label_slots)
        source = [zero_slot] * compiled.num_literals
        for c, variable in enumerate(self.concepts):
            for p in range(len(variable.domain)):
                source[compiled.literal_of[(variable.id, p)] - 1] = c * self.concept_domain_size + p
        for slot, (label, p) in enumerate(label_slots):
            source[compiled.literal_of[(label.id, p)] - 1] = num_concept_slots + slot
        self.register_buffer("gather_index", torch.tensor(source, dtype=torch.long), persistent=False)

        # Label value -> position lookups, padded to one table.
        self.label_sizes = [len(label.domain) for label in self.labels]
        lows = [min(label.domain) for label in self.labels] or [0]
        width = max((max(label.domain) - min(label.domain) + 1 for label in self.labels), default=1)
        table = torch.full((max(len(self.labels), 1), width), -1, dtype=torch.long)
        for row, label in enumerate(self.labels):
            for p, value in enumerate(label.domain):
                table[row, value - label.domain[0]] = p
        self.register_buffer("label_position_table", table, persistent=False)
        self.register_buffer("label_low", torch.tensor(lows, dtype=torch.long), persistent=False)
        self.register_buffer("slot_label", torch.tensor([self.labels.index(label) for label, _ in label_slots],
                                                        dtype=torch.long), persistent=False)
        self.register_buffer("slot_position", torch.tensor([p for _, p in label_slots], dtype=torch.long),
                             persistent=False)
        self.num_label_slots = len(label_slots)
        self.max_label_candidates = max_label_candidates
        self._label_candidates = None  # computed lazily from the SDD

    # ------------------------------------------------------------------ evaluation
    def _literal_weights(self, concept_log_probs: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        batch = concept_log_probs.shape[0]
        concept_part = concept_log_probs.reshape(batch, -1)
        label_part = concept_log_probs.new_zeros(batch, self.num_label_slots)
        if labels is not None and self.labels:
            # An observed label keeps weight 1 (log 0) on its value and 0 (-inf) on the others.
            positions = self.label_positions(labels)[:, self.slot_label]
            ruled_out = (positions >= 0) & (positions != self.slot_position)
            label_part = label_part.masked_fill(ruled_out, -math.inf)
        constants = concept_log_probs.new_zeros(batch, 1)
        weights = torch.cat([concept_part, label_part, constants], dim=1)
        return weights.index_select(1, self.gather_index)

    def label_positions(self, labels: torch.Tensor) -> torch.Tensor:
        """Label values [B, L] -> domain positions; -1 (or any negative value) means unobserved."""
        labels = labels.long()
        if labels.dim() != 2 or labels.shape[1] != len(self.labels):
            raise ValueError(f"expected labels of shape [batch, {len(self.labels)}], got {tuple(labels.shape)}")
        offset = labels - self.label_low
        unobserved = labels < 0
        valid = (offset >= 0) & (offset < self.label_position_table.shape[1])
        rows = torch.arange(len(self.labels), device=labels.device).expand_as(labels)
        positions = torch.where(valid, self.label_position_table[rows, offset.clamp(0, self.label_position_table.shape[1] - 1)],
                                torch.full_like(labels, -1))
        if bool(((positions < 0) & ~unobserved).any()):
            bad = labels[(positions < 0) & ~unobserved][0].item()
            raise ValueError(f"label value {bad} is outside its declared domain")
        return torch.where(unobserved, torch.full_like(labels, -1), positions)

    def forward(self, concept_log_probs: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """concept_log_probs [B, P, C] (log-softmax per concept), labels [B, L] or None -> [B]."""
        if (concept_log_probs.dim() != 3 or concept_log_probs.shape[1] != len(self.concepts)
                or concept_log_probs.shape[2] != self.concept_domain_size):
            raise ValueError(f"expected concept log-probabilities of shape [batch, {len(self.concepts)}, "
                             f"{self.concept_domain_size}], got {tuple(concept_log_probs.shape)}")
        weights = self._literal_weights(concept_log_probs, labels)
        return self._evaluate(weights)

    def _evaluate(self, weights: torch.Tensor) -> torch.Tensor:
        # Negative literals weigh log 1 = 0 (exactly-one constraints live in the circuit);
        # KLay would otherwise default them to log(1 - p).
        return self.module(weights, torch.zeros_like(weights)).squeeze(-1)

    # ------------------------------------------------------------------ reasoning
    def concept_values(self, positions: torch.Tensor) -> torch.Tensor:
        """Concept domain positions -> concept values."""
        return self.concept_domain[positions]

    def concept_positions(self, values: torch.Tensor) -> torch.Tensor:
        """Concept values -> domain positions; -1 for a value outside the domain."""
        offset = values.long() - self.concept_low
        inside = (offset >= 0) & (offset < len(self.concept_lookup))
        positions = self.concept_lookup[offset.clamp(0, len(self.concept_lookup) - 1)]
        return torch.where(inside, positions, torch.full_like(positions, -1))

    def one_hot_concepts(self, concept_positions: torch.Tensor) -> torch.Tensor:
        """Concept domain positions [B, P] -> log-probabilities that put all mass on them."""
        one_hot = torch.nn.functional.one_hot(concept_positions.long(), self.concept_domain_size).bool()
        zeros = torch.zeros(one_hot.shape, device=concept_positions.device)
        return zeros.masked_fill(~one_hot, -math.inf)

    def deduce_labels(self, concept_positions: torch.Tensor, chunk: int = 8192) -> tuple[torch.Tensor, torch.Tensor]:
        """The labels the knowledge assigns to given concepts: (label values [B, L], consistent [B]).

        Exact: with one-hot concept weights, the gradient of log WMC with respect to a label
        literal's log-weight is P(label = v | concepts, knowledge), which is 0 or 1 because
        the compiler checked that labels are functions of the concepts.
        """
        values, consistent = [], []
        domains = [torch.tensor(label.domain, device=concept_positions.device) for label in self.labels]
        for start in range(0, concept_positions.shape[0], chunk):
            part = concept_positions[start:start + chunk]
            with torch.enable_grad():
                weights = self._literal_weights(self.one_hot_concepts(part), None).requires_grad_(True)
                log_count = self._evaluate(weights)
                (gradient,) = torch.autograd.grad(log_count.sum(), weights)
            ok = torch.isfinite(log_count)
            chunk_values = []
            for label, domain in zip(self.labels, domains):
                literal_columns = torch.tensor(self.compiled.literals(label), device=part.device) - 1
                marginals = gradient[:, literal_columns]
                chunk_values.append(domain[marginals.argmax(dim=1)])
            values.append(torch.stack(chunk_values, dim=1) if chunk_values else
                          torch.zeros(part.shape[0], 0, dtype=torch.long, device=part.device))
            consistent.append(ok)
        return torch.cat(values), torch.cat(consistent)

    def label_candidates(self) -> list | None:
        """All label tuples the knowledge allows, or None when there are more than max_label_candidates."""
        if self._label_candidates is None:
            self._label_candidates = enumerate_label_tuples(self.compiled, self.max_label_candidates)
        return self._label_candidates or None

    @property
    def prediction_method(self) -> str:
        return PREDICTION_EXACT if self.label_candidates() is not None else PREDICTION_ARGMAX_CONCEPTS

    @torch.no_grad()
    def predict(self, concept_log_probs: torch.Tensor) -> torch.Tensor:
        """Most probable labels [B, L]: exact over all allowed label tuples when they are few,
        otherwise the labels of the argmax concepts (see `prediction_method`)."""
        candidates = self.label_candidates()
        if candidates is None:
            labels, _ = self.deduce_labels(concept_log_probs.argmax(dim=-1))
            return labels
        batch, count = concept_log_probs.shape[0], len(candidates)
        candidate_tensor = torch.tensor(candidates, device=concept_log_probs.device)
        repeated = concept_log_probs.repeat_interleave(count, dim=0)
        evidence = candidate_tensor.repeat(batch, 1)
        scores = self.forward(repeated, evidence).view(batch, count)
        return candidate_tensor[scores.argmax(dim=1)]
