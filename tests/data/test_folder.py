"""The image-folder source: layouts, bad files, and the memory-mapped decode cache."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from latentsearch.data import DataError, load_data, load_image_folder
from latentsearch.data import folder as folder_module


def _load(root: Path, cache: Path, size: int = 16):
    return load_image_folder(root, image_size=size, cache_dir=cache)


def test_train_test_class_layout(split_folder: Path, tmp_path: Path) -> None:
    splits = _load(split_folder, tmp_path / "cache")
    train, test = splits.train, splits.test
    assert test is not None
    assert splits.name == "split"
    # The class only test/ has still appears in train's class names: the union, sorted.
    assert train.class_names == test.class_names == ["bird", "cat", "dog"]
    assert train.ids == [
        "train/cat/a.png",
        "train/cat/b.jpg",
        "train/cat/sub/c.png",
        "train/dog/d.png",
    ]
    assert train.labels.tolist() == [1, 1, 1, 2]
    assert test.ids == ["test/bird/f.png", "test/cat/g.png"]
    assert test.labels.tolist() == [0, 1]
    assert train.pixels.shape == (4, 16, 16, 3) and train.pixels.dtype == np.uint8
    assert test.pixels.shape == (2, 16, 16, 3)
    assert train.paths == [str(split_folder.resolve() / i) for i in train.ids]
    assert all(os.path.isabs(p) for p in train.paths)


def test_pixels_are_decoded_correctly(split_folder: Path, tmp_path: Path) -> None:
    train = _load(split_folder, tmp_path / "cache").train
    px = np.asarray(train.pixels).astype(int)
    assert (px[0] == [255, 0, 0]).all()  # PNG
    assert np.abs(px[1] - [0, 255, 0]).max() <= 3  # JPEG
    assert (px[2] == 128).all()  # grey -> RGB
    assert (px[3][:, 3:-3] == [0, 255, 0]).all()  # non-square: centre crop is the green third


def test_bad_files_are_skipped_and_listed(split_folder: Path, tmp_path: Path) -> None:
    train = _load(split_folder, tmp_path / "cache").train
    root = split_folder.resolve()
    skipped = dict(train.skipped)
    assert set(skipped) == {str(root / "train/dog/e.jpg"), str(root / "train/dog/notes.txt")}
    assert "corrupt or truncated" in skipped[str(root / "train/dog/e.jpg")]
    assert "not an image" in skipped[str(root / "train/dog/notes.txt")]
    # Hidden files are neither loaded nor reported.
    assert not any(".DS_Store" in p for p in skipped)


def test_class_only_layout(tmp_path: Path, files) -> None:
    root = tmp_path / "classes"
    files.png(root / "zebra/1.png", (0, 0, 0))
    files.png(root / "ant/2.png", (255, 255, 255))
    files.jpeg(root / "ant/deeper/3.jpg", (10, 10, 10))
    files.text(root / "README.txt")
    splits = _load(root, tmp_path / "cache")
    assert splits.test is None
    assert splits.train.class_names == ["ant", "zebra"]
    assert splits.train.ids == ["ant/2.png", "ant/deeper/3.jpg", "zebra/1.png"]
    assert splits.train.labels.tolist() == [0, 0, 1]
    # A file beside the class folders is reported, not silently dropped.
    assert [p for p, _ in splits.train.skipped] == [str(root.resolve() / "README.txt")]


def test_flat_layout_is_unlabelled(tmp_path: Path, files) -> None:
    root = tmp_path / "flat"
    files.png(root / "b.png", (1, 2, 3))
    files.jpeg(root / "a.jpg", (200, 100, 50))
    files.corrupt_jpeg(root / "c.jpg")
    splits = load_data(str(root), cache_dir=tmp_path / "cache")
    train = splits.train
    assert splits.test is None
    assert train.class_names == []
    assert train.labels.tolist() == [-1, -1]
    assert not train.has_labels
    assert train.ids == ["a.jpg", "b.png"]
    assert train.pixels.shape == (2, 32, 32, 3)  # the default image_size
    assert len(train.skipped) == 1


def test_empty_folder_and_no_readable_image(tmp_path: Path, files) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no image files"):
        _load(tmp_path / "empty", tmp_path / "cache")
    files.text(tmp_path / "junk/a.txt")
    files.corrupt_jpeg(tmp_path / "junk/b.jpg")
    with pytest.raises(DataError, match="no readable image"):
        _load(tmp_path / "junk", tmp_path / "cache")
    with pytest.raises(DataError, match="does not exist"):
        _load(tmp_path / "missing", tmp_path / "cache")


def test_test_folder_without_train_folder(tmp_path: Path, files) -> None:
    files.png(tmp_path / "odd/test/cat/a.png", (0, 0, 0))
    with pytest.raises(DataError, match="no train/"):
        _load(tmp_path / "odd", tmp_path / "cache")


def test_cache_is_memory_mapped_and_reused_without_decoding(
    split_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    first = _load(split_folder, cache)
    assert isinstance(first.train.pixels, np.memmap)
    assert not first.train.pixels.flags.writeable

    def must_not_decode(path: str, image_size: int) -> tuple[np.ndarray, str]:
        raise AssertionError(f"decoded {path} although the cache is valid")

    monkeypatch.setattr(folder_module, "_decode_file", must_not_decode)
    second = _load(split_folder, cache)
    np.testing.assert_array_equal(first.train.pixels, second.train.pixels)
    assert second.train.ids == first.train.ids
    assert second.train.skipped == first.train.skipped
    assert second.test is not None and first.test is not None
    assert second.test.class_names == first.test.class_names
    entries = list((cache / "folders").iterdir())
    assert len(entries) == 1 and not entries[0].name.startswith(".")


def test_changed_file_invalidates_the_cache(
    split_folder: Path, tmp_path: Path, files, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    _load(split_folder, cache)
    files.png(split_folder / "train/cat/a.png", (0, 0, 255))  # new content (and mtime)
    st = os.stat(split_folder / "train/cat/a.png")
    os.utime(split_folder / "train/cat/a.png", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))

    decoded: list[str] = []
    real = folder_module._decode_file

    def counting(path: str, image_size: int) -> tuple[np.ndarray, str]:
        decoded.append(path)
        return real(path, image_size)

    monkeypatch.setattr(folder_module, "_decode_file", counting)
    again = _load(split_folder, cache)
    assert decoded  # decoded afresh
    assert (np.asarray(again.train.pixels[0]) == [0, 0, 255]).all()
    # The stale cache of the same folder and size was removed.
    assert len(list((cache / "folders").iterdir())) == 1
    # A different image_size is a different cache, kept side by side.
    _load(split_folder, cache, size=8)
    assert len(list((cache / "folders").iterdir())) == 2


def test_interrupted_decode_leaves_no_cache(
    split_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    calls = 0
    real = folder_module._decode_file

    def interrupted(path: str, image_size: int) -> tuple[np.ndarray, str]:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise KeyboardInterrupt
        return real(path, image_size)

    monkeypatch.setattr(folder_module, "_decode_file", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _load(split_folder, cache)
    assert list((cache / "folders").iterdir()) == []
    monkeypatch.setattr(folder_module, "_decode_file", real)
    assert len(_load(split_folder, cache).train) == 4


def test_default_cache_dir_comes_from_the_environment(
    tmp_path: Path, files, monkeypatch: pytest.MonkeyPatch
) -> None:
    files.png(tmp_path / "imgs/x/a.png", (5, 5, 5))
    monkeypatch.setenv("LATENTSEARCH_CACHE", str(tmp_path / "env-cache"))
    load_data(str(tmp_path / "imgs"), image_size=8)
    assert len(list((tmp_path / "env-cache" / "folders").iterdir())) == 1


def test_damaged_cache_is_rebuilt(split_folder: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    _load(split_folder, cache)
    (entry,) = (cache / "folders").iterdir()
    (entry / "manifest.json").write_text("{not json")
    assert len(_load(split_folder, cache).train) == 4
    (entry / "train.npy").unlink()
    assert len(_load(split_folder, cache).train) == 4


# --- layouts that are not class layouts --------------------------------------------------------


def test_loose_images_beside_a_subfolder_are_all_kept(tmp_path: Path, files) -> None:
    root = tmp_path / "photos"
    for i in range(3):
        files.png(root / f"{i}.png", (10 * i, 0, 0))
    files.jpeg(root / "2024/a.jpg", (0, 50, 0))
    files.png(root / "2024/deep/b.png", (0, 0, 50))
    train = _load(root, tmp_path / "cache").train
    assert train.ids == ["0.png", "1.png", "2.png", "2024/a.jpg", "2024/deep/b.png"]
    assert train.class_names == [] and train.labels.tolist() == [-1] * 5
    assert train.skipped == []


def test_a_single_subfolder_is_not_a_class(tmp_path: Path, files) -> None:
    root = tmp_path / "one"
    files.png(root / "holiday/a.png", (1, 1, 1))
    files.png(root / "holiday/b.png", (2, 2, 2))
    train = _load(root, tmp_path / "cache").train
    assert train.ids == ["holiday/a.png", "holiday/b.png"]
    assert train.class_names == [] and not train.has_labels


def test_adding_a_subfolder_to_a_flat_folder_keeps_every_id(tmp_path: Path, files) -> None:
    root = tmp_path / "flat"
    for i in range(5):
        files.png(root / f"{i}.png", (i, i, i))
    before = _load(root, tmp_path / "cache").train.ids
    files.png(root / "new/x.png", (9, 9, 9))
    after = _load(root, tmp_path / "cache").train.ids
    assert after == [*before, "new/x.png"]


def test_split_layout_with_loose_train_images_is_unlabelled(tmp_path: Path, files) -> None:
    root = tmp_path / "split"
    files.png(root / "train/a.png", (1, 1, 1))
    files.png(root / "train/cat/b.png", (2, 2, 2))
    files.png(root / "test/cat/c.png", (3, 3, 3))
    splits = _load(root, tmp_path / "cache")
    assert splits.test is not None
    assert splits.train.ids == ["train/a.png", "train/cat/b.png"]
    assert splits.test.ids == ["test/cat/c.png"]
    assert not splits.train.has_labels and not splits.test.has_labels


def test_split_layout_keeps_loose_test_images_unlabelled(tmp_path: Path, files) -> None:
    root = tmp_path / "split"
    files.png(root / "train/cat/a.png", (1, 1, 1))
    files.png(root / "test/cat/b.png", (2, 2, 2))
    files.png(root / "test/loose.png", (3, 3, 3))
    splits = _load(root, tmp_path / "cache")
    assert splits.test is not None
    assert splits.train.class_names == ["cat"]
    assert dict(zip(splits.test.ids, splits.test.labels.tolist(), strict=True)) == {
        "test/cat/b.png": 0,
        "test/loose.png": -1,
    }


def test_train_folder_beside_other_folders_loses_nothing(tmp_path: Path, files) -> None:
    root = tmp_path / "mixed"
    files.png(root / "train/cat/a.png", (1, 1, 1))
    files.png(root / "extra/b.png", (2, 2, 2))
    files.png(root / "c.png", (3, 3, 3))
    splits = _load(root, tmp_path / "cache")
    assert splits.test is None
    assert splits.train.ids == ["c.png", "extra/b.png", "train/cat/a.png"]


def test_broken_symbolic_link_is_reported(tmp_path: Path, files) -> None:
    root = tmp_path / "links"
    files.png(root / "a.png", (1, 1, 1))
    (root / "gone.png").symlink_to(tmp_path / "nowhere.png")
    files.png(root / "sub/b.png", (2, 2, 2))
    (root / "sub/gone.jpg").symlink_to(tmp_path / "nowhere.jpg")
    train = _load(root, tmp_path / "cache").train
    assert train.ids == ["a.png", "sub/b.png"]
    reasons = dict(train.skipped)
    assert set(reasons) == {str(root.resolve() / "gone.png"), str(root.resolve() / "sub/gone.jpg")}
    assert all("broken symbolic link" in r for r in reasons.values())


# --- the cache is keyed by content -------------------------------------------------------------


def test_same_size_and_mtime_new_content_is_decoded_afresh(tmp_path: Path, files) -> None:
    from PIL import Image

    root = tmp_path / "flat"
    root.mkdir()
    path = root / "a.bmp"  # uncompressed: every colour gives the same file size
    Image.new("RGB", (8, 8), (255, 0, 0)).save(path)
    files.png(root / "b.png", (0, 0, 0))
    first = _load(root, tmp_path / "cache").train
    assert (np.asarray(first.pixels[0]) == [255, 0, 0]).all()
    st = os.stat(path)
    data = path.read_bytes()
    Image.new("RGB", (8, 8), (0, 0, 255)).save(tmp_path / "blue.bmp")
    replacement = (tmp_path / "blue.bmp").read_bytes()
    assert len(replacement) == len(data)  # same size: only the content tells them apart
    path.write_bytes(replacement)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    again = _load(root, tmp_path / "cache").train
    assert (np.asarray(again.pixels[0]) == [0, 0, 255]).all()
    assert again.sha256 is not None and first.sha256 is not None
    assert again.sha256[0] != first.sha256[0]


def test_hashes_are_those_of_the_decoded_bytes(split_folder: Path, tmp_path: Path) -> None:
    import hashlib

    for _ in range(2):  # freshly decoded, then from the cache
        train = _load(split_folder, tmp_path / "cache").train
        assert train.sha256 is not None and train.paths is not None
        assert train.sha256 == [
            hashlib.sha256(Path(p).read_bytes()).hexdigest() for p in train.paths
        ]


def test_scratch_folders_of_a_killed_decode_are_removed(split_folder: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    folders = cache / "folders"
    folders.mkdir(parents=True)
    (folders / ".tmp-dead").mkdir()  # a killed process's folder: its lock is free
    (folders / ".tmp-dead" / "train.all.npy").write_bytes(b"\0" * 100)
    (folders / ".tmp-dead.lock").write_bytes(b"")
    _load(split_folder, cache)
    assert not any(p.name.startswith(".tmp-") for p in folders.iterdir())


def test_scratch_folder_still_being_written_is_kept(tmp_path: Path) -> None:
    from latentsearch.data.scratch import remove_abandoned, scratch_dir

    with scratch_dir(tmp_path, ".tmp-") as live:
        (live / "x").write_bytes(b"1")
        assert remove_abandoned(tmp_path, ".tmp-") == []
        assert (live / "x").is_file()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("text", ["[]", "{}", '{"version": 2, "class_names": 3, "splits": {}}'])
def test_odd_cache_manifests_are_rebuilt(split_folder: Path, tmp_path: Path, text: str) -> None:
    cache = tmp_path / "cache"
    _load(split_folder, cache)
    (entry,) = (cache / "folders").iterdir()
    (entry / "manifest.json").write_text(text)
    assert len(_load(split_folder, cache).train) == 4


def test_the_listing_names_every_file_as_the_walk_does(split_folder: Path, tmp_path: Path) -> None:
    splits = _load(split_folder, tmp_path / "cache")
    listing = folder_module.list_image_folder(split_folder)
    assert [s.name for s in listing.splits] == ["train", "test"]
    for part, data in zip(listing.splits, (splits.train, splits.test), strict=True):
        assert data is not None
        readable = [f for f in part.files if f.path not in dict(data.skipped)]
        assert [f.id for f in readable] == data.ids
        assert [f.path for f in readable] == data.paths
        assert [f.label for f in readable] == data.labels.tolist()
    # The splits are parts of one set of columns, not copies of them.
    assert list(listing.files) == [f for s in listing.splits for f in s.files]
    assert all(np.shares_memory(s.files.labels, listing.files.labels) for s in listing.splits)
    assert sum(s.files.nbytes for s in listing.splits) == listing.files.nbytes + 8


def test_folder_files_behave_as_a_sequence_of_folder_files(tmp_path: Path) -> None:
    root = str(tmp_path.resolve())
    ids = ["a/x.png", "a/ü é.jpg", "b/y.png"]
    files = folder_module.FolderFiles(root, ids, [0, 0, -1])
    made = [
        folder_module.FolderFile(i, os.path.join(root, *i.split("/")), label)
        for i, label in zip(ids, [0, 0, -1], strict=True)
    ]
    assert len(files) == 3
    assert list(files) == made
    assert files[1] == made[1] and files[-1] == made[2]
    assert files[1:] == made[1:] and files[::2] == made[::2] and files[5:] == []
    assert files.id(1) == "a/ü é.jpg"
    assert files.labels.tolist() == [0, 0, -1]
    assert list(files.part(1, 3)) == made[1:] and list(files.part(2, 1)) == []
    with pytest.raises(IndexError):
        files[3]
    with pytest.raises(IndexError):
        files[-4]
    with pytest.raises(ValueError, match="labels"):
        folder_module.FolderFiles(root, ids, [0])


def test_folder_files_hold_the_ids_bytes_and_twelve_more_per_file(tmp_path: Path) -> None:
    ids = [f"train/class{i % 10}/image_{i:07d}.jpg" for i in range(10_000)]
    files = folder_module.FolderFiles(str(tmp_path), ids, [i % 10 for i in range(10_000)])
    assert files.nbytes == sum(len(i) for i in ids) + 12 * len(ids) + 8


def test_decode_files_refuses_a_large_non_image_without_reading_it(tmp_path: Path) -> None:
    import tracemalloc

    from PIL import Image

    from latentsearch.data.folder import decode_files

    big = tmp_path / "archive.zip"
    with open(big, "wb") as f:
        f.write(b"PK\x03\x04")
        f.truncate(64 * 1024 * 1024)  # sparse: nothing is written to disk
    png = tmp_path / "a.png"
    Image.new("RGB", (8, 8), (0, 255, 0)).save(png)
    tracemalloc.start()
    try:
        decoded = decode_files([str(big), str(png)], 4)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 * 1024 * 1024, f"{peak / 2**20:.1f} MiB"  # read whole: 64 MiB
    assert decoded.ok.tolist() == [False, True]
    assert decoded.errors[0] == "not an image Pillow can read" and decoded.sha256[0] == ""


# --- names that are not UTF-8, and files that are not files -------------------------------------

LATIN1 = os.fsdecode(b"caf\xe9.png")
"""A Latin-1 file name as Python sees it: the byte 0xE9 kept as a lone surrogate."""


def test_a_name_that_is_not_utf8_is_read_with_a_printable_id(tmp_path: Path, files) -> None:
    root = tmp_path / "latin1"
    files.png(root / "a.png", (1, 1, 1))
    files.png(root / LATIN1, (200, 0, 0))
    files.png(root / os.fsdecode(b"\xe9t\xe9") / "b.png", (0, 200, 0))
    for _ in range(2):  # decoded, then read back from the cache
        train = _load(root, tmp_path / "cache").train
        assert train.ids == ["a.png", "caf\\xe9.png", "\\xe9t\\xe9/b.png"]
        assert train.paths == [
            str(root.resolve() / "a.png"),
            str(root.resolve() / LATIN1),
            str(root.resolve() / os.fsdecode(b"\xe9t\xe9") / "b.png"),
        ]
        assert (np.asarray(train.pixels[1]) == [200, 0, 0]).all()
        assert train.skipped == []
    listed = folder_module.list_image_folder(root).files
    assert [(f.id, f.path) for f in listed] == list(zip(train.ids, train.paths, strict=True))
    assert [f.path for f in listed.part(1, 3)] == train.paths[1:]


def test_a_class_folder_that_is_not_utf8_gives_a_printable_class_name(
    tmp_path: Path, files
) -> None:
    root = tmp_path / "classes"
    files.png(root / "cat/a.png", (1, 1, 1))
    files.png(root / os.fsdecode(b"\xe9l\xe9phant") / "b.png", (2, 2, 2))
    train = _load(root, tmp_path / "cache").train
    assert train.class_names == ["\\xe9l\\xe9phant", "cat"]
    assert train.ids == ["cat/a.png", "\\xe9l\\xe9phant/b.png"]  # in the order of the names
    assert train.labels.tolist() == [1, 0]


def test_a_name_whose_printable_id_is_taken_is_skipped(tmp_path: Path, files) -> None:
    root = tmp_path / "clash"
    files.png(root / LATIN1, (1, 1, 1))
    files.png(root / "caf\\xe9.png", (2, 2, 2))  # really called so
    train = _load(root, tmp_path / "cache").train
    assert train.ids == ["caf\\xe9.png"]
    assert train.paths == [str(root.resolve() / "caf\\xe9.png")]
    ((path, reason),) = train.skipped
    assert path == str(root.resolve() / LATIN1) and "not UTF-8" in reason


def _never_blocks(fn, *args):
    """``fn(*args)``, failing (not hanging the suite) when it blocks on a named pipe."""
    import threading

    out: list = []
    worker = threading.Thread(target=lambda: out.append(fn(*args)), daemon=True)
    worker.start()
    worker.join(timeout=60)  # a guard against a hang, not a timing check
    assert out, f"{fn.__name__} blocked (on a named pipe?)"
    return out[0]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are POSIX")
def test_named_pipes_and_devices_are_reported_never_opened(tmp_path: Path, files) -> None:
    root = tmp_path / "special"
    files.png(root / "a.png", (1, 1, 1))
    os.mkfifo(root / "pipe.png")
    (root / "zero.png").symlink_to("/dev/zero")
    files.png(root / "sub/b.png", (2, 2, 2))
    os.mkfifo(root / "sub/pipe.jpg")
    try:
        train = _never_blocks(_load, root, tmp_path / "cache").train
        listing = _never_blocks(folder_module.list_image_folder, root)
    finally:
        _unblock(root / "pipe.png", root / "sub/pipe.jpg")
    assert train.ids == ["a.png", "sub/b.png"]
    reasons = dict(train.skipped)
    base = root.resolve()
    assert set(reasons) == {
        str(base / "pipe.png"),
        str(base / "zero.png"),
        str(base / "sub/pipe.jpg"),
    }
    assert "named pipe" in reasons[str(base / "pipe.png")]
    assert "device" in reasons[str(base / "zero.png")]
    assert [f.id for f in listing.files] == ["a.png", "sub/b.png"]
    assert dict(listing.splits[0].problems) == reasons


def _unblock(*pipes: Path) -> None:
    """Opens each pipe for writing, so that a reader stuck in ``open`` (a regression) returns."""
    import contextlib

    for pipe in pipes:
        with contextlib.suppress(OSError):  # ENXIO: nobody is reading it, as it should be
            os.close(os.open(pipe, os.O_WRONLY | os.O_NONBLOCK))


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are POSIX")
def test_a_file_replaced_by_a_pipe_after_listing_is_not_read(tmp_path: Path, files) -> None:
    root = tmp_path / "raced"
    files.png(root / "a.png", (1, 1, 1))
    files.png(root / "b.png", (2, 2, 2))
    listing = folder_module.list_image_folder(root)
    (root / "b.png").unlink()
    os.mkfifo(root / "b.png")
    paths = [f.path for f in listing.files]
    try:
        decoded = _never_blocks(folder_module.decode_files, paths, 8)
        hashes = _never_blocks(folder_module.hash_files, paths)
    finally:
        _unblock(root / "b.png")
    assert decoded.ok.tolist() == [True, False]
    assert "named pipe" in (decoded.errors[1] or "")
    assert hashes[1] == ""


def _noisy_folder(root: Path, per_class: int) -> Path:
    """Two classes of 16×16 noise PNGs, and one file that is not an image."""
    rng = np.random.default_rng(0)
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / c / f"{i}.png")
    (root / "b" / "notes.txt").write_text("not an image")
    return root


def test_a_cache_that_does_not_fit_is_skipped_with_one_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A full disk used to be a DataError (or, on a sparse map, a SIGBUS): the cache is an
    # optimisation, so the load goes on in memory and says why, once.
    root = _noisy_folder(tmp_path / "images", 5)
    expected = load_image_folder(root, image_size=8, cache_dir=tmp_path / "roomy")

    def no_room(path: Path, *, shape: tuple[int, ...], dtype: object) -> np.ndarray:
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(folder_module, "allocated_memmap", no_room)
    with pytest.warns(RuntimeWarning) as record:
        data = load_image_folder(root, image_size=8, cache_dir=tmp_path / "full")
    assert len(record) == 1
    message = str(record[0].message)
    assert message.startswith(
        f"cannot write the decoded-image cache in {tmp_path / 'full' / 'folders'} (not enough "
        "space: it needs 2.1 kB, "  # room for 11 files of 8×8×3 (the text file's too)
    )
    assert "decoding into memory instead" in message
    np.testing.assert_array_equal(data.train.pixels, expected.train.pixels)
    assert not isinstance(data.train.pixels, np.memmap)
    assert data.train.ids == expected.train.ids and data.train.sha256 == expected.train.sha256
    assert data.train.labels.tolist() == [0] * 5 + [1] * 5
    assert data.train.skipped == expected.train.skipped
    assert list((tmp_path / "full" / "folders").iterdir()) == []  # no scratch folder left


def test_training_on_a_full_disk_goes_on_without_the_cache(
    tmp_path: Path, small_fs: Callable[[int], Path]
) -> None:
    # 41 files of 32×32×3 decode to 126 kB; the cache's disk holds 64 kB. The sparse map of
    # the decoded pixels killed `train` with SIGBUS (exit status 135, no message).
    disk = small_fs(64)
    root = _noisy_folder(tmp_path / "images", 20)
    env = {**os.environ, "LATENTSEARCH_CACHE": str(disk), "OMP_NUM_THREADS": "1"}
    args = ["--model", "seed-ae", "--epochs", "1", "--batch-size", "8", "--no-evaluate"]
    args += ["--data", str(root), "--out", str(tmp_path / "run")]
    done = subprocess.run(
        [sys.executable, "-m", "latentsearch", "train", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    warning = f"latentsearch train: warning: cannot write the decoded-image cache in {disk}"
    assert done.stderr.count(warning) == 1 and done.stderr.count("decoded-image cache") == 1
    assert "(not enough space: it needs 126 kB, " in done.stderr
    assert "RuntimeWarning" not in done.stderr  # one line, like the errors
    assert (tmp_path / "run" / "checkpoints" / "epoch-001.pt").is_file()
    assert not [p for p in disk.rglob("*") if p.is_file()]  # nothing half-written left
