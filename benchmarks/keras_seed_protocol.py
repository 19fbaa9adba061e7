"""The study's own Keras model, end to end under the seed protocol, scored as latentsearch scores.

Separates what the data copy costs from what the PyTorch port costs (issue 37, item 5): the
Keras model of ``keras_seed_ae.py`` (the study's architecture, hint head included) trains on
exactly the images ``latentsearch train --protocol seed`` trains on, and its embeddings of the
cluster set are scored with latentsearch's own KMeans and metrics.

Three sub-commands, two interpreters (TensorFlow lives in its own virtual environment, which
has no latentsearch):

1. ``export`` (latentsearch's venv) loads the image folder as ``latentsearch train/reproduce``
   do (``load_data`` then ``make_splits(data, "seed")``) and writes the protocol's sets to one
   ``.npz``: fit, val and query pixels (uint8, NHWC) and labels. The cluster set (and the
   retrieval database) of the seed protocol is fit followed by val; ``export`` checks that
   and stores the cluster ids instead of a second copy of the pixels.
2. ``train`` (TensorFlow's venv; imports only numpy and tensorflow) trains ``build_model()``
   as the study did: Keras defaults (glorot-uniform kernels, zero biases, BatchNorm momentum
   0.99 / epsilon 1e-3), Adam(1e-3) with Keras' epsilon 1e-7, batch 32, shuffled each epoch,
   MSE on the reconstruction + categorical cross-entropy on the hint head, equal weights,
   validation on the val arrays (the study's ``validation_split=0.2``: the last 20%,
   unshuffled), inputs scaled to [0, 1], ``tf.keras.utils.set_random_seed(seed)``. It then
   embeds the cluster and query sets: the ``retrieval`` conv output (before its BatchNorm and
   ReLU), global-average-pooled to 128-d, in inference mode. Writes ``embeddings.npy``
   (cluster set, float32 N×128), ``query_embeddings.npy`` and ``history.json``.
3. ``score`` (latentsearch's venv) scores each run with ``evaluation.score_embeddings``, the
   function ``latentsearch evaluate`` uses (KMeans: ``metrics.kmeans_scores`` with its
   defaults, k = number of classes, ``random_state=0``, ``n_init=10``, raw float32
   embeddings; retrieval: query = the 5% held out, database = the cluster set), and writes
   per-seed scores, mean ± sd, the port's rows from ``results/seed_reproduction.json`` and
   the published figures to one JSON file.

The full run (about 50 minutes per seed on 2 cores)::

    /work/main/.venv/bin/python benchmarks/keras_seed_protocol.py export \\
        --data /tmp/data/cifar10-jpeg --out /tmp/keras-seed/arrays.npz
    /tmp/tfvenv/bin/python benchmarks/keras_seed_protocol.py train \\
        --arrays /tmp/keras-seed/arrays.npz --seed 0 --epochs 10 --threads 2 \\
        --out /tmp/keras-seed/seed0
    /tmp/tfvenv/bin/python benchmarks/keras_seed_protocol.py train \\
        --arrays /tmp/keras-seed/arrays.npz --seed 1 --epochs 10 --threads 2 \\
        --out /tmp/keras-seed/seed1
    /work/main/.venv/bin/python benchmarks/keras_seed_protocol.py score \\
        --arrays /tmp/keras-seed/arrays.npz \\
        --runs /tmp/keras-seed/seed0 /tmp/keras-seed/seed1 \\
        --out benchmarks/results/keras_seed_protocol.json

A smoke test: ``export --limit 300`` (the first 300 images of fit, val and query), then
``train --epochs 1`` and ``score`` as above.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

BENCHMARKS = Path(__file__).resolve().parent
PORT_RESULTS = BENCHMARKS / "results" / "seed_reproduction.json"
EMBEDDINGS = "embeddings.npy"
QUERY_EMBEDDINGS = "query_embeddings.npy"
HISTORY = "history.json"
SCORED = ("nmi", "ri", "ari", "ami", "acc", "precision_at_1", "precision_at_10", "map_at_r")


def _load_averages() -> list[float] | None:
    return [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None


# --------------------------------------------------------------------------- export


def _study_order(splits: Any, data: Any) -> Any:
    """The seed splits with the 57,000 "train" images in the order the study had them.

    ``stratified_split`` returns *sorted* indices, so the port's fit / val cut (the last 20%)
    follows the folder's order (class by class, the train folder before the test folder).
    The study took scikit-learn's ``train_test_split`` output as it comes, shuffled, so its
    last 20% is a random stratum. Same images in every set; only fit / val and order differ.
    """
    from sklearn.model_selection import train_test_split

    from latentsearch.data import ImageData
    from latentsearch.protocols import (
        SEED_TEST_FRACTION,
        SEED_VALIDATION_SPLIT,
        SPLIT_SEED,
        ProtocolSplits,
    )

    everything = ImageData.concatenate([data.train, data.test]) if data.test else data.train
    train_idx, _ = train_test_split(
        np.arange(len(everything)),
        test_size=SEED_TEST_FRACTION,
        random_state=SPLIT_SEED,
        stratify=everything.labels,
    )
    train = everything.subset(train_idx)
    if sorted(train.ids) != sorted(splits.cluster.ids):
        raise SystemExit("the study's order does not hold the port's cluster images; update export")
    n_fit = int(len(train) * (1 - SEED_VALIDATION_SPLIT))
    return ProtocolSplits(
        fit=train.subset(np.arange(n_fit)),
        val=train.subset(np.arange(n_fit, len(train))),
        cluster=train,
        query=splits.query,
        database=train,
    )


def export(data: str, out: Path, limit: int | None, split_order: str = "port") -> None:
    """Writes the seed protocol's fit, val and query sets of ``data`` to ``out`` (.npz)."""
    from latentsearch.data import load_data
    from latentsearch.protocols import make_splits

    t0 = time.perf_counter()
    # As `latentsearch train/reproduce --data FOLDER` load it: seed-ae keeps the source's size
    # (image_size None: image folders decode at 32).
    loaded = load_data(data, progress=True)
    splits = make_splits(loaded, "seed")
    if split_order == "study":
        splits = _study_order(splits, loaded)
    assert splits.val is not None
    cluster_ids = list(splits.cluster.ids)
    if cluster_ids != list(splits.fit.ids) + list(splits.val.ids):
        raise SystemExit("the seed protocol's cluster set is no longer fit + val; update export")
    if splits.database is not splits.cluster or splits.same_set:
        raise SystemExit("the seed protocol's database is no longer the cluster set; update export")
    n = limit if limit is not None else None
    fit, val, query = splits.fit, splits.val, splits.query
    arrays: dict[str, Any] = {}
    for name, part in (("fit", fit), ("val", val), ("query", query)):
        arrays[f"{name}_pixels"] = np.ascontiguousarray(part.pixels[:n])
        arrays[f"{name}_labels"] = np.asarray(part.labels[:n], dtype=np.int64)
        arrays[f"{name}_ids"] = np.asarray(part.ids[:n], dtype=str)
    arrays["class_names"] = np.asarray(fit.class_names, dtype=str)
    arrays["source"] = np.asarray(fit.source or data, dtype=str)
    arrays["split_order"] = np.asarray(split_order, dtype=str)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(out, **arrays)
    print(
        json.dumps(
            {
                "out": str(out),
                "fit": len(arrays["fit_labels"]),
                "val": len(arrays["val_labels"]),
                "query": len(arrays["query_labels"]),
                "cluster": "fit + val",
                "limit": limit,
                "split_order": split_order,
                "full_fit_class_counts": np.bincount(fit.labels).tolist(),
                "full_val_class_counts": np.bincount(val.labels).tolist(),
                "seconds": round(time.perf_counter() - t0, 1),
            }
        )
    )


# --------------------------------------------------------------------------- train


def train(arrays_path: Path, seed: int, epochs: int, threads: int, out: Path) -> None:
    """Trains the study's Keras model on the exported sets and embeds the cluster set."""
    import tensorflow as tf
    from tensorflow import keras

    sys.path.insert(0, str(BENCHMARKS))
    from keras_seed_ae import build_model

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    arrays = np.load(arrays_path)
    n_classes = len(arrays["class_names"])

    def inputs(name: str) -> tuple[np.ndarray, np.ndarray]:
        x = arrays[f"{name}_pixels"].astype(np.float32) / 255.0
        y = np.eye(n_classes, dtype=np.float32)[arrays[f"{name}_labels"]]
        return x, y

    x_fit, y_fit = inputs("fit")
    x_val, y_val = inputs("val")
    x_query, _ = inputs("query")

    tf.keras.utils.set_random_seed(seed)
    model = build_model()
    retrieval = model.get_layer("retrieval")
    # The embedding and the hint head read the raw conv output, before its BatchNorm and ReLU.
    if not isinstance(retrieval, keras.layers.Conv2D) or retrieval.activation.__name__ != "linear":
        raise SystemExit("build_model's `retrieval` is no longer a linear Conv2D; update train")
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),  # Keras defaults: betas 0.9/0.999, epsilon 1e-7
        loss={"recon": "mse", "hint": "categorical_crossentropy"},
    )

    class Timer(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.train_seconds: list[float] = []
            self.epoch_seconds: list[float] = []
            self.load: list[list[float] | None] = []

        def on_epoch_begin(self, epoch, logs=None):
            self.t0 = time.perf_counter()
            self.t_train: float | None = None

        def on_test_begin(self, logs=None):
            self.t_train = time.perf_counter()  # validation starts: the epoch's training ended

        def on_epoch_end(self, epoch, logs=None):
            t = time.perf_counter()
            self.train_seconds.append((self.t_train or t) - self.t0)
            self.epoch_seconds.append(t - self.t0)
            self.load.append(_load_averages())
            print(
                f"epoch {epoch + 1}: "
                + ", ".join(f"{k} {v:.4f}" for k, v in sorted((logs or {}).items()))
                + f", {len(x_fit) / self.train_seconds[-1]:.0f} img/s",
                flush=True,
            )

    timer = Timer()
    load_before = _load_averages()
    history = model.fit(
        x_fit,
        {"recon": x_fit, "hint": y_fit},
        batch_size=32,
        epochs=epochs,
        shuffle=True,
        validation_data=(x_val, {"recon": x_val, "hint": y_val}),
        verbose=0,
        callbacks=[timer],
    )
    embed = keras.Model(
        model.inputs, keras.layers.GlobalAveragePooling2D()(retrieval.output), name="embed"
    )
    t0 = time.perf_counter()
    cluster_emb = np.concatenate(
        [embed.predict(x_fit, batch_size=512, verbose=0), embed.predict(x_val, 512, verbose=0)]
    ).astype(np.float32)
    query_emb = embed.predict(x_query, batch_size=512, verbose=0).astype(np.float32)
    embed_seconds = time.perf_counter() - t0
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / EMBEDDINGS, cluster_emb)
    np.save(out / QUERY_EMBEDDINGS, query_emb)
    record = {
        "seed": seed,
        "epochs": epochs,
        "threads": threads,
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "parameters": int(model.count_params()),
        "n_fit": len(x_fit),
        "n_val": len(x_val),
        "n_cluster": len(cluster_emb),
        "n_query": len(query_emb),
        "arrays": str(arrays_path),
        "history": {k: [float(v) for v in vs] for k, vs in history.history.items()},
        "train_seconds_per_epoch": [round(s, 2) for s in timer.train_seconds],
        "epoch_seconds_with_validation": [round(s, 2) for s in timer.epoch_seconds],
        "images_per_second": [round(len(x_fit) / s, 1) for s in timer.train_seconds],
        "train_seconds": round(sum(timer.train_seconds), 1),
        "embed_seconds": round(embed_seconds, 1),
        "load_average_before": load_before,
        "load_average_per_epoch": timer.load,
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    (out / HISTORY).write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps({k: record[k] for k in ("seed", "epochs", "train_seconds", "n_cluster")}))


# --------------------------------------------------------------------------- score


def score(arrays_path: Path, runs: list[Path], out: Path) -> None:
    """Scores each run's embeddings as ``latentsearch evaluate`` scores the seed protocol."""
    from latentsearch.data import ImageData
    from latentsearch.evaluation import PUBLISHED, score_embeddings
    from latentsearch.protocols import ProtocolSplits
    from latentsearch.runs import machine_description

    arrays = np.load(arrays_path)
    class_names = [str(c) for c in arrays["class_names"]]

    def image_data(*names: str) -> ImageData:
        return ImageData(
            pixels=np.concatenate([arrays[f"{n}_pixels"] for n in names]),
            labels=np.concatenate([arrays[f"{n}_labels"] for n in names]),
            class_names=class_names,
            ids=[str(i) for n in names for i in arrays[f"{n}_ids"]],
        )

    cluster = image_data("fit", "val")
    query = image_data("query")
    # The seed protocol's sets (protocols.make_splits): cluster = database = fit + val.
    splits = ProtocolSplits(
        fit=image_data("fit"),
        val=image_data("val"),
        cluster=cluster,
        query=query,
        database=cluster,
    )
    rows = []
    for run in runs:
        history = json.loads((run / HISTORY).read_text())
        cluster_emb = np.load(run / EMBEDDINGS)
        query_emb = np.load(run / QUERY_EMBEDDINGS)
        if cluster_emb.shape != (len(cluster), 128) or len(query_emb) != len(query):
            raise SystemExit(
                f"{run}: embeddings {cluster_emb.shape} / {query_emb.shape} do not match "
                f"{arrays_path} ({len(cluster)} cluster, {len(query)} query images)"
            )
        t0 = time.perf_counter()
        scores = score_embeddings(splits, cluster_emb, query_emb, cluster_emb)
        rows.append(
            {
                "run": str(run),
                "seed": history["seed"],
                **{k: float(scores[k]) for k in SCORED},
                "epochs": history["epochs"],
                "train_seconds": history["train_seconds"],
                "images_per_second": history["images_per_second"],
                "threads": history["threads"],
                "tensorflow": history["tensorflow"],
                "trained": history["date"],
                "score_seconds": round(time.perf_counter() - t0, 1),
            }
        )
    summary: dict[str, Any] = {"seeds": [r["seed"] for r in rows]}
    for key in SCORED:
        values = [r[key] for r in rows]
        summary[f"{key}_mean"] = statistics.fmean(values)
        summary[f"{key}_sd"] = statistics.stdev(values) if len(values) > 1 else None
    port: dict[str, Any] = {}
    if PORT_RESULTS.exists():
        results = json.loads(PORT_RESULTS.read_text())
        port["rows"] = [
            {k: r.get(k) for k in ("seed", *SCORED, "epochs", "train_seconds", "data")}
            for r in results.get("rows", [])
            if r.get("protocol") == "seed" and r.get("model") == "hint"
        ]
        port["seed_spread"] = [
            s
            for s in results.get("seed_spread", [])
            if s.get("protocol") == "seed" and s.get("model") == "hint"
        ]
    result = {
        "what": "the study's Keras model (benchmarks/keras_seed_ae.py) trained under the seed "
        "protocol on the same image copy as latentsearch's port, scored with "
        "latentsearch.evaluation.score_embeddings (KMeans k=10, random_state=0, n_init=10)",
        "data": str(arrays["source"]),
        "split_order": str(arrays["split_order"]) if "split_order" in arrays else "port",
        "n_cluster": len(cluster),
        "n_query": len(query),
        "keras": rows,
        "keras_summary": summary,
        "port": port,
        "published": PUBLISHED["hint"],
        "machine": machine_description(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "load_average": _load_averages(),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    for r in rows:
        print(f"seed {r['seed']}: NMI {r['nmi']:.4f}, RI {r['ri']:.4f}, acc {r['acc']:.4f}")
    print(json.dumps({k: summary[k] for k in ("nmi_mean", "nmi_sd", "ri_mean", "ri_sd")}))


def main() -> None:
    ap = argparse.ArgumentParser(
        description="The study's Keras model under the seed protocol (see the module docstring)."
    )
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("export", help="write the seed protocol's sets (latentsearch's venv)")
    p.add_argument("--data", required=True, help="the image folder, e.g. /tmp/data/cifar10-jpeg")
    p.add_argument("--out", type=Path, required=True, help=".npz to write")
    p.add_argument("--limit", type=int, help="keep the first N images of each set (smoke tests)")
    p.add_argument(
        "--split-order",
        choices=("port", "study"),
        default="port",
        help="port: latentsearch's fit/val cut (sorted indices, the default); study: the "
        "unsorted train_test_split order the study's validation_split cut",
    )
    p = sub.add_parser("train", help="train the Keras model and embed (TensorFlow's venv)")
    p.add_argument("--arrays", type=Path, required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, required=True, help="folder for the run's files")
    p = sub.add_parser("score", help="score runs with latentsearch's metrics (latentsearch's venv)")
    p.add_argument("--arrays", type=Path, required=True)
    p.add_argument("--runs", type=Path, nargs="+", required=True)
    p.add_argument("--out", type=Path, required=True, help="JSON to write")
    args = ap.parse_args()
    if args.command == "export":
        export(args.data, args.out, args.limit, args.split_order)
    elif args.command == "train":
        train(args.arrays, args.seed, args.epochs, args.threads, args.out)
    else:
        score(args.arrays, args.runs, args.out)


if __name__ == "__main__":
    main()
