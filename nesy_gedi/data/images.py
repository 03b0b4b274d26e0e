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

Decompressed MNIST-like files
-----------------------------
torchvision publishes MD5s of the `.gz` files only and trusts any decompressed file that
exists. A decompressed file is a pure function of its `.gz`, so this module keeps the
SHA-256 (and size) of each decompressed MNIST / Fashion-MNIST file as a constant
(`_DECOMPRESSED`, computed from the MD5-verified `.gz` files) and checks the two files of
a split before reading them (about 0.15 s for the 47 MB training images, once per process
since results are cached). Why constants rather than a sidecar hash written when
decompressing: they need no writable folder, they also cover files decompressed by
torchvision or copied without their `.gz`, and a sidecar written next to an
already-corrupted file would bless it. A file that fails the check is decompressed again
from its `.gz` (whose MD5 was verified first) with a warning naming the replaced file,
when that `.gz` is there and the folder is writable; otherwise loading stops with a
`DataError` naming the bad file.

Own images
----------
`load_images("folder", root, split, path=DIR)` reads torchvision's ImageFolder layout:
one sub-folder per class (sorted names are the classes 0, 1, ...; hidden folders are
skipped), image files with torchvision's extensions (.png, .jpg, ...) anywhere below
them. If DIR has a `train` sub-folder, it is the training part and `DIR/test` (same class
folder names, any subset) the test part; without `DIR/test`, or without a `train`
sub-folder at all, the test split is a held-out part (see below). Images that are all
grayscale give C = 1, otherwise every image is converted to RGB (C = 3; alpha dropped;
16-bit grayscale is scaled to 8 bits). All images must have the same size.

`load_images("arrays", root, split, path=FILE.npz)` reads an `.npz` archive (never
pickles) with `images` (uint8 `[N, H, W]` gray, `[N, C, H, W]` or `[N, H, W, C]` with C in
{1, 3}) and `labels` (integers >= 0, `[N]`); optionally `test_images` / `test_labels`
(same layout and image size) and `class_names` (strings, one per class). Without
`test_images` the test split is a held-out part.

Held-out part: 1/6 of the images of each class (rounded, at least one of a class with two
or more images), chosen by a fixed seed (`HOLDOUT_SEED` = 0) so it is the same on every
run and machine and never depends on `train.seed`; the rest is the training split. Both
keep the images' order in the source. `root` is not used by these two.
"""
from __future__ import annotations

import contextlib
import errno
import functools
import gzip
import hashlib
import os
import re
import shutil
import stat
import sys
import tempfile
import warnings
from pathlib import Path

import torch

from nesy_gedi.errors import DataError

__all__ = [
    "DATASET_NAMES",
    "resolve_data_root",
    "load_images",
    "clear_image_cache",
    "class_names",
    "resolve_data_path",
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
OWN_DATASETS = ("folder", "arrays")
DATASET_NAMES = ("mnist", "fashion_mnist", "cifar10", "cifar100", "svhn", "fake") + OWN_DATASETS

# SHA-256 and size of each decompressed MNIST-like file (the .gz files' decompressed
# content; torchvision's MD5s cover only the .gz files).
_DECOMPRESSED = {
    "mnist": {
        "train-images-idx3-ubyte": (47040016, "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db"),
        "train-labels-idx1-ubyte": (60008, "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5"),
        "t10k-images-idx3-ubyte": (7840016, "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7"),
        "t10k-labels-idx1-ubyte": (10008, "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2"),
    },
    "fashion_mnist": {
        "train-images-idx3-ubyte": (47040016, "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888"),
        "train-labels-idx1-ubyte": (60008, "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9"),
        "t10k-images-idx3-ubyte": (7840016, "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b"),
        "t10k-labels-idx1-ubyte": (10008, "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34"),
    },
}

_CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")

HOLDOUT_SEED = 0  # the held-out test part of `folder` / `arrays` data without a test part
HOLDOUT_FRACTION = 1 / 6
_NPZ_KEYS = ("images", "labels", "test_images", "test_labels", "class_names")

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


def resolve_data_path(path: str | os.PathLike, source: str | None = None) -> Path:
    """The file or folder named by `data.path`: as given when absolute or found relative to
    the working directory, else relative to the task file `source`'s folder or its parent
    (like logic paths). Returned absolute; existence is checked by `load_images`."""
    candidate = Path(path).expanduser()
    if not candidate.is_absolute() and not candidate.exists() and source:
        for base in (Path(source).parent, Path(source).parent.parent):
            if (base / candidate).exists():
                return (base / candidate).absolute()
    return candidate.absolute()


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
        splits = _MNIST_LIKE[base][1] if base in _MNIST_LIKE else _OTHER_SPLITS[base]
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
        known = _folder_classes(target)[0] if key_name == "folder" else _npz_class_names(target)
        if count is None:
            return known
        return [known[k] if k < len(known) else f"class {k}" for k in range(count)]
    if key_name in _MNIST_LIKE:
        from torchvision import datasets  # lazy: torchvision is slow to import
        known = list(getattr(datasets, _MNIST_LIKE[key_name][0]).classes)
    elif key_name == "cifar10":
        known = list(_CIFAR10_CLASSES)
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
        out = images.to(torch.float32)  # a new tensor: the in-place steps never touch the input
        return out.div_(127.5).sub_(1.0)
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

    # 3. The split's decompressed files must be the .gz files' content (size + SHA-256);
    #    when some file is missing, torchvision decompresses every .gz again anyway.
    if not needs_extraction:
        prefix = "train" if split == "train" else "t10k"
        for plain in decompressed:
            if plain.name.startswith(prefix):
                _verify_decompressed(name, pretty, plain)

    # 4. torchvision: finds the .gz with the right MD5 (no network), decompresses them.
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


def file_sha256(path: Path) -> str:
    """The sha256 of a file's bytes, read in blocks (data files, and run files elsewhere)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def _decompressed_problem(name: str, plain: Path) -> str | None:
    """Why `plain` is not the decompressed content of its .gz (None when it is)."""
    size, sha256 = _DECOMPRESSED[name][plain.name]
    try:
        actual = plain.stat().st_size
        if actual != size:
            return f"has the wrong size ({actual} bytes, expected {size})"
        if file_sha256(plain) != sha256:
            return f"is corrupted (SHA-256 mismatch with the content of {plain.name}.gz)"
    except OSError as exc:
        return f"cannot be read ({_one_line(exc)})"
    return None


def _verify_decompressed(name: str, pretty: str, plain: Path) -> None:
    """Check one decompressed file; decompress it again from its verified .gz (with a
    warning) when it is bad, or raise a DataError naming it when that is impossible."""
    problem = _decompressed_problem(name, plain)
    if problem is None:
        return
    gz = plain.with_name(plain.name + ".gz")  # its MD5 was checked before
    if gz.is_file() and _is_writable(plain.parent):
        tmp_name = None
        try:
            with gzip.open(gz, "rb") as src, tempfile.NamedTemporaryFile(
                dir=plain.parent, prefix=f".{plain.name}.", delete=False
            ) as dst:
                tmp_name = dst.name
                shutil.copyfileobj(src, dst, 1 << 22)
            os.replace(tmp_name, plain)
            tmp_name = None
        except OSError as exc:
            raise DataError(
                f"{pretty} file {problem} and could not be decompressed again from {gz} "
                f"({_one_line(exc)}): delete it and copy the data again",
                path=str(plain),
            ) from None
        finally:
            if tmp_name is not None:
                with contextlib.suppress(OSError):
                    os.unlink(tmp_name)
        again = _decompressed_problem(name, plain)
        if again is not None:
            raise DataError(f"{pretty} file {again} even after decompressing {gz} again", path=str(plain))
        warnings.warn(
            f"{plain}: {pretty} file {problem}; replaced it by decompressing {gz.name} again",
            stacklevel=4,
        )
        return
    how = (
        f"the folder is not writable, so it was not decompressed again from {gz.name}: copy the data root "
        "to a writable folder or delete the file"
        if gz.is_file()
        else f"delete it and put {gz.name} (torchvision's, it is checked by MD5) next to it, or copy it again"
    )
    raise DataError(f"{pretty} file {problem}; {how}", path=str(plain))


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


# --------------------------------------------------------------------------- own images

_GRAY_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F")


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
    splits = _read_folder(target) if kind == "folder" else _read_arrays(target)
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


def _class_dirs(folder: Path) -> list[str]:
    try:
        return sorted(entry.name for entry in os.scandir(folder) if entry.is_dir() and not entry.name.startswith("."))
    except OSError as exc:
        raise DataError(f"cannot list the image folder: {_one_line(exc)}", path=str(folder)) from None


def _folder_classes(target: Path) -> tuple[list[str], Path, Path | None]:
    """(class names, training folder, test folder or None) of an image folder."""
    has_train, has_test = (target / "train").is_dir(), (target / "test").is_dir()
    if has_test and not has_train:
        raise DataError("image folder has a test sub-folder but no train sub-folder: use train/ and test/ "
                        "(each with one sub-folder per class) or class sub-folders only", path=str(target))
    train_dir = target / "train" if has_train else target
    classes = _class_dirs(train_dir)
    if not classes:
        raise DataError("image folder is empty: expected one sub-folder of images per class "
                        "(torchvision's ImageFolder layout, e.g. DIR/cat/1.png, DIR/dog/2.png)", path=str(train_dir))
    return classes, train_dir, (target / "test") if has_test else None


def _image_files(folder: Path) -> list[Path]:
    from torchvision.datasets.folder import IMG_EXTENSIONS  # lazy: torchvision is slow to import

    files = []
    for dirpath, dirnames, filenames in sorted(os.walk(folder, followlinks=True)):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        files.extend(Path(dirpath) / f for f in sorted(filenames) if f.lower().endswith(IMG_EXTENSIONS))
    return files


def _read_image(file: Path):
    import numpy as np
    from PIL import Image

    try:
        with Image.open(file) as image:
            image.load()
            mode = image.mode
            if mode.startswith("I;16"):
                array = (np.asarray(image, dtype=np.uint16).astype(np.uint32) // 257).astype(np.uint8)
            elif mode in _GRAY_MODES:
                array = np.asarray(image.convert("L"), dtype=np.uint8)
            else:
                array = np.asarray(image.convert("RGB"), dtype=np.uint8)
    except Exception as exc:  # noqa: BLE001 - PIL raises many kinds for a broken file
        raise DataError(f"cannot read the image ({type(exc).__name__}: {_one_line(exc)}); "
                        "delete or replace it", path=str(file)) from None
    return array


def _read_folder(target: Path) -> dict:
    import numpy as np

    classes, train_dir, test_dir = _folder_classes(target)
    parts = {"train": [(index, train_dir / name) for index, name in enumerate(classes)]}
    if test_dir is not None:
        test_classes = _class_dirs(test_dir)
        unknown = [name for name in test_classes if name not in classes]
        if unknown:
            raise DataError(f"test folder has class folders {unknown} that {train_dir} does not have",
                            path=str(test_dir))
        parts["test"] = [(classes.index(name), test_dir / name) for name in test_classes]
    arrays, first = {}, None
    for split, class_folders in parts.items():
        items, labels = [], []
        for index, folder in class_folders:
            files = _image_files(folder)
            if not files and split == "train":
                raise DataError("class folder has no images (.png, .jpg, .jpeg, .bmp, .ppm, .pgm, .tif, .tiff, "
                                ".webp)", path=str(folder))
            for file in files:
                array = _read_image(file)
                if first is None:
                    first = (file, array.shape[:2])
                elif array.shape[:2] != first[1]:
                    (h, w), (fh, fw) = array.shape[:2], first[1]
                    raise DataError(f"image is {w}x{h} but {first[0]} is {fw}x{fh}: every image of a data set must "
                                    "have the same size (resize them first)", path=str(file))
                items.append(array)
                labels.append(index)
        if not items:
            raise DataError("test folder has no images", path=str(test_dir))
        arrays[split] = (items, labels)
    rgb = any(a.ndim == 3 for items, _ in arrays.values() for a in items)
    result = {}
    for split, (items, labels) in arrays.items():
        if rgb:
            items = [a if a.ndim == 3 else np.repeat(a[:, :, None], 3, axis=2) for a in items]
            images = torch.from_numpy(np.stack(items)).permute(0, 3, 1, 2)
        else:
            images = torch.from_numpy(np.stack(items)).unsqueeze(1)
        result[split] = (images, torch.tensor(labels, dtype=torch.int64))
    return result


def _open_npz(target: Path):
    import zipfile

    import numpy as np

    try:
        archive = np.load(target, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"cannot read the .npz file ({type(exc).__name__}: {_one_line(exc)}); save it with "
                        "numpy.savez(FILE, images=..., labels=...)", path=str(target)) from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise DataError("expected an .npz archive (numpy.savez(FILE, images=..., labels=...)), got a single array",
                        path=str(target))
    return archive


def _npz_array(archive, key: str, target: Path):
    try:
        return archive[key]
    except Exception as exc:  # noqa: BLE001 - object arrays, corrupt members, ...
        raise DataError(f"cannot read array '{key}' ({type(exc).__name__}: {_one_line(exc)}); arrays must be "
                        "plain numbers or strings (no pickled objects)", path=str(target)) from None


def _npz_class_names(target: Path) -> list[str]:
    with _open_npz(target) as archive:
        if "class_names" not in archive.files:
            return []
        names = _npz_array(archive, "class_names", target)
    if names.ndim != 1 or names.dtype.kind not in "US":
        raise DataError(f"array 'class_names' must be a 1-D array of strings, got shape {names.shape} "
                        f"dtype {names.dtype}", path=str(target))
    return [n.decode() if isinstance(n, bytes) else str(n) for n in names.tolist()]


def _npz_images(array, key: str, target: Path) -> torch.Tensor:
    import numpy as np

    if array.dtype != np.uint8:
        raise DataError(f"array '{key}' has dtype {array.dtype}, expected uint8 (pixels 0..255; convert with "
                        "(x * 255).round().astype(numpy.uint8) for floats in [0, 1])", path=str(target))
    if array.ndim == 3:
        array = array[:, None]
    elif array.ndim == 4:
        if array.shape[1] not in (1, 3):
            if array.shape[3] not in (1, 3):
                raise DataError(f"array '{key}' has shape {array.shape}: expected [N, H, W], [N, C, H, W] or "
                                "[N, H, W, C] with C = 1 or 3", path=str(target))
            array = array.transpose(0, 3, 1, 2)
    else:
        raise DataError(f"array '{key}' has rank {array.ndim} (shape {array.shape}): expected [N, H, W], "
                        "[N, C, H, W] or [N, H, W, C] with C = 1 or 3", path=str(target))
    if array.shape[0] == 0:
        raise DataError(f"array '{key}' holds no image", path=str(target))
    return torch.from_numpy(np.ascontiguousarray(array))


def _npz_labels(array, key: str, count: int, images_key: str, target: Path) -> torch.Tensor:
    import numpy as np

    if array.ndim != 1 or array.dtype.kind not in "iu":
        raise DataError(f"array '{key}' must be a 1-D array of integers, got shape {array.shape} dtype "
                        f"{array.dtype}", path=str(target))
    if len(array) != count:
        raise DataError(f"array '{key}' has {len(array)} labels but '{images_key}' has {count} images",
                        path=str(target))
    if len(array) and int(array.min()) < 0:
        raise DataError(f"array '{key}' has negative labels (classes are 0, 1, ...)", path=str(target))
    return torch.from_numpy(array.astype(np.int64))


def _read_arrays(target: Path) -> dict:
    with _open_npz(target) as archive:
        keys = list(archive.files)
        unknown = [k for k in keys if k not in _NPZ_KEYS]
        if unknown:
            raise DataError(f"unknown arrays {unknown} in the .npz file (valid: {', '.join(_NPZ_KEYS)})",
                            path=str(target))
        for needed in ("images", "labels"):
            if needed not in keys:
                raise DataError(f"the .npz file has no array '{needed}' (it needs images and labels)",
                                path=str(target))
        if ("test_images" in keys) != ("test_labels" in keys):
            raise DataError("the .npz file must have both test_images and test_labels, or neither", path=str(target))
        result = {}
        for split, images_key, labels_key in (("train", "images", "labels"), ("test", "test_images", "test_labels")):
            if images_key not in keys:
                continue
            images = _npz_images(_npz_array(archive, images_key, target), images_key, target)
            labels = _npz_labels(_npz_array(archive, labels_key, target), labels_key, len(images), images_key, target)
            result[split] = (images, labels)
    if "test" in result and result["test"][0].shape[1:] != result["train"][0].shape[1:]:
        raise DataError(f"test_images are {tuple(result['test'][0].shape[1:])} (C, H, W) but images are "
                        f"{tuple(result['train'][0].shape[1:])}: both must have the same size", path=str(target))
    names = _npz_class_names(target)
    if names:
        top = max(int(labels.max()) for _, labels in result.values())
        if top >= len(names):
            raise DataError(f"labels go up to {top} but class_names has only {len(names)} names", path=str(target))
    return result


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
