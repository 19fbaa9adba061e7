"""Commands of the core pipeline: train, evaluate, reproduce, demo."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from latentsearch.cli.common import CLIError, metric_columns, print_table
from latentsearch.cli.options import (
    HelpFormatter,
    add_json,
    add_option,
    add_run,
    add_seed,
    add_threads,
    library_default,
)

if TYPE_CHECKING:
    from latentsearch.distributed import DistContext


# ---------------------------------------------------------------------------- train
def _block_counts(text: str) -> int | list[int]:
    """``--stage-blocks``: "2" (every stage) or "1,1,2,2" (one per stage), positive integers."""
    try:
        counts = [int(part) for part in text.split(",")]
    except ValueError:
        counts = []
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(
            f"expected positive integers separated by commas, e.g. 1,1,2,2; got {text!r}"
        )
    return counts[0] if len(counts) == 1 else counts


def _add_train_args(p: argparse.ArgumentParser) -> None:
    """The options of ``train``: data, recipe, network, contrastive objective, machine."""
    _add_data_args(p)
    _add_recipe_args(p)
    _add_network_args(p)
    _add_contrastive_args(p)
    _add_machine_args(p)


def _add_data_args(p: argparse.ArgumentParser) -> None:
    from latentsearch.protocols import PROTOCOLS
    from latentsearch.runs import TrainConfig

    add_option(
        p,
        "--data",
        owner=TrainConfig,
        field="data",
        help="digits, cifar10, fashion-mnist, or a folder of images / idx files",
    )
    p.add_argument(
        "--data-dir",
        default=None,
        metavar="DIR",
        help="folder holding a named source's files (e.g. cifar-10-python.tar.gz)",
    )
    add_option(
        p,
        "--protocol",
        owner=TrainConfig,
        field="protocol",
        choices=list(PROTOCOLS),
        help="heldout: official split, scored on unseen images; seed: the study's",
    )
    p.add_argument(
        "--image-size",
        type=int,
        default=None,
        metavar="PX",
        help="resize images to this size (default: the source's own; folders: 32)",
    )


def _preset_help() -> str:
    """One line per preset: its name and what it is for (the figures are in the README)."""
    from latentsearch.presets import PRESETS

    lines = [f"{name}: {preset.summary}" for name, preset in PRESETS.items()]
    text = "a named recipe (results: README.md)\n" + "\n".join(lines)
    return text.replace("%", "%%")  # argparse formats help with %


def _add_recipe_args(p: argparse.ArgumentParser) -> None:
    """The settings a preset or the auto recipe chooses: None unless the command line sets them.

    The help shows ``TrainConfig``'s own defaults, used when no preset or recipe sets them.
    """
    from latentsearch.models import MODELS
    from latentsearch.objectives import OBJECTIVES
    from latentsearch.presets import PRESETS
    from latentsearch.runs import OPTIMIZERS, TrainConfig

    def option(flag: str, help: str, **kwargs: Any) -> None:
        field = flag[2:].replace("-", "_")
        add_option(p, flag, owner=TrainConfig, field=field, help=help, preset=True, **kwargs)

    p.add_argument("--preset", default=None, choices=list(PRESETS), help=_preset_help())
    option("--model", "network", choices=sorted(MODELS))
    option("--objective", "what it learns from", choices=sorted(OBJECTIVES))
    option(
        "--label-fraction",
        "share of training labels for the hint head (0: none; 1: all)",
        metavar="F",
    )
    option("--hint-weight", "weight of the hint cross-entropy", metavar="W")
    option("--epochs", "passes over the training images")
    option(
        "--batch-size",
        "images per step over all processes; under torchrun each of N processes takes 1/N of "
        "it, so results do not depend on N",
        metavar="N",
    )
    option("--lr", "learning rate of the global batch, never rescaled with the processes")
    option("--optimizer", "adamw, or sgd (Nesterov momentum 0.9)", choices=list(OPTIMIZERS))
    option(
        "--weight-decay",
        "AdamW's is decoupled (try 0.05), SGD's an L2 term (try 5e-4)",
        metavar="WD",
    )


def _add_network_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--width",
        type=int,
        default=None,
        help="channels of resnet-s's first stage (presets: 16, sized for a CPU; 32-64 on a GPU)",
    )
    p.add_argument(
        "--stage-blocks",
        type=_block_counts,
        default=None,
        metavar="N[,N...]",
        help="resnet-s's basic blocks per stage: one number for all, or one per stage "
        "(32 px images have four stages, e.g. 1,1,2,2; default: 1)",
    )
    p.add_argument(
        "--init",
        default=None,
        metavar="PATH",
        help="start from the matching tensors of a run folder, a checkpoint or a state-dict "
        "file of the same architecture (reports what it loaded; nothing is downloaded)",
    )


def _add_contrastive_args(p: argparse.ArgumentParser) -> None:
    """Settings of the contrastive objective; the help's defaults are its own."""
    from latentsearch.objectives import ContrastiveObjective
    from latentsearch.presets import AUTO_NEIGHBOUR_WEIGHT, AUTO_QUEUE_MAX, AUTO_TEMPERATURE

    def option(flag: str, field: str, help: str, **kwargs: Any) -> None:
        add_option(
            p, flag, owner=ContrastiveObjective, field=field, help=help, preset=True, **kwargs
        )

    option(
        "--temperature",
        "temperature",
        f"NT-Xent temperature of the contrastive objective (auto: {AUTO_TEMPERATURE:g})",
        metavar="T",
    )
    option(
        "--neighbour-weight",
        "neighbour_weight",
        "share in [0, 1] of the contrastive loss whose positives are nearest neighbours from a "
        f"queue of recent images (NNCLR) (auto: {AUTO_NEIGHBOUR_WEIGHT:g})",
        metavar="W",
    )
    option(
        "--neighbour-queue",
        "queue_size",
        "images in the neighbour positives' queue (auto: a fifth of the training images, at "
        f"most {AUTO_QUEUE_MAX})",
        metavar="N",
    )
    first = library_default(ContrastiveObjective, "neighbour_start_epoch") + 1
    option(
        "--neighbour-start-epoch",
        "neighbour_start_epoch",
        "first epoch (1-based) with neighbour positives, so one run and one lr schedule learn "
        "plain SimCLR first (auto: after a third of the epochs)",
        metavar="E",
        default_text=f"{first}, from the start once the queue is full",
    )
    p.add_argument(
        "--crop-min",
        type=float,
        default=None,
        metavar="S",
        help="smallest random crop, as a share in (0, 1] of the image's area, for objectives "
        "that augment (auto: 0.2 for colour images from 24 px, 0.4 from 20 px, 0.7 below; "
        "supervised: 0.35)",
    )


def _add_machine_args(p: argparse.ArgumentParser) -> None:
    from latentsearch.precision import PRECISIONS
    from latentsearch.runs import TrainConfig

    add_seed(p, owner=TrainConfig, help="seeds weights, batch order, label subset, augmentations")
    add_option(
        p,
        "--device",
        owner=TrainConfig,
        field="device",
        help="auto, cpu, cuda or mps (under torchrun: cuda means each process's own GPU)",
    )
    add_threads(
        p,
        help="CPU threads for torch per process, shared among the processes torchrun starts "
        "on a machine",
    )
    p.add_argument(
        "--sync-bn",
        dest="sync_batchnorm",
        action="store_true",
        help="under torchrun: BatchNorm statistics over the global batch rather than each "
        "process's share (SyncBatchNorm; costs two all-reduces per layer and step)",
    )
    add_option(
        p,
        "--precision",
        owner=TrainConfig,
        field="precision",
        preset=True,
        choices=list(PRECISIONS),
        help="auto: bf16 mixed precision on CPUs with native bf16 and on CUDA (fp16 on GPUs "
        "without bf16), fp32 elsewhere; the study presets train in fp32",
    )


_OVERRIDABLE = [
    "model",
    "objective",
    "label_fraction",
    "hint_weight",
    "epochs",
    "batch_size",
    "lr",
    "optimizer",
    "weight_decay",
    "precision",
]


def _wants_auto(args: argparse.Namespace) -> bool:
    """``--preset auto``, or no recipe asked for at all and no labels (the default)."""
    if args.preset is not None:
        return bool(args.preset == "auto")
    return args.model is None and args.objective is None and not args.label_fraction


def _say(line: str) -> None:
    """Prints a line once per job: on rank 0 only when torchrun starts several processes."""
    from latentsearch.distributed import context

    if context().is_main:
        print(line, flush=True)


def _auto_settings(args: argparse.Namespace, data: Any) -> dict[str, Any]:
    from latentsearch.workflow import choose_auto_recipe

    # Given epochs go into the recipe itself, so its neighbour positives start after a third.
    recipe = choose_auto_recipe(args.data, data, protocol=args.protocol, epochs=args.epochs)
    _say("auto recipe: " + "; ".join(recipe.reasons))
    if args.epochs is not None and args.epochs != recipe.budget_epochs:
        _say(f"--epochs {args.epochs} replaces the recipe's {recipe.budget_epochs}")
    return recipe.overrides


def _config_from_args(args: argparse.Namespace, data: Any = None) -> Any:
    """The run's config: preset (``auto``: chosen from ``data``), then the command line."""
    from latentsearch.presets import resolve_preset
    from latentsearch.runs import TrainConfig

    from_recipe = _wants_auto(args) and data is not None
    if from_recipe:
        settings: dict[str, Any] = _auto_settings(args, data)
    else:
        settings = resolve_preset(None if args.preset == "auto" else args.preset)
    source = "recipe" if _wants_auto(args) else "preset"
    for name in _OVERRIDABLE:
        value = getattr(args, name)
        if value is not None:
            if name in settings and settings[name] != value:
                flag = "--" + name.replace("_", "-")
                _say(f"{flag} {value} replaces the {source}'s {settings[name]}")
            settings[name] = value
    for flag, value in (("width", args.width), ("stage_blocks", args.stage_blocks)):
        if value is not None:
            model_kwargs = settings.get("model_kwargs", {})
            if from_recipe and args.epochs is None and model_kwargs.get(flag) != value:
                # auto's epochs spend a time budget at the speed of its own network.
                _say(
                    f"--{flag.replace('_', '-')} changes the network the recipe's "
                    f"{settings.get('epochs')} epochs were budgeted for; --epochs sets them"
                )
            settings["model_kwargs"] = {**model_kwargs, flag: value}
    contrastive = [  # (flag, objective argument, value given)
        ("--temperature", "temperature", args.temperature),
        ("--neighbour-weight", "neighbour_weight", args.neighbour_weight),
        ("--neighbour-queue", "queue_size", args.neighbour_queue),
        (
            "--neighbour-start-epoch",
            "neighbour_start_epoch",
            None if args.neighbour_start_epoch is None else args.neighbour_start_epoch - 1,
        ),
    ]
    if args.neighbour_start_epoch is not None and args.neighbour_start_epoch < 1:
        raise CLIError(f"--neighbour-start-epoch counts from 1, got {args.neighbour_start_epoch}")
    for flag, name, value in contrastive:
        if value is None:
            continue
        if settings.get("objective", TrainConfig.objective) != "contrastive":
            raise CLIError(f"{flag} is for the contrastive objective (--preset auto, simclr)")
        kwargs = dict(settings.get("objective_kwargs", {}))
        if name in kwargs and kwargs[name] != value:
            _say(f"{flag} {value:g} replaces the {source}'s {kwargs[name]:g}")
        settings["objective_kwargs"] = {**kwargs, name: value}
    if args.crop_min is not None:
        settings["objective_kwargs"] = _with_crop_min(settings, args.crop_min, source)
    return TrainConfig(
        data=args.data,
        data_dir=args.data_dir,
        protocol=args.protocol,
        image_size=args.image_size,
        seed=args.seed,
        device=args.device,
        threads=args.threads,
        init=str(Path(args.init).resolve()) if args.init else None,
        sync_batchnorm=args.sync_batchnorm,
        keep_checkpoints=args.keep_checkpoints,
        **settings,
    )


def _with_crop_min(settings: dict[str, Any], crop_min: float, source: str) -> dict[str, Any]:
    """The settings' objective arguments with crops of ``crop_min``-100 % of the area.

    The other augmentations stay as the recipe or preset set them, or as the objective's own
    defaults when it set none.
    """
    from latentsearch.objectives import default_augment
    from latentsearch.runs import TrainConfig

    if not 0.0 < crop_min <= 1.0:
        raise CLIError(f"--crop-min is a share of the image's area in (0, 1], got {crop_min:g}")
    objective = settings.get("objective", TrainConfig.objective)
    base = default_augment(objective)
    if base is None:
        raise CLIError(
            f"--crop-min is for objectives that augment (contrastive, classification), "
            f"not {objective}"
        )
    kwargs = dict(settings.get("objective_kwargs", {}))
    # Lists, not tuples, as the config reads back from JSON (a resumed run compares the two).
    defaults = {
        k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(base).items()
    }
    augment = dict(kwargs.get("augment") or defaults)
    old = float(augment.get("crop_scale", base.crop_scale)[0])
    if old != crop_min:
        _say(f"--crop-min {crop_min:g} replaces the {source}'s {old:g}")
    augment["crop_scale"] = [crop_min, 1.0]
    return {**kwargs, "augment": augment}


def _columns(result: dict[str, Any]) -> list[str]:
    """The metric columns to print: KMeans's and retrieval's, then a cluster head's if any."""
    return metric_columns() + [c for c in ("head_nmi", "head_ari", "head_acc") if c in result]


def _log_epoch(record: dict[str, Any]) -> None:
    parts = " ".join(f"{k}={v:.4f}" for k, v in record["train"].items())
    val = record.get("val")
    vtxt = f" | val loss={val['loss']:.4f}" if val else ""
    print(
        f"epoch {record['epoch']}: {parts}{vtxt} | {record['images_per_second']:.0f} img/s, "
        f"{record['seconds']:.0f}s",
        flush=True,
    )


def pixel_verdict(result: dict[str, Any]) -> str:
    """One plain sentence: is the learned representation better than raw pixels?"""
    base = result["baseline"]
    worse = [
        name
        for key, name in (("nmi", "clustering (NMI)"), ("precision_at_10", "retrieval (P@10)"))
        if result[key] < base[key]
    ]
    if not worse:
        return (
            f"the learned representation beats raw pixels on held-out images: NMI "
            f"{result['nmi']:.3f} vs {base['nmi']:.3f}, P@10 {result['precision_at_10']:.3f} vs "
            f"{base['precision_at_10']:.3f}"
        )
    return (
        f"WARNING: the learned representation is WORSE than raw pixels at {' and '.join(worse)} "
        f"on held-out images (NMI {result['nmi']:.3f} vs {base['nmi']:.3f}, P@10 "
        f"{result['precision_at_10']:.3f} vs {base['precision_at_10']:.3f}): search raw pixels, "
        "or train longer / with labels"
    )


def cmd_train(args: argparse.Namespace) -> int:
    """Trains (as one of N ranks under torchrun: rank 0 alone evaluates and reports)."""
    from latentsearch import distributed

    try:
        return _train_and_score(args, distributed.context())
    finally:
        distributed.teardown()


def _train_and_score(args: argparse.Namespace, ctx: DistContext) -> int:
    from latentsearch.evaluation import evaluate_run
    from latentsearch.report.tracking import make_tracker
    from latentsearch.runs import EVAL_FILE
    from latentsearch.training import train

    data = None
    if _wants_auto(args):
        from latentsearch.data import load_data

        data = load_data(args.data, image_size=args.image_size, data_dir=args.data_dir)
    config = _config_from_args(args, data)
    if not ctx.is_main:  # the other ranks only train: no tracker, output, evaluation
        train(config, args.out, resume=args.resume, progress=False, data=data)
        return 0
    tracker = make_tracker(args.wandb, args.out, config)

    def log(record: dict[str, Any]) -> None:
        _log_epoch(record)
        tracker.log_epoch(record)

    try:
        run = train(
            config,
            args.out,
            resume=args.resume,
            progress=True,
            log=log,
            data=data,
            notify=lambda line: print(line, flush=True),
        )
        print(f"run saved to {run.path}")
        if args.no_evaluate and not args.report:
            return 0
        if data is None:
            from latentsearch.data import load_data

            data = load_data(config.data, image_size=run.model.image_size, data_dir=config.data_dir)
        if not (data.test or data.train).has_labels:
            print("no labels: nothing to score the run against (see `latentsearch report`)")
            return 0
        result = evaluate_run(run, data=data, baseline=True, progress=True)
        (run.path / EVAL_FILE).write_text(json.dumps(result, indent=2) + "\n")
        rows = [{"representation": f"{config.model} (held out)", **result}]
        rows.append({"representation": "raw pixels", **result["baseline"]})
        print_table(rows, ["representation", *_columns(result)])
        print(pixel_verdict(result))
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
    from latentsearch.runs import EVAL_FILE, load_run

    run = load_run(args.run)
    result = evaluate_run(run, baseline=args.baseline, progress=not args.json)
    (run.path / EVAL_FILE).write_text(json.dumps(result, indent=2) + "\n")
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        rows = [{"representation": f"{run.config.model} ({run.config.protocol})", **result}]
        if args.baseline:
            rows.append({"representation": "raw pixels", **result["baseline"]})
        print_table(rows, ["representation", *_columns(result)])
    return 0


# ---------------------------------------------------------------------------- cluster
def cmd_cluster(args: argparse.Namespace) -> int:
    import torch

    from latentsearch.clusters import (
        ClusterConfig,
        fit_cluster_head,
        head_path,
        view_augmentations,
    )
    from latentsearch.data import load_data
    from latentsearch.precision import available_cores, resolve_precision
    from latentsearch.protocols import make_splits
    from latentsearch.runs import EVAL_FILE, load_run

    # Before loading run and images (ClusterConfig, built after them, checks it too).
    if args.neighbours < 1:
        raise CLIError(f"--neighbours must be at least 1, got {args.neighbours}")
    torch.set_num_threads(args.threads or available_cores())
    run = load_run(args.run)
    cfg = run.config
    data, labelled = run.labels_as_trained(
        load_data(cfg.data, image_size=run.model.image_size, data_dir=cfg.data_dir, progress=True)
    )
    fit = make_splits(data, cfg.protocol).fit
    n_clusters = args.clusters or len(data.train.class_names)
    if n_clusters < 2:
        raise CLIError("these images have no classes to count: pass --clusters K")
    config = ClusterConfig(
        n_clusters=n_clusters,
        n_neighbours=args.neighbours,
        seed=args.seed,
        finetune_epochs=args.finetune_epochs,
        finetune_self_label_epochs=args.self_label_encoder_epochs,
    )
    head = fit_cluster_head(
        run.model,
        fit.pixels,
        config=config,
        augment_config=view_augmentations(cfg),
        encoder_sha256=run.fingerprint["weights_sha256"],
        precision=resolve_precision(cfg.precision, next(run.model.parameters()).device),
        log=lambda line: print(line, flush=True),
    )
    path = head.save(head_path(run.path))
    print(f"cluster head saved to {path}")
    if labelled and fit.has_labels:  # score the head on the data and run already loaded
        from latentsearch.evaluation import evaluate_run

        result = evaluate_run(run, data=data, progress=True)
        (run.path / EVAL_FILE).write_text(json.dumps(result, indent=2) + "\n")
        rows = [{"representation": f"{cfg.model} ({cfg.protocol})", **result}]
        print_table(rows, ["representation", *_columns(result)])
    return 0


# ---------------------------------------------------------------------------- reproduce
def cmd_reproduce(args: argparse.Namespace) -> int:
    from latentsearch.reproduce import merge_rows, reproduce, seed_spread

    json_out = Path(args.json_out) if args.json_out else None
    old_rows: list[dict[str, Any]] = []
    if json_out is not None and json_out.exists():
        # Read before training, so a file that is not ours fails in seconds, not hours.
        try:
            old_rows = json.loads(json_out.read_text())["rows"]
        except (ValueError, KeyError, TypeError) as e:
            raise CLIError(
                f"--json-out {json_out} exists but is not a reproduce results file ({e}); "
                "choose another path"
            ) from e
    rows = reproduce(
        data=args.data,
        data_dir=args.data_dir,
        out=Path(args.out),
        protocols=args.protocols,
        epochs=args.epochs,
        threads=args.threads,
        data_label=args.data_label,
        seeds=args.seeds,
        variants=args.models,
        log=lambda line: print(line, flush=True),
    )
    if json_out is not None:
        all_rows = merge_rows(old_rows, rows)
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(
            json.dumps({"rows": all_rows, "seed_spread": seed_spread(all_rows)}, indent=2) + "\n"
        )
        print(f"wrote {json_out} ({len(rows)} new rows, {len(all_rows)} in all)")
    print_table(
        rows,
        [
            "protocol",
            "model",
            "seed",
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
    spread = seed_spread(rows)
    if spread:
        print("\nover training seeds (mean ± sample sd):")
        print_table(
            [
                {
                    "protocol": r["protocol"],
                    "model": r["model"],
                    "seeds": " ".join(map(str, r["seeds"])),
                    **{
                        k: f"{r[k + '_mean']:.3f} ± {r[k + '_sd']:.3f}"
                        for k in ("nmi", "ri", "precision_at_10")
                    },
                    "published_nmi": r["published_nmi"],
                    "published_ri": r["published_ri"],
                }
                for r in spread
            ],
            [
                "protocol",
                "model",
                "seeds",
                "nmi",
                "published_nmi",
                "ri",
                "published_ri",
                "precision_at_10",
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


def _add_cluster_args(p: argparse.ArgumentParser) -> None:
    """The options of ``cluster``, their defaults ``ClusterConfig``'s."""
    from latentsearch.clusters import ClusterConfig

    add_run(p, help="run folder")
    p.add_argument(
        "--clusters", type=int, default=None, help="number of clusters (default: the classes)"
    )
    add_option(
        p,
        "--neighbours",
        owner=ClusterConfig,
        field="n_neighbours",
        help="nearest neighbours mined per image, the pairs the head learns to put together",
    )
    add_option(
        p,
        "--finetune-epochs",
        owner=ClusterConfig,
        field="finetune_epochs",
        help="after the frozen SCAN step, train a copy of the encoder with the heads for this "
        "many epochs (about one training epoch's time each; 0: encoder frozen)",
    )
    add_option(
        p,
        "--self-label-encoder-epochs",
        owner=ClusterConfig,
        field="finetune_self_label_epochs",
        help="then self-label for this many epochs with the encoder copy trained too: its "
        "confident clusters become targets for augmented copies of the images (SCAN's last "
        "step; it trains on the confident images only, about half a training epoch's time "
        "each)",
    )
    add_seed(p, owner=ClusterConfig, help="seeds heads, sampling and augmentations")
    add_threads(p)


def _add_reproduce_args(p: argparse.ArgumentParser) -> None:
    """The options of ``reproduce``, their defaults ``reproduce()``'s."""
    from latentsearch.protocols import PROTOCOLS
    from latentsearch.reproduce import VARIANTS, reproduce

    def option(flag: str, field: str, help: str, **kwargs: Any) -> None:
        add_option(p, flag, owner=reproduce, field=field, help=help, **kwargs)

    option("--data", "data", "cifar10 or a CIFAR-10 image folder")
    p.add_argument("--data-dir", default=None, help="folder with cifar-10-python.tar.gz")
    p.add_argument("--out", default="runs/reproduce", help="folder for the four runs")
    option("--protocols", "protocols", "protocols to run", nargs="+", choices=list(PROTOCOLS))
    option("--epochs", "epochs", "epochs per model, as in the study")
    option(
        "--models",
        "variants",
        "which of the study's models to train",
        nargs="+",
        choices=list(VARIANTS),
    )
    option(
        "--seeds",
        "seeds",
        "training seeds (weights, batch order; the split stays the protocol's); with two or "
        "more, the mean and standard deviation over seeds are printed and written. Seed 0 "
        "trains into <protocol>-<model>, others into <protocol>-<model>-seed<S>",
        nargs="+",
        type=int,
    )
    add_threads(p)
    p.add_argument(
        "--json-out",
        default=None,
        help="also write the rows to this JSON file; rows already in it for another "
        "(protocol, model, seed) are kept, and the seed spread is recomputed over all of them",
    )
    p.add_argument("--data-label", default=None, help="how to name the data in the rows")


COMMANDS = {
    "train": "train a model and write a run folder",
    "evaluate": "score a run: clustering and retrieval metrics",
    "cluster": "train a SCAN clustering head on a run's embeddings",
    "reproduce": "reproduce Gosthipaty & Chakraborty (2020) on CIFAR-10",
    "demo": "the whole pipeline on scikit-learn's digits, offline",
}
"""This module's commands and their one-line help, known without importing anything heavy."""


def register(sub: Any) -> None:
    """Adds this module's commands to the ``latentsearch`` sub-parsers."""
    from latentsearch.runs import KEEP_CHECKPOINTS, TrainConfig

    p = sub.add_parser(
        "train",
        help=COMMANDS["train"],
        description="Train a model on a data source and write a run folder.",
        formatter_class=HelpFormatter,
    )
    _add_train_args(p)
    p.add_argument("--out", required=True, help="run folder to create")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    add_option(
        p,
        "--keep-checkpoints",
        owner=TrainConfig,
        field="keep_checkpoints",
        choices=list(KEEP_CHECKPOINTS),
        metavar="KEEP",
        help="last-best (the newest checkpoint and the lowest validation loss's) or all",
    )
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
        help=COMMANDS["evaluate"],
        description="Score a trained run under its protocol.",
    )
    add_run(p)
    add_json(p, "the metrics")
    p.add_argument("--baseline", action="store_true", help="also score raw pixels")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser(
        "cluster",
        help=COMMANDS["cluster"],
        description="Train a clustering head (SCAN: nearest-neighbour consistency + entropy, "
        "then self-labelling) on the frozen embeddings of the run's training images, save it "
        "in the run folder, and score it beside KMeans when labels exist. With "
        "--finetune-epochs a copy of the encoder trains with the head (SCAN's full recipe); "
        "the run's own encoder, and so its search, is unchanged.",
    )
    _add_cluster_args(p)
    p.set_defaults(func=cmd_cluster)

    p = sub.add_parser(
        "reproduce",
        help=COMMANDS["reproduce"],
        description="Train the study's vanilla and hint autoencoders under the 'seed' and "
        "'heldout' protocols and print our numbers beside the published ones. Finished runs "
        "in --out are reused and interrupted ones resumed.",
    )
    _add_reproduce_args(p)
    p.set_defaults(func=cmd_reproduce)

    p = sub.add_parser(
        "demo",
        help=COMMANDS["demo"],
        description="Train five models on digits (the study's three, an improved autoencoder "
        "and auto), embed and evaluate them, in about a minute and a half.",
    )
    p.add_argument("--out", default="runs/demo", help="folder for the demo's runs")
    p.set_defaults(func=cmd_demo)
