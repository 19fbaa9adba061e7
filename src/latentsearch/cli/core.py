"""Commands of the core pipeline: train, evaluate, reproduce, demo."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from latentsearch.cli.common import METRIC_COLUMNS, print_table


# ---------------------------------------------------------------------------- train
def _add_train_args(p: argparse.ArgumentParser) -> None:
    from latentsearch.models import MODELS
    from latentsearch.objectives import OBJECTIVES

    p.add_argument(
        "--data",
        default="digits",
        help="digits, cifar10, fashion-mnist, or a folder of images / idx files",
    )
    p.add_argument(
        "--data-dir",
        default=None,
        help="folder holding a named source's files (e.g. cifar-10-python.tar.gz)",
    )
    p.add_argument("--model", default="seed-ae", choices=sorted(MODELS))
    p.add_argument("--objective", default="reconstruction", choices=sorted(OBJECTIVES))
    p.add_argument(
        "--protocol",
        default="heldout",
        choices=["heldout", "seed"],
        help="heldout: official split, scored on unseen images; seed: the study's",
    )
    p.add_argument(
        "--label-fraction",
        type=float,
        default=0.0,
        help="share of training labels for the hint head (0: none, 1: all)",
    )
    p.add_argument(
        "--hint-weight", type=float, default=1.0, help="weight of the hint cross-entropy"
    )
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument(
        "--image-size",
        type=int,
        default=None,
        help="resize images to this size (default: the source's own; folders: 32)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch")


def _config_from_args(args: argparse.Namespace) -> Any:
    from latentsearch.training import TrainConfig

    return TrainConfig(
        data=args.data,
        data_dir=args.data_dir,
        protocol=args.protocol,
        model=args.model,
        image_size=args.image_size,
        objective=args.objective,
        label_fraction=args.label_fraction,
        hint_weight=args.hint_weight,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        device=args.device,
        threads=args.threads,
    )


def _log_epoch(record: dict[str, Any]) -> None:
    parts = " ".join(f"{k}={v:.4f}" for k, v in record["train"].items())
    val = record.get("val")
    vtxt = f" | val loss={val['loss']:.4f}" if val else ""
    print(
        f"epoch {record['epoch']}: {parts}{vtxt} | {record['images_per_second']:.0f} img/s, "
        f"{record['seconds']:.0f}s",
        flush=True,
    )


def cmd_train(args: argparse.Namespace) -> int:
    from latentsearch.evaluation import evaluate_run
    from latentsearch.training import train

    config = _config_from_args(args)
    run = train(config, args.out, resume=args.resume, progress=True, log=_log_epoch)
    print(f"run saved to {run.path}")
    if not args.no_evaluate:
        result = evaluate_run(run, progress=True)
        (run.path / "eval.json").write_text(json.dumps(result, indent=2) + "\n")
        print_table([result], METRIC_COLUMNS)
    return 0


# ---------------------------------------------------------------------------- evaluate
def cmd_evaluate(args: argparse.Namespace) -> int:
    from latentsearch.evaluation import evaluate_run
    from latentsearch.training import load_run

    run = load_run(args.run)
    result = evaluate_run(run, baseline=args.baseline, progress=not args.json)
    (run.path / "eval.json").write_text(json.dumps(result, indent=2) + "\n")
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        rows = [{"representation": f"{run.config.model} ({run.config.protocol})", **result}]
        if args.baseline:
            rows.append({"representation": "raw pixels", **result["baseline"]})
        print_table(rows, ["representation", *METRIC_COLUMNS])
    return 0


# ---------------------------------------------------------------------------- reproduce
def cmd_reproduce(args: argparse.Namespace) -> int:
    from latentsearch.reproduce import reproduce

    rows = reproduce(
        data=args.data,
        data_dir=args.data_dir,
        out=Path(args.out),
        protocols=args.protocols,
        epochs=args.epochs,
        threads=args.threads,
        data_label=args.data_label,
        log=lambda line: print(line, flush=True),
    )
    if args.json_out:
        Path(args.json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json_out).write_text(json.dumps({"rows": rows}, indent=2) + "\n")
        print(f"wrote {args.json_out}")
    print_table(
        rows,
        [
            "protocol",
            "model",
            "nmi",
            "published_nmi",
            "ri",
            "published_ri",
            "ari",
            "acc",
            "precision_at_10",
            "map_at_r",
            "train_seconds",
        ],
    )
    return 0


# ---------------------------------------------------------------------------- demo
def cmd_demo(args: argparse.Namespace) -> int:
    from latentsearch.demo import run_demo

    rows = run_demo(Path(args.out), log=print)
    print()
    print_table(rows, ["representation", "nmi", "ari", "acc", "precision_at_10", "map_at_r"])
    print(f"\nruns are in {args.out}")
    return 0


def register(sub: Any) -> None:
    """Adds this module's commands to the ``latentsearch`` sub-parsers."""

    p = sub.add_parser(
        "train",
        help="train a model and write a run folder",
        description="Train a model on a data source and write a run folder.",
    )
    _add_train_args(p)
    p.add_argument("--out", required=True, help="run folder to create")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument("--no-evaluate", action="store_true", help="skip evaluation at the end")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser(
        "evaluate",
        help="score a run: clustering and retrieval metrics",
        description="Score a trained run under its protocol.",
    )
    p.add_argument("run", help="run folder (or checkpoint file)")
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")
    p.add_argument("--baseline", action="store_true", help="also score raw pixels")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser(
        "reproduce",
        help="reproduce Gosthipaty & Chakraborty (2020) on CIFAR-10",
        description="Train the study's vanilla and hint autoencoders under the 'seed' and "
        "'heldout' protocols and print our numbers beside the published ones. Finished runs "
        "in --out are reused and interrupted ones resumed.",
    )
    p.add_argument("--data", default="cifar10", help="cifar10 or a CIFAR-10 image folder")
    p.add_argument("--data-dir", default=None, help="folder with cifar-10-python.tar.gz")
    p.add_argument("--out", default="runs/reproduce", help="folder for the four runs")
    p.add_argument(
        "--protocols", nargs="+", default=["seed", "heldout"], choices=["seed", "heldout"]
    )
    p.add_argument("--epochs", type=int, default=10, help="the study: 10")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--json-out", default=None, help="also write the rows to this JSON file")
    p.add_argument("--data-label", default=None, help="how to name the data in the rows")
    p.set_defaults(func=cmd_reproduce)

    p = sub.add_parser(
        "demo",
        help="the whole pipeline on scikit-learn's digits, offline",
        description="Train, embed and evaluate on digits in about a minute.",
    )
    p.add_argument("--out", default="runs/demo", help="folder for the demo's runs")
    p.set_defaults(func=cmd_demo)
