"""Loading checks every field an index folder holds: a clear IndexFormatError, or an index
whose every item can be searched and shown (issue 38, item 8)."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from latentsearch.index import ImageIndex, IndexFormatError, IndexItem, backends
from latentsearch.index.image_index import INDEX_FORMAT

N, D = 6, 4
SETTINGS = settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**40), 2**40)
    | st.floats()
    | st.text(max_size=8)
    | st.sampled_from(["zz", "0" * 64, "F" * 64, "flat", "auto", "hnsw", "fp32"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=6,
)


@pytest.fixture(scope="module")
def valid(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A valid 6-item flat index of 4-d vectors with two classes, built without a run."""
    vectors = np.random.default_rng(0).normal(size=(N, D)).astype(np.float32)
    meta: dict[str, Any] = {
        "format": INDEX_FORMAT,
        "created": "2026-01-01T00:00:00+00:00",
        "updated": None,
        "fingerprint": {
            "model": "seed-ae",
            "weights_sha256": "0" * 64,
            "image_size": 8,
            "in_channels": 3,
            "embedding_dim": D,
        },
        "metric": "l2",
        "backend": "faiss",
        "index_type": "flat",
        "index_type_requested": "auto",
        "index_params": {},
        "recall_at_10": None,
        "precision": "fp32",
        "run": "/nowhere/run",
        "source": "test",
        "data": None,
        "class_names": ["a", "b"],
    }
    items = [IndexItem(f"x/{i}.png", f"/x/{i}.png", i % 2 - (i == 5), "f" * 64) for i in range(N)]
    path = tmp_path_factory.mktemp("valid") / "valid.index"
    ImageIndex(
        embeddings=vectors, items=items, meta=meta, built=backends.build_index(vectors, "flat")
    ).save(path)
    return path


def _edited(valid: Path, tmp_path: Path, manifest: Any = None, embeddings: Any = None) -> Path:
    """A copy of ``valid`` with its manifest (a JSON value) or embeddings (an array) replaced."""
    target = tmp_path / "edited.index"
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(valid, target)
    if manifest is not None:
        (target / "manifest.json").write_text(json.dumps(manifest))
    if embeddings is not None:
        np.save(target / "embeddings.npy", embeddings, allow_pickle=False)
    return target


def _manifest(valid: Path) -> dict[str, Any]:
    manifest: dict[str, Any] = json.loads((valid / "manifest.json").read_text())
    return manifest


def _load_or_clear_error(path: Path) -> ImageIndex | None:
    """The index, or None after an IndexFormatError: any other exception fails the test."""
    try:
        return ImageIndex.load(path)
    except IndexFormatError as e:
        assert "\n" not in str(e)
        return None


def _assert_usable(index: ImageIndex, path: Path) -> None:
    """What the faces read of an index works, item by item, and is what the file says."""
    manifest = _manifest(path)
    assert len(index) == len(manifest["items"]) == manifest.get("count", len(index))
    emb = index.embeddings
    assert emb.dtype == np.float32 and emb.shape == (len(index), index.embedding_dim)
    assert np.isfinite(emb).all()
    names = index.class_names
    for item in index.items:
        assert item.label == -1 or 0 <= item.label < len(names)
        assert item.sha256 is None or len(bytes.fromhex(item.sha256)) == 32
        assert item.path is None or isinstance(item.path, str)
        for n in index.neighbors_of(item.id, 3):  # the server's /items/{id}/neighbors
            assert math.isfinite(n.distance) and n.class_name in (*names, None)
    index.search(np.zeros((1, index.embedding_dim), dtype=np.float32), 2)
    fp = index.fingerprint
    assert all(isinstance(fp[k], int) and fp[k] > 0 for k in ("image_size", "in_channels"))
    recall = index.recall_at_10
    assert recall is None or 0 <= recall <= 1
    json.dumps(  # what /stats and the exports write: strict JSON, no NaN
        {k: v for k, v in index.manifest.items() if k != "items"}, allow_nan=False
    )


@pytest.mark.parametrize(
    ("edit", "why"),
    [
        (lambda m: m["items"][1].update(label=999), "has label 999, but there are 2 class"),
        (lambda m: m["items"][1].update(label=-2), "has label -2"),
        (lambda m: m["items"][2].update(sha256="zz"), "sha256 'zz' is not 64 hex digits"),
        (lambda m: m.update(count=-1), "count -1 is not the number of items, 6"),
        (lambda m: m.update(count=10**12), "count 1000000000000 is not the number"),
        (lambda m: m.update(count="6"), "count '6' is not"),
        (lambda m: m["fingerprint"].update(embedding_dim="4"), "embedding_dim must be a positive"),
        (lambda m: m["fingerprint"].update(image_size=0), "image_size must be a positive"),
        (lambda m: m["fingerprint"].pop("in_channels"), "fingerprint lacks in_channels"),
        (lambda m: m.update(index_params={"efSearch": "16"}), "index_params must map names"),
        (lambda m: m.update(recall_at_10=float("nan")), "recall_at_10 must be a number in"),
        (lambda m: m.update(source=["a"]), "source must be a string or null"),
        (lambda m: m.update(index_type_requested="huge"), "unknown index_type_requested"),
    ],
)
def test_a_manifest_field_out_of_range_is_named(
    valid: Path, tmp_path: Path, edit: Any, why: str
) -> None:
    manifest = _manifest(valid)
    edit(manifest)
    with pytest.raises(IndexFormatError, match="malformed") as e:
        ImageIndex.load(_edited(valid, tmp_path, manifest=manifest))
    assert why in str(e.value)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_embeddings_that_are_not_finite_are_refused(
    valid: Path, tmp_path: Path, bad: float
) -> None:
    embeddings = np.load(valid / "embeddings.npy")
    embeddings[4, 1] = bad
    with pytest.raises(IndexFormatError, match=r"NaN or infinite values \(row 4 first\)"):
        ImageIndex.load(_edited(valid, tmp_path, embeddings=embeddings))
    # Finite values too large for a float32 sum are still finite: the index loads.
    embeddings[:] = np.finfo(np.float32).max
    _assert_usable(ImageIndex.load(_edited(valid, tmp_path, embeddings=embeddings)), valid)


def test_the_valid_index_is_usable(valid: Path) -> None:
    _assert_usable(ImageIndex.load(valid), valid)


@SETTINGS
@given(
    key=st.sampled_from(
        [
            "count",
            "created",
            "updated",
            "source",
            "data",
            "run",
            "index_type_requested",
            "index_params",
            "recall_at_10",
            "precision",
            "backend",
            "class_names",
        ]
    ),
    value=JSON,
)
def test_any_manifest_value_gives_a_clear_error_or_a_usable_index(
    valid: Path, tmp_path: Path, key: str, value: Any
) -> None:
    manifest = _manifest(valid)
    manifest[key] = value
    path = _edited(valid, tmp_path, manifest=manifest)
    index = _load_or_clear_error(path)
    if index is not None:
        _assert_usable(index, path)


@SETTINGS
@given(
    key=st.sampled_from(["model", "weights_sha256", "image_size", "in_channels", "embedding_dim"]),
    value=JSON | st.integers(-3, 10),
)
def test_any_fingerprint_value_gives_a_clear_error_or_a_usable_index(
    valid: Path, tmp_path: Path, key: str, value: Any
) -> None:
    manifest = _manifest(valid)
    manifest["fingerprint"][key] = value
    path = _edited(valid, tmp_path, manifest=manifest)
    index = _load_or_clear_error(path)
    if index is not None:
        _assert_usable(index, path)


@SETTINGS
@given(
    position=st.integers(0, N - 1),
    key=st.sampled_from(["id", "path", "label", "sha256"]),
    value=JSON | st.integers(-3, 1000),
)
def test_any_item_value_gives_a_clear_error_or_a_usable_index(
    valid: Path, tmp_path: Path, position: int, key: str, value: Any
) -> None:
    manifest = _manifest(valid)
    manifest["items"][position][key] = value
    path = _edited(valid, tmp_path, manifest=manifest)
    index = _load_or_clear_error(path)
    if index is not None:
        _assert_usable(index, path)


_DTYPES = st.sampled_from([np.float32, np.float64, np.float16, np.int32])
_SHAPES = st.sampled_from([(N, D), (N, D + 1), (N - 1, D), (N * D,), (N, D, 1), (0, D)])


@SETTINGS
@given(
    embeddings=st.one_of(
        hnp.arrays(np.float32, (N, D), elements=st.floats(width=32)),  # NaN and inf among them
        hnp.arrays(_DTYPES, _SHAPES, elements=st.integers(-3, 3)),
    )
)
def test_any_embeddings_give_a_clear_error_or_a_usable_index(
    valid: Path, tmp_path: Path, embeddings: np.ndarray
) -> None:
    path = _edited(valid, tmp_path, embeddings=embeddings)
    index = _load_or_clear_error(path)
    if index is not None:
        _assert_usable(index, path)
