"""Model registry: a name arriving as a string becomes an ``EmbeddingModel``."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from latentsearch.errors import LatentsearchError
from latentsearch.models.base import EmbeddingModel, ModelOutput
from latentsearch.models.conv_ae import ConvAutoencoder
from latentsearch.models.resnet import SmallResNet
from latentsearch.models.seed_ae import SeedAutoencoder

MODELS: dict[str, Callable[..., EmbeddingModel]] = {
    "seed-ae": SeedAutoencoder,
    "conv-ae": ConvAutoencoder,
    "resnet-s": SmallResNet,
}


def create_model(name: str, **kwargs: Any) -> EmbeddingModel:
    """Builds a registered model.

    Args:
        name: A key of ``MODELS``.
        **kwargs: The model's constructor arguments (``in_channels``, ``image_size``,
            ``num_classes``, ...).

    Raises:
        LatentsearchError: For an unknown name or an argument the model does not take.
    """
    if name not in MODELS:
        raise LatentsearchError(
            f"unknown model {name!r}; choose one of: {', '.join(sorted(MODELS))}"
        )
    accepted = inspect.signature(MODELS[name]).parameters
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise LatentsearchError(
            f"model {name!r} does not take {', '.join(unknown)} (it takes: {', '.join(accepted)})"
        )
    return MODELS[name](**kwargs)


__all__ = [
    "MODELS",
    "ConvAutoencoder",
    "EmbeddingModel",
    "ModelOutput",
    "SeedAutoencoder",
    "SmallResNet",
    "create_model",
]
