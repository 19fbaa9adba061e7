"""How a SCAN cluster head is trained: one frozen, validated settings object."""

from __future__ import annotations

from dataclasses import dataclass

from latentsearch.errors import ConfigError, LatentsearchError


@dataclass(frozen=True)
class ClusterConfig:
    """How the SCAN head is trained."""

    n_clusters: int = 10  # clusters the head assigns
    n_neighbours: int = 20  # mined nearest neighbours per image (SCAN: 20)
    views: int = 4  # augmented embeddings per image the head learns from
    entropy_weight: float = 5.0  # weight of the cluster-usage entropy (SCAN: 5)
    heads: int = 10  # heads trained at once; the one with the lowest SCAN loss is kept
    epochs: int = 60  # passes over the images for the SCAN step
    self_label_epochs: int = 20  # passes of self-labelling (0: none)
    confidence: float = 0.99  # self-labelling keeps predictions at least this sure
    batch_size: int = 512  # anchors per step
    lr: float = 1e-3  # Adam learning rate
    hidden: int = 512  # hidden width of each head's MLP
    seed: int = 0  # seeds heads, sampling and augmentations
    finetune_epochs: int = 0  # passes of SCAN with the encoder trained too (0: frozen)
    finetune_lr: float = 1e-4  # Adam learning rate of encoder and heads when fine-tuning (SCAN)
    finetune_batch_size: int = 256  # anchors per fine-tuning step (plus as many neighbours)
    finetune_self_label_epochs: int = 0  # self-labelling passes that train the encoder too

    def __post_init__(self) -> None:
        for name in ("finetune_epochs", "finetune_self_label_epochs", "self_label_epochs"):
            if getattr(self, name) < 0:
                raise ConfigError(name, f"must be 0 or more, got {getattr(self, name)}")
        if self.n_clusters < 2:
            raise ConfigError("n_clusters", f"must be at least 2, got {self.n_clusters}")
        if self.n_neighbours < 1 or self.views < 1 or self.heads < 1 or self.epochs < 1:
            raise LatentsearchError("n_neighbours, views, heads and epochs must be at least 1")
        if not 0.0 < self.confidence < 1.0:
            raise ConfigError("confidence", f"must be in (0, 1), got {self.confidence}")

    @property
    def finetunes(self) -> bool:
        """Whether a copy of the encoder is trained too (SCAN or self-labelling passes)."""
        return self.finetune_epochs > 0 or self.finetune_self_label_epochs > 0
