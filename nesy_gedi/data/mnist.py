"""MNIST and Fashion-MNIST from torchvision's raw files, checked before they are read.

Every `.gz` that is present must have torchvision's MD5. torchvision publishes MD5s of the
`.gz` files only and trusts any decompressed file that exists. A decompressed file is a
pure function of its `.gz`, so this module keeps the SHA-256 (and size) of each
decompressed MNIST / Fashion-MNIST file as a constant (`_DECOMPRESSED`, computed from the
MD5-verified `.gz` files) and checks the two files of a split before reading them (about
0.15 s for the 47 MB training images, once per process since results are cached). Why
constants rather than a sidecar hash written when decompressing: they need no writable
folder, they also cover files decompressed by torchvision or copied without their `.gz`,
and a sidecar written next to an already-corrupted file would bless it. A file that fails
the check is decompressed again from its `.gz` (whose MD5 was verified first) with a
warning naming the replaced file, when that `.gz` is there and the folder is writable;
otherwise loading stops with a `DataError` naming the bad file.
"""
from __future__ import annotations

import contextlib
import errno
import gzip
import os
import shutil
import sys
import tempfile
import warnings
from pathlib import Path

import torch

from nesy_gedi.errors import DataError

from .files import file_sha256, first_line, fix_root, is_writable, nearest_existing, one_line

# name -> (torchvision class name, folder under root, valid splits)
MNIST_LIKE = {
    "mnist": ("MNIST", ("train", "test")),
    "fashion_mnist": ("FashionMNIST", ("train", "test")),
}

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


def load_mnist_like(name: str, root: Path, split: str, download: bool) -> tuple[torch.Tensor, torch.Tensor]:
    from torchvision.datasets import MNIST, FashionMNIST  # lazy: torchvision is slow to import

    folder = MNIST_LIKE[name][0]
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
            + fix_root(f"<root>/{folder}/raw/*.gz"),
        )

    # 2. Without a download, missing files are an error right away.
    if missing and not download:
        raise missing_error("download disabled")
    if needs_extraction and not is_writable(raw):
        if missing:
            raise missing_error(f"and {nearest_existing(raw)} is not writable")
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
            raise missing_error(f"download failed: {first_line(exc)}") from None
        raise _unreadable_error(pretty, split, decompressed, exc) from None
    except Exception as exc:  # noqa: BLE001 - a torchvision traceback must never escape
        if missing:
            raise missing_error(f"download failed: {first_line(exc)}") from None
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
        return f"cannot be read ({one_line(exc)})"
    return None


def _verify_decompressed(name: str, pretty: str, plain: Path) -> None:
    """Check one decompressed file; decompress it again from its verified .gz (with a
    warning) when it is bad, or raise a DataError naming it when that is impossible."""
    problem = _decompressed_problem(name, plain)
    if problem is None:
        return
    gz = plain.with_name(plain.name + ".gz")  # its MD5 was checked before
    if gz.is_file() and is_writable(plain.parent):
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
                f"({one_line(exc)}): delete it and copy the data again",
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
        f"{pretty} {split} files could not be read ({first_line(exc)}): "
        + " and ".join(bad)
        + "; they may be truncated or corrupt: delete them and they will be decompressed "
        "again from the .gz files",
    )
