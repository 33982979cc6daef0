"""The label audit: Wilson interval, lazy bound, review sheet, confident learning, and one tiny end-to-end run."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from weldnet.audit.estimate import (
    RateEstimate,
    draw_review_sample,
    estimate_mislabelling,
    flag_pairs,
    hidden_counts,
    hidden_share,
    label_stats,
    lazy_bound_verdict,
    parse_verdict,
    review_counts,
    review_estimate,
    task_class_probs,
    wilson_bounds,
    wilson_interval,
)
from weldnet.core.config import DataError, ParamError, build
from weldnet.core.flags import FLAGS
from weldnet.core.params import AuditParams, TaskSpec
from weldnet.train.pretraining import drop_suspects

ROOT = Path(__file__).resolve().parents[1]
CLAMP = TaskSpec("clamp_detected", {"no_clamp": ["No Clamp Used"]})
CLAMP_3WAY = TaskSpec("clamp_detected", {"no_clamp": ["No Clamp Used"],
                                         "not_enough": ["Photo Does Not Show Enough Of Clamps", "Unsuitable Photo"]})


def flag_table(rows: list[list[str]]) -> pd.DataFrame:
    return pd.DataFrame([[int(f in row) for f in FLAGS] for row in rows], columns=list(FLAGS))


# ------------------------------------------------------------------ Wilson interval

def test_wilson_interval_matches_hand_computed_values():
    # 0/10: the classic "rule of three"-like upper bound z^2 / (n + z^2) = 0.2775
    low, high = wilson_interval(0, 10)
    assert low == 0.0 and high == pytest.approx(3.8414588 / 13.8414588, abs=1e-6)
    # 12/50 (the report's clamp sample): centre 0.258551, half-width 0.115576
    # (statsmodels proportion_confint(12, 50, method="wilson") gives 0.14298, 0.37413)
    low, high = wilson_interval(12, 50)
    assert (low, high) == (pytest.approx(0.142975, abs=1e-5), pytest.approx(0.374127, abs=1e-5))
    low, high = wilson_interval(50, 50)
    assert high == 1.0 and low == pytest.approx(1 - 3.8414588 / 53.8414588, abs=1e-6)


def test_wilson_interval_rejects_an_empty_sample():
    with pytest.raises(ValueError, match="n > 0"):
        wilson_interval(0, 0)


# ------------------------------------------------------------------ lazy-classifier bound

@pytest.mark.parametrize("estimate, low, high, learnable, straddles", [
    (0.05, 0.03, 0.08, True, False),    # clearly under the bound 1 - 0.9 = 0.1
    (0.20, 0.15, 0.25, False, False),   # clearly over it
    (0.09, 0.06, 0.13, True, True),     # under, but the interval reaches past the bound
    (0.12, 0.08, 0.16, False, True),    # over, but the interval reaches below it
])
def test_lazy_bound_verdict(estimate, low, high, learnable, straddles):
    verdict = lazy_bound_verdict(RateEstimate(estimate, low, high, "x"), k=0.9)
    assert verdict.bound == pytest.approx(0.1)
    assert verdict.learnable is learnable
    assert verdict.straddles_bound is straddles


def test_lazy_bound_without_an_estimate_says_unknown():
    verdict = lazy_bound_verdict(RateEstimate(None, None, None, "not_estimable"), k=0.8)
    assert verdict.learnable is None and not verdict.straddles_bound


# ------------------------------------------------------------------ review sheet

def test_review_estimate_reproduces_the_reports_clamp_figure():
    # Report 5.2.5: 8 unsuitable + 4 no-clamp photos among 50 flagless ones, 43% flagless
    verdicts = ["Unsuitable Photo"] * 8 + ["no clamp used"] * 4 + ["No Ground Sheet"] * 10 + ["ok"] * 28
    verdicts += ["", None]              # not reviewed: left out
    reviewed, wrong = review_counts(verdicts, CLAMP_3WAY)
    assert (reviewed, wrong) == (50, 12)
    rate = review_estimate(reviewed, wrong, flagless_share=0.43)
    assert rate.estimate == pytest.approx(0.1032)
    assert rate.ci_low == pytest.approx(0.43 * 0.142975, abs=1e-5)
    assert rate.ci_high == pytest.approx(0.43 * 0.374127, abs=1e-5)
    assert rate.method == "review_sheet"
    # the two-class clamp task only counts the photos that should say No Clamp Used
    assert review_counts(verdicts, CLAMP) == (50, 4)


def test_flawed_verdict_counts_for_every_task_and_unknown_flags_are_refused():
    assert review_counts(["flawed", "OK", "flawed"], CLAMP) == (3, 2)
    assert parse_verdict(" Flawed ") == ("flawed", frozenset())
    with pytest.raises(DataError, match="unknown flag 'No Clamps'"):
        review_counts(["No Clamps"], CLAMP)


def test_review_sample_is_seeded_and_drawn_from_the_given_photos():
    photos = [f"p{i}" for i in range(100)]
    first = draw_review_sample(photos, 10, np.random.default_rng([0, 0]))
    assert first == draw_review_sample(photos, 10, np.random.default_rng([0, 0]))
    assert len(set(first)) == 10 and set(first) <= set(photos)
    assert first != draw_review_sample(photos, 10, np.random.default_rng([1, 0]))
    assert sorted(draw_review_sample(photos[:3], 10, np.random.default_rng(0))) == photos[:3]


# ------------------------------------------------------------------ statistics and class probabilities

def test_label_stats_counts_flags_flagless_photos_and_pairs():
    flags = flag_table([["No Clamp Used", "No Ground Sheet"], ["No Ground Sheet"], [], []])
    stats = label_stats(flags, "redbox")
    assert stats["n"] == 4 and stats["flagless"] == 2 and stats["flagless_share"] == 0.5
    assert stats["flags"]["No Ground Sheet"] == 2 and stats["flags"]["Other"] == 0
    assert all(isinstance(v, (int, float)) for k, v in stats.items() if k != "flags")   # scalars: diffable
    pairs = flag_pairs(flags, "redbox").set_index(["flag_a", "flag_b"])["photos"]
    assert pairs["No Clamp Used", "No Ground Sheet"] == 1
    assert pairs["No Ground Sheet", "Other"] == 0
    # pairs only among flags the rig records (Table 1): Redbox never records "Soil Contamination Risk"
    assert "Soil Contamination Risk" not in set(pairs.index.get_level_values(0)) | set(pairs.index.get_level_values(1))
    assert flag_pairs(flags.iloc[:0], "redbox")[["flag_a", "flag_b"]].equals(
        flag_pairs(flags, "redbox")[["flag_a", "flag_b"]])


def test_task_class_probs_follow_the_first_matching_class_rule():
    names = ["No Clamp Used", "Photo Does Not Show Enough Of Clamps"]
    flag_probs = np.array([[0.5, 0.5], [0.0, 1.0]])
    probs = task_class_probs(flag_probs, names, CLAMP_3WAY, {"Unsuitable Photo": 0.0})
    # P(no_clamp) = 0.5; P(not_enough) = 0.5 * 0.5; P(default) = 0.25
    assert probs[0] == pytest.approx([0.25, 0.5, 0.25], abs=1e-5)
    assert probs[1] == pytest.approx([0.0, 0.0, 1.0], abs=1e-5)


# ------------------------------------------------------------------ the automatic estimate

def test_wilson_bounds_agree_with_the_scalar_interval():
    low, high = wilson_bounds(np.array([0, 12, 50]), 50)
    for k in range(3):
        assert (low[k], high[k]) == pytest.approx(wilson_interval([0, 12, 50][k], 50))


def test_hidden_share_takes_the_ratio_of_the_bin_with_the_smallest_upper_bound():
    # 4 photos recorded as class c, 8 recorded as the default class; bins = 4 gives the
    # thresholds 0.9, 0.8, 0.7, 0.6 (the top 1, 2, 3, 4 class-c photos). Above them:
    # default photos a = 0, 1, 1, 1 of 8, class-c photos b = 1, 2, 3, 4 of 4. Wilson 95%:
    # W+(0, 8) = 0.3244, W+(1, 8) = 0.4709; W-(1, 4) = 0.0456, W-(2, 4) = 0.1500,
    # W-(3, 4) = 0.3006, W-(4, 4) = 0.5101; upper bounds 7.12, 3.14, 1.57, 0.92: the last
    # wins, and alpha = (1/8) / (4/4).
    recorded = [0.9, 0.8, 0.7, 0.6]
    default = [0.85, 0.5, 0.4, 0.3, 0.2, 0.1, 0.1, 0.1]
    assert wilson_bounds(np.array([1]), 8)[1][0] == pytest.approx(0.47089, abs=1e-5)
    assert wilson_bounds(np.array([4]), 4)[0][0] == pytest.approx(0.51011, abs=1e-5)
    assert hidden_share(recorded, default, bins=4) == pytest.approx(1 / 8)
    assert hidden_share(recorded, [], bins=4) == 0.0
    with pytest.raises(ValueError, match="at least one photo"):
        hidden_share([], default)


def test_hidden_share_counts_the_photos_the_model_cannot_see():
    # Half of class c scores 0.99, half like the default class (0.3). Among 100 default
    # photos hide 2 + 2 of each kind, beside 20 others at 0.3 and 76 at 0.05. Top bin
    # (0.99): a = 2, b = 5 of 10, upper bound W+(2, 100) / W-(5, 10) = 0.0700 / 0.2366 =
    # 0.30; full bin (0.3): W+(24, 100) / W-(10, 10) = 0.33 / 0.72 = 0.46. The top bin
    # wins: alpha = (2/100) / (5/10) = 4/100, all four hidden photos, though a model can
    # point at only two of them.
    recorded = [0.99] * 5 + [0.3] * 5
    default = [0.99] * 2 + [0.3] * 22 + [0.05] * 76
    assert hidden_share(recorded, default, bins=2) == pytest.approx(0.04)


def one_sided_problem(n: int, shares: list[float], hidden: float, seed: int, visible: float = 1.0):
    """True classes, out-of-fold-like class probabilities, and labels with a share ``hidden`` of every
    non-default class recorded as the default class 0 (one-sided noise, whichever photos).

    Each class c has a score s_c, high (Beta(6, 2)) for a share ``visible`` of its photos
    and low (Beta(2, 6)) for the rest and for every other photo; the class probabilities
    combine the scores in order as weldnet.audit.estimate.task_class_probs does.
    """
    rng = np.random.default_rng(seed)
    true = rng.choice(len(shares) + 1, size=n, p=[1 - sum(shares), *shares])
    seen = rng.random(n) < visible
    probs = np.zeros((n, len(shares) + 1))
    remaining = np.ones(n)
    for c in range(1, len(shares) + 1):
        score = np.where((true == c) & seen, rng.beta(6, 2, n), rng.beta(2, 6, n))
        probs[:, c] = remaining * score
        remaining = remaining * (1 - score)
    probs[:, 0] = remaining
    recorded = np.where((true > 0) & (rng.random(n) < hidden), 0, true)
    return true, recorded, probs


def test_estimate_recovers_a_planted_ten_percent_one_sided_noise():
    # 25% of the photos are class 1; 40% of those are recorded as class 0: r = 10%
    true, recorded, probs = one_sided_problem(4000, [0.25], hidden=0.4, seed=1)
    actual = np.mean(true != recorded)
    assert actual == pytest.approx(0.10, abs=0.01)
    result = estimate_mislabelling(recorded, probs, n_bootstrap=200, rng=np.random.default_rng(0))
    rate = result.rate
    assert rate.method == "mixture_proportion"
    assert abs(rate.estimate - actual) < 0.015
    assert rate.ci_low <= actual <= rate.ci_high
    # the noise matrix columns are P(recorded | true), and the hidden share shows
    assert result.noise_matrix.sum(axis=0) == pytest.approx([1, 1])
    assert result.noise_matrix[0, 1] == pytest.approx(0.4, abs=0.06)
    assert result.hidden[0] == 0 and result.hidden[1] == pytest.approx(rate.estimate * 4000)


def errors_over_seeds(seeds: range, **problem) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(truth, estimate, cleanlab issue share) of :func:`one_sided_problem` over seeds, without bootstrap."""
    rows = []
    for seed in seeds:
        true, recorded, probs = one_sided_problem(seed=seed, **problem)
        result = estimate_mislabelling(recorded, probs, 0, np.random.default_rng(0))
        rows.append((np.mean(true != recorded), result.rate.estimate, result.issues_estimate))
    return tuple(np.array(rows).T)


def test_estimate_counts_the_hidden_photos_the_model_cannot_see():
    # half of class 1 scores like class 0: the hidden half of those cannot be pointed at,
    # but the recorded ones show how many there are
    truth, estimate, _ = errors_over_seeds(range(10), n=4000, shares=[0.15], hidden=0.3, visible=0.5)
    assert abs(np.mean(estimate - truth)) < 0.005, "the estimate is not biased"
    assert np.mean(np.abs(estimate - truth) <= np.maximum(0.015, 0.3 * truth)) >= 0.8


def test_estimate_adds_the_classes_of_a_three_class_task():
    errors = []
    for seed in range(10):
        true, recorded, probs = one_sided_problem(6000, [0.12, 0.08], hidden=0.25, seed=seed)
        result = estimate_mislabelling(recorded, probs, n_bootstrap=0, rng=np.random.default_rng(0))
        assert result.rate.estimate == pytest.approx(result.hidden.sum() / 6000)
        assert result.rate.ci_low is None          # no bootstrap, no interval
        hidden = [np.sum((true == c) & (recorded == 0)) for c in (1, 2)]
        errors.append([result.hidden[c] / hidden[c - 1] - 1 for c in (1, 2)]
                      + [result.rate.estimate - np.mean(true != recorded)])
    errors = np.array(errors)
    # within 20%: a few photos of other classes reach the top bin of the smaller class
    assert np.all(np.abs(errors.mean(axis=0)[:2]) < 0.2), "each class's hidden count is about right"
    assert np.mean(np.abs(errors[:, 2]) <= 0.015) >= 0.8


def test_interval_covers_the_truth_in_most_seeded_replicates():
    covered, widths = 0, []
    for seed in range(40):
        true, recorded, probs = one_sided_problem(3000, [0.12], hidden=0.1, seed=100 + seed, visible=0.7)
        rate = estimate_mislabelling(recorded, probs, 100, np.random.default_rng(seed)).rate
        covered += rate.ci_low <= np.mean(true != recorded) <= rate.ci_high
        widths.append(rate.ci_high - rate.ci_low)
    assert covered >= 34, f"95% interval covered the truth in {covered} of 40 replicates"
    assert np.median(widths) < 0.025, "an interval that covers by being wide says nothing"


def test_only_flagless_photos_can_be_mislabelled():
    # the default-class photo scoring 0.85 carries another flag, so its record was kept
    labels = np.array([1, 1, 1, 1] + [0] * 8)
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.85, 0.5, 0.4, 0.3, 0.2, 0.1, 0.1, 0.1])
    probs = np.column_stack([1 - scores, scores])
    flagless = labels == 0
    assert hidden_counts(labels, probs)[1] == pytest.approx(1.0)   # (1/8) * 8 photos
    flagless[4] = False
    assert hidden_counts(labels, probs, flagless)[1] == 0.0
    result = estimate_mislabelling(labels, probs, 0, np.random.default_rng(0), flagless)
    assert result.rate.estimate == 0.0
    with pytest.raises(ValueError, match="default class"):
        hidden_counts(labels, probs, np.ones(12, dtype=bool))


def test_suspects_are_cleanlab_issues_least_confident_first():
    true, recorded, probs = one_sided_problem(2000, [0.2], hidden=0.25, seed=4)
    result = estimate_mislabelling(recorded, probs, 0, np.random.default_rng(0))
    assert len(result.issues) > 0 and result.issues_estimate == len(result.issues) / 2000
    assert np.mean(true[result.issues] != recorded[result.issues]) > 0.7, "most suspects are mislabelled"
    self_confidence = probs[result.issues, recorded[result.issues]]
    assert np.all(np.diff(self_confidence) >= 0)


def test_drop_suspects_removes_only_the_chosen_photos():
    manifest = pd.DataFrame({"image": ["a", "b", "c", "d"], "rig": ["redbox"] * 3 + ["bluebox"]})
    suspects = pd.DataFrame({"task": ["t1", "t2", "t1"], "rig": ["redbox", "redbox", "bluebox"],
                             "image": ["b", "c", "d"]})
    assert drop_suspects(manifest, suspects)["image"].tolist() == ["a"]
    assert drop_suspects(manifest, suspects, tasks=["t1"])["image"].tolist() == ["a", "c"]
    assert drop_suspects(manifest, suspects, rigs=["redbox"])["image"].tolist() == ["a", "d"]


def test_cross_rig_check_runs_when_the_target_rig_is_too_small_to_model():
    from weldnet.audit.run import cross_rig_check, fit_rig_models

    rng = np.random.default_rng(0)
    clamp = "No Clamp Used"
    flags = {"bluebox": flag_table([[clamp] if i % 2 else [] for i in range(24)]),
             "redbox": flag_table([[clamp], [clamp], []])}
    thumbs = {rig: rng.integers(0, 255, (len(table), 16, 16, 3), dtype=np.uint8) for rig, table in flags.items()}
    cfg = AuditParams(thumb_size=16, folds=2, epochs=1, batch_size=8, width=2, min_flag_count=2, workers=1)
    models = fit_rig_models(thumbs, flags, cfg, rng, transfer={"bluebox": "redbox"})
    assert models["redbox"].oof_probs is None           # one photo without the flag: not modelled
    assert models["bluebox"].oof_probs.shape == (24, 1)
    row = cross_rig_check(models["bluebox"], "redbox", flags["redbox"], cfg)[clamp]
    assert row["disagreement"] == pytest.approx(row["missing"] + row["extra"])
    assert row["recorded_share"] == pytest.approx(2 / 3, abs=1e-4)


# ------------------------------------------------------------------ params

def test_audit_params_reject_out_of_range_values_in_one_line():
    with pytest.raises(ParamError, match=r"audit.folds = 1 is out of range"):
        build(AuditParams, {"folds": 1}, "audit")
    with pytest.raises(ParamError, match="unknown key 'fold'"):
        build(AuditParams, {"fold": 3}, "audit")
    assert build(AuditParams, {"review_sheet": None}, "audit").review_sheet is None


# ------------------------------------------------------------------ end to end

TASKS = {
    "ground_sheet": {"default": "ground_sheet", "classes": {"no_ground_sheet": ["No Ground Sheet"]}},
    "clamp_detection": {"default": "clamp_detected", "classes": {"no_clamp": ["No Clamp Used"]}},
}
AUDIT_TINY = {"thumb_size": 32, "folds": 3, "epochs": 30, "batch_size": 16, "width": 8, "min_flag_count": 8,
              "min_class_count": 8, "min_auc": 0.6, "bootstrap": 50, "review_size": 6,
              "sheet_thumb": 48, "suspects_sheet": 5, "workers": 1}


STAGE_ARGS = ["--manifest", "manifest.csv", "--export", "export", "--metrics", "m/audit.json",
              "--stats", "m/label_stats.json", "--cross-rig", "m/cross_rig.json", "--out", "audit", "--plots", "plots"]


def params_with(audit: dict) -> dict:
    """The repository's params.yaml with these tasks and this audit section (every stage checks it all)."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params.update(ingest={**(params.get("ingest") or {}), "workers": 1}, tasks=TASKS, audit=audit,
                  task="clamp_detection")
    return params


def run_module(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> dict[float, Path]:
    """Two tiny exports of the same photos: Redbox labels clean, and with 40% of flawed photos
    recorded flagless (the generator's noise); the clean one takes its labels from the truth file."""
    from weldnet.core.params import GenerateSpec, RigCounts, RigShares
    from weldnet.synth.export import generate

    base = tmp_path_factory.mktemp("audit")
    noisy, clean = base / "noisy", base / "clean"
    noisy.mkdir()
    generate(GenerateSpec(size=RigCounts(redbox=160, bluebox=60), label_noise=RigShares(redbox=0.4, bluebox=0.0),
                          workers=2), noisy / "export", noisy / "truth.csv")
    shutil.copytree(noisy, clean)
    truth = pd.read_csv(clean / "truth.csv", dtype=str, keep_default_na=False)
    truth[["image", "rig", "flags"]].to_csv(clean / "export/labels.csv", index=False)
    return {0.0: clean, 0.4: noisy}


def run_audit(folder: Path, audit: dict, monkeypatch) -> dict:
    """Ingest and audit ``folder``'s export in-process, with a params.yaml written there."""
    from stages import audit as audit_stage
    from stages import ingest as ingest_stage

    (folder / "params.yaml").write_text(yaml.safe_dump(params_with(audit), sort_keys=False))
    monkeypatch.chdir(folder)
    if not (folder / "manifest.csv").is_file():
        ingest_stage.main(["--export", "export", "--manifest", "manifest.csv", "--rejected", "rejected.csv",
                           "--metrics", "ingest.json"])
    audit_stage.main(STAGE_ARGS)
    return json.loads((folder / "m/audit.json").read_text())


def test_audit_stage_end_to_end_moves_with_injected_noise(generated, monkeypatch):
    clean = run_audit(generated[0.0], AUDIT_TINY, monkeypatch)
    noisy = run_audit(generated[0.4], AUDIT_TINY, monkeypatch)
    for audit in (clean, noisy):
        assert set(audit) == set(TASKS)
        for task in audit.values():
            assert set(task) == {"redbox", "bluebox"}
            for entry in task.values():
                assert {"majority_share", "mislabelled_rate", "learnable"} <= set(entry)
                assert set(entry["mislabelled_rate"]) == {"estimate", "ci_low", "ci_high", "method"}
    clean_rate = clean["ground_sheet"]["redbox"]["mislabelled_rate"]
    noisy_rate = noisy["ground_sheet"]["redbox"]["mislabelled_rate"]
    assert clean_rate["method"] == noisy_rate["method"] == "mixture_proportion"
    assert noisy_rate["estimate"] > clean_rate["estimate"] + 0.03
    # the other outputs a user opens
    folder = generated[0.4]
    sheet = pd.read_csv(folder / "audit/review_sheet.csv", keep_default_na=False)
    assert list(sheet.columns) == ["rig", "number", "image", "verdict"] and (sheet["verdict"] == "").all()
    assert (folder / "plots/review_redbox.png").is_file()
    suspects = pd.read_csv(folder / "audit/suspects.csv")
    assert (suspects.query("task == 'ground_sheet' and rig == 'redbox'").shape[0]
            == noisy["ground_sheet"]["redbox"]["suspects"] > 0)
    stats = json.loads((folder / "m/label_stats.json").read_text())
    assert stats["redbox"]["n"] == 160 and stats["bluebox"]["n"] == 60
    pairs = pd.read_csv(folder / "audit/flag_pairs.csv")
    assert set(pairs["rig"]) == {"redbox", "bluebox"} and (pairs["photos"] >= 0).all()


def test_filled_review_sheet_becomes_the_headline_estimate(generated, monkeypatch):
    folder = generated[0.4]
    run_audit(folder, {**AUDIT_TINY, "epochs": 1}, monkeypatch)
    sheet = pd.read_csv(folder / "audit/review_sheet.csv", keep_default_na=False)
    sheet["verdict"] = np.where(np.arange(len(sheet)) % 3 == 0, "No Ground Sheet", "ok")
    sheet.to_csv(folder / "filled.csv", index=False)
    audit = run_audit(folder, {**AUDIT_TINY, "epochs": 1, "review_sheet": "filled.csv"}, monkeypatch)
    stats = json.loads((folder / "m/label_stats.json").read_text())
    for rig in ("redbox", "bluebox"):
        rows = sheet[sheet["rig"] == rig]
        entry = audit["ground_sheet"][rig]
        assert entry["mislabelled_rate"]["method"] == "review_sheet"
        expected = stats[rig]["flagless_share"] * (rows["verdict"] != "ok").sum() / len(rows)
        assert entry["mislabelled_rate"]["estimate"] == pytest.approx(expected, abs=1e-4)
        assert entry["review"]["reviewed"] == len(rows)
    # clamp detection: none of the verdicts names its flag
    assert audit["clamp_detection"]["redbox"]["mislabelled_rate"]["estimate"] == 0.0


def test_audit_stage_refuses_a_bad_param_in_one_line(tmp_path):
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params_with({"folds": 1})))
    done = run_module(["stages.audit", *STAGE_ARGS], tmp_path)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "audit.folds = 1 is out of range; it must lie in [2, 20]" in lines[0]


def test_the_audit_augmentation_flips_exactly_the_drawn_photos():
    from weldnet.audit.model import _augment

    batch = torch.arange(4 * 3 * 2 * 2, dtype=torch.float32).view(4, 3, 2, 2)
    got = _augment(batch.clone(), torch.Generator().manual_seed(5))
    draws = torch.Generator().manual_seed(5)
    expected = batch.clone()
    for axis in (-1, -2):                          # the reference: flip the drawn photos in place
        flip = torch.rand(len(expected), generator=draws) < 0.5
        expected[flip] = expected[flip].flip(axis)
    if torch.rand(1, generator=draws).item() < 0.5:
        expected = expected.transpose(-1, -2)
    assert torch.equal(got, expected)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_the_audit_folds_train_on_the_gpu():
    from weldnet.audit.model import FitSettings, cross_validate

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(60, 32, 32, 3), dtype=np.uint8)
    targets = (rng.random((60, 2)) < 0.3).astype(np.float32)
    settings = FitSettings(epochs=2, batch_size=16, learning_rate=0.003, weight_decay=0.0, warmup=0.2, width=8)
    with torch.cuda.device(0):
        done = cross_validate({"rig": (images, targets)}, 3, settings, np.random.default_rng(1),
                              device=torch.device("cuda"))
    probs = done["rig"].oof_probs
    assert probs.shape == (60, 2) and np.isfinite(probs).all() and ((probs > 0) & (probs < 1)).all()
