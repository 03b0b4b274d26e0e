"""The data root, data paths and file checksums, and the checks and error texts the sources share.

`resolve_data_root` picks the folder that holds the data sets, in this order: the
`--data-root` flag, the `NESY_GEDI_DATA` environment variable, then a per-user cache
(`$XDG_CACHE_HOME/nesy-gedi/data`, else `~/.cache/nesy-gedi/data`).

The layout under the root is torchvision's own (`<root>/MNIST/raw/*.gz`,
`<root>/FashionMNIST/raw/*.gz`, `<root>/cifar-10-batches-py/`, ...), so a folder that
torchvision already filled can be reused as it is. torchvision decompresses the MNIST
`.gz` files next to themselves, so the root must be writable the first time; copy a
read-only folder first.
"""
from __future__ import annotations

import hashlib
import os
import re
import stat
from pathlib import Path

from nesy_gedi.errors import DataError

ENV_VAR = "NESY_GEDI_DATA"


def fix_root(example: str) -> str:
    return (
        f"set --data-root or NESY_GEDI_DATA to a folder in torchvision's layout ({example}), "
        "or connect to the internet so torchvision can download it"
    )


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
            f"cannot create the data root (from {origin}): {one_line(exc)}; "
            "point --data-root or NESY_GEDI_DATA at a writable folder",
            path=str(path),
        ) from None
    return path.resolve()


def file_sha256(path: Path) -> str:
    """The sha256 of a file's bytes, read in blocks (data files, and run files elsewhere)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def nearest_existing(path: Path) -> Path:
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def is_writable(path: Path) -> bool:
    """Whether files can be created in `path` (or, if it does not exist yet, where it
    would be created). A folder without any write bit counts as read-only even for root:
    a deliberately write-protected data folder (like the shared read-only copy) must not
    be written into just because the process happens to run as root."""
    target = nearest_existing(path)
    if not target.is_dir():
        return False
    try:
        mode = target.stat().st_mode
    except OSError:
        return False
    if not mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH):
        return False
    return os.access(target, os.W_OK | os.X_OK)


def one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= 200 else text[:197] + "..."


def first_line(exc: BaseException) -> str:
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
