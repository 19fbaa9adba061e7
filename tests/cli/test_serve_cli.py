"""`latentsearch serve`: start-up checks and errors as one line; the served app works."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from latentsearch.cli import main
from latentsearch.cli import serve as serve_cli
from latentsearch.data import load_data
from latentsearch.index import ImageIndex, all_images
from latentsearch.runs import Run
from latentsearch.server import running


@pytest.fixture(scope="module")
def index_and_runs(
    tmp_path_factory: pytest.TempPathFactory, rgb_runs: tuple[Run, Run]
) -> tuple[Path, Path, Path]:
    """An index of 6 tiny images, the run that built it and another run (other weights)."""
    root = tmp_path_factory.mktemp("cli-serve")
    rng = np.random.default_rng(0)
    for c, name in enumerate(["dark", "light"]):
        for i in range(3):
            (root / "images" / name).mkdir(parents=True, exist_ok=True)
            pixels = rng.integers(0, 100, (12, 12, 3)) + 150 * c
            Image.fromarray(pixels.astype(np.uint8)).save(root / "images" / name / f"{i}.png")
    splits = load_data(str(root / "images"), image_size=8, cache_dir=root / "cache")
    runs = rgb_runs
    ImageIndex.build(runs[0], all_images(splits)).save(root / "images.index")
    return root / "images.index", runs[0].path, runs[1].path


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Replaces uvicorn's blocking loop and the process-wide thread setting with recorders."""
    seen: dict[str, Any] = {}

    def fake_serve(app: Any, sock: socket.socket, *, log_level: str = "info") -> None:
        seen.update(app=app, address=sock.getsockname(), log_level=log_level)
        sock.close()

    monkeypatch.setattr(running, "serve", fake_serve)
    monkeypatch.setattr(serve_cli, "_set_threads", lambda n: seen.update(threads=n))
    return seen


def test_serve_loads_once_and_serves(
    index_and_runs: tuple[Path, Path, Path],
    served: dict[str, Any],
    capsys: pytest.CaptureFixture[str],
) -> None:
    index, run, _ = index_and_runs
    assert main(["serve", str(index), "--port", "0", "--max-k", "3", "--log-level", "warning"]) == 0
    out = capsys.readouterr().out
    host, port = served["address"]
    assert host == "127.0.0.1" and port > 0
    assert f"http://127.0.0.1:{port}/" in out and "6 images" in out
    assert "authentication" not in out  # loopback only: no warning
    # A loopback server answers only to loopback names (TestClient's default is "testserver").
    client = TestClient(served["app"], base_url="http://127.0.0.1")
    health = client.get("/health").json()
    assert (health["items"], health["max_k"]) == (6, 3)
    assert client.get("/random", params={"k": 4}).status_code == 422
    assert served["app"].state.service.run.path == run
    assert served["threads"] == 1  # one thread per request unless --threads says otherwise
    # The run has no cluster head: the server says so, and how to train one.
    assert f"clusters: no cluster head: train one with `latentsearch cluster {run}`" in out


def test_no_clusters_turns_the_heads_groups_off(
    index_and_runs: tuple[Path, Path, Path],
    served: dict[str, Any],
    capsys: pytest.CaptureFixture[str],
) -> None:
    index, _, _ = index_and_runs
    assert main(["serve", str(index), "--port", "0", "--no-clusters"]) == 0
    assert "clusters: clusters off (asked for)" in capsys.readouterr().out
    assert served["app"].state.service.clusters is None


def test_serve_warns_when_listening_beyond_this_machine(
    index_and_runs: tuple[Path, Path, Path],
    served: dict[str, Any],
    capsys: pytest.CaptureFixture[str],
) -> None:
    index, _, _ = index_and_runs
    assert main(["serve", str(index), "--host", "0.0.0.0", "--port", "0", "--threads", "2"]) == 0
    assert "no authentication" in capsys.readouterr().out
    assert served["threads"] == 2


def _error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert err.startswith("latentsearch serve: error: ")
    assert "Traceback" not in err
    return err


def test_mismatched_run_is_one_line(
    index_and_runs: tuple[Path, Path, Path],
    served: dict[str, Any],
    capsys: pytest.CaptureFixture[str],
) -> None:
    index, _, other = index_and_runs
    assert main(["serve", str(index), "--run", str(other), "--port", "0"]) == 2
    assert "not the run that built this index" in _error(capsys)
    assert "app" not in served


def test_missing_index_is_one_line(
    tmp_path: Path, served: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["serve", str(tmp_path / "none.index")]) == 2
    assert "no index at" in _error(capsys)


def test_port_in_use_is_one_line(
    index_and_runs: tuple[Path, Path, Path],
    served: dict[str, Any],
    capsys: pytest.CaptureFixture[str],
) -> None:
    index, _, _ = index_and_runs
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        assert main(["serve", str(index), "--port", str(port)]) == 2
    assert "--port" in _error(capsys)
    assert "app" not in served


@pytest.mark.parametrize(
    "args",
    [
        ["--max-upload-mb", "0"],
        ["--max-k", "0"],
        ["--threads", "0"],
        ["--port", "70000"],
        ["--max-decodes", "0"],
        ["--allowed-host", ""],
    ],
)
def test_bad_options_are_one_line(
    index_and_runs: tuple[Path, Path, Path],
    served: dict[str, Any],
    capsys: pytest.CaptureFixture[str],
    args: list[str],
) -> None:
    index, _, _ = index_and_runs
    assert main(["serve", str(index), *args]) == 2
    _error(capsys)


def test_loopback_server_answers_only_to_loopback_names(
    index_and_runs: tuple[Path, Path, Path],
    served: dict[str, Any],
    capsys: pytest.CaptureFixture[str],
) -> None:
    index, _, _ = index_and_runs
    assert main(["serve", str(index), "--port", "0"]) == 0
    assert "any Host header" not in capsys.readouterr().out
    client = TestClient(served["app"])
    assert client.get("/health", headers={"host": "127.0.0.1:8000"}).status_code == 200
    assert client.get("/health", headers={"host": "localhost"}).status_code == 200
    r = client.get("/health", headers={"host": "rebound.example.com"})
    assert r.status_code == 400 and "--allowed-host" in r.json()["detail"]


def test_allowed_host_option(
    index_and_runs: tuple[Path, Path, Path],
    served: dict[str, Any],
    capsys: pytest.CaptureFixture[str],
) -> None:
    index, _, _ = index_and_runs
    argv = ["serve", str(index), "--port", "0", "--allowed-host", "photos.example.org"]
    assert main(argv) == 0
    client = TestClient(served["app"])
    assert client.get("/health", headers={"host": "photos.example.org"}).status_code == 200
    assert client.get("/health", headers={"host": "localhost"}).status_code == 400


def test_non_loopback_server_notes_that_any_host_is_accepted(
    index_and_runs: tuple[Path, Path, Path],
    served: dict[str, Any],
    capsys: pytest.CaptureFixture[str],
) -> None:
    index, _, _ = index_and_runs
    assert main(["serve", str(index), "--host", "0.0.0.0", "--port", "0"]) == 0
    assert "--allowed-host" in capsys.readouterr().out
    client = TestClient(served["app"])
    assert client.get("/health", headers={"host": "anything.example"}).status_code == 200


@pytest.mark.parametrize("content", ['{"epochs": 3}\n', "run: runs/photos\nepochs: 3\n"])
def test_a_text_file_as_the_run_is_one_line(
    index_and_runs: tuple[Path, Path, Path],
    served: dict[str, Any],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    content: str,
) -> None:
    index = index_and_runs[0]
    text = tmp_path / "notes.txt"
    text.write_text(content)
    image = next((index.parent / "images").rglob("*.png"))
    for argv in (["serve", str(index)], ["search", str(index), str(image)]):
        assert main([*argv, "--run", str(text)]) == 2
        err = capsys.readouterr().err
        assert err == (
            f"latentsearch {argv[0]}: error: {text} is not a latentsearch checkpoint: "
            "it is not a file written by torch.save\n"
        )
    assert "app" not in served
