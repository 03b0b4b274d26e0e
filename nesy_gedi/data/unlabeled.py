"""Unlabeled training inputs for self-supervised pretraining, with labelled held-out splits
(validation carved from the training images, test) and an optional OOD set."""
from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from ..config.schema import TaskConfig
from ..errors import ConfigError, DataError
from .files import resolve_data_root
from .images import class_names, load_images
from .toy import TOY_DATASETS, make_toy


@dataclass
class PretrainData:
    """Images are uint8 [N, C, H, W] (converted to [-1, 1] per batch); toy points float [N, 2].

    `val` holds the last data.val_examples training inputs (never trained on) and `val_ood`
    as many *training* inputs of the OOD set, so settings can be chosen without the test split.
    """

    train: Tensor
    test: Tensor
    test_labels: Tensor
    sample_shape: tuple[int, ...]
    num_classes: int
    toy: bool
    val: Tensor | None = None
    val_labels: Tensor | None = None
    ood: Tensor | None = None          # data.ood_dataset's first len(test) test inputs
    ood_labels: Tensor | None = None
    ood_class_names: list[str] | None = None
    val_ood: Tensor | None = None


def _source(config: TaskConfig, name: str, data_root: str | None, split: str) -> tuple[Tensor, Tensor]:
    root = "." if name.startswith("fake") else resolve_data_root(data_root or config.data.root)
    if name in ("folder", "arrays"):
        return load_images(name, root, split, path=config.data.path)
    return load_images(name, root, split)


def load_pretrain_data(config: TaskConfig, data_root: str | None = None) -> PretrainData:
    """The training inputs (labels dropped), validation and test splits of `config.data.dataset`.

    data.val_examples holds out the last V training inputs; data.train_examples then keeps
    the first N of the rest; data.test_examples the first N test inputs. Toy sets draw
    2 * data.toy_samples points (seeded by train.seed) and split them in halves.
    """
    name = config.data.dataset.strip().lower()
    if name in TOY_DATASETS:
        points, labels = make_toy(name, 2 * config.data.toy_samples, config.data.toy_noise, config.train.seed)
        half = config.data.toy_samples
        train, train_labels, test, test_labels = points[:half], labels[:half], points[half:], labels[half:]
    else:
        train, train_labels = _source(config, name, data_root, "train")
        test, test_labels = _source(config, name, data_root, "test")
    val = val_labels = None
    if config.data.val_examples is not None:
        count = config.data.val_examples
        if count >= len(train):
            raise ConfigError(f"data.val_examples: {count} would leave no training input (the training split has "
                              f"{len(train)})", config.source)
        train, val, val_labels = train[:-count], train[-count:], train_labels[-count:]
    if config.data.train_examples is not None:
        train = train[: config.data.train_examples]
    if config.data.test_examples is not None:
        test, test_labels = test[: config.data.test_examples], test_labels[: config.data.test_examples]
    num_classes = int(test_labels.max()) + 1 if len(test_labels) else 1
    shape = tuple(train.shape[1:])
    data = PretrainData(train, test, test_labels, shape, num_classes, name in TOY_DATASETS, val, val_labels)
    if config.data.ood_dataset:
        ood_name = config.data.ood_dataset.strip().lower()
        images, labels = _source(config, ood_name, data_root, "test")
        if tuple(images.shape[1:]) != shape:
            raise DataError(f"data.ood_dataset {ood_name!r} has inputs of shape {tuple(images.shape[1:])}, but "
                            f"{config.data.dataset!r} has {shape}: OOD inputs must have the same shape")
        data.ood, data.ood_labels = images[:len(test)], labels[:len(test)]
        classes = int(data.ood_labels.max()) + 1 if len(data.ood_labels) else 0
        data.ood_class_names = class_names(ood_name, classes)
        if val is not None:
            data.val_ood = _source(config, ood_name, data_root, "train")[0][:len(val)]
    return data
