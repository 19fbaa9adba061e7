"""idx files (Fashion-MNIST and any MNIST-format folder), gzipped or plain."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from latentsearch.data import DataError, load_data
from latentsearch.data import idx as idx_module
from latentsearch.data.idx import FASHION_MNIST_CLASSES, load_fashion_mnist, parse_idx, read_idx


def test_idx_folder_by_path(idx_folder) -> None:
    splits = load_data(str(idx_folder.folder))
    train, test = splits.train, splits.test
    assert test is not None
    assert splits.name == "idx"
    assert train.pixels.shape == (6, 28, 28, 1) and train.pixels.dtype == np.uint8
    assert test.pixels.shape == (4, 28, 28, 1)
    np.testing.assert_array_equal(train.pixels[:, :, :, 0], idx_folder.train_images)
    np.testing.assert_array_equal(test.pixels[:, :, :, 0], idx_folder.test_images)
    assert train.labels.tolist() == idx_folder.train_labels.tolist()
    assert test.labels.tolist() == idx_folder.test_labels.tolist()
    # Labels 0..2: as many class names as the labels need.
    assert train.class_names == test.class_names == ["0", "1", "2"]
    assert train.ids[0] == "idx/train/0" and test.ids[-1] == "idx/test/3"


def test_fashion_mnist_from_data_dir(idx_folder) -> None:
    splits = load_data("fashion-mnist", data_dir=idx_folder.folder, image_size=14)
    assert splits.name == "fashion-mnist"
    assert splits.train.class_names == FASHION_MNIST_CLASSES
    assert splits.train.class_names[0] == "T-shirt/top" and len(FASHION_MNIST_CLASSES) == 10
    assert splits.train.pixels.shape == (6, 14, 14, 1)
    assert splits.train.ids[0] == "fashion-mnist/train/0"


def test_missing_fashion_mnist_says_how_to_install(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(idx_module, "FASHION_MNIST_DIR", tmp_path / "not-installed")
    with pytest.raises(DataError, match="apt-get install -y dataset-fashion-mnist"):
        load_fashion_mnist()
    with pytest.raises(DataError, match="data_dir"):
        load_data("fashion-mnist", data_dir=tmp_path)


def test_bad_magic(tmp_path: Path, idx_writer) -> None:
    path = idx_writer(tmp_path / "x-idx3-ubyte", np.zeros((2, 3, 3), np.uint8))
    data = bytearray(path.read_bytes())
    data[0] = 0x1F
    with pytest.raises(DataError, match="magic"):
        parse_idx(bytes(data))
    data[0], data[2] = 0, 0x42  # an unknown type code
    with pytest.raises(DataError, match="magic"):
        parse_idx(bytes(data))
    with pytest.raises(DataError, match="too short"):
        parse_idx(b"\0\0")


def test_truncated_and_trailing(tmp_path: Path, idx_writer) -> None:
    path = idx_writer(tmp_path / "x-idx3-ubyte", np.ones((2, 3, 3), np.uint8))
    data = path.read_bytes()
    with pytest.raises(DataError, match="truncated"):
        parse_idx(data[:-1])
    with pytest.raises(DataError, match="truncated idx header"):
        parse_idx(data[:9])
    with pytest.raises(DataError, match="trailing"):
        parse_idx(data + b"\0")
    assert parse_idx(data).shape == (2, 3, 3)


def test_other_dtypes_and_gzip(tmp_path: Path) -> None:
    values = np.array([[1, -2], [300, 4]], dtype=">i4")
    raw = bytes([0, 0, 0x0C, 2]) + np.array([2, 2], ">u4").tobytes() + values.tobytes()
    (tmp_path / "a.gz").write_bytes(gzip.compress(raw))
    out = read_idx(tmp_path / "a.gz")
    assert out.dtype == np.int32 and out.tolist() == [[1, -2], [300, 4]]


def test_damaged_gzip(tmp_path: Path) -> None:
    (tmp_path / "a.gz").write_bytes(gzip.compress(b"\0\0\x08\1" + b"\0" * 100)[:20])
    with pytest.raises(DataError, match="damaged"):
        read_idx(tmp_path / "a.gz")


def test_folder_with_a_missing_file(idx_folder) -> None:
    for p in idx_folder.folder.glob("t10k-labels*"):
        p.unlink()
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte"):
        load_data(str(idx_folder.folder))


def test_image_and_label_counts_must_agree(tmp_path: Path, idx_writer) -> None:
    folder = tmp_path / "m"
    idx_writer(folder / "train-images-idx3-ubyte", np.zeros((3, 4, 4), np.uint8))
    idx_writer(folder / "train-labels-idx1-ubyte", np.zeros(2, np.uint8))
    idx_writer(folder / "t10k-images-idx3-ubyte", np.zeros((1, 4, 4), np.uint8))
    idx_writer(folder / "t10k-labels-idx1-ubyte", np.zeros(1, np.uint8))
    with pytest.raises(DataError, match="3 train images but 2 labels"):
        load_data(str(folder))
