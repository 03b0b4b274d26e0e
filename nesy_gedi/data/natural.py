"""CIFAR-10, CIFAR-100 and SVHN (natural images) through torchvision, which checks their files."""
from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import torch

from nesy_gedi.errors import DataError

from .files import first_line, fix_root, is_writable

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")

_NATURAL_LAYOUT = {
    "cifar10": ("CIFAR-10", "cifar-10-batches-py/ (or cifar-10-python.tar.gz)"),
    "cifar100": ("CIFAR-100", "cifar-100-python/ (or cifar-100-python.tar.gz)"),
    "svhn": ("SVHN", "{split}_32x32.mat"),
}


def load_torchvision_natural(
    name: str, root: Path, split: str, download: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    import numpy as np
    from torchvision import datasets

    pretty, layout = _NATURAL_LAYOUT[name]
    layout = layout.format(split=split)
    if download and not is_writable(root):
        download = False  # nothing could be written; still try what is already there
    try:
        with contextlib.redirect_stdout(sys.stderr):
            if name == "svhn":
                ds = datasets.SVHN(str(root), split=split, download=download)
                images = torch.from_numpy(np.ascontiguousarray(ds.data))  # already [N,3,32,32]
                labels = torch.as_tensor(np.asarray(ds.labels), dtype=torch.int64)
            else:
                cls = datasets.CIFAR10 if name == "cifar10" else datasets.CIFAR100
                ds = cls(str(root), train=(split == "train"), download=download)
                images = torch.from_numpy(np.ascontiguousarray(ds.data)).permute(0, 3, 1, 2)
                labels = torch.as_tensor(ds.targets, dtype=torch.int64)
    except Exception as exc:  # noqa: BLE001 - a torchvision traceback must never escape
        how = "download failed" if download else "download disabled or root not writable"
        raise DataError(
            f"{pretty} ({split}) could not be loaded from data root {root}: {first_line(exc)} "
            f"({how}); expected {root / layout} with torchvision's checksums. Delete corrupted "
            "files so they are fetched again, or " + fix_root(f"<root>/{layout}"),
        ) from None
    if images.ndim != 4 or images.dtype != torch.uint8 or images.shape[0] != labels.shape[0]:
        raise DataError(
            f"{pretty} ({split}) under {root} has unexpected content (images "
            f"{tuple(images.shape)} {images.dtype}, labels {tuple(labels.shape)}); delete it "
            "and download it again",
        )
    return images, labels
