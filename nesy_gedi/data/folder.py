"""Own images in torchvision's ImageFolder layout (`load_images("folder", root, split, path=DIR)`).

One sub-folder per class (sorted names are the classes 0, 1, ...; hidden folders are
skipped), image files with torchvision's extensions (.png, .jpg, ...) anywhere below
them. If DIR has a `train` sub-folder, it is the training part and `DIR/test` (same class
folder names, any subset) the test part; without `DIR/test`, or without a `train`
sub-folder at all, the test split is a held-out part (see `nesy_gedi.data.images`). Images
that are all grayscale give C = 1, otherwise every image is converted to RGB (C = 3; alpha
dropped; 16-bit grayscale is scaled to 8 bits). All images must have the same size.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

from nesy_gedi.errors import DataError

from .files import one_line

_GRAY_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F")


def _class_dirs(folder: Path) -> list[str]:
    try:
        return sorted(entry.name for entry in os.scandir(folder) if entry.is_dir() and not entry.name.startswith("."))
    except OSError as exc:
        raise DataError(f"cannot list the image folder: {one_line(exc)}", path=str(folder)) from None


def folder_classes(target: Path) -> tuple[list[str], Path, Path | None]:
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
        raise DataError(f"cannot read the image ({type(exc).__name__}: {one_line(exc)}); "
                        "delete or replace it", path=str(file)) from None
    return array


def read_folder(target: Path) -> dict:
    import numpy as np

    classes, train_dir, test_dir = folder_classes(target)
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
