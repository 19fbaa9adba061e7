"""Where `latentsearch index` spends its time: each stage alone, in one process.

Times, on the same folder (default: the 10,000 CIFAR-10 test JPEGs) and run as
``bench_scale_index_build.py`` (an untrained seed-ae unless ``--run``):

- start-up: a fresh ``python -c "import latentsearch.cli, torch"`` (what every command pays);
- listing the folder (``list_image_folder``);
- decoding every file in this process (``decode_files``: Pillow, resize, SHA-256), one core;
- hashing alone (``hash_files``);
- embedding the decoded pixels with all threads, per precision (``embed_images``);
- building the FAISS index and saving it (``ImageIndex.from_embeddings`` + ``save``).

From these it derives the fastest the whole command could be on this machine if decoding ran
perfectly in parallel with embedding on the same cores, which says whether a target is a
matter of overlap or of work. Results merge into ``benchmarks/results/scale.json`` under
``index_stages``.

    python benchmarks/bench_index_stages.py
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_scale_index_build import _merge_results, _untrained_run


def _best(fn: Any, repeat: int) -> tuple[float, Any]:
    """The fastest of ``repeat`` calls (seconds) and the last result."""
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main() -> None:
    """Times each stage and merges the figures into the results file."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", default=None, help="run folder (default: an untrained seed-ae)")
    ap.add_argument("--folder", default="/tmp/data/cifar10-jpeg/test", type=Path)
    ap.add_argument("--precisions", nargs="+", default=["fp32", "bf16"])
    ap.add_argument("--repeat", type=int, default=3, help="take the fastest of this many")
    ap.add_argument("--out", default="benchmarks/results/scale.json", type=Path)
    args = ap.parse_args()

    import torch

    from latentsearch.data.folder import decode_files, hash_files, list_image_folder
    from latentsearch.embedding import embed_images
    from latentsearch.index import ImageIndex, IndexSpec
    from latentsearch.index.items import ItemTableBuilder
    from latentsearch.precision import resolve_precision
    from latentsearch.runs import load_run, machine_description

    load = [round(os.getloadavg()[0], 2)]
    startup, _ = _best(
        lambda: subprocess.run(
            [sys.executable, "-c", "import latentsearch.cli, torch"], check=True
        ),
        args.repeat,
    )
    with tempfile.TemporaryDirectory(prefix="bench-index-stages-") as tmp:
        run = load_run(Path(args.run) if args.run else _untrained_run(Path(tmp) / "run"))
        size = run.model.image_size
        list_s, listing = _best(lambda: list_image_folder(args.folder), args.repeat)
        files = [f for split in listing.splits for f in split.files]
        paths = [f.path for f in files]
        n = len(paths)
        decode_s, decoded = _best(lambda: decode_files(paths, size), args.repeat)
        hash_s, _ = _best(lambda: hash_files(paths), args.repeat)
        embed: dict[str, dict[str, float]] = {}
        vectors = None
        for precision in args.precisions:
            p = resolve_precision(precision, torch.device("cpu"))
            seconds, vectors = _best(
                lambda p=p: embed_images(run.model, decoded.pixels, precision=p), args.repeat
            )
            embed[precision] = {
                "seconds": round(seconds, 3),
                "images_per_second": round(n / seconds, 1),
                "precision_used": p,
            }
        assert vectors is not None

        def build_and_save() -> None:
            items = ItemTableBuilder()
            for f, sha in zip(files, decoded.sha256, strict=True):
                items.add(f.id, f.path, f.label, sha)
            index = ImageIndex.from_embeddings(
                run,
                vectors,
                items.build(),
                class_names=listing.class_names,
                source="bench",
                spec=IndexSpec(),
            )
            index.save(Path(tmp) / "i.index")

        index_s, _ = _best(build_and_save, args.repeat)
    load.append(round(os.getloadavg()[0], 2))

    cores = os.cpu_count() or 1
    fastest_embed = min(e["seconds"] for e in embed.values())
    # Decoding and embedding share the cores: at best their CPU time is spread over all of
    # them (embedding already uses every core, so its seconds are its CPU time / cores).
    overlapped = (decode_s + fastest_embed * cores) / cores
    bound = startup + list_s + overlapped + index_s
    section = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_description(),
        "cores": cores,
        "torch_threads": torch.get_num_threads(),
        "run": "untrained seed-ae (32x32 RGB)" if args.run is None else str(args.run),
        "folder": str(args.folder),
        "images": n,
        "repeat": f"fastest of {args.repeat}",
        "startup_s": round(startup, 3),
        "list_s": round(list_s, 3),
        "decode_one_core_s": round(decode_s, 3),
        "decode_one_core_images_per_second": round(n / decode_s, 1),
        "hash_only_s": round(hash_s, 3),
        "embed": embed,
        "index_and_save_s": round(index_s, 3),
        "best_case_whole_command_s": round(bound, 3),
        "best_case_whole_command_images_per_second": round(n / bound, 1),
        "load_average_1min": load,
        "note": (
            "best case = start-up + listing + (decode CPU time + fastest embedding CPU time) "
            "spread over every core + index and save: what the command would take with "
            "perfect overlap and no hand-off cost"
        ),
    }
    print(json.dumps(section, indent=2))
    _merge_results(args.out, "index_stages", section)


if __name__ == "__main__":
    main()
