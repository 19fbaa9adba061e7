"""End to end through the command line, on scikit-learn's digits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from latentsearch.cli import build_parser, main
from latentsearch.runs import Run

COMMANDS = ["train", "evaluate", "reproduce", "demo"]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args([command, "--help"])
    assert exc.value.code == 0
    assert "usage: latentsearch " + command in capsys.readouterr().out


def test_hint_model_clusters_held_out_digits_far_better_than_raw_pixels(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "hint"
    code = main(
        [
            "train",
            "--data",
            "digits",
            "--label-fraction",
            "1",
            "--epochs",
            "12",
            "--out",
            str(run),
            "--no-evaluate",
        ]
    )
    assert code == 0
    capsys.readouterr()
    assert main(["evaluate", str(run), "--json", "--baseline"]) == 0
    result = json.loads(capsys.readouterr().out)
    for key in ["nmi", "ri", "ari", "ami", "acc", "precision_at_1", "precision_at_10", "map_at_r"]:
        assert 0.0 <= result[key] <= 1.0
    assert result["protocol"] == "heldout"
    assert result["n_cluster"] == 360  # the held-out digits, never trained on
    # Raw-pixel KMeans gets NMI ~0.71 on these images; the hint model must clearly beat it.
    assert result["nmi"] > result["baseline"]["nmi"] + 0.1
    assert result["map_at_r"] > result["baseline"]["map_at_r"]
    assert json.loads((run / "eval.json").read_text())["nmi"] == result["nmi"]


def test_errors_are_one_line_with_exit_code_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["evaluate", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert "error: no run folder" in err and "Traceback" not in err
    assert main(["train", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "r")]) == 2
    assert "error:" in capsys.readouterr().err
    assert main(["train", "--label-fraction", "2", "--out", str(tmp_path / "r")]) == 2
    assert "label-fraction" in capsys.readouterr().err


def _config(argv: list[str]):  # type: ignore[no-untyped-def]
    from latentsearch.cli.core import _config_from_args

    return _config_from_args(build_parser().parse_args(["train", *argv, "--out", "x"]))


def test_a_preset_fills_the_config_and_the_command_line_overrides_it() -> None:
    from latentsearch.presets import PRESETS

    cfg = _config(["--data", "digits", "--preset", "simclr-hint10"])
    expected = PRESETS["simclr-hint10"].overrides
    assert cfg.model == expected["model"] == "resnet-s"
    assert cfg.objective == "contrastive"
    assert cfg.label_fraction == 0.1
    assert cfg.epochs == expected["epochs"]
    assert cfg.model_kwargs == expected["model_kwargs"]
    cfg = _config(["--data", "digits", "--preset", "simclr", "--epochs", "3", "--width", "32"])
    assert cfg.epochs == 3
    assert cfg.model_kwargs["width"] == 32
    # The preset's own overrides are not modified by a command line that changes them.
    assert PRESETS["simclr"].overrides["model_kwargs"]["width"] == 16
    cfg = _config(["--data", "digits", "--preset", "simclr", "--stage-blocks", "1,2"])
    assert cfg.model_kwargs == {"width": 16, "stage_blocks": [1, 2]}
    assert _config(["--data", "digits", "--stage-blocks", "2"]).model_kwargs["stage_blocks"] == 2
    assert "stage_blocks" not in PRESETS["simclr"].overrides["model_kwargs"]


@pytest.mark.parametrize("text", ["0", "1,,2", "1,x", "-1", ""])
def test_stage_blocks_that_are_not_positive_integers_are_refused_by_argparse(
    text: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--data", "digits", "--stage-blocks", text])
    assert "positive integers separated by commas" in capsys.readouterr().err


def test_train_help_lists_every_preset_in_one_line_without_results(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from latentsearch.presets import PRESETS

    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--help"])
    out = capsys.readouterr().out
    # argparse wraps lines, also after hyphens: compare without any whitespace.
    text = "".join(out.split())
    for name, preset in PRESETS.items():
        assert "".join(f"{name}: {preset.summary}".split()) in text
    # What each preset reached lives in the README and docs/experiments.md, not in the help.
    assert "NMI" not in out and "P@10" not in out and len(out.splitlines()) < 120


def test_width_for_a_model_without_one_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["train", "--data", "digits", "--model", "seed-ae", "--width", "8", "--epochs", "1"]
    assert main([*argv, "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "does not take width" in err and "Traceback" not in err


def test_auto_is_the_default_without_labels_and_adapts_to_tiny_grey_images() -> None:
    from latentsearch.cli.core import _config_from_args
    from latentsearch.data import load_data

    args = build_parser().parse_args(["train", "--data", "digits", "--out", "x"])
    cfg = _config_from_args(args, load_data("digits"))
    assert (cfg.model, cfg.objective) == ("resnet-s", "contrastive")
    aug = cfg.objective_kwargs["augment"]
    # 8x8 grey digits: gentle crops, brightness/contrast but no colour change, and no flips
    # (a mirrored 3 is no digit).
    assert aug["crop_scale"][0] >= 0.5 and aug["flip"] is False
    assert aug["jitter_p"] > 0 and aug["saturation"] == 0.0 and aug["grayscale_p"] == 0.0
    assert cfg.objective_kwargs["temperature"] == 0.5  # tiny images: a softer NT-Xent
    # Neighbour positives after a third of the epochs, from a queue of a fifth of the 1,365
    # training images; epochs given on the command line move the start with them.
    kwargs = cfg.objective_kwargs
    assert (kwargs["neighbour_weight"], kwargs["queue_size"]) == (0.5, 273)
    assert kwargs["neighbour_start_epoch"] == cfg.epochs // 3 > 0
    args = build_parser().parse_args(["train", "--epochs", "30", "--out", "x"])
    cfg = _config_from_args(args, load_data("digits"))
    assert (cfg.epochs, cfg.objective_kwargs["neighbour_start_epoch"]) == (30, 10)
    # With labels and no recipe named, the default stays the study's autoencoder + hint.
    args = build_parser().parse_args(["train", "--label-fraction", "1", "--out", "x"])
    assert _config_from_args(args, load_data("digits")).model == "seed-ae"


def test_train_and_up_give_photographs_the_same_recipe(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import numpy as np
    from PIL import Image

    from latentsearch.cli.core import _config_from_args
    from latentsearch.data import load_data
    from latentsearch.workflow import choose_auto_recipe

    rng = np.random.default_rng(0)
    for i in range(12):  # 160 px colour pictures: photographs, not thumbnails
        pixels = rng.integers(0, 256, size=(160, 200, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(tmp_path / f"p{i}.png")
    args = build_parser().parse_args(["train", "--data", str(tmp_path), "--out", "x"])
    data = load_data(str(tmp_path))
    cfg = _config_from_args(args, data)
    assert cfg.model_kwargs["texture_weight"] > 0 and cfg.model_kwargs["colour_weight"] > 0
    assert "photographs" in capsys.readouterr().out
    # up's choice (photographs decided while it lists the folder) is the same recipe.
    same = choose_auto_recipe(str(tmp_path), data, photographs=True).overrides
    assert same["model_kwargs"] == cfg.model_kwargs
    digits = _config_from_args(
        build_parser().parse_args(["train", "--data", "digits", "--out", "x"]),
        load_data("digits"),
    )
    assert "texture_weight" not in digits.model_kwargs


def test_train_says_plainly_when_the_model_is_worse_than_raw_pixels() -> None:
    from latentsearch.cli.core import pixel_verdict

    base = {"nmi": 0.7, "precision_at_10": 0.9}
    worse = pixel_verdict({"nmi": 0.6, "precision_at_10": 0.95, "baseline": base})
    assert worse.startswith("WARNING") and "clustering (NMI)" in worse and "P@10" in worse
    better = pixel_verdict({"nmi": 0.8, "precision_at_10": 0.95, "baseline": base})
    assert "beats raw pixels" in better


def test_cluster_command_saves_a_head_and_scores_it_beside_kmeans(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    argv = ["train", "--data", "digits", "--epochs", "2", "--width", "8", "--out", str(run)]
    assert main([*argv, "--no-evaluate"]) == 0
    assert main(["cluster", str(run), "--neighbours", "0"]) == 2
    assert "--neighbours must be at least 1" in capsys.readouterr().err
    assert not (run / "cluster_head.pt").exists()
    assert main(["cluster", str(run), "--neighbours", "5"]) == 0
    assert torch.load(run / "cluster_head.pt", weights_only=False)["config"]["n_neighbours"] == 5
    assert main(["cluster", str(run)]) == 0
    assert (run / "cluster_head.pt").exists()
    assert "head_nmi" in capsys.readouterr().out
    assert main(["evaluate", str(run), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert 0.0 <= result["head_nmi"] <= 1.0 and 0.0 <= result["nmi"] <= 1.0
    # SCAN with the encoder fine-tuned: a copy is trained and saved with the head; the run's
    # own encoder, and so its search scores, stay as they were.
    weights = sorted((run / "checkpoints").iterdir())
    before = [w.read_bytes() for w in weights]
    assert main(["cluster", str(run), "--finetune-epochs", "1"]) == 0
    assert "fine-tuned the encoder" in capsys.readouterr().out
    assert [w.read_bytes() for w in weights] == before
    assert "encoder_state" in torch.load(run / "cluster_head.pt", weights_only=False)
    assert main(["evaluate", str(run), "--json"]) == 0
    tuned = json.loads(capsys.readouterr().out)
    assert tuned["precision_at_10"] == pytest.approx(result["precision_at_10"])
    assert 0.0 <= tuned["head_nmi"] <= 1.0


def test_init_of_another_architecture_lists_the_mismatch_and_writes_nothing(
    tiny_run: Run, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "tuned"
    argv = ["train", "--model", "resnet-s", "--epochs", "1", "--init", str(tiny_run.path)]
    assert main([*argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "no tensor of" in err and "missing" in err and "Traceback" not in err
    assert not out.exists()


def test_temperature_overrides_the_recipe_and_is_refused_without_a_contrastive_objective(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from latentsearch.cli.core import _config_from_args
    from latentsearch.data import load_data

    args = build_parser().parse_args(["train", "--temperature", "0.3", "--out", "x"])
    cfg = _config_from_args(args, load_data("digits"))
    assert cfg.objective_kwargs["temperature"] == 0.3
    assert cfg.objective_kwargs["augment"]["flip"] is False  # the rest of the recipe stays
    assert "replaces the recipe's 0.5" in capsys.readouterr().out
    args = build_parser().parse_args(["train", "--epochs", "3", "--out", "x"])
    cfg = _config_from_args(args, load_data("digits"))
    out = capsys.readouterr().out
    assert cfg.epochs == 3 and "--epochs 3 replaces the recipe's" in out, out
    argv = ["train", "--model", "seed-ae", "--temperature", "0.3", "--epochs", "1"]
    assert main([*argv, "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "--temperature is for the contrastive objective" in err and "Traceback" not in err
    assert not (tmp_path / "r").exists()


def test_neighbour_flags_reach_the_contrastive_objective(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from latentsearch.cli.core import _config_from_args
    from latentsearch.data import load_data

    argv = ["train", "--neighbour-weight", "0.5", "--neighbour-queue", "512", "--out", "x"]
    cfg = _config_from_args(build_parser().parse_args(argv), load_data("digits"))
    assert cfg.objective_kwargs["neighbour_weight"] == 0.5
    assert cfg.objective_kwargs["queue_size"] == 512
    assert cfg.objective_kwargs["temperature"] == 0.5  # the recipe's stays
    assert cfg.objective_kwargs["neighbour_start_epoch"] == cfg.epochs // 3  # the recipe's
    argv = ["train", "--neighbour-weight", "0.5", "--neighbour-start-epoch", "31", "--out", "x"]
    cfg = _config_from_args(build_parser().parse_args(argv), load_data("digits"))
    assert cfg.objective_kwargs["neighbour_start_epoch"] == 30  # stored 0-based
    # digits trains on 1,365 images: a queue of 8,192 would hold old copies of the batch's
    # own images, so it is refused before anything is written.
    argv = ["train", "--neighbour-queue", "8192", "--epochs", "1", "--out", str(tmp_path / "r")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "--neighbour-queue is 8192, more than the 1365 training images" in err
    assert "use --neighbour-queue 273" in err and "Traceback" not in err
    assert not (tmp_path / "r").exists()
    argv = ["train", "--neighbour-start-epoch", "0", "--epochs", "1"]
    assert main([*argv, "--out", str(tmp_path / "r")]) == 2
    assert "--neighbour-start-epoch counts from 1" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()
    argv = ["train", "--model", "seed-ae", "--neighbour-weight", "0.5", "--epochs", "1"]
    assert main([*argv, "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "--neighbour-weight is for the contrastive objective" in err
    assert not (tmp_path / "r").exists()
    argv = ["train", "--neighbour-weight", "2", "--epochs", "1", "--out", str(tmp_path / "r")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "neighbour" in err and "[0, 1]" in err and "Traceback" not in err
    assert not (tmp_path / "r").exists()


def test_changing_autos_network_says_its_epochs_were_budgeted_for_another(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from latentsearch.cli.core import _config_from_args
    from latentsearch.data import load_data

    data = load_data("digits")
    for argv, warned in (
        (["--stage-blocks", "2"], True),
        (["--width", "32"], True),
        (["--width", "16"], False),  # the recipe's own width: nothing changes
        (["--width", "32", "--epochs", "3"], False),  # the user chose the epochs too
    ):
        args = build_parser().parse_args(["train", *argv, "--out", "x"])
        cfg = _config_from_args(args, data)
        out = capsys.readouterr().out
        assert ("epochs were budgeted for; --epochs sets them" in out) is warned, (argv, out)
        assert cfg.epochs == (3 if "--epochs" in argv else 200)  # digits: the budget's cap
    _config_from_args(build_parser().parse_args(["train", "--width", "32", "--out", "x"]))
    assert "budgeted" not in capsys.readouterr().out  # no data, so no recipe and no budget


def test_under_torchrun_only_rank_0_says_what_replaces_the_recipe(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from latentsearch.cli.core import _config_from_args
    from latentsearch.data import load_data

    argv = ["train", "--temperature", "0.3", "--epochs", "3", "--out", "x"]
    for rank, expected in (("1", ""), ("0", "--epochs 3 replaces the recipe's")):
        monkeypatch.setenv("RANK", rank)
        monkeypatch.setenv("WORLD_SIZE", "2")
        cfg = _config_from_args(build_parser().parse_args(argv), load_data("digits"))
        out = capsys.readouterr().out
        assert cfg.epochs == 3 and cfg.objective_kwargs["temperature"] == 0.3  # same config
        assert expected in out and ("replaces" in out) == (rank == "0"), out
        assert ("auto recipe:" in out) == (rank == "0"), out


def test_crop_min_sets_the_crops_and_keeps_the_other_augmentations(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from latentsearch.cli.core import _config_from_args
    from latentsearch.data import load_data
    from latentsearch.runs import TrainConfig

    digits = load_data("digits")
    cfg = _config_from_args(build_parser().parse_args(["train", "--out", "x"]), digits)
    recipe = cfg.objective_kwargs["augment"]
    argv = ["train", "--crop-min", "0.3", "--out", "x"]
    cfg = _config_from_args(build_parser().parse_args(argv), digits)
    assert cfg.objective_kwargs["augment"] == {**recipe, "crop_scale": [0.3, 1.0]}
    assert f"--crop-min 0.3 replaces the recipe's {recipe['crop_scale'][0]:g}" in (
        capsys.readouterr().out
    )
    # The supervised preset names no augmentations: the classification objective's own
    # defaults (no colour jitter) stay, only the crops change, and the config survives JSON
    # unchanged, as a resumed run compares them.
    argv = ["train", "--preset", "supervised", "--crop-min", "0.5", "--out", "x"]
    cfg = _config_from_args(build_parser().parse_args(argv), digits)
    augment = cfg.objective_kwargs["augment"]
    assert augment["crop_scale"] == [0.5, 1.0] and augment["jitter_p"] == 0.0
    assert TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    for bad, message in [
        (["--crop-min", "0"], "--crop-min is a share of the image's area in (0, 1], got 0"),
        (["--crop-min", "1.5"], "in (0, 1], got 1.5"),
        (["--model", "seed-ae", "--crop-min", "0.5"], "--crop-min is for objectives that"),
    ]:
        assert main(["train", *bad, "--epochs", "1", "--out", str(tmp_path / "r")]) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, err
        assert not (tmp_path / "r").exists()


def test_train_on_a_folder_with_a_name_that_is_not_utf8(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    import numpy as np
    from PIL import Image

    monkeypatch.setenv("LATENTSEARCH_CACHE", str(tmp_path / "cache"))
    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    for name in ["a.png", "b.png", os.fsdecode(b"caf\xe9.png"), os.fsdecode(b"\xe9t\xe9.png")]:
        Image.fromarray(rng.integers(0, 255, (10, 10, 3), dtype=np.uint8)).save(photos / name)
    argv = ["train", "--data", str(photos), "--model", "seed-ae", "--image-size", "8"]
    argv += ["--epochs", "1", "--batch-size", "2", "--out", str(tmp_path / "run")]
    assert main(argv) == 0
    assert "run saved to" in capsys.readouterr().out
