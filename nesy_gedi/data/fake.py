"""torchvision's FakeData, deterministic: "fake" or "fake:CxHxW[:classes[:samples]]"."""
from __future__ import annotations

import torch

from nesy_gedi.errors import DataError

# FakeData defaults: "fake" == "fake:3x32x32:10:64".
_FAKE_DEFAULT = ((3, 32, 32), 10, 64)
_FAKE_TEST_OFFSET = 1_000_000  # test images use other seeds than train images


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


def load_fake(name: str, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    from torchvision.datasets import FakeData
    from torchvision.transforms import PILToTensor

    shape, classes, size = _parse_fake(name)
    offset = 0 if split == "train" else _FAKE_TEST_OFFSET
    ds = FakeData(size=size, image_size=shape, num_classes=classes, transform=PILToTensor(), random_offset=offset)
    items = [ds[i] for i in range(size)]  # FakeData seeds per index and restores the global RNG
    images = torch.stack([img for img, _ in items])
    labels = torch.tensor([label for _, label in items], dtype=torch.int64)
    return images, labels
