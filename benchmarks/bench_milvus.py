"""FAISS flat vs embedded Milvus (milvus-lite): build time, queries per second, recall@10.

Run from the project root, politely on a shared machine:

    nice -n 10 python benchmarks/bench_milvus.py                      # 100,000 and 1,000,000
    nice -n 10 python benchmarks/bench_milvus.py --sizes 5000 --out /tmp/scale.json   # smoke

For each size, clustered 128-d float32 vectors (a seeded Gaussian mixture, the recipe of
``bench_search.clustered_vectors``) are indexed through ``latentsearch.index.vector_store``,
the interface ``ImageIndex`` uses, by each store of ``--stores`` (default: FAISS flat,
milvus-lite flat, milvus-lite IVF). Measured per store:

- ``build_seconds``: from vectors to a searchable store (milvus-lite: insert, flush, index,
  load; IVF also tunes ``nprobe`` for recall, as ``ImageIndex.build`` does);
- ``save_seconds``: writing the store's part of an index folder (FAISS: ``index.faiss``;
  milvus-lite: closing the scratch database and copying ``milvus.db``);
- ``single_qps``: queries one at a time (as a server worker serves them);
- ``batch_qps``: ``--batch-queries`` queries in one call;
- ``recall_at_10``: share of true 10 nearest neighbours returned (exact = FAISS flat on the
  same vectors, float64 re-check of ties as in ``backends.recall_at_k``).

The results are merged into ``--out`` (default ``benchmarks/results/scale.json``) under the
``milvus`` key; other keys belong to other benchmarks and are kept.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from synthetic import clustered_vectors

from latentsearch.index import backends
from latentsearch.index.stores import create_store
from latentsearch.index.vector_store import VectorStore

SEED = 0
DIM = 128
COMPONENTS = 1_000
K = 10
STORES = {
    "faiss-flat": ("faiss", "flat"),
    "milvus-lite-flat": ("milvus", "flat"),
    "milvus-lite-ivf": ("milvus", "ivf"),
    "milvus-lite-hnsw": ("milvus", "hnsw"),
    "faiss-ivf": ("faiss", "ivf"),
}
FINGERPRINT = {"model": "benchmark", "weights_sha256": "0" * 64, "embedding_dim": DIM}


def _queries(x: np.ndarray, n: int) -> np.ndarray:
    """Unseen queries: random indexed points plus N(0, 0.05^2) noise (new photos of known
    scenes). Shape: (n, 128), float32."""
    rng = np.random.default_rng(SEED + 1)
    picks = rng.choice(len(x), size=min(n, len(x)), replace=False)
    noise = rng.standard_normal((len(picks), DIM), dtype=np.float32) * np.float32(0.05)
    return np.ascontiguousarray(x[picks] + noise, dtype=np.float32)


def _measure(
    name: str,
    backend: str,
    index_type: str,
    x: np.ndarray,
    queries: np.ndarray,
    exact: np.ndarray,
    single: int,
) -> dict[str, Any]:
    row: dict[str, Any] = {"store": name, "backend": backend, "index_type": index_type}
    t = time.perf_counter()
    store: VectorStore = create_store(x, index_type, backend=backend, fingerprint=FINGERPRINT)
    row["build_seconds"] = round(time.perf_counter() - t, 3)
    try:
        row["params"] = dict(store.params)
        row["build_recall_at_10"] = store.recall_at_10
        t = time.perf_counter()
        _, found = store.search(queries, K)
        batch = time.perf_counter() - t
        row["batch_qps"] = round(len(queries) / batch, 1)
        row["recall_at_10"] = round(backends.recall_at_k(queries, x, found, exact), 4)
        t = time.perf_counter()
        for i in range(single):
            store.search(queries[i : i + 1], K)
        row["single_qps"] = round(single / (time.perf_counter() - t), 1)
        with tempfile.TemporaryDirectory(prefix="bench-milvus-") as tmp:
            parts = store.save_parts()
            t = time.perf_counter()
            for fname, write in parts.files.items():
                with open(Path(tmp) / fname, "wb") as f:
                    write(f)
            for dname, write_dir in parts.folders.items():
                write_dir(Path(tmp) / dname)
            row["save_seconds"] = round(time.perf_counter() - t, 3)
            row["saved_mib"] = round(
                sum(p.stat().st_size for p in Path(tmp).rglob("*") if p.is_file()) / 2**20, 1
            )
        _, again = store.search(queries[:single], K)  # a save must leave it searchable
        if not np.array_equal(again, found[:single]):
            row["note"] = "results changed after the save"
    finally:
        store.close()
    return row


def _merge(path: Path, section: dict[str, Any]) -> None:
    """Sets ``milvus`` in the JSON file at ``path``, keeping its other sections."""
    data: dict[str, Any] = {}
    if path.exists():
        data = json.loads(path.read_text(encoding="utf-8"))
    data["milvus"] = section
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def main() -> None:
    """Measures every store at every size and merges the rows into the results file."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument(
        "--stores",
        default="faiss-flat,milvus-lite-flat,milvus-lite-ivf",
        help=f"comma-separated, of: {', '.join(STORES)}",
    )
    ap.add_argument("--batch-queries", type=int, default=1_000)
    ap.add_argument("--single-queries", type=int, default=200)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/scale.json"))
    args = ap.parse_args()
    names = [s for s in args.stores.split(",") if s]
    unknown = [s for s in names if s not in STORES]
    if unknown:
        ap.error(f"unknown stores {unknown}; choose from {list(STORES)}")

    import milvus_lite
    import pymilvus

    rows = []
    for n in args.sizes:
        x = clustered_vectors(n, DIM, COMPONENTS, seed=SEED)
        queries = _queries(x, args.batch_queries)
        _, exact = backends.exact_neighbors(queries, x, K)
        single = min(args.single_queries, len(queries))
        for name in names:
            backend, index_type = STORES[name]
            row = {"n": n, **_measure(name, backend, index_type, x, queries, exact, single)}
            print(json.dumps(row), flush=True)
            rows.append(row)
    section = {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": "python benchmarks/bench_milvus.py --sizes "
        + " ".join(map(str, args.sizes))
        + f" --stores {args.stores}",
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "load_average_at_end": os.getloadavg(),
        },
        "versions": {"pymilvus": pymilvus.__version__, "milvus_lite": milvus_lite.__version__},
        "data": f"clustered {DIM}-d float32 ({COMPONENTS}-component Gaussian mixture), "
        f"{args.batch_queries} unseen queries (indexed points + N(0, 0.05^2) noise)",
        "k": K,
        "rows": rows,
    }
    _merge(args.out, section)
    print(f"merged into {args.out} under 'milvus'")


if __name__ == "__main__":
    main()
