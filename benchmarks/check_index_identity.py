"""Builds and updates indexes of one tiny folder every way the project can, for comparing code.

Run it with two versions of the code (e.g. ``git archive`` of an old commit on
``PYTHONPATH``) on the same run and the same ``OUT`` (manifests hold paths), moving
``OUT/result`` aside in between, then compare: the embeddings, FAISS files and manifests
(with their timestamps blanked) must be byte-identical::

    python benchmarks/check_index_identity.py RUN OUT && mv OUT/result A  # once per version
    python benchmarks/check_index_identity.py --compare A B

``RUN`` is a run taking 8×8 colour images (``--train`` makes it first). ``OUT`` is emptied.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import shutil
import sys
from pathlib import Path

import numpy as np
from PIL import Image

TINTS = {"blue": (0, 0, 1), "green": (0, 1, 0), "red": (1, 0, 0)}
COMPARED = ("embeddings.npy", "index.faiss", "manifest.json")


def _image(path: Path, seed: int, tint: tuple[int, int, int], fmt: str = "PNG") -> None:
    rng = np.random.default_rng(seed)
    pixels = np.clip(rng.integers(0, 120, (20, 20, 3)) + np.array(tint) * 130, 0, 255)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels.astype(np.uint8)).save(path, format=fmt)


def _folder(root: Path) -> Path:
    for c, (name, tint) in enumerate(TINTS.items()):
        for i in range(40):
            fmt = "JPEG" if i % 3 == 2 else "PNG"
            _image(root / name / f"{i:02d}.{fmt.lower()}", 100 * c + i, tint, fmt)
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), (9, 9, 9)).save(buf, format="JPEG")
    (root / "red" / "broken.jpg").write_bytes(buf.getvalue()[:40])
    return root


def _change(root: Path) -> None:
    """One file added, one changed, one removed."""
    _image(root / "blue" / "new.png", 999, (0, 0, 1))
    _image(root / "green" / "03.png", 998, (0, 1, 0))
    (root / "red" / "04.png").unlink()


def _keep(index: Path, dest: Path) -> None:
    dest.mkdir(parents=True)
    for name in COMPARED:
        if (index / name).is_file():
            shutil.copyfile(index / name, dest / name)
    manifest = json.loads((dest / "manifest.json").read_text())
    manifest["created"] = manifest["updated"] = None  # the only fields that tell the time
    (dest / "manifest.json").write_text(json.dumps(manifest, indent=1))


def _build(run_dir: Path, out: Path) -> None:
    from latentsearch.cli import main
    from latentsearch.data import load_data
    from latentsearch.index import ImageIndex, all_images
    from latentsearch.runs import load_run

    run = load_run(run_dir)
    images = _folder(out / "images")
    result = out / "result"
    for kind in ("auto", "hnsw"):
        index = out / f"cli-{kind}.index"  # streamed by the index command
        argv = [str(run_dir), str(images), "--out", str(index), "--workers", "0"]
        assert main(["index", *argv, "--index-type", kind, "--json"]) == 0
        _keep(index, result / f"cli-{kind}")
    run_size = run.model.image_size
    memory = out / "memory.index"  # in memory, as `up` indexes the folder it trained on
    data = all_images(load_data(str(images), image_size=run_size))
    ImageIndex.build(run, data, data_spec=str(images)).save(memory)
    _keep(memory, result / "memory")
    arrays = out / "arrays.index"  # images without files, like digits: nothing to hash
    fileless = dataclasses.replace(data, paths=None, sha256=None)
    ImageIndex.build(run, fileless, index_type="hnsw").save(arrays)
    _keep(arrays, result / "arrays")

    _change(images)
    assert main(["index", str(run_dir), str(images), "--update", str(out / "cli-auto.index"),
                 "--workers", "0", "--json"]) == 0  # fmt: skip
    _keep(out / "cli-auto.index", result / "cli-auto-updated")
    index = ImageIndex.load(memory)
    index.update(run, all_images(load_data(str(images), image_size=run_size)), data_spec="x")
    index.save(memory)
    _keep(memory, result / "memory-updated")
    index = ImageIndex.load(arrays)
    index.update(run, dataclasses.replace(fileless, pixels=fileless.pixels[::-1].copy()))
    index.save(arrays)
    _keep(arrays, result / "arrays-updated")


def _train(run_dir: Path) -> None:
    from latentsearch.data import load_data
    from latentsearch.runs import TrainConfig
    from latentsearch.training import train

    images = _folder(run_dir.with_name(run_dir.name + ".images"))
    config = TrainConfig(data=str(images), model="seed-ae", epochs=1, image_size=8, batch_size=8)
    train(config, run_dir, progress=False, data=load_data(str(images), image_size=8))


def _compare(a: Path, b: Path) -> int:
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    theirs = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    if files != theirs:
        print(f"different files: {files} vs {theirs}")
        return 1
    bad = [f for f in files if (a / f).read_bytes() != (b / f).read_bytes()]
    for f in files:
        print(f"{'DIFFERENT' if f in bad else 'identical'}  {f}")
    return 1 if bad else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--train", action="store_true", help="train RUN first")
    parser.add_argument("--compare", action="store_true", help="compare two result folders")
    parser.add_argument("first", type=Path)
    parser.add_argument("second", type=Path)
    args = parser.parse_args()
    if args.compare:
        return _compare(args.first, args.second)
    if args.train:
        _train(args.first)
    shutil.rmtree(args.second, ignore_errors=True)
    _build(args.first, args.second)
    return 0


if __name__ == "__main__":
    sys.exit(main())
