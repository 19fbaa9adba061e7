"""Scores a trained run under its protocol: clustering and retrieval on held-out images.

KMeans and the nearest-neighbour search run once per evaluation; the scores, the report and
the command line all read their results (:class:`Evaluation`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from latentsearch.data import DataSplits, load_data
from latentsearch.embedding import embed_images
from latentsearch.errors import LatentsearchError
from latentsearch.metrics import (
    clustering_scores,
    kmeans_scores,
    nearest_neighbors,
    pixel_baseline,
    retrieval_results,
)
from latentsearch.protocols import ProtocolSplits, make_splits
from latentsearch.runs import Run

# The study's published numbers (CIFAR-10, its own protocol, clustering its training images).
PUBLISHED = {
    "vanilla": {"nmi": 0.074, "ri": 0.811},
    "hint": {"nmi": 0.433, "ri": 0.876},
}


NEIGHBOURS = 10
"""Nearest database images an evaluation keeps per query: precision@10's cut-off, enough for
a report's retrieval grid and per-class precision."""


@dataclass(frozen=True)
class Neighbours:
    """The nearest database images of each query, the query itself left out when the query
    and database sets are the same images.

    Attributes:
        distances: Squared Euclidean distances between embeddings, nearest first.
            Shape: (N_query, n).
        indices: Positions in the database set. Shape: (N_query, n).
    """

    distances: np.ndarray
    indices: np.ndarray

    @property
    def depth(self) -> int:
        """n, the neighbours kept per query."""
        return int(self.indices.shape[1])


@dataclass(frozen=True)
class EmbeddingScores:
    """The scores of one representation, with the clustering and the search they came from.

    Attributes:
        scores: Metric name -> value (the names of ``latentsearch.metrics.METRICS``).
        assignments: The KMeans cluster of each labelled cluster-set image, in order.
            Shape: (M,), M = cluster-set images whose label is not -1.
        neighbours: The nearest database images of every query.
    """

    scores: dict[str, float]
    assignments: np.ndarray
    neighbours: Neighbours


def evaluate_embeddings(
    splits: ProtocolSplits,
    cluster_emb: np.ndarray,
    query_emb: np.ndarray,
    database_emb: np.ndarray,
    *,
    seed: int = 0,
    neighbours: int = NEIGHBOURS,
) -> EmbeddingScores:
    """Clustering and retrieval metrics for one representation: KMeans and the search run once.

    Args:
        splits: The protocol's image sets (labels are read from them).
        cluster_emb: Shape: (N_cluster, D).
        query_emb: Shape: (N_query, D).
        database_emb: Shape: (N_database, D).
        seed: KMeans seed.
        neighbours: Nearest database images to keep per query (capped at the database).

    Raises:
        LatentsearchError: The images have no labels.
    """
    if not splits.cluster.has_labels:
        raise LatentsearchError(
            "these images have no labels: clustering and retrieval cannot be scored"
        )
    scores, assignments = kmeans_scores(cluster_emb, splits.cluster.labels, seed=seed)
    retrieval = retrieval_results(
        query_emb,
        splits.query.labels,
        database_emb,
        splits.database.labels,
        same_set=splits.same_set,
        neighbors=neighbours,
    )
    scores.update(retrieval.scores)
    return EmbeddingScores(
        scores=scores,
        assignments=assignments,
        neighbours=Neighbours(distances=retrieval.distances, indices=retrieval.indices),
    )


def score_embeddings(
    splits: ProtocolSplits,
    cluster_emb: np.ndarray,
    query_emb: np.ndarray,
    database_emb: np.ndarray,
    *,
    seed: int = 0,
) -> dict[str, float]:
    """The scores of :func:`evaluate_embeddings` alone (same arguments)."""
    return evaluate_embeddings(
        splits, cluster_emb, query_emb, database_emb, seed=seed, neighbours=0
    ).scores


def query_neighbours(splits: ProtocolSplits, embeddings: SplitEmbeddings, depth: int) -> Neighbours:
    """The nearest database images of every query, found as an evaluation finds them.

    For images without labels (nothing to evaluate) or a deeper search than an evaluation kept.

    Args:
        splits: The protocol's sets (``same_set`` is read).
        embeddings: Their embeddings.
        depth: Neighbours per query, at least 1 (capped at the database).
    """
    depth = min(depth, len(embeddings.database) - int(splits.same_set))
    distances, indices = nearest_neighbors(
        embeddings.query, embeddings.database, depth, exclude_self=splits.same_set
    )
    return Neighbours(distances=distances, indices=indices)


@dataclass
class SplitEmbeddings:
    """A run's embeddings of a protocol's evaluation sets, each distinct set embedded once.

    Attributes:
        cluster: Shape: (N_cluster, D).
        query: Shape: (N_query, D) (the same array as ``cluster`` when the sets coincide).
        database: Shape: (N_database, D).
    """

    cluster: np.ndarray
    query: np.ndarray
    database: np.ndarray


def embed_splits(run: Run, splits: ProtocolSplits, *, progress: bool = False) -> SplitEmbeddings:
    """Embeds the cluster, query and database sets of a protocol with ``run``'s model."""

    def emb(pixels: np.ndarray) -> np.ndarray:
        return embed_images(run.model, pixels, progress=progress)

    cluster = emb(splits.cluster.pixels)
    query = cluster if splits.query is splits.cluster else emb(splits.query.pixels)
    database = cluster if splits.database is splits.cluster else emb(splits.database.pixels)
    return SplitEmbeddings(cluster=cluster, query=query, database=database)


class Evaluation(dict[str, Any]):
    """What :func:`evaluate_run` found: its scores, and what they were computed from.

    The object *is* the dict of scores (metric name -> value, plus ``protocol``, ``data``,
    counts, timings and, when asked for, ``baseline``), JSON-ready as before; the
    intermediate results ride along as attributes (as scipy's ``OptimizeResult`` does), so
    that a report reads them instead of computing them again.

    Attributes:
        embeddings: The run's embeddings of the protocol's sets.
        assignments: The KMeans cluster of each labelled cluster-set image, in order.
            Shape: (M,).
        neighbours: The nearest database images of every query.
    """

    def __init__(
        self,
        scores: dict[str, Any],
        *,
        embeddings: SplitEmbeddings,
        assignments: np.ndarray,
        neighbours: Neighbours,
    ) -> None:
        super().__init__(scores)
        self.embeddings = embeddings
        self.assignments = assignments
        self.neighbours = neighbours


def evaluate_run(
    run: Run,
    *,
    data: DataSplits | None = None,
    baseline: bool = False,
    progress: bool = False,
    embeddings: SplitEmbeddings | None = None,
    neighbours: int = NEIGHBOURS,
) -> Evaluation:
    """Embeds the protocol's evaluation images with ``run`` and scores them.

    Args:
        run: A trained run.
        data: The run's data if already loaded (else loaded from its config, with labels only
            if the run was trained with them).
        baseline: Also score raw pixels on the same images, under ``baseline``.
        progress: Progress bars on a terminal.
        embeddings: ``embed_splits(run, make_splits(data, protocol))`` if already computed.
        neighbours: Nearest database images to keep per query.

    Returns:
        Metric name -> value, plus ``protocol``, ``data``, counts, and timings; the KMeans
        assignments and neighbours it computed are attributes.

    Raises:
        LatentsearchError: The run's images have no labels.
    """
    cfg = run.config
    if data is None:
        # Reloaded, a folder's subfolders give labels again: keep them only if training had.
        data, _ = run.labels_as_trained(
            load_data(
                cfg.data, image_size=run.model.image_size, data_dir=cfg.data_dir, progress=progress
            )
        )
    splits = make_splits(data, cfg.protocol)
    t0 = time.perf_counter()
    emb = embeddings or embed_splits(run, splits, progress=progress)
    embed_seconds = time.perf_counter() - t0
    result: dict[str, Any] = {
        "protocol": cfg.protocol,
        "data": data.name,
        "model": cfg.model,
        "label_fraction": cfg.label_fraction,
        "epochs": run.epoch,
        "n_cluster": len(splits.cluster),
        "n_query": len(splits.query),
        "n_database": len(splits.database),
        "embed_seconds": embed_seconds,
    }
    scored = evaluate_embeddings(
        splits, emb.cluster, emb.query, emb.database, neighbours=neighbours
    )
    result.update(scored.scores)
    result.update(score_cluster_head(run, splits, emb.cluster))
    if baseline:
        result["baseline"] = score_pixels(splits)
    return Evaluation(
        result, embeddings=emb, assignments=scored.assignments, neighbours=scored.neighbours
    )


HEAD_PREFIX = "head_"  # metrics of the clusters a run's SCAN head assigns


def score_cluster_head(
    run: Run, splits: ProtocolSplits, cluster_emb: np.ndarray
) -> dict[str, float]:
    """Clustering metrics of the run's cluster head, if it has one (``head_nmi``, ...).

    Args:
        run: The run; its folder may hold a head from ``latentsearch cluster``.
        splits: The protocol's sets (the cluster set's labels are read).
        cluster_emb: The run's embeddings of the cluster set. Shape: (N_cluster, D).

    Raises:
        ClusterHeadError: The head belongs to other encoder weights.
    """
    from latentsearch.clusters import head_path, load_cluster_head

    path = head_path(run.path)
    if not path.exists():
        return {}
    head = load_cluster_head(
        path, encoder_sha256=run.fingerprint["weights_sha256"], run_model=run.model
    )
    labels = splits.cluster.labels
    known = labels >= 0
    if head.encoder is None:
        assigned = head.assign(cluster_emb[known])
    else:  # a fine-tuned head reads its own copy of the encoder
        assigned = head.assign_images(np.asarray(splits.cluster.pixels)[known], run.model)
    scores = clustering_scores(labels[known], assigned)
    return {HEAD_PREFIX + k: v for k, v in scores.items()}


def score_pixels(splits: ProtocolSplits) -> dict[str, float]:
    """The raw-pixel reference: ``score_embeddings`` with pixels scaled to [0, 1] as vectors."""
    return score_embeddings(
        splits,
        pixel_baseline(np.asarray(splits.cluster.pixels)),
        pixel_baseline(np.asarray(splits.query.pixels)),
        pixel_baseline(np.asarray(splits.database.pixels)),
    )
