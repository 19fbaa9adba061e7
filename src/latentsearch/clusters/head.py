"""The trained cluster head: what it assigns images to, and its file in the run folder."""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from latentsearch.clusters.config import ClusterConfig
from latentsearch.embedding import embed_images
from latentsearch.errors import LatentsearchError
from latentsearch.models.base import EmbeddingModel
from latentsearch.runs import atomic_torch_save, load_versioned

HEAD_FILE = "cluster_head.pt"
HEAD_FORMAT = "latentsearch-cluster-head/1"


class ClusterHeadError(LatentsearchError):
    """A cluster head file is missing, unreadable or belongs to another encoder."""


def mlp(dim: int, n_clusters: int, hidden: int) -> nn.Sequential:
    """One head: embedding -> hidden -> cluster logits. Shape: (B, D) -> (B, K)."""
    return nn.Sequential(
        nn.Linear(dim, hidden),
        nn.BatchNorm1d(hidden),
        nn.ReLU(inplace=True),
        nn.Linear(hidden, n_clusters),
    )


class ClusterHeads(nn.Module):
    """``heads`` independent MLPs from an embedding to cluster logits.

    Args:
        dim: Embedding width D.
        n_clusters: K.
        heads: H.
        hidden: Hidden width.
    """

    def __init__(self, dim: int, n_clusters: int, heads: int, hidden: int) -> None:
        super().__init__()
        self.heads = nn.ModuleList(mlp(dim, n_clusters, hidden) for _ in range(heads))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Shape: (B, D) -> (H, B, K) logits."""
        return torch.stack([h(x) for h in self.heads])


@torch.no_grad()
def head_probabilities(net: nn.Module, embeddings: np.ndarray) -> torch.Tensor:
    """Shape: (N, D) -> (N, K) on the CPU, with the head in eval mode (on any device)."""
    net.eval()
    device = next(net.parameters()).device
    # A copy per block: the rows may be read-only (an index's vectors), which torch refuses.
    blocks = (
        torch.from_numpy(np.array(embeddings[i : i + 4096], dtype=np.float32))
        for i in range(0, max(len(embeddings), 1), 4096)  # one (empty) block for no rows
    )
    return torch.cat([net(b.to(device)).softmax(-1).cpu() for b in blocks])


@dataclass
class ClusterHead:
    """A trained head: assigns images (via their embeddings) to clusters.

    Attributes:
        net: One MLP, embedding -> logits.
        config: How it was trained.
        encoder_sha256: SHA-256 of the encoder weights it was trained on.
        history: Per-epoch losses of the SCAN and self-labelling steps.
        seconds: Wall time the head took to train, embedding included.
        encoder: The fine-tuned copy of the encoder the head reads, or None when the head
            reads the run's own (frozen) encoder.
    """

    net: nn.Sequential
    config: ClusterConfig
    encoder_sha256: str
    history: list[dict[str, float]]
    seconds: float = 0.0
    encoder: EmbeddingModel | None = None

    @torch.no_grad()
    def probabilities(self, embeddings: np.ndarray) -> np.ndarray:
        """Cluster probabilities. Shape: (N, D) -> (N, K)."""
        return head_probabilities(self.net, embeddings).numpy()

    def assign(self, embeddings: np.ndarray) -> np.ndarray:
        """The most probable cluster of each embedding. Shape: (N, D) -> (N,).

        The embeddings must come from the encoder the head reads: :attr:`encoder` when it has
        one (see :meth:`assign_images`), else the run's.
        """
        return self.probabilities(embeddings).argmax(axis=1)

    def image_probabilities(
        self,
        pixels: np.ndarray,
        run_model: EmbeddingModel,
        run_embeddings: np.ndarray | None = None,
    ) -> np.ndarray:
        """Cluster probabilities of images, embedded by the encoder the head reads.

        Args:
            pixels: Shape: (N, H, W, C), uint8.
            run_model: The run's encoder, used when the head has no fine-tuned one.
            run_embeddings: The images already embedded by ``run_model`` (a search's query
                vectors), used instead of embedding them again when the head reads the run's
                encoder. Shape: (N, D).

        Returns:
            Shape: (N, K).
        """
        if self.encoder is None and run_embeddings is not None:
            return self.probabilities(run_embeddings)
        return self.probabilities(embed_images(self.encoder or run_model, pixels))

    def assign_images(self, pixels: np.ndarray, run_model: EmbeddingModel) -> np.ndarray:
        """The most probable cluster of each image (see :meth:`image_probabilities`).

        Returns:
            Shape: (N,).
        """
        return self.image_probabilities(pixels, run_model).argmax(axis=1)

    def save(self, path: str | Path) -> Path:
        """Writes the head atomically; returns the path."""
        path = Path(path)
        state = {
            "format": HEAD_FORMAT,
            "config": dataclasses.asdict(self.config),
            "encoder_sha256": self.encoder_sha256,
            "dim": self.net[0].in_features,
            "state_dict": self.net.state_dict(),
            "history": self.history,
            "seconds": self.seconds,
        }
        if self.encoder is not None:
            state["encoder_state"] = self.encoder.state_dict()
        return atomic_torch_save(state, path)


def load_cluster_head(
    path: str | Path,
    encoder_sha256: str | None = None,
    run_model: EmbeddingModel | None = None,
) -> ClusterHead:
    """Reads a head written by :meth:`ClusterHead.save`.

    Args:
        path: The head file.
        encoder_sha256: If given, the encoder the head must belong to.
        run_model: The run's encoder; needed (as the architecture) to rebuild a head's
            fine-tuned encoder, and otherwise unused.

    Raises:
        ClusterHeadError: Unreadable, not a head, trained on another encoder, or a fine-tuned
            head read without ``run_model``.
    """
    path = Path(path)
    state = load_versioned(path, HEAD_FORMAT, what="cluster head", error=ClusterHeadError)
    if encoder_sha256 is not None and state.get("encoder_sha256") != encoder_sha256:
        raise ClusterHeadError(
            f"{path} was trained on another encoder's weights: train it again with "
            "`latentsearch cluster RUN`"
        )
    try:
        config = ClusterConfig(**state["config"])
        net = mlp(int(state["dim"]), config.n_clusters, config.hidden)
        net.load_state_dict(state["state_dict"])
        encoder = None
        if "encoder_state" in state:
            if run_model is None:
                raise ClusterHeadError(
                    f"{path} holds a fine-tuned encoder: read it with the run's model"
                )
            encoder = copy.deepcopy(run_model)
            encoder.load_state_dict(state["encoder_state"])
            encoder.eval()
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise ClusterHeadError(f"{path}: malformed cluster head: {e}") from e
    return ClusterHead(
        net=net.eval(),
        config=config,
        encoder_sha256=str(state["encoder_sha256"]),
        history=list(state.get("history", [])),
        seconds=float(state.get("seconds", 0.0)),
        encoder=encoder,
    )


def head_path(run_dir: str | Path) -> Path:
    """Where a run folder keeps its cluster head."""
    return Path(run_dir) / HEAD_FILE
