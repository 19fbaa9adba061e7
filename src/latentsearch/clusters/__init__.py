"""A clustering head on a trained encoder: SCAN (Van Gansbeke et al., 2020).

KMeans on a contrastive embedding splits it by whatever dominates Euclidean distance; SCAN
instead trains a small head to give an image and its nearest neighbours the same cluster,
with an entropy term that keeps every cluster in use, then sharpens the head on its own
confident predictions (self-labelling).

By default the encoder stays frozen: every training image is embedded once unaugmented (to
mine neighbours) and a few times augmented (the views the head learns from), so the head
trains in seconds to minutes on a CPU. With ``finetune_epochs`` the heads, once trained on the
frozen views, go on training jointly with a copy of the encoder on freshly augmented anchors
and neighbours, as in SCAN's own recipe; the run's encoder (and so its search) is untouched,
and the fine-tuned copy is saved with the head, which then assigns clusters from images.
``finetune_self_label_epochs`` goes on to SCAN's last step with that copy: the confident
clusters of the unaugmented images become cross-entropy targets for augmented copies of them.

The head is saved in the run folder as ``cluster_head.pt`` beside the checkpoints, tied to the
run's encoder weights by their SHA-256, and ``evaluate`` reports its clusters beside KMeans's.

The package, by concern:

- :mod:`~latentsearch.clusters.config`: the head's settings.
- :mod:`~latentsearch.clusters.head`: the trained head, what it assigns, and its file.
- :mod:`~latentsearch.clusters.views`: what a head learns from (neighbours, augmented views).
- :mod:`~latentsearch.clusters.scan`: SCAN's steps (heads, fine-tuning, self-labelling).
- :mod:`~latentsearch.clusters.training`: the two ways to train a head, over those steps.
"""

from latentsearch.clusters.config import ClusterConfig
from latentsearch.clusters.head import (
    HEAD_FILE,
    HEAD_FORMAT,
    ClusterHead,
    ClusterHeadError,
    ClusterHeads,
    head_path,
    load_cluster_head,
)
from latentsearch.clusters.training import fit_cluster_head, fit_head_on_embeddings
from latentsearch.clusters.views import embed_views, mine_neighbours, view_augmentations
from latentsearch.objectives import scan_loss  # lives with the other losses; kept importable

__all__ = [
    "HEAD_FILE",
    "HEAD_FORMAT",
    "ClusterConfig",
    "ClusterHead",
    "ClusterHeadError",
    "ClusterHeads",
    "embed_views",
    "fit_cluster_head",
    "fit_head_on_embeddings",
    "head_path",
    "load_cluster_head",
    "mine_neighbours",
    "scan_loss",
    "view_augmentations",
]
