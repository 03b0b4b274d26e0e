"""Data sets (uint8 image tensors, one-line `DataError`s) and batched augmentations."""
from nesy_gedi.data.augment import (
    build_augment,
    digit_augment,
    natural_image_augment,
    point_augment,
)
from nesy_gedi.data.files import resolve_data_root
from nesy_gedi.data.images import class_names, clear_image_cache, load_images, to_float

__all__ = [
    "build_augment",
    "class_names",
    "clear_image_cache",
    "digit_augment",
    "load_images",
    "natural_image_augment",
    "point_augment",
    "resolve_data_root",
    "to_float",
]
