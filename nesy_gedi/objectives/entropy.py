"""Entropy-based regularisers and diagnostics over concept distributions."""
from __future__ import annotations

import math

from torch import Tensor

__all__ = ["normalised_entropy", "concept_entropy_loss"]

# Clamp floor for log(p): keeps p * log p and its gradient finite at p = 0.
_LOG_FLOOR = 1e-12


def _entropy(probs: Tensor) -> Tensor:
    return -(probs * probs.clamp_min(_LOG_FLOOR).log()).sum(dim=-1)


def _log_classes(probs: Tensor, caller: str) -> float:
    classes = probs.shape[-1]
    if classes < 2:
        raise ValueError(f"{caller}: needs at least 2 classes in the last dimension, got {classes}")
    return math.log(classes)


def normalised_entropy(probs: Tensor) -> Tensor:
    """Entropy over the last dimension divided by log C, in [0, 1]; shape probs.shape[:-1]."""
    return _entropy(probs) / _log_classes(probs, "normalised_entropy")


def concept_entropy_loss(concept_probs: Tensor) -> Tensor:
    """1 - normalised entropy of the batch-mean concept distribution (rsbench's regulariser).

    Input [B, C] or [B, P, C] (P concept positions); the term is averaged over
    positions.  It is 0 when every position's batch mean is uniform, so
    minimising it discourages concepts that collapse onto few values.
    """
    if concept_probs.dim() not in (2, 3):
        raise ValueError(
            f"concept_entropy_loss: expected [B, C] or [B, P, C], got {tuple(concept_probs.shape)}"
        )
    mean = concept_probs.mean(dim=0)
    return 1.0 - (_entropy(mean) / _log_classes(concept_probs, "concept_entropy_loss")).mean()
