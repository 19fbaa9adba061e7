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
    from latentsearch.presets import PRESETS, preset_help

    # Defaults are None so that a --preset can fill what the command line leaves unset; the
    # help shows TrainConfig's own defaults.
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
    p.add_argument("--preset", default=None, choices=list(PRESETS), help=preset_help())
    p.add_argument("--model", default=None, choices=sorted(MODELS), help="default: seed-ae")
    p.add_argument(
        "--objective", default=None, choices=sorted(OBJECTIVES), help="default: reconstruction"
    )
    p.add_argument(
        "--protocol",
        default="heldout",
        choices=["heldout", "seed"],
        help="heldout: official split, scored on unseen images; seed: the study's",
    )
    p.add_argument(
        "--label-fraction",
        type=float,
        default=None,
        help="share of training labels for the hint head (default 0: none; 1: all)",
    )
    p.add_argument(
        "--hint-weight", type=float, default=None, help="weight of the hint cross-entropy (1)"
    )
    p.add_argument("--epochs", type=int, default=None, help="default: 10")
    p.add_argument("--batch-size", type=int, default=None, help="default: 32")
    p.add_argument("--lr", type=float, default=None, help="default: 1e-3")
    p.add_argument(
        "--image-size",
        type=int,
        default=None,
        help="resize images to this size (default: the source's own; folders: 32)",
    )
    p.add_argument(
        "--width",
        type=int,
        default=None,
        help="channels of resnet-s's first stage (presets: 16, sized for a CPU; 32-64 on a GPU)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch")


_OVERRIDABLE = ["model", "objective", "label_fraction", "hint_weight", "epochs", "batch_size", "lr"]


def _config_from_args(args: argparse.Namespace) -> Any:
    from latentsearch.presets import resolve_preset
    from latentsearch.training import TrainConfig

    settings: dict[str, Any] = resolve_preset(args.preset)
    for name in _OVERRIDABLE:
        if getattr(args, name) is not None:
            settings[name] = getattr(args, name)
    if args.width is not None:
        settings["model_kwargs"] = {**settings.get("model_kwargs", {}), "width": args.width}
    return TrainConfig(
        data=args.data,
        data_dir=args.data_dir,
        protocol=args.protocol,
        image_size=args.image_size,
        seed=args.seed,
        device=args.device,
        threads=args.threads,
        **settings,
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
    from latentsearch.report.tracking import make_tracker
    from latentsearch.training import train

    config = _config_from_args(args)
    tracker = make_tracker(args.wandb, args.out, config)

    def log(record: dict[str, Any]) -> None:
        _log_epoch(record)
        tracker.log_epoch(record)

    try:
        run = train(config, args.out, resume=args.resume, progress=True, log=log)
        print(f"run saved to {run.path}")
        if args.no_evaluate and not args.report:
            return 0
        result = evaluate_run(run, baseline=args.report, progress=True)
        (run.path / "eval.json").write_text(json.dumps(result, indent=2) + "\n")
        print_table([result], METRIC_COLUMNS)
        if args.report:
            from latentsearch.report import build_report

            html = build_report(run, run.path / "report", evaluation=result, progress=True)
            tracker.log_report(html.parent)
            print(f"report: {html}")
    finally:
        tracker.finish()
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

    rows, report = run_demo(Path(args.out), log=lambda line: print(line, flush=True))
    print()
    print_table(rows, ["representation", "nmi", "ari", "acc", "precision_at_10", "map_at_r"])
    print(f"\nruns are in {args.out}")
    print(f"report of the best run: {report}")
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
    p.add_argument(
        "--report", action="store_true", help="write an HTML report to RUN/report at the end"
    )
    p.add_argument(
        "--wandb",
        action="store_true",
        help="log config, epochs and report pictures to Weights & Biases (needs wandb; "
        "WANDB_MODE=offline works without a network)",
    )
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
