"""Search benchmarks: indexing throughput, query latency and throughput, recall, memory.

Run from the project root, politely on a shared machine:

    nice -n 10 python benchmarks/bench_search.py
    nice -n 10 python benchmarks/bench_search.py --sections synthetic-hnsw

Sections (``--sections``, comma-separated; default: all but ``synthetic-hnsw``):

- ``indexing``: decode + embed + index the CIFAR-10 JPEG folder (60,000 files) with a seed-ae
  model through ``ImageIndex.build``, timing decode, hashing, embedding and FAISS separately.
- ``cifar``: the 60,000 CIFAR-10 embeddings searched with 1,000 unseen queries (embeddings of
  horizontally flipped images): exact flat, HNSW, IVF and scikit-learn brute force.
- ``synthetic``: the same on 1,000,000 clustered 128-d vectors (a seeded Gaussian mixture)
  for flat, the approximate index ``auto`` builds (IVF) and scikit-learn.
- ``synthetic-hnsw`` (only when named): HNSW on the 1,000,000 vectors, with its own flat
  baseline; its build alone takes several minutes on two cores.
- ``duplicates``: ``ImageIndex.duplicates`` on the 60,000 images, and how far JPEG
  re-encodings and flips land relative to the default threshold.

Single queries run one at a time on one thread (FAISS OpenMP and BLAS limited to 1), as a
server worker would serve them; batches of 1,000 use every core. Results are merged into
``benchmarks/results/search.json`` under one top-level key per section, so other sections
(e.g. the server's load test) are kept.
"""

from __future__ import annotations

import argparse
import atexit
import io
import json
import os
import platform
import shutil
import tarfile
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import torch
from PIL import Image
from sklearn.neighbors import NearestNeighbors
from synthetic import clustered_vectors
from threadpoolctl import threadpool_limits

from latentsearch.data import load_data, read_image
from latentsearch.embedding import embed_images
from latentsearch.index import ImageIndex, all_images, backends
from latentsearch.index.duplicates import (
    DEFAULT_DUPLICATE_FRACTION,
    typical_distance,
)
from latentsearch.models import create_model
from latentsearch.runs import (
    Run,
    TrainConfig,
    checkpoints,
    load_run,
    machine_description,
)

ROOT = Path(__file__).resolve().parent.parent
CIFAR_DIR = Path("/tmp/data/cifar10-jpeg")
CIFAR_ARCHIVE = ROOT.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"
TRAINED_RUN = ROOT / "runs" / "reproduce" / "seed-vanilla"
RESULTS = ROOT / "benchmarks" / "results" / "search.json"

K = 10
SINGLE_QUERIES = 200
BATCH_QUERIES = 1_000
SYNTHETIC_N = 1_000_000
SYNTHETIC_DIM = 128
SYNTHETIC_COMPONENTS = 1_000
SEED = 0


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ------------------------------------------------------------------------------ data
def cifar_folder() -> Path:
    """The unpacked CIFAR-10 JPEG folder, unpacking the shared archive when needed."""
    if (CIFAR_DIR / "train").is_dir():
        return CIFAR_DIR
    if not CIFAR_ARCHIVE.is_file():
        raise SystemExit(f"need {CIFAR_DIR} or {CIFAR_ARCHIVE}")
    dest = Path(tempfile.mkdtemp(prefix="cifar10-jpeg-"))
    atexit.register(shutil.rmtree, dest, ignore_errors=True)
    log(f"unpacking {CIFAR_ARCHIVE} to {dest}")
    with tarfile.open(CIFAR_ARCHIVE) as tar:
        tar.extractall(dest, filter="data")
    return dest / "cifar10-jpeg"


def seed_ae_run() -> tuple[Run, str]:
    """The trained CIFAR-10 run when one exists, else a freshly initialised seed-ae."""
    if checkpoints(TRAINED_RUN):
        run = load_run(TRAINED_RUN)
        return run, f"trained run {TRAINED_RUN.relative_to(ROOT)} (epoch {run.epoch})"
    torch.manual_seed(SEED)
    model = create_model("seed-ae", in_channels=3, image_size=32).eval()
    run = Run.from_model(model, TrainConfig(model="seed-ae"), "untrained-seed-ae")
    return run, (
        "freshly initialised seed-ae (torch seed 0): no trained CIFAR-10 run existed yet; "
        "throughput and latency do not depend on the weights, recall and duplicate distances "
        "only slightly"
    )


# ------------------------------------------------------------------------------ timing
def _latency(search_one: Callable[[np.ndarray], Any], queries: np.ndarray) -> dict[str, float]:
    """One query at a time, on one thread: wall-clock and CPU time per query.

    On a shared machine a slow query spans many scheduler slices, so its wall time grows with
    the load while its CPU time does not; speed-ups are compared on CPU time.
    """
    wall, cpu = [], []
    with threadpool_limits(1):
        faiss.omp_set_num_threads(1)
        try:
            search_one(queries[:1])  # warm-up
            for q in queries:
                t0, c0 = time.perf_counter(), time.thread_time()
                search_one(q[None])
                cpu.append(time.thread_time() - c0)
                wall.append(time.perf_counter() - t0)
        finally:
            faiss.omp_set_num_threads(os.cpu_count() or 1)
    ms, cpu_ms = np.array(wall) * 1000, np.array(cpu) * 1000
    return {
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "mean_ms": float(ms.mean()),
        "queries_per_second": float(1000 / ms.mean()),
        "cpu_p50_ms": float(np.percentile(cpu_ms, 50)),
        "cpu_p99_ms": float(np.percentile(cpu_ms, 99)),
        "cpu_mean_ms": float(cpu_ms.mean()),
        "cpu_queries_per_second": float(1000 / max(cpu_ms.mean(), 1e-6)),
    }


def _batched(
    search: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]], queries: np.ndarray
) -> tuple[dict[str, float], np.ndarray, np.ndarray]:
    t0, c0 = time.perf_counter(), time.process_time()
    d, i = search(queries)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    return (
        {
            "seconds": seconds,
            "queries_per_second": len(queries) / seconds,
            "cpu_seconds": cpu,
            "cpu_queries_per_core_second": len(queries) / max(cpu, 1e-9),
        },
        d,
        i,
    )


def _overlap(found: np.ndarray, exact: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(b)) / K for a, b in zip(found, exact, strict=True)]))


def compare_backends(
    name: str, vectors: np.ndarray, queries: np.ndarray, kinds: list[str], sklearn: bool = True
) -> dict[str, Any]:
    """Builds each backend over ``vectors`` and measures it with ``queries``."""
    singles = queries[:SINGLE_QUERIES]
    out: dict[str, Any] = {
        "database": len(vectors),
        "dim": int(vectors.shape[1]),
        "batch_queries": len(queries),
        "single_queries": len(singles),
        "backends": {},
    }
    exact_i = None
    for kind in ["flat", *kinds]:
        log(f"{name}: building {kind}")
        t0 = time.perf_counter()
        built = backends.build_index(vectors, kind, seed=SEED)
        build_s = time.perf_counter() - t0
        index = built.index
        row: dict[str, Any] = {
            "build_seconds": build_s,
            "params": built.params,
            "build_sample_recall_at_10": built.recall_at_10,
            "memory_bytes": backends.index_bytes(index),
        }
        row["batched"], _, i = _batched(lambda q, ix=index: ix.search(q, K), queries)
        if kind == "flat":
            exact_i = i
            row["recall_at_10"] = 1.0
        else:
            assert exact_i is not None
            row["recall_at_10"] = backends.recall_at_k(queries, vectors, i, exact_i)
            row["overlap_at_10"] = _overlap(i, exact_i)
        row["single"] = _latency(lambda q, ix=index: ix.search(q, K), singles)
        if kind != "flat":
            row["sweep"] = _sweep(index, kind, queries, vectors, singles, exact_i)
            backends.set_search_params(index, kind, built.params)
        out["backends"][kind] = row
        log(
            f"{name}: {kind} build {build_s:.1f}s recall {row['recall_at_10']:.3f} "
            f"single p50 {row['single']['p50_ms']:.3f} ms (CPU mean "
            f"{row['single']['cpu_mean_ms']:.3f} ms), batched "
            f"{row['batched']['queries_per_second']:.0f} q/s"
        )
        del built, index
    if sklearn:
        _sklearn(name, vectors, queries, out, exact_i)
    flat = out["backends"]["flat"]["single"]
    for r in out["backends"].values():
        single = r["single"]
        r["single_speedup_vs_flat"] = single["queries_per_second"] / flat["queries_per_second"]
        r["single_cpu_speedup_vs_flat"] = flat["cpu_mean_ms"] / max(single["cpu_mean_ms"], 1e-6)
    return out


def _sklearn(
    name: str, vectors: np.ndarray, queries: np.ndarray, out: dict[str, Any], exact_i: Any
) -> None:
    log(f"{name}: scikit-learn brute force")
    singles = queries[:SINGLE_QUERIES]
    nn = NearestNeighbors(n_neighbors=K, algorithm="brute")
    t0 = time.perf_counter()
    nn.fit(vectors)
    row = {"build_seconds": time.perf_counter() - t0, "memory_bytes": int(vectors.nbytes)}

    def sk_search(q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        d, i = nn.kneighbors(q, K)
        return d**2, i

    row["batched"], _, i = _batched(sk_search, queries)
    row["recall_at_10"] = backends.recall_at_k(queries, vectors, i, exact_i)
    row["overlap_at_10"] = _overlap(i, exact_i)
    row["single"] = _latency(sk_search, singles)
    out["backends"]["sklearn-brute"] = row


def _sweep(
    index: Any,
    kind: str,
    queries: np.ndarray,
    vectors: np.ndarray,
    singles: np.ndarray,
    exact_i: np.ndarray,
) -> list[dict[str, Any]]:
    """Recall and single-query latency for each search setting the build may choose."""
    name, ladder = (
        ("efSearch", backends.HNSW_EF_SEARCH) if kind == "hnsw" else ("nprobe", backends.IVF_NPROBE)
    )
    rows = []
    for value in ladder[:8]:
        backends.set_search_params(index, kind, {name: value})
        _, i = index.search(queries, K)
        recall = backends.recall_at_k(queries, vectors, i, exact_i)
        lat = _latency(lambda q: index.search(q, K), singles[:100])
        rows.append(
            {
                name: value,
                "recall_at_10": recall,
                "single_p50_ms": lat["p50_ms"],
                "single_cpu_mean_ms": lat["cpu_mean_ms"],
            }
        )
        if recall >= 0.999:
            break
    return rows


# ------------------------------------------------------------------------------ sections
def bench_indexing(state: dict[str, Any]) -> dict[str, Any]:
    folder = cifar_folder()
    run, model_note = seed_ae_run()
    cache = Path(tempfile.mkdtemp(prefix="bench-search-cache-"))  # a cold decode, every time
    atexit.register(shutil.rmtree, cache, ignore_errors=True)
    log(f"indexing {folder} with {model_note.split(':')[0]}")
    t0, c0 = time.perf_counter(), time.process_time()
    data = all_images(load_data(str(folder), image_size=32, cache_dir=cache))
    decode_s, decode_cpu = time.perf_counter() - t0, time.process_time() - c0
    log(f"decoded {len(data)} images in {decode_s:.1f}s")

    t0, c0 = time.perf_counter(), time.process_time()
    embeddings = embed_images(run.model, data.pixels)
    embed_s = [time.perf_counter() - t0, time.process_time() - c0]
    t0 = time.perf_counter()
    index = ImageIndex.build(run, data, index_type="flat", embeddings=embeddings)
    build_s = embed_s[0] + time.perf_counter() - t0  # embedding included, as ever
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        index.save(Path(tmp) / "idx")
        save_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        ImageIndex.load(Path(tmp) / "idx")
        load_s = time.perf_counter() - t0
    n = len(data)
    rest_s = build_s - embed_s[0]  # hashing the files + the flat FAISS index
    total = decode_s + build_s
    log(f"embedded in {embed_s[0]:.1f}s, hash + index {rest_s:.1f}s, save {save_s:.1f}s")

    # Unseen queries for the search section: embeddings of horizontally flipped images.
    rng = np.random.default_rng(SEED)
    pick = np.sort(rng.choice(n, BATCH_QUERIES, replace=False))
    flipped = np.ascontiguousarray(np.asarray(data.pixels[pick])[:, :, ::-1])
    state.update(
        run=run,
        model_note=model_note,
        index=index,
        data=data,
        queries=embed_images(run.model, flipped),
        folder=folder,
    )
    return {
        "data": f"CIFAR-10 (JPEG q75 copy), {folder}: train + test image folder",
        "images": n,
        "skipped": len(data.skipped),
        "model": model_note,
        "image_size": 32,
        "decode_seconds": decode_s,
        "decode_images_per_second": n / decode_s,
        "decode_cpu_seconds": decode_cpu,
        "embed_seconds": embed_s[0],
        "embed_images_per_second": n / embed_s[0],
        "embed_cpu_seconds": embed_s[1],
        "hash_and_index_seconds": rest_s,
        "end_to_end_seconds": total,
        "end_to_end_images_per_second": n / total,
        "save_seconds": save_s,
        "load_seconds": load_s,
        "torch_threads": torch.get_num_threads(),
    }


def bench_cifar(state: dict[str, Any]) -> dict[str, Any]:
    vectors = np.ascontiguousarray(state["index"].embeddings)
    out = compare_backends("cifar", vectors, state["queries"], ["hnsw", "ivf"])
    out["data"] = "seed-ae embeddings of the 60,000 CIFAR-10 JPEGs (train + test)"
    out["queries"] = "embeddings of 1,000 horizontally flipped images of the set (unseen)"
    out["model"] = state["model_note"]
    return out


def bench_synthetic() -> dict[str, Any]:
    log("generating 1,000,000 clustered vectors")
    vectors, queries = _synthetic()
    out = compare_backends("synthetic", vectors, queries, [backends.APPROXIMATE_INDEX])
    out["data"] = (
        f"{SYNTHETIC_N:,} x {SYNTHETIC_DIM} float32, Gaussian mixture of "
        f"{SYNTHETIC_COMPONENTS:,} components, per-axis scale j^-0.25, random rotation, seed "
        f"{SEED}"
    )
    out["queries"] = "1,000 further samples of the same mixture (unseen)"
    approx = out["backends"][backends.APPROXIMATE_INDEX]
    out["target"] = {
        "required_recall_at_10": 0.95,
        "required_single_speedup": 10.0,
        "approximate_index": backends.APPROXIMATE_INDEX,
        "params": approx["params"],
        "recall_at_10": approx["recall_at_10"],
        "single_speedup_vs_flat": approx["single_speedup_vs_flat"],
        "single_cpu_speedup_vs_flat": approx["single_cpu_speedup_vs_flat"],
        "met": bool(
            approx["recall_at_10"] >= 0.95
            and min(approx["single_speedup_vs_flat"], approx["single_cpu_speedup_vs_flat"]) >= 10
        ),
    }
    return out


def bench_synthetic_hnsw() -> dict[str, Any]:
    """HNSW at 1M, with its own flat baseline measured in the same run (minutes to build)."""
    log("generating 1,000,000 clustered vectors (HNSW run)")
    vectors, queries = _synthetic()
    out = compare_backends("synthetic-hnsw", vectors, queries, ["hnsw"], sklearn=False)
    return {
        "note": "HNSW at 1M, run separately; speedup relative to the flat index of this run",
        "flat": out["backends"]["flat"],
        "hnsw": out["backends"]["hnsw"],
    }


def _synthetic() -> tuple[np.ndarray, np.ndarray]:
    everything = clustered_vectors(
        SYNTHETIC_N + BATCH_QUERIES, SYNTHETIC_DIM, SYNTHETIC_COMPONENTS, seed=SEED
    )
    return everything[:SYNTHETIC_N], everything[SYNTHETIC_N:]


def _reencode(path: str, quality: int) -> np.ndarray:
    buf = io.BytesIO()
    with Image.open(path) as img:
        img.convert("RGB").save(buf, format="JPEG", quality=quality)
    return read_image(buf.getvalue(), 32)


def bench_duplicates(state: dict[str, Any]) -> dict[str, Any]:
    index: ImageIndex = state["index"]
    run: Run = state["run"]
    data = state["data"]
    vectors = np.ascontiguousarray(index.embeddings)
    typical = typical_distance(vectors)
    threshold = DEFAULT_DUPLICATE_FRACTION * typical
    log(f"duplicates over {len(index)} images at the default threshold {threshold:.4g}")
    t0 = time.perf_counter()
    groups = index.duplicates(threshold)
    seconds = time.perf_counter() - t0
    log(f"{len(groups)} groups in {seconds:.1f}s")

    # Where do edited copies land, as a share of the typical distance between two images?
    rng = np.random.default_rng(SEED + 1)
    pick = np.sort(rng.choice(len(index), 200, replace=False))
    paths = [data.paths[i] for i in pick]
    originals = vectors[pick]
    ratios: dict[str, Any] = {}
    for name, make in {
        "jpeg_q90": lambda p: _reencode(p, 90),
        "jpeg_q50": lambda p: _reencode(p, 50),
        "horizontal_flip": lambda p: read_image(p, 32)[:, ::-1],
    }.items():
        edited = embed_images(run.model, np.stack([make(p) for p in paths]))
        d = ((edited.astype(np.float64) - originals) ** 2).sum(axis=1) / typical
        ratios[name] = {
            "median": float(np.median(d)),
            "p90": float(np.percentile(d, 90)),
            "share_below_default": float(np.mean(d < DEFAULT_DUPLICATE_FRACTION)),
        }
    nn_d, _ = index.search(vectors[pick], 2)
    nearest = nn_d[:, 1] / typical
    return {
        "images": len(index),
        "typical_squared_distance": typical,
        "default_fraction": DEFAULT_DUPLICATE_FRACTION,
        "default_threshold": threshold,
        "seconds": seconds,
        "groups": len(groups),
        "images_in_groups": int(sum(len(g) for g in groups)),
        "largest_group": max((len(g) for g in groups), default=0),
        "edited_copy_distance_over_typical": ratios,
        "nearest_other_image_over_typical": {
            "median": float(np.median(nearest)),
            "p10": float(np.percentile(nearest, 10)),
            "p1": float(np.percentile(nearest, 1)),
        },
        "model": state["model_note"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sections",
        default="indexing,cifar,synthetic,duplicates",
        help="comma-separated; synthetic-hnsw (HNSW at 1M, slow) is only run when named",
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    started = time.perf_counter()
    results = json.loads(args.out.read_text()) if args.out.is_file() else {}
    results["environment"] = {
        "machine": machine_description() + ", no GPU (shared VM: other jobs were running)",
        "python": platform.python_version(),
        "faiss": faiss.__version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "faiss_threads_batched": faiss.omp_get_max_threads(),
        "single_query_threads": 1,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "load_average_at_start": list(os.getloadavg()),
    }
    state: dict[str, Any] = {}
    search = results.setdefault("search", {})
    if any(s in sections for s in ("indexing", "cifar", "duplicates")):
        results["indexing"] = bench_indexing(state)
    if "cifar" in sections:
        search["cifar10_60k"] = bench_cifar(state)
    if "synthetic" in sections:
        search["synthetic_1m"] = bench_synthetic()
    if "synthetic-hnsw" in sections:
        search["synthetic_1m_hnsw"] = bench_synthetic_hnsw()
    if "duplicates" in sections:
        results["duplicates"] = bench_duplicates(state)
    results["environment"]["total_seconds"] = time.perf_counter() - started
    results["environment"]["load_average_at_end"] = list(os.getloadavg())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    log(f"wrote {args.out} in {time.perf_counter() - started:.0f}s")


if __name__ == "__main__":
    main()
