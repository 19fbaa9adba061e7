"""ImageIndex over Milvus: embedded milvus-lite in the folder, and a server (a local stand-in).

Search, save / load, ``--update``, duplicates and the server must work as over FAISS; the
tests for FAISS in test_image_index.py show what that means, a representative subset of them
runs here over both backends.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from latentsearch.cli import main
from latentsearch.data import ImageData, load_data, read_image
from latentsearch.index import (
    ImageIndex,
    ImageIndexError,
    IndexFormatError,
    all_images,
    storage,
)
from latentsearch.index.vector_store import MilvusOptions
from latentsearch.runs import Run

pytest.importorskip("pymilvus")
pytest.importorskip("milvus_lite")

PER_CLASS = 6  # images per class folder in the fixture (conftest.make_folder)
BACKENDS = ["faiss", "milvus"]


def _data(folder: Path) -> ImageData:
    return all_images(load_data(str(folder), image_size=8))


def _ids(index: ImageIndex, run: Run, pixels: np.ndarray, k: int) -> list[list[str]]:
    return [[n.id for n in row] for row in index.search_images(run, pixels, k)]


def _closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def milvus_server(tmp_path: Path) -> Iterator[str]:
    """A local stand-in for a Milvus server: milvus-lite's gRPC server on a free port."""
    from milvus_lite.adapter.grpc.server import start_server_in_thread

    server, db, port = start_server_in_thread(str(tmp_path / "server.db"), port=0)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop(grace=0)
        db.close()


# ---------------------------------------------------------------------------- embedded
def test_milvus_index_finds_what_the_faiss_index_finds(
    run: Run, folder: Path, tmp_path: Path
) -> None:
    data = _data(folder)
    faiss_index = ImageIndex.build(run, data)
    milvus_index = ImageIndex.build(run, data, backend="milvus", embeddings=faiss_index.embeddings)
    assert milvus_index.backend == "milvus" and milvus_index.index_type == "flat"
    queries = np.asarray(faiss_index.embeddings[[0, 5, 11]]) + 0.01
    fd, fp = faiss_index.search(queries, 6)
    md, mp = milvus_index.search(queries, 6)
    np.testing.assert_array_equal(mp, fp)
    np.testing.assert_allclose(md, fd, rtol=1e-4, atol=1e-6)
    pixels = np.asarray(data.pixels[[1, 8, 15]])
    assert _ids(milvus_index, run, pixels, 4) == _ids(faiss_index, run, pixels, 4)

    dest = milvus_index.save(tmp_path / "idx")
    assert sorted(p.name for p in dest.iterdir()) == [
        "embeddings.npy",
        "manifest.json",
        "milvus.db",
    ]
    manifest = json.loads((dest / "manifest.json").read_text())
    assert manifest["backend"] == "milvus"
    assert manifest["milvus"] == {"uri": None, "db_name": None, "collection": "latentsearch"}
    loaded = ImageIndex.load(dest)
    assert loaded.backend == "milvus" and loaded.items == milvus_index.items
    assert _ids(loaded, run, pixels, 4) == _ids(faiss_index, run, pixels, 4)
    # The index it was saved from still searches (its scratch database was reopened).
    assert _ids(milvus_index, run, pixels, 4) == _ids(faiss_index, run, pixels, 4)


@pytest.mark.parametrize("backend", BACKENDS)
def test_update_and_save_over_the_same_folder(
    backend: str, run: Run, folder: Path, tmp_path: Path, write_image: Callable[..., Path]
) -> None:
    dest = tmp_path / "idx"
    ImageIndex.build(run, _data(folder), backend=backend).save(dest)
    loaded = ImageIndex.load(dest)
    write_image(folder / "blue" / "new.png", seed=999, tint=(0, 0, 1))
    write_image(folder / "green" / "01.png", seed=998, tint=(0, 1, 0))
    (folder / "red" / "04.png").unlink()
    report = loaded.update(run, _data(folder))
    assert (report.added, report.changed, report.removed) == (
        ["blue/new.png"],
        ["green/01.png"],
        ["red/04.png"],
    )
    loaded.save(dest)
    again = ImageIndex.load(dest)
    assert again.backend == backend and len(again) == 3 * PER_CLASS
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".idx")] == []
    for item_id in ("blue/new.png", "green/01.png", "blue/00.png"):
        pixels = read_image(folder / item_id, 8)[None]
        assert again.search_images(run, pixels, 1)[0][0].id == item_id
    fresh = ImageIndex.build(run, _data(folder))
    np.testing.assert_allclose(again.embeddings, fresh.embeddings, rtol=1e-5, atol=1e-5)
    _, p = again.search(np.asarray(fresh.embeddings), 3)
    _, fp = fresh.search(np.asarray(fresh.embeddings), 3)
    np.testing.assert_array_equal(p, fp)


@pytest.mark.parametrize("backend", BACKENDS)
def test_duplicates_are_the_same_over_both_backends(backend: str, run: Run, folder: Path) -> None:
    shutil.copy(folder / "red" / "02.jpg", folder / "blue" / "copy-of-red.jpg")
    index = ImageIndex.build(run, _data(folder), backend=backend)
    d, _ = index.search(np.asarray(index.embeddings), 2)
    threshold = 1e-3 * float(np.sort(d[:, 1])[2])
    groups = index.duplicates(threshold)
    assert [[it.id for it in g] for g in groups] == [["blue/copy-of-red.jpg", "red/02.jpg"]]


def test_failed_save_leaves_the_old_milvus_index_loadable(
    run: Run, folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dest = tmp_path / "idx"
    index = ImageIndex.build(run, _data(folder), backend="milvus")
    index.save(dest)
    (folder / "blue" / "00.png").unlink()
    index.update(run, _data(folder))

    def failing(path: Path) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(storage, "fsync_tree", failing)
    with pytest.raises(OSError, match="not enough space in"):
        index.save(dest)
    monkeypatch.undo()
    old = ImageIndex.load(dest)
    assert len(old) == 3 * PER_CLASS and "blue/00.png" in {it.id for it in old.items}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["default-cache", "idx", "images"]
    index.save(dest)  # and the index that failed to save still saves and searches
    assert len(ImageIndex.load(dest)) == 3 * PER_CLASS - 1


def test_missing_database_is_a_clear_error(run: Run, folder: Path, tmp_path: Path) -> None:
    dest = ImageIndex.build(run, _data(folder), backend="milvus").save(tmp_path / "idx")
    shutil.rmtree(dest / "milvus.db")
    with pytest.raises(IndexFormatError, match=r"milvus\.db is missing"):
        ImageIndex.load(dest)


# ---------------------------------------------------------------------------- server
def test_server_collection_holds_the_vectors_and_refuses_another_run(
    run: Run, other_run: Run, folder: Path, tmp_path: Path, milvus_server: str
) -> None:
    options = MilvusOptions(uri=milvus_server, collection="photos", token="secret-token")
    data = _data(folder)
    index = ImageIndex.build(run, data, backend=options)
    dest = index.save(tmp_path / "idx")
    assert [p.name for p in dest.iterdir()] == ["manifest.json"]
    text = (dest / "manifest.json").read_text()
    assert "secret-token" not in text
    assert json.loads(text)["milvus"] == {
        "uri": milvus_server,
        "db_name": None,
        "collection": "photos",
    }
    loaded = ImageIndex.load(dest)
    np.testing.assert_array_equal(loaded.embeddings, index.embeddings)  # fetched back
    pixels = np.asarray(data.pixels[[2, 9]])
    assert _ids(loaded, run, pixels, 5) == _ids(ImageIndex.build(run, data), run, pixels, 5)

    with pytest.raises(ImageIndexError, match=r"'photos'.*another model or run"):
        ImageIndex.build(other_run, data, backend=options)
    assert len(ImageIndex.load(dest)) == len(index)  # untouched

    (folder / "red" / "03.png").unlink()
    loaded.update(run, _data(folder))
    with pytest.raises(IndexFormatError, match="manifest promises"):
        ImageIndex.load(dest)  # the collection moved on; the folder was not saved yet
    loaded.save(dest)
    assert len(ImageIndex.load(dest)) == 3 * PER_CLASS - 1


def test_unreachable_server_fails_fast_naming_it_and_writes_nothing(
    run: Run, folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    uri = f"http://127.0.0.1:{_closed_port()}"
    t = time.perf_counter()
    with pytest.raises(ImageIndexError, match=uri.replace(".", r"\.")):
        ImageIndex.build(run, _data(folder), backend=MilvusOptions(uri=uri, timeout=3))
    out = tmp_path / "idx"
    code = main(["index", str(run.path), str(folder), "--out", str(out), "--milvus-uri", uri])
    assert time.perf_counter() - t < 30  # both attempts; each fails within its timeout
    assert code != 0
    assert uri in capsys.readouterr().err
    assert not out.exists()


# ---------------------------------------------------------------------------- faces
def test_cli_index_search_duplicates_and_update_over_milvus(
    run: Run, folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "idx"

    def run_json(argv: list[str]) -> dict[str, Any]:
        capsys.readouterr()
        assert main(argv) == 0
        return json.loads(capsys.readouterr().out)

    argv = ["index", str(run.path), str(folder), "--out", str(out), "--backend", "milvus"]
    built = run_json([*argv, "--json"])
    assert built["backend"] == "milvus" and built["count"] == 3 * PER_CLASS
    assert (out / "milvus.db").is_dir()
    query = folder / "green" / "03.png"
    found = run_json(["search", str(out), str(query), "-k", "2", "--json"])
    assert found["queries"][0]["neighbors"][0]["id"] == "green/03.png"
    dups = run_json(["duplicates", str(out), "--json"])
    assert dups["groups"] == []
    (folder / "green" / "03.png").unlink()
    updated = run_json(["index", str(run.path), str(folder), "--update", str(out), "--json"])
    assert updated["update"]["removed"] == 1 and updated["backend"] == "milvus"
    capsys.readouterr()
    code = main(["index", str(run.path), str(folder), "--update", str(out), "--backend", "faiss"])
    assert code != 0 and "--update keeps" in capsys.readouterr().err


def test_search_server_serves_a_milvus_index(run: Run, folder: Path, tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from latentsearch.server.app import create_app

    dest = ImageIndex.build(run, _data(folder), backend="milvus").save(tmp_path / "idx")
    with TestClient(create_app(dest, run.path)) as client:
        body = client.get("/items/red/01.png/neighbors", params={"k": 3}).json()
    assert [n["rank"] for n in body["neighbors"]] == [1, 2, 3]
    assert body["neighbors"][0]["id"] == "red/01.png"


def test_neither_help_nor_the_index_package_imports_pymilvus() -> None:
    code = (
        "import sys\n"
        "from latentsearch.cli import main\n"
        "try:\n"
        "    main(['index', '--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "import latentsearch.index\n"
        "print('PYMILVUS', 'pymilvus' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "--milvus-uri" in out.stdout
    assert "PYMILVUS False" in out.stdout
