"""A researcher's own task, trained end to end through the command line: concept domains
over some of a data set's classes, classes named by the data set, and images from an image
folder or an .npz file, for `train` and `pretrain`."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from nesy_gedi import cli
from nesy_gedi.evaluate import load_run

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[1]
QUICK = ["train.epochs=1", "train.progress=false", "train.num_threads=1", "train.batch_size=16"]

SUM_0_TO_4 = """
concept a : 0..4
concept b : 0..4
label   s : 0..8
constraint a + b == s
"""
THREE_GARMENTS = """
concept a : 0..2
concept b : 0..2
label   same : 0..1
constraint same == (if a == b then 1 else 0)
"""


def run_cli(args: list, capsys) -> str:
    code = cli.main(args)
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return captured.out


def overrides(items: list) -> list:
    return [word for item in items for word in ("--set", item)]


def readme_task() -> str:
    """The task file the README shows under "Your own logic and data"."""
    block = re.search(r"```yaml\n(# my_task/garments.yaml.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert block, "the README's own-data example is missing"
    return block.group(1)


@pytest.mark.mnist
def test_a_domain_over_five_digits_trains_on_those_images_with_the_right_labels(mnist_root, tmp_path, capsys,
                                                                                 monkeypatch):
    (tmp_path / "sums.logic").write_text(SUM_0_TO_4)
    (tmp_path / "sums.yaml").write_text(yaml.safe_dump(
        {"name": "sums", "logic": {"file": "sums.logic"}, "data": {"train_examples": 200, "test_examples": 100}}))
    monkeypatch.chdir(tmp_path)
    run_cli(["train", "sums.yaml", "--out", "run", "--data-root", str(mnist_root), *overrides(QUICK)], capsys)
    config, circuit, splits, perception, _ = load_run(tmp_path / "run", data_root=str(mnist_root))
    for split in splits.values():
        assert set(split.concepts.unique().tolist()) <= {0, 1, 2, 3, 4}
        assert torch.equal(split.labels[:, 0], split.concepts.sum(dim=1))
    final = json.loads((tmp_path / "run" / "final.json").read_text())
    assert final["test_examples"] == 100 and final["test_concept_accuracy"] > 0.2  # above chance (0.2)


@pytest.mark.mnist
def test_the_readme_garment_task_maps_concept_values_to_named_classes(mnist_root, tmp_path, capsys, monkeypatch):
    (tmp_path / "my_task").mkdir()
    (tmp_path / "my_task" / "garments.logic").write_text(THREE_GARMENTS)
    (tmp_path / "my_task" / "garments.yaml").write_text(readme_task())
    monkeypatch.chdir(tmp_path)
    run_cli(["train", "my_task/garments.yaml", "--out", "runs/garments", "--data-root", str(mnist_root),
             *overrides(QUICK + ["data.train_examples=300", "data.test_examples=100", "data.val_examples=50"])],
            capsys)
    _, _, splits, _, _ = load_run(tmp_path / "runs" / "garments", data_root=str(mnist_root))
    fashion_labels = {"train": "train", "val": "train", "test": "test"}
    from nesy_gedi.data.images import load_images

    for name, split in splits.items():
        classes = load_images("fashion_mnist", str(mnist_root), fashion_labels[name])[1]
        shown = classes[split.indices]                       # Trouser 1, Dress 3, Sneaker 7
        value = {1: 0, 3: 1, 7: 2}
        assert set(shown.unique().tolist()) <= set(value)
        assert torch.equal(split.concepts, shown.apply_(lambda c: value[c]))
        assert torch.equal(split.labels[:, 0], (split.concepts[:, 0] == split.concepts[:, 1]).long())
    final = json.loads((tmp_path / "runs" / "garments" / "final.json").read_text())
    assert final["val_examples"] == 50


def image_folder(root: Path, mode: str) -> Path:
    """Three classes of 8x8 images whose mean brightness says the class."""
    generator = np.random.default_rng(0)
    for split, count in (("train", 40), ("test", 10)):
        for label, name in enumerate(["dark", "mid", "bright"]):
            folder = root / split / name
            folder.mkdir(parents=True)
            for k in range(count):
                pixels = np.clip(generator.normal(40 + 80 * label, 10, (8, 8)), 0, 255).astype(np.uint8)
                image = Image.fromarray(pixels, "L")
                (image.convert("RGB") if mode == "RGB" else image).save(folder / f"{k}.png")
    return root


@pytest.mark.parametrize("mode", ["L", "RGB"])
def test_an_image_folder_trains_and_pretrains(tmp_path, capsys, mode):
    images = image_folder(tmp_path / "images", mode)
    (tmp_path / "same.logic").write_text(THREE_GARMENTS)
    task = {"name": "brightness", "logic": {"file": str(tmp_path / "same.logic")},
            "data": {"dataset": "folder", "path": str(images)},
            "model": {"backbone": "mlp", "num_clusters": 3, "options": {"hidden": 16}},
            "modes": {"pretrain": {"gedi": {"method": "no-gen", "augment": "none" if mode == "L" else "natural"}}}}
    (tmp_path / "task.yaml").write_text(yaml.safe_dump(task))
    run_cli(["train", str(tmp_path / "task.yaml"), "--out", str(tmp_path / "train"), *overrides(QUICK)], capsys)
    final = json.loads((tmp_path / "train" / "final.json").read_text())
    assert final["test_examples"] == 15  # 30 test images, two per example
    run_cli(["pretrain", str(tmp_path / "task.yaml"), "--out", str(tmp_path / "pretrain"), *overrides(QUICK)],
            capsys)
    pretrained = json.loads((tmp_path / "pretrain" / "final.json").read_text())
    channels = 1 if mode == "L" else 3
    assert pretrained["train_inputs"] == 120 and pretrained["test_inputs"] == 30
    assert json.loads((tmp_path / "pretrain" / "run.json").read_text())["kind"] == "pretrain"
    assert load_run_shape(tmp_path / "train") == (channels, 8, 8)


def load_run_shape(run_dir: Path) -> tuple:
    _, _, splits, _, _ = load_run(run_dir)
    return tuple(splits["train"].images.shape[1:])


def test_arrays_train_and_pretrain_and_a_wrong_size_is_one_clear_line(tmp_path, capsys):
    generator = np.random.default_rng(1)
    labels = np.repeat(np.arange(3), 30)
    images = np.clip(generator.normal(40 + 80 * labels[:, None, None], 10, (90, 12, 12)), 0, 255).astype(np.uint8)
    np.savez(tmp_path / "data.npz", images=images, labels=labels)
    (tmp_path / "same.logic").write_text(THREE_GARMENTS)
    task = {"name": "arrays", "logic": {"file": "same.logic"}, "data": {"dataset": "arrays", "path": "data.npz"},
            "model": {"backbone": "mlp", "num_clusters": 3},
            "modes": {"pretrain": {"gedi": {"method": "no-gen", "augment": "none"}}}}
    (tmp_path / "task.yaml").write_text(yaml.safe_dump(task))
    run_cli(["train", str(tmp_path / "task.yaml"), "--out", str(tmp_path / "train"), *overrides(QUICK)], capsys)
    run_cli(["pretrain", str(tmp_path / "task.yaml"), "--out", str(tmp_path / "pretrain"), *overrides(QUICK)],
            capsys)
    held_out = json.loads((tmp_path / "pretrain" / "final.json").read_text())["test_inputs"]
    assert held_out == 15  # a seeded sixth of each class
    task["model"]["backbone"] = "mnist_net"  # needs 28x28 images
    (tmp_path / "task.yaml").write_text(yaml.safe_dump(task))
    assert cli.main(["train", str(tmp_path / "task.yaml"), "--out", str(tmp_path / "wrong"), *overrides(QUICK)]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "mnist_net" in error[0] and "(1, 12, 12)" in error[0]


def test_knowledge_without_a_label_is_refused_before_training(tmp_path, capsys):
    (tmp_path / "nolabel.logic").write_text("concept a : 0..2\nconcept b : 0..2\nconstraint a != b\n")
    (tmp_path / "task.yaml").write_text(yaml.safe_dump({"name": "nolabel", "logic": {"file": "nolabel.logic"},
                                                         "data": {"dataset": "fake:1x28x28:3:64"}}))
    assert cli.main(["train", str(tmp_path / "task.yaml"), "--out", str(tmp_path / "run")]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "declares no label: nothing to learn from" in error[0]
    assert not (tmp_path / "run" / "checkpoint.pt").exists()
