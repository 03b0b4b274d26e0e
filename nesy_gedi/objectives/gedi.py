"""GEDI objective terms (Sansone & Manhaeve, 2024) as pure functions of logits.

One backbone f maps x to C cluster logits.  The same logits define an energy-based
model and a cluster posterior; with a temperature T (1 in the paper) both use it:

    E(x)   = -T * logsumexp_y (f(x)_y / T)
    p(y|x) = softmax_y (f(x)_y / T)

i.e. both come from the one joint model p(x, y) proportional to exp(f(x)_y / T), whose
marginal exp(-E(x) / T) the sampler's exp(-E(x)) tempers by T (at T = 1: that model).
GEDI trains both at once: a generative term (contrastive divergence against SGLD
negatives) plus two self-supervised terms (view invariance and a uniform prior over
clusters).  There are no stop-gradients and no momentum encoder anywhere.
`gedi_objective(..., energy_temperature=1.0)` with another `temperature` decouples the
two (T only in the posterior): a deviation from the paper, kept as an option.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor
import torch.nn.functional as F

__all__ = [
    "GediWeights",
    "energy",
    "scaled_logits",
    "contrastive_divergence",
    "invariance",
    "uniform_prior",
    "gedi_objective",
]


def _check_temperature(temperature: float) -> None:
    if not (math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be finite and > 0, got {temperature}")


def scaled_logits(logits: Tensor, temperature: float = 1.0) -> Tensor:
    """f(x) / T, the logits of the cluster posterior p(y|x) = softmax(f(x) / T); `logits`
    itself at T = 1."""
    _check_temperature(temperature)
    return logits if temperature == 1.0 else logits / temperature


def energy(logits: Tensor, temperature: float = 1.0) -> Tensor:
    """E(x) = -T * logsumexp_y (f(x)_y / T) over the last dimension; shape [B].

    T = 1 (the default, GEDI's) gives -logsumexp f(x); T -> 0 tends to -max_y f(x)_y.
    """
    energies = -torch.logsumexp(scaled_logits(logits, temperature), dim=-1)
    return energies if temperature == 1.0 else temperature * energies


def contrastive_divergence(
    energy_data: Tensor, energy_negative: Tensor, magnitude_weight: float = 0.0
) -> Tensor:
    """mean E(data) - mean E(negatives) [+ magnitude_weight * mean(E_data^2 + E_neg^2)].

    Minimising it lowers the energy of data and raises that of the sampler's
    negatives.  The optional squared-energy term keeps energies near zero; without
    it, CD is invariant to a shared offset and the energies can drift until the
    SGLD gradients blow up.
    """
    loss = energy_data.mean() - energy_negative.mean()
    if magnitude_weight != 0.0:
        # Means are taken separately so that unequal batch sizes are allowed.
        loss = loss + magnitude_weight * (
            energy_data.pow(2).mean() + energy_negative.pow(2).mean()
        )
    return loss


def invariance(logits_a: Tensor, logits_b: Tensor) -> Tensor:
    """Symmetric cross-entropy between the cluster posteriors of two views.

    0.5 * (H(p_a, p_b) + H(p_b, p_a)), averaged over the batch.  Both
    directions keep their gradient (no stop-gradient, as in GEDI): collapse is
    prevented by the prior term, not by asymmetry.
    """
    if logits_a.shape != logits_b.shape:
        raise ValueError(
            f"invariance: views have different shapes {tuple(logits_a.shape)} "
            f"and {tuple(logits_b.shape)}"
        )
    log_p_a = F.log_softmax(logits_a, dim=-1)
    log_p_b = F.log_softmax(logits_b, dim=-1)
    ce_ab = -(log_p_a.exp() * log_p_b).sum(dim=-1)
    ce_ba = -(log_p_b.exp() * log_p_a).sum(dim=-1)
    return 0.5 * (ce_ab + ce_ba).mean()


def _uniform_prior_single(logits: Tensor) -> Tensor:
    if logits.dim() != 2:
        raise ValueError(
            f"uniform_prior: expected logits of shape [B, C], got {tuple(logits.shape)}"
        )
    batch = logits.shape[0]
    # log mean_b p(c|x_b) via logsumexp: taking log of an averaged softmax would
    # underflow to -inf for clusters that every sample rules out, exactly the
    # collapsed case where the gradient matters most.
    log_marginal = torch.logsumexp(F.log_softmax(logits, dim=-1), dim=0) - math.log(batch)
    return -log_marginal.mean()


def uniform_prior(logits: Tensor | Sequence[Tensor]) -> Tensor:
    """Cross-entropy between the uniform prior over C clusters and the batch marginal.

    -(1/C) * sum_c log mean_b p(c|x_b); minimal (= log C) when the marginal is
    uniform.  A list of logits (one per view) averages the term over views.
    """
    if isinstance(logits, Tensor):
        return _uniform_prior_single(logits)
    views = list(logits)
    if not views:
        raise ValueError("uniform_prior: got an empty list of logits")
    return torch.stack([_uniform_prior_single(v) for v in views]).mean()


@dataclass(frozen=True)
class GediWeights:
    """Weights of the GEDI terms.  A zero weight switches its term off entirely.

    generative=0 gives the "no-gen" ablation; invariance=prior=0 gives JEM-only.
    """

    generative: float = 1.0
    invariance: float = 1.0
    prior: float = 1.0
    energy_magnitude: float = 0.0

    def __post_init__(self) -> None:
        for name in ("generative", "invariance", "prior", "energy_magnitude"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"GediWeights.{name} must be finite and >= 0, got {value}")


def _require(tensor: Tensor | None, name: str, term: str) -> Tensor:
    if tensor is None:
        raise ValueError(f"gedi_objective: the {term} term has a non-zero weight but {name} is None")
    return tensor


def gedi_objective(
    logits_data: Tensor | None,
    logits_negative: Tensor | None,
    logits_view_a: Tensor | None,
    logits_view_b: Tensor | None,
    weights: GediWeights | None = None,
    temperature: float = 1.0,
    energy_temperature: float | None = None,
) -> dict[str, Tensor]:
    """Weighted GEDI terms and their sum, from the raw logits f(x) of data, negatives
    and two views.

    `temperature` T: the posterior softmax(f / T) of the invariance and prior terms and
    the energy -T logsumexp(f / T) of the generative term.  `energy_temperature`, when
    given, replaces T in the energy only (1.0: the pre-#13 "posterior" scope).

    Returns {"generative", "invariance", "prior", "total"}.  A term whose weight
    is 0 is not computed (its inputs may be None) and is reported as a constant
    zero so that logs keep the same keys across ablations.
    """
    weights = GediWeights() if weights is None else weights
    _check_temperature(temperature)
    energy_temperature = temperature if energy_temperature is None else energy_temperature
    _check_temperature(energy_temperature)
    inputs = (logits_data, logits_negative, logits_view_a, logits_view_b)
    # The posterior's logits f / T, shared by the invariance and prior terms.
    posterior_a, posterior_b = (
        None if v is None else scaled_logits(v, temperature) for v in (logits_view_a, logits_view_b)
    )
    reference = next((t for t in inputs if t is not None), None)
    if reference is None:
        raise ValueError("gedi_objective: all logits are None")
    zero = reference.new_zeros(())

    terms: dict[str, Tensor] = {}
    computed: list[Tensor] = []

    if weights.generative > 0:
        data = _require(logits_data, "logits_data", "generative")
        negative = _require(logits_negative, "logits_negative", "generative")
        cd = contrastive_divergence(
            energy(data, energy_temperature),
            energy(negative, energy_temperature),
            magnitude_weight=weights.energy_magnitude,
        )
        terms["generative"] = weights.generative * cd
        computed.append(terms["generative"])
    else:
        terms["generative"] = zero

    if weights.invariance > 0:
        view_a = _require(posterior_a, "logits_view_a", "invariance")
        view_b = _require(posterior_b, "logits_view_b", "invariance")
        terms["invariance"] = weights.invariance * invariance(view_a, view_b)
        computed.append(terms["invariance"])
    else:
        terms["invariance"] = zero

    if weights.prior > 0:
        # The prior sees whichever views exist, so it can be used without the
        # invariance term (e.g. with a single view).
        views = [v for v in (posterior_a, posterior_b) if v is not None]
        if not views:
            raise ValueError(
                "gedi_objective: the prior term has a non-zero weight but both views are None"
            )
        terms["prior"] = weights.prior * uniform_prior(views)
        computed.append(terms["prior"])
    else:
        terms["prior"] = zero

    if not computed:
        raise ValueError("gedi_objective: every weight is zero, nothing to optimise")
    terms["total"] = torch.stack(computed).sum()
    return terms
