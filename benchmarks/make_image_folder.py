"""Writes a built-in data source as an image folder (``train/<class>/*.png``, ``test/<class>``).

The small-collection rows of ``results/beyond.json`` train on folders made by this script, so
that they go through the folder loader a user's images take (grey PNGs decode to three equal
channels at 32 px):

    python benchmarks/make_image_folder.py digits /tmp/digits-png
    python benchmarks/make_image_folder.py fashion-mnist /tmp/fmnist2k-png --per-class 200
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

from latentsearch.data import load_data
from latentsearch.data.base import ImageData


def write_split(
    data: ImageData, folder: Path, per_class: int | None, rng: np.random.Generator
) -> int:
    """Writes one split's images as PNGs, one folder per class; all, or ``per_class`` of each.

    Args:
        data: The split. Pixels shape: (N, H, W, C), uint8, C = 1 or 3.
        folder: Where ``<class>/<index>.png`` go.
        per_class: Images drawn (without replacement) from each class; None writes all.
        rng: Draws the images (one generator for both splits, in order: train, test).

    Returns:
        Images written.
    """
    written = 0
    for k, name in enumerate(data.class_names):
        idx = np.flatnonzero(data.labels == k)
        if per_class is not None:
            if per_class > len(idx):
                raise SystemExit(f"class {name!r} has {len(idx)} images, fewer than {per_class}")
            idx = np.sort(rng.choice(idx, per_class, replace=False))
        (folder / name).mkdir(parents=True, exist_ok=True)
        for i in idx:
            px = data.pixels[i]
            Image.fromarray(px[..., 0] if px.shape[-1] == 1 else px).save(
                folder / name / f"{i:05d}.png"
            )
        written += len(idx)
    return written


def main() -> None:
    """Parses the command line and writes both splits."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("data", help="a built-in data source: digits, fashion-mnist, cifar10, ...")
    ap.add_argument("out", type=Path, help="the folder to write (must not exist)")
    ap.add_argument("--per-class", type=int, default=None, help="images per class and split")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.out.exists():
        ap.error(f"{args.out} exists; choose a new folder")
    splits = load_data(args.data)
    rng = np.random.default_rng(args.seed)
    for name in ("train", "test"):
        n = write_split(getattr(splits, name), args.out / name, args.per_class, rng)
        print(f"{args.out / name}: {n} images")


if __name__ == "__main__":
    main()
