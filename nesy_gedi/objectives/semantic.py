"""The semantic loss: -log P(knowledge and observed labels | concept probabilities)."""
from __future__ import annotations

import torch


def semantic_loss(log_probability: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of -log P(K and y); `log_probability` comes from KnowledgeCircuit.

    An example whose labels the network deems impossible has log P = -inf and an infinite
    loss: that is the correct value, and the training loop stops on it rather than hide it.
    """
    return -log_probability.mean()
