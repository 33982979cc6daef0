import math
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

from weldnet.core.config import ParamError, TrainingError
from weldnet.core.params import LossParams, ModelParams, SamplingParams, TrainParams
from weldnet.photos.dataset import PhotoDataset
from weldnet.strategies.losses import build_loss
from weldnet.strategies.models import build_model
from weldnet.strategies.sampling import build_loader
from weldnet.train.device import precision_for, resolve_device
from weldnet.train.loop import FitSettings, StepSettings, fit, task_input, train_one_epoch
from weldnet.train.optim import Optimiser, build_lr_schedule, build_optimizer
from weldnet.train.predict import predict_logits, validation_scores

CPU = torch.device("cpu")


def rates(schedule: str, steps: int = 100, lr: float = 0.1, warmup: float = 0.0) -> list[float]:
    """The learning rate of each of ``steps`` optimiser steps under ``schedule``, as the loop trains them."""
    model = nn.Linear(2, 1)
    optimizer = build_optimizer(model, "sgd", lr, momentum=0.9)
    optimiser = Optimiser(optimizer, build_lr_schedule(schedule, optimizer, steps, warmup))
    seen = []
    for _ in range(steps):
        seen.append(optimiser.lr)
        optimiser.step(model(torch.ones(1, 2)).sum())
    return seen


def test_lr_schedules_by_hand():
    assert rates("constant") == [0.1] * 100
    cosine = rates("cosine")
    assert cosine[0] == pytest.approx(0.1)
    assert cosine[50] == pytest.approx(0.05)
    assert cosine[25] == pytest.approx(0.05 * (1 + math.cos(math.pi / 4)))
    assert cosine[99] == pytest.approx(0.05 * (1 + math.cos(math.pi * 99 / 100)))
    one_cycle = rates("one_cycle", warmup=0.2)           # the audit's: from peak / 25 up to the peak, then down
    assert one_cycle[0] == pytest.approx(0.1 / 25)
    assert max(one_cycle) == pytest.approx(0.1) and one_cycle.index(max(one_cycle)) == 19
    assert one_cycle[-1] == pytest.approx(0.1 / 25 / 1e4)
    with pytest.raises(ParamError, match="valid: constant, cosine, one_cycle"):
        rates("step")
    with pytest.raises(ParamError, match="valid: sgd, adam, adamw"):
        build_optimizer(nn.Linear(2, 1), "lbfgs", 0.1)


def test_device_choice():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ParamError, match="valid: auto, cpu, cuda"):
        resolve_device("tpu")


def test_the_loader_yields_the_strategy_sampler_histogram():
    labels = np.array([0] * 90 + [1] * 10)
    data = PhotoDataset(torch.zeros((len(labels), 2, 2, 3), dtype=torch.uint8), torch.as_tensor(labels))

    def minority_share(sampler: str) -> float:
        loader = build_loader(data, labels, 10, sampler, 0, SamplingParams(target_ratio=0.5))
        drawn = np.concatenate([targets.numpy() for _, targets in loader])
        return float(np.mean(drawn == 1))
    assert minority_share("none") == pytest.approx(0.1)
    assert minority_share("undersample") == pytest.approx(0.5)
    assert minority_share("oversample") == pytest.approx(0.5, abs=0.02)


def tiny_data(seed: int = 0):
    """Bright-square photos (class 1) among plain ones (class 0), 16x16 uint8 NHWC."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 60, size=(48, 16, 16, 3), dtype=np.uint8)
    y = np.array([0] * 36 + [1] * 12)
    x[y == 1, 4:12, 4:12] = 250
    return torch.from_numpy(x), y


def fit_task(model, loss_fn, x, y, params: TrainParams, log, checkpoints=None, every_s: float = 30.0):
    """fit on a class-labelled tiny data set, validated on itself."""
    loader = build_loader(PhotoDataset(x, torch.as_tensor(y)), y, params.batch_size, "none", 0, SamplingParams())
    run = FitSettings(CPU, task_input(16, params.flip),
                      lambda m: validation_scores(predict_logits(m, x, CPU, 16), y, ["a", "b"]), log, seed=0,
                      name="test", checkpoint_every_s=every_s)
    return fit(model, loss_fn, loader, run, params, checkpoints)


def run_fit(params: TrainParams, loss: str = "cross_entropy", **kwargs):
    x, y = tiny_data()
    torch.manual_seed(0)
    model = build_model(ModelParams(width=4, input_size=16), 2)
    logs: list = []
    result = fit_task(model, build_loss(loss, np.bincount(y).tolist(), LossParams()), x, y, params,
                      lambda s, k, v: logs.append((s, k, v)), **kwargs)
    return result, logs


PARAMS = TrainParams(epochs=3, batch_size=8, lr=0.05)


def test_training_is_deterministic_and_logs_every_step():
    first, logs = run_fit(PARAMS)
    second, _ = run_fit(PARAMS)
    assert first.history == second.history
    assert all(torch.equal(first.state[k], second.state[k]) for k in first.state)
    steps = [s for s, k, _ in logs if k == "train/loss"]
    assert steps == list(range(3 * 6))  # 48 cases in batches of 8, every step logged
    assert [v for _, k, v in logs if k == "epoch"] == [1, 2, 3]
    assert {k for _, k, _ in logs} >= {"val/cross_entropy", "val/per_class_accuracy", "val/recall/b"}


def test_a_run_resumed_from_its_checkpoint_ends_like_an_uninterrupted_one():
    uninterrupted, _ = run_fit(PARAMS)
    saved: list[dict] = []

    def save_then_die(state: dict) -> None:
        saved.append({k: v for k, v in state.items()})
        if state["epoch"] == 1:
            raise KeyboardInterrupt  # killed during the second epoch

    with pytest.raises(KeyboardInterrupt):
        run_fit(PARAMS, checkpoints=(save_then_die, lambda: None))
    checkpoint = torch.load(_roundtrip(saved[-1]), weights_only=True)
    resumed, _ = run_fit(PARAMS, checkpoints=(lambda state: None, lambda: checkpoint))
    assert resumed.history == uninterrupted.history
    assert resumed.best_epoch == uninterrupted.best_epoch
    assert all(torch.equal(resumed.state[k], uninterrupted.state[k]) for k in resumed.state)


def _roundtrip(state: dict):
    import io
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return buffer


class NanAfter(nn.Module):
    def __init__(self, steps: int):
        super().__init__()
        self.calls, self.steps = 0, steps

    def forward(self, logits, target):
        self.calls += 1
        loss = nn.functional.cross_entropy(logits, target)
        return loss * float("nan") if self.calls > self.steps else loss


@pytest.mark.parametrize("every_s, saved_after", [(3600.0, [1, 4]), (0.0, [1, 2, 3, 4])])
def test_a_fit_checkpoints_after_its_first_and_last_epoch_and_between_them_on_a_clock(every_s, saved_after):
    saved: list[int] = []
    run_fit(TrainParams(epochs=4, batch_size=8, lr=0.05), checkpoints=(lambda state: saved.append(state["epoch"]),
                                                                       lambda: None), every_s=every_s)
    assert saved == saved_after


def test_a_nan_loss_stops_training_naming_strategy_and_step():
    x, y = tiny_data()
    model = build_model(ModelParams(width=4, input_size=16), 2)
    logs: list = []
    with pytest.raises(TrainingError, match="strategy 'test': the loss became nan at step 4; lower train.lr"):
        fit_task(model, NanAfter(4), x, y, PARAMS, lambda *a: logs.append(a))
    assert [s for s, k, _ in logs if k == "train/loss"] == [0, 1, 2, 3]     # the steps before it are logged


def test_tiny_model_learns_the_bright_square():
    result, logs = run_fit(TrainParams(epochs=8, batch_size=8, lr=0.05))
    best = max(v for _, k, v in logs if k == "val/per_class_accuracy")
    assert best > 0.9


def test_the_normed_head_outputs_cosines():
    from weldnet.strategies.models import NormedLinear

    head = NormedLinear(2, 2)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[3.0, 0.0], [1.0, 1.0]]))
    out = head(torch.tensor([[0.0, 2.0], [-5.0, 0.0]]))
    s = 2 ** -0.5
    torch.testing.assert_close(out, torch.tensor([[0.0, s], [-1.0, -s]]))
    model = build_model(ModelParams(width=4, input_size=16, head="normed"), 3)
    assert isinstance(model.classifier[-1], NormedLinear)
    logits = model(torch.randn(5, 3, 16, 16))
    assert logits.shape == (5, 3) and logits.abs().max() <= 1.0 + 1e-6
    with pytest.raises(ParamError, match="model.head: unknown name 'cosine'; valid: linear, normed"):
        from weldnet.core.config import build
        build(ModelParams, {"head": "cosine"}, "model")


def test_making_kernels_deterministic_does_not_import_the_compiler():
    """torch.use_deterministic_algorithms imports torch._dynamo, seconds of every stage's start-up."""
    code = ("import sys, torch; from weldnet.train.device import make_deterministic; "
            "make_deterministic(torch.device('cpu')); "
            "print(torch.are_deterministic_algorithms_enabled(), 'torch._dynamo' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.split() == ["True", "False"], done.stderr[-2000:]


def test_a_train_stage_imports_no_model_zoo_and_no_compiler():
    """What the train stage imports before its first step: not torchvision's every model, not torch._dynamo."""
    code = ("import sys; import stages.train as t, weldnet.train.schedules, weldnet.train.setup, weldnet.train.live; "
            "print(sorted(m for m in ('torchvision', 'torch._dynamo', 'matplotlib') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "[]", done.stdout + done.stderr[-2000:]


class _StrictGpu:
    """A loader whose batches are drawn, and trained on, with any wait for the GPU an error."""

    def __init__(self, loader):
        self.loader = loader

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        torch.cuda.set_sync_debug_mode("error")
        try:
            yield from self.loader
        finally:
            torch.cuda.set_sync_debug_mode("default")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("photos_on_gpu", [True, False])
def test_training_steps_never_wait_for_the_gpu(photos_on_gpu):
    """Between two logging points no step synchronises with the host; the epoch's losses are still all logged."""
    cuda = torch.device("cuda")
    x, y = tiny_data()
    data = PhotoDataset(x.to(cuda) if photos_on_gpu else x, torch.as_tensor(y))
    loader = build_loader(data, y, 8, "none", 0, SamplingParams())
    torch.manual_seed(0)
    model = build_model(ModelParams(width=4, input_size=16), 2).to(cuda, memory_format=torch.channels_last)
    loss_fn = build_loss("cross_entropy", np.bincount(y).tolist(), LossParams()).to(cuda)
    optimizer = build_optimizer(model, "sgd", 0.05, momentum=0.9)
    optimiser = Optimiser(optimizer, build_lr_schedule("cosine", optimizer, 3 * len(loader)))
    logs: list = []
    settings = StepSettings(cuda, task_input(16, True), precision_for(cuda, True), "test",
                            log=lambda *entry: logs.append(entry))
    step = train_one_epoch(model, loss_fn, optimiser, loader, settings, torch.Generator().manual_seed(0))  # warm-up
    for _ in range(2):
        step = train_one_epoch(model, loss_fn, optimiser, _StrictGpu(loader), settings,
                               torch.Generator().manual_seed(step), step)
    assert [s for s, k, _ in logs if k == "train/loss"] == list(range(3 * len(loader)))
    assert all(math.isfinite(v) for _, k, v in logs if k == "train/loss")


def test_the_training_log_is_written_as_dvclive_writes_it(tmp_path, monkeypatch):
    """The loop's log folder is what `dvc plots` and `dvc metrics` read: dvclive's files, byte for byte."""
    dvclive = pytest.importorskip("dvclive")
    from weldnet.train.live import DvcLiveLog

    calls = [(0, "train/loss", 0.6931471824645996), (0, "train/lr", 0.1), (1, "train/loss", float("nan")),
             (1, "train/lr", 0.05), (1, "val/recall/no_clamp", 1.0), (1, "val/per_class_accuracy", 0.75),
             (1, "epoch", 1), (2, "train/loss", float("inf")), (3, "epoch", 2)]
    monkeypatch.chdir(tmp_path)
    ours = DvcLiveLog(tmp_path / "ours")
    for call in calls:
        ours(*call)
    ours.close()
    live = dvclive.Live(str(tmp_path / "theirs"), save_dvc_exp=False, dvcyaml=None, report=None)
    for step, name, value in calls:
        live.step = step
        live.log_metric(name, value, plot=True)
    live.make_summary()
    live.end()
    files = sorted(p.relative_to(tmp_path / "theirs") for p in (tmp_path / "theirs").rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(tmp_path / "ours") for p in (tmp_path / "ours").rglob("*") if p.is_file())
    assert len(files) == 6
    for name in files:
        assert (tmp_path / "ours" / name).read_bytes() == (tmp_path / "theirs" / name).read_bytes(), name


def test_seed_plan_shares_the_cpu_threads_and_trains_in_turn_on_cuda_or_under_torchrun():
    from weldnet.train.seeds import SeedPlan, seed_plan

    assert seed_plan(0, 2, CPU, 1, 2) == SeedPlan(2, 1)        # two seeds on two CPUs: one thread each
    assert seed_plan(0, 3, CPU, 1, 2) == SeedPlan(2, 1)        # never more processes than threads
    assert seed_plan(0, 2, CPU, 1, 16) == SeedPlan(2, 8)
    assert seed_plan(0, 1, CPU, 1, 16) == SeedPlan(1, 16)      # one seed: the whole budget
    assert seed_plan(1, 2, CPU, 1, 2) == SeedPlan(1, 2)        # in turn, as asked
    assert seed_plan(3, 5, CPU, 1, 16) == SeedPlan(3, 5)
    assert seed_plan(0, 2, CPU, 2, 2) == SeedPlan(1, 2)        # under torchrun: in turn
    assert seed_plan(0, 2, torch.device("cuda"), 1, 2) == SeedPlan(1, 2)
    with pytest.raises(ValueError, match="seed processes"):
        seed_plan(-1, 2, CPU, 1, 2)


def test_a_seed_trains_to_the_same_weights_in_its_own_process_as_in_turn():
    """Forked or not, a seed's weights depend on its seed and thread count alone; results keep the seeds' order."""
    script = """
import torch
from weldnet.train.seeds import SeedPlan, train_seeds

def train_one(seed):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.LazyLinear(2))
    x, y = torch.randn(32, 3, 12, 12), torch.randint(0, 2, (32,))
    model(x)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(20):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return seed, [p.detach().clone() for p in model.parameters()], torch.get_num_threads()

plan = SeedPlan(2, 1)
plan.before_work()
forked = train_seeds(train_one, [3, 1, 2], plan)
in_turn = train_seeds(train_one, [3, 1, 2], SeedPlan(1, 1))
assert [f[0] for f in forked] == [3, 1, 2]
assert all(f[2] == 1 for f in forked)
for (_, a, _), (_, b, _) in zip(forked, in_turn):
    assert all(torch.equal(p, q) for p, q in zip(a, b))
print("same")
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "same"


def test_train_seeds_refuses_to_fork_after_a_multithreaded_start():
    from weldnet.train.seeds import SeedPlan, train_seeds

    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        with pytest.raises(RuntimeError, match="before_work"):
            train_seeds(lambda seed: seed, [0, 1], SeedPlan(2, 1))
    finally:
        torch.set_num_threads(threads)


def _relu_then_pool(features: nn.Sequential) -> nn.Sequential:
    """The textbook order, conv-BN-ReLU-maxpool: each (MaxPool2d, ReLU) pair swapped back."""
    layers = list(features)
    for k in range(len(layers) - 1):
        if isinstance(layers[k], nn.MaxPool2d) and isinstance(layers[k + 1], nn.ReLU):
            layers[k], layers[k + 1] = layers[k + 1], layers[k]
    return nn.Sequential(*layers)


@pytest.mark.parametrize("autocast", [False, True])
@pytest.mark.parametrize("arch", ["small_cnn", "audit"])
def test_pooling_before_the_relu_trains_to_the_same_bits_as_after_it(arch, autocast):
    import copy

    from weldnet.audit.model import tiny_cnn

    torch.manual_seed(0)
    if arch == "small_cnn":
        model = build_model(ModelParams(width=8, input_size=32), 2)
        reference = copy.deepcopy(model)
        reference.features = _relu_then_pool(reference.features)
    else:
        model = tiny_cnn(2, 8, 32)
        reference = _relu_then_pool(copy.deepcopy(model))
    assert [type(m) for m in reference.modules()] != [type(m) for m in model.modules()]
    x, y = torch.randn(16, 3, 32, 32), torch.randint(0, 2, (16,))
    trained = []
    for net in (model, reference):
        opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
        torch.manual_seed(1)                     # the same dropout masks
        for _ in range(5):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                out = net(x)
            opt.zero_grad()
            nn.functional.cross_entropy(out.float(), y).backward()
            opt.step()
        trained.append(net.state_dict())
    assert all(torch.equal(trained[0][k], trained[1][k]) for k in trained[0])


@pytest.mark.parametrize("bf16", [False, True])
def test_the_prediction_batch_size_changes_no_logit_on_the_cpu(bf16):
    """eval_batch_size is a speed setting: 64 photos per batch give the bits 256 give."""
    from weldnet.train.device import CPU_BF16, CPU_CHANNELS_LAST

    torch.manual_seed(0)
    model = build_model(ModelParams(width=8, input_size=32), 2)
    photos = torch.randint(0, 256, (150, 32, 32, 3), dtype=torch.uint8)
    precision = CPU_BF16 if bf16 else CPU_CHANNELS_LAST
    small, large = (predict_logits(model, photos, CPU, 32, batch, precision=precision) for batch in (64, 256))
    assert np.array_equal(small, large)
