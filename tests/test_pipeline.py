"""End to end: `dvc repro` of a tiny configuration in a temporary copy of the repository."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]

TINY = {
    "generate": {"size": {"redbox": 40, "bluebox": 150}, "workers": 1},
    "ingest": {"workers": 1},
    "preprocess": {"size": 64, "workers": 1},
    "imbalance": {"ratio": 0.9},
    "model": {"input_size": 32, "width": 4},
    "train": {"epochs": 2, "batch_size": 16, "seeds": [0, 1]},
    "evaluate": {"bootstrap": 50},
    "pretrain": {"epochs": 1, "min_flag_count": 2},
    "study": ["baseline", "threshold", "bayesian", "selective_undersample", "crt"],
}


def merge(base: dict, override: dict) -> dict:
    out = dict(base)
    for key, value in override.items():
        out[key] = merge(base[key], value) if isinstance(value, dict) and isinstance(base.get(key), dict) else value
    return out


def run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(cwd), "DVC_NO_ANALYTICS": "1", "GIT_AUTHOR_NAME": "t",
           "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, f"{' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    repo = tmp_path_factory.mktemp("repo")
    for name in ("dvc.yaml", ".gitignore", ".dvcignore"):
        shutil.copy(ROOT / name, repo / name)
    for folder in ("stages", "weldnet"):
        shutil.copytree(ROOT / folder, repo / folder, ignore=shutil.ignore_patterns("__pycache__"))
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    tiny = merge(params, TINY)
    tiny["audit"] = merge(params.get("audit") or {}, AUDIT_TINY)
    (repo / "params.yaml").write_text(yaml.safe_dump(tiny, sort_keys=False))
    run(["git", "init", "-q"], repo)
    run([sys.executable, "-m", "dvc", "init", "-q"], repo)
    run([sys.executable, "-m", "dvc", "config", "core.analytics", "false"], repo)
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "tiny pipeline"], repo)
    return repo


AUDIT_TINY: dict = {}


def test_repro_runs_every_stage_then_nothing(repo: Path):
    first = run([sys.executable, "-m", "dvc", "repro"], repo)
    for stage in ("generate", "ingest", "audit", "preprocess", "imbalance", "pretrain", "train@baseline",
                  "train@threshold", "train@bayesian", "train@selective_undersample", "train@crt", "evaluate",
                  "plots"):
        assert f"Running stage '{stage}'" in first.stdout, stage

    evaluate = json.loads((repo / "metrics/evaluate.json").read_text())
    assert set(evaluate) == {"baseline", "threshold", "bayesian", "selective_undersample", "crt"}
    for result in evaluate.values():
        assert {"per_class_accuracy", "accuracy", "cross_entropy", "collapsed", "recall", "automation",
                "per_class_accuracy_std", "automation_std", "val_per_class_accuracy"} <= set(result)
        assert len(result["best_epoch"]) == 2                      # one per seed
        assert set(result["recall"]) == {"clamp_detected", "no_clamp"}
        assert 0.0 <= result["per_class_accuracy"] <= 1.0
    ingest = json.loads((repo / "metrics/ingest.json").read_text())
    assert ingest["images"]["bluebox"] == 150
    audit = json.loads((repo / "metrics/audit.json").read_text())
    assert set(audit["clamp_detection"]) == {"redbox", "bluebox"}
    assert (repo / "plots/summary/training_curves.png").stat().st_size > 0
    assert (repo / "dvclive/baseline/seed-0/plots/metrics/train/loss.tsv").exists()
    summary = (repo / "metrics/summary.md").read_text()
    assert "| threshold |" in summary and "| crt |" in summary and " ± " in summary
    selective = json.loads((repo / "models/selective_undersample/config.json").read_text())
    rounds = selective["seeds"]["seed-1"]["rounds"]
    assert len(rounds) >= 2 and rounds[-1]["set_aside"] == 0
    crt = json.loads((repo / "models/crt/config.json").read_text())
    assert crt["schedule"] == "crt" and crt["seeds"]["seed-0"]["best_epoch"] > 2   # a re-training epoch

    second = run([sys.executable, "-m", "dvc", "repro"], repo)
    assert "Running stage" not in second.stdout
    assert "up to date" in second.stdout


def test_exp_run_with_bayesian_loss_changes_what_it_should(repo: Path):
    run([sys.executable, "-m", "dvc", "repro"], repo)
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "baseline"], repo)
    exp = run([sys.executable, "-m", "dvc", "exp", "run", "-S", "loss=bayesian"], repo)
    assert "Running stage 'train@baseline'" in exp.stdout
    assert "Running stage 'pretrain'" not in exp.stdout
    diff = run([sys.executable, "-m", "dvc", "metrics", "diff"], repo)
    assert "baseline.cross_entropy" in diff.stdout
    assert "bayesian." not in diff.stdout  # it sets its own loss: same model, same metrics
    config = json.loads((repo / "models/baseline/config.json").read_text())
    assert config["loss"] == "bayesian"


def test_a_killed_training_run_resumes_and_ends_with_the_same_model(repo: Path):
    """Kill train mid-run once a checkpoint exists; the rerun resumes and yields the uninterrupted weights."""
    import time

    import torch

    run([sys.executable, "-m", "dvc", "repro"], repo)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["train"]["epochs"] = 40
    params["train"]["seeds"] = [0]
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    def train(tag: str) -> list[str]:
        return [sys.executable, "-m", "stages.train", "--strategy", "baseline", "--split", "data/split.csv",
                "--shards", "data/processed", "--out", f"out-{tag}", "--live", f"live-{tag}",
                "--checkpoints", f"ckpt-{tag}", "--pretrained", "models/pretrain/redbox.pt"]

    run(train("whole"), repo)
    env = {**os.environ, "PYTHONPATH": str(repo)}
    proc = subprocess.Popen(train("killed"), cwd=repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    checkpoint = repo / "ckpt-killed" / "seed-0.pt"
    deadline = time.time() + 300
    while not checkpoint.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    assert checkpoint.exists()
    epochs_done = torch.load(checkpoint, weights_only=True)["epoch"]
    assert epochs_done < 40, "the run finished before it could be killed"
    resumed = run(train("killed"), repo)
    assert f"resuming from ckpt-killed/seed-0.pt after epoch" in resumed.stdout
    whole = torch.load(repo / "out-whole/seed-0/model.pt", weights_only=True)
    again = torch.load(repo / "out-killed/seed-0/model.pt", weights_only=True)
    assert all(torch.equal(whole[k], again[k]) for k in whole)
    assert json.loads((repo / "out-whole/config.json").read_text())["seeds"] == \
        json.loads((repo / "out-killed/config.json").read_text())["seeds"]
    loss_whole = (repo / "live-whole/seed-0/plots/metrics/train/loss.tsv").read_text().splitlines()
    loss_again = (repo / "live-killed/seed-0/plots/metrics/train/loss.tsv").read_text().splitlines()
    assert loss_whole == loss_again  # the replayed log: every step once, same values


def test_a_finished_checkpoint_from_other_code_is_not_resumed(repo: Path):
    """dvc re-runs train after a library change; the stage must retrain, not reload the old run's checkpoint."""
    run([sys.executable, "-m", "dvc", "repro"], repo)
    command = [sys.executable, "-m", "stages.train", "--strategy", "baseline", "--split", "data/split.csv",
               "--shards", "data/processed", "--out", "out-code", "--live", "live-code",
               "--checkpoints", "ckpt-code", "--pretrained", "models/pretrain/redbox.pt"]
    run(command, repo)
    assert "resuming from" in run(command, repo).stdout          # same code: the finished run is reused
    losses = repo / "weldnet" / "losses.py"
    original = losses.read_text()
    try:
        losses.write_text(original + "\n# a change to the training code\n")
        again = run(command, repo).stdout
        assert "resuming from" not in again
        assert "written by another configuration; starting afresh" in again
    finally:
        losses.write_text(original)


def test_the_triage_bundle_reproduces_evaluate_and_triages_a_fresh_export(repo: Path):
    """The bundle stage after evaluate: chosen by validation, the CLI gives evaluate's scores, dvc tracks it."""
    import numpy as np
    import pandas as pd

    from weldnet.export import generate
    from weldnet.params import GenerateSpec, RigCounts

    run([sys.executable, "-m", "dvc", "repro"], repo)
    report = json.loads((repo / "triage/triage.json").read_text())
    metrics = json.loads((repo / "metrics/triage.json").read_text())
    assert metrics == {k: v for k, v in report.items() if k not in ("note", "method", "chosen_by")}
    evaluate = json.loads((repo / "metrics/evaluate.json").read_text())
    study = yaml.safe_load((repo / "params.yaml").read_text())["study"]
    best = max(study, key=lambda name: evaluate[name]["val_per_class_accuracy"])    # first among ties
    assert report["strategy"] == best and report["target_recall"] == 0.95
    assert {"threshold", "confidence", "calibration", "automation", "test", "naive", "note"} <= set(report)

    # the inspector's command on the test split's photos gives evaluate's probabilities for that strategy and seed
    split = pd.read_csv(repo / "data/split.csv", dtype={"image": str}, keep_default_na=False)
    test = split.loc[split["split"] == "test", "image"].tolist()
    run([sys.executable, "-m", "weldnet.triage", *(f"data/export/{image}" for image in test), "--bundle", "triage",
         "--out", "test.csv", "--workers", "1"], repo)
    rows = pd.read_csv(repo / "test.csv", keep_default_na=False).set_index("image")
    predictions = pd.read_csv(repo / "data/predictions.csv", dtype={"image": str}, keep_default_na=False)
    mine = predictions[(predictions["strategy"] == best) & (predictions["seed"] == report["seed"])]
    expected = 1.0 - mine.set_index("image").loc[test, "p_clamp_detected"].to_numpy()
    scores = rows.loc[[f"data/export/{image}" for image in test], "score"].to_numpy(dtype=float)
    np.testing.assert_allclose(scores, expected, rtol=0, atol=1e-6)
    cleared = rows["decision"] == "clear"
    assert (cleared == (rows["score"].astype(float) < report["threshold"])).all()
    assert cleared.mean() == pytest.approx(report["test"]["automation"])
    if not report["certified"]:       # tiny validation split: too few flawed photos, said plainly
        assert "needs at least 59" in report["note"] and not cleared.any()

    # a fresh export the bundle has never seen (another generate.seed), with its labels
    generate(GenerateSpec(seed=99, size=RigCounts(redbox=4, bluebox=40), workers=1), repo / "fresh",
             repo / "fresh-truth.csv")
    fresh = run([sys.executable, "-m", "weldnet.triage", "fresh", "--bundle", "triage", "--out", "fresh.csv",
                 "--workers", "1"], repo)
    assert "triage: 44 photos" in fresh.stdout
    assert "labels: 40 labelled photos (4 of other rigs left out)" in fresh.stdout
    assert (repo / "fresh.html").stat().st_size > 0

    # dvc metrics diff shows the certificate moving when only the triage params change
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "bundle"], repo)
    exp = run([sys.executable, "-m", "dvc", "exp", "run", "-S", "triage.target_recall=0.5",
               "-S", "triage.confidence=0.5"], repo)
    assert "Running stage 'bundle'" in exp.stdout and "Running stage 'evaluate'" not in exp.stdout
    diff = run([sys.executable, "-m", "dvc", "metrics", "diff"], repo)
    assert "metrics/triage.json" in diff.stdout and "target_recall" in diff.stdout
