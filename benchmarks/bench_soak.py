"""Soak test of ``latentsearch serve``: mixed good and bad uploads over loopback, for a while.

Run from the project root, politely on a shared machine:

    nice -n 10 python benchmarks/bench_soak.py --run RUN_FOLDER
    nice -n 10 python benchmarks/bench_soak.py --run RUN_FOLDER --seconds 300 --clients 8

What it does:

1. Writes a folder of ``--images`` random PNG files in ``--work`` and indexes it with the run
   (embedding only, nothing is trained).
2. Starts ``latentsearch serve`` in a subprocess on a free port of 127.0.0.1 (nothing else is
   ever contacted).
3. ``--clients`` threads, each with its own keep-alive connection, send for ``--seconds``
   a mix of requests: good PNG and JPEG uploads, large images (``--big-side`` pixels square,
   decoded reduced), garbage bytes, truncated files, decompression-bomb headers, empty and
   over-limit uploads, and GETs of ``/random``, ``/items/{id}/image`` and unknown ids.
4. Samples the server's resident memory (``/proc/<pid>/status``) throughout: before any
   request, after the warm-up (the first ``--warmup`` seconds) and at the end; counts the
   answers by status, and writes ``benchmarks/results/soak.json``.

The promise checked: zero 5xx, and memory after the run within a small margin of memory
after warm-up (flat, not growing with the number of requests). Linux only (reads /proc).
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import random
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "soak.json"
BOUNDARY = "soakboundary7d1f"


def rss_mib(pid: int) -> float:
    """Resident memory of a process, in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def encode(img: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def bomb_header(side: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    ihdr = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    idat = chunk(b"IDAT", zlib.compress(b"\0" * 64))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + idat + chunk(b"IEND", b"")


def payloads(big_side: int, seed: int = 0) -> dict[str, bytes]:
    """The upload kinds, by name."""
    rng = np.random.default_rng(seed)
    photo = Image.fromarray(rng.integers(0, 256, (96, 128, 3), dtype=np.uint8))
    good_png = encode(photo, "PNG")
    # A big image that compresses well: cheap to send, costly to decode.
    big = Image.new("P", (big_side, big_side), 3)
    big.putpalette([int(v) for v in rng.integers(0, 256, 768)])
    return {
        "png": good_png,
        "jpeg": encode(photo, "JPEG"),
        "big": encode(big, "PNG"),
        "garbage": rng.integers(0, 256, 4000, dtype=np.uint8).tobytes(),
        "truncated": good_png[: len(good_png) // 2],
        "bomb": bomb_header(60_000),
        "empty": b"",
        "oversized": b"\0" * (11 * 1024 * 1024),
    }


def multipart(data: bytes) -> bytes:
    head = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="image"; filename="q"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    return head + data + f"\r\n--{BOUNDARY}--\r\n".encode()


def make_index(run: str, work: Path, n_images: int) -> Path:
    from latentsearch.data import load_data
    from latentsearch.index import ImageIndex, all_images
    from latentsearch.runs import load_run

    loaded = load_run(run)
    folder = work / "images"
    rng = np.random.default_rng(1)
    for i in range(n_images):
        path = folder / f"{i // 50:02d}" / f"{i:05d}.png"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(path)
    data = all_images(
        load_data(str(folder), image_size=loaded.model.image_size, cache_dir=work / "cache")
    )
    index = ImageIndex.build(loaded, data, data_spec=str(folder))
    return index.save(work / "soak.index")


def client(
    port: int, stop: float, bodies: dict[str, bytes], ids: list[str], seed: int, out: Counter[str]
) -> None:
    rng = random.Random(seed)
    kinds = [*bodies, "random", "image", "unknown"]
    weights = [6, 4, 1, 2, 2, 1, 1, 1, 3, 2, 1]
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    while time.monotonic() < stop:
        kind = rng.choices(kinds, weights)[0]
        try:
            if kind in bodies:
                conn.request(
                    "POST",
                    "/search?k=5",
                    body=multipart(bodies[kind]),
                    headers={"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"},
                )
            elif kind == "random":
                conn.request("GET", "/random?k=5")
            elif kind == "image":
                conn.request("GET", f"/items/{rng.choice(ids)}/image")
            else:
                conn.request("GET", "/items/no/such/id.png/image")
            r = conn.getresponse()
            r.read()
            out[f"{kind}:{r.status}"] += 1
            if r.getheader("connection", "").lower() == "close":
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        except (OSError, http.client.HTTPException) as e:
            out[f"{kind}:error:{type(e).__name__}"] += 1
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    conn.close()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--run", required=True, help="a trained run folder (nothing is trained)")
    p.add_argument("--work", default=str(ROOT / "benchmarks" / "work" / "soak"))
    p.add_argument("--images", type=int, default=300, help="images in the index (default 300)")
    p.add_argument("--seconds", type=float, default=180.0, help="length of the run (default 180)")
    p.add_argument("--warmup", type=float, default=15.0, help="warm-up seconds (default 15)")
    p.add_argument("--clients", type=int, default=4, help="concurrent clients (default 4)")
    p.add_argument("--big-side", type=int, default=6000, help="side of the big uploads (6000)")
    p.add_argument("--out", default=str(RESULTS))
    args = p.parse_args()

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    index = make_index(args.run, work, args.images)
    ids = [it["id"] for it in json.loads((index / "manifest.json").read_text())["items"]]
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "LATENTSEARCH_CACHE": str(work / "cache")}
    launch = "import sys; from latentsearch.cli import main; sys.exit(main())"
    cmd = [sys.executable, "-c", launch, "serve", str(index), "--run", args.run]
    cmd += ["--port", str(port), "--log-level", "warning"]
    server = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("the server did not start") from None
                time.sleep(0.2)
        rss_start = rss_mib(server.pid)
        bodies = payloads(args.big_side)
        counts: Counter[str] = Counter()
        samples: list[tuple[float, float]] = []
        t0 = time.monotonic()
        stop = t0 + args.seconds
        threads = [
            threading.Thread(target=client, args=(port, stop, bodies, ids, i, counts))
            for i in range(args.clients)
        ]
        for t in threads:
            t.start()
        rss_warm = None
        while any(t.is_alive() for t in threads):
            now = time.monotonic() - t0
            samples.append((round(now, 1), rss_mib(server.pid)))
            if rss_warm is None and now >= args.warmup:
                rss_warm = samples[-1][1]
            time.sleep(0.5)
        for t in threads:
            t.join()
        time.sleep(1.0)  # let the last frees settle
        rss_end = rss_mib(server.pid)
    finally:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
    statuses = Counter()
    for key, n in counts.items():
        statuses[key.split(":", 1)[1]] += n
    five_xx = sum(n for s, n in statuses.items() if s.isdigit() and int(s) >= 500)
    errors = sum(n for s, n in statuses.items() if not s.isdigit())
    result: dict[str, Any] = {
        "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(sys.argv),
        "seconds": args.seconds,
        "warmup_seconds": args.warmup,
        "clients": args.clients,
        "indexed_images": len(ids),
        "big_side": args.big_side,
        "requests": sum(counts.values()),
        "by_kind_and_status": dict(sorted(counts.items())),
        "by_status": dict(sorted(statuses.items())),
        "status_5xx": five_xx,
        "connection_errors": errors,
        "rss_mib": {
            "start": round(rss_start, 1),
            "after_warmup": None if rss_warm is None else round(rss_warm, 1),
            "peak": round(max(v for _, v in samples), 1) if samples else None,
            "end": round(rss_end, 1),
        },
        "rss_samples": samples[:: max(1, len(samples) // 120)],
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "rss_samples"}, indent=1))
    return 1 if five_xx or errors else 0


if __name__ == "__main__":
    sys.exit(main())
