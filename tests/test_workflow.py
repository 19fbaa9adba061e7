"""``prepare`` (behind ``latentsearch up``): train, index and report once, then reuse."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from latentsearch.data import DataError
from latentsearch.index import ImageIndex, streaming
from latentsearch.workflow import WorkflowError, prepare

TINTS = {"blue": (0, 0, 1), "green": (0, 1, 0), "red": (1, 0, 0)}


def _image(path: Path, seed: int, tint: tuple[int, int, int]) -> None:
    rng = np.random.default_rng(seed)
    pixels = np.clip(rng.integers(0, 120, (12, 12, 3)) + np.array(tint) * 130, 0, 255)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels.astype(np.uint8)).save(path)


def _photos(root: Path, classes: bool = True, per_class: int = 8) -> Path:
    for c, (name, tint) in enumerate(TINTS.items()):
        for i in range(per_class):
            _image(root / (name if classes else "") / f"{name}{i}.png", 10 * c + i, tint)
    (root / "notes.txt").write_text("not an image")
    return root


def _quiet(line: str) -> None:
    del line


def test_a_second_call_on_unchanged_images_trains_and_embeds_nothing(tmp_path: Path) -> None:
    photos = _photos(tmp_path / "photos")
    first = prepare(photos, tmp_path / "work", labels=True, epochs=1, log=_quiet, progress=False)
    assert first.trained and first.recipe == "supervised"
    assert first.count == 24 and first.embedded == 24
    assert [p for p, _ in first.skipped] == [str(photos / "notes.txt")]
    assert first.report is not None and first.report.is_file()
    index = ImageIndex.load(first.index)
    assert sorted(index.class_names) == sorted(TINTS)

    again = prepare(photos, tmp_path / "work", labels=True, epochs=1, log=_quiet, progress=False)
    assert not again.trained and again.embedded == 0
    assert again.run == first.run and again.report == first.report


def test_changed_images_train_anew_unless_the_model_is_kept(tmp_path: Path) -> None:
    photos = _photos(tmp_path / "photos", classes=False)
    first = prepare(photos, tmp_path / "work", epochs=1, log=_quiet, progress=False)
    assert first.recipe == "auto"
    # Without classes the report is still written: distances and thumbnails, no scores.
    assert first.report is not None and first.report.is_file()
    saved = json.loads((first.report.parent / "report.json").read_text())
    assert saved["labelled"] is False and saved["metrics"] is None

    _image(photos / "new.png", 99, (1, 1, 0))
    kept = prepare(photos, tmp_path / "work", epochs=1, keep_model=True, log=_quiet, progress=False)
    assert not kept.trained and kept.run == first.run
    assert kept.count == 25 and kept.embedded == 1  # only the new image is embedded

    (photos / "new.png").unlink()
    _image(photos / "other.png", 98, (0, 1, 1))
    fresh = prepare(photos, tmp_path / "work", epochs=1, log=_quiet, progress=False)
    assert fresh.trained and fresh.run != first.run
    assert fresh.count == 25 and fresh.embedded == 25  # a new model embeds every image


def test_a_folder_without_readable_images_writes_nothing(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "a.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(DataError, match="no readable image"):
        prepare(photos, tmp_path / "work", epochs=1, log=_quiet, progress=False)
    assert not (tmp_path / "work").exists()
    with pytest.raises(WorkflowError, match="is not a folder"):
        prepare(tmp_path / "missing", tmp_path / "work", log=_quiet, progress=False)


def test_a_work_folder_of_other_files_is_refused(tmp_path: Path) -> None:
    photos = _photos(tmp_path / "photos", per_class=2)
    work = tmp_path / "work"
    work.mkdir()
    (work / "thesis.tex").write_text("precious")
    with pytest.raises(WorkflowError, match="did not write"):
        prepare(photos, work, epochs=1, log=_quiet, progress=False)
    assert (work / "thesis.tex").read_text() == "precious"


def test_an_interrupted_call_leaves_a_run_the_next_call_reuses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    photos = _photos(tmp_path / "photos", per_class=4)

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(streaming, "index_images", interrupted)
        with pytest.raises(KeyboardInterrupt):
            prepare(photos, tmp_path / "work", epochs=1, report=False, log=_quiet, progress=False)
    assert not (tmp_path / "work" / "index").exists()  # no half-written index

    done = prepare(photos, tmp_path / "work", epochs=1, report=False, log=_quiet, progress=False)
    assert not done.trained and done.count == 12


def _train_layout(root: Path) -> Path:
    for c, (name, tint) in enumerate(TINTS.items()):
        for i in range(4):
            split = "test" if i == 3 else "train"
            _image(root / split / name / f"{name}{i}.png", 10 * c + i, tint)
    return root


def test_only_the_train_class_layout_gives_labels_unless_asked(tmp_path: Path) -> None:
    folders = _photos(tmp_path / "by-year", per_class=3)  # blue/, green/, red/: folders
    said: list[str] = []
    plain = prepare(folders, tmp_path / "w1", epochs=1, report=False, log=said.append)
    assert plain.recipe == "auto"
    assert any("read as folders, not classes" in line and "--labels" in line for line in said)
    index = ImageIndex.load(plain.index)
    assert index.class_names == [] and all(item.label == -1 for item in index.items)

    asked = prepare(folders, tmp_path / "w2", labels=True, epochs=1, report=False, log=_quiet)
    assert asked.recipe == "supervised"

    layout = _train_layout(tmp_path / "split")
    said.clear()
    explicit = prepare(layout, tmp_path / "w3", epochs=1, report=False, log=said.append)
    assert explicit.recipe == "supervised"
    assert any("train/<class>/ layout" in line for line in said)
    ignored = prepare(layout, tmp_path / "w4", labels=False, epochs=1, report=False, log=_quiet)
    assert ignored.recipe == "auto"

    with pytest.raises(WorkflowError, match="no class folders"):
        prepare(_photos(tmp_path / "flat", classes=False), tmp_path / "w5", labels=True)
    assert not (tmp_path / "w5").exists()


def test_one_readable_picture_is_refused_and_nothing_is_written(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    _image(photos / "only.png", 0, (1, 0, 0))
    (photos / "broken.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(WorkflowError, match="one readable image"):
        prepare(photos, tmp_path / "work", log=_quiet, progress=False)
    assert not (tmp_path / "work").exists()


def test_training_says_how_long_and_shows_epochs_without_a_terminal(tmp_path: Path) -> None:
    photos = _photos(tmp_path / "photos", classes=False, per_class=4)
    said: list[str] = []
    prepare(photos, tmp_path / "work", epochs=3, report=False, log=said.append, progress=False)
    assert any(line.startswith("auto recipe: ") for line in said)  # what it chose and why
    estimate = [line for line in said if line.startswith("training 3 epochs of")]
    assert estimate and "min on a 2-core CPU" in estimate[0]
    epochs = [line for line in said if line.startswith("epoch ")]
    assert [line.split(":")[0] for line in epochs] == ["epoch 1/3", "epoch 2/3", "epoch 3/3"]
    assert all("min left" in line for line in epochs)
