"""Training objectives: callables ``objective(model, batch) -> (loss, parts)``.

The training loop only ever calls an objective, so a new one (contrastive, say) needs no change
to the loop. ``parts`` maps each loss component's name to its value for logging.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, cast

import torch
import torch.nn.functional as F

from latentsearch import distributed
from latentsearch.augment import AugmentConfig, augment
from latentsearch.errors import ConfigError, LatentsearchError
from latentsearch.models.base import EmbeddingModel


@dataclass
class Batch:
    """One training batch.

    Attributes:
        images: Images in [0, 1]. Shape: (B, C, H, W).
        labels: Class per image, -1 where the label is unknown or withheld. Shape: (B,).
        distributed: This is one rank's share of a global batch (torchrun): terms over the
            whole batch (NT-Xent's negatives) gather every rank's share.
    """

    images: torch.Tensor
    labels: torch.Tensor
    distributed: bool = False


class Objective(Protocol):
    """What the training loop calls."""

    def __call__(
        self, model: EmbeddingModel, batch: Batch
    ) -> tuple[torch.Tensor, dict[str, float]]: ...


def hint_loss(logits: torch.Tensor | None, labels: torch.Tensor) -> torch.Tensor | None:
    """Cross-entropy on the labelled part of a batch, or None when nothing is labelled.

    The mean runs over the labelled images only, so its scale does not shrink with the label
    fraction: ``hint_weight`` keeps one meaning whatever fraction of labels a run uses.

    Args:
        logits: Hint-head scores, or None for a model without a head. Shape: (B, K).
        labels: Shape: (B,), -1 for unlabelled.
    """
    if logits is None:
        return None
    known = labels >= 0
    if not bool(known.any()):
        return None
    return F.cross_entropy(logits[known].float(), labels[known])


class ReconstructionObjective:
    """Mean squared reconstruction error, plus the study's "hint" when a head is present.

    With ``hint_weight=1`` and every label known this is exactly the study's
    ``loss = MSE + categorical cross-entropy``.

    Args:
        hint_weight: Weight of the cross-entropy on labelled images.
    """

    def __init__(self, hint_weight: float = 1.0) -> None:
        self.hint_weight = hint_weight

    def __call__(
        self, model: EmbeddingModel, batch: Batch
    ) -> tuple[torch.Tensor, dict[str, float]]:
        out = model(batch.images)
        if out.reconstruction is None:
            raise LatentsearchError(f"{type(model).__name__} has no decoder: use another objective")
        mse = F.mse_loss(out.reconstruction.float(), batch.images)
        parts = {"mse": float(mse.detach())}
        loss = mse
        ce = hint_loss(out.logits, batch.labels)
        if ce is not None:
            loss = loss + self.hint_weight * ce
            parts["hint_ce"] = float(ce.detach())
        parts["loss"] = float(loss.detach())
        return loss, parts


def nt_xent(
    z1: torch.Tensor, z2: torch.Tensor, temperature: float, *, gather: bool = False
) -> torch.Tensor:
    """SimCLR's normalised-temperature cross-entropy (Chen et al., 2020).

    Each of the 2B views must pick out its partner among the other 2B - 1 views by cosine
    similarity.

    Args:
        z1: Projections of the first views. Shape: (B, P).
        z2: Projections of the second views. Shape: (B, P).
        temperature: Softmax temperature.
        gather: In a distributed job, contrast this rank's views against every rank's (as
            SimCLR does), through a gather that carries gradients: the mean over the ranks'
            losses, each weighted by its share of the views, is then the loss of the global
            batch. No effect in a plain process.

    Returns:
        The mean loss over all 2B views (a scalar); with ``gather``, over this rank's views.
    """
    b = z1.shape[0]
    # In fp32 whatever the autocast: bf16 similarities divided by a small temperature lose
    # the differences the loss is about.
    z = F.normalize(torch.cat([z1, z2]).float(), dim=1)
    if gather and distributed.is_active():
        return _nt_xent_gathered(z, b, temperature)
    sim = z @ z.T / temperature
    sim.fill_diagonal_(float("-inf"))  # a view is not its own positive
    targets = torch.cat([torch.arange(b, 2 * b), torch.arange(0, b)]).to(z.device)
    return F.cross_entropy(sim, targets)


def _nt_xent_gathered(z: torch.Tensor, b: int, temperature: float) -> torch.Tensor:
    """NT-Xent of this rank's 2b views against every rank's views.

    Args:
        z: This rank's normalised projections, first views then second views. Shape: (2b, P).
        b: Images on this rank.
        temperature: Softmax temperature.
    """
    everyone, offset = distributed.all_gather_cat(z)  # (2B, P), rank blocks of [v1; v2]
    sim = z @ everyone.T / temperature
    rows = torch.arange(2 * b, device=z.device)
    sim[rows, offset + rows] = float("-inf")  # a view is not its own positive
    partner = torch.cat([torch.arange(b, 2 * b), torch.arange(0, b)]).to(z.device)
    return F.cross_entropy(sim, offset + partner)


def as_augment_config(augment: AugmentConfig | dict[str, Any] | None) -> AugmentConfig | None:
    """An ``AugmentConfig`` from itself or from a JSON config's dict (lists back to tuples)."""
    if isinstance(augment, dict):
        fields: dict[str, Any] = {
            k: tuple(v) if isinstance(v, list) else v for k, v in augment.items()
        }
        return AugmentConfig(**fields)
    return augment


def neighbour_nt_xent(
    z1: torch.Tensor, z2: torch.Tensor, support: torch.Tensor, temperature: float
) -> torch.Tensor:
    """NNCLR's loss (Dwibedi et al., 2021): a view's positive is its nearest support vector.

    Each view is replaced by its nearest neighbour among earlier images' projections, which
    must then pick out the other view of the same image among the batch's other views. The
    neighbours carry no gradient; the pull falls on the other view.

    Args:
        z1: Normalised projections of the first views. Shape: (B, P), fp32.
        z2: Normalised projections of the second views. Shape: (B, P), fp32.
        support: Normalised projections of earlier images, detached. Shape: (Q, P).
        temperature: Softmax temperature.

    Returns:
        The mean of the two directions' cross-entropies (a scalar).
    """
    b = z1.shape[0]
    targets = torch.arange(b, device=z1.device)
    with torch.no_grad():
        nn1 = support[(z1 @ support.T).argmax(dim=1)]
        nn2 = support[(z2 @ support.T).argmax(dim=1)]
    loss12 = F.cross_entropy(nn1 @ z2.T / temperature, targets)
    loss21 = F.cross_entropy(nn2 @ z1.T / temperature, targets)
    return (loss12 + loss21) / 2


QUEUE_FRACTION = 5
"""A neighbour queue of at most 1/QUEUE_FRACTION of the training images (see below)."""


def scan_loss(
    anchor_logits: torch.Tensor, neighbour_logits: torch.Tensor, entropy_weight: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """SCAN's loss for each head: neighbours agree, and every cluster stays in use.

    ``-mean log <p(anchor), p(neighbour)> - entropy_weight * H(mean p(anchor))`` (Van Gansbeke
    et al., 2020); the cluster heads of :mod:`latentsearch.clusters` train on it.

    Args:
        anchor_logits: Shape: (H, B, K).
        neighbour_logits: Shape: (H, B, K).
        entropy_weight: Weight of the entropy of the mean assignment.

    Returns:
        Per-head total loss and per-head consistency term. Shapes: (H,), (H,).
    """
    p = anchor_logits.softmax(dim=-1)
    q = neighbour_logits.softmax(dim=-1)
    agreement = (p * q).sum(dim=-1).clamp_min(1e-7)
    consistency = -agreement.log().mean(dim=1)
    mean_p = p.mean(dim=1).clamp_min(1e-7)
    entropy = -(mean_p * mean_p.log()).sum(dim=-1)
    return consistency - entropy_weight * entropy, consistency


def neighbour_queue_size(n_fit: int, largest: int = 8192) -> int:
    """A neighbour queue for ``n_fit`` training images: a fifth of them, at most ``largest``.

    A queue near the training set's size would mostly hold older projections of the batch's
    own images, so a view's nearest neighbour would be its own image and teach nothing new.

    Args:
        n_fit: Training images.
        largest: The most projections kept, whatever the collection's size.

    Returns:
        The queue size, at least 1.
    """
    return max(1, min(largest, n_fit // QUEUE_FRACTION))


class ContrastiveObjective:
    """SimCLR: two augmented views per image, NT-Xent on the projections, plus the hint.

    The hint (cross-entropy on labelled images) reads the embedding of both views, which acts
    as a consistency constraint too: both views of a labelled image must name its class.

    With ``neighbour_weight`` > 0, that share of the contrastive loss is NNCLR's
    (:func:`neighbour_nt_xent`): positives are nearest neighbours from a queue of the last
    ``queue_size`` training images' first-view projections (a model in eval mode, as in a
    validation pass, reads the queue but adds nothing), which pulls similar images together
    rather than only two views of one image. The term starts once the queue is full and, with
    ``neighbour_start_epoch``, not before that epoch (0-based, told by the training loop through
    :meth:`set_epoch`), so one run can learn plain SimCLR first and neighbours after, under one
    learning-rate schedule; the queue fills during the earlier epochs. The queue is part of
    :meth:`state_dict`, so a resumed run carries on with the neighbours it had. Under
    torchrun each process keeps its own queue; a resumed distributed run restarts every
    process from the main process's.

    Args:
        hint_weight: Weight of the cross-entropy on labelled images.
        temperature: NT-Xent temperature (SimCLR on CIFAR-10: 0.5).
        augment: Augmentation strengths (default ``AugmentConfig()``).
        neighbour_weight: Share in [0, 1] of the contrastive loss from neighbour positives.
        queue_size: Projections kept as the neighbours' support set.
        neighbour_start_epoch: First epoch (0-based) whose batches use neighbour positives.
    """

    DEFAULT_AUGMENT: ClassVar[AugmentConfig] = AugmentConfig()

    def __init__(
        self,
        hint_weight: float = 1.0,
        temperature: float = 0.5,
        augment: AugmentConfig | dict[str, Any] | None = None,
        neighbour_weight: float = 0.0,
        queue_size: int = 8192,
        neighbour_start_epoch: int = 0,
    ) -> None:
        if temperature <= 0:
            raise ConfigError("temperature", f"must be positive, got {temperature}")
        if not 0.0 <= neighbour_weight <= 1.0:
            raise ConfigError("neighbour_weight", f"must be in [0, 1], got {neighbour_weight}")
        if isinstance(queue_size, bool) or not isinstance(queue_size, int) or queue_size < 1:
            raise ConfigError("queue_size", f"must be a positive integer, got {queue_size!r}")
        start = neighbour_start_epoch
        if isinstance(start, bool) or not isinstance(start, int) or start < 0:
            raise ConfigError(
                "neighbour_start_epoch", f"must be an integer >= 0, got {neighbour_start_epoch!r}"
            )
        self.hint_weight = hint_weight
        self.temperature = temperature
        self.augment = as_augment_config(augment) or self.DEFAULT_AUGMENT
        self.neighbour_weight = float(neighbour_weight)
        self.queue_size = queue_size
        self.neighbour_start_epoch = neighbour_start_epoch
        self._epoch = 0  # the current epoch, 0-based, as set_epoch last said
        self._queue: torch.Tensor | None = None  # (queue_size, P) once the first batch is seen
        self._queued = 0  # projections written so far (the ring's write position mod size)

    def set_epoch(self, epoch: int) -> None:
        """Tell the objective which epoch (0-based) the next batches belong to."""
        self._epoch = epoch

    def state_dict(self) -> dict[str, Any]:
        """The neighbour queue, for a checkpoint (empty without neighbour positives).

        Returns:
            ``{"queue": (queue_size, P) float tensor, "queued": int}`` once a training batch
            has been queued, else ``{}``.
        """
        if self._queue is None:
            return {}
        return {"queue": self._queue.detach().cpu().clone(), "queued": self._queued}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned.

        Raises:
            ConfigError: If the saved queue holds another number of projections than
                ``queue_size``.
        """
        if not state:
            return
        queue = state["queue"]
        if queue.shape[0] != self.queue_size:
            raise ConfigError(
                "queue_size",
                f"the checkpoint's neighbour queue holds {queue.shape[0]} projections, "
                f"this objective {self.queue_size}",
            )
        self._queue = queue.float()
        self._queued = int(state["queued"])

    def _neighbour_term(
        self, p1: torch.Tensor, p2: torch.Tensor, enqueue: bool
    ) -> torch.Tensor | None:
        """The NNCLR loss against the queue (None until it is full); may enqueue ``p1``."""
        z1 = F.normalize(p1.float(), dim=1)
        z2 = F.normalize(p2.float(), dim=1)
        if self._queue is None:
            self._queue = torch.zeros(self.queue_size, z1.shape[1], device=z1.device)
        elif self._queue.device != z1.device:  # restored from a checkpoint on the CPU
            self._queue = self._queue.to(z1.device)
        loss = None
        if self._queued >= self.queue_size and self._epoch >= self.neighbour_start_epoch:
            loss = neighbour_nt_xent(z1, z2, self._queue, self.temperature)
        if not enqueue:
            return loss
        new = z1.detach()[-self.queue_size :]
        rows = (self._queued + torch.arange(len(new), device=z1.device)) % self.queue_size
        self._queue[rows] = new
        self._queued += len(new)
        return loss

    def __call__(
        self, model: EmbeddingModel, batch: Batch
    ) -> tuple[torch.Tensor, dict[str, float]]:
        b = batch.images.shape[0]
        views = torch.cat(
            [augment(batch.images, self.augment), augment(batch.images, self.augment)]
        )
        out = model(views)
        if out.projection is None:
            raise LatentsearchError(
                f"{type(model).__name__} has no projection head: the contrastive objective "
                "needs a model such as resnet-s"
            )
        contrast = nt_xent(
            out.projection[:b], out.projection[b:], self.temperature, gather=batch.distributed
        )
        parts = {"nt_xent": float(contrast.detach())}
        if self.neighbour_weight > 0:
            # Only training batches join the queue: a validation pass leaves it as it was.
            nn_loss = self._neighbour_term(
                out.projection[:b], out.projection[b:], enqueue=model.training
            )
            if nn_loss is not None:
                parts["nn_xent"] = float(nn_loss.detach())
                w = self.neighbour_weight
                contrast = (1 - w) * contrast + w * nn_loss
        loss = contrast
        ce = hint_loss(out.logits, torch.cat([batch.labels, batch.labels]))
        if ce is not None:
            loss = loss + self.hint_weight * ce
            parts["hint_ce"] = float(ce.detach())
        parts["loss"] = float(loss.detach())
        return loss, parts


class ClassificationObjective:
    """Cross-entropy on one augmented view of each labelled image (the plain supervised recipe).

    Unlabelled images in a batch contribute nothing. The hint weight is ignored: the
    cross-entropy is the whole loss.

    Args:
        hint_weight: Accepted for a uniform interface; unused.
        label_smoothing: Cross-entropy label smoothing.
        augment: Augmentation strengths (default: crops of 35-100 %, flips, no colour change).
    """

    DEFAULT_AUGMENT: ClassVar[AugmentConfig] = AugmentConfig(
        crop_scale=(0.35, 1.0), jitter_p=0.0, grayscale_p=0.0
    )

    def __init__(
        self,
        hint_weight: float = 1.0,
        label_smoothing: float = 0.1,
        augment: AugmentConfig | dict[str, Any] | None = None,
    ) -> None:
        del hint_weight
        self.label_smoothing = label_smoothing
        self.augment = as_augment_config(augment) or self.DEFAULT_AUGMENT

    def __call__(
        self, model: EmbeddingModel, batch: Batch
    ) -> tuple[torch.Tensor, dict[str, float]]:
        if model.num_classes == 0:
            raise LatentsearchError(
                "the classification objective needs labels (`label_fraction` above 0) and a "
                "model with a head"
            )
        known = batch.labels >= 0
        if int(known.sum()) < 2:
            # Too few labelled images for batch norm: a zero with a gradient.
            zero = torch.zeros((), device=batch.images.device)
            loss = sum((p.sum() for p in model.parameters()), zero) * 0.0
            return loss, {"ce": 0.0, "loss": 0.0}
        # Only labelled images are seen: with few labels most of a batch would be wasted work.
        out = model(augment(batch.images[known], self.augment))
        logits = cast(torch.Tensor, out.logits)  # a model with classes has a head
        loss = F.cross_entropy(
            logits.float(), batch.labels[known], label_smoothing=self.label_smoothing
        )
        value = float(loss.detach())
        return loss, {"ce": value, "loss": value}


OBJECTIVES: dict[str, Callable[..., Any]] = {
    "reconstruction": ReconstructionObjective,
    "contrastive": ContrastiveObjective,
    "classification": ClassificationObjective,
}


def default_augment(name: str) -> AugmentConfig | None:
    """The augmentations a registered objective uses when its config names none.

    Returns:
        Its ``DEFAULT_AUGMENT``, or None for an objective that does not augment
        (reconstruction) or an unknown name.
    """
    default: AugmentConfig | None = getattr(OBJECTIVES.get(name), "DEFAULT_AUGMENT", None)
    return default


def create_objective(name: str, **kwargs: Any) -> Objective:
    """Builds a registered objective by name.

    Raises:
        ValueError: For an unknown name.
    """
    if name not in OBJECTIVES:
        raise LatentsearchError(
            f"unknown objective {name!r}; choose one of: {', '.join(sorted(OBJECTIVES))}"
        )
    obj: Objective = OBJECTIVES[name](**kwargs)
    return obj
