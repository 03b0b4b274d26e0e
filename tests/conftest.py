"""Shared test fixtures.

`mnist_root` (session scope): a WRITABLE data root in torchvision's layout that holds the
real MNIST (and Fashion-MNIST, when the source has it) files, i.e. `<root>/MNIST/raw/*.gz`.
Where it comes from:
  * `$NESY_GEDI_DATA`, used directly when it is set, holds MNIST/raw and is writable;
  * otherwise a copy, made once per session into a pytest temp dir, of `$NESY_GEDI_DATA`
    (when set but read-only) or of `<repo>/../shared/data`;
  * if neither exists the requesting test is skipped with the reason.
Tests that use it should be marked `@pytest.mark.mnist`.
"""
from __future__ import annotations

import os
import shutil
import stat
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

# Let `import nesy_gedi` work from a plain checkout (no `pip install -e .`).
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))


def _has_mnist(root: Path) -> bool:
    return (root / "MNIST" / "raw").is_dir()


def _writable_tree(root: Path) -> bool:
    """Writable for torchvision's extraction. Folders without any write bit count as
    read-only even when running as root, so a protected shared copy is never written to."""
    for folder in (root, root / "MNIST" / "raw", root / "FashionMNIST" / "raw"):
        if not folder.is_dir():
            continue
        if not folder.stat().st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH):
            return False
        if not os.access(folder, os.W_OK | os.X_OK):
            return False
    return True


def _copy_writable(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, copy_function=shutil.copyfile)
    for dirpath, _dirnames, filenames in os.walk(dst):
        os.chmod(dirpath, os.stat(dirpath).st_mode | stat.S_IWUSR | stat.S_IRUSR | stat.S_IXUSR)
        for name in filenames:
            path = os.path.join(dirpath, name)
            os.chmod(path, os.stat(path).st_mode | stat.S_IWUSR | stat.S_IRUSR)
    return dst


@pytest.fixture(scope="session")
def mnist_root(tmp_path_factory) -> Path:
    env = os.environ.get("NESY_GEDI_DATA")
    if env:
        env_root = Path(env).expanduser()
        if _has_mnist(env_root):
            if _writable_tree(env_root):
                return env_root.resolve()
            return _copy_writable(env_root, tmp_path_factory.mktemp("nesy_data") / "data")
    if _has_mnist(SHARED_DATA):
        return _copy_writable(SHARED_DATA, tmp_path_factory.mktemp("nesy_data") / "data")
    where = f"NESY_GEDI_DATA={env!r}" if env else "NESY_GEDI_DATA is unset"
    pytest.skip(f"real MNIST not found: {where} and {SHARED_DATA} has no MNIST/raw")
