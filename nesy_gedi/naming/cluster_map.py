"""The learned cluster -> value map that the map phase trains (one per concept domain), and its prior."""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from ..objectives.entropy import concept_entropy_loss

# The learned map's logit for a value outside a cluster's domain.
OUTSIDE_DOMAIN_LOGIT = -1e4


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
