"""The fit loop, run folders and self-describing checkpoints.

A run folder holds ``config.json`` (the resolved config), ``metrics.jsonl`` (one line per
epoch) and ``checkpoints/epoch-NNN.pt``; ``load_run(path)`` rebuilds the trained model from it
alone. Checkpoints hold only tensors and plain Python values, so they load with
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from latentsearch.data import DataSplits, ImageData, load_data
from latentsearch.data.splits import label_subset
from latentsearch.device import resolve_device
from latentsearch.embedding import to_tensor
from latentsearch.models import create_model
from latentsearch.models.base import EmbeddingModel
from latentsearch.objectives import Batch, Objective, create_objective
from latentsearch.precision import (
    PRECISIONS,
    autocast,
    available_cores,
    grad_scaler,
    resolve_precision,
)
from latentsearch.progress import show_progress
from latentsearch.protocols import ProtocolSplits, make_splits

CHECKPOINT_FORMAT = "latentsearch-checkpoint/1"


class RunError(ValueError):
    """A run folder or checkpoint is missing, incomplete or incompatible."""


OPTIMIZERS = ("adamw", "sgd")


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
    batch_size: int = 32  # images per step (the study: 32)
    lr: float = 1e-3  # learning rate (the study: Keras Adam's default 1e-3)
    optimizer: str = "adamw"  # adamw (decoupled weight decay) or sgd (Nesterov momentum 0.9)
    weight_decay: float = 0.0  # AdamW: decoupled decay (0: plain Adam); SGD: L2 coefficient
    cosine_schedule: bool = False  # cosine learning-rate decay over all epochs
    seed: int = 0  # seeds weights, batch order, label subset and augmentations
    device: str = "auto"  # auto, cpu, cuda or mps
    threads: int | None = None  # torch CPU threads (None: every core this process may use)
    precision: str = "auto"  # auto, fp32, bf16 or fp16 (auto: mixed precision where native)

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"{name} must be an integer, got {value!r}")
        if self.threads is not None and (
            isinstance(self.threads, bool) or not isinstance(self.threads, int)
        ):
            raise ValueError(f"threads must be an integer, got {self.threads!r}")
        for name in ("label_fraction", "hint_weight", "lr", "weight_decay"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"{name} must be a number, got {value!r}")
        if not isinstance(self.model_kwargs, dict) or not isinstance(self.objective_kwargs, dict):
            raise ValueError("model_kwargs and objective_kwargs must be mappings")
        if not 0.0 <= self.label_fraction <= 1.0:
            raise ValueError(f"--label-fraction must be in [0, 1], got {self.label_fraction}")
        if self.epochs < 1:
            raise ValueError(f"--epochs must be at least 1, got {self.epochs}")
        if self.batch_size < 2:
            raise ValueError(f"--batch-size must be at least 2, got {self.batch_size}")
        if self.lr <= 0:
            raise ValueError(f"--lr must be positive, got {self.lr}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"--threads must be at least 1, got {self.threads}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(
                f"--optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}"
            )
        if self.precision not in PRECISIONS:
            raise ValueError(
                f"--precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}"
            )

    def to_dict(self) -> dict[str, Any]:
        """The config as JSON-ready values."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """Rebuilds a config, ignoring keys this version does not know."""
        if not isinstance(d, dict):
            raise ValueError(f"a run config must be a JSON object, got {type(d).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def make_optimizer(config: TrainConfig, params: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
    """The optimizer ``config.optimizer`` names, at ``config.lr`` and ``config.weight_decay``.

    AdamW decays weights by ``lr * weight_decay`` per step (decoupled), so its useful decay is
    ~100× SGD's: 5e-4 suits SGD, 0.05 AdamW. SGD uses Nesterov momentum 0.9.
    """
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            params,
            lr=config.lr,
            momentum=0.9,
            nesterov=True,
            weight_decay=config.weight_decay,
        )
    return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)


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


def _checkpoints(run_dir: Path) -> list[Path]:
    return sorted((run_dir / "checkpoints").glob("epoch-*.pt"))


def _atomic_torch_save(obj: Any, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def build_model(config: TrainConfig, data: ImageData, num_classes: int) -> EmbeddingModel:
    """The model a config asks for, sized for the data's images.

    Args:
        config: The run's config.
        data: Any of its image sets (only the image shape is read).
        num_classes: Hint-head size, 0 for none.
    """
    h, w, c = data.image_shape
    if h != w:
        raise ValueError(f"models take square images; these are {h}×{w}")
    return create_model(
        config.model, in_channels=c, image_size=h, num_classes=num_classes, **config.model_kwargs
    )


def _model_args(model: EmbeddingModel, config: TrainConfig) -> dict[str, Any]:
    return {
        "in_channels": model.in_channels,
        "image_size": model.image_size,
        "num_classes": model.num_classes,
        **config.model_kwargs,
    }


def weights_hash(model: EmbeddingModel) -> str:
    """SHA-256 of the model's parameters and buffers, in state-dict order."""
    import hashlib

    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _fingerprint(model: EmbeddingModel, model_name: str) -> dict[str, Any]:
    return {
        "model": model_name,
        "weights_sha256": weights_hash(model),
        "image_size": model.image_size,
        "in_channels": model.in_channels,
        "embedding_dim": model.embedding_dim,
    }


def batch_bounds(n: int, batch_size: int) -> list[tuple[int, int]]:
    """``(start, stop)`` of each batch over ``n`` items; every item is in exactly one batch.

    A last batch of a single item is merged into the one before it (BatchNorm cannot train on
    one image), so nothing is dropped.
    """
    edges = [*range(0, n, batch_size), n]
    if len(edges) > 2 and edges[-1] - edges[-2] == 1:
        del edges[-2]
    return list(itertools.pairwise(edges))


def _iterate(images: torch.Tensor, labels: torch.Tensor, order: np.ndarray, batch_size: int) -> Any:
    for start, stop in batch_bounds(len(order), batch_size):
        idx = torch.from_numpy(order[start:stop])
        yield images[idx], labels[idx]


@torch.no_grad()
def validation_loss(
    model: EmbeddingModel,
    objective: Objective,
    data: ImageData,
    labels: np.ndarray,
    *,
    batch_size: int,
    device: torch.device,
    precision: str = "fp32",
) -> dict[str, float]:
    """Mean loss parts over a held-out set, in eval mode, at the run's ``precision``."""
    model.eval()
    totals: dict[str, float] = {}
    n = 0
    pixels = torch.from_numpy(np.ascontiguousarray(data.pixels))
    lab = torch.from_numpy(labels)
    for x, y in _iterate(pixels, lab, np.arange(len(data)), max(batch_size, 256)):
        batch = Batch(images=to_tensor(x.numpy(), device), labels=y.to(device))
        with autocast(precision, device):
            _, parts = objective(model, batch)
        for k, v in parts.items():
            totals[k] = totals.get(k, 0.0) + v * len(x)
        n += len(x)
    model.train()
    return {k: v / max(n, 1) for k, v in totals.items()}


def train(
    config: TrainConfig,
    out: str | Path,
    *,
    resume: bool = False,
    progress: bool = True,
    log: Callable[[dict[str, Any]], None] | None = None,
    data: DataSplits | None = None,
) -> Run:
    """Trains a model as ``config`` says and writes the run folder.

    Args:
        config: What to train.
        out: The run folder; must be empty or absent unless ``resume``.
        resume: Continue from the newest checkpoint in ``out`` (same config required).
        progress: Show a progress bar on a terminal.
        log: Called with each epoch's metrics dict.
        data: Already loaded data (otherwise loaded from ``config.data``).

    Returns:
        The finished run.

    Raises:
        RunError: ``out`` holds another run, or resuming finds nothing to resume.
        ValueError: Invalid settings (e.g. labels asked for on unlabelled data).
    """
    out = Path(out)
    start_epoch = 0
    state: dict[str, Any] | None = None
    if resume:
        ckpts = _checkpoints(out)
        if not ckpts:
            raise RunError(f"--resume: no checkpoint in {out}/checkpoints to resume from")
        saved = TrainConfig.from_dict(json.loads((out / "config.json").read_text()))
        # Where it runs and for how long may change; what it learns may not.
        comparable = dataclasses.replace(
            saved,
            epochs=config.epochs,
            threads=config.threads,
            device=config.device,
            precision=config.precision,
        )
        if comparable != config:
            raise RunError(
                f"--resume: {out} was trained with another config; only --epochs, --threads, "
                "--device and --precision may change"
            )
        state = torch.load(ckpts[-1], map_location="cpu", weights_only=True)
        start_epoch = int(state["epoch"])
    elif out.exists() and not out.is_dir():
        raise RunError(f"{out} is a file, not a run folder: choose a new --out folder")
    elif out.exists() and any(out.iterdir()):
        raise RunError(f"{out} is not empty: choose a new --out folder or pass --resume")

    threads = config.threads or available_cores()
    torch.set_num_threads(threads)
    device = resolve_device(config.device)
    precision = resolve_precision(config.precision, device)
    scaler = grad_scaler(precision, device)
    if data is None:
        data = load_data(
            config.data, image_size=config.image_size, data_dir=config.data_dir, progress=progress
        )
    splits: ProtocolSplits = make_splits(data, config.protocol)
    fit = splits.fit
    class_names = list(data.train.class_names)

    num_classes = 0
    fit_labels = np.full(len(fit), -1, dtype=np.int64)
    if config.label_fraction > 0:
        if not fit.has_labels:
            raise ValueError(
                f"--label-fraction {config.label_fraction} needs labels, but {data.name} has "
                "none (an image folder needs one subfolder per class)"
            )
        num_classes = len(class_names)
        keep = label_subset(fit.labels, config.label_fraction, seed=config.seed)
        fit_labels[keep] = fit.labels[keep]

    torch.manual_seed(config.seed)
    model = build_model(config, fit, num_classes).to(device)
    if device.type == "cpu":
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    objective = create_objective(
        config.objective, hint_weight=config.hint_weight, **config.objective_kwargs
    )
    params = [p for p in model.parameters() if p.requires_grad]
    if hasattr(objective, "parameters"):  # objectives may own a head (e.g. a projector)
        params += list(objective.parameters())
    optimizer = make_optimizer(config, params)
    steps_per_epoch = len(batch_bounds(len(fit), config.batch_size))
    scheduler = (
        torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, config.epochs * steps_per_epoch)
        if config.cosine_schedule
        else None
    )
    if state is not None:
        model.load_state_dict(state["state_dict"])
        optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None and "scheduler" in state:
            scheduler.load_state_dict(state["scheduler"])
        if hasattr(objective, "load_state_dict") and "objective" in state:
            objective.load_state_dict(state["objective"])
        if scaler is not None and "scaler" in state:
            scaler.load_state_dict(state["scaler"])

    out.mkdir(parents=True, exist_ok=True)
    (out / "checkpoints").mkdir(exist_ok=True)
    (out / "config.json").write_text(json.dumps(config.to_dict(), indent=2) + "\n")
    metrics_path = out / "metrics.jsonl"
    history = _read_history(out)[:start_epoch]
    metrics_path.write_text("".join(json.dumps(h) + "\n" for h in history))

    pixels = torch.from_numpy(np.ascontiguousarray(fit.pixels))
    labels_t = torch.from_numpy(fit_labels)
    model.train()
    for epoch in range(start_epoch, config.epochs):
        # Batch order and augmentations depend on (seed, epoch) only, so resuming from a
        # checkpoint replays exactly what an uninterrupted run would have done.
        order = np.random.default_rng([config.seed, epoch]).permutation(len(fit))
        torch.manual_seed(config.seed * 100_003 + epoch)
        totals: dict[str, float] = {}
        seen = 0
        t0 = time.perf_counter()
        bar = tqdm(
            total=len(fit),
            desc=f"epoch {epoch + 1}/{config.epochs}",
            unit="img",
            disable=not show_progress(progress),
            leave=False,
        )
        for x, y in _iterate(pixels, labels_t, order, config.batch_size):
            batch = Batch(images=to_tensor(x.numpy(), device), labels=y.to(device))
            with autocast(precision, device):
                loss, parts = objective(model, batch)
            if not torch.isfinite(loss):
                raise RuntimeError(
                    f"loss became {float(loss)} at epoch {epoch + 1}: lower --lr and retry"
                )
            optimizer.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
            else:
                loss.backward()
                optimizer.step()
            if scheduler is not None:
                scheduler.step()
            for k, v in parts.items():
                totals[k] = totals.get(k, 0.0) + v * len(x)
            seen += len(x)
            bar.update(len(x))
            if bar.n % (config.batch_size * 20) < config.batch_size:
                rate = seen / max(time.perf_counter() - t0, 1e-9)
                bar.set_postfix(loss=f"{parts['loss']:.4f}", img_s=f"{rate:.0f}")
        bar.close()
        seconds = time.perf_counter() - t0
        record: dict[str, Any] = {
            "epoch": epoch + 1,
            "train": {k: v / max(seen, 1) for k, v in totals.items()},
            "seconds": seconds,
            "images_per_second": seen / max(seconds, 1e-9),
            "lr": optimizer.param_groups[0]["lr"],
            "precision": precision,
            "threads": threads,
            # Other work on the cores slows an epoch: the 1-minute load average says how much.
            "load_average": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        }
        if splits.val is not None and len(splits.val) >= 2:
            val_labels = splits.val.labels if num_classes else np.full(len(splits.val), -1)
            record["val"] = validation_loss(
                model,
                objective,
                splits.val,
                np.asarray(val_labels, dtype=np.int64),
                batch_size=config.batch_size,
                device=device,
                precision=precision,
            )
        ckpt: dict[str, Any] = {
            "format": CHECKPOINT_FORMAT,
            "model_name": config.model,
            "model_args": _model_args(model, config),
            "config": config.to_dict(),
            "class_names": class_names,
            "epoch": epoch + 1,
            "state_dict": model.state_dict(),
            "optimizer": optimizer.state_dict(),
        }
        if scheduler is not None:
            ckpt["scheduler"] = scheduler.state_dict()
        if hasattr(objective, "state_dict"):
            ckpt["objective"] = objective.state_dict()
        if scaler is not None:
            ckpt["scaler"] = scaler.state_dict()
        _atomic_torch_save(ckpt, out / "checkpoints" / f"epoch-{epoch + 1:03d}.pt")
        history.append(record)
        with metrics_path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        if log is not None:
            log(record)

    model.eval()
    return Run(
        path=out,
        config=config,
        model=model,
        class_names=class_names,
        epoch=config.epochs,
        history=history,
        fingerprint=_fingerprint(model, config.model),
    )


def _read_history(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> Run:
    """Rebuilds a model from one checkpoint file.

    Raises:
        RunError: The file is not a latentsearch checkpoint or does not fit its model.
    """
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise RunError(f"{path} is not a readable latentsearch checkpoint: {e}") from e
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise RunError(f"{path} is not a latentsearch checkpoint ({CHECKPOINT_FORMAT})")
    try:
        model = create_model(state["model_name"], **state["model_args"])
        model.load_state_dict(state["state_dict"])
    except (RuntimeError, TypeError, KeyError, ValueError) as e:
        raise RunError(
            f"{path}: the weights do not fit model {state.get('model_name')!r} "
            f"with {state.get('model_args')}: {str(e).splitlines()[0]}"
        ) from e
    model.to(resolve_device(str(device)) if isinstance(device, str) else device).eval()
    run_dir = path.parent.parent
    return Run(
        path=run_dir,
        config=TrainConfig.from_dict(state["config"]),
        model=model,
        class_names=list(state["class_names"]),
        epoch=int(state["epoch"]),
        history=_read_history(run_dir),
        fingerprint=_fingerprint(model, state["model_name"]),
    )


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
    ckpts = _checkpoints(path)
    if not ckpts:
        raise RunError(f"{path} holds no checkpoint: is it a run folder from `latentsearch train`?")
    return load_checkpoint(ckpts[-1], device)
