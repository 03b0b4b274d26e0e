"""PNG figures of runs: SGLD samples, energy histograms, training curves, 2-D toy maps and
concept confusion matrices.

Figures are drawn on `matplotlib.figure.Figure` objects with the Agg canvas and never
through pyplot, so nothing here touches matplotlib's global state or needs a display.
Every function takes plain tensors/arrays and a path, and returns the path written.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Callable, Iterable, Mapping

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

__all__ = [
    "save_sample_grid",
    "save_point_samples",
    "save_energy_histogram",
    "save_training_curves",
    "save_toy_clusters",
    "save_energy_landscape",
    "save_confusion_heatmap",
]


def _numpy(values) -> np.ndarray:
    if hasattr(values, "detach"):
        values = values.detach().float().cpu().numpy()
    return np.asarray(values)


def _save(figure: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(figure)
    figure.savefig(path, dpi=100, bbox_inches="tight")
    return path


def sample_grid(samples, ncol: int = 8) -> np.ndarray:
    """Images [N, C, H, W] in [-1, 1] tiled into one [H', W', C] array in [0, 1]."""
    images = _numpy(samples)
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"sample_grid: expected images [N, 1|3, H, W], got {images.shape}")
    count, channels, height, width = images.shape
    ncol = max(1, min(ncol, count))
    nrow = max(1, math.ceil(count / ncol))
    pad = 1
    grid = np.ones((nrow * (height + pad) + pad, ncol * (width + pad) + pad, channels), dtype=np.float32)
    for index in range(count):
        row, col = divmod(index, ncol)
        top, left = pad + row * (height + pad), pad + col * (width + pad)
        grid[top:top + height, left:left + width] = np.transpose(images[index], (1, 2, 0))
    return np.clip((grid + 1.0) / 2.0, 0.0, 1.0)


def save_sample_grid(samples, path: str | Path, ncol: int = 8, title: str | None = None) -> Path:
    """A grid of images [N, C, H, W] in [-1, 1] (e.g. SGLD samples from the replay buffer)."""
    grid = sample_grid(samples, ncol)
    count, channels = len(samples), grid.shape[2]
    ncol = max(1, min(ncol, count))
    nrow = max(1, math.ceil(count / ncol))
    figure = Figure(figsize=(ncol * 0.6 + 0.4, nrow * 0.6 + 0.6))
    axes = figure.add_subplot()
    if channels == 1:
        axes.imshow(grid[:, :, 0], cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    else:
        axes.imshow(grid, interpolation="nearest")
    axes.set_axis_off()
    axes.set_title(title or f"SGLD samples ({count})", fontsize=9)
    return _save(figure, path)


def save_point_samples(points, samples, path: str | Path, title: str | None = None) -> Path:
    """2-D data (grey) with SGLD samples (red) on top."""
    data, negatives = _numpy(points), _numpy(samples)
    figure = Figure(figsize=(4.5, 4.5))
    axes = figure.add_subplot()
    axes.scatter(data[:, 0], data[:, 1], s=3, c="0.6", label="data")
    axes.scatter(negatives[:, 0], negatives[:, 1], s=3, c="tab:red", alpha=0.6, label="SGLD samples")
    axes.legend(loc="upper right", fontsize=8, markerscale=3)
    axes.set_aspect("equal", adjustable="datalim")
    axes.set_title(title or "replay buffer", fontsize=9)
    return _save(figure, path)


def save_energy_histogram(energies: Mapping[str, object], path: str | Path, title: str | None = None) -> Path:
    """Overlaid histograms of energies, one per named set (e.g. test / OOD / noise).

    Non-finite values are dropped (and counted in the legend)."""
    figure = Figure(figsize=(6, 3.5))
    axes = figure.add_subplot()
    finite = {}
    for name, values in energies.items():
        array = _numpy(values).astype(np.float64).ravel()
        keep = np.isfinite(array)
        finite[name] = (array[keep], int((~keep).sum()))
    pooled = np.concatenate([a for a, _ in finite.values()]) if finite else np.zeros(0)
    if pooled.size:
        low, high = np.percentile(pooled, [0.5, 99.5])
        if not high > low:
            low, high = low - 0.5, high + 0.5
        bins = np.linspace(low, high, 60)
        for name, (array, dropped) in finite.items():
            label = f"{name} (n={array.size}" + (f", {dropped} non-finite)" if dropped else ")")
            axes.hist(np.clip(array, low, high), bins=bins, alpha=0.5, density=True, label=label)
        axes.legend(fontsize=8)
    axes.set_xlabel("energy E(x) = -logsumexp f(x)  (lower = more in-distribution)")
    axes.set_ylabel("density")
    axes.set_title(title or "energies", fontsize=9)
    return _save(figure, path)


_CURVE_GROUPS = (
    ("losses", lambda key: key.startswith("train_") and "energy" not in key),
    ("test: clustering, OOD AUROC", lambda key: key in ("cluster_accuracy", "nmi", "ari", "largest_cluster",
                                                        "cluster_entropy", "ood_auroc")),
    ("energies", lambda key: key.startswith(("energy_", "train_energy_"))),
)


def save_training_curves(records: Iterable[Mapping], path: str | Path, title: str | None = None) -> Path:
    """Per-epoch curves from metrics.jsonl records (records without "epoch" or with "event" skipped);
    non-finite recoveries are marked as vertical lines."""
    records = list(records)
    epochs = [r for r in records if "epoch" in r and "event" not in r]
    events = [r for r in records if r.get("event") == "nonfinite"]
    figure = Figure(figsize=(12, 3.5))
    for index, (name, wanted) in enumerate(_CURVE_GROUPS):
        axes = figure.add_subplot(1, len(_CURVE_GROUPS), index + 1)
        keys = sorted({k for r in epochs for k in r if wanted(k)})
        for key in keys:
            xs = [r["epoch"] for r in epochs if isinstance(r.get(key), (int, float))]
            ys = [r[key] for r in epochs if isinstance(r.get(key), (int, float))]
            if xs:
                axes.plot(xs, ys, marker="o", markersize=3, label=key)
        for event in events:
            axes.axvline(event.get("epoch", 0) - 0.5, color="tab:red", alpha=0.3, linewidth=1)
        axes.set_xlabel("epoch")
        axes.set_title(name, fontsize=9)
        if keys:
            axes.legend(fontsize=7)
    if title:
        figure.suptitle(title, fontsize=10)
    return _save(figure, path)


def _grid(points: np.ndarray, bounds, resolution: int):
    if bounds is None:
        low, high = points.min(axis=0), points.max(axis=0)
        margin = 0.25 * (high - low)
        bounds = (low[0] - margin[0], high[0] + margin[0], low[1] - margin[1], high[1] + margin[1])
    x0, x1, y0, y1 = bounds
    xs, ys = np.linspace(x0, x1, resolution), np.linspace(y0, y1, resolution)
    grid_x, grid_y = np.meshgrid(xs, ys)
    return bounds, grid_x, grid_y, np.stack([grid_x.ravel(), grid_y.ravel()], axis=1).astype(np.float32)


def save_toy_clusters(
    points,
    assignments,
    path: str | Path,
    cluster_fn: Callable[[np.ndarray], np.ndarray] | None = None,
    bounds=None,
    resolution: int = 150,
    title: str | None = None,
) -> Path:
    """2-D points coloured by cluster; with `cluster_fn` (grid points [M, 2] -> cluster ids [M])
    the plane is shaded by the cluster the model assigns to every location."""
    data, labels = _numpy(points), _numpy(assignments).astype(int)
    figure = Figure(figsize=(4.5, 4.5))
    axes = figure.add_subplot()
    if cluster_fn is not None:
        bounds, grid_x, grid_y, flat = _grid(data, bounds, resolution)
        regions = np.asarray(cluster_fn(flat)).reshape(grid_x.shape)
        axes.contourf(grid_x, grid_y, regions, levels=np.arange(regions.max() + 2) - 0.5,
                      cmap="tab10", vmin=0, vmax=9, alpha=0.2)
    axes.scatter(data[:, 0], data[:, 1], c=labels, cmap="tab10", vmin=0, vmax=9, s=4)
    axes.set_aspect("equal", adjustable="datalim")
    axes.set_title(title or "cluster assignments", fontsize=9)
    return _save(figure, path)


def save_energy_landscape(
    energy_fn: Callable[[np.ndarray], np.ndarray],
    points,
    path: str | Path,
    samples=None,
    bounds=None,
    resolution: int = 150,
    title: str | None = None,
) -> Path:
    """Filled contours of the energy over the plane (`energy_fn`: grid points [M, 2] -> energies [M]),
    the data in white and, if given, SGLD samples in red."""
    data = _numpy(points)
    bounds, grid_x, grid_y, flat = _grid(data, bounds, resolution)
    values = np.asarray(energy_fn(flat), dtype=np.float64).reshape(grid_x.shape)
    values = np.where(np.isfinite(values), values, np.nan)
    figure = Figure(figsize=(5.2, 4.5))
    axes = figure.add_subplot()
    if np.isfinite(values).any():
        low, high = np.nanpercentile(values, [1, 99])
        if not high > low:
            high = low + 1.0
        contour = axes.contourf(grid_x, grid_y, np.clip(values, low, high), levels=30, cmap="viridis")
        figure.colorbar(contour, ax=axes, label="energy")
    axes.scatter(data[:, 0], data[:, 1], s=2, c="white", alpha=0.5)
    if samples is not None:
        negatives = _numpy(samples)
        axes.scatter(negatives[:, 0], negatives[:, 1], s=2, c="tab:red", alpha=0.6)
    axes.set_xlim(bounds[0], bounds[1])
    axes.set_ylim(bounds[2], bounds[3])
    axes.set_aspect("equal")
    axes.set_title(title or "energy landscape (low = likely)", fontsize=9)
    return _save(figure, path)


def save_confusion_heatmap(matrix, values: list, path: str | Path, title: str,
                           on_pixels: Callable[[np.ndarray], None] | None = None) -> Path:
    """A row-normalised confusion matrix as a heatmap, true values down, predictions across;
    `on_pixels` receives the figure's RGB pixels (e.g. for TensorBoard)."""
    matrix = np.asarray(matrix, dtype=float)
    size = len(values)
    figure = Figure(figsize=(1.2 + 0.5 * size, 1.0 + 0.5 * size))
    axes = figure.add_subplot()
    image = axes.imshow(matrix, cmap="Blues", vmin=0.0, vmax=1.0)
    axes.set_xticks(range(size), [str(v) for v in values])
    axes.set_yticks(range(size), [str(v) for v in values])
    axes.set_xlabel("predicted concept")
    axes.set_ylabel("true concept")
    axes.set_title(title, fontsize=10)
    if size <= 20:
        for row in range(size):
            for col in range(size):
                if matrix[row, col] >= 0.005:
                    axes.text(col, row, f"{matrix[row, col]:.2f}", ha="center", va="center", fontsize=7,
                              color="white" if matrix[row, col] > 0.5 else "black")
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04, label="share of the row")
    path = _save(figure, path)
    if on_pixels is not None:
        figure.canvas.draw()
        on_pixels(np.asarray(figure.canvas.buffer_rgba())[..., :3])
    return path
