"""SwAV swapped-prediction loss (Caron et al., 2020), the paper's neuro-symbolic baseline.

The backbone already outputs C cluster logits, so these are used directly as
prototype scores: no separate prototype layer.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor
import torch.nn.functional as F

__all__ = ["sinkhorn_knopp", "swav_loss"]


@torch.no_grad()
def sinkhorn_knopp(scores: Tensor, epsilon: float = 0.05, iterations: int = 3) -> Tensor:
    """Equal-partition soft assignments Q [B, C] from scores [B, C].

    Each row sums to 1 and, as the iterations converge, each column sums to B/C.
    Computed without gradient: the codes are targets, as in SwAV.
    """
    if scores.dim() != 2:
        raise ValueError(f"sinkhorn_knopp: expected scores [B, C], got {tuple(scores.shape)}")
    if epsilon <= 0:
        raise ValueError(f"sinkhorn_knopp: epsilon must be > 0, got {epsilon}")
    if iterations < 1:
        raise ValueError(f"sinkhorn_knopp: iterations must be >= 1, got {iterations}")
    batch, clusters = scores.shape
    # Log domain: SwAV exponentiates cosine scores in [-1, 1], but raw logits
    # divided by a small epsilon overflow exp() in float32.
    log_q = scores.float() / epsilon
    log_q = log_q - torch.logsumexp(log_q.flatten(), dim=0)
    for _ in range(iterations):
        # Columns (clusters) to mass 1/C each, then rows (samples) to 1/B each.
        log_q = log_q - torch.logsumexp(log_q, dim=0, keepdim=True) - math.log(clusters)
        log_q = log_q - torch.logsumexp(log_q, dim=1, keepdim=True) - math.log(batch)
    # Ending on the row step makes every row an exact distribution once scaled by B.
    return (log_q + math.log(batch)).exp().to(scores.dtype)


def swav_loss(
    logits_a: Tensor,
    logits_b: Tensor,
    temperature: float = 0.1,
    epsilon: float = 0.05,
    iterations: int = 3,
) -> Tensor:
    """Swapped prediction: each view predicts the other view's Sinkhorn codes.

    0.5 * (CE(q_b, softmax(logits_a / T)) + CE(q_a, softmax(logits_b / T))), batch-averaged.
    """
    if logits_a.shape != logits_b.shape:
        raise ValueError(
            f"swav_loss: views have different shapes {tuple(logits_a.shape)} "
            f"and {tuple(logits_b.shape)}"
        )
    if temperature <= 0:
        raise ValueError(f"swav_loss: temperature must be > 0, got {temperature}")
    q_a = sinkhorn_knopp(logits_a.detach(), epsilon=epsilon, iterations=iterations)
    q_b = sinkhorn_knopp(logits_b.detach(), epsilon=epsilon, iterations=iterations)
    log_p_a = F.log_softmax(logits_a / temperature, dim=-1)
    log_p_b = F.log_softmax(logits_b / temperature, dim=-1)
    loss_a = -(q_b * log_p_a).sum(dim=-1).mean()
    loss_b = -(q_a * log_p_b).sum(dim=-1).mean()
    return 0.5 * (loss_a + loss_b)
