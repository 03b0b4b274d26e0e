"""Barlow Twins redundancy-reduction loss (Zbontar et al., 2021)."""
from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["barlow_twins_loss"]


def _standardise(z: Tensor, eps: float) -> Tensor:
    # Biased variance, like the affine-free BatchNorm1d in the reference code.
    mean = z.mean(dim=0, keepdim=True)
    var = z.var(dim=0, unbiased=False, keepdim=True)
    return (z - mean) / torch.sqrt(var + eps)


def barlow_twins_loss(
    z_a: Tensor, z_b: Tensor, off_diagonal_weight: float = 5e-3, eps: float = 1e-5
) -> Tensor:
    """sum_i (1 - C_ii)^2 + off_diagonal_weight * sum_{i!=j} C_ij^2.

    C is the cross-correlation matrix [D, D] of the batch-standardised embeddings
    z_a, z_b of shape [B, D].
    """
    if z_a.dim() != 2 or z_a.shape != z_b.shape:
        raise ValueError(
            f"barlow_twins_loss: expected two [B, D] tensors of equal shape, got "
            f"{tuple(z_a.shape)} and {tuple(z_b.shape)}"
        )
    if z_a.shape[0] < 2:
        raise ValueError("barlow_twins_loss: needs a batch of at least 2 to standardise")
    batch = z_a.shape[0]
    c = _standardise(z_a, eps).T @ _standardise(z_b, eps) / batch
    diagonal = torch.diagonal(c)
    on_diag = (diagonal - 1).pow(2).sum()
    off_diag = c.pow(2).sum() - diagonal.pow(2).sum()
    return on_diag + off_diagonal_weight * off_diag
