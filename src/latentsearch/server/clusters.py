"""The groups the run's SCAN head finds in the served index, held in memory for the server.

Loaded once, when the server starts: the head assigns every indexed image from the index's
stored vectors (a head fine-tuned with its own encoder copy re-reads the image files once).
An index whose run has no head, or whose head cannot assign it, is served without clusters;
:func:`load_served_clusters` then says why, and the server shows that sentence in ``/health``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from latentsearch.errors import LatentsearchError

if TYPE_CHECKING:
    from latentsearch.clusters import ClusterHead
    from latentsearch.index import ImageIndex
    from latentsearch.runs import Run


@dataclass(frozen=True)
class ServedClusters:
    """Each indexed image's cluster, and each cluster's images, most confident first.

    Attributes:
        head: The head, to assign uploaded images as well.
        assignment: Each item's cluster, in index order. Shape: (N,), int64.
        probability: The head's probability of that cluster. Shape: (N,), float32.
        members: For each cluster, the positions of its items, most probable first.
    """

    head: ClusterHead
    assignment: np.ndarray
    probability: np.ndarray
    members: tuple[np.ndarray, ...]

    @classmethod
    def from_probabilities(cls, head: ClusterHead, prob: np.ndarray) -> ServedClusters:
        """Groups the items by their most probable cluster.

        Args:
            head: The head that gave ``prob``.
            prob: Cluster probabilities of the indexed items. Shape: (N, K).
        """
        assignment = prob.argmax(axis=1).astype(np.int64)
        probability = prob[np.arange(len(prob)), assignment].astype(np.float32)
        # Most probable first; ties keep index order (a stable sort of the negated values).
        order = np.lexsort((np.arange(len(prob)), -probability, assignment))
        bounds = np.cumsum(np.bincount(assignment, minlength=prob.shape[1]))[:-1]
        return cls(head, assignment, probability, tuple(np.split(order, bounds)))

    @property
    def n_clusters(self) -> int:
        """Clusters the head has (some may hold no indexed image)."""
        return len(self.members)

    def assign_queries(
        self, vectors: np.ndarray, pixels: np.ndarray, run: Run
    ) -> tuple[np.ndarray, np.ndarray]:
        """Clusters of new images (uploads).

        Args:
            vectors: Their embeddings by the run, as the index embedded its images; the head
                reads these unless it has its own encoder. Shape: (B, D).
            pixels: The images, for a head with its own (fine-tuned) encoder.
                Shape: (B, H, W, C), uint8.
            run: The served run.

        Returns:
            The clusters (B,) and their probabilities (B,).
        """
        prob = self.head.image_probabilities(pixels, run.model, run_embeddings=vectors)
        best = prob.argmax(axis=1)
        return best, prob[np.arange(len(prob)), best]


def load_served_clusters(index: ImageIndex, run: Run) -> tuple[ServedClusters | None, str]:
    """The clusters to serve with ``index``, or None and why there are none.

    Args:
        index: The served index.
        run: The run that built it (already checked against the index).

    Returns:
        The clusters (or None), and a sentence for ``/health``: what was loaded, or why not.
    """
    from latentsearch.clusters import head_path
    from latentsearch.export import index_cluster_probabilities, load_index_head

    if not head_path(run.path).is_file():
        return None, f"no cluster head: train one with `latentsearch cluster {run.path}`"
    try:
        head = load_index_head(index, run)
        prob = index_cluster_probabilities(index, head=head)
    except LatentsearchError as e:
        return None, f"clusters not served: {e}"
    clusters = ServedClusters.from_probabilities(head, prob)
    return clusters, f"{clusters.n_clusters} clusters from {head_path(run.path)}"
