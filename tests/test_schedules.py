import copy

import numpy as np
import pytest
import torch

from weldnet.core.config import ParamError, build
from weldnet.core.params import LossParams, ModelParams, SamplingParams, ScheduleParams, Strategy, TrainParams
from weldnet.photos.dataset import PhotoDataset
from weldnet.strategies.losses import build_loss
from weldnet.strategies.models import build_model
from weldnet.train.loop import FitSettings, task_input
from weldnet.train.predict import predict_logits, validation_scores
from weldnet.train.schedules import SCHEDULES, Run


class Interrupted(Exception):
    pass


def tiny_data():
    """Bright-square photos (class 1) among plain ones (class 0), 16x16 uint8 NHWC, 85% class 0."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, 60, size=(80, 16, 16, 3), dtype=np.uint8)
    y = np.array([0] * 68 + [1] * 12)
    x[y == 1, 4:12, 4:12] = 250
    return torch.from_numpy(x), y


def run_schedule(name: str, spec: ScheduleParams, store: dict | None = None, stop_after_logs: int | None = None,
                 memo=None, make_loss=None, classifier_sampler=None):
    """Train one seed with schedule ``name``; checkpoints go to ``store`` (a dict), the log to a list."""
    x, y = tiny_data()
    torch.manual_seed(0)
    model = build_model(ModelParams(width=4, input_size=16), 2)
    logs: list = []
    store = {} if store is None else store

    def log(step, key, value):
        if stop_after_logs is not None and len(logs) >= stop_after_logs:
            raise Interrupted
        logs.append((step, key, value))

    def checkpoints(phase):
        # a deep copy, as torch.save would write: the live history and weights keep changing
        return (lambda state: store.__setitem__(phase, copy.deepcopy(state)),
                lambda: store.get(phase))

    cpu = torch.device("cpu")
    loop = FitSettings(cpu, task_input(16, True), lambda m: validation_scores(predict_logits(m, x, cpu, 16), y,
                                                                            ["a", "b"]), log, seed=0, name=name)
    run = Run(PhotoDataset(x, torch.as_tensor(y)), y, loop, params=TrainParams(epochs=2, batch_size=8, lr=0.05),
              sampler="none", sampling=SamplingParams(target_ratio=0.6), input_size=16, n_classes=2,
              make_loss=make_loss or (lambda counts: build_loss("cross_entropy", counts, LossParams())),
              checkpoints=checkpoints, memo=memo, classifier_sampler=classifier_sampler)
    return SCHEDULES[name](model, run, spec), logs, model


def test_selective_undersample_runs_rounds_until_nothing_is_set_aside():
    spec = ScheduleParams(selective_undersample=build(ScheduleParams, None, "s").selective_undersample)
    result, logs, _ = run_schedule("selective_undersample", spec)
    rounds = result.details["rounds"]
    assert rounds[0]["counts"] == [18, 12] and rounds[0]["set_aside"] == 50       # 12 * 0.6 / 0.4 = 18
    assert rounds[-1]["set_aside"] == 0
    for before, now in zip(rounds, rounds[1:]):
        assert now["set_aside"] == before["set_aside"] - now["arrived"]
        assert now["counts"][1] == 12                                 # flawed photos are never dropped
        assert now["counts"][0] <= 18                                 # class 0 back at (or under) its quota
        assert now["arrived"] == min(before["set_aside"], int(np.ceil(0.5 * sum(before["counts"]))))
    epochs = [v for _, k, v in logs if k == "epoch"]
    assert epochs == list(range(1, 2 + 3 * (len(rounds) - 1) + 1))    # 2 first epochs, then 3 per round
    steps = [s for s, k, _ in logs if k == "train/loss"]
    assert steps == sorted(steps) and len(set(steps)) == len(steps)   # one global step count across rounds
    assert 1 <= result.best_epoch <= epochs[-1]


def test_max_rounds_stops_early():
    spec = build(ScheduleParams, {"selective_undersample": {"max_rounds": 1}}, "schedules")
    result, _, _ = run_schedule("selective_undersample", spec)
    assert len(result.details["rounds"]) == 2 and result.details["rounds"][-1]["set_aside"] > 0


@pytest.mark.parametrize("name", ["selective_undersample", "crt"])
def test_an_interrupted_schedule_resumes_to_the_same_weights(name):
    spec = ScheduleParams()
    whole, whole_logs, _ = run_schedule(name, spec)
    store: dict = {}
    with pytest.raises(Interrupted):
        run_schedule(name, spec, store, stop_after_logs=len(whole_logs) * 2 // 3)
    resumed, resumed_logs, _ = run_schedule(name, spec, store)
    assert resumed.best_epoch == whole.best_epoch
    assert resumed_logs == whole_logs
    for key in whole.state:
        assert torch.equal(whole.state[key], resumed.state[key]), key


@pytest.mark.parametrize("classifier_sampler, minority_share", [(None, 0.5), ("none", 12 / 80)])
def test_crt_retrains_with_its_sampler_or_the_strategys_own(monkeypatch, classifier_sampler, minority_share):
    """The re-training phase draws class-balanced batches unless the strategy's crt.sampler says otherwise."""
    from weldnet.train import schedules

    drawn: list[np.ndarray] = []
    real = schedules.build_loader

    def recording(dataset, labels, *args, **kwargs):
        loader = real(dataset, labels, *args, **kwargs)
        drawn.append(np.asarray(labels)[[i for batch in loader.batch_sampler for i in batch]])
        return loader

    monkeypatch.setattr(schedules, "build_loader", recording)
    run_schedule("crt", ScheduleParams(), classifier_sampler=classifier_sampler)
    classifier_draw = drawn[-1]
    assert len(classifier_draw) >= 40
    assert abs(classifier_draw.mean() - minority_share) < 0.12


def test_crt_retrains_only_the_output_layer():
    result, logs, model = run_schedule("crt", ScheduleParams())
    representation = {k: v for k, v in result.state.items() if not k.startswith("classifier.")}
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"classifier.2.weight", "classifier.2.bias"}
    assert result.best_epoch > 2                                     # chosen within the re-training epochs
    assert result.details["representation_epoch"] in (1, 2)
    # the frozen representation, batch-norm statistics included, is the one the first phase selected
    first, _, _ = run_schedule("standard", ScheduleParams())
    for key, value in representation.items():
        assert torch.equal(value, first.state[key]), key
    assert not torch.equal(result.state["classifier.2.weight"], first.state["classifier.2.weight"])


def test_strategy_schedule_checks():
    with pytest.raises(ParamError, match="valid: standard, selective_undersample, crt"):
        build(Strategy, {"schedule": "rounds"}, "strategies.x")
    with pytest.raises(ParamError, match="drop sampler: oversample"):
        build(Strategy, {"schedule": "selective_undersample", "sampler": "oversample"}, "strategies.x")
    with pytest.raises(ParamError, match="reuse trains nothing"):
        build(Strategy, {"schedule": "crt", "reuse": "baseline"}, "strategies.x")
    with pytest.raises(ParamError, match="schedules.crt.sampler"):
        build(ScheduleParams, {"crt": {"sampler": "uniform"}}, "schedules")


def test_a_fit_that_ran_before_is_reused_bit_for_bit(tmp_path, capsys):
    """crt's first phase is the standard run: with the standard run's fit stored, crt reuses it and ends the same."""
    from weldnet.train.memo import FitMemo

    plain, plain_logs, plain_model = run_schedule("crt", ScheduleParams())
    memo = FitMemo(tmp_path / "fits", context="tiny")
    standard, _, _ = run_schedule("standard", ScheduleParams(), memo=memo)
    assert len(list((tmp_path / "fits").glob("*.fit"))) == 1
    capsys.readouterr()
    reused, reused_logs, reused_model = run_schedule("crt", ScheduleParams(), memo=memo)
    assert "the same fit (settings, data and starting weights) ran before" in capsys.readouterr().out
    assert reused_logs == plain_logs and reused.best_epoch == plain.best_epoch
    for key in plain.state:
        assert torch.equal(plain.state[key], reused.state[key]), key
    assert len(list((tmp_path / "fits").glob("*.fit"))) == 2        # the classifier phase is new: stored too
    # another context (other photos, loss or code) or other starting weights is another fit
    other = FitMemo(tmp_path / "fits", context="other photos")
    model = build_model(ModelParams(width=4, input_size=16), 2)
    assert other.key(model, seed=0) != memo.key(model, seed=0)
    frozen = build_model(ModelParams(width=4, input_size=16), 2)
    frozen.load_state_dict(model.state_dict())
    next(frozen.parameters()).requires_grad_(False)
    assert memo.key(frozen, seed=0) != memo.key(model, seed=0)


@pytest.mark.parametrize("name, total", [("standard", 2), ("crt", 2 + 5)])
def test_drw_switches_at_a_fraction_of_the_whole_schedule_not_of_each_phase(name, total):
    """The loss sees every epoch of the schedule counted from its start, and the schedule's total length."""
    seen, losses = [], []

    def make_loss(counts):
        loss = build_loss("cross_entropy", counts, LossParams(), weighting="drw")
        original = loss.on_epoch
        loss.on_epoch = lambda epoch, total_epochs: (seen.append((epoch, total_epochs)), original(epoch, total_epochs))
        losses.append(loss)
        return loss

    run_schedule(name, ScheduleParams(), make_loss=make_loss)
    assert seen == [(epoch, total) for epoch in range(total)]
    if name == "crt":   # switch at round(0.8 * 7) = epoch 6: inside the re-training phase, not at its epoch 4
        assert losses[-1].weight[1] > losses[-1].weight[0] and torch.equal(losses[0].weight, torch.ones(2))


def test_a_drw_fit_is_not_reused_for_a_schedule_of_another_length(tmp_path):
    """With DRW the weights switch at a fraction of the whole schedule: crt's first phase is not the standard run."""
    from weldnet.core.params import DrwParams, WeightingParams
    from weldnet.train.memo import FitMemo

    # switch at half the schedule: epoch 1 of the standard run's 2, epoch 4 of crt's 2 + 5 (after its first phase)
    early = WeightingParams(drw=DrwParams(start=0.5))
    drw = lambda counts: build_loss("cross_entropy", counts, LossParams(), weighting="drw",  # noqa: E731
                                    weightings=early)
    memo = FitMemo(tmp_path / "fits", context="tiny")
    run_schedule("standard", ScheduleParams(), memo=memo, make_loss=drw)
    plain, plain_logs, _ = run_schedule("crt", ScheduleParams(), make_loss=drw)
    reused, reused_logs, _ = run_schedule("crt", ScheduleParams(), memo=memo, make_loss=drw)
    assert reused_logs == plain_logs
    for key in plain.state:
        assert torch.equal(plain.state[key], reused.state[key]), key
    # and an unweighted fit is another fit than a weighted one
    weighted = FitMemo(tmp_path / "fits", context="tiny")
    model = build_model(ModelParams(width=4, input_size=16), 2)
    from weldnet.train.memo import loss_signature
    assert loss_signature(drw([60, 20])) != loss_signature(build_loss("cross_entropy", [60, 20], LossParams()))
    assert weighted.key(model, loss=loss_signature(drw([60, 20]))) != weighted.key(
        model, loss=loss_signature(build_loss("cross_entropy", [60, 20], LossParams())))
