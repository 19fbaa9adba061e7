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
"""

from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from latentsearch.augment import AugmentConfig, augment
from latentsearch.embedding import embed_images, to_tensor
from latentsearch.errors import ConfigError, LatentsearchError
from latentsearch.models.base import EmbeddingModel
from latentsearch.precision import autocast
from latentsearch.runs import TrainConfig, atomic_torch_save, load_versioned

HEAD_FILE = "cluster_head.pt"
HEAD_FORMAT = "latentsearch-cluster-head/1"


class ClusterHeadError(LatentsearchError):
    """A cluster head file is missing, unreadable or belongs to another encoder."""


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
        self.heads = nn.ModuleList(_mlp(dim, n_clusters, hidden) for _ in range(heads))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Shape: (B, D) -> (H, B, K) logits."""
        return torch.stack([h(x) for h in self.heads])


def scan_loss(
    anchor_logits: torch.Tensor, neighbour_logits: torch.Tensor, entropy_weight: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """SCAN's loss for each head: neighbours agree, and every cluster stays in use.

    ``-mean log <p(anchor), p(neighbour)> - entropy_weight * H(mean p(anchor))``.

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


def mine_neighbours(embeddings: np.ndarray, k: int, block: int = 1024) -> np.ndarray:
    """The ``k`` nearest other rows of each row by cosine similarity.

    Args:
        embeddings: Shape: (N, D).
        k: Neighbours per row (at most N - 1).

    Returns:
        Indices. Shape: (N, k).
    """
    x = torch.from_numpy(np.ascontiguousarray(embeddings, dtype=np.float32))
    x = F.normalize(x, dim=1)
    k = min(k, len(x) - 1)
    out = np.empty((len(x), k), dtype=np.int64)
    for start in range(0, len(x), block):
        sim = x[start : start + block] @ x.T
        rows = torch.arange(start, start + len(sim))
        sim[torch.arange(len(sim)), rows] = -float("inf")  # not its own neighbour
        out[start : start + len(sim)] = sim.topk(k, dim=1).indices.numpy()
    return out


@torch.no_grad()
def embed_views(
    model: EmbeddingModel,
    pixels: np.ndarray,
    views: int,
    augment_config: AugmentConfig,
    *,
    batch_size: int = 512,
) -> np.ndarray:
    """Embeddings of ``views`` random augmentations of every image (frozen model, eval mode).

    Args:
        pixels: Shape: (N, H, W, C), uint8.

    Returns:
        Shape: (views, N, D), float32.
    """
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out = np.empty((views, len(pixels), model.embedding_dim), dtype=np.float32)
    try:
        for v in range(views):
            for start in range(0, len(pixels), batch_size):
                x = to_tensor(pixels[start : start + batch_size], device)
                out[v, start : start + len(x)] = model.embed(augment(x, augment_config)).float()
    finally:
        model.train(was_training)
    return out


def view_augmentations(config: TrainConfig) -> AugmentConfig:
    """The augmentations of the views a head learns from, for a run trained with ``config``.

    A contrastive run's own augmentations (its embedding is invariant to them); any other
    encoder was not trained for invariance, so it gets only mild crops.
    """
    if config.objective == "contrastive":
        from latentsearch.objectives import ContrastiveObjective

        return ContrastiveObjective(**config.objective_kwargs).augment
    return AugmentConfig(crop_scale=(0.6, 1.0), jitter_p=0.0, grayscale_p=0.0)


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
        return _head_probabilities(self.net, embeddings).numpy()

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
        net = _mlp(int(state["dim"]), config.n_clusters, config.hidden)
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


def _mlp(dim: int, n_clusters: int, hidden: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(dim, hidden),
        nn.BatchNorm1d(hidden),
        nn.ReLU(inplace=True),
        nn.Linear(hidden, n_clusters),
    )


def fit_cluster_head(
    model: EmbeddingModel,
    pixels: np.ndarray,
    *,
    config: ClusterConfig | None = None,
    augment_config: AugmentConfig | None = None,
    encoder_sha256: str = "",
    precision: str = "fp32",
    log: Callable[[str], None] | None = None,
) -> ClusterHead:
    """Trains a SCAN head on the embeddings of ``pixels`` (and the encoder, if asked).

    Args:
        model: The trained encoder (not modified; fine-tuning trains a copy).
        pixels: The images to learn clusters from, e.g. the training images.
            Shape: (N, H, W, C), uint8.
        config: Head settings (default ``ClusterConfig()``).
        augment_config: The views' augmentations (default: the run's contrastive ones).
        encoder_sha256: Recorded so that a head is never used with other weights.
        precision: Autocast precision of the fine-tuning passes ("fp32", "bf16", "fp16").
        log: Receives one line per stage.

    Returns:
        The head with the lowest SCAN loss, after self-labelling.

    Raises:
        LatentsearchError: Fewer images than ``2 * n_clusters``.
    """
    cfg = config or ClusterConfig()
    _check_enough_images(len(pixels), cfg)
    say = log or (lambda line: None)
    t0 = time.perf_counter()
    aug = augment_config or AugmentConfig()
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    plain = embed_images(model, pixels)
    neighbours = mine_neighbours(plain, cfg.n_neighbours)
    say(f"cluster head: mined {neighbours.shape[1]} neighbours of {len(plain):,} images")
    views = torch.from_numpy(embed_views(model, pixels, cfg.views, aug))
    say(f"cluster head: embedded {cfg.views} augmented views per image")
    history: list[dict[str, float]] = []
    heads, per_head = _train_heads(views, neighbours, cfg, rng, history)
    encoder: EmbeddingModel | None = None
    if cfg.finetune_epochs > 0 or cfg.finetune_self_label_epochs > 0:
        encoder = copy.deepcopy(model)
    if encoder is not None and cfg.finetune_epochs > 0:
        per_head = _finetune(
            encoder, heads, pixels, neighbours, cfg, aug, rng, precision, history, say
        )
        say(f"cluster head: fine-tuned the encoder with the heads for {cfg.finetune_epochs} epochs")
    net = _best_head(heads, per_head, say)
    if encoder is not None:
        _self_label_encoder(encoder, net, pixels, cfg, aug, rng, precision, history, say)
        encoder.eval()
        plain = embed_images(encoder, pixels)
        views = torch.from_numpy(embed_views(encoder, pixels, cfg.views, aug))
    _self_label(net, plain, views, cfg, rng, history, say)
    return _finished(net, cfg, encoder_sha256, history, t0, encoder)


def fit_head_on_embeddings(
    plain: np.ndarray,
    views: np.ndarray,
    *,
    config: ClusterConfig | None = None,
    encoder_sha256: str = "",
    log: Callable[[str], None] | None = None,
) -> ClusterHead:
    """The frozen-encoder SCAN head from embeddings computed beforehand.

    :func:`fit_cluster_head` without fine-tuning is this after embedding the images; given
    the embeddings, several head settings can be compared without embedding again.

    Args:
        plain: Unaugmented embeddings, where neighbours and self-labels come from.
            Shape: (N, D).
        views: Embeddings of augmented copies, what the head learns from. Shape: (V, N, D).
        config: Head settings; ``views`` must be at least ``config.views``, and fine-tuning
            is refused (it needs the images).
        encoder_sha256: Recorded so that a head is never used with other weights.
        log: Receives one line per stage.

    Returns:
        The head with the lowest SCAN loss, after self-labelling.

    Raises:
        LatentsearchError: Mismatched shapes, too few views or images, or fine-tuning asked for.
    """
    cfg = config or ClusterConfig()
    if cfg.finetune_epochs > 0 or cfg.finetune_self_label_epochs > 0:
        raise LatentsearchError("fine-tuning needs the images: use fit_cluster_head")
    if views.ndim != 3 or views.shape[1:] != plain.shape or len(views) < cfg.views:
        raise LatentsearchError(
            f"views of shape {views.shape} do not match {cfg.views} views of embeddings of "
            f"shape {plain.shape}"
        )
    _check_enough_images(len(plain), cfg)
    say = log or (lambda line: None)
    t0 = time.perf_counter()
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    neighbours = mine_neighbours(plain, cfg.n_neighbours)
    view_tensor = torch.from_numpy(np.ascontiguousarray(views[: cfg.views], dtype=np.float32))
    history: list[dict[str, float]] = []
    heads, per_head = _train_heads(view_tensor, neighbours, cfg, rng, history)
    net = _best_head(heads, per_head, say)
    _self_label(net, plain, view_tensor, cfg, rng, history, say)
    return _finished(net, cfg, encoder_sha256, history, t0)


def _finished(
    net: nn.Sequential,
    cfg: ClusterConfig,
    encoder_sha256: str,
    history: list[dict[str, float]],
    started: float,
    encoder: EmbeddingModel | None = None,
) -> ClusterHead:
    """The trained head, in eval mode, timed from ``started`` (a ``perf_counter`` value)."""
    return ClusterHead(
        net=net.eval(),
        config=cfg,
        encoder_sha256=encoder_sha256,
        history=history,
        seconds=time.perf_counter() - started,
        encoder=encoder,
    )


def _check_enough_images(n: int, cfg: ClusterConfig) -> None:
    if n < 2 * cfg.n_clusters:
        raise LatentsearchError(
            f"{n} images are too few for {cfg.n_clusters} clusters (need at least "
            f"{2 * cfg.n_clusters})"
        )


def _train_heads(
    views: torch.Tensor,
    neighbours: np.ndarray,
    cfg: ClusterConfig,
    rng: np.random.Generator,
    history: list[dict[str, float]],
) -> tuple[ClusterHeads, torch.Tensor]:
    """SCAN's step on frozen embeddings: ``cfg.heads`` heads, each anchor with a neighbour.

    Args:
        views: Augmented embeddings. Shape: (V, N, D).
        neighbours: Mined neighbour indices. Shape: (N, k).

    Returns:
        The heads and each one's mean SCAN loss over the last epoch. Shape of the loss: (H,).
    """
    _, n, dim = views.shape
    heads = ClusterHeads(dim, cfg.n_clusters, cfg.heads, cfg.hidden)
    opt = torch.optim.Adam(heads.parameters(), lr=cfg.lr, weight_decay=1e-4)

    def view_batch(index: np.ndarray) -> torch.Tensor:
        which = torch.from_numpy(rng.integers(0, cfg.views, len(index)))
        return views[which, torch.from_numpy(index)]

    heads.train()
    per_head = torch.zeros(cfg.heads)
    for epoch in range(cfg.epochs):
        per_head.zero_()
        steps = 0
        order = rng.permutation(n)
        for start in range(0, n, cfg.batch_size):
            anchors = order[start : start + cfg.batch_size]
            if len(anchors) < 2:  # BatchNorm cannot train on one item
                continue
            picked = neighbours[anchors, rng.integers(0, neighbours.shape[1], len(anchors))]
            total, _ = scan_loss(
                heads(view_batch(anchors)), heads(view_batch(picked)), cfg.entropy_weight
            )
            opt.zero_grad(set_to_none=True)
            total.sum().backward()
            opt.step()
            per_head += total.detach()
            steps += 1
        per_head /= max(steps, 1)
        history.append({"epoch": epoch + 1, "scan_loss": float(per_head.min())})
    return heads, per_head


def _best_head(
    heads: ClusterHeads, per_head: torch.Tensor, say: Callable[[str], None]
) -> nn.Sequential:
    """The head with the lowest SCAN loss."""
    best = int(per_head.argmin())
    say(f"cluster head: SCAN loss {float(per_head[best]):.4f} (best of {len(per_head)} heads)")
    net = heads.heads[best]
    if not isinstance(net, nn.Sequential):  # ModuleList indexing loses the element type
        raise TypeError("cluster heads must be nn.Sequential")
    return net


def _finetune(
    encoder: EmbeddingModel,
    heads: ClusterHeads,
    pixels: np.ndarray,
    neighbours: np.ndarray,
    cfg: ClusterConfig,
    aug: AugmentConfig,
    rng: np.random.Generator,
    precision: str,
    history: list[dict[str, float]],
    say: Callable[[str], None],
) -> torch.Tensor:
    """SCAN with the encoder trained: anchors and a mined neighbour each, freshly augmented.

    Anchors and neighbours go through the encoder as one batch (one BatchNorm batch), the
    heads score each pair with :func:`scan_loss`, and both encoder and heads step with Adam.

    Args:
        encoder: Trained in place.
        heads: Trained in place.
        pixels: Shape: (N, H, W, C), uint8.
        neighbours: Mined neighbour indices. Shape: (N, k).
        say: Receives one line per epoch.

    Returns:
        Each head's mean SCAN loss over the last epoch. Shape: (H,).
    """
    device = next(encoder.parameters()).device
    heads.to(device)
    params = [*encoder.parameters(), *heads.parameters()]
    opt = torch.optim.Adam(params, lr=cfg.finetune_lr, weight_decay=1e-4)
    encoder.train()
    heads.train()
    per_head = torch.zeros(cfg.heads)
    for epoch in range(cfg.finetune_epochs):
        t0 = time.perf_counter()
        per_head.zero_()
        steps = 0
        order = rng.permutation(len(pixels))
        for start in range(0, len(order), cfg.finetune_batch_size):
            anchors = order[start : start + cfg.finetune_batch_size]
            if len(anchors) < 2:  # BatchNorm cannot train on one item
                continue
            picked = neighbours[anchors, rng.integers(0, neighbours.shape[1], len(anchors))]
            x = augment(to_tensor(pixels[np.concatenate([anchors, picked])], device), aug)
            with autocast(precision, device):
                z = encoder.embed(x)
            logits = heads(z.float())
            total, _ = scan_loss(
                logits[:, : len(anchors)], logits[:, len(anchors) :], cfg.entropy_weight
            )
            opt.zero_grad(set_to_none=True)
            total.sum().backward()
            opt.step()
            per_head += total.detach().cpu()
            steps += 1
        per_head /= max(steps, 1)
        history.append(
            {"epoch": cfg.epochs + epoch + 1, "finetune_scan_loss": float(per_head.min())}
        )
        say(
            f"cluster head: fine-tuning epoch {epoch + 1}/{cfg.finetune_epochs}: SCAN loss "
            f"{float(per_head.min()):.4f}, {time.perf_counter() - t0:.0f}s"
        )
    heads.cpu()
    return per_head


def _confident_targets(
    prob: torch.Tensor, cfg: ClusterConfig
) -> tuple[torch.Tensor, np.ndarray, torch.Tensor] | None:
    """Self-labelling's targets: the confident predictions and their clusters' loss weights.

    Each cluster's weight is the inverse of its share of the confident images, so that large
    clusters do not swallow small ones.

    Args:
        prob: Cluster probabilities. Shape: (N, K).

    Returns:
        Every image's predicted cluster (N,), the indices of the confident ones (M,) and one
        weight per cluster (K,); None when fewer than two images are confident.
    """
    conf, target = prob.max(dim=1)
    keep = torch.nonzero(conf >= cfg.confidence).squeeze(1).numpy()
    if len(keep) < 2:
        return None
    counts = torch.bincount(target[keep], minlength=cfg.n_clusters).float()
    weight = torch.where(counts > 0, counts.sum() / (counts * cfg.n_clusters), 0.0)
    return target, keep, weight


@torch.no_grad()
def _head_probabilities(net: nn.Module, embeddings: np.ndarray) -> torch.Tensor:
    """Shape: (N, D) -> (N, K) on the CPU, with the head in eval mode (on any device)."""
    net.eval()
    device = next(net.parameters()).device
    # A copy per block: the rows may be read-only (an index's vectors), which torch refuses.
    blocks = (
        torch.from_numpy(np.array(embeddings[i : i + 4096], dtype=np.float32))
        for i in range(0, max(len(embeddings), 1), 4096)  # one (empty) block for no rows
    )
    return torch.cat([net(b.to(device)).softmax(-1).cpu() for b in blocks])


def _self_label(
    net: nn.Module,
    plain: np.ndarray,
    views: torch.Tensor,
    cfg: ClusterConfig,
    rng: np.random.Generator,
    history: list[dict[str, float]],
    say: Callable[[str], None],
) -> None:
    """SCAN's self-labelling of the head alone: augmented views against confident predictions.

    Args:
        plain: Unaugmented embeddings, where the targets come from. Shape: (N, D).
        views: Augmented embeddings, what the head learns from. Shape: (V, N, D).
    """
    if cfg.self_label_epochs <= 0:
        return
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr * 0.1, weight_decay=1e-4)
    first = cfg.epochs + cfg.finetune_epochs + cfg.finetune_self_label_epochs
    for epoch in range(cfg.self_label_epochs):
        targets = _confident_targets(_head_probabilities(net, plain), cfg)
        if targets is None:
            say("cluster head: no confident predictions to self-label; skipped")
            return
        target, keep, weight = targets
        net.train()
        total = 0.0
        order = rng.permutation(keep)
        steps = 0
        for start in range(0, len(order), cfg.batch_size):
            idx = order[start : start + cfg.batch_size]
            if len(idx) < 2:
                continue
            which = torch.from_numpy(rng.integers(0, cfg.views, len(idx)))
            logits = net(views[which, torch.from_numpy(idx)])
            loss = F.cross_entropy(logits, target[idx], weight=weight)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach())
            steps += 1
        history.append(
            {
                "epoch": first + epoch + 1,
                "self_label_loss": total / max(steps, 1),
                "confident": float(len(keep)) / len(plain),
            }
        )
    say(f"cluster head: self-labelled on {history[-1]['confident']:.0%} confident images")


def _self_label_encoder(
    encoder: EmbeddingModel,
    net: nn.Module,
    pixels: np.ndarray,
    cfg: ClusterConfig,
    aug: AugmentConfig,
    rng: np.random.Generator,
    precision: str,
    history: list[dict[str, float]],
    say: Callable[[str], None],
) -> None:
    """SCAN's self-labelling with the encoder trained too (its last step).

    Each epoch, the unaugmented images' confident predictions become targets, and encoder and
    head learn them by weighted cross-entropy from freshly augmented copies of those images.

    Args:
        encoder: Trained in place.
        net: The kept head; trained in place.
        pixels: Shape: (N, H, W, C), uint8.
        say: Receives one line per epoch.
    """
    if cfg.finetune_self_label_epochs <= 0:
        return
    device = next(encoder.parameters()).device
    net.to(device)
    params = [*encoder.parameters(), *net.parameters()]
    opt = torch.optim.Adam(params, lr=cfg.finetune_lr, weight_decay=1e-4)
    first = cfg.epochs + cfg.finetune_epochs
    try:
        for epoch in range(cfg.finetune_self_label_epochs):
            t0 = time.perf_counter()
            encoder.eval()
            prob = _head_probabilities(net, embed_images(encoder, pixels))
            targets = _confident_targets(prob, cfg)
            if targets is None:
                say("cluster head: no confident predictions to self-label the encoder; skipped")
                return
            target, keep, weight = targets
            target, weight = target.to(device), weight.to(device)
            encoder.train()
            net.train()
            total, steps = 0.0, 0
            order = rng.permutation(keep)
            for start in range(0, len(order), cfg.finetune_batch_size):
                idx = order[start : start + cfg.finetune_batch_size]
                if len(idx) < 2:  # BatchNorm cannot train on one item
                    continue
                x = augment(to_tensor(pixels[idx], device), aug)
                with autocast(precision, device):
                    z = encoder.embed(x)
                loss = F.cross_entropy(net(z.float()), target[torch.from_numpy(idx)], weight=weight)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += float(loss.detach())
                steps += 1
            confident = float(len(keep)) / len(pixels)
            used = int((weight > 0).sum())
            history.append(
                {
                    "epoch": first + epoch + 1,
                    "finetune_self_label_loss": total / max(steps, 1),
                    "confident": confident,
                    "confident_clusters": float(used),
                }
            )
            # A cluster with no confident image gets no target and can empty: say so.
            say(
                f"cluster head: self-labelling the encoder, epoch {epoch + 1}/"
                f"{cfg.finetune_self_label_epochs}: loss {total / max(steps, 1):.4f} on "
                f"{confident:.0%} confident images in {used} of {cfg.n_clusters} clusters, "
                f"{time.perf_counter() - t0:.0f}s"
            )
    finally:
        net.cpu()


def head_path(run_dir: str | Path) -> Path:
    """Where a run folder keeps its cluster head."""
    return Path(run_dir) / HEAD_FILE
