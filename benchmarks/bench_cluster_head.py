"""Compares SCAN head settings on trained runs, choosing on validation images, not the test.

For each ``--run`` the run's training images are embedded once (plain and ``--views``
augmented copies, with the run's own contrastive augmentations, as ``latentsearch cluster``
does), then one head per setting is trained on those embeddings and scored on the run's
validation images (a stratified slice of the training split, never trained on) and on the
held-out test images. KMeans on the same embeddings is scored beside them. A setting should be
chosen by its validation NMI; the test columns are reported, not selected on.

    python benchmarks/bench_cluster_head.py --run runs/beyond/auto-deep-s0 \\
        --setting default --setting k=5 --setting k=5,epochs=120

A setting is ``name`` or ``field=value,...`` over :class:`ClusterConfig` fields
(``k`` is short for ``n_neighbours``, ``ew`` for ``entropy_weight``). Writes
benchmarks/results/cluster_head.json by default, merging rows by (run, setting, head seed).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from latentsearch.clusters import (
    ClusterConfig,
    embed_views,
    fit_head_on_embeddings,
    view_augmentations,
)
from latentsearch.data import load_data
from latentsearch.embedding import embed_images
from latentsearch.metrics import clustering_scores, kmeans_scores
from latentsearch.protocols import make_splits
from latentsearch.runs import load_run, machine_description

ALIASES = {"k": "n_neighbours", "ew": "entropy_weight"}


def parse_setting(text: str, n_clusters: int, seed: int) -> ClusterConfig:
    """``default`` or ``field=value,...`` -> a ClusterConfig (values typed as the defaults)."""
    kwargs: dict[str, Any] = {"n_clusters": n_clusters, "seed": seed}
    if text != "default":
        fields = {f.name for f in dataclasses.fields(ClusterConfig)}
        for part in text.split(","):
            key, _, value = part.partition("=")
            name = ALIASES.get(key.strip(), key.strip())
            if name not in fields or not value:
                raise SystemExit(f"unknown setting {part!r}: use field=value over {sorted(fields)}")
            kwargs[name] = type(getattr(ClusterConfig(), name))(value)
    return ClusterConfig(**kwargs)


def _embeddings(run_dir: Path, views: int) -> tuple[dict[str, np.ndarray], int]:
    """The run's fit (plain and augmented), validation and test embeddings with labels, and
    its number of classes."""
    run = load_run(run_dir)
    cfg = run.config
    data = load_data(cfg.data, image_size=run.model.image_size, data_dir=cfg.data_dir)
    splits = make_splits(data, cfg.protocol)
    if splits.val is None or not splits.val.has_labels or not splits.cluster.has_labels:
        raise SystemExit(f"{run_dir}: needs labelled validation and test images")
    torch.manual_seed(0)
    emb = {
        "plain": embed_images(run.model, splits.fit.pixels),
        "views": embed_views(run.model, splits.fit.pixels, views, view_augmentations(cfg)),
        "val": embed_images(run.model, splits.val.pixels),
        "val_labels": splits.val.labels,
        "test": embed_images(run.model, splits.cluster.pixels),
        "test_labels": splits.cluster.labels,
    }
    return emb, len(data.train.class_names)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", action="append", required=True, help="run folder (repeatable)")
    parser.add_argument("--setting", action="append", default=None, help="head setting")
    parser.add_argument("--views", type=int, default=4, help="augmented views embedded")
    parser.add_argument(
        "--seed", type=int, action="append", default=None, help="head seed (repeatable; default 0)"
    )
    parser.add_argument("--out", default="benchmarks/results/cluster_head.json")
    args = parser.parse_args()
    settings = args.setting or ["default"]
    seeds = args.seed or [0]
    out = Path(args.out)
    rows: list[dict[str, Any]] = json.loads(out.read_text())["rows"] if out.exists() else []
    for run_dir in map(Path, args.run):
        t0 = time.perf_counter()
        emb, k = _embeddings(run_dir, args.views)
        embed_s = time.perf_counter() - t0
        km_val, _ = kmeans_scores(emb["val"], emb["val_labels"], seed=0)
        km_test, _ = kmeans_scores(emb["test"], emb["test_labels"], seed=0)
        print(
            f"{run_dir}: embedded in {embed_s:.0f}s; KMeans NMI val {km_val['nmi']:.3f}, "
            f"test {km_test['nmi']:.3f}",
            flush=True,
        )
        for text, seed in ((t, s) for t in settings for s in seeds):
            cfg = parse_setting(text, k, seed)
            t1 = time.perf_counter()
            head = fit_head_on_embeddings(emb["plain"], emb["views"], config=cfg)
            head_s = time.perf_counter() - t1
            val = clustering_scores(emb["val_labels"], head.assign(emb["val"]))
            test = clustering_scores(emb["test_labels"], head.assign(emb["test"]))
            confident = [h["confident"] for h in head.history if "confident" in h]
            row = {
                "run": str(run_dir),
                "setting": text,
                "head_seed": seed,
                "config": dataclasses.asdict(cfg),
                "val_nmi": val["nmi"],
                "val_acc": val["acc"],
                "test_nmi": test["nmi"],
                "test_ari": test["ari"],
                "test_acc": test["acc"],
                "kmeans_val_nmi": km_val["nmi"],
                "kmeans_test_nmi": km_test["nmi"],
                "self_label_confident": confident[-1] if confident else None,
                "head_seconds": round(head_s, 1),
                "embed_seconds": round(embed_s, 1),
                "threads": torch.get_num_threads(),
                "load_average": round(os.getloadavg()[0], 2),
                "machine": machine_description(),
                "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            }
            print(
                f"  {text:<20} seed {seed}  val NMI {val['nmi']:.3f}  test NMI {test['nmi']:.3f}  "
                f"acc {test['acc']:.3f}  {head_s:.0f}s",
                flush=True,
            )
            key = (row["run"], text, seed)
            rows = [r for r in rows if (r["run"], r["setting"], r.get("head_seed", 0)) != key]
            rows.append(row)
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps({"rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
