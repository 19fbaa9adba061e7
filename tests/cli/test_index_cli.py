"""`latentsearch index / search / duplicates` end to end on a tiny folder and a tiny run."""

from __future__ import annotations

import errno
import io
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import numpy as np
import pytest
from PIL import Image

from latentsearch.cli import main
from latentsearch.runs import Run

TINTS = {"blue": (0, 0, 1), "green": (0, 1, 0), "red": (1, 0, 0)}
PER_CLASS = 5


def _image(path: Path, seed: int, tint: tuple[int, int, int]) -> Path:
    rng = np.random.default_rng(seed)
    pixels = np.clip(rng.integers(0, 120, (20, 20, 3)) + np.array(tint) * 130, 0, 255)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels.astype(np.uint8)).save(path)
    return path


def _folder(root: Path) -> Path:
    for c, (name, tint) in enumerate(TINTS.items()):
        for i in range(PER_CLASS):
            _image(root / name / f"{i}.png", 10 * c + i, tint)
    buf = io.BytesIO()
    Image.new("RGB", (16, 16)).save(buf, format="JPEG")
    (root / "green" / "bad.jpg").write_bytes(buf.getvalue()[:30])
    return root


@pytest.fixture(scope="module")
def runs(rgb_runs: tuple[Run, Run]) -> tuple[Path, Path]:
    """The folders of the session's two 8x8 colour runs (same model, other weights)."""
    return rgb_runs[0].path, rgb_runs[1].path


@pytest.fixture(autouse=True)
def _private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LATENTSEARCH_CACHE", str(tmp_path / "cache"))


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return _folder(tmp_path / "images")


def _json(capsys: pytest.CaptureFixture[str], argv: list[str]) -> Any:
    capsys.readouterr()
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


def _fails(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    return err


def test_index_search_duplicates_end_to_end(
    runs: tuple[Path, Path], folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run, _ = runs
    idx = tmp_path / "idx"
    built = _json(capsys, ["index", str(run), str(folder), "--out", str(idx), "--json"])
    assert built["count"] == 3 * PER_CLASS
    assert built["index_type"] == "flat" and built["recall_at_10"] is None
    assert [s["path"] for s in built["skipped"]] == [str(folder.resolve() / "green/bad.jpg")]
    assert built["images_per_second"] > 0 and built["seconds"] > 0
    assert built["precision"] == "fp32"  # the default: exact vectors

    query = folder / "red" / "3.png"
    found = _json(capsys, ["search", str(idx), str(query), "-k", "4", "--json"])
    (result,) = found["queries"]
    assert result["query"] == str(query)
    hits = result["neighbors"]
    assert [h["rank"] for h in hits] == [1, 2, 3, 4]
    assert hits[0]["path"] == str(query.resolve()) and hits[0]["id"] == "red/3.png"
    assert hits[0]["class_name"] == "red" and hits[0]["label"] == 2
    assert hits[0]["distance"] <= 1e-4 * hits[1]["distance"] + 1e-9
    assert found["run"] == str(run)  # taken from the manifest

    dups = _json(capsys, ["duplicates", str(idx), "--json"])
    assert dups["groups"] == [] and dups["default_threshold"] is True

    # A copy under another name, a new image, a deleted one: --update, then duplicates.
    shutil.copy(folder / "blue" / "1.png", folder / "green" / "copy.png")
    (folder / "red" / "0.png").unlink()
    updated = _json(capsys, ["index", str(run), str(folder), "--update", str(idx), "--json"])
    assert updated["update"] == {
        "added": 1,
        "changed": 0,
        "removed": 1,
        "unchanged": 3 * PER_CLASS - 1,
        "embedded": 1,
    }
    dups = _json(capsys, ["duplicates", str(idx), "--json"])
    assert [[it["id"] for it in g] for g in dups["groups"]] == [["blue/1.png", "green/copy.png"]]


def test_text_output_and_grid(
    runs: tuple[Path, Path], folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run, _ = runs
    idx = tmp_path / "idx"
    assert main(["index", str(run), str(folder), "--out", str(idx)]) == 0
    out = capsys.readouterr().out
    assert f"indexed {3 * PER_CLASS} images" in out
    assert "skipped 1 file:" in out and "bad.jpg: " in out
    assert "images/s" in out and f"saved to {idx}" in out

    queries = [str(folder / "blue" / "0.png"), str(folder / "green" / "2.png")]
    grid = tmp_path / "grid.png"
    assert main(["search", str(idx), *queries, "-k", "3", "--grid", str(grid)]) == 0
    out = capsys.readouterr().out
    assert out.count("rank  distance") == 2 and "blue/0.png" in out
    assert " label " in out.splitlines()[1] and "blue" in out  # labelled: class names shown
    assert Image.open(grid).size[0] > 3 * 96

    # A folder without class folders: no label column (nothing but -1 to show).
    flat = tmp_path / "flat"
    flat.mkdir()
    for p in sorted(folder.glob("*/[0-2].png")):
        shutil.copy(p, flat / f"{p.parent.name}-{p.name}")
    assert main(["index", str(run), str(flat), "--out", str(tmp_path / "flat-idx")]) == 0
    capsys.readouterr()
    assert main(["search", str(tmp_path / "flat-idx"), str(flat / "red-1.png"), "-k", "2"]) == 0
    header = capsys.readouterr().out.splitlines()[1]
    assert header.split() == ["rank", "distance", "path"]

    assert main(["duplicates", str(idx)]) == 0
    assert "0 groups" in capsys.readouterr().out


def test_hnsw_index_reports_recall(
    runs: tuple[Path, Path], folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run, _ = runs
    argv = ["index", str(run), str(folder), "--out", str(tmp_path / "idx")]
    built = _json(capsys, [*argv, "--index-type", "hnsw", "--json"])
    assert built["index_type"] == "hnsw" and 0.95 <= built["recall_at_10"] <= 1.0
    assert "efSearch" in built["index_params"]


def test_errors_are_one_line_with_exit_code_2(
    runs: tuple[Path, Path],
    folder: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    run, other = runs
    idx = tmp_path / "idx"
    query = str(folder / "red" / "1.png")
    err = _fails(capsys, ["search", str(tmp_path / "missing"), query])
    assert "no index at" in err

    assert main(["index", str(run), str(folder), "--out", str(idx), "--json"]) == 0
    not_image = tmp_path / "notes.txt"
    not_image.write_text("hello")
    assert "notes.txt" in _fails(capsys, ["search", str(idx), str(not_image)])
    assert "no such file" in _fails(capsys, ["search", str(idx), str(tmp_path / "nope.png")])
    assert "weights" in _fails(capsys, ["search", str(idx), query, "--run", str(other)])
    update = ["index", str(other), str(folder), "--update", str(idx)]
    assert "not the run that built" in _fails(capsys, update)
    again = ["index", str(run), str(folder), "--update", str(idx), "--precision", "bf16"]
    assert "--update embeds in the index's own precision (fp32)" in _fails(capsys, again)
    with monkeypatch.context() as m:  # every torchrun rank would rewrite the same folder
        m.setenv("RANK", "0")
        m.setenv("WORLD_SIZE", "2")
        err = _fails(capsys, ["index", str(run), str(folder), "--update", str(idx)])
        assert "--update runs in one process" in err
    assert "refusing" in _fails(capsys, ["index", str(run), str(folder), "--out", str(folder)])
    assert "-k" in _fails(capsys, ["search", str(idx), query, "-k", "0"])
    assert "positive" in _fails(capsys, ["duplicates", str(idx), "--threshold", "-1"])


def test_grid_without_extension_names_the_file_it_writes(
    runs: tuple[Path, Path], folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run, _ = runs
    idx = tmp_path / "idx"
    assert main(["index", str(run), str(folder), "--out", str(idx), "--json"]) == 0
    query = str(folder / "red" / "1.png")
    payload = _json(capsys, ["search", str(idx), query, "--grid", str(tmp_path / "name"), "--json"])
    assert payload["grid"] == str(tmp_path / "name.png")
    assert (tmp_path / "name.png").is_file() and not (tmp_path / "name").exists()
    capsys.readouterr()
    assert main(["search", str(idx), query, "--grid", str(tmp_path / "other")]) == 0
    assert f"grid written to {tmp_path / 'other.png'}" in capsys.readouterr().out


def test_huge_duplicate_threshold_is_not_a_traceback(
    runs: tuple[Path, Path], folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run, _ = runs
    idx = tmp_path / "idx"
    assert main(["index", str(run), str(folder), "--out", str(idx), "--json"]) == 0
    dups = _json(capsys, ["duplicates", str(idx), "--threshold", "1e39", "--json"])
    assert [len(g) for g in dups["groups"]] == [3 * PER_CLASS]
    single = ["duplicates", str(idx), "--threshold", "1e39", "--linkage", "single", "--json"]
    assert [len(g) for g in _json(capsys, single)["groups"]] == [3 * PER_CLASS]
    assert "positive" in _fails(capsys, ["duplicates", str(idx), "--threshold", "inf"])


@pytest.mark.parametrize(
    ("edit", "words"),
    [
        ({"class_names": "blue"}, "class_names"),
        ({"class_names": None}, "class_names"),
        ({"index_type": "hnsw"}, "manifest says 'hnsw'"),
        ({"index_type": "ivf"}, "manifest says 'ivf'"),
        ({"index_type": "cube"}, "index_type"),
    ],
)
def test_malformed_manifest_is_one_line_for_search_and_serve(
    runs: tuple[Path, Path],
    folder: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    edit: dict[str, Any],
    words: str,
) -> None:
    run, _ = runs
    idx = tmp_path / "idx"
    assert main(["index", str(run), str(folder), "--out", str(idx), "--json"]) == 0
    manifest = json.loads((idx / "manifest.json").read_text())
    manifest.update(edit)
    (idx / "manifest.json").write_text(json.dumps(manifest))
    query = str(folder / "red" / "1.png")
    assert words in _fails(capsys, ["search", str(idx), query])
    assert words in _fails(capsys, ["serve", str(idx), "--port", "0"])
    assert words in _fails(capsys, ["duplicates", str(idx)])


def test_update_after_adding_a_subfolder_to_a_flat_folder_removes_nothing(
    runs: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run, _ = runs
    flat = tmp_path / "flat"
    for i in range(5):
        _image(flat / f"{i}.png", 100 + i, (1, 1, 0))
    idx = tmp_path / "idx"
    assert main(["index", str(run), str(flat), "--out", str(idx), "--json"]) == 0
    _image(flat / "2024" / "new.png", 200, (0, 1, 1))
    report = _json(capsys, ["index", str(run), str(flat), "--update", str(idx), "--json"])
    assert report["update"] == {
        "added": 1,
        "changed": 0,
        "removed": 0,
        "unchanged": 5,
        "embedded": 1,
    }
    assert report["count"] == 6 and report["skipped"] == []


def test_update_re_embeds_content_changed_with_the_same_size_and_mtime(
    runs: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import os

    from latentsearch.index import ImageIndex

    run, _ = runs
    images = tmp_path / "bmp"
    images.mkdir()
    for i, colour in enumerate([(250, 0, 0), (0, 250, 0), (0, 0, 250)]):
        Image.new("RGB", (12, 12), colour).save(images / f"{i}.bmp")
    idx = tmp_path / "idx"
    assert main(["index", str(run), str(images), "--out", str(idx), "--json"]) == 0
    target = images / "0.bmp"
    st = os.stat(target)
    Image.new("RGB", (12, 12), (0, 0, 250)).save(target)  # now a copy of 2.bmp, same size
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))
    report = _json(capsys, ["index", str(run), str(images), "--update", str(idx), "--json"])
    assert report["update"]["changed"] == 1
    index = ImageIndex.load(idx)
    emb = index.embeddings
    # The stored embedding is that of the new content: equal to the file it now copies.
    np.testing.assert_allclose(
        emb[index.position("0.bmp")], emb[index.position("2.bmp")], atol=1e-5
    )


def test_index_refuses_a_bomb_without_pillows_raw_warning(
    runs: tuple[Path, Path],
    folder: Path,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
    recwarn: pytest.WarningsRecorder,
) -> None:
    import struct
    import zlib

    # A PNG whose header claims 10,000 x 10,000 pixels: over Pillow's warning limit (89 Mpx).
    data = bytearray(folder.joinpath("red", "0.png").read_bytes())
    data[16:24] = struct.pack(">II", 10_000, 10_000)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    (folder / "red" / "bomb.png").write_bytes(bytes(data))
    argv = ["index", str(runs[0]), str(folder), "--out", str(tmp_path / "i"), "--json"]
    capfd.readouterr()
    assert main(argv) == 0
    out, err = capfd.readouterr()  # the file descriptors: decode workers' output too
    reasons = {Path(s["path"]).name: str(s) for s in json.loads(out)["skipped"]}
    assert "too large" in reasons["bomb.png"]
    assert "DecompressionBombWarning" not in err
    assert not [w for w in recwarn if issubclass(w.category, Image.DecompressionBombWarning)]


def test_names_that_are_not_utf8_and_named_pipes_never_stop_index_update_search(
    runs: tuple[Path, Path], folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import os

    run, _ = runs
    latin1 = folder / "red" / os.fsdecode(b"caf\xe9.png")
    _image(latin1, 77, TINTS["red"])
    if hasattr(os, "mkfifo"):
        os.mkfifo(folder / "red" / "pipe.png")
        (folder / "red" / "zero.png").symlink_to("/dev/zero")
    idx = tmp_path / "idx"
    # capsys writes UTF-8 strictly, as a terminal in a UTF-8 locale does.
    assert main(["index", str(run), str(folder), "--out", str(idx), "--workers", "0"]) == 0
    out = capsys.readouterr().out
    assert f"indexed {3 * PER_CLASS + 1} images" in out
    if hasattr(os, "mkfifo"):
        assert "pipe.png: a named pipe (FIFO), not a file; ignored" in out
        assert "zero.png: a character device, not a file; ignored" in out
    (idx / "manifest.json").read_bytes().decode("utf-8")
    report = _json(capsys, ["index", str(run), str(folder), "--update", str(idx), "--json"])
    assert report["update"]["unchanged"] == 3 * PER_CLASS + 1 and report["update"]["embedded"] == 0
    assert main(["index", str(run), str(folder), "--update", str(idx)]) == 0
    assert "0 added, 0 changed, 0 removed" in capsys.readouterr().out
    assert main(["search", str(idx), str(latin1), "-k", "1"]) == 0
    assert "red/caf\\xe9.png" in capsys.readouterr().out
    assert main(["duplicates", str(idx), "--threshold", "1e9"]) == 0
    assert "caf\\xe9.png" in capsys.readouterr().out
    found = _json(capsys, ["search", str(idx), str(latin1), "-k", "1", "--json"])
    assert found["queries"][0]["neighbors"][0]["id"] == "red/caf\\xe9.png"


def test_update_with_another_folder_is_refused_unless_forced(
    runs: tuple[Path, Path], folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run, _ = runs
    other = tmp_path / "other"
    for i in range(3):
        _image(other / f"{i}.png", 300 + i, (1, 0, 1))
    idx = tmp_path / "idx"
    assert main(["index", str(run), str(folder), "--out", str(idx), "--json"]) == 0
    err = _fails(capsys, ["index", str(run), str(other), "--update", str(idx)])
    assert f"indexes {folder.resolve()}, not {other.resolve()}" in err and "--force" in err
    assert (
        _json(capsys, ["index", str(run), str(folder), "--update", str(idx), "--json"])["update"][
            "removed"
        ]
        == 0
    )  # the same folder, however spelt, is fine
    moved = _json(
        capsys, ["index", str(run), str(other), "--update", str(idx), "--force", "--json"]
    )
    assert moved["count"] == 3 and moved["update"]["removed"] == 3 * PER_CLASS
    assert "--update" in _fails(
        capsys, ["index", str(run), str(other), "--out", str(idx), "--force"]
    )


def test_a_folder_whose_name_is_not_utf8_is_indexed_and_printed(
    runs: tuple[Path, Path], folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import os

    run, _ = runs
    latin1 = tmp_path / os.fsdecode(b"r\xe9pertoire")
    shutil.copytree(folder / "blue", latin1)
    idx = tmp_path / "idx"
    assert main(["index", str(run), str(latin1), "--out", str(idx)]) == 0
    out = capsys.readouterr().out
    assert f"indexed {PER_CLASS} images of image folder" in out and "r\\xe9pertoire" in out
    assert main(["index", str(run), str(latin1), "--update", str(idx)]) == 0
    assert f"{PER_CLASS} unchanged" in capsys.readouterr().out


def _fill(disk: Path) -> None:
    """Fills the small file system ``disk``."""
    (disk / "filler").write_bytes(b"\0" * shutil.disk_usage(disk).free)


def _same_index(path: Path, count: int) -> None:
    from latentsearch.index import ImageIndex

    assert len(ImageIndex.load(path)) == count
    assert sorted(p.name for p in path.iterdir()) == [
        "embeddings.npy",
        "index.faiss",
        "manifest.json",
    ]


def test_a_full_disk_keeps_the_old_index_and_is_one_line(
    folder: Path,
    runs: tuple[Path, Path],
    small_fs: Callable[[int], Path],
    capsys: pytest.CaptureFixture[str],
) -> None:
    # `index --out` / `--update` on a full disk were "OSError: [Errno 28]" tracebacks.
    disk = small_fs(256)
    index = disk / "idx"
    count = _json(capsys, ["index", str(runs[0]), str(folder), "--out", str(index), "--json"])[
        "count"
    ]
    _fill(disk)
    err = _fails(capsys, ["index", str(runs[0]), str(folder), "--out", str(index)])
    assert f"error: not enough space in {disk} for idx (" in err
    _same_index(index, count)
    _image(folder / "red" / "new.png", 99, (1, 0, 0))
    err = _fails(capsys, ["index", str(runs[0]), str(folder), "--update", str(index)])
    assert f"error: not enough space in {disk} for idx (" in err
    _same_index(index, count)
    assert sorted(p.name for p in disk.iterdir()) == ["filler", "idx"]  # no scratch left


def test_an_index_that_does_not_fit_leaves_nothing_half_written(
    folder: Path,
    runs: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Wherever no small disk can be mounted: the index's files fail with ENOSPC half-way.
    from latentsearch.index import storage

    index = tmp_path / "idx"
    count = _json(capsys, ["index", str(runs[0]), str(folder), "--out", str(index), "--json"])[
        "count"
    ]
    real_write_file = storage.write_file

    def half(f: IO[bytes]) -> None:
        f.write(b"half a file")

    def full_disk(path: Path, write: Callable[[IO[bytes]], None]) -> None:
        real_write_file(path, half)
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(storage, "write_file", full_disk)
    for flag in ("--update", "--out"):
        err = _fails(capsys, ["index", str(runs[0]), str(folder), flag, str(index)])
        assert err.startswith(
            f"latentsearch index: error: not enough space in {tmp_path} for idx (it needs more "
            "than the 11 B written before the disk filled, "
        )
        _same_index(index, count)
    # A build from a folder keeps its shards (the images are embedded) for a rerun to resume.
    shards = tmp_path / ".idx.shards"
    assert err.endswith(
        f" of shards) stay in {shards}: the same command resumes from them, or delete that folder"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == [".idx.shards", "idx", "images"]
    assert sorted(p.name for p in shards.iterdir()) == ["job.json", "lock", "shard-0000000.npz"]
