"""The pull-request report's pieces (the whole command runs on the tiny pipeline in test_pipeline.py)."""
import subprocess
import sys
from pathlib import Path

import yaml

from weldnet.scoring.report import declared_images, declared_summaries, headline_table, strategy_metrics, table_or

ROOT = Path(__file__).resolve().parents[1]

DIFF = {
    "metrics/evaluate.json": {
        "baseline.per_class_accuracy": {"old": 0.5, "new": 0.575, "diff": 0.075},
        "baseline.per_class_accuracy_ci_low": {"old": 0.5, "new": 0.534, "diff": 0.034},
        "baseline.per_class_accuracy_ci_high": {"old": 0.5, "new": 0.615, "diff": 0.115},
        "baseline.automation": {"old": 0.215, "new": 0.215, "diff": 0.0},
        "baseline.collapsed_seeds": {"old": 2, "new": 0, "diff": -2},
        "baseline.recall.no_clamp": {"old": 0.0, "new": 0.3, "diff": 0.3},
        "baseline.best_epoch.seed-0": {"old": 12, "new": 13, "diff": 1},
        "baseline.val_per_class_accuracy": {"old": 0.5, "new": 0.5, "diff": 0.0},
        "crt.per_class_accuracy": {"new": 0.658},
        "crt.val_per_class_accuracy": {"new": 0.66},
    },
    "metrics/audit.json": {"clamp_detection.redbox.learnable": {"old": True, "new": True}},
}


def test_strategy_metrics_take_each_strategy_s_scalars_only():
    metrics = strategy_metrics(DIFF)
    assert list(metrics) == ["crt", "baseline"]                 # best validation now first; not the audit's tasks
    assert metrics["baseline"]["per_class_accuracy"] == (0.5, 0.575)
    assert "recall" not in metrics["baseline"] and "best_epoch" not in metrics["baseline"]
    assert metrics["crt"]["per_class_accuracy"] == (None, 0.658)


def test_headline_table_shows_base_to_now_with_both_intervals():
    table = headline_table(strategy_metrics(DIFF))
    row = next(line for line in table.splitlines() if line.startswith("| baseline |"))
    assert "0.500 → 0.575 (+0.075)" in row
    assert "[0.500, 0.500]" in row and "[0.534, 0.615]" in row
    assert "| 0.215 |" in row                                   # unchanged: shown once
    assert "| 2 → 0 |" in row
    assert "— → 0.658" in next(line for line in table.splitlines() if line.startswith("| crt |"))


def test_the_report_reads_its_images_and_summaries_from_dvc_yaml():
    pipeline = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    images = declared_images(pipeline)
    assert images and all(p.endswith(".png") for p in images)
    assert "plots/summary/training_curves.png" in images
    assert declared_summaries(pipeline) == ["metrics/summary.md", "metrics/inspect.md"]


def test_an_unknown_base_revision_stops_with_one_line(tmp_path):
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    done = subprocess.run([sys.executable, "-m", "weldnet.scoring.report", "--base", "no-such-branch"], cwd=tmp_path,
                          capture_output=True, text=True, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "error: base revision 'no-such-branch' not found; fetch it (git fetch origin no-such-branch) "
        "or pass --base <revision>"]


def test_a_dvc_table_with_a_header_only_reads_as_no_change():
    assert table_or("| Path | Param | HEAD | workspace |\n|---|---|---|---|\n", "No parameter changed.") == \
        "No parameter changed."
    table = "| Path | Param |\n|---|---|\n| params.yaml | loss |"
    assert table_or(table, "none") == table
