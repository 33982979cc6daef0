import math

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
from weldnet.train.training import fit, lr_at, predict_logits, resolve_device, task_input, validation_scores

CPU = torch.device("cpu")


def test_lr_schedules_by_hand():
    assert lr_at(0, 100, 0.1, "constant") == lr_at(99, 100, 0.1, "constant") == 0.1
    assert lr_at(0, 100, 0.1, "cosine") == pytest.approx(0.1)
    assert lr_at(50, 100, 0.1, "cosine") == pytest.approx(0.05)
    assert lr_at(25, 100, 0.1, "cosine") == pytest.approx(0.05 * (1 + math.cos(math.pi / 4)))
    assert lr_at(100, 100, 0.1, "cosine") == pytest.approx(0.0)
    with pytest.raises(ParamError, match="valid: constant, cosine"):
        lr_at(0, 10, 0.1, "step")


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


def fit_task(model, loss_fn, x, y, params: TrainParams, log, **kwargs):
    """fit on a class-labelled tiny data set, validated on itself."""
    loader = build_loader(PhotoDataset(x, torch.as_tensor(y)), y, params.batch_size, "none", 0, SamplingParams())
    return fit(model, loss_fn, loader, lambda m: validation_scores(predict_logits(m, x, CPU, 16), y, ["a", "b"]),
               params=params, seed=0, prepare=task_input(16, params.flip), device=CPU, name="test", log=log, **kwargs)


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
        run_fit(PARAMS, save_checkpoint=save_then_die)
    checkpoint = torch.load(_roundtrip(saved[-1]), weights_only=True)
    resumed, _ = run_fit(PARAMS, checkpoint=checkpoint)
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


def test_a_nan_loss_stops_training_naming_strategy_and_step():
    x, y = tiny_data()
    model = build_model(ModelParams(width=4, input_size=16), 2)
    with pytest.raises(TrainingError, match="strategy 'test'.*nan at step 4"):
        fit_task(model, NanAfter(4), x, y, PARAMS, lambda *a: None)


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
