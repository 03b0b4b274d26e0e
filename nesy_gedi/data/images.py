"""Image data sets as uint8 tensors, with one-line errors instead of torchvision tracebacks.

Each data source has its module: `nesy_gedi.data.mnist` (MNIST and Fashion-MNIST from their
raw files, with MD5 and SHA-256 checks), `nesy_gedi.data.natural` (CIFAR-10, CIFAR-100,
SVHN), `nesy_gedi.data.fake` (torchvision's FakeData), `nesy_gedi.data.folder` and
`nesy_gedi.data.arrays` (own images); `nesy_gedi.data.files` finds the data root. This
module picks the source for a name, holds out a test part where own data has none, and
caches what was loaded.

Loading
-------
`load_images(name, root, split)` returns `(images, labels)`: images uint8 `[N, C, H, W]`,
labels int64 `[N]`. The result is cached in-process (several runs in one process reuse
it), so the returned tensors are shared: treat them as read-only (`to_float` and the
augmentations in `nesy_gedi.data.augment` never modify their input).

Every failure caused by the data (missing, corrupted, truncated, unreadable, unwritable)
raises `DataError` with one line saying which file or folder and what to do.

Own images
----------
`load_images("folder", root, split, path=DIR)` reads an image folder in torchvision's
ImageFolder layout (`nesy_gedi.data.folder`), `load_images("arrays", root, split,
path=FILE.npz)` an `.npz` archive (`nesy_gedi.data.arrays`). Without a test part of their
own, the test split is a held-out part.

Held-out part: 1/6 of the images of each class (rounded, at least one of a class with two
or more images), chosen by a fixed seed (`HOLDOUT_SEED` = 0) so it is the same on every
run and machine and never depends on `train.seed`; the rest is the training split. Both
keep the images' order in the source. `root` is not used by these two.
"""
from __future__ import annotations

import functools
import os
from pathlib import Path

import torch

from nesy_gedi.errors import DataError

from .arrays import npz_class_names, read_arrays
from .fake import load_fake
from .folder import folder_classes, read_folder
from .mnist import MNIST_LIKE, load_mnist_like
from .natural import CIFAR10_CLASSES, load_torchvision_natural

__all__ = [
    "DATASET_NAMES",
    "load_images",
    "clear_image_cache",
    "class_names",
    "to_float",
]

_OTHER_SPLITS = {
    "cifar10": ("train", "test"),
    "cifar100": ("train", "test"),
    "svhn": ("train", "test", "extra"),
    "fake": ("train", "test"),
}
OWN_DATASETS = ("folder", "arrays")
DATASET_NAMES = ("mnist", "fashion_mnist", "cifar10", "cifar100", "svhn", "fake") + OWN_DATASETS

HOLDOUT_SEED = 0  # the held-out test part of `folder` / `arrays` data without a test part
HOLDOUT_FRACTION = 1 / 6


def load_images(
    name: str,
    root: str | os.PathLike,
    split: str,
    *,
    download: bool = True,
    path: str | os.PathLike | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Load a data set split as `(images uint8 [N,C,H,W], labels int64 [N])`.

    `name` is one of "mnist", "fashion_mnist" (splits train/test), "cifar10", "cifar100"
    (train/test), "svhn" (train/test/extra), "fake", or "folder" / "arrays" (train/test),
    which read the user's own images from `path` (an ImageFolder-style folder or an .npz
    file, see the module docstring; `root` and `download` are not used for them).
    "fake" is torchvision's FakeData, deterministic: "fake" means 64 images of 3x32x32 in
    10 classes; "fake:CxHxW[:K[:N]]"
    changes the image size, number of classes K and number of samples N (e.g.
    "fake:1x28x28:10:128"). `download=False` never tries the network.

    Results are cached per (name, root, split, download, path); the returned tensors are
    shared between callers, so do not modify them in place.
    """
    key_name = _normalise(name)
    if not (key_name in DATASET_NAMES or key_name.startswith("fake:")):
        raise DataError(
            f"unknown data set '{name}'; valid names: {', '.join(DATASET_NAMES)} "
            "(and fake:CxHxW:classes:samples)"
        )
    base = "fake" if key_name.startswith("fake") else key_name
    if base in OWN_DATASETS:
        splits: tuple[str, ...] = ("train", "test")
    else:
        splits = MNIST_LIKE[base][1] if base in MNIST_LIKE else _OTHER_SPLITS[base]
    if split not in splits:
        raise DataError(f"data set '{name}' has no split '{split}'; valid splits: {', '.join(splits)}")
    if base in OWN_DATASETS:
        own = _load_own(base, str(_own_path(base, path)))
        return own[split]
    root_path = Path(root).expanduser().absolute() if base != "fake" else Path(".")
    return _load_cached(key_name, str(root_path), split, bool(download))


def class_names(name: str, count: int | None = None, path: str | os.PathLike | None = None) -> list[str]:
    """Readable names of the labels of data set `name`, for per-class reports and for
    naming data classes in `data.classes`.

    "folder": the class sub-folder names; "arrays": the archive's `class_names` array;
    MNIST, Fashion-MNIST and CIFAR-10: torchvision's names. With `count`, exactly `count`
    names ("class K" where no name is known; for the built-in sets, all "class K" when
    `count` differs from their number of classes). Without `count`, the known names
    (those of "folder" / "arrays" / the named built-in sets; an empty list otherwise).
    """
    key_name = _normalise(name)
    known: list[str] = []
    if key_name in OWN_DATASETS:
        target = _own_path(key_name, path)
        known = folder_classes(target)[0] if key_name == "folder" else npz_class_names(target)
        if count is None:
            return known
        return [known[k] if k < len(known) else f"class {k}" for k in range(count)]
    if key_name in MNIST_LIKE:
        from torchvision import datasets  # lazy: torchvision is slow to import
        known = list(getattr(datasets, MNIST_LIKE[key_name][0]).classes)
    elif key_name == "cifar10":
        known = list(CIFAR10_CLASSES)
    if count is None:
        return known
    if known and len(known) == count:
        return known
    return [f"class {k}" for k in range(count)]


def clear_image_cache() -> None:
    """Forget every data set loaded by `load_images` in this process."""
    _load_cached.cache_clear()
    _load_own.cache_clear()


def _normalise(name: str) -> str:
    return str(name).strip().lower().replace("-", "_")


@functools.lru_cache(maxsize=None)
def _load_cached(name: str, root: str, split: str, download: bool) -> tuple[torch.Tensor, torch.Tensor]:
    root_path = Path(root)
    if name in MNIST_LIKE:
        images, labels = load_mnist_like(name, root_path, split, download)
    elif name in ("cifar10", "cifar100", "svhn"):
        images, labels = load_torchvision_natural(name, root_path, split, download)
    else:
        images, labels = load_fake(name, split)
    return images.contiguous(), labels.to(torch.int64).contiguous()


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 images in [0, 255] -> float32 in [-1, 1] (the project's convention; SGLD
    noise and clamping assume this range). Float input is assumed to be in [0, 1]."""
    if images.dtype == torch.uint8:
        out = images.to(torch.float32)  # a new tensor: the in-place steps never touch the input
        return out.div_(127.5).sub_(1.0)
    if images.is_floating_point():
        return images.mul(2.0).sub(1.0)
    raise TypeError(f"to_float expects uint8 or float images, got {images.dtype}")


# --------------------------------------------------------------------------- own images


def _own_path(kind: str, path: str | os.PathLike | None) -> Path:
    what = "an image folder (torchvision's ImageFolder layout)" if kind == "folder" else "an .npz file"
    if path is None or str(path) == "":
        raise DataError(f"data set '{kind}' needs data.path: {what}")
    target = Path(path).expanduser().absolute()
    if not target.exists():
        raise DataError(f"data.path of data set '{kind}' not found (expected {what})", path=str(target))
    if kind == "folder" and not target.is_dir():
        raise DataError("data set 'folder' needs a folder with one sub-folder per class, got a file",
                        path=str(target))
    if kind == "arrays" and not target.is_file():
        raise DataError("data set 'arrays' needs an .npz file with arrays images and labels, got a folder",
                        path=str(target))
    return target


@functools.lru_cache(maxsize=None)
def _load_own(kind: str, path: str) -> dict:
    """{"train": (images, labels), "test": (images, labels)} of a folder or an .npz file."""
    target = Path(path)
    splits = read_folder(target) if kind == "folder" else read_arrays(target)
    if "test" not in splits:
        images, labels = splits["train"]
        train_rows, test_rows = _hold_out(labels, target)
        splits = {"train": (images[train_rows], labels[train_rows]), "test": (images[test_rows], labels[test_rows])}
    return {split: (images.contiguous(), labels.to(torch.int64).contiguous())
            for split, (images, labels) in splits.items()}


def _hold_out(labels: torch.Tensor, target: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """(train rows, test rows): HOLDOUT_FRACTION of each class's images, by HOLDOUT_SEED."""
    if len(labels) < 2:
        raise DataError(f"needs at least 2 images to hold out a test part (found {len(labels)}); "
                        "add images or give a test part", path=str(target))
    generator = torch.Generator().manual_seed(HOLDOUT_SEED)
    is_test = torch.zeros(len(labels), dtype=torch.bool)
    for value in torch.unique(labels).tolist():
        members = torch.nonzero(labels == value).flatten()
        count = max(1, round(len(members) * HOLDOUT_FRACTION)) if len(members) >= 2 else 0
        is_test[members[torch.randperm(len(members), generator=generator)[:count]]] = True
    return torch.nonzero(~is_test).flatten(), torch.nonzero(is_test).flatten()
