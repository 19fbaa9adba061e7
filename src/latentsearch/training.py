"""The fit loop: trains a model as a ``TrainConfig`` says and writes its run folder.

The run folder's layout, the config, checkpoints and fingerprints live in
:mod:`latentsearch.runs`; this module is the one that writes them. The names it used to define
(``TrainConfig``, ``Run``, ``RunError``, ``load_run``, ...) live there.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from latentsearch import distributed
from latentsearch.data import DataSplits, ImageData, load_data
from latentsearch.data.splits import label_subset
from latentsearch.device import resolve_device
from latentsearch.diskspace import disk_full_as_error
from latentsearch.embedding import to_tensor
from latentsearch.errors import ConfigError, LatentsearchError
from latentsearch.models import create_model
from latentsearch.models.base import EmbeddingModel
from latentsearch.objectives import Batch, Objective, create_objective, neighbour_queue_size
from latentsearch.precision import autocast, available_cores, grad_scaler, resolve_precision
from latentsearch.progress import show_progress
from latentsearch.protocols import ProtocolSplits, make_splits
from latentsearch.runs import (
    CHECKPOINT_DIR,
    CONFIG_FILE,
    METRICS_FILE,
    Run,
    RunError,
    TrainConfig,
    checkpoints,
    fingerprint,
    never_finished_an_epoch,
    prepare_run_folder,
    prune_checkpoints,
    read_history,
    save_checkpoint,
)

__all__ = [
    "InitReport",
    "batch_bounds",
    "build_model",
    "load_initial_weights",
    "make_optimizer",
    "train",
    "validation_loss",
]


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


def build_model(config: TrainConfig, data: ImageData, num_classes: int) -> EmbeddingModel:
    """The model a config asks for, sized for the data's images.

    Args:
        config: The run's config.
        data: Any of its image sets (only the image shape is read).
        num_classes: Hint-head size, 0 for none.
    """
    h, w, c = data.image_shape
    if h != w:
        raise LatentsearchError(f"models take square images; these are {h}×{w}")
    return create_model(
        config.model, in_channels=c, image_size=h, num_classes=num_classes, **config.model_kwargs
    )


def batch_bounds(n: int, batch_size: int, *, min_last: int = 2) -> list[tuple[int, int]]:
    """``(start, stop)`` of each batch over ``n`` items; every item is in exactly one batch.

    A last batch of fewer than ``min_last`` items is merged into the one before it (BatchNorm
    cannot train on one image; with N processes ``min_last`` is 2N, so that each gets two),
    so nothing is dropped.
    """
    edges = [*range(0, n, batch_size), n]
    if len(edges) > 2 and edges[-1] - edges[-2] < min_last:
        del edges[-2]
    return list(itertools.pairwise(edges))


def _iterate(
    images: torch.Tensor,
    labels: torch.Tensor,
    order: np.ndarray,
    batch_size: int,
    ctx: distributed.DistContext | None = None,
) -> Any:
    """This rank's share of each batch, and the batch's global size."""
    ctx = ctx or distributed.DistContext()
    for start, stop in batch_bounds(len(order), batch_size, min_last=2 * ctx.world_size):
        idx = torch.from_numpy(order[start:stop][distributed.shard(stop - start, ctx)])
        yield images[idx], labels[idx], stop - start


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
    for x, y, _ in _iterate(pixels, lab, np.arange(len(data)), max(batch_size, 256)):
        batch = Batch(images=to_tensor(x.numpy(), device), labels=y.to(device))
        with autocast(precision, device):
            _, parts = objective(model, batch)
        for k, v in parts.items():
            totals[k] = totals.get(k, 0.0) + v * len(x)
        n += len(x)
    model.train()
    return {k: v / max(n, 1) for k, v in totals.items()}


@dataclass(frozen=True)
class InitReport:
    """What ``load_initial_weights`` took from a file.

    Attributes:
        source: The file read.
        loaded: Tensors copied into the model.
        mismatched: ``(name, file's shape, model's shape)`` of tensors of the same name but
            another shape (not copied).
        missing: Model tensors the file lacks (left as initialised).
        unused: File tensors the model has no place for.
    """

    source: Path
    loaded: list[str]
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]]
    missing: list[str]
    unused: list[str]

    def summary(self) -> str:
        """One line of counts, then one line per mismatch (at most 10)."""
        lines = [
            f"init from {self.source}: {len(self.loaded)} tensors loaded, "
            f"{len(self.mismatched)} of another shape skipped, {len(self.missing)} missing "
            f"(kept as initialised), {len(self.unused)} in the file unused"
        ]
        lines += [
            f"  skipped {name}: {list(theirs)} in the file, {list(mine)} in the model"
            for name, theirs, mine in self.mismatched[:10]
        ]
        return "\n".join(lines)


def _state_dict_of(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a run folder (newest checkpoint), a checkpoint or a state-dict file."""
    if path.is_dir():
        found = checkpoints(path)
        if not found:
            raise RunError(f"init: {path} is a folder without checkpoints (not a run folder)")
        path = found[-1]
    if not path.is_file():
        raise RunError(f"init: no such file {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for a file that is not its format
        raise RunError(f"init: {path} is not a PyTorch weights file ({type(e).__name__})") from None
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not any(isinstance(v, torch.Tensor) for v in obj.values()):
        raise RunError(f"init: {path} holds no named tensors (a state dict or a checkpoint)")
    tensors = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    # Weights saved from DistributedDataParallel or torch.compile carry a prefix.
    for prefix in ("module.", "_orig_mod."):
        if all(k.startswith(prefix) for k in tensors):
            tensors = {k[len(prefix) :]: v for k, v in tensors.items()}
    return tensors


def load_initial_weights(model: torch.nn.Module, path: str | Path) -> InitReport:
    """Copies every tensor of ``path`` whose name and shape match into ``model``.

    Args:
        model: The freshly built model.
        path: A run folder, a checkpoint of one, or a plain state-dict file (e.g. converted
            weights of the same architecture).

    Returns:
        What was loaded, skipped, missing and unused.

    Raises:
        RunError: The file cannot be read, or not one tensor matches (another architecture);
            the message lists the differences.
    """
    source = Path(path)
    theirs = _state_dict_of(source)
    mine = model.state_dict()
    loaded, mismatched, missing = [], [], []
    for name, tensor in mine.items():
        if name not in theirs:
            missing.append(name)
        elif tuple(theirs[name].shape) != tuple(tensor.shape):
            mismatched.append((name, tuple(theirs[name].shape), tuple(tensor.shape)))
        else:
            loaded.append(name)
    report = InitReport(
        source=source,
        loaded=loaded,
        mismatched=mismatched,
        missing=missing,
        unused=[k for k in theirs if k not in mine],
    )
    if not any(mine[name].numel() > 1 for name in loaded):
        raise RunError(
            f"init: no tensor of {source} fits this model (another architecture?)\n"
            + report.summary()
            + "".join(f"\n  missing {n}" for n in missing[:5])
        )
    with torch.no_grad():
        for name in loaded:
            mine[name].copy_(theirs[name].to(mine[name].dtype))
    return report


class _Step(nn.Module):
    """The model and the objective as one module: one forward per step for DDP to hook.

    DistributedDataParallel averages the gradients of whatever its module's forward used; the
    objective (and any head it owns) runs inside that forward, with the plain model, so it
    keeps reading ``model.num_classes`` and friends.
    """

    def __init__(self, model: EmbeddingModel, objective: Objective) -> None:
        super().__init__()
        self.model = model
        self.objective = objective  # registered as a submodule when it is one (owns weights)

    def forward(
        self, images: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, float]]:
        batch = Batch(images=images, labels=labels, distributed=True)
        return self.objective(self.model, batch)


def _replicate(
    model: EmbeddingModel, objective: Objective, device: torch.device
) -> Callable[[Batch], tuple[torch.Tensor, dict[str, float]]]:
    """``step(batch) -> (loss, parts)``: the objective, wrapped in DDP when distributed."""
    if not distributed.is_active():
        return lambda batch: objective(model, batch)
    ddp = nn.parallel.DistributedDataParallel(
        _Step(model, objective),
        device_ids=[device.index] if device.type == "cuda" else None,
        # Heads a step does not use (a hint head on a shard without labels, the projection
        # under the classification objective) must not stall the gradient all-reduce.
        find_unused_parameters=True,
    )
    return lambda batch: ddp(batch.images, batch.labels)


def _on_main(fn: Callable[[], Any], ctx: distributed.DistContext) -> Any:
    """``fn()`` on rank 0 alone, its result on every rank; its error raised on every rank."""
    if not ctx.enabled:
        return fn()
    outcome: tuple[str, Any] = ("ok", None)
    error: LatentsearchError | None = None
    if ctx.is_main:
        try:
            outcome = ("ok", fn())
        except LatentsearchError as e:
            error, outcome = e, ("error", str(e))
    outcome = distributed.broadcast_object(outcome)
    if error is not None:
        raise error
    if outcome[0] == "error":
        raise RunError(f"(from rank 0) {outcome[1]}")
    return outcome[1]


def train(
    config: TrainConfig,
    out: str | Path,
    *,
    resume: bool = False,
    progress: bool = True,
    log: Callable[[dict[str, Any]], None] | None = None,
    data: DataSplits | None = None,
    notify: Callable[[str], None] | None = None,
) -> Run:
    """Trains a model as ``config`` says and writes the run folder.

    Started by ``torchrun`` (``WORLD_SIZE`` > 1), every rank calls this with the same
    arguments: it joins the process group (gloo on CPU, NCCL on CUDA; see
    :mod:`latentsearch.distributed`), wraps the model in DistributedDataParallel, and
    splits each global batch of ``config.batch_size`` into contiguous shares, one per rank,
    of the same seed-derived epoch permutation. Each rank's loss is weighted by its share of
    the batch, so uneven shares still average to the loss of the global batch. Rank 0 alone
    reads the run folder (a resumed checkpoint is sent to the others), writes the config,
    checkpoints and ``metrics.jsonl``, computes the validation loss and calls ``log`` and
    ``notify``; the others wait at a barrier. ``config.world_size`` is set to the job's size.
    The process group is left open for the caller (``distributed.teardown()``).

    Args:
        config: What to train.
        out: The run folder; must be empty or absent unless ``resume``. After each epoch the
            checkpoints ``config.keep_checkpoints`` does not ask for are deleted.
        resume: Continue from the newest checkpoint in ``out`` (same config required).
        progress: Show a progress bar on a terminal (rank 0 only).
        log: Called with each epoch's metrics dict (rank 0 only).
        data: Already loaded data (otherwise loaded from ``config.data``).
        notify: Called with a line for the user (what ``config.init`` loaded; rank 0 only).

    Returns:
        The finished run (on every rank; its model has plain BatchNorm layers).

    Raises:
        RunError: ``out`` holds another run, or resuming finds nothing to resume.
        ConfigError: Invalid settings (e.g. labels asked for on unlabelled data).
        DistributedError: The ranks cannot work together (e.g. they loaded different data).
        RuntimeError: The loss stopped being finite (lower ``lr``).
        DiskFullError: A checkpoint or the metrics do not fit on ``out``'s disk (the
            checkpoints already written are intact, no temporary file is left).
    """
    ctx = distributed.context()
    device = distributed.rank_device(resolve_device(config.device), ctx)
    ctx = distributed.setup(device)
    with distributed.peer_failures(ctx):
        return _train(
            config,
            Path(out),
            ctx,
            device,
            resume=resume,
            progress=progress,
            log=log,
            data=data,
            notify=notify,
        )


@dataclass
class _Fitting:
    """What every epoch steps: built once, and restored from a checkpoint when resuming.

    Attributes:
        model: The model being trained (with SyncBatchNorm layers when asked for).
        objective: The loss; it may own weights (a projector) and state (a queue).
        optimizer: Steps the model's and the objective's weights.
        scheduler: The cosine schedule, stepped once per batch, or None.
        scaler: fp16's gradient scaler, or None.
        step: ``step(batch) -> (loss, parts)``, wrapped in DDP when distributed.
        precision: The autocast precision resolved for the device.
        device: Where the model lives.
    """

    model: EmbeddingModel
    objective: Objective
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler | None
    scaler: torch.amp.GradScaler | None
    step: Callable[[Batch], tuple[torch.Tensor, dict[str, float]]]
    precision: str
    device: torch.device


def _train(
    config: TrainConfig,
    out: Path,
    ctx: distributed.DistContext,
    device: torch.device,
    *,
    resume: bool,
    progress: bool,
    log: Callable[[dict[str, Any]], None] | None,
    data: DataSplits | None,
    notify: Callable[[str], None] | None,
) -> Run:
    """``train`` once the device is known and the process group joined."""
    if config.world_size != ctx.world_size:
        config = dataclasses.replace(config, world_size=ctx.world_size)
    if ctx.is_main and notify is not None and out.is_dir() and never_finished_an_epoch(out):
        notify(f"{out} holds a run that stopped before its first epoch ended: starting afresh")
    state = _on_main(lambda: prepare_run_folder(out, config, resume=resume), ctx)
    start_epoch = 0 if state is None else int(state["epoch"])

    # torchrun starts one process per GPU or share of the CPU: by default each takes its
    # share of the cores rather than all of them.
    threads = config.threads or max(1, available_cores() // ctx.local_world_size)
    torch.set_num_threads(threads)
    precision = resolve_precision(config.precision, device)
    data, splits = _load_splits(config, data, ctx=ctx, progress=progress)
    class_names = list(data.train.class_names)
    num_classes, fit_labels = _fit_labels(config, data, splits.fit)
    fitting = _build_fitting(
        config,
        splits.fit,
        num_classes,
        state=state,
        precision=precision,
        device=device,
        ctx=ctx,
        notify=notify,
    )
    if ctx.enabled and ctx.is_main and notify is not None:
        notify(_distributed_summary(config, ctx, device))
    history = _open_run_folder(out, config, start_epoch, ctx)

    pixels = torch.from_numpy(np.ascontiguousarray(splits.fit.pixels))
    labels = torch.from_numpy(fit_labels)
    fitting.model.train()
    for epoch in range(start_epoch, config.epochs):
        t0 = time.perf_counter()
        record = _train_epoch(fitting, config, epoch, pixels, labels, ctx=ctx, progress=progress)
        record.update(threads=threads, world_size=ctx.world_size, load_average=_load_average())
        if ctx.is_main:
            _finish_epoch(
                record,
                fitting,
                splits,
                out=out,
                config=config,
                num_classes=num_classes,
                class_names=class_names,
            )
            record["wall_seconds"] = time.perf_counter() - t0
            with disk_full_as_error(out, METRICS_FILE), (out / METRICS_FILE).open("a") as f:
                f.write(json.dumps(record) + "\n")
            # Only once the new checkpoint and its record are on disk.
            prune_checkpoints(
                out,
                last=int(record["epoch"]),
                history=[*history, record],
                keep=config.keep_checkpoints,
            )
            if log is not None:
                log(record)
        history.append(record)
        distributed.barrier()  # the others wait until rank 0 has written the epoch

    model = _plain_model(fitting, config, splits.fit, num_classes, ctx)
    return Run(
        path=out,
        config=config,
        model=model,
        class_names=class_names,
        epoch=config.epochs,
        history=history,
        fingerprint=fingerprint(model, config.model),
    )


def _load_splits(
    config: TrainConfig, data: DataSplits | None, *, ctx: distributed.DistContext, progress: bool
) -> tuple[DataSplits, ProtocolSplits]:
    """The data (loaded unless given) and the protocol's splits, checked to feed every rank."""
    if data is None:
        data = load_data(
            config.data,
            image_size=config.image_size,
            data_dir=config.data_dir,
            progress=progress and ctx.is_main,
        )
    splits = make_splits(data, config.protocol)
    n_fit = len(splits.fit)
    distributed.check_same(n_fit, what="the number of training images")
    if n_fit < 2 * ctx.world_size:
        raise distributed.DistributedError(
            f"{n_fit} training images cannot feed {ctx.world_size} processes (two each at "
            "least): start fewer"
        )
    return data, splits


def _fit_labels(config: TrainConfig, data: DataSplits, fit: ImageData) -> tuple[int, np.ndarray]:
    """The hint head's size and the labels training sees: ``label_fraction`` of them, else -1.

    Returns:
        The number of classes (0: no labels used) and the labels. Shape: (N,), int64.
    """
    fit_labels = np.full(len(fit), -1, dtype=np.int64)
    if config.label_fraction <= 0:
        return 0, fit_labels
    if not fit.has_labels:
        raise ConfigError(
            "label_fraction",
            f"{config.label_fraction} needs labels, but {data.name} has none (an image "
            "folder needs one subfolder per class)",
        )
    keep = label_subset(fit.labels, config.label_fraction, seed=config.seed)
    fit_labels[keep] = fit.labels[keep]
    return len(data.train.class_names), fit_labels


def _build_fitting(
    config: TrainConfig,
    fit: ImageData,
    num_classes: int,
    *,
    state: dict[str, Any] | None,
    precision: str,
    device: torch.device,
    ctx: distributed.DistContext,
    notify: Callable[[str], None] | None,
) -> _Fitting:
    """Model, objective, optimizer and schedule from the seed, then from ``state`` if resuming."""
    scaler = grad_scaler(precision, device)
    torch.manual_seed(config.seed)
    model = build_model(config, fit, num_classes).to(device)
    # Only rank 0 reads the file: DDP copies rank 0's weights to the others when it wraps.
    if config.init is not None and state is None and ctx.is_main:
        report = load_initial_weights(model, config.init)
        if notify is not None:
            notify(report.summary())
    if config.sync_batchnorm and ctx.enabled:
        model = distributed.convert_sync_batchnorm(model, device)  # type: ignore[assignment]
    if device.type == "cpu":
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    objective = create_objective(
        config.objective, hint_weight=config.hint_weight, **config.objective_kwargs
    )
    _check_neighbour_queue(objective, len(fit))
    params = [p for p in model.parameters() if p.requires_grad]
    if hasattr(objective, "parameters"):  # objectives may own a head (e.g. a projector)
        params += list(objective.parameters())
    optimizer = make_optimizer(config, params)
    steps_per_epoch = len(batch_bounds(len(fit), config.batch_size, min_last=2 * ctx.world_size))
    scheduler = (
        torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, config.epochs * steps_per_epoch)
        if config.cosine_schedule
        else None
    )
    if state is not None:
        _restore_training_state(state, model, optimizer, scheduler, objective, scaler)
    return _Fitting(
        model=model,
        objective=objective,
        optimizer=optimizer,
        scheduler=scheduler,
        scaler=scaler,
        # After restoring: DDP sends rank 0's weights to the others when it wraps the model.
        step=_replicate(model, objective, device),
        precision=precision,
        device=device,
    )


def _distributed_summary(
    config: TrainConfig, ctx: distributed.DistContext, device: torch.device
) -> str:
    """A line on how the job splits the batch, for the user."""
    backend = "nccl" if device.type == "cuda" else "gloo"
    per_rank = config.batch_size / ctx.world_size
    return (
        f"distributed: {ctx.world_size} processes ({backend}), global batch "
        f"{config.batch_size} (~{per_rank:.3g} per process), lr {config.lr:g} for the global "
        "batch (not rescaled), BatchNorm "
        + ("synchronised" if config.sync_batchnorm else "per process (sync_batchnorm: off)")
    )


def _open_run_folder(
    out: Path, config: TrainConfig, start_epoch: int, ctx: distributed.DistContext
) -> list[dict[str, Any]]:
    """Rank 0 writes the config and the metrics of the epochs kept; returns those epochs.

    A resumed run's ``metrics.jsonl`` is cut back to the checkpoint's epoch, so that epochs
    trained after the checkpoint and then lost are not counted twice. Other ranks keep none.
    """
    if not ctx.is_main:
        return []
    history = read_history(out)[:start_epoch]
    with disk_full_as_error(out, "the run's config and metrics"):
        out.mkdir(parents=True, exist_ok=True)
        (out / CHECKPOINT_DIR).mkdir(exist_ok=True)
        (out / CONFIG_FILE).write_text(json.dumps(config.to_dict(), indent=2) + "\n")
        (out / METRICS_FILE).write_text("".join(json.dumps(h) + "\n" for h in history))
    return history


def _train_epoch(
    fitting: _Fitting,
    config: TrainConfig,
    epoch: int,
    pixels: torch.Tensor,
    labels: torch.Tensor,
    *,
    ctx: distributed.DistContext,
    progress: bool,
) -> dict[str, Any]:
    """One pass over the training images.

    Args:
        pixels: The training images. Shape: (N, H, W, C), uint8.
        labels: Their labels, -1 where hidden. Shape: (N,).

    Returns:
        The epoch's record: its number, mean loss parts over every rank's images, speed,
        learning rate and precision.
    """
    # Batch order and augmentations depend on (seed, epoch) only, so resuming from a
    # checkpoint replays exactly what an uninterrupted run would have done. Every rank
    # draws the same order; each augments its share with its own stream.
    order = np.random.default_rng([config.seed, epoch]).permutation(len(pixels))
    torch.manual_seed(config.seed * 100_003 + epoch + 7_919 * ctx.rank)
    if hasattr(fitting.objective, "set_epoch"):  # objectives whose terms start at some epoch
        fitting.objective.set_epoch(epoch)
    totals: dict[str, float] = {}
    seen = 0
    t0 = time.perf_counter()
    bar = tqdm(
        total=len(pixels),
        desc=f"epoch {epoch + 1}/{config.epochs}",
        unit="img",
        disable=not (ctx.is_main and show_progress(progress)),
        leave=False,
    )
    for x, y, global_size in _iterate(pixels, labels, order, config.batch_size, ctx):
        batch = Batch(images=to_tensor(x.numpy(), fitting.device), labels=y.to(fitting.device))
        # Each rank's mean, weighted by its share: DDP's average of the gradients is then the
        # gradient of the global batch's mean, even for uneven shares.
        share = len(x) * ctx.world_size / global_size
        parts = _train_step(fitting, batch, share=share, ctx=ctx, epoch=epoch)
        for k, v in parts.items():
            totals[k] = totals.get(k, 0.0) + v * len(x)
        seen += len(x)
        bar.update(global_size)
        if bar.n % (config.batch_size * 20) < config.batch_size:
            rate = bar.n / max(time.perf_counter() - t0, 1e-9)
            bar.set_postfix(loss=f"{parts['loss']:.4f}", img_s=f"{rate:.0f}")
    bar.close()
    seconds = time.perf_counter() - t0
    if ctx.enabled:
        totals = distributed.all_reduce_dict({**totals, "__seen__": float(seen)})
        seen = int(totals.pop("__seen__"))
    return {
        "epoch": epoch + 1,
        "train": {k: v / max(seen, 1) for k, v in totals.items()},
        "seconds": seconds,
        "images_per_second": seen / max(seconds, 1e-9),
        "lr": fitting.optimizer.param_groups[0]["lr"],
        "precision": fitting.precision,
    }


def _train_step(
    fitting: _Fitting, batch: Batch, *, share: float, ctx: distributed.DistContext, epoch: int
) -> dict[str, float]:
    """One optimizer step on this rank's share of a batch; returns the loss parts.

    Args:
        share: This rank's share of the global batch times the number of ranks (the weight
            of its mean loss when distributed).

    Raises:
        RuntimeError: The loss is not finite on some rank (every rank raises).
    """
    with autocast(fitting.precision, fitting.device):
        loss, parts = fitting.step(batch)
    if ctx.enabled:
        loss = loss * share
        # Every rank must agree to stop, or the others would wait for it forever.
        bad = distributed.all_reduce_sum((~torch.isfinite(loss.detach())).float())
        finite = float(bad) == 0.0
    else:
        finite = bool(torch.isfinite(loss))
    if not finite:
        raise RuntimeError(f"loss became {float(loss)} at epoch {epoch + 1}: lower `lr` and retry")
    fitting.optimizer.zero_grad(set_to_none=True)
    if fitting.scaler is not None:
        fitting.scaler.scale(loss).backward()
        fitting.scaler.step(fitting.optimizer)
        fitting.scaler.update()
    else:
        loss.backward()
        fitting.optimizer.step()
    if fitting.scheduler is not None:
        fitting.scheduler.step()
    return parts


def _load_average() -> float | None:
    """The 1-minute load average, where the system has one.

    Other work on the cores slows an epoch: the record says how much there was.
    """
    return round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None


def _plain_model(
    fitting: _Fitting,
    config: TrainConfig,
    fit: ImageData,
    num_classes: int,
    ctx: distributed.DistContext,
) -> EmbeddingModel:
    """The trained model in eval mode, with plain BatchNorm layers instead of synchronised ones."""
    model = fitting.model.eval()
    if config.sync_batchnorm and ctx.enabled:
        plain = build_model(config, fit, num_classes).to(fitting.device)
        plain.load_state_dict(model.state_dict())
        model = plain.eval()
    return model


def _check_neighbour_queue(objective: Objective, n_fit: int) -> None:
    """Refuses a neighbour queue larger than the training set (before anything is written).

    Such a queue holds older projections of the very images in the batch, so a view's
    nearest neighbour is mostly its own image and the term teaches nothing new.
    """
    queue = getattr(objective, "queue_size", None)
    if getattr(objective, "neighbour_weight", 0.0) > 0 and queue is not None and queue > n_fit:
        raise ConfigError(
            "queue_size",
            f"is {queue}, more than the {n_fit} training images: a view's neighbour would "
            "mostly be an older copy of its own image; use "
            f"`queue_size={neighbour_queue_size(n_fit, largest=n_fit)}` (a fifth of the images) "
            "or less",
        )


def _training_state(
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None,
    objective: Objective,
    scaler: torch.amp.GradScaler | None,
) -> dict[str, Any]:
    """What resuming needs besides the weights."""
    state: dict[str, Any] = {"optimizer": optimizer.state_dict()}
    if scheduler is not None:
        state["scheduler"] = scheduler.state_dict()
    if hasattr(objective, "state_dict"):
        state["objective"] = objective.state_dict()
    if scaler is not None:
        state["scaler"] = scaler.state_dict()
    return state


def _restore_training_state(
    state: dict[str, Any],
    model: EmbeddingModel,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None,
    objective: Objective,
    scaler: torch.amp.GradScaler | None,
) -> None:
    """Loads a checkpoint's weights and what :func:`_training_state` saved.

    Raises:
        RunError: The checkpoint's weights or training state do not fit this run's model,
            optimizer, schedule or objective (one line).
    """
    try:
        model.load_state_dict(state["state_dict"])
        optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None and "scheduler" in state:
            scheduler.load_state_dict(state["scheduler"])
        if hasattr(objective, "load_state_dict") and "objective" in state:
            objective.load_state_dict(state["objective"])
        if scaler is not None and "scaler" in state:
            scaler.load_state_dict(state["scaler"])
    except LatentsearchError:
        raise
    except (KeyError, TypeError, ValueError, RuntimeError, IndexError, AttributeError) as e:
        first = str(e).splitlines()[0] if str(e) else ""
        raise RunError(
            f"cannot resume: the newest checkpoint's training state does not fit this run "
            f"({type(e).__name__}: {first:.200})"
        ) from None


def _finish_epoch(
    record: dict[str, Any],
    fitting: _Fitting,
    splits: ProtocolSplits,
    *,
    out: Path,
    config: TrainConfig,
    num_classes: int,
    class_names: list[str],
) -> None:
    """Rank 0's end of an epoch: the validation loss into ``record``, then the checkpoint."""
    training_state = _training_state(
        fitting.optimizer, fitting.scheduler, fitting.objective, fitting.scaler
    )
    if splits.val is not None and len(splits.val) >= 2:
        val_labels = splits.val.labels if num_classes else np.full(len(splits.val), -1)
        record["val"] = validation_loss(
            fitting.model,
            fitting.objective,
            splits.val,
            np.asarray(val_labels, dtype=np.int64),
            batch_size=config.batch_size,
            device=fitting.device,
            precision=fitting.precision,
        )
    save_checkpoint(
        out,
        config=config,
        model=fitting.model,
        class_names=class_names,
        epoch=int(record["epoch"]),
        training_state=training_state,
    )
