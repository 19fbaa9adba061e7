"""CIFAR-10 from a fake archive in the official format; never the network."""

from __future__ import annotations

import io
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest

from latentsearch.data import DataError, cifar, load_data
from latentsearch.data.cifar import download, extract_archive, load_cifar10


def _check(splits, fake) -> None:
    assert splits.name == "cifar10"
    train, test = splits.train, splits.test
    assert train.pixels.shape == (20, 32, 32, 3) and train.pixels.dtype == np.uint8
    assert test.pixels.shape == (10, 32, 32, 3)
    # Exact equality: rows are R, G, B planes of row-major 32x32 images.
    np.testing.assert_array_equal(train.pixels, fake.train_pixels)
    np.testing.assert_array_equal(test.pixels, fake.test_pixels)
    assert train.labels.tolist() == fake.train_labels.tolist()
    assert test.labels.tolist() == fake.test_labels.tolist()
    assert train.class_names[0] == "airplane" and train.class_names[-1] == "truck"
    assert test.class_names == train.class_names
    assert train.ids[:2] == ["cifar10/train/0", "cifar10/train/1"]
    assert test.ids[-1] == "cifar10/test/9"


def test_pixel_orientation_of_a_known_image(tmp_path: Path, py2_pickle) -> None:
    # Red gradient down the rows, green across the columns, constant blue: any transposition
    # or channel swap changes the image.
    rows = np.arange(32, dtype=np.uint8)[:, None] * 8
    cols = np.arange(32, dtype=np.uint8)[None, :] * 4
    image = np.stack(
        [np.broadcast_to(rows, (32, 32)), np.broadcast_to(cols, (32, 32)), np.full((32, 32), 7)],
        axis=-1,
    ).astype(np.uint8)
    batch = {
        b"data": np.concatenate(
            [image[:, :, 0].ravel(), image[:, :, 1].ravel(), image[:, :, 2].ravel()]
        )[None],
        b"labels": [3],
    }
    path = tmp_path / "one_batch"
    path.write_bytes(py2_pickle(batch))
    pixels, labels = cifar.read_batch(path)
    np.testing.assert_array_equal(pixels[0], image)
    assert pixels[0, 5, 0, 0] == 40 and pixels[0, 0, 5, 1] == 20  # row 5 red, column 5 green
    assert labels.tolist() == [3]


def test_archive_in_data_dir(fake_cifar) -> None:
    splits = load_cifar10(data_dir=fake_cifar.archive.parent, download=False)
    _check(splits, fake_cifar)
    extracted = fake_cifar.archive.parent / "cifar-10-batches-py"
    assert (extracted / "batches.meta").is_file()
    assert not [p for p in extracted.parent.iterdir() if p.name.startswith(".")]
    # Now the extracted folder works on its own, given directly or through its parent.
    fake_cifar.archive.unlink()
    _check(load_cifar10(data_dir=extracted, download=False), fake_cifar)
    _check(load_cifar10(data_dir=extracted.parent, download=False), fake_cifar)
    _check(load_data(str(extracted)), fake_cifar)


def test_download_into_the_cache(fake_cifar, tmp_path: Path, monkeypatch) -> None:
    cache = tmp_path / "cache"
    splits = load_data("cifar10", cache_dir=cache)
    _check(splits, fake_cifar)
    assert (cache / "cifar10" / "cifar-10-python.tar.gz").is_file()
    # The second time nothing is downloaded.
    monkeypatch.setattr(cifar, "CIFAR10_URL", (tmp_path / "gone.tar.gz").as_uri())
    _check(load_data("cifar10", cache_dir=cache, download=False), fake_cifar)


def test_image_size(fake_cifar) -> None:
    splits = load_cifar10(data_dir=fake_cifar.archive.parent, image_size=16)
    assert splits.train.pixels.shape == (20, 16, 16, 3)
    assert splits.test is not None and splits.test.pixels.shape == (10, 16, 16, 3)


def test_download_checks_md5_and_leaves_nothing_behind(fake_cifar, tmp_path: Path) -> None:
    dest = tmp_path / "dl" / "archive.tar.gz"
    with pytest.raises(DataError, match="MD5"):
        download(fake_cifar.archive.as_uri(), dest, "0" * 32)
    assert list(dest.parent.iterdir()) == []
    assert download(fake_cifar.archive.as_uri(), dest, fake_cifar.md5) == dest
    assert dest.read_bytes() == fake_cifar.archive.read_bytes()


def test_md5_mismatch_while_loading(fake_cifar, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(cifar, "CIFAR10_MD5", "f" * 32)
    cache = tmp_path / "cache"
    with pytest.raises(DataError, match="MD5"):
        load_cifar10(cache_dir=cache)
    assert not (cache / "cifar10" / "cifar-10-python.tar.gz").exists()
    # A damaged archive the user put in place is refused too, not extracted.
    with pytest.raises(DataError, match="MD5"):
        load_cifar10(data_dir=fake_cifar.archive.parent, download=False)


def test_missing_offline_says_where_to_put_the_file(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    with pytest.raises(DataError) as err:
        load_data("cifar10", cache_dir=cache, download=False)
    message = str(err.value)
    assert cifar.CIFAR10_URL in message
    assert "cifar-10-python.tar.gz" in message
    assert str(cache / "cifar10") in message


def test_failed_download_says_where_to_put_the_file(tmp_path: Path, monkeypatch) -> None:
    url = (tmp_path / "nowhere" / "cifar-10-python.tar.gz").as_uri()
    monkeypatch.setattr(cifar, "CIFAR10_URL", url)
    with pytest.raises(DataError) as err:
        load_cifar10(data_dir=tmp_path / "data")
    message = str(err.value)
    assert url in message and "offline" in message
    assert str(tmp_path / "data") in message
    assert not list((tmp_path / "data").iterdir())


@pytest.mark.parametrize("name", ["../evil.txt", "/tmp/evil-latentsearch.txt"])
def test_unsafe_archive_members_are_refused(cifar_maker, tmp_path: Path, name: str) -> None:
    fake = cifar_maker(tmp_path / "bad" / "cifar-10-python.tar.gz", extra={name: b"boo"})
    with pytest.raises(DataError, match="unsafe"):
        extract_archive(fake.archive, tmp_path / "out")
    assert not (tmp_path / "evil.txt").exists()
    assert not (tmp_path / "out" / "cifar-10-batches-py").exists()


def test_links_in_archive_are_refused(tmp_path: Path) -> None:
    with tarfile.open(tmp_path / "link.tar", "w") as tar:
        info = tarfile.TarInfo("cifar-10-batches-py/batches.meta")
        info.type = tarfile.SYMTYPE
        info.linkname = "/etc/passwd"
        tar.addfile(info)
    with pytest.raises(DataError, match="not a regular file"):
        extract_archive(tmp_path / "link.tar", tmp_path / "out")
    assert not (tmp_path / "out" / "cifar-10-batches-py").exists()


def test_pickles_cannot_run_code(tmp_path: Path) -> None:
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps({"data": Evil()}, protocol=2))
    with pytest.raises(DataError, match=r"unexpected object .*print"):
        cifar.read_batch(path)


def test_malformed_batch(tmp_path: Path) -> None:
    path = tmp_path / "b"
    path.write_bytes(pickle.dumps({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}))
    with pytest.raises(DataError, match="3072"):
        cifar.read_batch(path)
    path.write_bytes(b"garbage")
    with pytest.raises(DataError, match="not a readable"):
        cifar.read_batch(path)
    buf = io.BytesIO()
    pickle.dump([1, 2], buf)
    path.write_bytes(buf.getvalue())
    with pytest.raises(DataError, match="not a CIFAR-10 batch"):
        cifar.read_batch(path)
