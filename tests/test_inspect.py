"""Whole-photo triage: the multi-label losses, the photo rule, the inspection bundle and the command with it."""
import csv
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from weldnet.core.config import ParamError, build
from weldnet.core.params import MULTILABEL_LOSS_NAMES, InspectParams, ModelParams
from weldnet.strategies.multilabel import MULTILABEL_LOSSES, build_multilabel_loss, prior_log_odds
from weldnet.triage import command as cli
from weldnet.triage.bundle import export_network, network_logits, write_bundle
from weldnet.triage.inspect import (
    any_flaw_score,
    calibration_offsets,
    inspect_bundle_info,
    photo_decision,
    review_flags,
    split_rows,
    validation_automation,
)

PARAMS = InspectParams()


def _loss(name: str, positives=(1,), photos=4, **asymmetric) -> nn.Module:
    params = InspectParams(asymmetric=build(type(PARAMS.asymmetric), asymmetric, "a")) if asymmetric else PARAMS
    return build_multilabel_loss(name, list(positives), photos, params)


def _value(loss: nn.Module, z: float, y: float) -> float:
    return float(loss(torch.tensor([[z]]), torch.tensor([[y]])))


# ------------------------------------------------------------------ the loss axis
def test_the_loss_registry_is_keyed_by_the_declared_names():
    assert tuple(MULTILABEL_LOSSES) == MULTILABEL_LOSS_NAMES
    with pytest.raises(ParamError, match="valid: bce, logit_adjusted, asymmetric"):
        build_multilabel_loss("focal", [1], 4, PARAMS)


def test_prior_log_odds_by_hand():
    np.testing.assert_allclose(prior_log_odds([1, 2, 0], 4, 1.0), [math.log(1 / 3), 0.0, math.log(1 / 3)])
    np.testing.assert_allclose(prior_log_odds([1], 4, 0.5), [0.5 * math.log(1 / 3)])


def test_losses_by_hand():
    assert _value(_loss("bce"), 0.0, 1.0) == pytest.approx(math.log(2))
    # one photo in four carries the flag: b = log(1/3), so sigmoid(0 + b) = 1/4
    assert _value(_loss("logit_adjusted"), 0.0, 1.0) == pytest.approx(math.log(4))
    assert _value(_loss("logit_adjusted"), 0.0, 0.0) == pytest.approx(math.log(4 / 3))
    # Ridnik et al.'s defaults, gamma+ 0, gamma- 4, clip 0.05, at p = 1/2
    asl = _loss("asymmetric")
    assert _value(asl, 0.0, 1.0) == pytest.approx(math.log(2))
    assert _value(asl, 0.0, 0.0) == pytest.approx(0.45 ** 4 * -math.log(0.55))
    assert _value(asl, -3.0, 0.0) == 0.0                               # p = 0.047 < clip: no cost


def test_the_asymmetric_loss_without_focusing_or_clip_is_binary_cross_entropy():
    z, y = torch.randn(8, 3, generator=torch.Generator().manual_seed(0)), (torch.rand(8, 3) < 0.3).float()
    plain = _loss("asymmetric", (2, 2, 2), 8, gamma_pos=0.0, gamma_neg=0.0, clip=0.0)
    bce = nn.functional.binary_cross_entropy_with_logits(z, y, reduction="none")
    assert float(plain(z, y)) == pytest.approx(float(bce.sum(dim=1).mean()), rel=1e-5)   # summed over flags
    assert float(_loss("bce", (2, 2, 2), 8)(z, y)) == pytest.approx(float(plain(z, y)), rel=1e-5)


def test_the_loss_section_is_checked():
    with pytest.raises(ParamError, match="inspect.losses: unknown name 'focal'"):
        build(InspectParams, {"losses": ["focal"]}, "inspect")
    with pytest.raises(ParamError, match="calibration"):
        build(InspectParams, {"split": {"train": 0.8, "test": 0.2}}, "inspect")


# ------------------------------------------------------------------ the photo rule
def test_split_rows_cuts_the_shares():
    names = split_rows(20, {"train": 0.5, "val": 0.15, "calibration": 0.2, "test": 0.15}, np.random.default_rng(0))
    assert [int((names == n).sum()) for n in ("train", "val", "calibration", "test")] == [10, 3, 4, 3]


def test_offsets_match_the_prior_and_the_score_combines_flags():
    assert calibration_offsets(np.zeros((4, 1)), [0.2])[0] == pytest.approx(math.log(0.25))
    # p = 1/2 and 1/2: 1 - 1/4; p = 1/4 and 1/4: 1 - 9/16
    q = math.log(1 / 3)
    np.testing.assert_allclose(any_flaw_score(np.array([[0.0, 0.0], [q, q]]), np.zeros(2)), [0.75, 7 / 16])


def test_a_photo_with_one_uncleared_flag_is_sent_to_review_naming_it():
    flags = ["A", "B", "C"]
    logits = np.array([[-10.0, 3.0, -10.0],                   # B alone: p = 0.95
                       [-10.0, -10.0, -10.0],                 # nothing
                       [math.log(0.4 / 0.6), math.log(0.4 / 0.6), -30.0]])   # A and B at 0.4: 1 - 0.36 = 0.64
    over = review_flags(logits, np.zeros(3), 0.5, flags)
    assert over == [["B"], [], ["A", "B"]]                    # neither 0.4 alone reaches 0.5; together they do
    score = any_flaw_score(logits, np.zeros(3))
    assert [photo_decision(s, o, [], 0.5)[0] for s, o in zip(score, over)] == [False, True, False]
    assert "flagged: B" in photo_decision(score[0], over[0], [], 0.5)[1]
    cleared, reason, category = photo_decision(score[1], over[1], ["Joint Misaligned"], 0.5)
    assert not cleared and "'Joint Misaligned'" in reason and category == "unmodelled_flag"
    assert not photo_decision(0.0, [], [], 0.0)[0]               # no certificate: nothing is cleared


def test_validation_automation_keeps_the_target_on_every_counted_risk():
    # 2 perfect photos, 4 carrying A; A's scores ranked so that 3 of 4 (75%) are caught above 0.5
    logits = np.array([[-5.0], [-4.0], [-4.5], [2.0], [3.0], [4.0]])
    targets = np.array([[0], [0], [1], [1], [1], [1]], dtype=float)
    cleared, offsets = validation_automation(logits, targets, targets[:, 0] > 0, [4 / 6], 0.75, 1)
    assert cleared == 1.0                                     # the threshold sits at the 2nd lowest A photo
    cleared, _ = validation_automation(logits, targets, targets[:, 0] > 0, [4 / 6], 1.0, 1)
    assert cleared == 0.5                                     # all of A caught: the photo at -4.5 binds


# ------------------------------------------------------------------ the bundle and the command
class ColourNet(nn.Module):
    """Flag j's logit grows with the mean of colour channel j (normalised input): red -> A, green -> B."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 4.0 * x.mean(dim=(2, 3))[:, :2] - 2.0


def _bundle(out: Path, threshold: float) -> Path:
    params = ModelParams(input_size=16)
    flags = ["No Ground Sheet", "No Clamp Used"]
    info = inspect_bundle_info(rig="bluebox", flags=flags, offsets=np.zeros(2), loss="bce", model=params,
                               best_epoch=1, photo_size=32, max_pixels=100_000)
    report = {"threshold": threshold, "target_recall": 0.95, "confidence": 0.95, "note": "made up",
              "uncertified_note": "not certified on their own: No Clamp Used (3 calibration photos)",
              "not_modelled_note": "not modelled: Joint Misaligned (1 training photo)"}
    write_bundle(out, export_network(ColourNet(), 16, 32), info, report, "readme\n")
    return out


def _photo(path: Path, colour: tuple[int, int, int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (40, 30), colour).save(path, "PNG")


def test_the_command_clears_whole_photos_and_names_the_flags_that_sent_one_to_review(tmp_path, capsys):
    bundle = _bundle(tmp_path / "inspect", 0.5)
    export = tmp_path / "export"
    _photo(export / "grey.png", (60, 60, 60))
    _photo(export / "red.png", (255, 0, 0))
    _photo(export / "grey_joint.png", (60, 60, 60))
    _photo(export / "grey_odd.png", (60, 60, 60))
    (export / "broken.png").write_bytes(b"\x89PNG not really")
    (export / "labels.csv").write_text("image,rig,flags\ngrey.png,bluebox,\nred.png,bluebox,No Ground Sheet\n"
                                       "grey_joint.png,bluebox,Joint Misaligned\ngrey_odd.png,bluebox,Rust\n"
                                       "broken.png,bluebox,\n")
    out = tmp_path / "t.csv"
    tally = cli.run([str(export)], bundle, out, workers=1)
    with out.open(newline="") as fh:
        rows = {Path(r["image"]).name: r for r in csv.DictReader(fh)}
    assert rows["grey.png"]["decision"] == "clear" and rows["grey.png"]["label"] == "no flag"
    red = rows["red.png"]
    assert red["decision"] == "review" and red["class"] == "No Ground Sheet" and "flagged: No Ground Sheet" in \
        red["reason"]
    for name, flag in (("grey_joint.png", "Joint Misaligned"), ("grey_odd.png", "Rust")):
        assert rows[name]["decision"] == "review" and f"'{flag}'" in rows[name]["reason"], name
    assert rows["broken.png"]["decision"] == "review" and rows["broken.png"]["score"] == ""
    assert tally.cleared == 1 and tally.flawed == 2 and tally.flawed_caught == 2
    printed = capsys.readouterr().out
    assert "No Clamp Used (3 calibration photos)" in printed and "Joint Misaligned (1 training photo)" in printed


def test_an_inspection_bundle_without_a_certificate_clears_nothing(tmp_path):
    bundle = _bundle(tmp_path / "inspect", 0.0)
    _photo(tmp_path / "p" / "grey.png", (60, 60, 60))
    tally = cli.run([str(tmp_path / "p")], bundle, tmp_path / "t.csv", workers=1)
    assert tally.cleared == 0 and tally.review == 1


# ------------------------------------------------------------------ a fresh export, end to end
def test_on_a_fresh_export_every_certified_recall_holds(tmp_path, fresh_exports, capsys):
    """Train a tiny inspection model, certify on held-out photos, triage an export drawn with another seed.

    The certificate: any-flaw recall and each certified flag's recall >= target, all
    together, with 95% confidence. On the fresh export none may be significantly
    below the target (one-sided binomial test at 1%, Bonferroni over the risks).
    """
    from weldnet.core.flags import FLAGS, parse_flags
    from weldnet.core.params import SamplingParams
    from weldnet.photos.dataset import PhotoDataset
    from weldnet.photos.images import load_resized
    from weldnet.photos.transforms import resize_uint8
    from weldnet.strategies.models import build_model
    from weldnet.strategies.sampling import build_loader
    from weldnet.train.loop import FitSettings, fit, task_input
    from weldnet.train.predict import predict_logits
    from weldnet.triage.certify import binomial_cdf
    from weldnet.triage.inspect import inspect_readme, inspect_report, split_check
    from weldnet.triage.simultaneous import ANY_FLAW, METHOD, simultaneous_threshold

    target, confidence = 0.8, 0.95
    with (fresh_exports / "own" / "labels.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    flags = ["No Clamp Used", "No Ground Sheet", "No Visible Hatch Markings",
             "Photo Does Not Show Enough Of Scrape Zones"]
    carried = [parse_flags(r["flags"])[0] for r in rows]
    targets = np.array([[f in c for f in flags] for c in carried], dtype=np.float32)
    flawed = np.array([bool(c) for c in carried])
    photos = np.stack([load_resized(fresh_exports / "own" / r["image"], 64, 89_478_485) for r in rows])
    split = split_rows(len(rows), {"train": 0.4, "val": 0.15, "calibration": 0.45}, np.random.default_rng(0))
    train, val, calib = (np.flatnonzero(split == s) for s in ("train", "val", "calibration"))

    params, settings = ModelParams(input_size=32, width=8), InspectParams(epochs=8, batch_size=32, lr=0.02)
    torch.manual_seed(0)
    model = build_model(params, len(flags))
    x = resize_uint8(torch.from_numpy(photos), params.input_size)
    cpu = torch.device("cpu")
    positives = targets[train].sum(axis=0).astype(int).tolist()
    priors = [n / len(train) for n in positives]
    loader = build_loader(PhotoDataset(x[train], torch.from_numpy(targets[train])), np.zeros(len(train), np.int64),
                          settings.batch_size, "none", 0, SamplingParams())

    def validate(m: nn.Module) -> dict[str, float]:
        logits = predict_logits(m, x[val], cpu, params.input_size).astype(np.float64)
        return {"cleared": validation_automation(logits, targets[val], flawed[val], priors, target, 14)[0]}

    run = FitSettings(cpu, task_input(params.input_size, True), validate, lambda *a: None, 0, "tiny",
                      rank=lambda s: (s["cleared"],))
    fitted = fit(model, build_multilabel_loss("bce", positives, len(train), settings), loader, run, settings)
    model.load_state_dict(fitted.state)
    model.eval()
    logits = predict_logits(model, x[val], cpu, params.input_size).astype(np.float64)
    _, offsets = validation_automation(logits, targets[val], flawed[val], priors, target, 14)

    program = export_network(model, params.input_size, 64)
    cal_logits = network_logits(program.module(), photos[calib]).astype(np.float64)
    score = any_flaw_score(cal_logits, offsets)
    cert = simultaneous_threshold(score, flawed[calib], {f: targets[calib, j] > 0.5 for j, f in enumerate(flags)},
                                  target, confidence)
    certified = [r.name for r in cert.risks]
    assert cert.certified and len(certified) >= 3, certified        # any flaw and at least two flags
    check = split_check(score, flawed[calib], targets[calib], flags, cert.threshold, confidence)
    report = inspect_report(cert=cert, rig="bluebox", flags=flags, offsets=offsets, test_auc=np.full(4, np.nan),
                            loss="bce", candidates={}, best_epoch=fitted.best_epoch,
                            train_counts=dict(zip(flags, positives)), rare=[], calibration=check, test=check,
                            method=METHOD)
    info = inspect_bundle_info(rig="bluebox", flags=flags, offsets=offsets, loss="bce", model=params,
                               best_epoch=fitted.best_epoch, photo_size=64, max_pixels=89_478_485)
    bundle = tmp_path / "inspect"
    write_bundle(bundle, program, info, report, inspect_readme(info, report))

    out = tmp_path / "fresh.csv"
    tally = cli.run([str(fresh_exports / "fresh")], bundle, out, workers=2)
    assert tally.labelled == 400 and tally.automation > 0.0       # not passed by reviewing everything
    with out.open(newline="") as fh:
        result = list(csv.DictReader(fh))
    sent = np.array([r["decision"] == "review" for r in result])
    labelled = [set(r["label"].split(";")) for r in result]
    masks = {ANY_FLAW: np.array([bool(s & set(FLAGS)) for s in labelled]),
             **{f: np.array([f in s for s in labelled]) for f in flags}}
    for name in certified:
        n, caught = int(masks[name].sum()), int(sent[masks[name]].sum())
        assert n >= 10, name
        # not significantly below the target: P(Binomial(n, target) <= caught) >= 1% / number of risks
        assert binomial_cdf(caught, n, target) >= 0.01 / len(certified), (name, caught, n)
    assert "note: certified at 95% confidence" in capsys.readouterr().out
