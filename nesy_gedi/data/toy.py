"""Two-dimensional toy data sets (two moons, concentric circles)."""
from __future__ import annotations

import numpy as np
import torch
from sklearn import datasets

__all__ = ["TOY_DATASETS", "make_toy"]

TOY_DATASETS = ("moons", "circles")


def make_toy(
    name: str, n_samples: int, noise: float, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(points float32 [n, 2], labels int64 [n]) for "moons" or "circles".

    Points are standardised to zero mean and unit variance per coordinate: the
    SGLD buffer noise range and step sizes assume data on a fixed scale, which
    the raw sklearn sets do not share (moons span about [-1, 2] x [-0.5, 1]).
    """
    if n_samples < 2:
        raise ValueError(f"make_toy: n_samples must be >= 2, got {n_samples}")
    if noise < 0:
        raise ValueError(f"make_toy: noise must be >= 0, got {noise}")
    if name == "moons":
        points, labels = datasets.make_moons(n_samples=n_samples, noise=noise, random_state=seed)
    elif name == "circles":
        points, labels = datasets.make_circles(
            n_samples=n_samples, noise=noise, factor=0.5, random_state=seed
        )
    else:
        raise ValueError(f"make_toy: unknown data set {name!r}; choose one of {', '.join(TOY_DATASETS)}")
    points = (points - points.mean(axis=0)) / points.std(axis=0)
    return (
        torch.from_numpy(points.astype(np.float32)),
        torch.from_numpy(labels.astype(np.int64)),
    )
