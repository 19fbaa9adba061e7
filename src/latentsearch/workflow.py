"""From a folder of images to a trained run, an index and a report, reusing what is done.

``prepare`` is what ``latentsearch up`` runs before it serves. It keeps its work in one folder::

    WORK/runs/<key>/    the run, named by a key of the images' contents and the recipe
    WORK/index/         the index over every readable image, updated in place
    WORK/report/<key>/  the run's report
    WORK/up.json        what the last call did

The key is the SHA-256 of the recipe's settings and of every image's id and content hash, so a
second call on the same images and settings trains nothing and, when no file changed, embeds
nothing. A run interrupted (Ctrl-C) is resumed from its last finished epoch; the index and the
report are written into temporary folders and renamed into place, so an interruption leaves
the previous ones intact and nothing half-written.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from latentsearch.data import DataError, DataSplits, ImageData, load_data
from latentsearch.errors import LatentsearchError
from latentsearch.presets import Recipe

KEY_LENGTH = 16
"""Hex digits of the key in a run folder's name."""

STATE_FILE = "up.json"


class WorkflowError(LatentsearchError):
    """A folder that cannot be prepared (not a folder, a work folder of something else)."""


@dataclass(frozen=True)
class Prepared:
    """What ``prepare`` made or reused.

    Attributes:
        run: The run folder.
        index: The index folder.
        report: The report's ``index.html``, or None when none was asked for.
        recipe: ``"auto"`` (no labels) or ``"supervised"`` (class folders).
        trained: Whether this call trained (False: the run was reused).
        embedded: Images embedded by this call (0 when the index was up to date).
        count: Images in the index.
        skipped: ``(path, reason)`` of files that could not be read.
    """

    run: Path
    index: Path
    report: Path | None
    recipe: str
    trained: bool
    embedded: int
    count: int
    skipped: list[tuple[str, str]]


def _settings_bytes(settings: dict[str, Any]) -> bytes:
    return json.dumps(settings, sort_keys=True).encode()


def collection_key(data: DataSplits, settings: dict[str, Any]) -> str:
    """A key of a collection's contents and the training settings.

    Args:
        data: A loaded image folder (its images carry content hashes).
        settings: What determines the training (JSON-ready).

    Returns:
        ``KEY_LENGTH`` hex digits: equal for the same files' contents under the same ids and
        the same settings.
    """
    h = hashlib.sha256(_settings_bytes(settings))
    for part in (data.train, data.test):
        if part is None:
            continue
        hashes = part.sha256 if part.sha256 is not None else [None] * len(part)
        for id_, sha in zip(part.ids, hashes, strict=True):
            h.update(f"{id_}\0{sha}\n".encode())
    return h.hexdigest()[:KEY_LENGTH]


def choose_labels(photos: Path, classes: list[str], labels: bool | None) -> tuple[bool, str]:
    """Whether ``up`` trains with the class folders' labels, and why, in one line.

    Only the explicit ``train/<class>/`` layout is read as labelled by default: a photo
    archive kept in ``2023/``, ``2024/`` or event folders has folders, not classes.

    Args:
        photos: The folder.
        classes: Its class folders' names, as the folder reader finds them (none: unlabelled).
        labels: True: use the class folders (``--labels``); False: never (``--no-labels``);
            None: only for the ``train/<class>/`` layout.

    Raises:
        WorkflowError: Labels asked for, but the folder has no class folders.
    """
    has = bool(classes)
    if labels is False:
        return False, "labels: not used (--no-labels); the auto recipe trains without them"
    if labels is True:
        if not has:
            raise WorkflowError(
                f"--labels: {photos} has no class folders (<class>/ or train/<class>/ holding "
                "images); drop --labels to train without labels"
            )
        return True, "labels: the class folders, as asked (--labels): supervised recipe"
    if has and (photos / "train").is_dir():
        return True, (
            "labels: the train/<class>/ layout names classes: supervised recipe "
            "(--no-labels ignores them)"
        )
    if has:
        n = len(classes)
        return False, (
            f"labels: none; the {n} subfolders are read as folders, not classes (--labels "
            "trains on them as classes; so does a train/<class>/ layout)"
        )
    return False, "labels: none (no class folders): the auto recipe"


def folder_is_photographs(
    spec: str | Path, paths: Sequence[str] | None = None
) -> tuple[bool, str] | None:
    """Whether a folder holds photographs (``presets.photographs``, from a sample of its
    image headers), and why; None when ``spec`` names no folder of images (a named source,
    idx or CIFAR files), which are never photographs.

    Args:
        spec: The data source as given.
        paths: The folder's image files when the caller has them (not listed again).
    """
    from latentsearch.data.folder import list_image_folder, sample_image_sizes
    from latentsearch.presets import photographs

    if paths is None:
        if not Path(spec).is_dir():
            return None
        try:
            paths = [f.path for f in list_image_folder(spec).files]
        except DataError:
            return None  # not an image folder (idx files, a CIFAR batch folder)
    return photographs(sample_image_sizes(paths))


def choose_auto_recipe(
    spec: str | Path,
    data: DataSplits,
    *,
    protocol: str = "heldout",
    epochs: int | None = None,
    photographs: bool | None = None,
) -> Recipe:
    """The auto recipe for a data source: what ``train`` and ``up`` both train without labels.

    Args:
        spec: The data source as given (a folder's images are checked for photographs).
        data: Its images, loaded.
        protocol: The run's protocol (the recipe is sized to its fit set).
        epochs: The user's epochs, if given.
        photographs: Already decided (``up`` decides it while listing the folder); None:
            decided here from ``spec``.

    Returns:
        The recipe; its reasons include the photograph decision.
    """
    from latentsearch.presets import auto_recipe
    from latentsearch.protocols import make_splits

    said: list[str] = []
    if photographs is None:
        found = folder_is_photographs(spec)
        photographs = bool(found and found[0])
        said = [found[1]] if found else []
    fit = make_splits(data, protocol).fit
    recipe = auto_recipe(fit.pixels, n_fit=len(fit), epochs=epochs, photographs=photographs)
    return replace(recipe, reasons=[*said, *recipe.reasons])


def _settings(
    data: DataSplits,
    labelled: bool,
    epochs: int | None,
    seed: int,
    photographs: bool,
    log: Callable[[str], None],
) -> dict[str, Any]:
    from latentsearch.presets import resolve_preset

    recipe = "supervised" if labelled else "auto"
    if labelled:
        overrides = resolve_preset("supervised")
        if epochs is not None:
            overrides["epochs"] = epochs
    else:  # the recipe takes the given epochs itself (its neighbour start moves with them)
        chosen = choose_auto_recipe("", data, epochs=epochs, photographs=photographs)
        log("auto recipe: " + "; ".join(chosen.reasons))
        overrides = chosen.overrides
    return {"recipe": recipe, "seed": seed, **overrides}


def _read_folder(
    photos: Path, labels: bool | None, log: Callable[[str], None], progress: bool
) -> tuple[DataSplits, bool, bool]:
    """Reads the folder, then decides labels and whether it holds photographs.

    Returns:
        The images (without labels when they are not used), whether they are labelled, and
        whether they are photographs (the auto recipe then adds texture and colour parts).

    Raises:
        WorkflowError: Fewer than two readable images, or labels asked for without classes.
        DataError: No readable image.
    """
    data = load_data(str(photos), progress=progress)  # DataError when nothing is readable
    count = len(data.train) + (len(data.test) if data.test is not None else 0)
    if count < 2:
        raise WorkflowError(
            f"{photos} holds one readable image: nothing to learn from or to search; add "
            "more images"
        )
    labelled, why = choose_labels(photos, data.train.class_names, labels)
    log(why)
    photo = False
    if not labelled:
        paths = [p for part in (data.train, data.test) if part for p in (part.paths or [])]
        found = folder_is_photographs(photos, paths)
        photo = bool(found and found[0])
        if found:
            log(found[1])
    return (data if labelled else data.without_labels()), labelled, photo


EPOCH_LINES = 20
"""About how many epoch lines ``up`` prints when its output is not a terminal."""


def settings_n_fit(data: DataSplits) -> int:
    """Images a run on ``data`` fits on (the held-out protocol keeps a validation share back)."""
    from latentsearch.protocols import make_splits

    return len(make_splits(data, "heldout").fit)


def _estimate(config: Any, n_fit: int) -> str:
    """One line: what will be trained, and about how long it takes on a 2-core CPU."""
    from latentsearch.presets import training_seconds

    seconds = training_seconds(config, n_fit)
    return (
        f"training {config.epochs} epochs of {n_fit:,} images at {config.image_size or 32} px: "
        f"about {max(1, round(seconds / 60))} min on a 2-core CPU (measured speed; the epoch "
        "lines say how it goes here)"
    )


def _epoch_lines(
    epochs: int, log: Callable[[str], None], progress: bool
) -> Callable[[dict[str, Any]], None]:
    """A training ``log`` callback: a line every few epochs when no progress bar is drawn."""
    from latentsearch.progress import show_progress

    every = max(1, epochs // EPOCH_LINES)

    def line(record: dict[str, Any]) -> None:
        epoch = int(record["epoch"])
        if show_progress(progress) or (epoch % every and epoch not in (1, epochs)):
            return
        seconds = float(record.get("wall_seconds", record["seconds"]))
        left = (epochs - epoch) * seconds
        log(
            f"epoch {epoch}/{epochs}: loss {record['train']['loss']:.4f}, {seconds:.1f} s per "
            f"epoch, about {left / 60:.1f} min left"
        )

    return line


def _check_work(work: Path) -> None:
    if work.exists() and not work.is_dir():
        raise WorkflowError(f"work folder {work} exists and is not a folder")
    if work.is_dir() and any(work.iterdir()) and not (work / STATE_FILE).is_file():
        known = {"runs", "index", "report"}
        if not {p.name for p in work.iterdir()} <= known:
            raise WorkflowError(
                f"{work} holds files that latentsearch did not write; choose an empty or new "
                "work folder"
            )


def _last_state(work: Path) -> dict[str, Any]:
    try:
        state = json.loads((work / STATE_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return state if isinstance(state, dict) else {}


def _train_or_reuse(
    config: Any,
    run_dir: Path,
    recipe: str,
    data: DataSplits,
    *,
    log: Callable[[str], None],
    progress: bool,
) -> tuple[Any, bool]:
    """The finished run in ``run_dir``: reused, resumed, or trained afresh; and whether this
    call trained."""
    from latentsearch.runs import CONFIG_FILE, RunError, load_run
    from latentsearch.training import train

    run = None
    if (run_dir / CONFIG_FILE).is_file():
        try:
            run = load_run(run_dir)
        except RunError:
            run = None  # an epoch had not finished when it was interrupted: resume below
    if run is not None and run.epoch >= config.epochs:
        log(f"reusing run {run_dir} ({recipe} recipe, finished)")
        return run, False
    resume = run is not None
    log(f"{'resuming' if resume else 'training'} run {run_dir} ({recipe} recipe)")
    if not resume and run_dir.exists():
        shutil.rmtree(run_dir)  # a folder with no finished epoch: start it afresh
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    log(_estimate(config, settings_n_fit(data)))
    run = train(
        config,
        run_dir,
        resume=resume,
        progress=progress,
        data=data,
        log=_epoch_lines(config.epochs, log, progress),
    )
    return run, True


def _index(
    run: Any,
    images: ImageData,
    index_dir: Path,
    photos: Path,
    *,
    log: Callable[[str], None],
    progress: bool,
) -> tuple[Any, int]:
    """Builds or updates the index in ``index_dir``; returns it and how many images it embedded.

    The pipeline of ``latentsearch index``, over the images already decoded for training: one
    chunk in memory, not a second read of the folder.
    """
    from latentsearch.index import ImageIndex, ImageIndexError
    from latentsearch.index.streaming import index_images, update_images

    existing = None
    if index_dir.is_dir():
        try:
            existing = ImageIndex.load(index_dir)
            existing.check_compatible(run)
        except ImageIndexError:
            existing = None  # built with another run: build afresh
    if existing is not None:
        done = update_images(
            existing, run, images, progress=progress, data_spec=str(photos.resolve())
        )
        index, update = existing, done.report
        embedded = update.embedded
        log(
            f"index {index_dir}: {len(update.added)} added, {len(update.changed)} changed, "
            f"{len(update.removed)} removed, {len(update.unchanged)} unchanged"
        )
    else:
        built = index_images(run, images, progress=progress, data_spec=str(photos.resolve()))
        assert built.index is not None  # only other ranks of a distributed folder job get none
        index = built.index
        embedded = len(index)
        log(f"index {index_dir}: {len(index)} images")
    if embedded or existing is None:
        index.save(index_dir)
    return index, embedded


def _report(
    run: Any, data: DataSplits, report_dir: Path, *, labelled: bool, progress: bool
) -> Path:
    """The run's report in ``report_dir`` (reused when there), written whole or not at all.

    Without labels (``data`` then carries none) nothing is scored: the report shows
    distances, near-duplicates and the images themselves instead of verdicts.
    """
    html = report_dir / "index.html"
    if html.is_file():
        return html
    from latentsearch.evaluation import evaluate_run
    from latentsearch.index.storage import replace_dir
    from latentsearch.report import build_report

    tmp = report_dir.with_name(report_dir.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    evaluation = (
        evaluate_run(run, data=data, baseline=True, progress=progress) if labelled else None
    )
    build_report(run, tmp, data=data, evaluation=evaluation, progress=progress)
    old = replace_dir(tmp, report_dir)  # the previous report stays whole until then
    if old is not None:
        shutil.rmtree(old)
    return html


def prepare(
    photos: str | Path,
    work: str | Path,
    *,
    labels: bool | None = None,
    epochs: int | None = None,
    seed: int = 0,
    report: bool = True,
    keep_model: bool = False,
    log: Callable[[str], None] = print,
    progress: bool = True,
) -> Prepared:
    """Trains (or reuses) a run on a folder of images, indexes it and writes its report.

    Args:
        photos: A folder of images (any layout; class folders give labels, see
            :mod:`latentsearch.data.folder`).
        work: The work folder (created).
        labels: Train with the class folders' labels (``supervised`` recipe): None for the
            ``train/<class>/`` layout only, True for any class folders, False never (the
            no-label ``auto`` recipe). Unused folder names are not kept as labels.
        epochs: Train this many epochs instead of the recipe's.
        seed: Training seed.
        report: Write the run's report (without labels: distances, near-duplicates and
            thumbnails, no scores).
        keep_model: When the images changed since the last call, keep its run (if trained
            with the same settings) and only update the index, instead of training anew.
        log: Where progress lines go.
        progress: Show progress bars.

    Raises:
        WorkflowError: ``photos`` is not a folder, or ``work`` holds other files.
        DataError: ``photos`` holds no readable image (nothing is written then).
    """
    from latentsearch.index import all_images
    from latentsearch.runs import TrainConfig

    photos, work = Path(photos), Path(work)
    if not photos.is_dir():
        raise WorkflowError(f"{photos} is not a folder")
    if work.resolve().is_relative_to(photos.resolve()):
        raise WorkflowError(
            f"the work folder {work} is inside the photos folder {photos}: its reports and "
            "runs would be indexed as photos on the next call; choose --work outside it"
        )
    _check_work(work)
    data, labelled, photo = _read_folder(photos, labels, log, progress)
    settings = _settings(data, labelled, epochs, seed, photo, log)
    key = collection_key(data, settings)
    settings_key = hashlib.sha256(_settings_bytes(settings)).hexdigest()
    recipe = settings.pop("recipe")
    run_dir = work / "runs" / key
    last = _last_state(work)
    if (
        keep_model
        and last.get("settings_key") == settings_key
        and Path(str(last.get("run"))).is_dir()
        and Path(str(last["run"])) != run_dir
    ):
        run_dir = Path(str(last["run"]))
        key = run_dir.name
        log(f"keeping the model of {run_dir} (--keep-model), though the images changed")
    config = TrainConfig(data=str(photos.resolve()), **settings)

    run, trained = _train_or_reuse(config, run_dir, recipe, data, log=log, progress=progress)
    images = all_images(data)
    index_dir = work / "index"
    index, embedded = _index(run, images, index_dir, photos, log=log, progress=progress)
    report_html = None
    if report:
        report_html = _report(
            run, data, work / "report" / key, labelled=labelled, progress=progress
        )

    state = {
        "photos": str(photos.resolve()),
        "key": key,
        "settings_key": settings_key,
        "recipe": recipe,
        "run": str(run_dir),
        "index": str(index_dir),
        "report": str(report_html) if report_html else None,
    }
    tmp_state = work / (STATE_FILE + ".tmp")
    tmp_state.write_text(json.dumps(state, indent=2) + "\n")
    tmp_state.replace(work / STATE_FILE)
    return Prepared(
        run=run_dir,
        index=index_dir,
        report=report_html,
        recipe=recipe,
        trained=trained,
        embedded=embedded,
        count=len(index),
        skipped=list(images.skipped),
    )
