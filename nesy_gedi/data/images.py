"""Image data sets as uint8 tensors, with one-line errors instead of torchvision tracebacks.

Data root
---------
`resolve_data_root` picks the folder that holds the data sets, in this order: the
`--data-root` flag, the `NESY_GEDI_DATA` environment variable, then a per-user cache
(`$XDG_CACHE_HOME/nesy-gedi/data`, else `~/.cache/nesy-gedi/data`).

The layout under the root is torchvision's own (`<root>/MNIST/raw/*.gz`,
`<root>/FashionMNIST/raw/*.gz`, `<root>/cifar-10-batches-py/`, ...), so a folder that
torchvision already filled can be reused as it is. torchvision decompresses the MNIST
`.gz` files next to themselves, so the root must be writable the first time; copy a
read-only folder first.

Loading
-------
`load_images(name, root, split)` returns `(images, labels)`: images uint8 `[N, C, H, W]`,
labels int64 `[N]`. The result is cached in-process (several runs in one process reuse
it), so the returned tensors are shared: treat them as read-only (`to_float` and the
augmentations in `nesy_gedi.data.augment` never modify their input).

Every failure caused by the data (missing, corrupted, truncated, unreadable, unwritable)
raises `DataError` with one line saying which file or folder and what to do.
"""
from __future__ import annotations

import contextlib
import errno
import functools
import os
import re
import stat
import sys
from pathlib import Path

import torch

from nesy_gedi.errors import DataError

__all__ = [
    "DATASET_NAMES",
    "resolve_data_root",
    "load_images",
    "clear_image_cache",
    "class_names",
    "to_float",
]

ENV_VAR = "NESY_GEDI_DATA"

# name -> (torchvision class name, folder under root, valid splits)
_MNIST_LIKE = {
    "mnist": ("MNIST", ("train", "test")),
    "fashion_mnist": ("FashionMNIST", ("train", "test")),
}
_OTHER_SPLITS = {
    "cifar10": ("train", "test"),
    "cifar100": ("train", "test"),
    "svhn": ("train", "test", "extra"),
    "fake": ("train", "test"),
}
DATASET_NAMES = ("mnist", "fashion_mnist", "cifar10", "cifar100", "svhn", "fake")

def _fix_root(example: str) -> str:
    return (
        f"set --data-root or NESY_GEDI_DATA to a folder in torchvision's layout ({example}), "
        "or connect to the internet so torchvision can download it"
    )

# FakeData defaults: "fake" == "fake:3x32x32:10:64".
_FAKE_DEFAULT = ((3, 32, 32), 10, 64)
_FAKE_TEST_OFFSET = 1_000_000  # test images use other seeds than train images


# --------------------------------------------------------------------------- data root


def resolve_data_root(flag: str | os.PathLike | None = None) -> Path:
    """The data root: `flag`, else `$NESY_GEDI_DATA`, else the user cache dir; created if missing."""
    if flag is not None and str(flag) != "":
        path, origin = Path(flag), "--data-root"
    elif os.environ.get(ENV_VAR):
        path, origin = Path(os.environ[ENV_VAR]), ENV_VAR
    else:
        xdg = os.environ.get("XDG_CACHE_HOME")
        # The XDG spec says relative values are invalid and must be ignored.
        base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".cache"
        path, origin = base / "nesy-gedi" / "data", "the default cache folder"
    path = path.expanduser()
    if path.exists() and not path.is_dir():
        raise DataError(f"data root (from {origin}) is a file, not a folder", path=str(path))
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(
            f"cannot create the data root (from {origin}): {_one_line(exc)}; "
            "point --data-root or NESY_GEDI_DATA at a writable folder",
            path=str(path),
        ) from None
    return path.resolve()


# --------------------------------------------------------------------------- loading


def load_images(
    name: str, root: str | os.PathLike, split: str, *, download: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Load a data set split as `(images uint8 [N,C,H,W], labels int64 [N])`.

    `name` is one of "mnist", "fashion_mnist" (splits train/test), "cifar10", "cifar100"
    (train/test), "svhn" (train/test/extra) or "fake". "fake" is torchvision's FakeData,
    deterministic: "fake" means 64 images of 3x32x32 in 10 classes; "fake:CxHxW[:K[:N]]"
    changes the image size, number of classes K and number of samples N (e.g.
    "fake:1x28x28:10:128"). `download=False` never tries the network.

    Results are cached per (name, root, split, download); the returned tensors are shared
    between callers, so do not modify them in place.
    """
    key_name = str(name).strip().lower().replace("-", "_")
    if not (key_name in DATASET_NAMES or key_name.startswith("fake:")):
        raise DataError(
            f"unknown data set '{name}'; valid names: {', '.join(DATASET_NAMES)} "
            "(and fake:CxHxW:classes:samples)"
        )
    base = "fake" if key_name.startswith("fake") else key_name
    splits = _MNIST_LIKE[base][1] if base in _MNIST_LIKE else _OTHER_SPLITS[base]
    if split not in splits:
        raise DataError(f"data set '{name}' has no split '{split}'; valid splits: {', '.join(splits)}")
    root_path = Path(root).expanduser().absolute() if base != "fake" else Path(".")
    return _load_cached(key_name, str(root_path), split, bool(download))


def class_names(name: str, count: int) -> list[str]:
    """Readable names of the `count` labels of data set `name` (torchvision's for MNIST and
    Fashion-MNIST, "class K" otherwise), for per-class reports."""
    key_name = str(name).strip().lower().replace("-", "_")
    if key_name in _MNIST_LIKE:
        from torchvision import datasets  # lazy: torchvision is slow to import
        names = list(getattr(datasets, _MNIST_LIKE[key_name][0]).classes)
        if len(names) == count:
            return names
    return [f"class {k}" for k in range(count)]


def clear_image_cache() -> None:
    """Forget every data set loaded by `load_images` in this process."""
    _load_cached.cache_clear()


@functools.lru_cache(maxsize=None)
def _load_cached(name: str, root: str, split: str, download: bool) -> tuple[torch.Tensor, torch.Tensor]:
    root_path = Path(root)
    if name in _MNIST_LIKE:
        images, labels = _load_mnist_like(name, root_path, split, download)
    elif name in ("cifar10", "cifar100", "svhn"):
        images, labels = _load_torchvision_natural(name, root_path, split, download)
    else:
        images, labels = _load_fake(name, split)
    return images.contiguous(), labels.to(torch.int64).contiguous()


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 images in [0, 255] -> float32 in [-1, 1] (the project's convention; SGLD
    noise and clamping assume this range). Float input is assumed to be in [0, 1]."""
    if images.dtype == torch.uint8:
        return images.to(torch.float32).div(127.5).sub(1.0)
    if images.is_floating_point():
        return images.mul(2.0).sub(1.0)
    raise TypeError(f"to_float expects uint8 or float images, got {images.dtype}")


# --------------------------------------------------------------------------- MNIST-like


def _load_mnist_like(name: str, root: Path, split: str, download: bool) -> tuple[torch.Tensor, torch.Tensor]:
    from torchvision.datasets import MNIST, FashionMNIST  # lazy: torchvision is slow to import

    folder = _MNIST_LIKE[name][0]
    cls = MNIST if name == "mnist" else FashionMNIST
    raw = root / folder / "raw"
    pretty = "MNIST" if name == "mnist" else "Fashion-MNIST"

    # 1. Every .gz that is present must have torchvision's MD5, even when decompressed
    #    files exist (a corrupted download must never pass silently).
    from torchvision.datasets.utils import check_integrity

    for gz_name, md5 in cls.resources:
        gz = raw / gz_name
        if gz.is_file() and not check_integrity(str(gz), md5):
            raise DataError(
                f"{pretty} file is corrupted (MD5 mismatch, expected {md5}): delete it and "
                "re-copy/re-download it; or point --data-root / NESY_GEDI_DATA at a folder "
                f"containing {folder}/raw/*.gz",
                path=str(gz),
            )

    decompressed = [raw / Path(gz_name).stem for gz_name, _ in cls.resources]
    missing = [
        raw / gz_name
        for (gz_name, _), plain in zip(cls.resources, decompressed)
        if not plain.is_file() and not (raw / gz_name).is_file()
    ]
    needs_extraction = not all(p.is_file() for p in decompressed)

    def missing_error(reason: str) -> DataError:
        names = ", ".join(p.name for p in missing)
        return DataError(
            f"{pretty} not found under data root {root}: missing {names} in {raw} ({reason}); "
            + _fix_root(f"<root>/{folder}/raw/*.gz"),
        )

    # 2. Without a download, missing files are an error right away.
    if missing and not download:
        raise missing_error("download disabled")
    if needs_extraction and not _is_writable(raw):
        if missing:
            raise missing_error(f"and {_nearest_existing(raw)} is not writable")
        raise _not_writable_error(pretty, root, raw)

    # 3. torchvision: finds the .gz with the right MD5 (no network), decompresses them.
    try:
        with contextlib.redirect_stdout(sys.stderr):  # keep stdout clean for the CLI
            dataset = cls(str(root), train=(split == "train"), download=download)
    except OSError as exc:
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS) and not missing:
            raise _not_writable_error(pretty, root, raw) from None
        if missing:
            raise missing_error(f"download failed: {_first_line(exc)}") from None
        raise _unreadable_error(pretty, split, decompressed, exc) from None
    except Exception as exc:  # noqa: BLE001 - a torchvision traceback must never escape
        if missing:
            raise missing_error(f"download failed: {_first_line(exc)}") from None
        raise _unreadable_error(pretty, split, decompressed, exc) from None

    images, labels = dataset.data, dataset.targets
    expected = 60000 if split == "train" else 10000
    prefix = "train" if split == "train" else "t10k"
    bad = [str(p) for p in decompressed if p.name.startswith(prefix)]
    if (
        not isinstance(images, torch.Tensor)
        or not isinstance(labels, torch.Tensor)
        or tuple(images.shape) != (expected, 28, 28)
        or images.dtype != torch.uint8
        or tuple(labels.shape) != (expected,)
        or (labels.numel() and (int(labels.min()) < 0 or int(labels.max()) > 9))
    ):
        shape = tuple(getattr(images, "shape", ())), tuple(getattr(labels, "shape", ()))
        raise DataError(
            f"{pretty} {split} files have the wrong size or content (images {shape[0]}, labels "
            f"{shape[1]}; expected ({expected}, 28, 28) and ({expected},) with labels 0..9): "
            + " and ".join(bad)
            + "; delete them and they will be decompressed again from the .gz files",
        )
    return images.unsqueeze(1), labels


# --------------------------------------------------------------------------- CIFAR / SVHN


_NATURAL_LAYOUT = {
    "cifar10": ("CIFAR-10", "cifar-10-batches-py/ (or cifar-10-python.tar.gz)"),
    "cifar100": ("CIFAR-100", "cifar-100-python/ (or cifar-100-python.tar.gz)"),
    "svhn": ("SVHN", "{split}_32x32.mat"),
}


def _load_torchvision_natural(
    name: str, root: Path, split: str, download: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    import numpy as np
    from torchvision import datasets

    pretty, layout = _NATURAL_LAYOUT[name]
    layout = layout.format(split=split)
    if download and not _is_writable(root):
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
            f"{pretty} ({split}) could not be loaded from data root {root}: {_first_line(exc)} "
            f"({how}); expected {root / layout} with torchvision's checksums. Delete corrupted "
            "files so they are fetched again, or " + _fix_root(f"<root>/{layout}"),
        ) from None
    if images.ndim != 4 or images.dtype != torch.uint8 or images.shape[0] != labels.shape[0]:
        raise DataError(
            f"{pretty} ({split}) under {root} has unexpected content (images "
            f"{tuple(images.shape)} {images.dtype}, labels {tuple(labels.shape)}); delete it "
            "and download it again",
        )
    return images, labels


# --------------------------------------------------------------------------- FakeData


def _parse_fake(name: str) -> tuple[tuple[int, int, int], int, int]:
    shape, classes, size = _FAKE_DEFAULT
    parts = name.split(":")
    try:
        if len(parts) > 4:
            raise ValueError
        if len(parts) >= 2 and parts[1]:
            dims = tuple(int(d) for d in parts[1].split("x"))
            if len(dims) != 3:
                raise ValueError
            shape = dims  # type: ignore[assignment]
        if len(parts) >= 3 and parts[2]:
            classes = int(parts[2])
        if len(parts) >= 4 and parts[3]:
            size = int(parts[3])
        if min(*shape, classes, size) < 1 or shape[0] not in (1, 3):
            raise ValueError
    except ValueError:
        raise DataError(
            f"bad fake data set name '{name}': use fake or fake:CxHxW[:classes[:samples]] "
            "with C in {1, 3}, e.g. fake:1x28x28:10:128"
        ) from None
    return shape, classes, size


def _load_fake(name: str, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    from torchvision.datasets import FakeData
    from torchvision.transforms import PILToTensor

    shape, classes, size = _parse_fake(name)
    offset = 0 if split == "train" else _FAKE_TEST_OFFSET
    ds = FakeData(size=size, image_size=shape, num_classes=classes, transform=PILToTensor(), random_offset=offset)
    items = [ds[i] for i in range(size)]  # FakeData seeds per index and restores the global RNG
    images = torch.stack([img for img, _ in items])
    labels = torch.tensor([label for _, label in items], dtype=torch.int64)
    return images, labels


# --------------------------------------------------------------------------- helpers


def _not_writable_error(pretty: str, root: Path, raw: Path) -> DataError:
    return DataError(
        f"{pretty} needs its .gz files decompressed next to themselves, but the folder is not "
        f"writable: copy the data root {root} to a writable folder "
        "(cp -r SRC DST && chmod -R u+w DST) and point --data-root / NESY_GEDI_DATA at it",
        path=str(raw),
    )


def _unreadable_error(pretty: str, split: str, decompressed: list[Path], exc: BaseException) -> DataError:
    prefix = "train" if split == "train" else "t10k"
    bad = [str(p) for p in decompressed if p.name.startswith(prefix)]
    return DataError(
        f"{pretty} {split} files could not be read ({_first_line(exc)}): "
        + " and ".join(bad)
        + "; they may be truncated or corrupt: delete them and they will be decompressed "
        "again from the .gz files",
    )


def _nearest_existing(path: Path) -> Path:
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _is_writable(path: Path) -> bool:
    """Whether files can be created in `path` (or, if it does not exist yet, where it
    would be created). A folder without any write bit counts as read-only even for root:
    a deliberately write-protected data folder (like the shared read-only copy) must not
    be written into just because the process happens to run as root."""
    target = _nearest_existing(path)
    if not target.is_dir():
        return False
    try:
        mode = target.stat().st_mode
    except OSError:
        return False
    if not mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH):
        return False
    return os.access(target, os.W_OK | os.X_OK)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= 200 else text[:197] + "..."


def _first_line(exc: BaseException) -> str:
    """A short, single-line description of a (torchvision) exception."""
    text = str(exc).strip()
    # torchvision's download errors end with the reason of the last mirror; keep the gist.
    reasons = re.findall(r"got:\s*(.+)", text)
    if reasons:
        text = reasons[-1]
    text = " ".join(text.split()) or type(exc).__name__
    if len(text) > 200:
        text = text[:197] + "..."
    return f"{type(exc).__name__}: {text}"
