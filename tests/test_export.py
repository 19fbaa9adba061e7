"""Export: encoders to ONNX checked against PyTorch, indexes to Parquet, NumPy and clusters."""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from latentsearch.clusters import (
    ClusterConfig,
    ClusterHeadError,
    fit_cluster_head,
    head_path,
    load_cluster_head,
)
from latentsearch.data import DataError, DataSplits, load_data, read_image
from latentsearch.embedding import embed_images
from latentsearch.export import (
    CLUSTER_COLUMNS,
    EXPORT_EXTRA,
    ONNX_OPSET,
    PARQUET_COLUMNS,
    ExportError,
    MissingDependency,
    OutputExists,
    export_clusters,
    export_numpy,
    export_onnx,
    export_parquet,
    index_table,
    onnx_sidecar_path,
    write_atomic,
)
from latentsearch.index import ImageIndex, all_images
from latentsearch.models import MODELS
from latentsearch.runs import Run, TrainConfig
from latentsearch.training import train

# Encoder-only models cannot train on reconstruction.
OBJECTIVES = {"resnet-s": "contrastive"}
TINTS = {"blue": (0, 0, 1), "green": (0, 1, 0), "red": (1, 0, 0)}


@pytest.fixture(autouse=True)
def _private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LATENTSEARCH_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def digits() -> DataSplits:
    return load_data("digits")


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, digits: DataSplits) -> Callable[[str], Run]:
    """``trained(model)``: a run of that model, one epoch on 256 digits, trained once."""
    small = DataSplits(
        train=digits.train.subset(np.arange(256)),
        test=None if digits.test is None else digits.test.subset(np.arange(64)),
        name=digits.name,
    )
    root = tmp_path_factory.mktemp("export-runs")
    runs: dict[str, Run] = {}

    def get(model: str) -> Run:
        if model not in runs:
            config = TrainConfig(
                data="digits",
                model=model,
                objective=OBJECTIVES.get(model, "reconstruction"),
                epochs=1,
                batch_size=64,
            )
            runs[model] = train(config, root / model, progress=False, data=small)
        return runs[model]

    return get


def _session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


# ---------------------------------------------------------------------------- ONNX
@pytest.mark.parametrize("model", sorted(MODELS))
def test_onnx_encoder_equals_pytorch_for_any_batch_size(
    model: str, trained: Callable[[str], Run], tmp_path: Path
) -> None:
    run = trained(model)
    out = tmp_path / "encoder.onnx"
    result = export_onnx(run.path, out)

    proto = onnx.load(str(out))
    onnx.checker.check_model(proto)
    assert max(op.version for op in proto.opset_import if op.domain in ("", "ai.onnx")) >= 17
    session = _session(out)
    (inp,), (outp,) = session.get_inputs(), session.get_outputs()
    assert (inp.name, outp.name) == ("images", "embedding")
    assert inp.type == "tensor(float)" and isinstance(inp.shape[0], str)  # dynamic batch
    assert inp.shape[1:] == [1, 8, 8]
    assert outp.shape[1:] == [run.model.embedding_dim]

    rng = np.random.default_rng(0)
    for batch in (1, 7):
        x = rng.random((batch, 1, 8, 8), dtype=np.float32)
        (got,) = session.run(None, {"images": x})
        with torch.no_grad():
            expected = run.model.embed(torch.from_numpy(x)).numpy()
        assert got.shape == (batch, run.model.embedding_dim)
        np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)
    assert result["verified"]["max_abs_diff"] < 1e-4


def test_onnx_sidecar_and_metadata_say_how_to_feed_the_model(
    trained: Callable[[str], Run], digits: DataSplits, tmp_path: Path
) -> None:
    run = trained("seed-ae")
    out = tmp_path / "encoder.onnx"
    export_onnx(run, out)
    sidecar = json.loads(onnx_sidecar_path(out).read_text())
    assert onnx_sidecar_path(out) == tmp_path / "encoder.onnx.json"
    assert sidecar["model"] == "seed-ae" and sidecar["onnx"] == "encoder.onnx"
    assert (sidecar["image_size"], sidecar["channels"], sidecar["embedding_dim"]) == (8, 1, 128)
    assert sidecar["fingerprint"] == run.fingerprint
    assert sidecar["opset"] == ONNX_OPSET
    assert sidecar["input"]["range"] == [0.0, 1.0] and sidecar["input"]["normalization"] is None
    assert sidecar["input"]["layout"] == "NCHW" and sidecar["output"]["unit_length"] is False
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert json.loads(meta["latentsearch"])["fingerprint"] == run.fingerprint

    # Fed as the sidecar says (uint8 / 255, NCHW), the ONNX model reproduces the index's vectors.
    pixels = digits.test.pixels[:5] if digits.test is not None else digits.train.pixels[:5]
    x = pixels.transpose(0, 3, 1, 2).astype(np.float32) / 255.0
    (got,) = _session(out).run(None, {"images": x})
    np.testing.assert_allclose(got, embed_images(run.model, pixels), atol=1e-4, rtol=0)


def test_unit_length_embeddings_are_declared(trained: Callable[[str], Run], tmp_path: Path) -> None:
    result = export_onnx(trained("resnet-s"), tmp_path / "r.onnx", verify=False)
    assert result["output"]["unit_length"] is True and result["verified"] is None


def test_onnx_export_refuses_an_existing_file_unless_forced(
    trained: Callable[[str], Run], tmp_path: Path
) -> None:
    run = trained("seed-ae")
    out = tmp_path / "encoder.onnx"
    out.write_bytes(b"precious")
    with pytest.raises(ExportError, match=r"already exists: pass `force=True`"):
        export_onnx(run, out)
    assert out.read_bytes() == b"precious"
    assert not onnx_sidecar_path(out).exists()

    out.unlink()
    onnx_sidecar_path(out).write_text("{}")  # the sidecar alone also counts
    with pytest.raises(OutputExists, match=r"encoder\.onnx\.json already exists"):
        export_onnx(run, out)
    assert not out.exists()

    export_onnx(run, out, force=True)
    onnx.checker.check_model(onnx.load(str(out)))
    assert json.loads(onnx_sidecar_path(out).read_text())["model"] == "seed-ae"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["encoder.onnx", "encoder.onnx.json"]


def test_a_folder_as_output_is_refused(trained: Callable[[str], Run], tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="is a folder"):
        export_onnx(trained("seed-ae"), tmp_path, force=True)


# ---------------------------------------------------------------------------- atomic writes
def test_a_failed_write_leaves_nothing_behind(tmp_path: Path) -> None:
    def crash(f: object) -> None:
        f.write(b"half")  # type: ignore[attr-defined]
        raise RuntimeError("disk on fire")

    out = tmp_path / "sub" / "x.bin"
    with pytest.raises(RuntimeError):
        write_atomic(out, crash, force=False)
    assert list((tmp_path / "sub").iterdir()) == []

    out.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        write_atomic(out, crash, force=True)
    assert out.read_bytes() == b"old"
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["x.bin"]


def test_write_atomic_creates_replaces_only_when_forced(tmp_path: Path) -> None:
    out = tmp_path / "x.bin"
    write_atomic(out, lambda f: f.write(b"one"), force=False)
    with pytest.raises(OutputExists, match="already exists"):
        write_atomic(out, lambda f: f.write(b"two"), force=False)
    write_atomic(out, lambda f: f.write(b"three"), force=True)
    assert out.read_bytes() == b"three"
    assert [p.name for p in tmp_path.iterdir()] == ["x.bin"]


# ---------------------------------------------------------------------------- missing deps
@pytest.mark.parametrize("module", ["onnx", "onnxruntime"])
def test_onnx_export_without_its_dependency_says_how_to_install_it(
    module: str, trained: Callable[[str], Run], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = trained("seed-ae")
    monkeypatch.setitem(sys.modules, module, None)  # makes `import module` fail
    with pytest.raises(MissingDependency, match=rf"needs the {module} package") as e:
        export_onnx(run, tmp_path / "e.onnx")
    assert str(e.value).endswith(EXPORT_EXTRA)
    assert list(tmp_path.iterdir()) == []


def test_parquet_export_without_pyarrow_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(MissingDependency, match=r"pip install 'latentsearch\[export\]'"):
        export_parquet(tmp_path / "no-index", tmp_path / "x.parquet")


# ---------------------------------------------------------------------------- index tables
def _folder(root: Path) -> Path:
    """Four random tinted PNGs per class folder."""
    for c, (name, tint) in enumerate(TINTS.items()):
        for i in range(4):
            rng = np.random.default_rng(10 * c + i)
            pixels = np.clip(rng.integers(0, 120, (12, 12, 3)) + np.array(tint) * 130, 0, 255)
            path = root / name / f"{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels.astype(np.uint8)).save(path)
    return root


def _folder_index(root: Path) -> tuple[ImageIndex, Path, Run, DataSplits]:
    """A seed-ae trained one epoch on a 12-PNG folder, and the saved index of that folder."""
    folder = _folder(root / "images")
    data = load_data(str(folder), image_size=8, cache_dir=root / "cache")
    config = TrainConfig(
        data=str(folder), model="seed-ae", epochs=1, image_size=8, batch_size=4, seed=0
    )
    run = train(config, root / "run", progress=False, data=data)
    index = ImageIndex.build(run, all_images(data))
    index.save(root / "photos.index")
    return ImageIndex.load(root / "photos.index"), root / "photos.index", run, data


@pytest.fixture(scope="module")
def folder_index(tmp_path_factory: pytest.TempPathFactory) -> tuple[ImageIndex, Path]:
    """An index of a 12-PNG folder made with a seed-ae trained one epoch on it, and its folder."""
    index, path, _, _ = _folder_index(tmp_path_factory.mktemp("export-index"))
    return index, path


def test_parquet_holds_exactly_the_index_items_and_vectors(
    folder_index: tuple[ImageIndex, Path], tmp_path: Path
) -> None:
    index, path = folder_index
    result = export_parquet(path, tmp_path / "items.parquet")
    assert result["count"] == len(index) == 12

    table = pq.read_table(tmp_path / "items.parquet")
    assert tuple(table.column_names) == PARQUET_COLUMNS
    dim = index.embedding_dim
    assert table.schema.field("position").type == pa.int64()
    for name in ("id", "path", "label", "sha256"):
        assert table.schema.field(name).type == pa.string()
    assert table.schema.field("vector").type == pa.list_(pa.float32(), dim)

    items = index.items
    assert table["position"].to_pylist() == list(range(len(items)))
    assert table["id"].to_pylist() == [it.id for it in items]
    assert table["path"].to_pylist() == [it.path for it in items]
    assert table["sha256"].to_pylist() == [it.sha256 for it in items]
    assert table["label"].to_pylist() == [index.class_names[it.label] for it in items]
    assert set(table["label"].to_pylist()) == set(TINTS)
    assert all(Path(p).is_file() for p in table["path"].to_pylist())
    vectors = np.array(table["vector"].to_pylist(), dtype=np.float32)
    np.testing.assert_array_equal(vectors, index.embeddings)

    meta = json.loads(table.schema.metadata[b"latentsearch"])
    assert meta["fingerprint"] == index.fingerprint
    assert meta["class_names"] == index.class_names == sorted(TINTS)
    assert meta["index"] == str(path) and meta["metric"] == "l2"


def test_pandas_reads_the_parquet_file(
    folder_index: tuple[ImageIndex, Path], tmp_path: Path
) -> None:
    pd = pytest.importorskip("pandas")  # not a dependency: checked where it is installed
    index, path = folder_index
    export_parquet(path, tmp_path / "items.parquet")
    frame = pd.read_parquet(tmp_path / "items.parquet")
    assert list(frame.columns) == list(PARQUET_COLUMNS)
    assert frame["id"].tolist() == [it.id for it in index.items]
    np.testing.assert_array_equal(np.stack(frame["vector"].to_numpy()), index.embeddings)


def test_numpy_export_holds_exactly_the_index_items_and_vectors(
    folder_index: tuple[ImageIndex, Path], tmp_path: Path
) -> None:
    index, path = folder_index
    export_numpy(path, tmp_path / "items.npz")
    with np.load(tmp_path / "items.npz", allow_pickle=False) as z:
        assert set(z.files) == {
            "vectors",
            "positions",
            "ids",
            "paths",
            "labels",
            "sha256",
            "class_names",
            "metadata",
        }
        assert z["vectors"].dtype == np.float32
        np.testing.assert_array_equal(z["vectors"], index.embeddings)
        assert z["positions"].tolist() == list(range(len(index)))
        assert z["ids"].tolist() == [it.id for it in index.items]
        assert z["paths"].tolist() == [it.path for it in index.items]
        assert z["sha256"].tolist() == [it.sha256 for it in index.items]
        assert z["labels"].tolist() == [it.label for it in index.items]
        assert z["class_names"].tolist() == index.class_names
        assert json.loads(str(z["metadata"]))["fingerprint"] == index.fingerprint


def test_array_sources_export_null_paths_and_hashes(
    trained: Callable[[str], Run], digits: DataSplits, tmp_path: Path
) -> None:
    run = trained("seed-ae")
    data = digits.train.subset(np.arange(20))
    index = ImageIndex.build(run, data)
    table = index_table(index)
    assert table["path"].null_count == table["sha256"].null_count == 20
    assert table["label"].to_pylist() == [str(y) for y in data.labels.tolist()]
    export_numpy(index, tmp_path / "d.npz")
    with np.load(tmp_path / "d.npz") as z:
        assert z["paths"].tolist() == [""] * 20 and z["ids"].tolist() == list(data.ids)


def test_index_exports_refuse_an_existing_file_unless_forced(
    folder_index: tuple[ImageIndex, Path], tmp_path: Path
) -> None:
    _, path = folder_index
    for export, name in ((export_parquet, "x.parquet"), (export_numpy, "x.npz")):
        out = tmp_path / name
        out.write_bytes(b"precious")
        with pytest.raises(OutputExists, match="already exists"):
            export(path, out)
        assert out.read_bytes() == b"precious"
        export(path, out, force=True)
        assert out.read_bytes() != b"precious"
    assert len(pq.read_table(tmp_path / "x.parquet")) == 12
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.npz", "x.parquet"]


# ---------------------------------------------------------------------------- clusters
@pytest.fixture(scope="module")
def clustered(tmp_path_factory: pytest.TempPathFactory) -> tuple[ImageIndex, Path, Run, DataSplits]:
    """Its own run and index of the 12 PNGs: the tests write and remove the run's head."""
    return _folder_index(tmp_path_factory.mktemp("export-clusters"))


def _head(run: Run, pixels: np.ndarray, sha: str | None = None, **overrides: int) -> Path:
    """Trains a small 3-cluster head on ``pixels`` and saves it in the run folder."""
    config = ClusterConfig(
        **{"n_clusters": 3, "n_neighbours": 3, "epochs": 20, "heads": 2, "views": 2, **overrides}
    )
    head = fit_cluster_head(
        run.model, pixels, config=config, encoder_sha256=sha or run.fingerprint["weights_sha256"]
    )
    return head.save(head_path(run.path))


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames or ()) == CLUSTER_COLUMNS
        return list(reader)


def test_cluster_export_gives_every_indexed_image_the_heads_cluster(
    clustered: tuple[ImageIndex, Path, Run, DataSplits], tmp_path: Path
) -> None:
    index, path, run, data = clustered
    saved = _head(run, data.train.pixels)
    head = load_cluster_head(saved, index.fingerprint["weights_sha256"])
    result = export_clusters(path, tmp_path / "groups.csv")

    rows = _read_csv(tmp_path / "groups.csv")
    items = index.items
    assert [int(r["position"]) for r in rows] == list(range(len(items))) == list(range(12))
    assert [r["id"] for r in rows] == [it.id for it in items]
    assert [r["path"] for r in rows] == [it.path for it in items]
    assert [r["label"] for r in rows] == [index.class_names[it.label] for it in items]
    prob = head.probabilities(index.embeddings)
    clusters = np.array([int(r["cluster"]) for r in rows])
    np.testing.assert_array_equal(clusters, prob.argmax(axis=1))
    written = np.array([float(r["probability"]) for r in rows])
    np.testing.assert_allclose(written, prob.max(axis=1), atol=1e-4)
    assert result["count"] == 12 and result["n_clusters"] == 3
    assert result["sizes"] == np.bincount(clusters, minlength=3).tolist()
    assert result["head"] == str(saved) and result["index"] == str(path)


def test_cluster_export_without_a_head_for_these_weights_writes_nothing(
    clustered: tuple[ImageIndex, Path, Run, DataSplits], tmp_path: Path
) -> None:
    index, path, run, data = clustered
    head_path(run.path).unlink(missing_ok=True)
    with pytest.raises(ExportError, match=r"has no cluster head: train one with `latentsearch clu"):
        export_clusters(path, tmp_path / "groups.csv")
    _head(run, data.train.pixels, sha="0" * 64)  # a head of other weights
    with pytest.raises(ClusterHeadError, match="another encoder's weights"):
        export_clusters(index, tmp_path / "groups.csv")
    assert list(tmp_path.iterdir()) == []


def test_a_fine_tuned_head_reads_the_image_files_again(
    clustered: tuple[ImageIndex, Path, Run, DataSplits], tmp_path: Path
) -> None:
    index, path, run, data = clustered
    saved = _head(run, data.train.pixels, finetune_epochs=2, finetune_batch_size=6)
    head = load_cluster_head(saved, run_model=run.model)
    assert head.encoder is not None
    export_clusters(path, tmp_path / "groups.csv")
    rows = _read_csv(tmp_path / "groups.csv")
    pixels = np.stack([read_image(it.path or "", 8) for it in index.items])
    expected = head.assign_images(pixels, run.model)
    np.testing.assert_array_equal([int(r["cluster"]) for r in rows], expected)

    # The files are the source of truth here: one gone is an error that names it.
    moved = Path(index.items[5].path or "")
    moved.rename(moved.with_suffix(".bak"))
    try:
        with pytest.raises(DataError, match=f"{moved}: no such file"):
            export_clusters(path, tmp_path / "again.csv")
    finally:
        moved.with_suffix(".bak").rename(moved)
    assert not (tmp_path / "again.csv").exists()


def test_a_fine_tuned_head_cannot_cluster_an_array_source(
    trained: Callable[[str], Run], digits: DataSplits, tmp_path: Path
) -> None:
    run = trained("seed-ae")
    _head(run, digits.train.pixels[:64], finetune_epochs=1, finetune_batch_size=32)
    index = ImageIndex.build(run, digits.train.subset(np.arange(20)))
    with pytest.raises(ExportError, match="no image files: train a head without --finetune"):
        export_clusters(index, tmp_path / "groups.csv")
    assert not (tmp_path / "groups.csv").exists()


def test_a_name_that_is_not_utf8_is_exported_as_printable_text(
    clustered: tuple[ImageIndex, Path, Run, DataSplits], tmp_path: Path
) -> None:
    import os

    from latentsearch.index import all_images

    _, _, run, data = clustered
    folder = _folder(tmp_path / "images")
    latin1 = folder / "red" / os.fsdecode(b"caf\xe9.png")
    (folder / "red" / "0.png").rename(latin1)
    data_here = load_data(str(folder), image_size=8, cache_dir=tmp_path / "cache")
    index = ImageIndex.build(run, all_images(data_here))
    index.save(tmp_path / "latin1.index")
    _head(run, data.train.pixels)

    export_parquet(tmp_path / "latin1.index", tmp_path / "items.parquet")
    paths = pq.read_table(tmp_path / "items.parquet")["path"].to_pylist()
    assert str(folder.resolve() / "red" / "caf\\xe9.png") in paths
    export_clusters(tmp_path / "latin1.index", tmp_path / "groups.csv")
    rows = _read_csv(tmp_path / "groups.csv")
    assert {"red/caf\\xe9.png": str(folder.resolve() / "red" / "caf\\xe9.png")}.items() <= {
        r["id"]: r["path"] for r in rows
    }.items()
