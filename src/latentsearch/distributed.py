"""Distributed training as a thin layer: the same code runs as one process or as N ranks.

Start N ranks with ``torchrun`` (``torchrun --standalone --nproc_per_node N -m latentsearch
train ...``); it sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``LOCAL_WORLD_SIZE``,
``MASTER_ADDR`` and ``MASTER_PORT`` for each. A plain process (none of them set) is rank 0 of
1, and every function here is then a no-op that returns its input, so callers never branch on
whether they run distributed.

The conventions every user of this module keeps:

- ``context()`` says who this process is; ``setup(device)`` joins the process group once
  (gloo on CPU, NCCL on CUDA) with a timeout, so a peer that hangs is an error, not a hang (a
  peer that dies closes its connections and the others fail at once).
- Work over ``n`` items is split with ``shard(n, ctx)``: **contiguous** slices, the first
  ``n % world_size`` ranks taking one item more. Concatenating the shards in rank order gives
  back ``range(n)``.
- Only rank 0 (``ctx.is_main``) writes files; the others wait at ``barrier()``.
- Collectives are entered by every rank in the same order; a rank that skips one hangs the
  others until the timeout.

Environment: ``LATENTSEARCH_DIST_TIMEOUT`` (seconds, default 1800) bounds every collective.
"""

from __future__ import annotations

import contextlib
import datetime
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from latentsearch.errors import LatentsearchError

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "DistContext",
    "DistributedError",
    "SyncBatchNormCPU",
    "all_gather_cat",
    "all_reduce_dict",
    "all_reduce_sum",
    "barrier",
    "broadcast_object",
    "check_same",
    "context",
    "convert_sync_batchnorm",
    "is_active",
    "peer_failures",
    "rank_device",
    "setup",
    "shard",
    "teardown",
]

DEFAULT_TIMEOUT_S = 1800.0
"""How long a collective waits for a peer before failing (``LATENTSEARCH_DIST_TIMEOUT``)."""

_ENV_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE")


class DistributedError(LatentsearchError):
    """The ranks of a job cannot work together (bad environment, different data, lost peer)."""


@dataclass(frozen=True)
class DistContext:
    """Who this process is in a job.

    Attributes:
        rank: Global rank, 0 to ``world_size - 1``.
        world_size: Processes in the job (1: a plain process).
        local_rank: Rank on this machine (picks the GPU).
        local_world_size: Processes on this machine (shares its CPU cores).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes files and prints."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        """More than one process: collectives do something."""
        return self.world_size > 1


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise DistributedError(
            f"environment variable {name}={raw!r} is not an integer: start the job with torchrun"
        ) from None


def context() -> DistContext:
    """This process's place in the job, from torchrun's environment (rank 0 of 1 without it).

    Raises:
        DistributedError: The variables are not integers or contradict each other.
    """
    world = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", rank if world > 1 else 0)
    local_world = _env_int("LOCAL_WORLD_SIZE", world)
    if world < 1 or not 0 <= rank < world or not 0 <= local_rank < max(local_world, 1):
        raise DistributedError(
            f"inconsistent torchrun environment: RANK={rank}, WORLD_SIZE={world}, "
            f"LOCAL_RANK={local_rank}, LOCAL_WORLD_SIZE={local_world}"
        )
    return DistContext(
        rank=rank, world_size=world, local_rank=local_rank, local_world_size=local_world
    )


def is_active() -> bool:
    """Whether a process group of more than one rank is initialised in this process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def timeout_seconds() -> float:
    """The collective timeout: ``LATENTSEARCH_DIST_TIMEOUT`` or ``DEFAULT_TIMEOUT_S``."""
    raw = os.environ.get("LATENTSEARCH_DIST_TIMEOUT")
    if not raw:
        return DEFAULT_TIMEOUT_S
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if value <= 0:
        raise DistributedError(f"LATENTSEARCH_DIST_TIMEOUT={raw!r} must be a positive number")
    return value


def rank_device(device: torch.device, ctx: DistContext) -> torch.device:
    """The device of this rank: ``cuda:LOCAL_RANK`` for CUDA in a job, else ``device``."""
    if ctx.enabled and device.type == "cuda" and device.index is None:
        return torch.device("cuda", ctx.local_rank)
    return device


def setup(device: torch.device, *, timeout: float | None = None) -> DistContext:
    """Joins the job's process group (once; later calls only return the context).

    A plain process initialises nothing. In a job the backend is NCCL for CUDA devices and
    gloo otherwise, and each CUDA rank is bound to ``cuda:LOCAL_RANK``.

    Args:
        device: Where this rank computes.
        timeout: Seconds a collective waits for its peers (default ``timeout_seconds()``).

    Returns:
        This process's context.

    Raises:
        DistributedError: torch was built without distributed support, or torchrun's
            rendezvous variables (``MASTER_ADDR``, ``MASTER_PORT``) are missing.
    """
    ctx = context()
    if not ctx.enabled:
        return ctx
    if not dist.is_available():
        raise DistributedError("this PyTorch build has no torch.distributed: run one process")
    if dist.is_initialized():
        return ctx
    missing = [v for v in ("MASTER_ADDR", "MASTER_PORT") if not os.environ.get(v)]
    if missing:
        raise DistributedError(
            f"WORLD_SIZE={ctx.world_size} but {', '.join(missing)} not set: start the job with "
            "torchrun (e.g. torchrun --standalone --nproc_per_node N -m latentsearch train ...)"
        )
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(rank_device(device, ctx))
    seconds = timeout if timeout is not None else timeout_seconds()
    dist.init_process_group(
        backend=backend,
        rank=ctx.rank,
        world_size=ctx.world_size,
        timeout=datetime.timedelta(seconds=seconds),
    )
    return ctx


def teardown() -> None:
    """Leaves the process group (no-op when none was initialised)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    """Waits until every rank has arrived (no-op for a plain process)."""
    if not is_active():
        return
    if dist.get_backend() == "nccl":
        dist.barrier(device_ids=[torch.cuda.current_device()])
    else:
        dist.barrier()


def shard(n: int, ctx: DistContext) -> slice:
    """This rank's contiguous share of ``n`` items.

    The first ``n % world_size`` ranks take ``n // world_size + 1`` items, the others
    ``n // world_size``, so shard sizes differ by at most one and the shards, in rank order,
    cover ``range(n)`` exactly once. A rank may get an empty slice when ``n < world_size``.

    Args:
        n: Number of items.
        ctx: The rank's context.
    """
    if n < 0:
        raise ValueError(f"n must be non-negative, got {n}")
    base, extra = divmod(n, ctx.world_size)
    start = ctx.rank * base + min(ctx.rank, extra)
    return slice(start, start + base + (1 if ctx.rank < extra else 0))


def _comm_device() -> torch.device:
    """Where collectives' tensors must live: this rank's GPU under NCCL, else the CPU."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """The sum of ``tensor`` over all ranks (a copy, on ``tensor``'s device; no gradient).

    Not distributed: ``tensor`` itself.
    """
    if not is_active():
        return tensor
    out = tensor.detach().to(_comm_device(), copy=True)
    dist.all_reduce(out)
    return out.to(tensor.device)


def broadcast_object(obj: Any, *, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every rank (picklable values only; ``obj`` itself alone).

    The other ranks' ``obj`` is ignored. Use for small state (a checkpoint dict, an outcome),
    never for anything a user supplies over the network: the transport pickles.
    """
    if not is_active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def check_same(value: int, *, what: str) -> None:
    """Raises on every rank unless all ranks hold the same ``value``.

    Args:
        value: This rank's value (e.g. how many images it loaded).
        what: What the value counts, for the message.

    Raises:
        DistributedError: The ranks disagree; the message lists each rank's value.
    """
    if not is_active():
        return
    t = torch.tensor([value], dtype=torch.int64, device=_comm_device())
    seen = [torch.zeros_like(t) for _ in range(dist.get_world_size())]
    dist.all_gather(seen, t)
    values = [int(s.item()) for s in seen]
    if len(set(values)) > 1:
        per_rank = ", ".join(f"rank {r}: {v}" for r, v in enumerate(values))
        raise DistributedError(
            f"the ranks disagree on {what} ({per_rank}): every rank must read the same data "
            "(same path, same files on every node)"
        )


def _is_collective_failure(error: BaseException) -> bool:
    if isinstance(error, getattr(dist, "DistError", ())):
        return True
    text = str(error)
    return any(
        marker in text
        for marker in ("Connection closed by peer", "Connection reset by peer", "gloo", "NCCL")
    )


@contextlib.contextmanager
def peer_failures(ctx: DistContext) -> Iterator[None]:
    """Turns a collective that failed because a peer died or hung into a ``DistributedError``.

    The message names this rank and says to look for the other rank's own error: the rank
    that failed first prints the cause; the others only see their connection close.
    """
    try:
        yield
    except RuntimeError as e:
        if not ctx.enabled or not _is_collective_failure(e):
            raise
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DistributedError(
            f"rank {ctx.rank} of {ctx.world_size} lost contact with the job's other processes "
            f"({first[:200]}): one of them stopped or hung; its own message says why"
        ) from e


# ---------------------------------------------------------------------------- differentiable
class _AllReduceSum(torch.autograd.Function):
    """Sum over ranks with a gradient: each rank's input reaches every rank's loss."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        out = x.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        # d(sum of every rank's loss)/dx = the sum over ranks of each loss's gradient.
        out = grad.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(out)
        return out


class _GatherCat(torch.autograd.Function):
    """Concatenation of every rank's rows, of uneven counts, with a gradient."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, sizes: list[int], rank: int) -> torch.Tensor:
        padded = x.new_zeros((max(sizes), *x.shape[1:]))
        padded[: x.shape[0]] = x
        parts = [torch.empty_like(padded) for _ in sizes]
        dist.all_gather(parts, padded)
        ctx.sizes, ctx.rank = sizes, rank
        return torch.cat([p[:s] for p, s in zip(parts, sizes, strict=True)])

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        # Every rank's loss reads every row: sum their gradients, keep this rank's rows.
        total = grad.contiguous().clone()
        dist.all_reduce(total)
        start = sum(ctx.sizes[: ctx.rank])
        return total[start : start + ctx.sizes[ctx.rank]], None, None


def all_gather_cat(x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Every rank's ``x`` concatenated in rank order, differentiable; and where ``x`` starts.

    Ranks may hold different numbers of rows. The gradient reaching this rank's rows is the
    sum of every rank's gradient for them, so summing the ranks' losses (as
    DistributedDataParallel's gradient averaging does, up to 1/world_size) differentiates the
    loss of the whole gathered batch.

    Args:
        x: This rank's rows. Shape: (b, ...).

    Returns:
        ``(gathered, offset)``: gathered shape (B, ...) with B the sum of every rank's b, and
        ``gathered[offset : offset + b]`` is ``x``. Not distributed: ``(x, 0)``.
    """
    if not is_active():
        return x, 0
    rank, world = dist.get_rank(), dist.get_world_size()
    n = torch.tensor([x.shape[0]], dtype=torch.int64, device=x.device)
    counts = [torch.zeros_like(n) for _ in range(world)]
    dist.all_gather(counts, n)
    sizes = [int(c.item()) for c in counts]
    gathered: torch.Tensor = _GatherCat.apply(x.contiguous(), sizes, rank)
    return gathered, sum(sizes[:rank])


# ---------------------------------------------------------------------------- batch norm
class SyncBatchNormCPU(nn.modules.batchnorm._BatchNorm):
    """BatchNorm whose training statistics are those of the global batch, on any device.

    ``torch.nn.SyncBatchNorm`` runs on GPUs only; this one all-reduces per-channel sums
    (two passes: the mean, then the squared deviations, for numerical stability) through gloo
    as well. Its parameters and buffers have BatchNorm's names, so checkpoints load into the
    plain model. Outside training, or in a plain process, it is ordinary BatchNorm.

    Shape: input (N, C, ...) → output of the same shape.
    """

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if not (self.training and is_active()):
            return super().forward(input)
        self._check_input_dim(input)
        factor = 0.0 if self.momentum is None else self.momentum
        if self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:  # cumulative moving average
                factor = 1.0 / float(self.num_batches_tracked)
        dims = [0, *range(2, input.dim())]
        shape = [1, input.shape[1]] + [1] * (input.dim() - 2)
        x = input.float() if input.dtype in (torch.float16, torch.bfloat16) else input
        count = torch.tensor([x.numel() / x.shape[1]], dtype=x.dtype, device=x.device)
        sums = _AllReduceSum.apply(torch.cat([x.sum(dims), count]))
        n = sums[-1]
        mean = sums[:-1] / n
        centered = x - mean.view(shape)
        var = _AllReduceSum.apply((centered * centered).sum(dims)) / n
        y = centered * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        if self.running_mean is not None and self.running_var is not None:
            with torch.no_grad():
                self.running_mean.lerp_(mean.detach().to(self.running_mean.dtype), factor)
                unbiased = var.detach() * n / torch.clamp(n - 1, min=1)
                self.running_var.lerp_(unbiased.to(self.running_var.dtype), factor)
        return y.to(input.dtype)


def _to_cpu_sync(module: nn.Module) -> nn.Module:
    """``module`` with its BatchNorm layers replaced, sharing their tensors (as torch does)."""
    out = module
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(
        module, SyncBatchNormCPU
    ):
        out = SyncBatchNormCPU(
            module.num_features,
            eps=module.eps,
            momentum=module.momentum,
            affine=module.affine,
            track_running_stats=module.track_running_stats,
        )
        if module.affine:
            with torch.no_grad():
                out.weight = module.weight
                out.bias = module.bias
        out.running_mean = module.running_mean
        out.running_var = module.running_var
        out.num_batches_tracked = module.num_batches_tracked
        out.training = module.training
    for name, child in module.named_children():
        out.add_module(name, _to_cpu_sync(child))
    return out


def convert_sync_batchnorm(model: nn.Module, device: torch.device) -> nn.Module:
    """``model`` with every BatchNorm layer synchronised across ranks.

    CUDA uses ``torch.nn.SyncBatchNorm``; other devices ``SyncBatchNormCPU``. Names of
    parameters and buffers are unchanged, so state dicts stay interchangeable with the plain
    model. Call it before creating the optimizer (the layers are new modules).

    Args:
        model: The model (modified in place where possible and returned).
        device: Where it trains.
    """
    if device.type == "cuda":
        converted: nn.Module = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        return converted
    return _to_cpu_sync(model)


def all_reduce_dict(values: dict[str, float]) -> dict[str, float]:
    """Per-key sums over ranks of dicts whose keys may differ (a missing key counts as 0).

    Args:
        values: This rank's numbers.

    Returns:
        Every key any rank has, with its sum over ranks (``values`` itself when not
        distributed).
    """
    if not is_active():
        return values
    key_lists: list[list[str] | None] = [None] * dist.get_world_size()
    dist.all_gather_object(key_lists, sorted(values))
    keys = sorted({k for ks in key_lists for k in (ks or [])})
    t = torch.tensor([values.get(k, 0.0) for k in keys], dtype=torch.float64, device=_comm_device())
    dist.all_reduce(t)
    return dict(zip(keys, t.tolist(), strict=True))
