"""Streamed folder indexing: equal to the in-memory build, resumable, sharded over ranks."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from latentsearch.data import DataError, load_data
from latentsearch.index import (
    FingerprintMismatch,
    ImageIndex,
    ImageIndexError,
    all_images,
    storage,
    streaming,
)
from latentsearch.index.spec import IndexSpec
from latentsearch.precision import cpu_has_native_bf16
from latentsearch.runs import Run

SIZE = 8  # the session's colour runs take 8x8 images


def noise_image(path: Path, seed: int, tint: tuple[int, int, int]) -> None:
    """A tinted 20x20 random PNG (as conftest's fixture images)."""
    rng = np.random.default_rng(seed)
    pixels = np.clip(rng.integers(0, 120, (20, 20, 3)) + np.array(tint) * 130, 0, 255)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels.astype(np.uint8)).save(path)


def _expected(run: Run, folder: Path) -> tuple[ImageIndex, list[tuple[str, str]], str]:
    data = all_images(load_data(str(folder), image_size=SIZE))
    return ImageIndex.build(run, data), list(data.skipped), data.source


def _assert_same(got: ImageIndex, want: ImageIndex) -> None:
    assert [it.id for it in got.items] == [it.id for it in want.items]
    assert got.items == want.items  # paths, labels and content hashes too
    assert got.class_names == want.class_names
    np.testing.assert_allclose(got.embeddings, want.embeddings, rtol=0, atol=1e-5)
    assert got.index_type == want.index_type


def _with_bad_files(folder: Path) -> Path:
    """The fixture folder (one corrupt JPEG) plus a text file among the images."""
    (folder / "green" / "notes.txt").write_text("not an image\n", encoding="utf-8")
    return folder


class _Kill(Exception):
    pass


@pytest.mark.parametrize("workers", [0, 2])
def test_streamed_index_equals_the_in_memory_build(
    run: Run, folder: Path, tmp_path: Path, workers: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = _with_bad_files(folder)
    want, want_skipped, want_source = _expected(run, folder)
    out = tmp_path / "out.index"
    placed: list[tuple[str, str]] = []
    real_place = storage.place_file

    def spying(src: Path, dst: Path) -> None:
        placed.append((src.name, dst.name))
        real_place(src, dst)

    monkeypatch.setattr(storage, "place_file", spying)
    result = streaming.index_images(run, folder, out, workers=workers, chunk_size=4)
    # The merged vectors file became the index's embeddings.npy without being written again.
    assert placed == [(streaming.MERGED_FILE, "embeddings.npy")]
    assert result.index is not None
    _assert_same(result.index, want)
    assert result.skipped == want_skipped
    assert [Path(p).name for p, _ in result.skipped] == ["notes.txt", "broken.jpg"]
    assert result.source == want_source
    assert result.stats.chunks == 5 and result.stats.embedded_chunks == 5  # 20 files
    # The merge put the vectors in a memory-mapped file (pages the kernel may drop), so FAISS
    # holds the only copy in the process's own memory.
    assert isinstance(result.index.embeddings, np.memmap)
    _assert_same(ImageIndex.load(out), want)
    assert ImageIndex.load(out).manifest["source"] == want_source
    assert not streaming.shards_dir(out).exists()


def test_train_and_test_folders_come_in_the_same_order(run: Run, tmp_path: Path) -> None:
    root = tmp_path / "split"
    for split, n in (("train", 5), ("test", 3)):
        for c, tint in enumerate([(0, 0, 1), (1, 0, 0)]):
            for i in range(n):
                noise_image(root / split / f"c{c}" / f"{i}.png", seed=10 * c + i, tint=tint)
    (root / "test" / "c1" / "bad.png").write_bytes(b"\x89PNG nonsense")
    want, want_skipped, want_source = _expected(run, root)
    result = streaming.index_images(run, root, tmp_path / "o", workers=0, chunk_size=3)
    assert result.index is not None
    _assert_same(result.index, want)
    assert result.skipped == want_skipped and len(want_skipped) == 1
    assert result.source == want_source == "split (train + test)"


def test_a_killed_job_resumes_from_its_shards(
    run: Run, folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    want, want_skipped, _ = _expected(run, folder)
    out = tmp_path / "out.index"

    def kill_after_first(chunk: int) -> None:
        raise _Kill(chunk)

    with pytest.raises(_Kill):
        streaming.index_images(run, folder, out, workers=0, chunk_size=6, on_shard=kill_after_first)
    shards = streaming.shards_dir(out)
    assert sorted(p.name for p in shards.glob("shard-*")) == ["shard-0000000.npz"]
    assert not out.exists()

    embedded: list[int] = []
    real_embed = streaming.embed_images

    def counting_embed(model: object, pixels: np.ndarray, **kw: str) -> np.ndarray:
        embedded.append(len(pixels))
        return real_embed(model, pixels, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(streaming, "embed_images", counting_embed)
    done: list[int] = []
    result = streaming.index_images(run, folder, out, workers=0, chunk_size=6, on_shard=done.append)
    assert done == [1, 2, 3]  # chunk 0 (the first 6 files) was not decoded or embedded again
    assert sum(embedded) == len(want) - 6
    assert result.stats.resumed_chunks == 1 and result.stats.embedded_chunks == 3
    assert result.stats.restarted is None
    assert result.index is not None
    _assert_same(result.index, want)
    assert result.skipped == want_skipped
    assert not shards.exists()


def test_a_job_stopped_after_its_save_never_writes_into_the_saved_vectors(
    run: Run, folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    want, _, _ = _expected(run, folder)
    out = tmp_path / "out.index"
    # Stopped between the save and the removal of the shards folder: the merged vectors file
    # there is the saved index's embeddings.npy (one file, two names).
    monkeypatch.setattr(streaming.shutil, "rmtree", lambda *a, **k: None)
    streaming.index_images(run, folder, out, workers=0, chunk_size=6)
    merged = streaming.shards_dir(out) / streaming.MERGED_FILE
    saved = out / "embeddings.npy"
    assert merged.stat().st_ino == saved.stat().st_ino
    with open(saved, "rb") as f:  # a reader of the first index keeps its file open
        before = f.read()
        monkeypatch.undo()
        result = streaming.index_images(run, folder, out, workers=0, chunk_size=6)
        f.seek(0)
        assert f.read() == before and os.fstat(f.fileno()).st_size == len(before)
        assert os.fstat(f.fileno()).st_ino != saved.stat().st_ino  # a new file, not that one
    assert result.index is not None
    _assert_same(ImageIndex.load(out), want)


def test_a_file_changed_since_its_shard_is_embedded_again(
    run: Run, folder: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out.index"

    def kill(chunk: int) -> None:
        raise _Kill(chunk)

    with pytest.raises(_Kill):
        streaming.index_images(run, folder, out, workers=0, chunk_size=6, on_shard=kill)
    # Same name, same list of files, other content: the first chunk's shard is stale.
    noise_image(folder / "blue" / "00.png", seed=999, tint=(1, 1, 0))
    want, _, _ = _expected(run, folder)
    done: list[int] = []
    result = streaming.index_images(run, folder, out, workers=0, chunk_size=6, on_shard=done.append)
    assert done == [0, 1, 2, 3] and result.stats.resumed_chunks == 0
    assert result.index is not None
    _assert_same(result.index, want)


def test_another_run_or_file_list_starts_over_and_says_why(
    run: Run, other_run: Run, folder: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out.index"

    def kill(chunk: int) -> None:
        raise _Kill(chunk)

    with pytest.raises(_Kill):
        streaming.index_images(run, folder, out, workers=0, chunk_size=6, on_shard=kill)
    want, _, _ = _expected(other_run, folder)
    result = streaming.index_images(other_run, folder, out, workers=0, chunk_size=6)
    assert result.stats.restarted == "they were made with another run"
    assert result.stats.resumed_chunks == 0 and result.stats.embedded_chunks == 4
    assert result.index is not None
    _assert_same(result.index, want)

    with pytest.raises(_Kill):
        streaming.index_images(run, folder, out, workers=0, chunk_size=6, on_shard=kill)
    noise_image(folder / "blue" / "new.png", seed=5, tint=(0, 0, 1))
    result = streaming.index_images(run, folder, out, workers=0, chunk_size=6)
    assert result.stats.restarted == "they were made with another file list"
    assert result.index is not None and "blue/new.png" in {it.id for it in result.index.items}


@pytest.mark.skipif(not cpu_has_native_bf16(), reason="this CPU has no native bf16")
def test_another_precision_starts_over_and_the_index_records_it(
    run: Run, folder: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out.index"

    def kill(chunk: int) -> None:
        raise _Kill(chunk)

    with pytest.raises(_Kill):
        streaming.index_images(run, folder, out, workers=0, chunk_size=6, on_shard=kill)
    result = streaming.index_images(
        run, folder, out, workers=0, chunk_size=6, spec=IndexSpec(precision="bf16")
    )
    assert result.stats.restarted == "they were made with another precision"
    assert result.stats.resumed_chunks == 0 and result.index is not None
    assert result.index.precision == "bf16"
    want = ImageIndex.build(run, all_images(load_data(str(folder), image_size=8)), precision="bf16")
    np.testing.assert_allclose(result.index.embeddings, want.embeddings, rtol=1e-5, atol=1e-5)


def test_a_second_job_on_the_same_output_is_refused(run: Run, folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.index"

    def nested(chunk: int) -> None:
        streaming.index_images(run, folder, out, workers=0)

    with pytest.raises(ImageIndexError, match="another indexing job is writing"):
        streaming.index_images(run, folder, out, workers=0, chunk_size=6, on_shard=nested)


def test_a_split_without_a_readable_image_is_refused_as_load_data_does(
    run: Run, tmp_path: Path
) -> None:
    root = tmp_path / "bad"
    root.mkdir()
    (root / "a.png").write_bytes(b"\x89PNG nonsense")
    (root / "b.txt").write_text("text", encoding="utf-8")
    with pytest.raises(DataError) as want:
        load_data(str(root), image_size=SIZE)
    with pytest.raises(DataError) as got:
        streaming.index_images(run, root, tmp_path / "o", workers=0)
    assert str(got.value) == str(want.value)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"workers": -1}, "workers must be 0 or more"),
        ({"chunk_size": 0}, "chunk_size must be a positive integer"),
        ({"spec": IndexSpec(index_type="kd-tree")}, "unknown index type"),
    ],
)
def test_bad_arguments_fail_before_any_work(
    run: Run, folder: Path, tmp_path: Path, kwargs: dict[str, object], match: str
) -> None:
    with pytest.raises(ImageIndexError, match=match):
        streaming.index_images(run, folder, tmp_path / "o", **kwargs)  # type: ignore[arg-type]
    assert not streaming.shards_dir(tmp_path / "o").exists()


def test_image_folders_are_told_from_other_sources(folder: Path, tmp_path: Path) -> None:
    assert streaming.is_image_folder(str(folder))
    assert not streaming.is_image_folder("digits")
    assert not streaming.is_image_folder(str(tmp_path / "missing"))
    cifar = tmp_path / "cifar-10-batches-py"
    cifar.mkdir()
    (cifar / "batches.meta").write_bytes(b"")
    (cifar / "data_batch_1").write_bytes(b"")
    assert not streaming.is_image_folder(str(cifar))


_RANK_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from latentsearch import distributed
    from latentsearch.index import streaming
    from latentsearch.runs import load_run

    run_path, folder, out, report = sys.argv[1:5]
    result = streaming.index_images(load_run(run_path), folder, out, workers=0, chunk_size=4)
    distributed.teardown()
    with open(report, "w") as f:
        json.dump({"embedded": result.stats.embedded_chunks, "skipped": result.skipped,
                   "saved": result.index is not None}, f)
    """
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_two_ranks_build_the_index_one_process_builds(
    run: Run, folder: Path, tmp_path: Path
) -> None:
    folder = _with_bad_files(folder)
    want, want_skipped, _ = _expected(run, folder)
    out = tmp_path / "out.index"
    port = _free_port()
    procs = []
    for rank in range(2):
        env = {
            **os.environ,
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
            "WORLD_SIZE": "2",
            "LOCAL_WORLD_SIZE": "2",
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
            "LATENTSEARCH_DIST_TIMEOUT": "600",
            "OMP_NUM_THREADS": "1",
        }
        args = [str(run.path), str(folder), str(out), str(tmp_path / f"rank{rank}.json")]
        procs.append(
            subprocess.Popen(
                [sys.executable, "-c", _RANK_SCRIPT, *args],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    for p in procs:
        output, _ = p.communicate(timeout=900)  # generous: a loaded machine imports slowly
        assert p.returncode == 0, output
    reports = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert [r["embedded"] for r in reports] == [3, 2]  # 5 chunks of 4 files, contiguous
    assert [r["saved"] for r in reports] == [True, False]
    # The corrupt JPEG and the text file are read by rank 1; rank 0 reports them.
    assert [tuple(s) for s in reports[0]["skipped"]] == want_skipped
    _assert_same(ImageIndex.load(out), want)
    assert not streaming.shards_dir(out).exists()


def test_the_index_command_streams_a_folder_and_resumes(
    run: Run, folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from latentsearch.cli import main

    want, want_skipped, want_source = _expected(run, folder)
    out = tmp_path / "out.index"

    def kill(chunk: int) -> None:
        raise _Kill(chunk)

    with pytest.raises(_Kill):  # the command's chunking (auto), killed after the first shard
        streaming.index_images(run, folder, out, workers=0, on_shard=kill)
    argv = ["index", str(run.path), str(folder), "--out", str(out), "--workers", "0"]
    assert main([*argv, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["streamed"]["resumed_chunks"] == 1
    assert report["streamed"]["embedded_chunks"] == report["streamed"]["chunks"] - 1
    assert report["source"] == want_source and report["count"] == len(want)
    assert [(s["path"], s["reason"]) for s in report["skipped"]] == want_skipped
    _assert_same(ImageIndex.load(out), want)

    assert main(argv) == 0  # again, from scratch: the shards are gone
    text = capsys.readouterr().out
    assert "resumed" not in text and "skipped 1 file:" in text and "broken.jpg" in text
    assert main([*argv[:-1], "-1"]) == 2
    assert "--workers must be 0 or more" in capsys.readouterr().err


# ---------------------------------------------------------------------------- the update
@pytest.mark.parametrize("workers", [0, 2])
def test_a_streamed_update_equals_the_in_memory_one_and_decodes_only_what_changed(
    run: Run, folder: Path, monkeypatch: pytest.MonkeyPatch, workers: int
) -> None:
    folder = _with_bad_files(folder)
    streamed, _, _ = _expected(run, folder)
    in_memory, _, _ = _expected(run, folder)
    noise_image(folder / "blue" / "new.png", seed=7, tint=(0, 0, 1))  # added
    noise_image(folder / "green" / "01.png", seed=8, tint=(0, 1, 0))  # changed
    (folder / "red" / "04.png").unlink()  # removed
    (folder / "red" / "05.jpg").write_bytes(b"\xff\xd8 broken now")  # readable before
    (folder / "blue" / "bad-new.jpg").write_bytes(b"\xff\xd8 never an image")  # new, unreadable
    decoded: list[str] = []
    real = streaming.decode_files

    def spying(paths: list[str], image_size: int) -> object:
        decoded.extend(Path(p).name for p in paths)
        return real(paths, image_size)

    if workers == 0:  # the workers' decoding cannot be watched from here
        monkeypatch.setattr(streaming, "decode_files", spying)
    result = streaming.update_images(streamed, run, folder, workers=workers, chunk_size=4)
    data = all_images(load_data(str(folder), image_size=SIZE))
    want = in_memory.update(run, data)

    assert result.report == want
    assert want.added == ["blue/new.png"] and want.changed == ["green/01.png"]
    assert sorted(want.removed) == ["red/04.png", "red/05.jpg"]
    assert result.skipped == list(data.skipped)
    assert result.source == data.source
    _assert_same(streamed, in_memory)
    # Hashed: every listed file. Decoded: the new, the changed and the unreadable ones (the
    # fixture's corrupt red/broken.jpg and green/notes.txt are tried again: they may have
    # been fixed).
    names = ["01.png", "05.jpg", "bad-new.jpg", "broken.jpg", "new.png", "notes.txt"]
    if workers == 0:
        assert sorted(decoded) == names
    assert result.decoded == len(names) and result.hashed == len(data) + len(data.skipped)


def test_a_streamed_update_without_changes_embeds_nothing(
    run: Run, folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    index, _, _ = _expected(run, folder)
    before = index.embeddings.copy()
    monkeypatch.setattr(streaming, "embed_images", lambda *a, **k: pytest.fail("embedded"))
    result = streaming.update_images(index, run, folder, workers=0)
    assert result.decoded == 1  # only the fixture's corrupt JPEG, tried again and skipped
    assert [Path(p).name for p, _ in result.skipped] == ["broken.jpg"]
    assert result.report.embedded == 0 and not result.report.removed
    np.testing.assert_array_equal(index.embeddings, before)


def test_a_streamed_update_refuses_another_run(run: Run, other_run: Run, folder: Path) -> None:
    index, _, _ = _expected(run, folder)
    with pytest.raises(FingerprintMismatch):
        streaming.update_images(index, other_run, folder, workers=0)


@pytest.mark.parametrize("workers", [0, 1])
def test_a_name_that_is_not_utf8_is_indexed_saved_and_found_again(
    run: Run, folder: Path, tmp_path: Path, workers: int
) -> None:
    latin1 = folder / "blue" / os.fsdecode(b"ciel-\xe9t\xe9.png")
    noise_image(latin1, seed=7, tint=(0, 0, 1))
    if hasattr(os, "mkfifo"):
        os.mkfifo(folder / "blue" / "pipe.png")  # reported, never opened
    out = tmp_path / "out.index"
    built = streaming.index_images(run, folder, out, workers=workers, chunk_size=4)
    assert built.index is not None
    item = built.index.item("blue/ciel-\\xe9t\\xe9.png")
    assert item.path == str(latin1.resolve())
    # The manifest is UTF-8 and reads back to the very path.
    (out / "manifest.json").read_bytes().decode("utf-8")
    loaded = ImageIndex.load(out)
    assert loaded.item(item.id) == item
    assert Path(item.path).read_bytes() == latin1.read_bytes()
    skipped = dict(built.skipped)
    if hasattr(os, "mkfifo"):
        assert "named pipe" in skipped[str((folder / "blue" / "pipe.png").resolve())]
    # An update finds the file again, unchanged: nothing is embedded.
    done = streaming.update_images(loaded, run, folder, workers=workers)
    assert item.id in done.report.unchanged and not done.report.added
    assert not done.report.removed and done.report.embedded == 0
