"""torch.distributed on the CPU (gloo): the global Bayesian prior, and a 2-process train stage under torchrun."""
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import ROOT, params_yaml

from weldnet.photos.inputs import resized_photos
from weldnet.photos.shards import plan_shards, write_order, write_shards

pytestmark = pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                                reason="torch.distributed with gloo is not available")

# true-class probabilities 1/2, 1/4, 1/2, 1/8, 1/4, 1/2: cross entropies log 2 x (1, 2, 1, 3, 2, 1)
TARGETS = [0, 0, 1, 0, 2, 0]
TRUE_P = [1 / 2, 1 / 4, 1 / 2, 1 / 8, 1 / 4, 1 / 2]


def batch_logits() -> torch.Tensor:
    rows = []
    for target, p in zip(TARGETS, TRUE_P):
        row = [(1 - p) / 2] * 3
        row[target] = p
        rows.append(row)
    return torch.tensor(rows, dtype=torch.float64).log()


def _prior_rank(rank: int, world: int, init: str, out: str) -> None:
    import torch.distributed as dist

    from weldnet.core.distributed import global_sum
    from weldnet.strategies.losses import BayesianCrossEntropy

    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        mine = np.array_split(np.arange(len(TARGETS)), world)[rank]       # weldnet.photos.dataset.RankBatches' parts
        logits = batch_logits()[mine].clone().requires_grad_()
        loss = BayesianCrossEntropy([4, 1, 1])(logits, torch.tensor(TARGETS)[mine])
        share = len(mine) / len(TARGETS)
        value = global_sum((loss.detach() * share).reshape(1))[0]           # what weldnet.train.loop logs
        (loss * share).backward()                                            # each rank's part of the gradient
        torch.save({"rows": mine, "value": value, "grad": logits.grad}, Path(out) / f"rank-{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_the_bayesian_prior_is_the_global_batch_s_in_a_2_process_group(tmp_path):
    import torch.multiprocessing as mp

    # spawned, not forked: a child forked after torch's OpenMP threads ran in this process (any earlier test that
    # trained) can hang in its first parallel region
    mp.start_processes(_prior_rank, args=(2, f"file://{tmp_path / 'init'}", str(tmp_path)), nprocs=2,
                       start_method="spawn")
    parts = [torch.load(tmp_path / f"rank-{r}.pt", weights_only=False) for r in range(2)]
    # by hand: class counts (4, 1, 1) over the global batch, K = 3:
    # (1/3) [(1 + 2 + 3 + 1) log 2 / 4 + 1 log 2 / 1 + 2 log 2 / 1] = (19/12) log 2
    hand = 19 / 12 * math.log(2)
    for part in parts:
        assert part["value"].item() == pytest.approx(hand, rel=1e-12)
    # and the ranks' gradients are the single process's gradient of the global batch, row for row
    from weldnet.strategies.losses import BayesianCrossEntropy

    logits = batch_logits().requires_grad_()
    BayesianCrossEntropy([4, 1, 1])(logits, torch.tensor(TARGETS)).backward()
    for part in parts:
        torch.testing.assert_close(part["grad"], logits.grad[torch.as_tensor(part["rows"])], rtol=1e-12, atol=0)


# ---------------------------------------------------------------- a 2-process train stage under torchrun
N_PHOTOS, STORED, SIZE = 240, 24, 16


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """A working directory holding params.yaml, a split of 240 photos (1 in 6 flawed) and their shards (both sizes)."""
    work = tmp_path_factory.mktemp("distributed")
    (work / "params.yaml").write_text(params_yaml())
    rng = np.random.default_rng(0)
    labels = (np.arange(N_PHOTOS) % 6 == 0).astype(np.int64)
    images = rng.integers(0, 90, size=(N_PHOTOS, STORED, STORED, 3), dtype=np.uint8)
    images[labels == 1, 5:19, 5:19] = 240
    names = [f"b/{k}.jpg" for k in range(N_PHOTOS)]
    index = plan_shards(names, ["bluebox"] * N_PHOTOS, 100)
    (work / "processed").mkdir()
    ordered = write_order(index)
    position = {name: k for k, name in enumerate(names)}
    write_shards(work / "processed", ordered, (images[position[n]] for n in ordered["image"]), STORED)
    index.to_csv(work / "processed" / "index.csv", index=False)
    (work / "inputs").mkdir()                                   # what the inputs stage writes: the model's size
    write_shards(work / "inputs", ordered, resized_photos(ordered, work / "processed", SIZE), SIZE)
    index.to_csv(work / "inputs" / "index.csv", index=False)
    pd.DataFrame({"image": names, "rig": "bluebox", "label": labels,
                  "class": np.where(labels == 1, "no_clamp", "clamp_detected"),
                  "split": np.where(np.arange(N_PHOTOS) % 4 == 0, "val", "train")}).to_csv(work / "split.csv",
                                                                                        index=False)
    config = {"name": "tiny", "strategy": {"loss": "bayesian", "sampler": "stratified"}, "loss": "bayesian",
              "model": {"arch": "small_cnn", "input_size": SIZE, "width": 4},
              "train": {"epochs": 10, "batch_size": 16, "lr": 0.05, "seeds": [0], "nproc_per_node": 2},
              "device": "cpu"}
    (work / "tiny.json").write_text(json.dumps(config))
    return work


def train_command(tag: str) -> list[str]:
    return [sys.executable, "-m", "stages.train", "--config", "tiny.json", "--split", "split.csv", "--shards",
            "inputs", "--out", f"out-{tag}", "--live", f"live-{tag}", "--checkpoints", f"ckpt-{tag}"]


def env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT), "WELDNET_PROGRESS": "off"}


def train(work: Path, tag: str) -> str:
    result = subprocess.run(train_command(tag), cwd=work, env=env(), capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


def weights(work: Path, tag: str) -> dict[str, torch.Tensor]:
    return torch.load(work / f"out-{tag}" / "seed-0" / "model.pt", weights_only=True)


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_2_process_run_trains_and_gives_the_same_model_and_logs_run_after_run(workdir):
    out = train(workdir, "first")
    assert "2 processes under torchrun" in out and "(2 processes)" in out
    assert out.count("selected epoch") == 1                   # rank 0 alone prints (and writes)
    train(workdir, "second")
    assert same(weights(workdir, "first"), weights(workdir, "second"))
    config = json.loads((workdir / "out-first" / "config.json").read_text())
    assert config["world_size"] == 2 and config["train"]["nproc_per_node"] == 2
    assert config["seeds"] == json.loads((workdir / "out-second" / "config.json").read_text())["seeds"]
    for name in ("train/loss.tsv", "val/per_class_accuracy.tsv"):
        first = (workdir / "live-first/seed-0/plots/metrics" / name).read_text()
        assert first == (workdir / "live-second/seed-0/plots/metrics" / name).read_text()
    steps = (workdir / "live-first/seed-0/plots/metrics/train/loss.tsv").read_text().splitlines()[1:]
    assert len(steps) == 10 * -(-180 // 16)                   # every global step logged once: 180 photos, batch 16
    assert not (workdir / "ckpt-first").exists()


def test_a_killed_2_process_run_resumes_to_the_same_model(workdir):
    if not (workdir / "out-first").exists():
        train(workdir, "first")
    checkpoint = workdir / "ckpt-killed" / "seed-0.pt"
    proc = subprocess.Popen(train_command("killed"), cwd=workdir, env=env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 600
    while not checkpoint.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)                       # torchrun and both ranks, at once
    proc.wait()
    assert checkpoint.exists(), "the run finished (or failed) before it could be killed"
    done = torch.load(checkpoint, weights_only=True)["epoch"]
    assert done < 10, "the run finished before it could be killed"
    out = train(workdir, "killed")
    assert "resuming from ckpt-killed/seed-0.pt after epoch" in out
    assert same(weights(workdir, "first"), weights(workdir, "killed"))
    loss = "live-{}/seed-0/plots/metrics/train/loss.tsv"
    assert (workdir / loss.format("first")).read_text() == (workdir / loss.format("killed")).read_text()
