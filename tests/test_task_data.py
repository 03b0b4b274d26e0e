"""Task data: concept values <-> data classes, the validation split, observed concept labels."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from nesy_gedi.circuit import KnowledgeCircuit
from nesy_gedi.compiler import compile_file
from nesy_gedi.config import config_from_dict
from nesy_gedi.data.images import load_images
from nesy_gedi.data.tasks import build_task_data
from nesy_gedi.errors import ConfigError, DataError

torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parents[1]
FASHION = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


def _sum_logic(tmp_path: Path, low: int, high: int, name: str = "sum.logic") -> Path:
    file = tmp_path / name
    file.write_text(f"concept a : {low}..{high}\nconcept b : {low}..{high}\nlabel s : {2 * low}..{2 * high}\n"
                    "constraint a + b == s\n")
    return file


def _task(tmp_path: Path, logic: Path | str, data: dict, train: dict | None = None, params: dict | None = None):
    source = str(tmp_path / "task.yaml")
    config = config_from_dict({"name": "t", "logic": {"file": str(logic), "params": params or {}},
                               "data": data, "train": {"progress": False, **(train or {})}}, source)
    circuit = KnowledgeCircuit(compile_file(config.logic.file, config.logic.params, vtree_type=config.logic.vtree),
                               compile_module=False)
    return config, circuit


def _build(config, circuit, root="."):
    return build_task_data(config, circuit, root)


def _pairs_are_right(split, data_labels: torch.Tensor, value_of_class: dict) -> None:
    """Brute force: every image's concept is its class's value; the label is the sum."""
    flat = split.indices.flatten()
    assert len(torch.unique(flat)) == len(flat)  # each image used once
    classes = data_labels[split.indices]
    expected = torch.tensor([[value_of_class[int(c)] for c in row] for row in classes.tolist()])
    assert torch.equal(split.concepts, expected)
    assert torch.equal(split.labels[:, 0], split.concepts.sum(dim=1))


# --------------------------------------------------------------------------- concept values <-> classes


@pytest.mark.mnist
def test_domain_0_to_4_on_mnist_uses_only_those_digits(tmp_path, mnist_root):
    config, circuit = _task(tmp_path, _sum_logic(tmp_path, 0, 4),
                            {"dataset": "mnist", "train_examples": 400, "test_examples": 200})
    splits = _build(config, circuit, mnist_root)
    assert list(splits) == ["train", "test"]
    for name, size in (("train", 400), ("test", 200)):
        split = splits[name]
        labels = load_images("mnist", mnist_root, name)[1]
        assert len(split) == size
        assert int(labels[split.indices].max()) <= 4
        _pairs_are_right(split, labels, {v: v for v in range(5)})
        assert set(split.concepts.flatten().tolist()) == set(range(5))
        assert split.observed is None  # no concept supervision asked for


@pytest.mark.mnist
def test_domain_5_to_9_means_classes_5_to_9(tmp_path, mnist_root):
    config, circuit = _task(tmp_path, _sum_logic(tmp_path, 5, 9),
                            {"dataset": "mnist", "train_examples": 200, "test_examples": 50})
    train = _build(config, circuit, mnist_root)["train"]
    _pairs_are_right(train, load_images("mnist", mnist_root, "train")[1], {v: v for v in range(5, 10)})


@pytest.mark.mnist
def test_concept_value_without_images_is_an_error_naming_the_task(tmp_path, mnist_root):
    config, circuit = _task(tmp_path, _sum_logic(tmp_path, 0, 10), {"dataset": "mnist", "train_examples": 10})
    with pytest.raises(DataError) as info:
        _build(config, circuit, mnist_root)
    message = str(info.value)
    assert message.startswith(config.source) and "concept value 10" in message and "data.classes" in message


@pytest.mark.mnist
def test_data_classes_by_fashion_mnist_name(tmp_path, mnist_root):
    if not (mnist_root / "FashionMNIST" / "raw").is_dir():
        pytest.skip("no FashionMNIST/raw in the data root")
    garments = ["Trouser", "bag", 7]  # a name, a name in another case, an index (Sneaker)
    config, circuit = _task(tmp_path, _sum_logic(tmp_path, 0, 2),
                            {"dataset": "fashion_mnist", "classes": garments, "train_examples": 300,
                             "test_examples": 100})
    splits = _build(config, circuit, mnist_root)
    value_of_class = {FASHION.index("Trouser"): 0, FASHION.index("Bag"): 1, FASHION.index("Sneaker"): 2}
    for name in ("train", "test"):
        labels = load_images("fashion_mnist", mnist_root, name)[1]
        assert set(labels[splits[name].indices].flatten().tolist()) == set(value_of_class)
        _pairs_are_right(splits[name], labels, value_of_class)


@pytest.mark.parametrize(
    "classes, key, expected",
    [
        (["Trouser", "Jacket", "Bag"], "data.classes[1]", "'Jacket' is not a class name"),
        (["Trouser", "Bag"], "data.classes", "lists 2 data classes but concept a has 3 values"),
        ([1, 10, 2], "data.classes[1]", "class 10 is not a class"),
        (["Trouser", 1, 2], "data.classes[1]", "is already the class of concept value 0 (data.classes[0])"),
        (["Trouser", True, 2], "data.classes[1]", "expected a class index"),  # (config.py may refuse it first)
    ],
)
def test_bad_data_classes_name_the_task_and_key(tmp_path, classes, key, expected):
    # arrays with Fashion-MNIST's class names, so no real data is needed
    file = tmp_path / "garments.npz"
    np.savez(file, images=np.zeros((20, 4, 4), np.uint8), labels=np.arange(20) % 10, class_names=np.array(FASHION))
    with pytest.raises(ConfigError) as info:
        config, circuit = _task(tmp_path, _sum_logic(tmp_path, 0, 2),
                                {"dataset": "arrays", "path": str(file), "classes": classes})
        _build(config, circuit)
    message = str(info.value)
    assert message.startswith(f"{tmp_path / 'task.yaml'}: {key}:") and expected in message


def test_own_folder_task_with_class_names_and_relative_path(tmp_path):
    from PIL import Image

    for c, name in enumerate(["apple", "pear", "plum", "unused"]):
        (tmp_path / "fruit" / name).mkdir(parents=True)
        for k in range(12):
            Image.fromarray(np.full((4, 4), c * 60 + k, np.uint8)).save(tmp_path / "fruit" / name / f"{k}.png")
    # data.path relative to the task file's folder; concept values 0, 1, 2 = plum, apple, pear
    config, circuit = _task(tmp_path, _sum_logic(tmp_path, 0, 2),
                            {"dataset": "folder", "path": "fruit", "classes": ["plum", "apple", 1]})
    splits = _build(config, circuit)
    value_of_class = {2: 0, 0: 1, 1: 2}
    for name in ("train", "test"):
        labels = load_images("folder", ".", name, path=tmp_path / "fruit")[1]
        assert 3 not in labels[splits[name].indices].flatten().tolist()  # "unused" is left out
        _pairs_are_right(splits[name], labels, value_of_class)
    assert len(splits["train"]) == (3 * 10) // 2 and len(splits["test"]) == (3 * 2) // 2


# --------------------------------------------------------------------------- validation split


@pytest.mark.mnist
def test_val_split_is_held_out_of_training_images_and_seeded(tmp_path, mnist_root):
    data = {"dataset": "mnist", "train_examples": 500, "test_examples": 100}
    config, circuit = _task(tmp_path, ROOT / "logic" / "addition.logic", {**data, "val_examples": 300},
                            params={"N": 1})
    splits = _build(config, circuit, mnist_root)
    assert list(splits) == ["train", "val", "test"]
    train, val, test = splits["train"], splits["val"], splits["test"]
    assert len(val) == 300 and val.observed is None
    assert val.images is train.images and test.images is not train.images  # val: training images
    train_labels = load_images("mnist", mnist_root, "train")[1]
    assert not set(val.indices.flatten().tolist()) & set(train.indices.flatten().tolist())
    assert len(torch.unique(val.indices)) == val.indices.numel()
    concepts = train_labels[val.indices]
    assert torch.equal(val.concepts, concepts)
    assert torch.equal(val.labels[:, 0] * 10 + val.labels[:, 1], concepts.sum(dim=1))
    again = _build(config, circuit, mnist_root)
    assert torch.equal(again["val"].indices, val.indices) and torch.equal(again["train"].indices, train.indices)
    other, _ = _task(tmp_path, ROOT / "logic" / "addition.logic", {**data, "val_examples": 300},
                     train={"seed": 1}, params={"N": 1})
    assert not torch.equal(_build(other, circuit, mnist_root)["val"].indices, val.indices)
    # the test split does not depend on the validation split
    plain, _ = _task(tmp_path, ROOT / "logic" / "addition.logic", data, params={"N": 1})
    assert torch.equal(_build(plain, circuit, mnist_root)["test"].indices, test.indices)


@pytest.mark.mnist
def test_without_val_the_protocol_is_unchanged(tmp_path, mnist_root):
    # DeepProbLog's protocol as it always was: a randperm by train.seed cut into pairs.
    config, circuit = _task(tmp_path, ROOT / "logic" / "addition.logic",
                            {"dataset": "mnist", "train_examples": 300, "test_examples": 100},
                            train={"seed": 3}, params={"N": 1})
    splits = _build(config, circuit, mnist_root)
    generator = torch.Generator().manual_seed(3)
    train_order = torch.randperm(60000, generator=generator)[:600].view(300, 2)
    test_order = torch.randperm(10000, generator=generator)[:200].view(100, 2)
    assert torch.equal(splits["train"].indices, train_order) and torch.equal(splits["test"].indices, test_order)


@pytest.mark.mnist
def test_val_split_has_the_restricted_training_support(tmp_path, mnist_root):
    data = {"dataset": "mnist", "train_examples": 300, "test_examples": 100,
            "train_support": {"constraint": "(a[0] + b[0]) % 4 == 0"}}
    config, circuit = _task(tmp_path, ROOT / "logic" / "addition.logic", {**data, "val_examples": 200},
                            params={"N": 1})
    splits = _build(config, circuit, mnist_root)
    plain, _ = _task(tmp_path, ROOT / "logic" / "addition.logic", data, params={"N": 1})
    without_val = _build(plain, circuit, mnist_root)
    for name in ("test", "test_ood"):
        assert torch.equal(splits[name].indices, without_val[name].indices)
    assert list(splits) == ["train", "val", "test", "test_ood"]
    train, val = splits["train"], splits["val"]
    assert len(val) == 200
    for split in (train, val, splits["test"]):
        assert bool(((split.concepts.sum(dim=1) % 4) == 0).all())
    assert bool(((splits["test_ood"].concepts.sum(dim=1) % 4) != 0).all())
    assert not set(val.indices.flatten().tolist()) & set(train.indices.flatten().tolist())
    assert len(set(map(tuple, val.concepts.tolist()))) > 5  # drawn over the support, not one tuple


def test_val_examples_beyond_the_images_is_an_error(tmp_path):
    file = tmp_path / "tiny.npz"
    np.savez(file, images=np.zeros((30, 4, 4), np.uint8), labels=np.arange(30) % 3)
    config, circuit = _task(tmp_path, _sum_logic(tmp_path, 0, 2),
                            {"dataset": "arrays", "path": str(file), "val_examples": 50})
    with pytest.raises(ConfigError, match=r"task\.yaml: data\.val_examples: asked for 50 examples"):
        _build(config, circuit)


# --------------------------------------------------------------------------- observed concepts


def _per_value_counts(split, mask):
    return torch.bincount(split.concepts[mask], minlength=10).tolist()


@pytest.mark.mnist
def test_k_concept_labels_per_value(tmp_path, mnist_root):
    def build(seed, k=3, fraction=0.0):
        config, circuit = _task(tmp_path, ROOT / "logic" / "addition.logic",
                                {"dataset": "mnist", "train_examples": 200, "test_examples": 50},
                                train={"seed": seed, "concept_labels": k, "concept_supervision": fraction},
                                params={"N": 1})
        return _build(config, circuit, mnist_root)

    splits = build(0)
    train = splits["train"]
    assert train.observed.dtype == torch.bool and train.observed.shape == train.indices.shape == (200, 2)
    assert _per_value_counts(train, train.observed) == [3] * 10
    assert splits["test"].observed is None
    assert torch.equal(build(0)["train"].observed, train.observed)  # fixed by the seed
    other = build(1)["train"]
    assert _per_value_counts(other, other.observed) == [3] * 10
    assert not torch.equal(other.indices[other.observed], train.indices[train.observed])

    # or'ed with train.concept_supervision: whole rows chosen exactly as train.py always did
    mixed = build(0, fraction=0.1)["train"]
    rows = torch.zeros(200, dtype=torch.bool)
    rows[torch.randperm(200, generator=torch.Generator().manual_seed(0 + 17))[:20]] = True
    assert torch.equal(mixed.observed, train.observed | rows[:, None])
    only_rows = build(0, k=None, fraction=0.1)["train"]
    assert torch.equal(only_rows.observed, rows[:, None].expand(200, 2))


@pytest.mark.mnist
def test_too_few_images_for_k_labels_is_an_error(tmp_path, mnist_root):
    config, circuit = _task(tmp_path, ROOT / "logic" / "addition.logic",
                            {"dataset": "mnist", "train_examples": 20, "test_examples": 10},
                            train={"concept_labels": 8}, params={"N": 1})
    with pytest.raises(DataError) as info:
        _build(config, circuit, mnist_root)
    message = str(info.value)
    assert message.startswith(f"{config.source}: train.concept_labels: 8 labelled images")
