"""``GET /items?offset=&limit=`` (the search page's browsing) on a 1M-item index.

Run from the project root, politely on a shared machine:

    nice -n 10 python benchmarks/bench_items_paging.py
    nice -n 10 python benchmarks/bench_items_paging.py --items 100000 --requests 100

What it does:

1. Trains a seed-ae one epoch on scikit-learn's digits (seconds): the run the index needs.
2. Makes ``--items`` synthetic items (ids ``folder0042/img000123456.jpg`` under one root,
   a SHA-256 each, no labels) with random embeddings, saves them as an index and serves it
   with ``create_app`` (the real load path: manifest, item table, FAISS).
3. Times ``--requests`` requests of ``GET /items`` through FastAPI's TestClient (the whole
   in-process HTTP stack, no network) at random offsets, plus the last page and one past the
   end, for each ``--limit``; and the service's own ``items_page`` without HTTP.
4. Writes the p50/p99 in milliseconds, the load average and the machine to
   ``benchmarks/results/items_paging.json``.

A page costs O(limit): the item table is sliced by position, nothing walks all N items.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results" / "items_paging.json"


def percentiles(ms: list[float]) -> dict[str, float]:
    a = np.asarray(ms)
    return {
        "p50_ms": round(float(np.percentile(a, 50)), 3),
        "p99_ms": round(float(np.percentile(a, 99)), 3),
        "max_ms": round(float(a.max()), 3),
        "n": len(ms),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=1_000_000)
    ap.add_argument("--requests", type=int, default=300, help="per limit")
    ap.add_argument("--limits", default="48,100", help="page sizes to time")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    from fastapi.testclient import TestClient

    from latentsearch.data import load_data
    from latentsearch.index import ImageIndex, IndexSpec
    from latentsearch.index.items import ItemTableBuilder
    from latentsearch.runs import TrainConfig
    from latentsearch.server.app import create_app
    from latentsearch.training import train

    rng = np.random.default_rng(args.seed)
    with tempfile.TemporaryDirectory(prefix="bench-items-") as tmp:
        work = Path(tmp)
        t0 = time.perf_counter()
        run = train(TrainConfig(data="digits", epochs=1), work / "run", progress=False)
        load_data("digits")
        dim = run.model.embedding_dim
        builder = ItemTableBuilder()
        for i in range(args.items):
            item_id = f"folder{i // 1000:04d}/img{i:09d}.jpg"
            sha = hashlib.sha256(item_id.encode()).hexdigest()
            builder.add(item_id, f"/photos/{item_id}", -1, sha)
        items = builder.build()
        embeddings = rng.standard_normal((args.items, dim), dtype=np.float32)
        spec = IndexSpec(index_type="flat").resolve(run)
        index = ImageIndex.from_embeddings(
            run, embeddings, items, class_names=[], source="synthetic", spec=spec
        )
        index.save(work / "index")
        del index, embeddings, items
        setup_s = time.perf_counter() - t0

        app = create_app(work / "index")
        service = app.state.service
        n = len(service.index)
        results: dict[str, object] = {}
        with TestClient(app) as client:
            for limit in (int(x) for x in args.limits.split(",")):
                offsets = rng.integers(0, n, args.requests).tolist()
                offsets += [n - limit, n + 10]  # the last page, one past the end
                client.get("/items", params={"offset": 0, "limit": limit})  # warm-up
                http_ms, service_ms = [], []
                for off in offsets:
                    t = time.perf_counter()
                    r = client.get("/items", params={"offset": off, "limit": limit})
                    http_ms.append((time.perf_counter() - t) * 1000)
                    assert r.status_code == 200, r.text
                    body = r.json()
                    assert len(body["items"]) == max(0, min(limit, n - off))
                    t = time.perf_counter()
                    service.items_page(off, limit, "")
                    service_ms.append((time.perf_counter() - t) * 1000)
                results[f"limit_{limit}"] = {
                    "http": percentiles(http_ms),
                    "service_only": percentiles(service_ms),
                }
        record = {
            "what": "GET /items?offset=&limit= through TestClient (in-process HTTP stack) at "
            "random offsets of an index, plus the last page and one past the end",
            "items": n,
            "embedding_dim": dim,
            "results": results,
            "setup_seconds": round(setup_s, 1),
            "load_average": os.getloadavg(),
            "cpus": os.cpu_count(),
            "machine": platform.platform(),
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
