"""Load test of the search server: concurrent clients POST real CIFAR-10 images to /search.

Run from the project root, politely on a shared machine:

    nice -n 10 python benchmarks/bench_server.py
    nice -n 10 python benchmarks/bench_server.py --clients 1,8 --seconds 30

What it does:

1. Takes a CIFAR-10 run: a copy of the newest checkpoint of ``runs/reproduce/seed-vanilla``
   (copied, so a training run still writing checkpoints cannot change the weights under the
   index); without one, trains a seed-ae one epoch on 1,000 CIFAR-10 training images.
2. Indexes the whole CIFAR-10 JPEG folder (60,000 images, train + test) with it, once; the
   index is kept in ``--work`` and reused while the run's fingerprint matches.
3. Starts ``latentsearch serve`` in a subprocess on a free port of 127.0.0.1 (nothing else is
   ever contacted), then for each client count runs that many threads, each with its own
   keep-alive HTTP connection, sending CIFAR-10 test JPEGs to ``POST /search`` (k=10) back to
   back for ``--seconds`` after a short warm-up.
4. Records requests/s, latency percentiles, errors (anything but 200) and the server's
   resident memory, and merges them into ``benchmarks/results/search.json`` under ``"server"``
   (other keys are left as they are).

Clients and server share the machine's cores, so the numbers are a floor for a dedicated one.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from latentsearch.data import load_data  # noqa: E402
from latentsearch.index import ImageIndex, all_images  # noqa: E402
from latentsearch.index.errors import ImageIndexError  # noqa: E402
from latentsearch.runs import (  # noqa: E402
    Run,
    TrainConfig,
    checkpoints,
    load_run,
    machine_description,
)
from latentsearch.training import train  # noqa: E402

CIFAR_DIR = Path("/tmp/data/cifar10-jpeg")
TRAINED_RUN = ROOT / "runs" / "reproduce" / "seed-vanilla"
RESULTS = ROOT / "benchmarks" / "results" / "search.json"
WORK = Path("/tmp/latentsearch-bench-server")
HOST = "127.0.0.1"
SUBSET_IMAGES = 1_000
SERVER_START_TIMEOUT_S = 600.0
REQUEST_TIMEOUT_S = 120.0
SERVE = "import sys; from latentsearch.cli import main; sys.exit(main())"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ------------------------------------------------------------------------------ run + index
def _copy_trained_run(work: Path) -> tuple[Path, str] | None:
    found = checkpoints(TRAINED_RUN)
    if not found:
        return None
    newest = found[-1]
    dest = work / "run"
    copied = dest / "checkpoints" / newest.name
    if not copied.is_file():
        shutil.rmtree(dest, ignore_errors=True)
        copied.parent.mkdir(parents=True)
        shutil.copy2(newest, copied)
        if (TRAINED_RUN / "config.json").is_file():
            shutil.copy2(TRAINED_RUN / "config.json", dest / "config.json")
    return dest, f"trained run {TRAINED_RUN.relative_to(ROOT)}, {newest.name} (copied)"


def _subset_run(work: Path, folder: Path) -> tuple[Path, str]:
    """A seed-ae trained one epoch on the first CIFAR-10 training images of each class."""
    dest = work / "subset-run"
    if checkpoints(dest):
        return dest, f"seed-ae trained 1 epoch on {SUBSET_IMAGES} CIFAR-10 images"
    subset = work / "subset-images"
    shutil.rmtree(subset, ignore_errors=True)
    classes = sorted(p for p in (folder / "train").iterdir() if p.is_dir())
    per_class = SUBSET_IMAGES // len(classes)
    for c in classes:
        (subset / c.name).mkdir(parents=True)
        for f in sorted(c.iterdir())[:per_class]:
            (subset / c.name / f.name).symlink_to(f)
    log(f"no trained CIFAR-10 run: training seed-ae 1 epoch on {SUBSET_IMAGES} images")
    config = TrainConfig(data=str(subset), model="seed-ae", epochs=1, image_size=32)
    train(config, dest, progress=False)
    return dest, f"seed-ae trained 1 epoch on {SUBSET_IMAGES} CIFAR-10 images"


def prepare(work: Path, folder: Path) -> tuple[Path, Path, str]:
    """The run folder, the index folder (built when missing or stale) and a model note."""
    work.mkdir(parents=True, exist_ok=True)
    found = _copy_trained_run(work)
    run_path, note = found if found is not None else _subset_run(work, folder)
    run: Run = load_run(run_path)
    index_path = work / "cifar10.index"
    try:
        ImageIndex.load(index_path).check_compatible(run)
        log(f"reusing {index_path}")
    except ImageIndexError:
        log(f"indexing {folder} with {note}")
        t0 = time.perf_counter()
        data = all_images(load_data(str(folder), image_size=run.model.image_size))
        ImageIndex.build(run, data, data_spec=str(folder)).save(index_path)
        log(f"indexed {len(data)} images in {time.perf_counter() - t0:.0f}s")
    return run_path, index_path, note


# ------------------------------------------------------------------------------ server
class Server:
    """``latentsearch serve`` in a subprocess on a free port of 127.0.0.1."""

    def __init__(self, index: Path, run: Path, threads: int) -> None:
        cmd = [sys.executable, "-c", SERVE, "serve", str(index), "--run", str(run)]
        cmd += ["--host", HOST, "--port", "0", "--log-level", "warning"]
        cmd += ["--threads", str(threads)]
        env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
        t0 = time.perf_counter()
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
        )
        self.url = self._wait_for_url()
        self.startup_seconds = time.perf_counter() - t0
        self._drain = threading.Thread(target=self._forward_output, daemon=True)
        self._drain.start()

    def _wait_for_url(self) -> str:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        lines = []
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            match = re.search(r"at (http://127\.0\.0\.1:\d+)/", line)
            if match:
                return match.group(1)
        self.stop()
        raise SystemExit("the server did not start:\n" + "".join(lines))

    def _forward_output(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            print(f"  server: {line}", end="", flush=True)

    def memory(self) -> dict[str, int]:
        """VmRSS and VmHWM (peak) of the server process, bytes."""
        out = {}
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0]) * 1024
        return out

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# ------------------------------------------------------------------------------ load
Query = tuple[str, str, bytes]
"""A query image: its id in the index (the path under the folder), its file name, its bytes."""

Record = tuple[float, float, int, float | None, str | None, str]
"""One request: start, seconds, status, server ms, error, kind (``upload`` or ``lookup``)."""


def read_queries(folder: Path, limit: int) -> list[Query]:
    """Up to ``limit`` CIFAR-10 test JPEGs, spread over the classes (all of them indexed)."""
    files = sorted((folder / "test").glob("*/*.jpg"))
    rng = np.random.default_rng(0)
    pick = rng.permutation(len(files))[:limit]
    return [
        (files[i].relative_to(folder).as_posix(), files[i].name, files[i].read_bytes())
        for i in pick
    ]


def is_lookup(i: int, lookup_share: float) -> bool:
    """Whether request ``i`` of a client is an id lookup: ``lookup_share`` of them, spread out."""
    return int((i + 1) * lookup_share) > int(i * lookup_share)


def client_loop(
    url: str,
    queries: list[Query],
    k: int,
    start_at: int,
    record_from: float,
    stop_at: float,
    out: list[Record],
    lookup_share: float = 0.0,
) -> None:
    """Sends requests back to back: uploads to ``POST /search`` and, ``lookup_share`` of them,
    ``GET /items/{id}/neighbors`` of an indexed id; appends a :data:`Record` for each."""
    i = start_at
    with httpx.Client(base_url=url, timeout=REQUEST_TIMEOUT_S) as client:
        while (now := time.perf_counter()) < stop_at:
            item_id, name, data = queries[i % len(queries)]
            kind = "lookup" if is_lookup(i, lookup_share) else "upload"
            i += 1
            status, server_ms, error = 0, None, None
            try:
                if kind == "lookup":
                    r = client.get(f"/items/{item_id}/neighbors", params={"k": k})
                else:
                    r = client.post(
                        "/search", files={"image": (name, data, "image/jpeg")}, data={"k": str(k)}
                    )
                status = r.status_code
                if status == 200:
                    server_ms = float(r.json()["milliseconds"])
                else:
                    error = r.text[:200]
            except httpx.HTTPError as e:
                error = f"{type(e).__name__}: {e}"
            if now >= record_from:
                out.append((now, time.perf_counter() - now, status, server_ms, error, kind))


def _latencies(records: list[Record], wall: float) -> dict[str, Any]:
    """Requests/s and latency percentiles (ms) of some records."""
    ok = [r for r in records if r[2] == 200]
    latencies_ms = np.array([r[1] * 1000.0 for r in records]) if records else np.zeros(1)
    server_ms = np.array([r[3] for r in ok if r[3] is not None]) if ok else np.zeros(1)
    return {
        "requests": len(records),
        "ok": len(ok),
        "requests_per_second": len(ok) / wall,
        "latency_ms": {
            "mean": float(latencies_ms.mean()),
            "p50": float(np.percentile(latencies_ms, 50)),
            "p95": float(np.percentile(latencies_ms, 95)),
            "p99": float(np.percentile(latencies_ms, 99)),
            "max": float(latencies_ms.max()),
        },
        "server_work_ms": {  # decode + embed + search inside the server, per request
            "p50": float(np.percentile(server_ms, 50)),
            "p95": float(np.percentile(server_ms, 95)),
        },
    }


def load_phase(
    server: Server,
    queries: list[Query],
    *,
    clients: int,
    seconds: float,
    warmup: float,
    k: int,
    lookup_share: float = 0.0,
) -> dict[str, Any]:
    """``clients`` concurrent clients for ``warmup`` + ``seconds``; statistics of the latter,
    overall and (with lookups mixed in) per kind of request."""
    t0 = time.perf_counter()
    record_from, stop_at = t0 + warmup, t0 + warmup + seconds
    records: list[Record] = []
    rss: list[int] = []
    threads = [
        threading.Thread(
            target=client_loop,
            args=(server.url, queries, k, c * 997, record_from, stop_at, records, lookup_share),
        )
        for c in range(clients)
    ]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        if time.perf_counter() >= record_from:
            rss.append(server.memory()["VmRSS"])
        time.sleep(0.25)
    for t in threads:
        t.join()
    wall = time.perf_counter() - record_from
    errors = [r for r in records if r[2] != 200]
    phase: dict[str, Any] = {
        "clients": clients,
        "lookup_share": lookup_share,
        "seconds": wall,
        **_latencies(records, wall),
        "errors": len(errors),
        "error_kinds": dict(Counter((r[4] or "")[:80] for r in errors).most_common(5)),
        "statuses": {str(s): n for s, n in sorted(Counter(r[2] for r in records).items())},
        "server_rss_bytes_peak_sampled": max(rss, default=0),
    }
    if lookup_share > 0:
        phase["by_kind"] = {
            kind: _latencies([r for r in records if r[5] == kind], wall)
            for kind in ("upload", "lookup")
        }
    return phase


# ------------------------------------------------------------------------------ main
def merge_results(path: Path, key: str, value: Any) -> None:
    """Writes ``value`` under ``key`` of the JSON file, keeping every other key."""
    results = json.loads(path.read_text()) if path.is_file() else {}
    results[key] = value
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp-server")
    tmp.write_text(json.dumps(results, indent=2) + "\n")
    os.replace(tmp, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", default="1,8", help="comma-separated client counts")
    parser.add_argument("--seconds", type=float, default=30.0, help="measured time per count")
    parser.add_argument("--warmup", type=float, default=3.0, help="unmeasured time first")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--queries", type=int, default=2_000, help="distinct test images sent")
    parser.add_argument(
        "--threads", type=int, default=1, help="the server's --threads (torch + FAISS)"
    )
    parser.add_argument("--data", type=Path, default=CIFAR_DIR)
    parser.add_argument("--work", type=Path, default=WORK, help="run copy and index kept here")
    parser.add_argument(
        "--lookup-share",
        type=float,
        default=0.0,
        help="share of requests that are GET /items/{id}/neighbors of an indexed id instead "
        "of uploads (0: uploads only)",
    )
    parser.add_argument("--key", default="server", help="the results file's key to write")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if not 0.0 <= args.lookup_share <= 1.0:
        raise SystemExit(f"--lookup-share must be within [0, 1], got {args.lookup_share}")
    counts = [int(c) for c in args.clients.split(",") if c.strip()]
    if not (args.data / "test").is_dir():
        raise SystemExit(f"need the CIFAR-10 JPEG folder at {args.data} (train/ and test/)")

    started = time.perf_counter()
    load_at_start = list(os.getloadavg())
    run_path, index_path, note = prepare(args.work, args.data)
    queries = read_queries(args.data, args.queries)
    log(f"starting the server over {index_path}")
    server = Server(index_path, run_path, args.threads)
    try:
        idle = server.memory()
        log(f"server up at {server.url} in {server.startup_seconds:.1f}s, RSS {idle['VmRSS']:,}")
        health = httpx.get(f"{server.url}/health", timeout=REQUEST_TIMEOUT_S).json()
        phases = []
        for clients in counts:
            log(f"{clients} client(s) for {args.warmup:g} + {args.seconds:g} s")
            phase = load_phase(
                server,
                queries,
                clients=clients,
                seconds=args.seconds,
                warmup=args.warmup,
                k=args.k,
                lookup_share=args.lookup_share,
            )
            for kind, part in [("all", phase), *phase.get("by_kind", {}).items()]:
                lat = part["latency_ms"]
                log(
                    f"  {kind}: {part['requests_per_second']:.1f} req/s, p50 {lat['p50']:.0f} ms, "
                    f"p95 {lat['p95']:.0f} ms, p99 {lat['p99']:.0f} ms"
                )
            log(f"  {phase['errors']} errors")
            phases.append(phase)
        final = server.memory()
    finally:
        server.stop()

    result = {
        "what": "POST /search (multipart JPEG upload, k=10) and, a share `lookup_share` of "
        "them, GET /items/{id}/neighbors?k=10 of indexed ids, against `latentsearch serve` on "
        "127.0.0.1; each client is a thread with its own keep-alive connection sending "
        "requests back to back",
        "index": {
            "images": health["items"],
            "index_type": health["index_type"],
            "model": note,
            "image_size": health["image_size"],
            "embedding_dim": health["embedding_dim"],
        },
        "queries": f"{len(queries)} CIFAR-10 test JPEGs (32x32, also in the index)",
        "k": args.k,
        "server_threads_per_request": args.threads,
        "server_log_level": "warning (no access log)",
        "server_startup_seconds": server.startup_seconds,
        "server_rss_bytes_idle": idle["VmRSS"],
        "server_rss_bytes_peak": final["VmHWM"],
        "phases": phases,
        # What else held the cores is in the load averages; the clients always share them.
        "machine": machine_description() + ", no GPU (clients run on the same machine)",
        "python": platform.python_version(),
        "httpx": httpx.__version__,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "load_average_at_start": load_at_start,
        "load_average_at_end": list(os.getloadavg()),
        "total_seconds": time.perf_counter() - started,
    }
    merge_results(args.out, args.key, result)
    log(f"wrote the {args.key!r} key of {args.out}")


if __name__ == "__main__":
    main()
