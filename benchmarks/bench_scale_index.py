"""Very large indexes: flat vs IVF vs IVF-PQ, and near-duplicates at scale (issue 10, part 4).

Run from the project root, on a quiet machine (the full size takes a while on two cores):

    nice -n 10 python benchmarks/bench_scale_index.py                 # 1,000,000 x 128
    nice -n 10 python benchmarks/bench_scale_index.py --sizes 20000   # a quick check

For each size of ``--sizes`` (clustered random vectors of dimension ``--dim``: a seeded
Gaussian mixture with a decaying spectrum, randomly rotated, as in ``bench_search.py``) it
builds flat, IVF, IVF-PQ and OPQ+IVF-PQ through ``backends.build_index`` and measures build
seconds, bytes per vector (the serialised FAISS index / N), recall@10 of unseen queries,
single-query latency p50/p95 and queries per second (one thread), and batched throughput. For
IVF-PQ it also records recall without re-ranking and for each re-ranking depth, the evidence
for ``k_factor``. Then ``duplicates.find_duplicates`` runs over the largest size with planted
exact and near copies, approximate, timed, with its sampled missed-pair rate and how many
planted pairs it recovered; the exact method is timed at ``--exact-duplicates-size`` for
comparison. Results are merged into ``benchmarks/results/scale.json`` under ``ivfpq`` and
``duplicates``; other keys are kept.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import faiss
import numpy as np
from synthetic import clustered_vectors

from latentsearch.index import backends, duplicates

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "scale.json"
K = 10
SEED = 0


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def single_latency(
    search_one: Callable[[np.ndarray], Any], queries: np.ndarray
) -> dict[str, float]:
    """One query at a time on one FAISS thread: p50 / p95 ms and queries per second."""
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        search_one(queries[:1])
        ms = []
        for q in queries:
            t0 = time.perf_counter()
            search_one(q[None])
            ms.append((time.perf_counter() - t0) * 1000)
    finally:
        faiss.omp_set_num_threads(threads)
    arr = np.array(ms)
    return {
        "p50_ms": float(np.percentile(arr, 50)),
        "p95_ms": float(np.percentile(arr, 95)),
        "queries_per_second": float(1000 / arr.mean()),
    }


def bench_size(
    n: int, dim: int, components: int, n_queries: int, n_single: int, kinds: list[str]
) -> dict[str, Any]:
    log(f"{n:,} x {dim}: generating")
    data = clustered_vectors(n + n_queries, dim, components, seed=SEED)
    queries, x = data[:n_queries], np.ascontiguousarray(data[n_queries:])
    del data
    _, exact = backends.exact_neighbors(queries, x, K)
    out: dict[str, Any] = {"n": n, "dim": dim, "queries": n_queries, "backends": {}}
    for name in kinds:
        kind, opq = ("ivfpq", True) if name == "ivfpq-opq" else (name, False)
        log(f"{n:,}: building {name}")
        t0 = time.perf_counter()
        built = backends.build_index(x, kind, opq=opq, seed=SEED)
        build_s = time.perf_counter() - t0

        def search(q: np.ndarray, b: backends.BuiltIndex = built) -> Any:
            return backends.search_index(b, q, K, vectors=x)

        t0 = time.perf_counter()
        _, found = search(queries)
        batched_s = time.perf_counter() - t0
        row: dict[str, Any] = {
            "build_seconds": build_s,
            "params": built.params,
            "build_sample_recall_at_10": built.recall_at_10,
            "index_bytes": backends.index_bytes(built.index),
            "bytes_per_vector": backends.index_bytes(built.index) / n,
            "recall_at_10": backends.recall_at_k(queries, x, found, exact),
            "batched_queries_per_second": n_queries / batched_s,
            "single": single_latency(search, queries[:n_single]),
        }
        if kind == "ivfpq":
            # The evidence for re-ranking: recall at the chosen nprobe for each depth.
            chosen = built.params["k_factor"]
            sweep = {}
            for k_factor in (1, *backends.IVFPQ_K_FACTOR):
                built.params["k_factor"] = k_factor
                sweep[str(k_factor)] = backends.recall_at_k(queries, x, search(queries)[1], exact)
            built.params["k_factor"] = chosen
            row["recall_at_10_by_k_factor"] = sweep
            row["note"] = (
                "bytes_per_vector counts the FAISS index only; re-ranking reads the k_factor*k "
                "candidates' rows from the stored float32 vectors (embeddings.npy)"
            )
        out["backends"][name] = row
        log(
            f"{n:,}: {name} build {build_s:.1f}s, {row['bytes_per_vector']:.1f} B/vector, "
            f"recall@10 {row['recall_at_10']:.3f}, single p50 {row['single']['p50_ms']:.3f} ms, "
            f"params {built.params}"
        )
        del built
    return out


def planted_duplicates(
    n: int, dim: int, components: int, share: float
) -> tuple[np.ndarray, float, np.ndarray]:
    """Clustered vectors where ``share`` of them are copies of others: half exact copies,
    half near copies at 0.1-0.9 of the default threshold.

    Returns:
        The vectors (Shape: (n, dim)), the threshold and the planted pairs (Shape: (P, 2)).
    """
    x = clustered_vectors(n, dim, components, seed=SEED + 7)
    threshold = duplicates.default_threshold(x)
    rng = np.random.default_rng(SEED + 8)
    m = int(n * share)
    picked = rng.choice(n, size=2 * m, replace=False)
    sources, targets = picked[:m], picked[m:]
    offsets = np.zeros((m, dim), dtype=np.float32)
    near = np.arange(m) >= m // 2
    direction = rng.standard_normal((int(near.sum()), dim)).astype(np.float32)
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    length = np.sqrt(rng.uniform(0.1, 0.9, size=(len(direction), 1)) * threshold)
    offsets[near] = direction * length.astype(np.float32)
    x[targets] = x[sources] + offsets
    return x, threshold, np.stack([sources, targets], axis=1)


def bench_duplicates(n: int, dim: int, components: int, exact_n: int) -> dict[str, Any]:
    log(f"duplicates: {n:,} x {dim} with 1% planted copies")
    x, threshold, planted = planted_duplicates(n, dim, components, share=0.01)
    t0 = time.perf_counter()
    found = duplicates.find_duplicates(x, threshold, method="approximate", seed=SEED)
    seconds = time.perf_counter() - t0
    group_of = np.full(n, -1, dtype=np.int64)
    for g, members in enumerate(found.groups):
        group_of[members] = g
    a, b = group_of[planted[:, 0]], group_of[planted[:, 1]]
    recovered = float(np.mean((a >= 0) & (a == b)))
    out: dict[str, Any] = {
        "n": n,
        "dim": dim,
        "threshold": threshold,
        "planted_pairs": len(planted),
        "method": found.method,
        "params": found.params,
        "seconds": seconds,
        "pairs_found": found.pairs,
        "groups": len(found.groups),
        "planted_pairs_grouped": recovered,
        "sample_vectors": found.sample_vectors,
        "sample_pairs": found.sample_pairs,
        "sample_missed": found.sample_missed,
        "missed_pair_rate_estimate": found.missed_pair_rate_estimate,
        "target_seconds": 600,
        "met": bool(seconds <= 600),
    }
    log(
        f"duplicates: {seconds:.1f}s, {found.pairs:,} pairs, {len(found.groups):,} groups, "
        f"planted pairs grouped {recovered:.4f}, missed-pair rate "
        f"{found.missed_pair_rate_estimate}, params {found.params}"
    )
    if exact_n:
        sub = x[: min(exact_n, n)]
        log(f"duplicates: exact and approximate over the first {len(sub):,} for comparison")
        t0 = time.perf_counter()
        exact = duplicates.find_duplicates(sub, threshold, method="exact")
        exact_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        approx = duplicates.find_duplicates(sub, threshold, method="approximate")
        approx_s = time.perf_counter() - t0
        out["comparison"] = {
            "n": len(sub),
            "exact_seconds": exact_s,
            "exact_pairs": exact.pairs,
            "approximate_seconds": approx_s,
            "approximate_pairs": approx.pairs,
            "same_groups": exact.groups == approx.groups,
            "approximate_missed_pair_rate_estimate": approx.missed_pair_rate_estimate,
        }
        log(f"duplicates: comparison {out['comparison']}")
    return out


def merge_results(path: Path, updates: dict[str, Any]) -> None:
    """Merges ``updates`` into the JSON at ``path`` (re-read just before, replaced atomically)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    results = json.loads(path.read_text()) if path.is_file() else {}
    results.update(updates)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        f.write(json.dumps(results, indent=2) + "\n")
    os.replace(tmp, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="1000000", help="comma-separated database sizes")
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--components", type=int, default=1000, help="mixture components")
    parser.add_argument("--queries", type=int, default=1000, help="unseen batched queries")
    parser.add_argument("--single", type=int, default=200, help="single queries timed")
    parser.add_argument("--kinds", default="flat,ivf,ivfpq,ivfpq-opq")
    parser.add_argument(
        "--exact-duplicates-size",
        type=int,
        default=60_000,
        help="also time exact vs approximate duplicates on this many vectors (0: skip)",
    )
    parser.add_argument("--skip-duplicates", action="store_true")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    started = time.perf_counter()
    environment = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, no GPU",
        "load_average_start": list(os.getloadavg()),
        "python": platform.python_version(),
        "faiss": faiss.__version__,
        "numpy": np.__version__,
        "faiss_threads": faiss.omp_get_max_threads(),
        "command": "python benchmarks/bench_scale_index.py " + " ".join(sys.argv[1:]),
    }
    ivfpq = {
        "environment": environment,
        "data": f"Gaussian mixture of {args.components} components, per-axis scale j^-0.25, "
        f"random rotation, seed {SEED}; queries: further samples of the mixture (unseen)",
        "sizes": [
            bench_size(n, args.dim, args.components, args.queries, args.single, kinds)
            for n in sizes
        ],
    }
    updates: dict[str, Any] = {"ivfpq": ivfpq}
    if not args.skip_duplicates:
        dup = bench_duplicates(max(sizes), args.dim, args.components, args.exact_duplicates_size)
        dup["environment"] = environment
        updates["duplicates"] = dup
    environment["load_average_end"] = list(os.getloadavg())
    environment["total_seconds"] = time.perf_counter() - started
    merge_results(args.out, updates)
    log(f"wrote {args.out} in {environment['total_seconds']:.0f}s")


if __name__ == "__main__":
    main()
