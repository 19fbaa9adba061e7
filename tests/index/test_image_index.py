"""ImageIndex on a tiny image folder: build, persist, search, update, duplicates, errors."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from latentsearch import embedding
from latentsearch.data import ImageData, load_data, read_image
from latentsearch.index import (
    FingerprintMismatch,
    ImageIndex,
    ImageIndexError,
    IndexFormatError,
    IndexSpec,
    UnknownItem,
    all_images,
    image_index,
    storage,
    streaming,
)
from latentsearch.metrics import nearest_neighbors
from latentsearch.precision import PrecisionError, cpu_has_native_bf16
from latentsearch.runs import Run

PER_CLASS = 6  # images per class folder in the fixture (conftest.make_folder)


def _data(folder: Path) -> ImageData:
    return all_images(load_data(str(folder), image_size=8))


@pytest.fixture
def index(run: Run, folder: Path) -> ImageIndex:
    return ImageIndex.build(run, _data(folder), data_spec=str(folder))


def _neighbor_ids(index: ImageIndex, run: Run, pixels: np.ndarray, k: int) -> list[list[str]]:
    return [[n.id for n in row] for row in index.search_images(run, pixels, k)]


def test_build_indexes_every_readable_image_and_lists_the_corrupt_one(
    run: Run, folder: Path
) -> None:
    data = _data(folder)
    index = ImageIndex.build(run, data)
    assert len(index) == 3 * PER_CLASS
    assert [it.id for it in index.items] == data.ids
    assert index.class_names == ["blue", "green", "red"]
    assert {it.label for it in index.items} == {0, 1, 2}
    assert "red/broken.jpg" not in {it.id for it in index.items}
    skipped = dict(data.skipped)
    assert list(skipped) == [str(folder.resolve() / "red/broken.jpg")]
    assert "corrupt or truncated" in skipped[str(folder.resolve() / "red/broken.jpg")]
    first = index.items[0]
    assert first.path == str(folder.resolve() / first.id)
    assert first.sha256 is not None and len(first.sha256) == 64
    assert index.index_type == "flat" and index.recall_at_10 is None


def test_search_matches_exact_numpy_search(run: Run, index: ImageIndex) -> None:
    query = index.embeddings[[0, 7]] + 0.01
    distances, positions = index.search(query, 5)
    want_d, want_i = nearest_neighbors(query, np.asarray(index.embeddings), 5)
    np.testing.assert_array_equal(positions, want_i)
    np.testing.assert_allclose(distances, want_d, rtol=1e-4, atol=1e-6)


def test_indexed_image_finds_itself_first(run: Run, index: ImageIndex, folder: Path) -> None:
    item = index.item("green/03.png")
    pixels = read_image(item.path or "", 8)[None]
    (hits,) = index.search_images(run, pixels, 3)
    assert [n.rank for n in hits] == [1, 2, 3]
    best = hits[0]
    assert best.id == "green/03.png" and best.position == index.position("green/03.png")
    assert best.class_name == "green" and best.label == 1
    assert best.path == str(folder.resolve() / "green/03.png")
    typical = float(np.median([n.distance for n in hits[1:]]))
    assert best.distance <= 1e-4 * typical + 1e-9
    assert hits[0].distance <= hits[1].distance <= hits[2].distance


def test_save_load_round_trip_gives_the_same_neighbours(
    run: Run, index: ImageIndex, folder: Path, tmp_path: Path
) -> None:
    pixels = np.asarray(_data(folder).pixels[[1, 8, 15]])
    before = index.search_images(run, pixels, 4)
    index.save(tmp_path / "idx")
    assert sorted(p.name for p in (tmp_path / "idx").iterdir()) == [
        "embeddings.npy",
        "index.faiss",
        "manifest.json",
    ]
    loaded = ImageIndex.load(tmp_path / "idx")
    assert loaded.search_images(run, pixels, 4) == before
    assert loaded.items == index.items
    np.testing.assert_array_equal(loaded.embeddings, index.embeddings)
    assert loaded.fingerprint == run.fingerprint
    assert loaded.data_spec == str(folder)


def test_manifest_describes_the_index(run: Run, index: ImageIndex, tmp_path: Path) -> None:
    index.save(tmp_path / "idx")
    m = json.loads((tmp_path / "idx" / "manifest.json").read_text())
    assert m["format"] == "latentsearch-index/1"
    assert m["metric"] == "l2" and m["index_type"] == "flat" and m["recall_at_10"] is None
    assert m["fingerprint"] == {
        "model": "seed-ae",
        "weights_sha256": run.fingerprint["weights_sha256"],
        "image_size": 8,
        "in_channels": 3,
        "embedding_dim": 128,
    }
    assert m["run"] == str(Path(run.path).resolve())
    assert m["class_names"] == ["blue", "green", "red"]
    assert m["created"].endswith("+00:00") and m["source"]
    assert m["count"] == len(m["items"]) == len(index)
    assert set(m["items"][0]) == {"id", "path", "label", "sha256"}
    emb = np.load(tmp_path / "idx" / "embeddings.npy")
    assert emb.dtype == np.float32 and emb.shape == (len(index), 128)


def test_item_lookup_and_unknown_ids(index: ImageIndex) -> None:
    assert index.item("blue/00.png").label == 0
    assert index.items[index.position("red/04.png")].id == "red/04.png"
    with pytest.raises(UnknownItem, match=r"nope\.png"):
        index.item("nope.png")
    with pytest.raises(ValueError):
        index.position("nope.png")


def test_search_rejects_bad_queries(index: ImageIndex, run: Run) -> None:
    with pytest.raises(ImageIndexError, match="dimension 3"):
        index.search(np.zeros((1, 3), dtype=np.float32), 2)
    with pytest.raises(ImageIndexError, match="NaN"):
        index.search(np.full((1, 128), np.nan, dtype=np.float32), 2)
    with pytest.raises(ImageIndexError, match="k must be"):
        index.search(np.zeros((1, 128), dtype=np.float32), 0)
    with pytest.raises(ValueError, match="8×8×3"):
        index.search_images(run, np.zeros((1, 16, 16, 3), dtype=np.uint8), 2)
    d, p = index.search(np.zeros((2, 128), dtype=np.float32), 100)  # k capped at N
    assert d.shape == p.shape == (2, len(index))


def test_images_of_another_size_are_refused(run: Run, folder: Path) -> None:
    data = all_images(load_data(str(folder), image_size=16))
    with pytest.raises(ImageIndexError, match="image_size=8"):
        ImageIndex.build(run, data)


def test_unknown_index_type_is_refused(run: Run, folder: Path) -> None:
    with pytest.raises(ImageIndexError, match="unknown index type"):
        ImageIndex.build(run, _data(folder), index_type="annoy")


def test_fingerprint_mismatch_is_refused(
    index: ImageIndex, other_run: Run, run: Run, folder: Path
) -> None:
    assert other_run.fingerprint["weights_sha256"] != run.fingerprint["weights_sha256"]
    index.check_compatible(run)
    with pytest.raises(FingerprintMismatch, match="weights") as err:
        index.check_compatible(other_run)
    assert "model" not in str(err.value).split("):", 1)[1]  # only what differs is named
    pixels = np.asarray(_data(folder).pixels[:1])
    with pytest.raises(FingerprintMismatch):
        index.search_images(other_run, pixels, 3)
    with pytest.raises(FingerprintMismatch):
        index.update(other_run, _data(folder))


def test_update_embeds_only_new_and_changed_files(
    run: Run,
    index: ImageIndex,
    folder: Path,
    write_image: Callable[..., Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    old = index.embeddings.copy()
    old_changed = old[index.position("green/01.png")]
    write_image(folder / "blue" / "new.png", seed=999, tint=(0, 0, 1))  # added
    write_image(folder / "green" / "01.png", seed=998, tint=(0, 1, 0))  # changed
    (folder / "red" / "04.png").unlink()  # removed
    embedded: list[int] = []
    real = streaming.embed_images

    def counting(model, pixels, **kw):  # type: ignore[no-untyped-def]
        embedded.append(len(pixels))
        return real(model, pixels, **kw)

    monkeypatch.setattr(streaming, "embed_images", counting)
    report = index.update(run, _data(folder))

    assert report.added == ["blue/new.png"]
    assert report.changed == ["green/01.png"]
    assert report.removed == ["red/04.png"]
    assert len(report.unchanged) == 3 * PER_CLASS - 2
    assert embedded == [2] and report.embedded == 2
    assert len(index) == 3 * PER_CLASS
    assert "red/04.png" not in {it.id for it in index.items}
    # Unchanged items keep their stored embedding; the changed one got a new one.
    np.testing.assert_array_equal(index.embeddings[index.position("blue/00.png")], old[0])
    assert not np.allclose(index.embeddings[index.position("green/01.png")], old_changed)
    fresh = ImageIndex.build(run, _data(folder))
    assert [it.id for it in fresh.items] == [it.id for it in index.items]
    np.testing.assert_allclose(fresh.embeddings, index.embeddings, rtol=1e-5, atol=1e-5)
    # The rebuilt FAISS index serves the new item.
    pixels = read_image(folder / "blue" / "new.png", 8)[None]
    assert index.search_images(run, pixels, 1)[0][0].id == "blue/new.png"


def test_update_without_changes_embeds_nothing(
    run: Run, index: ImageIndex, folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(streaming, "embed_images", lambda *a, **k: pytest.fail("embedded"))
    report = index.update(run, _data(folder))
    assert (report.added, report.changed, report.removed) == ([], [], [])
    assert len(report.unchanged) == len(index)


def test_updated_index_saves_and_loads(
    run: Run, index: ImageIndex, folder: Path, tmp_path: Path
) -> None:
    index.save(tmp_path / "idx")
    loaded = ImageIndex.load(tmp_path / "idx")
    (folder / "blue" / "00.png").unlink()
    loaded.update(run, _data(folder))
    loaded.save(tmp_path / "idx")
    again = ImageIndex.load(tmp_path / "idx")
    assert len(again) == len(index) - 1
    assert again.manifest["updated"] is not None


def test_failed_save_leaves_the_old_index_loadable(
    run: Run, index: ImageIndex, folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dest = tmp_path / "idx"
    index.save(dest)
    (folder / "blue" / "00.png").unlink()
    index.update(run, _data(folder))

    real = storage.write_file
    calls: list[Path] = []

    def failing(path: Path, write):  # type: ignore[no-untyped-def]
        calls.append(path)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        real(path, write)

    monkeypatch.setattr(storage, "write_file", failing)
    with pytest.raises(OSError, match="not enough space in"):
        index.save(dest)
    monkeypatch.undo()

    old = ImageIndex.load(dest)
    assert len(old) == 3 * PER_CLASS and "blue/00.png" in {it.id for it in old.items}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["default-cache", "idx", "images"]
    assert calls[0].parent != dest  # files were written in a temporary sibling


def test_save_replaces_an_index_and_leaves_nothing_behind(
    index: ImageIndex, run: Run, folder: Path, tmp_path: Path
) -> None:
    dest = tmp_path / "out" / "idx"
    index.save(dest)
    shutil.rmtree(folder / "green")
    index.update(run, _data(folder))
    index.save(dest)
    assert len(ImageIndex.load(dest)) == 2 * PER_CLASS
    assert [p.name for p in dest.parent.iterdir()] == ["idx"]


def test_save_refuses_to_overwrite_a_folder_that_is_not_an_index(
    index: ImageIndex, folder: Path
) -> None:
    with pytest.raises(IndexFormatError, match="refusing"):
        index.save(folder)
    assert (folder / "blue" / "00.png").is_file()


def test_load_explains_missing_and_corrupt_indexes(index: ImageIndex, tmp_path: Path) -> None:
    with pytest.raises(IndexFormatError, match="no index at"):
        ImageIndex.load(tmp_path / "absent")
    dest = index.save(tmp_path / "idx")
    (dest / "embeddings.npy").unlink()
    with pytest.raises(IndexFormatError, match=r"embeddings\.npy is missing"):
        ImageIndex.load(dest)

    index.save(dest)
    (dest / "index.faiss").write_bytes(b"garbage" * 10)
    with pytest.raises(IndexFormatError, match="corrupt"):
        ImageIndex.load(dest)

    index.save(dest)
    (dest / "manifest.json").write_text("{not json")
    with pytest.raises(IndexFormatError, match="corrupt"):
        ImageIndex.load(dest)

    index.save(dest)
    m = json.loads((dest / "manifest.json").read_text())
    m["format"] = "latentsearch-index/99"
    (dest / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(IndexFormatError, match="99"):
        ImageIndex.load(dest)

    index.save(dest)
    m = json.loads((dest / "manifest.json").read_text())
    m["items"] = m["items"][:-1]
    (dest / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(IndexFormatError, match="count 18 is not the number of items, 17"):
        ImageIndex.load(dest)
    m["count"] = 17  # the manifest agrees with itself, not with the vectors
    (dest / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(IndexFormatError, match="promises"):
        ImageIndex.load(dest)


def test_duplicates_find_a_copy_under_another_name_and_nothing_else(run: Run, folder: Path) -> None:
    shutil.copy(folder / "red" / "02.jpg", folder / "blue" / "copy-of-red.jpg")
    index = ImageIndex.build(run, _data(folder))
    d, _ = index.search(index.embeddings, 2)
    nearest_other = float(np.sort(d[:, 1])[2])  # beyond the copied pair itself
    groups = index.duplicates(threshold=1e-3 * nearest_other)
    assert [[it.id for it in g] for g in groups] == [["blue/copy-of-red.jpg", "red/02.jpg"]]
    a, b = groups[0]
    assert a.sha256 == b.sha256
    with pytest.raises(ImageIndexError, match="positive"):
        index.duplicates(0.0)


def test_the_default_duplicate_threshold_is_wider_for_photographs_with_a_texture_part(
    run: Run, folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from latentsearch.index import duplicates

    index = ImageIndex.build(run, _data(folder))
    typical = duplicates.typical_distance(index.embeddings)
    assert index.default_duplicate_threshold() == pytest.approx(
        duplicates.DEFAULT_DUPLICATE_FRACTION * typical
    )
    photo_run = tmp_path / "photo-run"
    photo_run.mkdir()
    config = {"model": "resnet-s", "model_kwargs": {"width": 16, "texture_weight": 0.4}}
    (photo_run / "config.json").write_text(json.dumps(config))
    monkeypatch.setattr(ImageIndex, "run_path", property(lambda self: photo_run))
    assert index.default_duplicate_threshold() == pytest.approx(
        duplicates.PHOTO_DUPLICATE_FRACTION * typical
    )
    (photo_run / "config.json").unlink()  # a run that has moved: the general default
    assert index.default_duplicate_threshold() == pytest.approx(
        duplicates.DEFAULT_DUPLICATE_FRACTION * typical
    )


def test_hnsw_index_works_and_reports_recall(run: Run, folder: Path, tmp_path: Path) -> None:
    index = ImageIndex.build(run, _data(folder), index_type="hnsw")
    assert index.index_type == "hnsw"
    assert index.recall_at_10 is not None and 0.95 <= index.recall_at_10 <= 1.0
    assert {"M", "efConstruction", "efSearch"} <= set(index.index_params)
    pixels = read_image(folder / "red" / "03.png", 8)[None]
    assert index.search_images(run, pixels, 1)[0][0].id == "red/03.png"
    index.save(tmp_path / "idx")
    loaded = ImageIndex.load(tmp_path / "idx")
    assert loaded.index_type == "hnsw" and loaded.recall_at_10 == index.recall_at_10
    assert loaded.index_params == index.index_params
    assert _neighbor_ids(loaded, run, pixels, 5) == _neighbor_ids(index, run, pixels, 5)


def test_ivf_index_works(run: Run, folder: Path) -> None:
    index = ImageIndex.build(run, _data(folder), index_type="ivf")
    assert index.index_type == "ivf" and index.recall_at_10 is not None
    pixels = read_image(folder / "green" / "00.png", 8)[None]
    assert index.search_images(run, pixels, 1)[0][0].id == "green/00.png"


def test_array_sources_have_no_paths_or_hashes(run: Run) -> None:
    rng = np.random.default_rng(0)
    data = ImageData(
        pixels=rng.integers(0, 256, (5, 8, 8, 3), dtype=np.uint8),
        labels=np.array([0, 1, -1, 0, 1]),
        class_names=["a", "b"],
        ids=[f"x/{i}" for i in range(5)],
        source="arrays",
    )
    index = ImageIndex.build(run, data)
    assert all(it.path is None and it.sha256 is None for it in index.items)
    hits = index.search_images(run, data.pixels[2:3], 2)[0]
    assert hits[0].id == "x/2" and hits[0].class_name is None and hits[0].label == -1
    report = index.update(run, data)  # no hashes to compare: everything re-embedded
    assert report.changed == data.ids and report.unchanged == []


def test_duplicate_ids_are_refused(run: Run) -> None:
    data = ImageData(
        pixels=np.zeros((2, 8, 8, 3), dtype=np.uint8),
        labels=np.array([-1, -1]),
        class_names=[],
        ids=["same", "same"],
    )
    with pytest.raises(ImageIndexError, match="unique"):
        ImageIndex.build(run, data)


# ---------------------------------------------------------------------------- lookups
def test_neighbors_of_a_stored_item_equal_a_search_with_its_image(
    run: Run, index: ImageIndex
) -> None:
    item = index.item("green/03.png")
    stored = index.neighbors_of(item.id, 4)
    (searched,) = index.search_images(run, read_image(item.path or "", 8)[None], 4)
    assert [n.id for n in stored] == [n.id for n in searched]
    assert stored[0].id == item.id and stored[0].distance == pytest.approx(0.0, abs=1e-6)
    assert [n.rank for n in stored] == [1, 2, 3, 4]
    assert all(n.class_name == index.class_name(n.label) for n in stored)
    with pytest.raises(UnknownItem):
        index.neighbors_of("nope.png", 3)
    with pytest.raises(ImageIndexError, match="k must be"):
        index.neighbors_of(item.id, 0)


def test_class_name_of_a_label(index: ImageIndex) -> None:
    assert [index.class_name(c) for c in (0, 1, 2)] == ["blue", "green", "red"]
    assert index.class_name(-1) is None and index.class_name(3) is None


def test_an_index_is_labelled_only_with_class_names_and_a_labelled_item(
    run: Run, index: ImageIndex
) -> None:
    assert index.labelled
    assert list(index.items.labels()) == [it.label for it in index.items]
    pixels = np.zeros((2, 8, 8, 3), dtype=np.uint8)
    no_names = ImageData(pixels=pixels, labels=np.array([-1, -1]), class_names=[], ids=["a", "b"])
    assert not ImageIndex.build(run, no_names).labelled
    names_only = replace(no_names, class_names=["originals", "queries"])
    assert not ImageIndex.build(run, names_only).labelled


def test_given_embeddings_are_indexed_as_they_are(run: Run, folder: Path) -> None:
    from latentsearch.embedding import embed_images

    data = _data(folder)
    embeddings = embed_images(run.model, data.pixels)
    given = ImageIndex.build(run, data, embeddings=embeddings)
    np.testing.assert_array_equal(given.embeddings, ImageIndex.build(run, data).embeddings)
    with pytest.raises(ImageIndexError, match="one row per image"):
        ImageIndex.build(run, data, embeddings=embeddings[:-1])


def test_stored_pixels_of_array_sources_come_from_the_recorded_spec(tiny_run: Run) -> None:
    from latentsearch.index import StoredPixelsUnavailable

    digits = all_images(load_data("digits"))
    subset = digits.subset(np.arange(5))
    index = ImageIndex.build(tiny_run, subset, data_spec="digits")
    item_id = subset.ids[3]
    np.testing.assert_array_equal(index.stored_pixels(item_id), subset.pixels[3])
    with pytest.raises(UnknownItem):
        index.stored_pixels("not-indexed")
    bare = ImageIndex.build(tiny_run, subset)
    with pytest.raises(StoredPixelsUnavailable, match="does not record where"):
        bare.stored_pixels(item_id)
    elsewhere = ImageIndex.build(tiny_run, subset, data_spec="/no/such/folder")
    with pytest.raises(StoredPixelsUnavailable, match="cannot be loaded here"):
        elsewhere.stored_pixels(item_id)


# ---------------------------------------------------------------------------- precision
needs_bf16 = pytest.mark.skipif(
    not cpu_has_native_bf16(), reason="this CPU has no native bf16 (AVX-512 BF16 / AMX)"
)


@needs_bf16
def test_a_bf16_index_records_its_precision_and_queries_in_it(
    run: Run, index: ImageIndex, folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = _data(folder)
    fast = ImageIndex.build(run, data, precision="bf16")
    assert (index.precision, fast.precision) == ("fp32", "bf16")
    # Close to the fp32 vectors, not equal to them: autocast did run.
    gap = np.linalg.norm(fast.embeddings - index.embeddings, axis=1)
    assert 0 < gap.max() < 0.05 * np.linalg.norm(index.embeddings, axis=1).min()
    fast.save(tmp_path / "bf16")
    loaded = ImageIndex.load(tmp_path / "bf16")
    assert loaded.precision == "bf16" and loaded.manifest["precision"] == "bf16"
    used: list[str] = []
    real = image_index.embed_images

    def spying(model, pixels, **kw):  # type: ignore[no-untyped-def]
        used.append(kw.get("precision", "fp32"))
        return real(model, pixels, **kw)

    monkeypatch.setattr(image_index, "embed_images", spying)
    hits = loaded.search_images(run, data.pixels, 1)
    assert used == ["bf16"]
    assert [row[0].id for row in hits] == [it.id for it in loaded.items]
    assert max(row[0].distance for row in hits) < 1e-6  # the same vectors as indexed


def test_an_index_without_a_recorded_precision_is_fp32(index: ImageIndex, tmp_path: Path) -> None:
    index.save(tmp_path / "old")
    manifest = json.loads((tmp_path / "old" / "manifest.json").read_text())
    assert manifest.pop("precision") == "fp32"
    (tmp_path / "old" / "manifest.json").write_text(json.dumps(manifest))
    assert ImageIndex.load(tmp_path / "old").precision == "fp32"
    manifest["precision"] = "int3"
    (tmp_path / "old" / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(IndexFormatError, match="unknown precision 'int3'"):
        ImageIndex.load(tmp_path / "old")


def test_a_precision_that_is_not_a_made_one_is_refused(run: Run, index: ImageIndex) -> None:
    with pytest.raises(ImageIndexError, match="precision must be one of fp32, bf16, fp16"):
        ImageIndex.from_embeddings(
            run,
            index.embeddings.copy(),
            index.items,
            class_names=[],
            source="",
            spec=IndexSpec(precision="auto"),
        )


def test_queries_fall_back_to_fp32_with_a_warning_where_the_precision_is_missing(
    run: Run, index: ImageIndex, folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An index embedded in bf16 elsewhere, searched on a machine without bf16.
    elsewhere = ImageIndex.from_embeddings(
        run,
        index.embeddings.copy(),
        index.items,
        class_names=[],
        source="",
        spec=IndexSpec(precision="bf16"),
    )

    def no_bf16(name: str, device: object) -> str:
        if name != "fp32":
            raise PrecisionError(f"precision {name}: this CPU has no native bf16")
        return name

    monkeypatch.setattr(image_index, "resolve_precision", no_bf16)
    monkeypatch.setattr(embedding, "resolve_precision", no_bf16)
    pixels = _data(folder).pixels[:3]
    with pytest.warns(RuntimeWarning, match="embedded in bf16, which this machine lacks"):
        hits = elsewhere.search_images(run, pixels, 2)
    assert [[n.id for n in row] for row in hits] == _neighbor_ids(index, run, pixels, 2)
