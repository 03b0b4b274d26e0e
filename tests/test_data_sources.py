"""The user's own images: `folder` (torchvision's ImageFolder layout) and `arrays` (.npz)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from nesy_gedi.data.images import HOLDOUT_FRACTION, class_names, clear_image_cache, load_images
from nesy_gedi.errors import DataError

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _fresh_cache():
    clear_image_cache()
    yield
    clear_image_cache()


def _pixels(seed: int, shape) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


def _image_folder(base: Path, per_class: dict[str, int], *, size=(6, 4), mode="L", seed=0) -> dict:
    """PNG files base/<class>/<k>.png; returns {class: [pixel arrays in file order]}."""
    width, height = size
    written = {}
    for c, (name, count) in enumerate(per_class.items()):
        folder = base / name
        folder.mkdir(parents=True)
        arrays = []
        for k in range(count):
            shape = (height, width) if mode == "L" else (height, width, 3)
            array = _pixels(seed * 1000 + c * 100 + k, shape)
            Image.fromarray(array, mode).save(folder / f"{k:03d}.png")
            arrays.append(array)
        written[name] = arrays
    return written


def _error(call, *args, **kwargs) -> str:
    with pytest.raises(DataError) as info:
        call(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message and "Traceback" not in message
    return message


# --------------------------------------------------------------------------- folder


def test_folder_with_train_and_test_grayscale(tmp_path):
    train = _image_folder(tmp_path / "train", {"cat": 3, "dog": 2, "emu": 4}, seed=1)
    test = _image_folder(tmp_path / "test", {"dog": 2, "emu": 1}, seed=2)
    images, labels = load_images("folder", tmp_path / "unused-root", "train", path=tmp_path)
    assert images.dtype == torch.uint8 and images.shape == (9, 1, 4, 6)
    assert labels.dtype == torch.int64 and labels.tolist() == [0, 0, 0, 1, 1, 2, 2, 2, 2]
    expected = np.stack([a for name in ("cat", "dog", "emu") for a in train[name]])
    assert torch.equal(images[:, 0], torch.from_numpy(expected))
    test_images, test_labels = load_images("folder", ".", "test", path=str(tmp_path))
    assert test_images.shape == (3, 1, 4, 6) and test_labels.tolist() == [1, 1, 2]  # indices of train's classes
    assert torch.equal(test_images[2, 0], torch.from_numpy(test["emu"][0]))
    assert class_names("folder", path=tmp_path) == ["cat", "dog", "emu"]
    assert class_names("folder", 4, path=tmp_path) == ["cat", "dog", "emu", "class 3"]


def test_folder_rgb_and_mixed_gray_give_three_channels(tmp_path):
    rgb = _image_folder(tmp_path / "a_rgb", {"x": 2}, size=(5, 7), mode="RGB", seed=3)["x"]
    gray = _image_folder(tmp_path / "b_gray", {"y": 1}, size=(5, 7), seed=4)["y"]
    # classes a_rgb/x and b_gray/y are one level deeper: the class folders are a_rgb, b_gray
    images, labels = load_images("folder", ".", "train", path=tmp_path)
    test_images, test_labels = load_images("folder", ".", "test", path=tmp_path)
    assert images.shape[1:] == (3, 7, 5) and test_images.shape[1:] == (3, 7, 5)
    assert len(images) + len(test_images) == 3
    everything = torch.cat([images, test_images])
    assert any(torch.equal(img, torch.from_numpy(rgb[0]).permute(2, 0, 1)) for img in everything)
    gray_as_rgb = torch.from_numpy(gray[0])[None].expand(3, -1, -1)
    assert any(torch.equal(img, gray_as_rgb) for img in everything)
    assert sorted(torch.cat([labels, test_labels]).tolist()) == [0, 0, 1]


def test_folder_without_test_part_holds_out_a_seeded_sixth_of_each_class(tmp_path):
    _image_folder(tmp_path, {"a": 12, "b": 6, "c": 1}, seed=5)
    images, labels = load_images("folder", ".", "train", path=tmp_path)
    test_images, test_labels = load_images("folder", ".", "test", path=tmp_path)
    assert torch.bincount(test_labels, minlength=3).tolist() == [2, 1, 0]
    assert torch.bincount(labels, minlength=3).tolist() == [10, 5, 1]
    assert round(12 * HOLDOUT_FRACTION) == 2
    # disjoint and complete: every image is in exactly one split
    rows = {bytes(img.numpy()) for img in torch.cat([images, test_images])}
    assert len(rows) == 19
    first = test_images.clone()
    clear_image_cache()
    assert torch.equal(load_images("folder", ".", "test", path=tmp_path)[0], first)  # fixed seed


def test_folder_errors_name_the_path(tmp_path):
    missing = tmp_path / "nowhere"
    assert str(missing) in _error(load_images, "folder", ".", "train", path=missing)
    assert "needs data.path" in _error(load_images, "folder", ".", "train")

    empty = tmp_path / "empty"
    empty.mkdir()
    message = _error(load_images, "folder", ".", "train", path=empty)
    assert str(empty) in message and "empty" in message

    no_images = tmp_path / "no_images"
    (no_images / "cls").mkdir(parents=True)
    (no_images / "cls" / "notes.txt").write_text("x")
    message = _error(load_images, "folder", ".", "train", path=no_images)
    assert str(no_images / "cls") in message and "no images" in message

    broken = tmp_path / "broken"
    _image_folder(broken, {"a": 2})
    bad_file = broken / "a" / "001.png"
    bad_file.write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    message = _error(load_images, "folder", ".", "train", path=broken)
    assert message.startswith(f"{bad_file}:") and "cannot read the image" in message

    sizes = tmp_path / "sizes"
    _image_folder(sizes, {"a": 2}, size=(6, 4))
    _image_folder(sizes / "b", {"inner": 1}, size=(5, 4))
    message = _error(load_images, "folder", ".", "train", path=sizes)
    assert str(sizes / "b" / "inner" / "000.png") in message and "5x4" in message and "6x4" in message

    stray = tmp_path / "stray"
    _image_folder(stray / "train", {"a": 1})
    _image_folder(stray / "test", {"zebra": 1})
    message = _error(load_images, "folder", ".", "test", path=stray)
    assert str(stray / "test") in message and "zebra" in message

    a_file = tmp_path / "file.png"
    a_file.write_bytes(b"")
    assert str(a_file) in _error(load_images, "folder", ".", "train", path=a_file)


# --------------------------------------------------------------------------- arrays


def test_arrays_layouts_labels_and_class_names(tmp_path):
    gray = _pixels(1, (10, 5, 4))
    file = tmp_path / "gray.npz"
    np.savez(file, images=gray, labels=np.arange(10) % 3, test_images=gray[:2], test_labels=np.array([2, 0]),
             class_names=np.array(["red", "green", "blue"]))
    images, labels = load_images("arrays", ".", "train", path=file)
    assert images.shape == (10, 1, 5, 4) and images.dtype == torch.uint8
    assert torch.equal(images[:, 0], torch.from_numpy(gray))
    assert labels.dtype == torch.int64 and labels.tolist() == (np.arange(10) % 3).tolist()
    test_images, test_labels = load_images("arrays", ".", "test", path=file)
    assert torch.equal(test_images[:, 0], torch.from_numpy(gray[:2])) and test_labels.tolist() == [2, 0]
    assert class_names("arrays", path=file) == ["red", "green", "blue"]

    nhwc = _pixels(2, (7, 5, 4, 3))
    np.savez(tmp_path / "nhwc.npz", images=nhwc, labels=np.zeros(7, dtype=np.uint8))
    images, labels = load_images("arrays", ".", "train", path=tmp_path / "nhwc.npz")
    test_images, _ = load_images("arrays", ".", "test", path=tmp_path / "nhwc.npz")
    assert images.shape == (6, 3, 5, 4) and test_images.shape == (1, 3, 5, 4)  # held-out 1/6
    rows = {bytes(img.permute(1, 2, 0).numpy()) for img in torch.cat([images, test_images])}
    assert rows == {bytes(img) for img in nhwc}
    assert class_names("arrays", 2, path=tmp_path / "nhwc.npz") == ["class 0", "class 1"]

    nchw = _pixels(3, (4, 1, 6, 6))
    np.savez(tmp_path / "nchw.npz", images=nchw, labels=np.array([0, 1, 0, 1], dtype=np.int32))
    images, _ = load_images("arrays", ".", "train", path=tmp_path / "nchw.npz")
    assert images.shape[1:] == (1, 6, 6)


@pytest.mark.parametrize(
    "arrays, expected",
    [
        (dict(images=np.zeros((4, 5, 5), np.float32), labels=np.zeros(4, np.int64)), "dtype float32, expected uint8"),
        (dict(images=np.zeros((4, 25), np.uint8), labels=np.zeros(4, np.int64)), "rank 2"),
        (dict(images=np.zeros((4, 5, 5, 7), np.uint8), labels=np.zeros(4, np.int64)), "C = 1 or 3"),
        (dict(images=np.zeros((4, 5, 5), np.uint8), labels=np.zeros(3, np.int64)), "has 3 labels but 'images' has 4"),
        (dict(images=np.zeros((4, 5, 5), np.uint8), labels=np.zeros(4, np.float64)), "1-D array of integers"),
        (dict(images=np.zeros((4, 5, 5), np.uint8), labels=-np.ones(4, np.int64)), "negative labels"),
        (dict(images=np.zeros((4, 5, 5), np.uint8)), "no array 'labels'"),
        (dict(images=np.zeros((4, 5, 5), np.uint8), labels=np.zeros(4, np.int64), test_image=np.zeros(1)),
         "unknown arrays ['test_image']"),
        (dict(images=np.zeros((4, 5, 5), np.uint8), labels=np.zeros(4, np.int64),
              test_images=np.zeros((2, 5, 5), np.uint8)), "both test_images and test_labels"),
        (dict(images=np.zeros((4, 5, 5), np.uint8), labels=np.zeros(4, np.int64),
              test_images=np.zeros((2, 5, 6), np.uint8), test_labels=np.zeros(2, np.int64)), "same size"),
        (dict(images=np.zeros((4, 5, 5), np.uint8), labels=np.array([0, 1, 2, 2]),
              class_names=np.array(["a", "b"])), "class_names has only 2 names"),
        (dict(images=np.zeros((4, 5, 5), np.uint8), labels=np.array([object()] * 4, dtype=object)),
         "no pickled objects"),
    ],
)
def test_bad_arrays_name_the_file(tmp_path, arrays, expected):
    file = tmp_path / "bad.npz"
    np.savez(file, **arrays)
    message = _error(load_images, "arrays", ".", "train", path=file)
    assert message.startswith(f"{file}:") and expected in message


def test_unreadable_or_missing_npz(tmp_path):
    missing = tmp_path / "missing.npz"
    assert str(missing) in _error(load_images, "arrays", ".", "train", path=missing)
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"this is not a zip archive")
    assert str(garbage) in _error(load_images, "arrays", ".", "train", path=garbage)
    single = tmp_path / "single.npy"
    np.save(single, np.zeros((2, 3, 3), np.uint8))
    assert "single array" in _error(load_images, "arrays", ".", "train", path=single)
    assert str(tmp_path) in _error(load_images, "arrays", ".", "train", path=tmp_path)
