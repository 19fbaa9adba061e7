"""Distributed training (torchrun, gloo on the CPU): the thin layer, and N ranks = 1 process.

Multi-process tests start two ranks on this machine, each with one thread: with
``torch.multiprocessing`` (one optimisation step, collectives) or with ``torchrun`` as a
subprocess (the command line end to end). Every rendezvous uses a free port and a short
collective timeout, so a broken test fails in seconds instead of hanging.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F

from latentsearch import distributed
from latentsearch.data import DataSplits, ImageData
from latentsearch.distributed import DistContext, DistributedError
from latentsearch.errors import ConfigError
from latentsearch.objectives import nt_xent
from latentsearch.runs import TrainConfig, best_epoch, checkpoints, load_run, read_history
from latentsearch.training import batch_bounds, build_model, train

WORLD = 2
TIMEOUT_S = 600  # generous bound on one launch (busy machines); collectives time out in 20-30 s


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _rank_env(rank: int, world: int, port: int) -> None:
    os.environ.update(
        RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_RANK=str(rank),
        LOCAL_WORLD_SIZE=str(world),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        LATENTSEARCH_DIST_TIMEOUT="20",
    )
    torch.set_num_threads(1)


def _spawn(fn: Any, *args: Any) -> None:
    """Runs ``fn(rank, port, *args)`` on ``WORLD`` ranks; an error on any rank fails the test."""
    mp.spawn(fn, args=(_free_port(), *args), nprocs=WORLD, join=True)


# ---------------------------------------------------------------------------- the thin layer
def test_a_plain_process_is_rank_0_of_1(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    ctx = distributed.context()
    assert ctx == DistContext(rank=0, world_size=1, local_rank=0, local_world_size=1)
    assert ctx.is_main and not ctx.enabled
    assert distributed.setup(torch.device("cpu")) == ctx  # joins nothing
    assert not distributed.is_active()
    x = torch.arange(6.0).reshape(3, 2)
    gathered, offset = distributed.all_gather_cat(x)
    assert gathered is x and offset == 0
    assert distributed.all_reduce_sum(x) is x
    assert distributed.broadcast_object({"a": 1}) == {"a": 1}
    distributed.check_same(5, what="anything")  # nothing to disagree with
    distributed.barrier()


def test_context_reads_torchruns_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    ctx = distributed.context()
    assert (ctx.rank, ctx.world_size, ctx.local_rank, ctx.local_world_size) == (3, 4, 1, 2)
    assert ctx.enabled and not ctx.is_main
    monkeypatch.setenv("RANK", "4")
    with pytest.raises(DistributedError, match="inconsistent"):
        distributed.context()
    monkeypatch.setenv("RANK", "one")
    with pytest.raises(DistributedError, match="RANK='one' is not an integer"):
        distributed.context()


def test_setup_without_a_rendezvous_address_says_to_use_torchrun(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    monkeypatch.delenv("MASTER_PORT", raising=False)
    with pytest.raises(DistributedError, match="torchrun"):
        distributed.setup(torch.device("cpu"))


@pytest.mark.parametrize("n", [0, 1, 5, 7, 64])
@pytest.mark.parametrize("world", [1, 2, 3, 8])
def test_shards_are_contiguous_cover_every_item_once_and_differ_by_at_most_one(
    n: int, world: int
) -> None:
    shards = [distributed.shard(n, DistContext(rank=r, world_size=world)) for r in range(world)]
    items = [i for s in shards for i in range(n)[s]]
    assert items == list(range(n))
    sizes = [s.stop - s.start for s in shards]
    assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)


def test_a_last_batch_too_small_to_split_joins_the_one_before() -> None:
    assert batch_bounds(10, 4) == [(0, 4), (4, 8), (8, 10)]
    assert batch_bounds(10, 4, min_last=4) == [(0, 4), (4, 10)]  # 2 ranks × 2 images
    assert batch_bounds(9, 4) == [(0, 4), (4, 9)]  # one image alone: never


def test_world_size_and_sync_batchnorm_in_the_config() -> None:
    old = TrainConfig().to_dict()
    del old["world_size"], old["sync_batchnorm"]  # a config.json from before this change
    assert TrainConfig.from_dict(old) == TrainConfig()
    assert TrainConfig().world_size == 1 and not TrainConfig().sync_batchnorm
    with pytest.raises(ConfigError, match="at least 2 per process"):
        TrainConfig(batch_size=6, world_size=4)
    with pytest.raises(ConfigError, match="world_size"):
        TrainConfig(world_size=0)


# ---------------------------------------------------------------------------- collectives
def _collectives_worker(rank: int, port: int) -> None:
    _rank_env(rank, WORLD, port)
    ctx = distributed.setup(torch.device("cpu"))
    try:
        torch.manual_seed(0)  # the same global tensors on every rank
        b, p, temperature = 7, 5, 0.3  # 7 images: shares of 4 and 3
        z1, z2 = torch.randn(b, p), torch.randn(b, p)  # nt_xent computes in float32
        g1, g2 = z1.clone().requires_grad_(), z2.clone().requires_grad_()
        whole = nt_xent(g1, g2, temperature)
        whole.backward()

        mine = distributed.shard(b, ctx)
        l1 = z1[mine].clone().requires_grad_()
        l2 = z2[mine].clone().requires_grad_()
        local = nt_xent(l1, l2, temperature, gather=True)
        weighted = local * (len(l1) * WORLD / b)  # as the training loop weights a share
        weighted.backward()
        mean = distributed.all_reduce_sum(weighted.detach()) / WORLD  # what DDP optimises
        torch.testing.assert_close(mean, whole.detach(), atol=1e-6, rtol=0)
        # DDP divides the summed gradients by the world size.
        assert l1.grad is not None and l2.grad is not None
        torch.testing.assert_close(l1.grad / WORLD, g1.grad[mine], atol=1e-6, rtol=0)
        torch.testing.assert_close(l2.grad / WORLD, g2.grad[mine], atol=1e-6, rtol=0)
        # Without the gather each rank would only contrast its own views.
        alone = nt_xent(z1[mine], z2[mine], temperature)
        assert not torch.allclose(alone, local)

        # SyncBatchNormCPU on a share = BatchNorm on the whole batch, forward and backward.
        x = torch.randn(b, 3, 4, 4, dtype=torch.float64)
        plain = torch.nn.BatchNorm2d(3).double()
        xa = x.clone().requires_grad_()
        ya = plain(xa)
        F.mse_loss(ya, torch.ones_like(x)).backward()
        synced = distributed.convert_sync_batchnorm(
            torch.nn.Sequential(torch.nn.BatchNorm2d(3).double()), torch.device("cpu")
        )
        assert isinstance(synced[0], distributed.SyncBatchNormCPU)
        xs = x[mine].clone().requires_grad_()
        y = synced(xs)
        torch.testing.assert_close(y, ya[mine].detach(), atol=1e-10, rtol=0)
        share = len(xs) * WORLD / b
        (F.mse_loss(y, torch.ones_like(y)) * share).backward()
        assert xs.grad is not None and xa.grad is not None
        torch.testing.assert_close(xs.grad / WORLD, xa.grad[mine], atol=1e-10, rtol=0)
        for name in ("running_mean", "running_var"):
            torch.testing.assert_close(getattr(synced[0], name), getattr(plain, name))

        distributed.check_same(len(x), what="images")
        with pytest.raises(DistributedError, match="rank 0: 0, rank 1: 1"):
            distributed.check_same(rank, what="images")
        summed = distributed.all_reduce_dict({"a": 1.0, **({"b": 2.0} if rank else {})})
        assert summed == {"a": 2.0, "b": 2.0}
        assert distributed.broadcast_object(f"from {rank}") == "from 0"
    finally:
        distributed.teardown()


def test_gathered_nt_xent_and_synced_batchnorm_equal_the_whole_batch() -> None:
    """On two ranks with uneven shares (4 + 3): loss and gradients of the whole batch."""
    _spawn(_collectives_worker)


# ---------------------------------------------------------------------------- one step
def _tiny_data(n: int = 41) -> DataSplits:
    """``n`` random 8×8 grey images in 3 classes (float64-free, uint8 pixels)."""
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (n, 8, 8, 1), dtype=np.uint8)
    labels = np.arange(n, dtype=np.int64) % 3
    images = ImageData(
        pixels=pixels, labels=labels, class_names=["a", "b", "c"], ids=[str(i) for i in range(n)]
    )
    return DataSplits(train=images, test=images.subset(np.arange(9)), name="tiny")


ONE_STEP = TrainConfig(
    data="tiny",
    model="seed-ae",
    epochs=1,
    batch_size=64,  # above the fit set: one optimisation step
    optimizer="sgd",  # linear in the gradient (Adam's first step is ~sign(g))
    lr=0.5,
    sync_batchnorm=True,
    threads=1,
    precision="fp32",
)


def _one_step_worker(rank: int, port: int, out: str, data: DataSplits) -> None:
    _rank_env(rank, WORLD, port)
    try:
        run = train(ONE_STEP, out, progress=False, data=data)
        assert run.config.world_size == WORLD
    finally:
        distributed.teardown()


def test_one_step_on_two_ranks_equals_one_step_on_the_whole_batch(tmp_path: Path) -> None:
    """seed-ae with SyncBatchNorm, an odd batch (shares of 20 + 19): weights equal to 1e-5."""
    data = _tiny_data()
    one = train(ONE_STEP, tmp_path / "one", progress=False, data=data)
    _spawn(_one_step_worker, str(tmp_path / "two"), data)
    two = load_run(tmp_path / "two")
    assert two.config.world_size == WORLD and one.config.world_size == 1
    assert json.loads((tmp_path / "two" / "config.json").read_text())["world_size"] == WORLD
    a, b = one.model.state_dict(), two.model.state_dict()
    assert a.keys() == b.keys()  # SyncBatchNorm keeps BatchNorm's names
    for name, tensor in a.items():
        torch.testing.assert_close(b[name], tensor, atol=1e-5, rtol=0, msg=name)
    torch.manual_seed(ONE_STEP.seed)
    fresh = build_model(ONE_STEP, data.train, 0).state_dict()
    assert max(float((a[k].float() - fresh[k].float()).abs().max()) for k in a) > 1e-3  # moved
    h1, h2 = one.history[0], json.loads((tmp_path / "two" / "metrics.jsonl").read_text())
    assert h2["world_size"] == WORLD
    assert h2["train"]["loss"] == pytest.approx(h1["train"]["loss"], abs=1e-5)


# ---------------------------------------------------------------------------- torchrun
def _torchrun(args: list[str], tmp_path: Path, *, nproc: int = WORLD) -> tuple[int, str, float]:
    """Runs ``torchrun --standalone --nproc_per_node nproc ARGS``: (exit code, output, s)."""
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "LATENTSEARCH_DIST_TIMEOUT": "30",
        "PYTHONUNBUFFERED": "1",
    }
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
        *args,
    ]
    t0 = time.perf_counter()
    done = subprocess.run(
        cmd, capture_output=True, text=True, timeout=TIMEOUT_S, env=env, cwd=tmp_path
    )
    return done.returncode, done.stdout + done.stderr, time.perf_counter() - t0


DIGITS_ARGS = [
    "--data",
    "digits",
    "--model",
    "seed-ae",
    "--objective",
    "reconstruction",
    "--label-fraction",
    "0.5",
    "--batch-size",
    "64",
    "--seed",
    "3",
    "--threads",
    "1",
    "--precision",
    "fp32",
]


def test_two_processes_train_resume_and_score_digits_like_one(tmp_path: Path) -> None:
    from latentsearch.cli import main

    assert main(["train", *DIGITS_ARGS, "--epochs", "3", "--out", str(tmp_path / "one")]) == 0
    one = json.loads((tmp_path / "one" / "eval.json").read_text())

    two = tmp_path / "two"
    train_args = ["-m", "latentsearch", "train", *DIGITS_ARGS, "--out", str(two)]
    code, output, _ = _torchrun([*train_args, "--epochs", "2", "--no-evaluate"], tmp_path)
    assert code == 0, output
    # Rank 0 keeps the newest checkpoint and the best validation loss's (last-best).
    kept = {best_epoch(read_history(two)), 2} - {None}
    assert [p.name for p in checkpoints(two)] == [f"epoch-00{e}.pt" for e in sorted(kept)]
    code, output, _ = _torchrun([*train_args, "--epochs", "3", "--resume"], tmp_path)
    assert code == 0, output
    assert output.count("epoch 3:") == 1  # rank 0 alone prints
    config = json.loads((two / "config.json").read_text())
    assert config["world_size"] == WORLD and config["epochs"] == 3
    history = [json.loads(line) for line in (two / "metrics.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == [1, 2, 3]
    assert all(h["world_size"] == WORLD for h in history)
    scored = json.loads((two / "eval.json").read_text())
    # Not bit-equal (BatchNorm statistics per rank, each rank's augmentation stream), so
    # "like one process": within what two seeds of one process differ by on digits.
    assert abs(scored["nmi"] - one["nmi"]) < 0.05, (scored["nmi"], one["nmi"])
    assert abs(scored["precision_at_10"] - one["precision_at_10"]) < 0.03
    assert scored["nmi"] > scored["baseline"]["nmi"] - 0.1  # it learned something


CRASH_SCRIPT = """
import os, sys
import latentsearch.objectives as objectives
from latentsearch.cli import main

steps = {"n": 0}
original = objectives.ReconstructionObjective.__call__

def crashing(self, model, batch):
    steps["n"] += 1
    if os.environ["RANK"] == "1" and steps["n"] == 3:
        os._exit(7)  # dies like a killed process: no message, no clean-up
    return original(self, model, batch)

objectives.ReconstructionObjective.__call__ = crashing
sys.exit(main(sys.argv[1:]))
"""


def test_a_rank_that_dies_ends_the_job_with_an_error_not_a_hang(tmp_path: Path) -> None:
    script = tmp_path / "crash.py"
    script.write_text(textwrap.dedent(CRASH_SCRIPT))
    args = [str(script), "train", *DIGITS_ARGS, "--epochs", "2", "--out", str(tmp_path / "r")]
    # A hang would run into the collective timeout (30 s) or _torchrun's; no timed assert.
    code, output, _ = _torchrun(args, tmp_path)
    assert code != 0
    assert "exitcode:7" in output.replace(" ", ""), output  # torchrun names the rank that died
    assert not checkpoints(tmp_path / "r")  # it died in the first epoch: nothing written


def test_a_rank_that_cannot_read_its_data_reports_it_like_one_process(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-folder"
    args = ["train", "--data", str(missing), "--epochs", "1", "--threads", "1"]
    single = subprocess.run(
        [sys.executable, "-m", "latentsearch", *args, "--out", str(tmp_path / "a")],
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )
    assert single.returncode == 2
    message = single.stderr.strip().splitlines()[-1]
    assert message.startswith("latentsearch train: error:") and str(missing) in message
    code, output, _ = _torchrun(
        ["-m", "latentsearch", *args, "--out", str(tmp_path / "b")], tmp_path
    )
    assert code != 0
    assert message in output


def test_a_resume_with_nothing_to_resume_fails_on_every_rank_with_rank_0s_error(
    tmp_path: Path,
) -> None:
    code, output, _ = _torchrun(
        ["-m", "latentsearch", "train", *DIGITS_ARGS, "--resume", "--out", str(tmp_path / "r")],
        tmp_path,
    )
    assert code != 0
    assert output.count("nothing to resume") == WORLD, output
    assert "(from rank 0)" in output
