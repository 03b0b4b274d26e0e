import gzip
import hashlib
import os
import shutil
import stat
import warnings
from pathlib import Path
from urllib.error import URLError

import pytest
import torch

from nesy_gedi.data.files import resolve_data_root
from nesy_gedi.data.images import clear_image_cache, load_images, to_float
from nesy_gedi.data.mnist import _DECOMPRESSED
from nesy_gedi.errors import DataError

torch.set_num_threads(1)

MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
GZ_NAMES = [
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
]


def _copy_gz(src_root: Path, dst_root: Path, folder: str = "MNIST") -> Path:
    raw = dst_root / folder / "raw"
    raw.mkdir(parents=True)
    for name in GZ_NAMES:
        shutil.copyfile(src_root / folder / "raw" / name, raw / name)
    return raw


def _assert_one_clean_line(message: str) -> None:
    assert "\n" not in message
    assert "Traceback" not in message


# --------------------------------------------------------------------------- real MNIST


@pytest.mark.mnist
def test_mnist_train_shapes_histogram_and_range(mnist_root):
    images, labels = load_images("mnist", mnist_root, "train")
    assert images.shape == (60000, 1, 28, 28) and images.dtype == torch.uint8
    assert labels.shape == (60000,) and labels.dtype == torch.int64
    assert torch.bincount(labels, minlength=10).tolist() == MNIST_TRAIN_COUNTS
    assert int(images.min()) == 0 and int(images.max()) == 255
    # in-process cache: the same tensors come back
    again = load_images("mnist", str(mnist_root), "train")
    assert again[0] is images and again[1] is labels


@pytest.mark.mnist
def test_mnist_test_split_and_to_float(mnist_root):
    images, labels = load_images("mnist", mnist_root, "test")
    assert images.shape == (10000, 1, 28, 28)
    assert torch.bincount(labels, minlength=10).tolist() == MNIST_TEST_COUNTS
    x = to_float(images[:100])
    assert x.dtype == torch.float32
    assert float(x.min()) == -1.0 and float(x.max()) == 1.0
    assert images[:100].dtype == torch.uint8  # input untouched


@pytest.mark.mnist
def test_fashion_mnist_test_split(mnist_root):
    if not (mnist_root / "FashionMNIST" / "raw").is_dir():
        pytest.skip("no FashionMNIST/raw in the data root")
    images, labels = load_images("fashion_mnist", mnist_root, "test")
    assert images.shape == (10000, 1, 28, 28)
    assert torch.bincount(labels, minlength=10).tolist() == [1000] * 10


@pytest.mark.mnist
def test_corrupted_gz_names_the_file(mnist_root, tmp_path):
    raw = _copy_gz(mnist_root, tmp_path)
    bad = raw / "t10k-labels-idx1-ubyte.gz"
    data = bytearray(bad.read_bytes())
    data[100] ^= 0xFF
    bad.write_bytes(bytes(data))
    with pytest.raises(DataError) as info:
        load_images("mnist", tmp_path, "test")
    message = str(info.value)
    _assert_one_clean_line(message)
    assert str(bad) in message
    assert "MD5" in message and "NESY_GEDI_DATA" in message


@pytest.mark.mnist
def test_read_only_root_says_copy_it(mnist_root, tmp_path):
    raw = _copy_gz(mnist_root, tmp_path)
    os.chmod(raw, stat.S_IRUSR | stat.S_IXUSR | stat.S_IRGRP | stat.S_IXGRP)
    try:
        with pytest.raises(DataError) as info:
            load_images("mnist", tmp_path, "test")
    finally:
        os.chmod(raw, stat.S_IRWXU)
    message = str(info.value)
    _assert_one_clean_line(message)
    assert "not writable" in message and "copy" in message
    assert not (raw / "t10k-images-idx3-ubyte").exists()


@pytest.mark.mnist
def test_truncated_or_wrong_size_decompressed_files(mnist_root, tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        with gzip.open(mnist_root / "MNIST" / "raw" / f"{name}.gz", "rb") as f:
            (raw / name).write_bytes(f.read())
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"):
        (raw / name).write_bytes(b"")  # present, so torchvision does not try to extract
    images_file = raw / "t10k-images-idx3-ubyte"
    full = images_file.read_bytes()

    images_file.write_bytes(full[: len(full) // 2])  # truncated
    with pytest.raises(DataError) as info:
        load_images("mnist", tmp_path, "test", download=False)
    _assert_one_clean_line(str(info.value))
    assert str(images_file) in str(info.value)

    # a well-formed file with the wrong number of images
    header = (2051).to_bytes(4, "big") + (5).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2
    images_file.write_bytes(header + full[16 : 16 + 5 * 28 * 28])
    with pytest.raises(DataError) as info:
        load_images("mnist", tmp_path, "test", download=False)
    _assert_one_clean_line(str(info.value))
    assert str(images_file) in str(info.value) and "wrong size" in str(info.value)


def _corrupt_copy(mnist_root: Path, tmp_path: Path, *, with_gz: bool) -> tuple[Path, bytes]:
    """A data root with MNIST's test files (decompressed; .gz files too when `with_gz`) where
    some non-zero pixel bytes of t10k-images-idx3-ubyte are zeroed. Returns (raw, original)."""
    src, raw = mnist_root / "MNIST" / "raw", tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        shutil.copyfile(src / name, raw / name)
        if with_gz:
            shutil.copyfile(src / f"{name}.gz", raw / f"{name}.gz")
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"):
        if with_gz:
            shutil.copyfile(src / f"{name}.gz", raw / f"{name}.gz")
        (raw / name).write_bytes(b"")  # present, so torchvision does not extract; not the split we load
    original = (raw / "t10k-images-idx3-ubyte").read_bytes()
    data = bytearray(original)
    nonzero = [i for i in range(16 + 784 * 5000, 16 + 784 * 5010) if data[i]][:40]
    for i in nonzero:
        data[i] = 0
    assert bytes(data) != original and len(data) == len(original)  # same size: only the hash can tell
    (raw / "t10k-images-idx3-ubyte").write_bytes(bytes(data))
    return raw, original


@pytest.mark.mnist
def test_corrupted_decompressed_file_is_decompressed_again_from_its_gz(mnist_root, tmp_path):
    raw, original = _corrupt_copy(mnist_root, tmp_path, with_gz=True)
    bad = raw / "t10k-images-idx3-ubyte"
    clear_image_cache()
    with pytest.warns(UserWarning, match="t10k-images-idx3-ubyte.*decompressing t10k-images-idx3-ubyte.gz again"):
        images, labels = load_images("mnist", tmp_path, "test", download=False)
    assert bad.read_bytes() == original
    reference, reference_labels = load_images("mnist", mnist_root, "test")
    assert torch.equal(images, reference) and torch.equal(labels, reference_labels)
    assert not [p.name for p in raw.iterdir() if p.name.startswith(".")]  # no temporary file left
    clear_image_cache()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a verified file loads without any notice
        load_images("mnist", tmp_path, "test", download=False)


@pytest.mark.mnist
def test_corrupted_decompressed_file_without_gz_names_only_that_file(mnist_root, tmp_path):
    raw, _ = _corrupt_copy(mnist_root, tmp_path, with_gz=False)
    clear_image_cache()
    with pytest.raises(DataError) as info:
        load_images("mnist", tmp_path, "test", download=False)
    message = str(info.value)
    _assert_one_clean_line(message)
    assert str(raw / "t10k-images-idx3-ubyte") in message and "SHA-256" in message
    assert "t10k-labels" not in message  # the bad file, not both files of the split


@pytest.mark.mnist
def test_corrupted_decompressed_file_in_read_only_folder_is_refused(mnist_root, tmp_path):
    raw, _ = _corrupt_copy(mnist_root, tmp_path, with_gz=True)
    bad = raw / "t10k-images-idx3-ubyte"
    corrupted = bad.read_bytes()
    clear_image_cache()
    os.chmod(raw, stat.S_IRUSR | stat.S_IXUSR | stat.S_IRGRP | stat.S_IXGRP)
    try:
        with pytest.raises(DataError) as info:
            load_images("mnist", tmp_path, "test", download=False)
    finally:
        os.chmod(raw, stat.S_IRWXU)
    message = str(info.value)
    _assert_one_clean_line(message)
    assert message.startswith(f"{bad}:") and "not writable" in message
    assert "t10k-labels" not in message
    assert bad.read_bytes() == corrupted  # untouched


@pytest.mark.mnist
def test_decompressed_hashes_are_the_gz_content(mnist_root):
    folders = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST"}
    checked = 0
    for name, folder in folders.items():
        raw = mnist_root / folder / "raw"
        for plain, (size, sha256) in _DECOMPRESSED[name].items():
            if not (raw / f"{plain}.gz").is_file():
                continue
            with gzip.open(raw / f"{plain}.gz", "rb") as f:
                content = f.read()
            assert len(content) == size and hashlib.sha256(content).hexdigest() == sha256, (folder, plain)
            checked += 1
    assert checked >= 4


# --------------------------------------------------------------------------- no data needed


def test_missing_root_without_download(tmp_path):
    root = tmp_path / "nowhere"
    with pytest.raises(DataError) as info:
        load_images("mnist", root, "train", download=False)
    message = str(info.value)
    _assert_one_clean_line(message)
    assert str(root) in message
    assert "train-images-idx3-ubyte.gz" in message
    assert "--data-root" in message and "NESY_GEDI_DATA" in message


def test_missing_root_when_download_fails(tmp_path, monkeypatch):
    import torchvision.datasets.mnist as tv_mnist

    def offline(*args, **kwargs):
        raise URLError("Name or service not known")

    monkeypatch.setattr(tv_mnist, "download_and_extract_archive", offline)
    root = tmp_path / "empty"
    with pytest.raises(DataError) as info:
        load_images("fashion_mnist", root, "test")
    message = str(info.value)
    _assert_one_clean_line(message)
    assert str(root) in message and "download failed" in message
    assert "t10k-images-idx3-ubyte.gz" in message


def test_resolve_data_root_precedence(tmp_path, monkeypatch):
    flag, env, cache = tmp_path / "flag", tmp_path / "env", tmp_path / "xdg"
    monkeypatch.setenv("NESY_GEDI_DATA", str(env))
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    assert resolve_data_root(str(flag)) == flag.resolve() and flag.is_dir()
    assert resolve_data_root(None) == env.resolve() and env.is_dir()
    monkeypatch.delenv("NESY_GEDI_DATA")
    expected = cache / "nesy-gedi" / "data"
    assert resolve_data_root() == expected.resolve() and expected.is_dir()
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert resolve_data_root() == (tmp_path / "home" / ".cache" / "nesy-gedi" / "data").resolve()


def test_resolve_data_root_rejects_a_file(tmp_path):
    target = tmp_path / "a_file"
    target.write_text("x")
    with pytest.raises(DataError, match="not a folder"):
        resolve_data_root(str(target))


def test_fake_data_is_deterministic_and_small():
    images, labels = load_images("fake", Path("."), "train")
    assert images.shape == (64, 3, 32, 32) and images.dtype == torch.uint8
    assert labels.shape == (64,) and labels.dtype == torch.int64
    assert 0 <= int(labels.min()) and int(labels.max()) <= 9
    clear_image_cache()
    again, again_labels = load_images("fake", Path("/elsewhere"), "train")
    assert torch.equal(images, again) and torch.equal(labels, again_labels)
    test_images, _ = load_images("fake", Path("."), "test")
    assert not torch.equal(images, test_images)
    small, small_labels = load_images("fake:1x28x28:4:8", Path("."), "train")
    assert small.shape == (8, 1, 28, 28) and int(small_labels.max()) < 4


def test_bad_names_and_splits_are_data_errors():
    with pytest.raises(DataError, match="valid names: mnist, fashion_mnist"):
        load_images("imagenet", Path("."), "train")
    with pytest.raises(DataError, match="valid splits: train, test"):
        load_images("mnist", Path("."), "validation")
    with pytest.raises(DataError, match="fake:CxHxW"):
        load_images("fake:3x32", Path("."), "train")


def test_to_float_range():
    x = torch.tensor([0, 127, 255], dtype=torch.uint8)
    y = to_float(x)
    assert y.dtype == torch.float32
    assert y[0] == -1.0 and y[2] == 1.0 and abs(float(y[1])) < 0.01
