"""Own images as an .npz archive (`load_images("arrays", root, split, path=FILE.npz)`).

The archive (never pickles) holds `images` (uint8 `[N, H, W]` gray, `[N, C, H, W]` or
`[N, H, W, C]` with C in {1, 3}) and `labels` (integers >= 0, `[N]`); optionally
`test_images` / `test_labels` (same layout and image size) and `class_names` (strings, one
per class). Without `test_images` the test split is a held-out part (see
`nesy_gedi.data.images`).
"""
from __future__ import annotations

from pathlib import Path

import torch

from nesy_gedi.errors import DataError

from .files import one_line

_NPZ_KEYS = ("images", "labels", "test_images", "test_labels", "class_names")


def _open_npz(target: Path):
    import zipfile

    import numpy as np

    try:
        archive = np.load(target, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"cannot read the .npz file ({type(exc).__name__}: {one_line(exc)}); save it with "
                        "numpy.savez(FILE, images=..., labels=...)", path=str(target)) from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise DataError("expected an .npz archive (numpy.savez(FILE, images=..., labels=...)), got a single array",
                        path=str(target))
    return archive


def _npz_array(archive, key: str, target: Path):
    try:
        return archive[key]
    except Exception as exc:  # noqa: BLE001 - object arrays, corrupt members, ...
        raise DataError(f"cannot read array '{key}' ({type(exc).__name__}: {one_line(exc)}); arrays must be "
                        "plain numbers or strings (no pickled objects)", path=str(target)) from None


def npz_class_names(target: Path) -> list[str]:
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


def read_arrays(target: Path) -> dict:
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
    names = npz_class_names(target)
    if names:
        top = max(int(labels.max()) for _, labels in result.values())
        if top >= len(names):
            raise DataError(f"labels go up to {top} but class_names has only {len(names)} names", path=str(target))
    return result
