"""Commands of the retrieval index: index, duplicates."""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from latentsearch.cli.common import CLIError
from latentsearch.cli.options import add_json, add_option, add_run

if TYPE_CHECKING:
    from latentsearch.data import ImageData
    from latentsearch.index import ImageIndex
    from latentsearch.index.spec import IndexSpec
    from latentsearch.index.vector_store import MilvusOptions
    from latentsearch.runs import Run


def _data_spec(spec: str) -> str:
    """A ``load_data`` spec that still works from another folder: paths become absolute."""
    from latentsearch.data import SOURCES

    return spec if spec in SOURCES else str(Path(spec).expanduser().resolve())


def _describe_type(index: ImageIndex) -> str:
    params = ", ".join(f"{k}={v}" for k, v in index.index_params.items())
    kind = "exact" if index.index_type == "flat" else "approximate"
    return f"{index.index_type} ({kind}{', ' + params if params else ''})"


# ---------------------------------------------------------------------------- index
def _milvus_options(args: argparse.Namespace, out: str | None) -> MilvusOptions:
    """The --milvus-* flags as options; the collection defaults to one named after ``out``."""
    from latentsearch.index.milvus import collection_name_for
    from latentsearch.index.vector_store import MilvusOptions

    if not args.milvus_timeout > 0:
        raise CLIError(f"--milvus-timeout must be positive, got {args.milvus_timeout}")
    return MilvusOptions(
        uri=args.milvus_uri,
        token=args.milvus_token,
        db_name=args.milvus_db,
        collection=args.milvus_collection or collection_name_for(out or "index"),
        timeout=args.milvus_timeout,
    )


def _backend(args: argparse.Namespace) -> str | MilvusOptions:
    """What --backend and the --milvus-* flags ask for: ``faiss`` or Milvus options."""
    milvus_flags = [
        flag
        for flag, value in (
            ("--milvus-uri", args.milvus_uri),
            ("--milvus-db", args.milvus_db),
            ("--milvus-collection", args.milvus_collection),
        )
        if value is not None
    ]
    if args.update:
        if args.backend is not None or milvus_flags:
            given = "--backend" if args.backend is not None else milvus_flags[0]
            raise CLIError(
                f"{given}: --update keeps the index's own backend and Milvus collection; "
                "build a new index with --out to change them"
            )
        return "faiss"  # unused: the index brings its own
    backend = args.backend or ("milvus" if milvus_flags else "faiss")
    if backend == "faiss":
        if milvus_flags:
            raise CLIError(f"{milvus_flags[0]} needs --backend milvus")
        return "faiss"
    return _milvus_options(args, args.out)


def _spec(args: argparse.Namespace, backend: str | MilvusOptions) -> IndexSpec:
    """What --index-type, --precision and the backend flags ask to build."""
    from latentsearch.index.spec import IndexSpec

    precision = {} if args.precision is None else {"precision": args.precision}
    return IndexSpec(index_type=args.index_type, backend=backend, **precision)


def _existing(args: argparse.Namespace, run: Run, spec: str) -> ImageIndex | None:
    """The index --update names, checked against the run, the images (``spec``, as
    ``_data_spec`` gives it) and --precision; None without --update."""
    from latentsearch import distributed
    from latentsearch.index import ImageIndex

    if not args.update:
        if args.force:
            raise CLIError("--force goes with --update (--out always replaces its folder)")
        return None
    if distributed.context().enabled:
        raise CLIError("--update runs in one process: start it without torchrun")
    existing = ImageIndex.load(args.update, milvus=_milvus_options(args, args.update))
    existing.check_compatible(run)  # refuse before spending time on decoding
    old = existing.data_spec
    if old is not None and _data_spec(old) != spec and not args.force:
        # An update drops every item its images lack: another folder would replace them all.
        raise CLIError(
            f"--update: {args.update} indexes {old}, not {spec}; build a new index of it with "
            "--out, or pass --force to make this index hold those images instead"
        )
    if args.precision is not None and args.precision != existing.precision:
        raise CLIError(
            f"--precision {args.precision}: --update embeds in the index's own precision "
            f"({existing.precision}), so old and new vectors match; build a new index with "
            "--out to change it"
        )
    return existing


def _images(args: argparse.Namespace, run: Run) -> str | ImageData:
    """What to index: a folder of files is streamed (decoded in workers, a chunk at a time,
    resumably); any other source is decoded here, in memory."""
    from latentsearch.data import load_data
    from latentsearch.index import all_images
    from latentsearch.index.streaming import is_image_folder

    if is_image_folder(args.images):
        if args.workers is not None and args.workers < 0:
            raise CLIError(f"--workers must be 0 or more, got {args.workers}")
        return str(args.images)
    return all_images(
        load_data(args.images, image_size=run.model.image_size, progress=not args.json)
    )


def cmd_index(args: argparse.Namespace) -> int:
    from latentsearch import distributed
    from latentsearch.index.stores import check_reachable
    from latentsearch.index.streaming import index_images, update_images
    from latentsearch.runs import load_run

    t0 = time.perf_counter()
    backend = _backend(args)
    check_reachable(backend)  # a wrong address fails in seconds, before any work
    run = load_run(args.run)
    spec = _data_spec(args.images)
    existing = _existing(args, run, spec)
    t_decode = time.perf_counter()
    images = _images(args, run)
    t_index = time.perf_counter()
    extra: dict[str, Any] = {}  # what only a build, or only an update, reports
    if existing is not None:
        # Unchanged images are only hashed; new and changed ones are decoded and embedded.
        done = update_images(
            existing, run, images, workers=args.workers, progress=not args.json, data_spec=spec
        )
        index, out, source, skipped = existing, Path(args.update), done.source, done.skipped
        t_save = time.perf_counter()
        index.save(out)
        report = done.report
        extra["update"] = {
            "added": len(report.added),
            "changed": len(report.changed),
            "removed": len(report.removed),
            "unchanged": len(report.unchanged),
            "embedded": report.embedded,
        }
    else:
        try:
            built = index_images(
                run,
                images,
                args.out,
                spec=_spec(args, backend),
                workers=args.workers,
                progress=not args.json and distributed.context().is_main,
                data_spec=spec,
            )
        finally:
            distributed.teardown()
        if built.index is None or built.path is None:
            return 0  # a rank other than 0 of a torchrun job: rank 0 reports
        index, out, source, skipped = built.index, built.path, built.source, built.skipped
        st = built.stats
        t_index += st.list_seconds + st.decode_wait_seconds
        t_save = t_index + st.embed_seconds + st.merge_seconds
        extra["streamed"] = {
            "workers": st.workers,
            "ranks": st.world_size,
            "chunks": st.chunks,
            "chunk_size": st.chunk_size,
            "resumed_chunks": st.resumed_chunks,
            "embedded_chunks": st.embedded_chunks,
            "restarted": st.restarted,
        }
    t_end = time.perf_counter()
    work = t_save - t_decode
    result: dict[str, Any] = {
        "index": str(out),
        "run": str(run.path),
        "source": source,
        "count": len(index),
        "backend": index.backend,
        "index_type": index.index_type,
        "index_params": index.index_params,
        "recall_at_10": index.recall_at_10,
        "precision": index.precision,
        "skipped": [{"path": p, "reason": r} for p, r in skipped],
        "seconds": t_end - t0,
        "decode_seconds": t_index - t_decode,
        "index_seconds": t_save - t_index,
        "save_seconds": t_end - t_save,
        "images_per_second": len(index) / work if work > 0 else None,
        **extra,
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        _print_index(result, index, skipped)
    return 0


def _print_index(result: dict[str, Any], index: ImageIndex, skipped: list[tuple[str, str]]) -> None:
    """``cmd_index``'s report for people."""
    from latentsearch.data.files import printable
    from latentsearch.index.spec import DEFAULT_PRECISION

    # Folders and files whose names are not UTF-8 are printed as printable(): \xNN.
    out, update, streamed = printable(result["index"]), result.get("update"), result.get("streamed")
    if update is not None:
        print(
            f"updated {out}: {update['added']} added, {update['changed']} changed, "
            f"{update['removed']} removed, {update['unchanged']} unchanged "
            f"({update['embedded']} embedded)"
        )
    else:
        source, run = printable(result["source"]), printable(result["run"])
        print(f"indexed {len(index)} images of {source} with run {run}")
    if streamed is not None and streamed["restarted"]:
        print(f"earlier partial shards discarded ({streamed['restarted']}); started over")
    elif streamed is not None and streamed["resumed_chunks"]:
        print(
            f"resumed: {streamed['resumed_chunks']} of {streamed['chunks']} chunks were "
            "already embedded by an interrupted run"
        )
    embedded_in = "" if index.precision == DEFAULT_PRECISION else f", embedded in {index.precision}"
    print(f"index: {_describe_type(index)}, {len(index)} items, {index.backend}{embedded_in}")
    if skipped:
        print(f"skipped {len(skipped)} file{'s' if len(skipped) != 1 else ''}:")
        for path, reason in skipped:
            print(f"  {printable(path)}: {reason}")
    rate = result["images_per_second"]
    print(
        f"time: {result['seconds']:.1f} s ({rate:.0f} images/s; decode "
        f"{result['decode_seconds']:.1f} s, embed + index {result['index_seconds']:.1f} s, "
        f"save {result['save_seconds']:.1f} s)"
    )
    if index.recall_at_10 is not None:
        print(f"recall@10: {index.recall_at_10:.3f} (sample of indexed images vs exact search)")
    print(f"saved to {out}")


# ---------------------------------------------------------------------------- duplicates
def cmd_duplicates(args: argparse.Namespace) -> int:
    from latentsearch.data.files import printable
    from latentsearch.index import ImageIndex

    index = ImageIndex.load(args.index)
    if args.threshold is not None:
        threshold = args.threshold
    elif len(index) >= 2:
        threshold = index.default_duplicate_threshold()
    else:
        threshold = 0.0
    groups, found = (
        index.duplicate_search(threshold, method=args.method, linkage=args.linkage)
        if len(index) >= 2
        else ([], None)
    )
    if args.json:
        payload = {
            "index": str(args.index),
            "threshold": threshold,
            "default_threshold": args.threshold is None,
            "method": found.method if found else "exact",
            "missed_pair_rate_estimate": found.missed_pair_rate_estimate if found else 0.0,
            "sample_pairs": found.sample_pairs if found else 0,
            "groups": [[asdict(it) for it in g] for g in groups],
        }
        print(json.dumps(payload, indent=2))
        return 0
    how = (
        " (the default: a share of the median squared distance between two random indexed "
        "images; see --help)"
        if args.threshold is None
        else ""
    )
    n_images = sum(len(g) for g in groups)
    print(
        f"{len(groups)} group{'s' if len(groups) != 1 else ''} of near-duplicates, {n_images} "
        f"images, closer than {threshold:.4g} (squared L2){how}"
    )
    if found is not None and found.method == "approximate":
        rate = found.missed_pair_rate_estimate
        print(
            f"approximate search (IVF, {found.params or 'the index'}): "
            + (
                f"it missed {found.sample_missed} of the {found.sample_pairs} close pairs of "
                f"{found.sample_vectors:,} sampled images found by exact search "
                f"(missed-pair rate ~{rate:.2%}); --method exact checks every pair"
                if rate is not None
                else f"no close pair among {found.sample_vectors:,} sampled images to check "
                "its misses against exact search; --method exact checks every pair"
            )
        )
    for gi, group in enumerate(groups, 1):
        print(f"\ngroup {gi} ({len(group)} images)")
        for it in group:
            print(f"  {printable(it.path or it.id)}")
    return 0


COMMANDS = {
    "index": "embed a folder of images with a run and write a searchable index",
    "duplicates": "list groups of near-duplicate images in an index",
}
"""This module's commands and their one-line help, known without importing anything heavy."""


def register(sub: Any) -> None:
    """Adds this module's commands to the ``latentsearch`` sub-parsers."""
    _register_index(sub)
    _register_duplicates(sub)


def _register_index(sub: Any) -> None:
    from latentsearch.index import EXACT_MAX_ITEMS, INDEX_TYPES
    from latentsearch.index.backends import COMPRESSED_MIN_ITEMS
    from latentsearch.index.vector_store import BACKENDS, TOKEN_ENV, MilvusOptions
    from latentsearch.precision import PRECISIONS

    p = sub.add_parser(
        "index",
        help=COMMANDS["index"],
        description="Embed every image of a data source (train and test) with a trained run "
        "and write an index folder; --update re-embeds only new and changed files.",
    )
    add_run(p)
    p.add_argument(
        "images", help="a folder of images, or anything `train --data` accepts (digits, ...)"
    )
    dest = p.add_mutually_exclusive_group(required=True)
    dest.add_argument("--out", help="index folder to write (an existing index is replaced)")
    dest.add_argument(
        "--update",
        metavar="INDEX",
        help="bring this index up to date in place; IMAGES must be the source it was built "
        "from (see --force)",
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="with --update: accept IMAGES other than the source the index was built from "
        "(a moved folder); its items not in IMAGES are removed",
    )
    p.add_argument(
        "--index-type",
        default="auto",
        choices=list(INDEX_TYPES),
        help=f"auto: exact (flat) up to {EXACT_MAX_ITEMS:,} images, approximate above, "
        f"compressed (ivfpq) above {COMPRESSED_MIN_ITEMS:,}; hnsw / ivf / ivfpq: approximate, "
        "recall@10 measured at build time (default: auto; "
        "--update keeps the index's own)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        metavar="N",
        help="processes decoding a folder of images while this one embeds (default: one per "
        "core; 0: decode here). A folder is indexed a chunk at a time into shards beside "
        "--out; run the same command again after an interruption and it resumes from them",
    )
    p.add_argument(
        "--precision",
        default=None,
        choices=list(PRECISIONS),
        help="how to embed: fp32 (default, exact), bf16/fp16 autocast (about twice as fast on "
        "CPUs with native bf16; vectors move by ~1e-2 of their length) or auto (bf16 where "
        "native, else fp32). Recorded in the index: queries and --update embed the same way",
    )
    p.add_argument(
        "--backend",
        default=None,
        choices=list(BACKENDS),
        help="what holds and searches the vectors: faiss (in memory, saved in the folder) or "
        "milvus (an embedded milvus-lite database in the folder, or the server of "
        "--milvus-uri); default: faiss, or milvus when a --milvus-* option is given",
    )
    p.add_argument(
        "--milvus-uri",
        default=None,
        metavar="URI",
        help="a Milvus server or cluster, e.g. http://host:19530 (default: an embedded "
        "milvus-lite database inside the index folder); the folder then holds only the "
        "manifest",
    )
    p.add_argument(
        "--milvus-token",
        default=os.environ.get(TOKEN_ENV),
        metavar="TOKEN",
        help=f"Milvus credentials, user:password or an API key (default: ${TOKEN_ENV}, "
        "which keeps it out of the shell history; never saved in the index)",
    )
    p.add_argument("--milvus-db", default=None, metavar="NAME", help="Milvus database name")
    p.add_argument(
        "--milvus-collection",
        default=None,
        metavar="NAME",
        help="Milvus collection (default: latentsearch_<index folder name>); one that holds "
        "another run's vectors is refused",
    )
    add_option(
        p,
        "--milvus-timeout",
        owner=MilvusOptions,
        field="timeout",
        metavar="SECONDS",
        help="how long to wait for the Milvus server",
    )
    add_json(p, "the summary")
    p.set_defaults(func=cmd_index)


def _register_duplicates(sub: Any) -> None:
    from latentsearch.index import DEFAULT_DUPLICATE_FRACTION
    from latentsearch.index.duplicates import (
        DUPLICATE_METHODS,
        DUPLICATES_EXACT_MAX_ITEMS,
        LINKAGES,
        PHOTO_DUPLICATE_FRACTION,
    )

    p = sub.add_parser(
        "duplicates",
        help=COMMANDS["duplicates"],
        description="Group indexed images whose embeddings are closer than a threshold. "
        "Close pairs are grouped by average linkage: an image joins a group only when it is "
        "close to its members on average, so a chain of similar pictures is not one group.",
    )
    p.add_argument("index", help="index folder from `latentsearch index`")
    p.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="squared L2 distance between embeddings below which two images count as "
        f"duplicates (default: a share of the median squared distance between two random "
        f"indexed images: {PHOTO_DUPLICATE_FRACTION:g} for photographs indexed by the auto "
        "recipe, whose texture part keeps edited copies close (crops, grey, re-encodings); "
        f"{DEFAULT_DUPLICATE_FRACTION:g} otherwise, which catches exact copies and "
        "re-encodings; raise it for looser matches)",
    )
    p.add_argument(
        "--method",
        default="auto",
        choices=list(DUPLICATE_METHODS),
        help=f"exact: every pair (time grows as N^2); approximate: IVF range search, its "
        "missed pairs measured on a sample; auto: exact up to "
        f"{DUPLICATES_EXACT_MAX_ITEMS:,} images (default: auto)",
    )
    p.add_argument(
        "--linkage",
        default=LINKAGES[0],
        choices=list(LINKAGES),
        help="average: groups whose members are close on average; single: connected "
        "components (A~B and B~C put A, B, C in one group) (default: average)",
    )
    add_json(p, "the groups")
    p.set_defaults(func=cmd_duplicates)
