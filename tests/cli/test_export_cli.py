"""`latentsearch export onnx / parquet / numpy / clusters` on a tiny digits run and its index."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pyarrow.parquet as pq
import pytest
import torch

from latentsearch.cli import main
from latentsearch.data import DataSplits, load_data
from latentsearch.index import ImageIndex
from latentsearch.runs import TrainConfig, load_run
from latentsearch.training import train


@pytest.fixture(scope="module")
def run_and_index(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A seed-ae run, one epoch on 256 digits, and an index of 100 digits made with it."""
    root = tmp_path_factory.mktemp("cli-export")
    digits = load_data("digits")
    small = DataSplits(train=digits.train.subset(np.arange(256)), test=None, name=digits.name)
    config = TrainConfig(data="digits", epochs=1, batch_size=64)
    run = train(config, root / "run", progress=False, data=small)
    ImageIndex.build(run, digits.train.subset(np.arange(100))).save(root / "digits.index")
    return run.path, root / "digits.index"


def test_export_onnx_writes_a_model_onnxruntime_runs(
    run_and_index: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_path, _ = run_and_index
    out = tmp_path / "enc.onnx"
    assert main(["export", "onnx", str(run_path), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"wrote {out}" in printed and "onnxruntime matches PyTorch" in printed
    assert (tmp_path / "enc.onnx.json").is_file()

    x = np.random.default_rng(1).random((5, 1, 8, 8), dtype=np.float32)
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    (got,) = session.run(["embedding"], {"images": x})
    with torch.no_grad():
        expected = load_run(run_path).model.embed(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)


def test_export_refuses_an_existing_file_without_force(
    run_and_index: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_path, index_path = run_and_index
    cases = [
        ("onnx", str(run_path), tmp_path / "enc.onnx"),
        ("parquet", str(index_path), tmp_path / "items.parquet"),
        ("numpy", str(index_path), tmp_path / "items.npz"),
    ]
    for fmt, source, out in cases:
        out.write_bytes(b"precious")
        assert main(["export", fmt, source, "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert err == (
            f"latentsearch export: error: {out} already exists: pass --force to replace it\n"
        )
        assert out.read_bytes() == b"precious"
        assert main(["export", fmt, source, "--out", str(out), "--force"]) == 0
        assert out.read_bytes() != b"precious"
    capsys.readouterr()
    assert len(pq.read_table(tmp_path / "items.parquet")) == 100
    with np.load(tmp_path / "items.npz") as z:
        assert z["vectors"].shape == (100, 128)


def test_export_parquet_and_numpy_json_summaries(
    run_and_index: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, index_path = run_and_index
    out = tmp_path / "deep" / "items.parquet"  # missing folders are created
    assert main(["export", "parquet", str(index_path), "--out", str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["out"] == str(out) and summary["count"] == 100
    assert summary["embedding_dim"] == 128 and summary["class_names"] == [str(i) for i in range(10)]
    table = pq.read_table(out)
    assert table["id"].to_pylist() == [it.id for it in ImageIndex.load(index_path).items]

    assert main(["export", "numpy", str(index_path), "--out", str(tmp_path / "v.npz")]) == 0
    assert "vectors (100, 128) float32" in capsys.readouterr().out


def test_export_clusters_after_cluster_prints_the_cluster_sizes(
    run_and_index: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from latentsearch.clusters import ClusterConfig, fit_cluster_head, head_path

    run_path, index_path = run_and_index
    out = tmp_path / "groups.csv"
    assert main(["export", "clusters", str(index_path), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"train one with `latentsearch cluster {run_path}`" in err
    assert not out.exists()

    run = load_run(run_path)
    config = ClusterConfig(n_clusters=10, epochs=10, heads=2, views=2)
    head = fit_cluster_head(
        run.model,
        load_data("digits").train.pixels[:256],
        config=config,
        encoder_sha256=run.fingerprint["weights_sha256"],
    )
    head.save(head_path(run_path))
    assert main(["export", "clusters", str(index_path), "--out", str(out)]) == 0
    line = capsys.readouterr().out
    assert line.startswith(f"wrote {out}: 100 rows (position, id, path, label, cluster, prob")
    assert "images per cluster: 0: " in line
    argv = ["export", "clusters", str(index_path), "--out", str(out)]
    assert main([*argv, "--force", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["count"] == 100 == sum(summary["sizes"]) and len(summary["sizes"]) == 10
    assert len(out.read_text().splitlines()) == 101  # the header and one row per image


def test_bad_inputs_are_one_line_errors(
    run_and_index: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _, index_path = run_and_index
    assert main(["export", "onnx", str(tmp_path / "nope"), "--out", str(tmp_path / "a.onnx")]) == 2
    assert "no run folder or checkpoint at" in capsys.readouterr().err
    out = tmp_path / "a.parquet"
    assert main(["export", "parquet", str(tmp_path / "nope"), "--out", str(out)]) == 2
    assert "no index at" in capsys.readouterr().err
    assert main(["export", "numpy", str(tmp_path), "--out", str(tmp_path / "b.npz")]) == 2
    assert "not a complete index folder" in capsys.readouterr().err

    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    assert main(["export", "parquet", str(index_path), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install 'latentsearch[export]'" in err
    assert not out.exists()


def test_export_needs_a_format_and_an_out(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["export"], ["export", "onnx", "run"]):
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 2
    assert "--out" in capsys.readouterr().err
