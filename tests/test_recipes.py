"""The long-tail recipes' ingredients: mixed batches, Remix's label rule, label-aware smoothing and MaxNorm."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from weldnet.core import class_stats
from weldnet.core.params import LossParams, ModelParams, SamplingParams, TrainParams
from weldnet.photos.dataset import PhotoDataset
from weldnet.strategies.augment import CutMix, Mixup, Remix, beta_draw, mix_photos, remix_lambda
from weldnet.strategies.losses import LOSSES, CrossEntropy, build_loss
from weldnet.strategies.models import build_model, cap_class_norms, output_layer_of
from weldnet.strategies.sampling import build_loader
from weldnet.train.loop import FitSettings, StepSettings, fit, task_input, train_one_epoch
from weldnet.train.optim import Optimiser, build_lr_schedule, build_optimizer
from weldnet.train.predict import model_input, predict_logits, validation_scores

CPU = torch.device("cpu")


def constant_photos(values: list[float]) -> torch.Tensor:
    """One photo per value, every pixel that value: (n, 1, 2, 2) float."""
    return torch.tensor(values).reshape(-1, 1, 1, 1).expand(-1, 1, 2, 2).clone()


def test_mixup_mixes_each_photo_with_its_partner_by_hand():
    x = constant_photos([1.0, 3.0])
    assert mix_photos(x, torch.tensor([1, 0]), 0.25)[:, 0, 0, 0].tolist() == [2.5, 1.5]  # .25*1+.75*3, .25*3+.75*1


def test_a_mixed_batch_and_its_targets_for_a_fixed_generator():
    x, y = constant_photos([0.0, 10.0, 20.0, 30.0]), torch.tensor([0, 0, 1, 1])
    mixed, targets = Mixup(alpha=1.0)(x, y, torch.Generator().manual_seed(7))
    # the same draws, in the same order: lam from a seed drawn first, then the partners
    draws = torch.Generator().manual_seed(7)
    lam = beta_draw(1.0, draws)
    perm = torch.randperm(4, generator=draws)
    assert 0 < lam < 1 and not torch.equal(perm, torch.arange(4))
    assert torch.allclose(mixed[:, 0, 0, 0], lam * torch.tensor([0.0, 10, 20, 30]) + (1 - lam) * 10 * perm)
    assert torch.equal(targets.a, y) and torch.equal(targets.b, y[perm])
    assert torch.allclose(targets.lam, torch.full((4,), lam))
    again, _ = Mixup(alpha=1.0)(x, y, torch.Generator().manual_seed(7))
    assert torch.equal(mixed, again)                     # deterministic for a seed


def test_cutmix_pastes_one_partner_box_and_its_lambda_is_the_share_left_unpasted():
    x = torch.arange(8.0).reshape(-1, 1, 1, 1).repeat(1, 1, 16, 16)       # photo i: every pixel i
    y = torch.arange(8) % 2
    mixed, targets = CutMix(alpha=1.0)(x, y, torch.Generator().manual_seed(3))
    own = (mixed == x).float().mean(dim=(1, 2, 3))
    moved = own < 1                                   # photos whose partner is another photo
    assert moved.sum() >= 6
    assert torch.allclose(own[moved], targets.lam[moved])              # lam: the unpasted area share
    for i in torch.nonzero(moved).squeeze(1).tolist():
        pasted = mixed[i][mixed[i] != i].unique()
        assert len(pasted) == 1 and targets.b[i] == y[int(pasted)]      # one partner, whose label is b
    box = mixed[moved][0, 0] != x[moved][0, 0]
    rows, cols = torch.nonzero(box.any(dim=1)).squeeze(1), torch.nonzero(box.any(dim=0)).squeeze(1)
    assert box.sum() == len(rows) * len(cols)                           # a rectangle


@pytest.mark.parametrize("count_a, count_b, lam, expected", [
    (30, 10, 0.49, 0.0),     # a is kappa = 3 times b's size and the photo is mostly b: all b's label
    (30, 10, 0.50, 0.50),    # lam reaches tau: plain mixup label
    (29, 10, 0.10, 0.10),    # size ratio 2.9 < kappa: plain mixup label
    (10, 30, 0.51, 1.0),     # b is 3 times a's size and the photo is mostly a: all a's label
    (10, 30, 0.50, 0.50),    # 1 - lam reaches tau: plain mixup label
    (10, 10, 0.01, 0.01),
])
def test_remix_tilts_the_label_at_its_thresholds(count_a, count_b, lam, expected):
    out = remix_lambda(lam, torch.tensor([count_a]), torch.tensor([count_b]), kappa=3.0, tau=0.5)
    assert out.tolist() == pytest.approx([expected])


def test_remix_mixes_photos_as_mixup_and_labels_from_the_training_counts():
    x, y = constant_photos([0.0, 10.0, 20.0, 30.0]), torch.tensor([0, 0, 1, 1])
    remixed, targets = Remix(1.0, 3.0, 0.5, (300, 10))(x, y, torch.Generator().manual_seed(7))
    mixed, plain = Mixup(1.0)(x, y, torch.Generator().manual_seed(7))
    assert torch.equal(remixed, mixed) and torch.equal(targets.b, plain.b)
    lam = float(plain.lam[0])
    counts = torch.tensor([300, 10])
    assert torch.equal(targets.lam, remix_lambda(lam, counts[y], counts[plain.b], 3.0, 0.5))
    tilted = (y != plain.b)                      # a photo mixed with the other class may be tilted
    assert torch.equal(targets.lam[~tilted], plain.lam[~tilted])


@pytest.mark.parametrize("name", list(LOSSES))
def test_every_loss_takes_mixed_targets_as_its_two_losses_mixed(name):
    torch.manual_seed(0)
    logits = torch.randn(6, 3)
    a, b = torch.tensor([0, 0, 1, 2, 0, 1]), torch.tensor([1, 0, 0, 1, 2, 0])  # b a permutation of a
    loss = build_loss(name, [50, 20, 5], LossParams(), weighting="effective_number")
    ones = torch.ones(6)
    assert torch.allclose(loss.mixed(logits, a, b, ones), loss(logits, a), atol=1e-6)
    lam = torch.full((6,), 0.3)
    assert torch.allclose(loss.mixed(logits, a, b, lam), 0.3 * loss(logits, a) + 0.7 * loss(logits, b), atol=1e-6)


def test_bayesian_prior_of_a_mixed_batch_is_each_class_photo_count():
    logits = torch.zeros(4, 2)                            # every term log 2
    a, b = torch.tensor([0, 0, 0, 1]), torch.tensor([1, 0, 0, 0])
    loss = build_loss("bayesian", [3, 1], LossParams())
    # n_0 = 3 and n_1 = 1 in both label sets. Labels a, weights lam: (log2/3 (1 + .5 + .5) + log2/1 * 0) / K;
    # labels b, weights 1 - lam: (log2/1 * 0 + log2/3 (.5 + .5 + 1)) / K; K = 2: 2/3 log 2 in all
    assert loss.mixed(logits, a, b, torch.tensor([1.0, 0.5, 0.5, 0.0])).item() == pytest.approx(2 / 3 * math.log(2))
    assert loss(logits, a).item() == pytest.approx(math.log(2))


def test_label_aware_smoothing_by_hand():
    eps = class_stats.label_aware_smoothing([100, 10, 1], head=0.3, tail=0.0)
    assert eps.tolist() == pytest.approx([0.3, 0.3 * math.sin(math.pi / 2 * 9 / 99), 0.0])
    assert class_stats.label_aware_smoothing([5, 5], head=0.2, tail=0.0).tolist() == [0.2, 0.2]


def test_smoothed_cross_entropy_is_mislas_loss_and_plain_smoothing_is_torchs():
    torch.manual_seed(1)
    logits, target = torch.randn(5, 3), torch.tensor([0, 1, 2, 0, 0])
    smoothed = build_loss("cross_entropy", [100, 10, 1], LossParams(), label_smoothing=True)
    eps = torch.tensor(class_stats.label_aware_smoothing([100, 10, 1], 0.3, 0.0), dtype=torch.float32)[target]
    log_p = F.log_softmax(logits, dim=1)
    mislas = ((1 - eps) * -log_p.gather(1, target[:, None]).squeeze(1) + eps * -log_p.mean(dim=1)).mean()
    assert smoothed(logits, target).item() == pytest.approx(mislas.item(), rel=1e-6)
    plain = CrossEntropy([5, 5], smoothing=[0.2, 0.2])
    assert plain(logits[:, :2], target.clamp(max=1)).item() == pytest.approx(
        F.cross_entropy(logits[:, :2], target.clamp(max=1), label_smoothing=0.2).item(), rel=1e-6)


def test_max_norm_projects_each_class_row_onto_the_norm_ball():
    weight = torch.tensor([[3.0, 4.0], [0.3, 0.4], [0.0, 0.0]])
    cap_class_norms(weight, 1.0)
    assert torch.allclose(weight, torch.tensor([[0.6, 0.8], [0.3, 0.4], [0.0, 0.0]]))
    assert weight[1].tolist() == [0.30000001192092896, 0.4000000059604645]    # inside the ball: untouched


def test_the_mirror_is_the_formula_it_was_before_the_augment_axis():
    images = torch.randint(0, 255, (9, 8, 8, 3), dtype=torch.uint8)
    got = task_input(8, flip=True)(images, torch.Generator().manual_seed(5))
    expected = model_input(images, 8)
    mirror = torch.rand(9, generator=torch.Generator().manual_seed(5)) < 0.5
    expected[mirror] = expected[mirror].flip(-1)
    assert mirror.any() and not mirror.all() and torch.equal(got, expected)


class Spy(torch.nn.Module):
    """A linear model that records every input it sees."""

    def __init__(self):
        super().__init__()
        self.classifier = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 4 * 4, 2))
        self.seen: list[torch.Tensor] = []

    def forward(self, x):
        self.seen.append(x.detach().clone())
        return self.classifier(x)


class LossSpy(CrossEntropy):
    calls: list[str]

    def forward(self, logits, target):
        self.calls.append("plain")
        return super().forward(logits, target)

    def mixed(self, logits, a, b, lam):
        self.calls.append("mixed")
        return super().mixed(logits, a, b, lam)


def one_epoch(mix):
    """The inputs a model sees, and the loss calls made, in one epoch of the loop on 8 constant photos."""
    values = torch.arange(8, dtype=torch.uint8) * 30
    images = values.reshape(-1, 1, 1, 1).expand(-1, 4, 4, 3).contiguous()
    y = torch.tensor([0] * 6 + [1] * 2)
    loader = build_loader(PhotoDataset(images, y), y.numpy(), 4, "none", 0, SamplingParams())
    model, loss = Spy(), LossSpy([6, 2])
    loss.calls = []
    optimiser = build_optimizer(model, "sgd", 0.1, momentum=0.0, weight_decay=0.0)
    settings = StepSettings(CPU, task_input(4, flip=False), mix=mix)
    train_one_epoch(model, loss, Optimiser(optimiser, build_lr_schedule("constant", optimiser, 2)), loader, settings,
                    torch.Generator().manual_seed(0))
    pixels = torch.cat([x[:, 0, 0, 0] for x in model.seen])
    plain = model_input(images, 4)[:, 0, 0, 0]
    return pixels, plain, loss.calls


def test_the_loop_shows_the_model_mixed_photos_and_gives_the_loss_their_mixed_targets():
    seen, plain, calls = one_epoch(None)
    assert sorted(seen.tolist()) == sorted(plain.tolist()) and calls == ["plain", "plain"]
    seen, plain, calls = one_epoch(Mixup(alpha=1.0))
    unmixed = [any(torch.isclose(v, plain).tolist()) for v in seen]
    assert sum(unmixed) < len(seen) and calls == ["mixed", "mixed"]
    assert plain.min() <= seen.min() and seen.max() <= plain.max()     # convex mixtures of the batch's photos


def tiny_run(max_norm=None, mix=None, sam=None, lr=0.5, epochs=2):
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.integers(0, 60, size=(48, 16, 16, 3), dtype=np.uint8))
    y = np.array([0] * 36 + [1] * 12)
    x[y == 1, 4:12, 4:12] = 250
    torch.manual_seed(0)
    model = build_model(ModelParams(width=4, input_size=16), 2)
    params = TrainParams(epochs=epochs, batch_size=8, lr=lr)
    loader = build_loader(PhotoDataset(x, torch.as_tensor(y)), y, params.batch_size, "none", 0, SamplingParams())
    run = FitSettings(CPU, task_input(16, True),
                      lambda m: validation_scores(predict_logits(m, x, CPU, 16), y, ["a", "b"]), lambda *a: None,
                      seed=0, name="tiny", mix=mix, max_norm=max_norm, sam=sam)
    result = fit(model, build_loss("cross_entropy", np.bincount(y).tolist(), LossParams()), loader, run, params)
    return model, result


def tiny_fit(max_norm, mix=None):
    model, result = tiny_run(max_norm, mix)
    name, _ = output_layer_of(model)
    return result.state[f"classifier.{name}.weight"].norm(dim=1)


def test_max_norm_caps_the_output_layer_after_every_step_of_a_fit():
    free = tiny_fit(None)
    assert free.max() > 0.6
    assert tiny_fit(0.6).max() <= 0.6 + 1e-6
    assert torch.equal(tiny_fit(None, Mixup(1.0)), tiny_fit(None, Mixup(1.0)))   # mixing stays deterministic


def test_a_sam_step_on_a_quadratic_by_hand():
    """f(w) = w^T A w / 2, A = diag(1, 4), w = (1, 1), rho 0.1, SGD at 0.1 without momentum:
    g = (1, 4), e = 0.1 g / sqrt(17), g' = A (w + e), w' = w - 0.1 g'."""
    w = torch.nn.Parameter(torch.tensor([1.0, 1.0], dtype=torch.float64))
    a = torch.tensor([1.0, 4.0], dtype=torch.float64)
    optimizer = torch.optim.SGD([w], lr=0.1)
    optimiser = Optimiser(optimizer, build_lr_schedule("constant", optimizer, 1))

    def loss() -> torch.Tensor:
        return 0.5 * (a * w * w).sum()

    seen = []

    def again() -> torch.Tensor:
        seen.append(w.detach().clone())
        return loss()

    optimiser.sam_step(loss(), again, rho=0.1)
    e = 0.1 * torch.tensor([1.0, 4.0], dtype=torch.float64) / math.sqrt(17)
    assert torch.allclose(seen[0], 1 + e, atol=1e-15)                 # the second pass ran at w + e
    expected = 1 - 0.1 * a * (1 + e)                                    # (0.8975746, 0.5611943)
    assert torch.allclose(w.detach(), expected, atol=1e-15)
    assert torch.allclose(expected, torch.tensor([0.8975746, 0.5611943], dtype=torch.float64), atol=1e-7)


def sam_fit(rho):
    return tiny_run(sam=rho, lr=0.1)


def test_sam_trains_other_weights_and_counts_each_batch_once_in_batch_norm():
    plain, _ = sam_fit(None)
    sharp, _ = sam_fit(0.05)
    again, _ = sam_fit(0.05)
    norms = [name for name, m in plain.named_modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert norms
    state, sharp_state = plain.state_dict(), sharp.state_dict()
    for name in norms:   # 6 batches x 2 epochs, whether each step runs one pass or two
        assert state[f"{name}.num_batches_tracked"] == sharp_state[f"{name}.num_batches_tracked"] == 12
    conv = [k for k in state if k.endswith("weight") and state[k].dim() == 4][0]
    assert not torch.equal(state[conv], sharp_state[conv])
    assert all(torch.equal(v, again.state_dict()[k]) for k, v in sharp_state.items())   # deterministic


def test_the_second_sam_pass_leaves_batch_norms_running_statistics_alone():
    from weldnet.train.loop import running_stats_kept

    norm = torch.nn.BatchNorm1d(3)
    x = torch.randn(8, 3, generator=torch.Generator().manual_seed(0)) + 5
    norm(x)
    mean, var, count = norm.running_mean.clone(), norm.running_var.clone(), norm.num_batches_tracked.clone()
    with running_stats_kept(norm):
        out = norm(x * 2)
    assert torch.equal(norm.running_mean, mean) and torch.equal(norm.running_var, var)
    assert norm.num_batches_tracked == count and norm.momentum == 0.1
    assert torch.allclose(out.mean(0), torch.zeros(3), atol=1e-5)      # still normalised by the batch's statistics
