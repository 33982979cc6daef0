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


def test_plots_show_overlays_every_strategy_on_a_page_that_works_offline(repo: Path):
    import pandas as pd

    sys.path.insert(0, str(ROOT / "scripts"))
    from check_plots_page import find_browser, static_check

    run([sys.executable, "-m", "dvc", "repro"], repo)
    shutil.copytree(ROOT / ".dvc" / "plots", repo / ".dvc" / "plots", dirs_exist_ok=True)
    run([sys.executable, "-m", "dvc", "config", "plots.html_template", "plots/offline.html"], repo)
    run([sys.executable, "-m", "dvc", "plots", "show", "-o", "page"], repo)
    page = (repo / "page" / "index.html").read_text(encoding="utf-8")
    charts, images = static_check(page)
    assert (charts, images) == (5, 4)                       # one chart per plot of dvc.yaml, not one per file
    study = yaml.safe_load((repo / "params.yaml").read_text())["study"]
    for name in study:
        assert f'"strategy": "{name}"' in page, name
    curves = pd.read_csv(repo / "plots/summary/val_per_class_accuracy.csv")
    logged = pd.read_csv(repo / "dvclive/baseline/seed-0/plots/metrics/val/per_class_accuracy.tsv", sep="\t")
    baseline = curves[(curves["strategy"] == "baseline") & (curves["seed"] == 0)]
    assert baseline["step"].tolist() == logged["step"].tolist() and logged["step"].iloc[0] > 0   # not the row
    assert set(curves["strategy"]) == set(study) - {"threshold"}                          # threshold reuses baseline
    if find_browser() is not None:
        done = subprocess.run([sys.executable, str(ROOT / "scripts/check_plots_page.py"), "--page",
                               str(repo / "page/index.html")], capture_output=True, text=True, timeout=600)
        assert done.returncode == 0 and "5 vega charts drawn" in done.stdout, done.stdout + done.stderr


def test_report_compares_the_workspace_with_a_base_revision(repo: Path):
    run([sys.executable, "-m", "dvc", "repro"], repo)
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "report base", "--allow-empty"], repo)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["evaluate"].update(target_recall=0.5, bootstrap=80)      # moves the automation and the intervals
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    rerun = run([sys.executable, "-m", "dvc", "repro"], repo)
    assert "Running stage 'evaluate'" in rerun.stdout and "Running stage 'train@baseline'" not in rerun.stdout

    done = run([sys.executable, "-m", "weldnet.report", "--base", "HEAD", "--out", "review/report.md"], repo)
    assert "review/report.md" in done.stdout
    report = (repo / "review/report.md").read_text(encoding="utf-8")
    changed = report[report.index("### Params changed"):]
    assert "evaluate.target_recall" in changed and "evaluate.bootstrap" in changed          # params diff
    headline = report[report.index("### Per strategy"):report.index("### Params changed")]
    for name in params["study"]:
        assert f"| {name} |" in headline, name
    assert "per_class_accuracy_ci_low" not in headline and "[" in headline               # intervals as [low, high]
    assert "| strategy | per-class acc." in report                                        # metrics/summary.md
    assert "| metrics/evaluate.json |" in report[report.index("<details>"):]            # the full metrics diff
    images = [line[line.index("](") + 2:-1] for line in report.splitlines() if line.startswith("![")]
    assert len(images) >= 5 and all((repo / "review" / image).is_file() for image in images)
