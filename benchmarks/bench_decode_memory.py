"""Peak memory of ``latentsearch serve`` under a flood of small files that decode big.

Run from the project root, politely on a shared machine:

    nice -n 10 python benchmarks/bench_decode_memory.py --label after

What it does:

1. Writes a folder of 24 small random PNG files in ``--work`` (emptied first), trains a
   seed-ae one epoch on it (32 px) and indexes the folder with it (seconds).
2. Crafts the uploads of issue 38 (item 4): a 16-bit grey PNG and a 32-bit float TIFF, both
   6,300 x 6,300 (39.7 Mpx, under the server's 40-Mpx limit) and both tiny on the wire
   (zeros compress well), plus a small ordinary PNG.
3. Starts ``latentsearch serve`` in a subprocess on a free port of 127.0.0.1 (nothing else is
   ever contacted, default limits), then for each crafted file: ``--clients`` threads upload
   it ``--rounds`` times each while one more thread uploads the small PNG back to back.
4. Reads the server's peak resident memory (``VmHWM`` in ``/proc/<pid>/status``, reset
   before each flood through ``/proc/<pid>/clear_refs``) after each flood, counts the answers
   by status, records the small uploads' latencies and the machine's load, and merges the
   figures under ``--label`` into ``benchmarks/results/decode_memory.json``.
5. ``--part index``: runs ``latentsearch index`` on the folder plus two sparse 1 GiB files
   that are no images, sampling the resident memory of its process tree (decode workers
   included) every 50 ms, and records the peaks under ``--label`` too.

Linux only (reads /proc).
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

RESULTS = ROOT / "benchmarks" / "results" / "decode_memory.json"
BOUNDARY = "decodememoryboundary"
SIDE = 6300


def status_mib(pid: int, field: str) -> float:
    """A memory figure of ``/proc/<pid>/status`` (``VmRSS``, ``VmHWM``), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def encode(img: Image.Image, fmt: str, **kwargs: Any) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def crafted() -> dict[str, bytes]:
    """The uploads, by name."""
    rng = np.random.default_rng(0)
    grey16 = Image.fromarray(np.zeros((SIDE, SIDE), dtype=np.uint16))
    floats = Image.fromarray(np.zeros((SIDE, SIDE), dtype=np.float32))
    small = Image.fromarray(rng.integers(0, 256, (96, 128, 3), dtype=np.uint8))
    return {
        "png16": encode(grey16, "PNG", optimize=True),
        "float_tiff": encode(floats, "TIFF", compression="tiff_adobe_deflate"),
        "small": encode(small, "PNG"),
    }


def multipart(data: bytes) -> bytes:
    head = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="image"; filename="q"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    return head + data + f"\r\n--{BOUNDARY}--\r\n".encode()


def post(conn: http.client.HTTPConnection, data: bytes) -> int:
    conn.request(
        "POST",
        "/search?k=3",
        body=multipart(data),
        headers={"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"},
    )
    r = conn.getresponse()
    r.read()
    return r.status


def make_index(work: Path) -> tuple[Path, Path]:
    from latentsearch.data import load_data
    from latentsearch.index import ImageIndex, all_images
    from latentsearch.runs import TrainConfig
    from latentsearch.training import train

    folder = work / "images"
    rng = np.random.default_rng(1)
    for i in range(24):
        path = folder / f"{i:03d}.png"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(path)
    splits = load_data(str(folder), image_size=32, cache_dir=work / "cache")
    config = TrainConfig(data=str(folder), model="seed-ae", epochs=1, image_size=32, batch_size=8)
    run = train(config, work / "run", progress=False, data=splits)
    index = ImageIndex.build(run, all_images(splits), data_spec=str(folder))
    return index.save(work / "tiny.index"), run.path


def flood(port: int, data: bytes, small: bytes, clients: int, rounds: int) -> dict[str, Any]:
    """``clients`` threads upload ``data`` ``rounds`` times each; one thread uploads ``small``."""
    statuses: Counter[str] = Counter()
    latencies: list[float] = []
    done = threading.Event()

    def big_client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
        for _ in range(rounds):
            try:
                statuses[str(post(conn, data))] += 1
            except (OSError, http.client.HTTPException) as e:
                statuses[f"error:{type(e).__name__}"] += 1
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
        conn.close()

    def small_client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
        while not done.is_set():
            started = time.perf_counter()
            status = post(conn, small)
            latencies.append(time.perf_counter() - started)
            statuses[f"small:{status}"] += 1
        conn.close()

    threads = [threading.Thread(target=big_client) for _ in range(clients)]
    watcher = threading.Thread(target=small_client)
    started = time.perf_counter()
    watcher.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    done.set()
    watcher.join()
    lat = np.array(latencies) if latencies else np.array([float("nan")])
    return {
        "seconds": round(time.perf_counter() - started, 1),
        "statuses": dict(sorted(statuses.items())),
        "small_upload_s": {
            "n": len(latencies),
            "median": round(float(np.median(lat)), 3),
            "max": round(float(lat.max()), 3),
        },
    }


def tree_rss_mib(pid: int) -> tuple[float, float]:
    """Resident memory of a process and its descendants: (largest one, sum), in MiB."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    todo, sizes = [pid], []
    while todo:
        current = todo.pop()
        todo.extend(children.get(current, []))
        try:
            sizes.append(status_mib(current, "VmRSS"))
        except OSError:
            continue
    return max(sizes, default=0.0), sum(sizes)


def index_memory(work: Path, run: Path, env: dict[str, str]) -> dict[str, Any]:
    """Peak memory of ``latentsearch index`` over the folder plus two 1 GiB non-images."""
    folder = work / "images"
    for i in (1, 2):
        with open(folder / f"video{i}.mp4", "wb") as f:
            f.write(b"\0\0\0\x18ftypmp42")
            f.truncate(1 << 30)  # sparse: nothing is written to disk
    launch = "import sys; from latentsearch.cli import main; sys.exit(main())"
    cmd = [sys.executable, "-c", launch, "index", str(run), str(folder)]
    cmd += ["--out", str(work / "with-videos.index")]
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    one = total = 0.0
    while proc.poll() is None:
        largest, summed = tree_rss_mib(proc.pid)
        one, total = max(one, largest), max(total, summed)
        time.sleep(0.05)
    return {
        "returncode": proc.returncode,
        "seconds": round(time.perf_counter() - started, 1),
        "peak_rss_one_process_mib": round(one),
        "peak_rss_process_tree_mib": round(total),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--label", required=True, help="the key the figures go under (before, after)")
    p.add_argument("--work", default="/tmp/latentsearch-bench-decode-memory")
    p.add_argument("--clients", type=int, default=6, help="concurrent big uploaders (default 6)")
    p.add_argument("--rounds", type=int, default=3, help="uploads per big uploader (default 3)")
    p.add_argument("--out", default=str(RESULTS))
    p.add_argument(
        "--part", choices=["server", "index", "all"], default="all", help="what to measure"
    )
    args = p.parse_args()

    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)  # a fresh run and index each time
    work.mkdir(parents=True)
    index, run = make_index(work)
    bodies = crafted()
    port = free_port()
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "LATENTSEARCH_CACHE": str(work / "cache"),
        "PYTHONPATH": str(ROOT / "src"),
    }
    launch = "import sys; from latentsearch.cli import main; sys.exit(main())"
    cmd = [sys.executable, "-c", launch, "serve", str(index), "--run", str(run)]
    cmd += ["--port", str(port), "--log-level", "warning"]
    result: dict[str, Any] = {}
    if args.part in ("index", "all"):
        index_figures = index_memory(work, run, env)
        index_figures["date"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        index_figures["load_average_after"] = [round(v, 2) for v in os.getloadavg()]
        result["index_two_1gib_non_images"] = index_figures
        print(json.dumps(index_figures), flush=True)
    if args.part in ("server", "all"):
        result.update(serve_flood(args, cmd, env, port, bodies))
    out = Path(args.out)
    merged = json.loads(out.read_text()) if out.exists() else {}
    merged.setdefault(args.label, {}).update(result)
    out.write_text(json.dumps(merged, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


def serve_flood(
    args: argparse.Namespace,
    cmd: list[str],
    env: dict[str, str],
    port: int,
    bodies: dict[str, bytes],
) -> dict[str, Any]:
    """Serves the index and floods it with each crafted file; the figures."""
    load_before = os.getloadavg()
    server = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    result: dict[str, Any] = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
        "load_average_before": [round(v, 2) for v in load_before],
        "clients": args.clients,
        "rounds": args.rounds,
        "upload_bytes": {name: len(data) for name, data in bodies.items()},
        "side": SIDE,
    }
    try:
        deadline = time.monotonic() + 300
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("the server did not start") from None
                time.sleep(0.2)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
        assert post(conn, bodies["small"]) == 200
        conn.close()
        result["rss_after_warmup_mib"] = round(status_mib(server.pid, "VmRSS"), 1)
        result["peak_after_warmup_mib"] = round(status_mib(server.pid, "VmHWM"), 1)
        for name in ("png16", "float_tiff"):
            print(f"flooding with {name} ...", flush=True)
            # Resets VmHWM to the current RSS, so each flood has its own peak.
            Path(f"/proc/{server.pid}/clear_refs").write_text("5")
            figures = flood(port, bodies[name], bodies["small"], args.clients, args.rounds)
            figures["peak_rss_mib"] = round(status_mib(server.pid, "VmHWM"), 1)
            figures["rss_after_mib"] = round(status_mib(server.pid, "VmRSS"), 1)
            result[name] = figures
            print(json.dumps(figures), flush=True)
    finally:
        server.terminate()
        server.wait(30)
    result["load_average_after"] = [round(v, 2) for v in os.getloadavg()]
    return result


if __name__ == "__main__":
    sys.exit(main())
