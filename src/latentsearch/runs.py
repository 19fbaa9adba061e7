"""Run state apart from the fit loop: the config, the run folder, its checkpoints, the fingerprint.

A run folder holds::

    config.json            the resolved TrainConfig
    metrics.jsonl          one JSON line per finished epoch
    checkpoints/epoch-NNN.pt   self-describing checkpoints (weights, model name and arguments,
                               config, class names): by default the newest epoch's and
                               the best epoch's (``keep_checkpoints``), else every epoch's
    eval.json              the last evaluation, when one was run
    cluster_head.pt        a SCAN head, when ``latentsearch cluster`` trained one

``load_run(path)`` rebuilds the trained model from the folder alone. Checkpoints hold only
tensors and plain Python values, so they load with ``torch.load(weights_only=True)``. The fit
loop (:mod:`latentsearch.training`) writes run folders; the index, the server, the report and
the evaluation only read them, through this module.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import json
import math
import os
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from latentsearch.device import resolve_device
from latentsearch.diskspace import disk_full_error, is_disk_full
from latentsearch.errors import ConfigError, LatentsearchError
from latentsearch.models import MODELS, create_model
from latentsearch.models.base import EmbeddingModel
from latentsearch.precision import PRECISIONS

if TYPE_CHECKING:
    from latentsearch.data import DataSplits

CHECKPOINT_FORMAT = "latentsearch-checkpoint/1"
"""Written to every checkpoint; loading refuses any other value."""

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
EVAL_FILE = "eval.json"
CHECKPOINT_DIR = "checkpoints"

OPTIMIZERS = ("adamw", "sgd")

# Bounds on what a checkpoint may hold, checked right after loading (``check_checkpoint``).
# A pickle can share one list at every level of a nesting (``a = [a, a]`` 40 deep is a few
# hundred bytes, 2^40 elements when walked), so sizes are counted as a walk would see them.
MAX_CLASS_NAMES = 100_000
"""Most class names a checkpoint may list."""
MAX_NAME_CHARS = 1_000
"""Longest class name, model name, dict key or other string field of a checkpoint."""
MAX_IMAGE_SIZE = 4_096
"""Largest ``image_size`` a checkpoint's model may take."""
MAX_CHANNELS = 64
"""Most input channels a checkpoint's model may take."""
MAX_CHECKPOINT_VALUES = 1_000_000
"""Most values (containers, tensors and scalars, each shared one counted every time it is
reached) in a whole checkpoint: a real one holds a few thousand."""
_MAX_LIST = 64  # longest list or mapping in model arguments and config values
_MAX_STR = 4_096  # longest string in model arguments and config values (a path, say)


KEEP_CHECKPOINTS = ("last-best", "all")
"""Which checkpoints a run keeps: the newest and the best (lowest validation loss), or all."""

RESUMABLE_FIELDS = ("epochs", "threads", "device", "precision", "world_size", "keep_checkpoints")
"""Config fields a resumed run may change: where it runs and for how long, not what it learns.

``world_size`` is among them because ``batch_size`` is the global batch: the same run on
another number of processes takes the same steps (BatchNorm statistics aside, unless
``sync_batchnorm``). ``keep_checkpoints`` only decides which files stay on disk."""


class RunError(LatentsearchError):
    """A run folder or checkpoint is missing, incomplete or incompatible."""


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a training run."""

    data: str = "digits"  # data source: digits, cifar10, fashion-mnist or a folder path
    data_dir: str | None = None  # where a named source's files are (None: cache / default)
    protocol: str = "heldout"  # heldout (official split) or seed (the study's protocol)
    model: str = "seed-ae"  # a name from latentsearch.models.MODELS
    model_kwargs: dict[str, Any] = field(default_factory=dict)  # extra model arguments
    image_size: int | None = None  # resize images to this size (None: the source's own)
    objective: str = "reconstruction"  # a name from latentsearch.objectives.OBJECTIVES
    objective_kwargs: dict[str, Any] = field(default_factory=dict)  # extra objective args
    label_fraction: float = 0.0  # share of training labels the hint head sees (0: no head)
    hint_weight: float = 1.0  # weight of the hint cross-entropy against the main loss
    epochs: int = 10  # passes over the fit set
    # Images per optimisation step over ALL processes (the study: 32). With N torchrun ranks
    # each computes on its contiguous share (sizes differ by at most one), so results and the
    # learning rate do not depend on N.
    batch_size: int = 32
    # Learning rate for the global `batch_size` (the study: Keras Adam's default 1e-3); it is
    # never rescaled with the number of processes: change it yourself with `batch_size`.
    lr: float = 1e-3
    optimizer: str = "adamw"  # adamw (decoupled weight decay) or sgd (Nesterov momentum 0.9)
    weight_decay: float = 0.0  # AdamW: decoupled decay (0: plain Adam); SGD: L2 coefficient
    cosine_schedule: bool = False  # cosine learning-rate decay over all epochs
    seed: int = 0  # seeds weights, batch order, label subset and augmentations
    device: str = "auto"  # auto, cpu, cuda or mps
    threads: int | None = None  # torch CPU threads (None: every core this process may use)
    precision: str = "auto"  # auto, fp32, bf16 or fp16 (auto: mixed precision where native)
    init: str | None = None  # start from the matching tensors of this checkpoint / run / file
    sync_batchnorm: bool = False  # several processes: BatchNorm statistics of the global batch
    world_size: int = 1  # processes that trained it (train() records torchrun's WORLD_SIZE)
    # Checkpoints kept on disk: last-best (the newest, to resume from, and the one of the
    # lowest validation loss; the newest alone when there is no validation set) or all.
    keep_checkpoints: str = "last-best"

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "seed", "world_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(name, f"must be an integer, got {value!r}")
        if self.threads is not None and (
            isinstance(self.threads, bool) or not isinstance(self.threads, int)
        ):
            raise ConfigError("threads", f"must be an integer, got {self.threads!r}")
        for name in ("label_fraction", "hint_weight", "lr", "weight_decay"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(name, f"must be a number, got {value!r}")
        for name in ("model_kwargs", "objective_kwargs"):
            if not isinstance(getattr(self, name), dict):
                raise ConfigError(name, "must be a mapping")
        if not 0.0 <= self.label_fraction <= 1.0:
            raise ConfigError("label_fraction", f"must be in [0, 1], got {self.label_fraction}")
        if self.epochs < 1:
            raise ConfigError("epochs", f"must be at least 1, got {self.epochs}")
        if self.batch_size < 2:
            raise ConfigError("batch_size", f"must be at least 2, got {self.batch_size}")
        if self.world_size < 1:
            raise ConfigError("world_size", f"must be at least 1, got {self.world_size}")
        if self.batch_size < 2 * self.world_size:
            raise ConfigError(
                "batch_size",
                f"must be at least 2 per process ({2 * self.world_size} for {self.world_size}): "
                f"it is the global batch, split across processes; got {self.batch_size}",
            )
        if not isinstance(self.sync_batchnorm, bool):
            raise ConfigError(
                "sync_batchnorm", f"must be true or false, got {self.sync_batchnorm!r}"
            )
        for name in ("lr", "weight_decay", "hint_weight"):
            if not math.isfinite(getattr(self, name)):
                raise ConfigError(name, f"must be a finite number, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ConfigError("lr", f"must be positive, got {self.lr}")
        if self.threads is not None and self.threads < 1:
            raise ConfigError("threads", f"must be at least 1, got {self.threads}")
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(
                "optimizer", f"must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}"
            )
        if self.init is not None and (not isinstance(self.init, str) or not self.init):
            raise ConfigError("init", f"must be a path, got {self.init!r}")
        if self.keep_checkpoints not in KEEP_CHECKPOINTS:
            raise ConfigError(
                "keep_checkpoints",
                f"must be one of {', '.join(KEEP_CHECKPOINTS)}, got {self.keep_checkpoints!r}",
            )
        if self.precision not in PRECISIONS:
            raise ConfigError(
                "precision", f"must be one of {', '.join(PRECISIONS)}, got {self.precision!r}"
            )

    def to_dict(self) -> dict[str, Any]:
        """The config as JSON-ready values."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """Rebuilds a config, ignoring keys this version does not know."""
        if not isinstance(d, dict):
            raise RunError(f"a run config must be a JSON object, got {type(d).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


@dataclass
class Run:
    """A trained run, rebuilt from its folder.

    Attributes:
        path: The run folder.
        config: Its resolved config.
        model: The model with the newest checkpoint's weights, in eval mode.
        class_names: Class names of the data it was trained on.
        epoch: Epochs completed.
        history: One dict per epoch from ``metrics.jsonl``.
        fingerprint: Identifies model + weights; indexes refuse a run with another one.
    """

    path: Path
    config: TrainConfig
    model: EmbeddingModel
    class_names: list[str]
    epoch: int
    history: list[dict[str, Any]]
    fingerprint: dict[str, Any]

    @classmethod
    def from_model(
        cls,
        model: EmbeddingModel,
        config: TrainConfig,
        path: str | Path,
        *,
        class_names: list[str] | None = None,
    ) -> Run:
        """A run of a model that has no run folder (e.g. freshly initialised): epoch 0.

        Args:
            model: The model, named ``config.model``.
            config: What it would be trained with.
            path: Where its folder would be (nothing is read or written there).
            class_names: Class names of its data (default none).
        """
        return cls(
            path=Path(path),
            config=config,
            model=model,
            class_names=list(class_names or []),
            epoch=0,
            history=[],
            fingerprint=fingerprint(model, config.model),
        )

    def labels_as_trained(self, data: DataSplits) -> tuple[DataSplits, bool]:
        """``data`` with labels only if the run was trained with them, and whether it was.

        A run records the class names of the data it was trained on, none when it was trained
        without labels (``up --no-labels``, or a folder whose subfolders are places). As for
        an index (``ImageIndex.labelled``), labelled means class names and at least one
        labelled image; otherwise the labels a folder's subfolders give on reloading are
        dropped, so no score, verdict, class table or legend is built from folder names, and
        a protocol splits the images as training did.
        """
        labelled = bool(self.class_names) and any(
            part is not None and part.has_labels for part in (data.train, data.test)
        )
        return (data if labelled else data.without_labels()), labelled


# ---------------------------------------------------------------------------- fingerprint
def weights_hash(model: EmbeddingModel) -> str:
    """SHA-256 of the model's parameters and buffers, in state-dict order."""
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def fingerprint(model: EmbeddingModel, model_name: str) -> dict[str, Any]:
    """What identifies a model and its weights: an index built with it refuses any other.

    Returns:
        ``model`` (its registry name), ``weights_sha256``, ``image_size``, ``in_channels``
        and ``embedding_dim``.
    """
    return {
        "model": model_name,
        "weights_sha256": weights_hash(model),
        "image_size": model.image_size,
        "in_channels": model.in_channels,
        "embedding_dim": model.embedding_dim,
    }


def machine_description() -> str:
    """A short description of the hardware, for results tables."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    desc = f"{cpu}, {os.cpu_count()} cores"
    if torch.cuda.is_available():
        desc += f", {torch.cuda.get_device_name(0)}"
    return desc


# ---------------------------------------------------------------------------- the run folder
def checkpoints(run_dir: str | Path) -> list[Path]:
    """The run folder's checkpoint files, oldest epoch first (empty when there are none)."""
    return sorted((Path(run_dir) / CHECKPOINT_DIR).glob("epoch-*.pt"))


def checkpoint_path(run_dir: str | Path, epoch: int) -> Path:
    """Where the checkpoint of ``epoch`` (1 for the first) lives in a run folder."""
    return Path(run_dir) / CHECKPOINT_DIR / f"epoch-{epoch:03d}.pt"


def best_epoch(history: list[dict[str, Any]]) -> int | None:
    """The epoch of the lowest validation loss (``val["loss"]``) in a run's history.

    Returns:
        The epoch (1 for the first; the earliest on a tie), or None when no epoch was
        validated (a run without a validation set).
    """
    best: tuple[float, int] | None = None
    for record in history:
        val = record.get("val")
        loss = val.get("loss") if isinstance(val, dict) else None
        if not isinstance(loss, int | float) or not math.isfinite(loss):
            continue
        if best is None or loss < best[0]:
            best = (float(loss), int(record["epoch"]))
    return None if best is None else best[1]


def best_checkpoint(run_dir: str | Path) -> Path | None:
    """The checkpoint of the run's best epoch (:func:`best_epoch`), None when there is none.

    ``load_run(best_checkpoint(path))`` loads the best model; ``load_run(path)`` the newest.
    """
    epoch = best_epoch(read_history(run_dir))
    if epoch is None:
        return None
    path = checkpoint_path(run_dir, epoch)
    return path if path.is_file() else None


def prune_checkpoints(
    run_dir: str | Path, *, last: int, history: list[dict[str, Any]], keep: str
) -> list[Path]:
    """Deletes the checkpoints that ``keep`` does not ask for (see ``KEEP_CHECKPOINTS``).

    Args:
        run_dir: The run folder.
        last: The newest epoch, whose checkpoint is kept (resuming starts there).
        history: The run's per-epoch records, for :func:`best_epoch`.
        keep: ``last-best`` or ``all`` (nothing deleted).

    Returns:
        The files deleted. One that cannot be deleted now is left for the next call.

    Raises:
        ConfigError: ``keep`` is not one of ``KEEP_CHECKPOINTS``.
    """
    if keep not in KEEP_CHECKPOINTS:
        raise ConfigError("keep_checkpoints", f"must be one of {', '.join(KEEP_CHECKPOINTS)}")
    if keep == "all":
        return []
    wanted = {checkpoint_path(run_dir, last)}
    best = best_epoch(history)
    if best is not None:
        wanted.add(checkpoint_path(run_dir, best))
    removed = []
    for path in checkpoints(run_dir):
        if path not in wanted:
            with contextlib.suppress(OSError):
                path.unlink()
                removed.append(path)
    return removed


def read_history(run_dir: str | Path) -> list[dict[str, Any]]:
    """The per-epoch records of ``metrics.jsonl`` (empty when the file is absent)."""
    path = Path(run_dir) / METRICS_FILE
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def never_finished_an_epoch(out: str | Path) -> bool:
    """Whether ``out`` holds only what a run writes before its first checkpoint: its config,
    an empty ``metrics.jsonl`` and an empty checkpoint folder (a run stopped in epoch 1)."""
    out = Path(out)
    if not (out / CONFIG_FILE).is_file():
        return False
    allowed = {CONFIG_FILE, METRICS_FILE, CHECKPOINT_DIR}
    if not {p.name for p in out.iterdir()} <= allowed:
        return False
    ckpt_dir = out / CHECKPOINT_DIR
    if ckpt_dir.exists() and (not ckpt_dir.is_dir() or any(ckpt_dir.iterdir())):
        return False
    metrics = out / METRICS_FILE
    return not metrics.exists() or not metrics.read_text().strip()


def prepare_run_folder(
    out: str | Path, config: TrainConfig, *, resume: bool
) -> dict[str, Any] | None:
    """Checks that ``out`` can take a run of ``config``, before anything is trained.

    Args:
        out: The run folder.
        config: The run's config.
        resume: Continue the run in ``out`` rather than start a new one.

    Returns:
        The newest checkpoint's contents when resuming, else None.

    A folder whose run stopped before its first checkpoint (``never_finished_an_epoch``)
    is started afresh, with or without ``resume``: there is nothing in it to keep.

    Raises:
        RunError: A new run's folder is a file or not empty, or resuming finds no checkpoint
            or a run of another config (only ``RESUMABLE_FIELDS`` may change).
    """
    out = Path(out)
    if out.is_dir() and never_finished_an_epoch(out):
        return None
    if not resume:
        if out.exists() and not out.is_dir():
            raise RunError(f"{out} is a file, not a run folder: choose a new `out` folder")
        if out.exists() and any(out.iterdir()):
            raise RunError(f"{out} is not empty: choose a new `out` folder or pass `resume=True`")
        return None
    ckpts = checkpoints(out)
    if not ckpts:
        raise RunError(
            f"nothing to resume (`resume=True`): no checkpoint in {out}/{CHECKPOINT_DIR}"
        )
    saved = TrainConfig.from_dict(json.loads((out / CONFIG_FILE).read_text()))
    comparable = dataclasses.replace(
        saved, **{name: getattr(config, name) for name in RESUMABLE_FIELDS}
    )
    if comparable != config:
        changeable = ", ".join(f"`{name}`" for name in RESUMABLE_FIELDS)
        raise RunError(
            f"cannot resume (`resume=True`) {out}: it was trained with another config; only "
            f"{changeable} may change"
        )
    return read_checkpoint(ckpts[-1])


def atomic_torch_save(obj: Any, path: str | Path) -> Path:
    """``torch.save`` into a temporary file renamed into place: never a half-written file.

    The bytes are made in memory first, so a full disk is a plain ``OSError`` of a write
    (torch's own writer reports it as an obscure ``RuntimeError``) and its size is known.

    Raises:
        DiskFullError: The file does not fit; the temporary file is removed and whatever
            ``path`` held before is intact.
        OSError: It cannot be written for another reason (likewise cleaned up).
    """
    path = Path(path)
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    data = buffer.getbuffer()
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            tmp.unlink()  # first, so that the free space reported counts it out
        if is_disk_full(e):
            raise disk_full_error(path.parent, path.name, needed=len(data)) from e
        raise
    return path


_TORCH_MAGIC = (b"PK\x03\x04", b"\x80")
"""How the files ``torch.save`` writes begin: a zip archive, or (before torch 1.6) a pickle."""


def _written_by_torch(path: Path) -> bool:
    """Whether ``path`` begins as a ``torch.save`` file does (a text file, say, does not).

    torch's own error on such a file spans many lines about ``weights_only``; this lets the
    caller say in one line what the file is not. A file that cannot be read passes, so that
    loading it reports why.
    """
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError:
        return True
    return any(head.startswith(magic) for magic in _TORCH_MAGIC)


def load_versioned(
    path: str | Path, fmt: str, *, what: str, error: type[LatentsearchError]
) -> dict[str, Any]:
    """Reads a file written by ``torch.save`` that names its format, refusing any other.

    Loading is ``weights_only``: tensors and plain Python values, never pickled objects.

    Args:
        path: The file.
        fmt: The ``format`` value it must carry (e.g. ``CHECKPOINT_FORMAT``).
        what: What the file should be, for messages ("latentsearch checkpoint").
        error: The exception to raise.

    Raises:
        error: The file cannot be read, or is not a dict of format ``fmt``.
    """
    path = Path(path)
    if not _written_by_torch(path):
        raise error(f"{path} is not a {what}: it is not a file written by torch.save")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types on a bad file, some over many lines
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise error(f"{path} is not a readable {what}: {reason[:200]}") from e
    if not isinstance(state, dict) or state.get("format") != fmt:
        raise error(f"{path} is not a {what} ({fmt})")
    return state


# ---------------------------------------------------------------------------- checkpoints
def model_args(model: EmbeddingModel, config: TrainConfig) -> dict[str, Any]:
    """The arguments that rebuild ``model`` with ``create_model(config.model, **args)``."""
    return {
        "in_channels": model.in_channels,
        "image_size": model.image_size,
        "num_classes": model.num_classes,
        **config.model_kwargs,
    }


def save_checkpoint(
    run_dir: str | Path,
    *,
    config: TrainConfig,
    model: EmbeddingModel,
    class_names: list[str],
    epoch: int,
    training_state: dict[str, Any],
) -> Path:
    """Writes the self-describing checkpoint of ``epoch`` atomically.

    Args:
        run_dir: The run folder.
        config: The run's config.
        model: The model after ``epoch`` epochs.
        class_names: Class names of the data.
        epoch: Epochs completed.
        training_state: What resuming needs besides the weights (``optimizer``, and
            ``scheduler``, ``objective``, ``scaler`` state dicts where they exist).

    Returns:
        The checkpoint's path.
    """
    state: dict[str, Any] = {
        "format": CHECKPOINT_FORMAT,
        "model_name": config.model,
        "model_args": model_args(model, config),
        "config": config.to_dict(),
        "class_names": class_names,
        "epoch": epoch,
        "state_dict": model.state_dict(),
        **training_state,
    }
    return atomic_torch_save(state, checkpoint_path(run_dir, epoch))


def _short(value: Any) -> str:
    """A value for a one-line message: its type for containers, its repr cut to 40 chars."""
    if isinstance(value, (dict, list, tuple, set, torch.Tensor)):
        return type(value).__name__
    return f"{value!r:.40}"


def _check_plain(value: Any, what: str, depth: int) -> None:
    """A JSON-like value: a finite number, a short string, true/false, null, or a list (at
    most 64 long) or mapping (at most 64 string keys) of such values, ``depth`` levels deep.

    Raises:
        TypeError: Naming the first value that is not.
    """
    if value is None or isinstance(value, (bool, int)):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise TypeError(f"{what} must be a finite number, got {value}")
        return
    if isinstance(value, str):
        if len(value) > _MAX_STR:
            raise TypeError(f"{what} is a string of {len(value):,} characters")
        return
    if depth < 1 or not isinstance(value, (list, tuple, dict)) or len(value) > _MAX_LIST:
        raise TypeError(
            f"{what} must be a number, string, true/false or null"
            + (f", or a list or mapping of at most {_MAX_LIST} of them" if depth >= 1 else "")
            + f", got {_short(value)}"
        )
    if isinstance(value, dict):
        for key, v in value.items():
            if not isinstance(key, str) or len(key) > MAX_NAME_CHARS:
                raise TypeError(f"{what} has a key that is not a short string: {_short(key)}")
            _check_plain(v, f"{what}[{key!r:.40}]", depth - 1)
    else:
        for i, v in enumerate(value):
            _check_plain(v, f"{what}[{i}]", depth - 1)


def _mapping(value: Any, what: str, depth: int) -> dict[str, Any]:
    """``value``, checked to be a mapping whose values are ``_check_plain`` ones."""
    if not isinstance(value, dict):
        raise TypeError(f"{what} must be a mapping, got {_short(value)}")
    _check_plain(value, what, depth)
    return value


def _check_tensor(t: torch.Tensor, what: str) -> None:
    """A dense CPU tensor whose elements all have their own bytes in the file."""
    if t.layout != torch.strided or t.device.type != "cpu":
        raise TypeError(f"{what} must be a dense tensor, got {t.layout} on {t.device.type}")
    # Stride 0 makes a tensor of 2^40 elements out of one stored value: refuse any tensor
    # with more elements than its storage holds, so sizes are bounded by the file's.
    if t.numel() * t.element_size() > t.untyped_storage().nbytes():
        raise TypeError(f"{what} has more elements than its file stores ({list(t.shape)})")


def _walk_budget(state: Any) -> None:
    """Visits every value as a walk would, shared ones once per path; stops at the bound.

    Raises:
        TypeError: More than ``MAX_CHECKPOINT_VALUES`` values, or a tensor stored expanded.
    """
    stack = [state]
    seen = 0
    while stack:
        value = stack.pop()
        seen += 1
        if seen > MAX_CHECKPOINT_VALUES:
            raise TypeError(
                f"it holds more than {MAX_CHECKPOINT_VALUES:,} values (a nesting that repeats "
                "one list, say): not a checkpoint latentsearch wrote"
            )
        if isinstance(value, dict):
            stack.extend(value.keys())
            stack.extend(value.values())
        elif isinstance(value, (list, tuple, set, frozenset)):
            stack.extend(value)
        elif isinstance(value, torch.Tensor):
            _check_tensor(value, "a tensor")


def check_checkpoint(state: dict[str, Any]) -> None:
    """Checks every field of a loaded checkpoint by type and size, before anything uses it.

    Args:
        state: What ``torch.load`` returned for a file of format ``CHECKPOINT_FORMAT``.

    Raises:
        TypeError: Naming the first field of the wrong type or size.
        ValueError: For a config or model argument outside the values it may take.
    """
    name = state.get("model_name")
    if not isinstance(name, str) or name not in MODELS:
        raise ValueError(f"model_name {_short(name)} is not a model of this version")
    # Model arguments are numbers and names, or a list of numbers (``stage_blocks``).
    args = _mapping(state.get("model_args"), "model_args", depth=2)
    for key, low, high in (
        ("in_channels", 1, MAX_CHANNELS),
        ("image_size", 1, MAX_IMAGE_SIZE),
        ("num_classes", 0, MAX_CLASS_NAMES),
    ):
        value = args.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ValueError(
                f"model_args[{key!r}] must be an integer in [{low}, {high}], got {_short(value)}"
            )
    # config -> objective_kwargs -> augment -> crop_scale [low, high]: four levels at most.
    config = _mapping(state.get("config"), "config", depth=4)
    TrainConfig.from_dict(config)  # ConfigError (a ValueError) for a bad setting
    names = state.get("class_names")
    if (
        not isinstance(names, list)
        or len(names) > MAX_CLASS_NAMES
        or not all(isinstance(c, str) and len(c) <= MAX_NAME_CHARS for c in names)
    ):
        raise TypeError(
            f"class_names must be a list of at most {MAX_CLASS_NAMES:,} strings of at most "
            f"{MAX_NAME_CHARS} characters"
        )
    epoch = state.get("epoch")
    if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
        raise ValueError(f"epoch must be a non-negative integer, got {_short(epoch)}")
    weights = state.get("state_dict")
    if not isinstance(weights, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in weights.items()
    ):
        raise TypeError("state_dict must map parameter names to tensors")
    for key in ("optimizer", "scheduler", "objective", "scaler"):
        if key in state and not isinstance(state[key], dict):
            raise TypeError(f"{key} must be a state dict, got {_short(state[key])}")
    # Last, as the slowest: the training state and any other field, by size.
    _walk_budget(state)


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Loads a checkpoint file and checks every field (``check_checkpoint``).

    Raises:
        RunError: The file is not a latentsearch checkpoint, or a field is of the wrong type
            or size; one line naming the file and the field.
    """
    path = Path(path)
    state = load_versioned(path, CHECKPOINT_FORMAT, what="latentsearch checkpoint", error=RunError)
    try:
        check_checkpoint(state)
    except (TypeError, ValueError) as e:
        raise RunError(f"{path} is not a valid latentsearch checkpoint: {e}") from None
    return state


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> Run:
    """Rebuilds a model from one checkpoint file.

    Every field is checked by type and size first (``check_checkpoint``), and the model's
    shapes are compared with the weights' before it is built.

    Raises:
        RunError: The file is not a latentsearch checkpoint, holds a field of the wrong type
            or size, or does not fit its model.
    """
    path = Path(path)
    state = read_checkpoint(path)
    name, args, weights = state["model_name"], state["model_args"], state["state_dict"]
    try:
        with torch.device("meta"):
            expected = create_model(name, **args).state_dict()
        theirs = {k: tuple(v.shape) for k, v in weights.items()}
        if {k: tuple(v.shape) for k, v in expected.items()} != theirs:
            raise RuntimeError(_shape_difference(expected, weights))
        model = create_model(name, **args)
        model.load_state_dict(weights)
    except (RuntimeError, TypeError, KeyError, ValueError) as e:
        raise RunError(
            f"{path}: the weights do not fit model {name!r} with {args!r:.200}: "
            f"{str(e).splitlines()[0] if str(e) else type(e).__name__}"
        ) from e
    model.to(resolve_device(str(device)) if isinstance(device, str) else device).eval()
    run_dir = path.parent.parent
    return Run(
        path=run_dir,
        config=TrainConfig.from_dict(state["config"]),
        model=model,
        class_names=list(state["class_names"]),
        epoch=int(state["epoch"]),
        history=read_history(run_dir),
        fingerprint=fingerprint(model, name),
    )


def _shape_difference(mine: dict[str, torch.Tensor], theirs: dict[str, torch.Tensor]) -> str:
    """The first difference between a model's tensors and a file's, in one line."""
    for key in mine:
        if key not in theirs:
            return f"missing tensor {key!r}"
        if tuple(mine[key].shape) != tuple(theirs[key].shape):
            return (
                f"{key!r} is {list(theirs[key].shape)} in the file, {list(mine[key].shape)} in "
                "the model"
            )
    extra = next(iter(k for k in theirs if k not in mine), "?")
    return f"unexpected tensor {extra!r:.60}"


def load_run(path: str | Path, device: str | torch.device = "cpu") -> Run:
    """Rebuilds a run from its folder (newest checkpoint) or from a checkpoint file.

    Raises:
        RunError: Nothing loadable is there.
    """
    path = Path(path)
    if path.is_file():
        return load_checkpoint(path, device)
    if not path.is_dir():
        raise RunError(f"no run folder or checkpoint at {path}")
    ckpts = checkpoints(path)
    if not ckpts:
        raise RunError(f"{path} holds no checkpoint: is it a run folder from `latentsearch train`?")
    return load_checkpoint(ckpts[-1], device)
