"""Property tests: whatever bytes a manifest, config or checkpoint holds, loading it gives a
clear error (the project's ValueError subclasses), never another exception or a traceback."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from latentsearch.data import folder as folder_module
from latentsearch.index import ImageIndex, IndexFormatError, IndexItem, backends
from latentsearch.index.image_index import INDEX_FORMAT
from latentsearch.runs import RunError, TrainConfig, load_run

SETTINGS = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=12,
)


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A valid 6-item flat index of 4-d vectors, built without a run."""
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(6, 4)).astype(np.float32)
    meta: dict[str, Any] = {
        "format": INDEX_FORMAT,
        "created": "2026-01-01T00:00:00+00:00",
        "updated": None,
        "fingerprint": {
            "model": "seed-ae",
            "weights_sha256": "0" * 64,
            "image_size": 8,
            "in_channels": 3,
            "embedding_dim": 4,
        },
        "metric": "l2",
        "index_type": "flat",
        "index_type_requested": "auto",
        "index_params": {},
        "recall_at_10": None,
        "run": "/nowhere/run",
        "source": "test",
        "data": None,
        "class_names": ["a", "b"],
    }
    items = [IndexItem(f"x/{i}.png", f"/x/{i}.png", i % 2, "f" * 64) for i in range(6)]
    index = ImageIndex(
        embeddings=vectors, items=items, meta=meta, built=backends.build_index(vectors, "flat")
    )
    path = tmp_path_factory.mktemp("prop") / "valid.index"
    index.save(path)
    assert len(ImageIndex.load(path)) == 6
    return path


def _with_manifest(index_dir: Path, tmp_path: Path, data: bytes) -> Path:
    target = tmp_path / "edited.index"
    target.mkdir(exist_ok=True)
    for name in ("index.faiss", "embeddings.npy"):
        (target / name).write_bytes((index_dir / name).read_bytes())
    (target / "manifest.json").write_bytes(data)
    return target


@SETTINGS
@given(data=st.binary(max_size=300))
def test_any_manifest_bytes_give_a_clear_error(
    index_dir: Path, tmp_path: Path, data: bytes
) -> None:
    with pytest.raises(IndexFormatError):
        ImageIndex.load(_with_manifest(index_dir, tmp_path, data))


@SETTINGS
@given(
    key=st.sampled_from(
        [
            "format",
            "fingerprint",
            "metric",
            "index_type",
            "index_params",
            "recall_at_10",
            "run",
            "data",
            "class_names",
            "items",
            "count",
        ]
    ),
    value=JSON,
)
def test_any_manifest_field_value_loads_or_gives_a_clear_error(
    index_dir: Path, tmp_path: Path, key: str, value: Any
) -> None:
    manifest = json.loads((index_dir / "manifest.json").read_text())
    manifest[key] = value
    path = _with_manifest(index_dir, tmp_path, json.dumps(manifest).encode())
    try:
        index = ImageIndex.load(path)
    except IndexFormatError:
        return
    # Loaded: then everything the faces read works.
    assert len(index) == 6
    index.class_names, index.fingerprint, index.data_spec, index.recall_at_10  # noqa: B018
    index.search(np.zeros((1, 4), dtype=np.float32), 3)


@SETTINGS
@given(index=st.integers(0, 5), key=st.sampled_from(["id", "path", "label", "sha256"]), value=JSON)
def test_any_item_value_loads_or_gives_a_clear_error(
    index_dir: Path, tmp_path: Path, index: int, key: str, value: Any
) -> None:
    manifest = json.loads((index_dir / "manifest.json").read_text())
    manifest["items"][index][key] = value
    path = _with_manifest(index_dir, tmp_path, json.dumps(manifest).encode())
    try:
        loaded = ImageIndex.load(path)
    except IndexFormatError:
        return
    assert all(isinstance(it.id, str) for it in loaded.items)


# Random bytes may claim a pickle protocol torch.load warns about before refusing them.
@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@SETTINGS
@given(data=st.binary(max_size=300))
def test_any_checkpoint_bytes_give_a_run_error(tmp_path: Path, data: bytes) -> None:
    ckpt = tmp_path / "run" / "checkpoints" / "epoch-0001.pt"
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    ckpt.write_bytes(data)
    with pytest.raises(RunError):
        load_run(ckpt)
    with pytest.raises(RunError):
        load_run(tmp_path / "run")


@SETTINGS
@given(data=st.binary(max_size=300))
def test_any_decode_cache_manifest_means_decode_afresh(tmp_path: Path, data: bytes) -> None:
    entry = tmp_path / "entry"
    entry.mkdir(exist_ok=True)
    (entry / "manifest.json").write_bytes(data)
    assert folder_module._read_cache(entry, tmp_path) is None


@SETTINGS
@given(raw=st.binary(max_size=200) | JSON.map(lambda v: json.dumps(v).encode()))
def test_any_config_json_gives_a_value_error(raw: bytes) -> None:
    try:
        value = json.loads(raw)
        if not isinstance(value, dict):
            raise ValueError("config.json must hold an object")
        TrainConfig.from_dict(value)
    except ValueError:
        pass


@SETTINGS
@given(key=st.sampled_from(["epochs", "batch_size", "lr", "threads", "label_fraction"]), value=JSON)
def test_any_config_field_value_gives_a_value_error(key: str, value: Any) -> None:
    with contextlib.suppress(ValueError):
        TrainConfig.from_dict({key: value})
