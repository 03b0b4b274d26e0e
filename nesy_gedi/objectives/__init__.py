"""Training objectives as pure functions of tensors."""
from nesy_gedi.objectives.barlow import barlow_twins_loss
from nesy_gedi.objectives.entropy import concept_entropy_loss, normalised_entropy
from nesy_gedi.objectives.gedi import (
    GediWeights,
    contrastive_divergence,
    energy,
    gedi_objective,
    invariance,
    scaled_logits,
    uniform_prior,
)
from nesy_gedi.objectives.swav import sinkhorn_knopp, swav_loss

__all__ = [
    "GediWeights",
    "barlow_twins_loss",
    "concept_entropy_loss",
    "contrastive_divergence",
    "energy",
    "gedi_objective",
    "invariance",
    "normalised_entropy",
    "scaled_logits",
    "sinkhorn_knopp",
    "swav_loss",
    "uniform_prior",
]
