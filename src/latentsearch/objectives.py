"""Training objectives: callables ``objective(model, batch) -> (loss, parts)``.

The training loop only ever calls an objective, so a new one (contrastive, say) needs no change
to the loop. ``parts`` maps each loss component's name to its value for logging.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import torch
import torch.nn.functional as F

from latentsearch.models.base import EmbeddingModel


@dataclass
class Batch:
    """One training batch.

    Attributes:
        images: Images in [0, 1]. Shape: (B, C, H, W).
        labels: Class per image, -1 where the label is unknown or withheld. Shape: (B,).
    """

    images: torch.Tensor
    labels: torch.Tensor


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
    return F.cross_entropy(logits[known], labels[known])


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
            raise ValueError(f"{type(model).__name__} has no decoder: use another objective")
        mse = F.mse_loss(out.reconstruction, batch.images)
        parts = {"mse": float(mse.detach())}
        loss = mse
        ce = hint_loss(out.logits, batch.labels)
        if ce is not None:
            loss = loss + self.hint_weight * ce
            parts["hint_ce"] = float(ce.detach())
        parts["loss"] = float(loss.detach())
        return loss, parts


OBJECTIVES: dict[str, Callable[..., Any]] = {
    "reconstruction": ReconstructionObjective,
}


def create_objective(name: str, **kwargs: Any) -> Objective:
    """Builds a registered objective by name.

    Raises:
        ValueError: For an unknown name.
    """
    if name not in OBJECTIVES:
        raise ValueError(
            f"unknown objective {name!r}; choose one of: {', '.join(sorted(OBJECTIVES))}"
        )
    obj: Objective = OBJECTIVES[name](**kwargs)
    return obj
