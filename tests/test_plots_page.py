"""`dvc plots show` with the repository's plot definitions, templates and page, on small made-up tables.

The page must reference nothing on the network; with Chromium installed
(apt-get install chromium) every vega chart must also be drawn, offline.
"""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from weldnet.scoring.evaluation import automation_curve, automation_table, confusion_counts, confusion_table
from weldnet.scoring.plotting import (
    accuracy_table,
    automation_chart,
    confusion_chart,
    filter_grid,
    per_class_accuracy_chart,
    tidy_curves,
    validation_curves_chart,
    window_mean,
)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
from check_plots_page import find_browser, static_check  # noqa: E402

STRATEGIES = ("baseline", "oversample", "logit_adjusted")


def made_up_results() -> dict:
    rng = np.random.default_rng(0)
    out = {}
    for i, name in enumerate(STRATEGIES):
        mean = 0.5 + 0.08 * i
        out[name] = {"per_class_accuracy": mean, "per_class_accuracy_ci_low": mean - 0.04,
                     "per_class_accuracy_ci_high": mean + 0.04, "val_per_class_accuracy": mean + rng.normal(0, 0.01),
                     "collapsed": i == 0, "collapsed_seeds": 2 if i == 0 else 0,
                     "best_epoch": {"seed-0": 3, "seed-1": 4}}
    return out


def write_tables(repo: Path) -> dict:
    """What the evaluate and plots stages write, from made-up scores; returns the results."""
    rng = np.random.default_rng(1)
    results = made_up_results()
    summary, evaluate = repo / "plots/summary", repo / "plots/evaluate"
    summary.mkdir(parents=True)
    evaluate.mkdir(parents=True)
    val, loss, auto, conf = {}, {}, [], []
    target = (rng.random(120) < 0.2).astype(int)
    for i, name in enumerate(STRATEGIES):
        steps = np.arange(0, 100)
        val[name] = pd.DataFrame({"seed": np.repeat([0, 1], 4), "step": np.tile([24, 49, 74, 99], 2),
                                  "value": 0.5 + 0.05 * i * rng.random(8), "epoch": np.tile([1, 2, 3, 4], 2)})
        loss[name] = window_mean(pd.DataFrame({"seed": np.repeat([0, 1], 100), "step": np.tile(steps, 2),
                                               "value": np.exp(-np.tile(steps, 2) / 50) + 0.05 * rng.random(200)}), 10)
        scores = [target * (0.3 + 0.2 * i) + rng.random(120) * 0.7 for _ in range(2)]
        curves = [automation_curve(s, target == 1) for s in scores]
        auto.append(automation_table(name, curves, [(0.95, 0.3), (0.9, 0.35)], 0.95))
        preds = [(s > 0.6).astype(int) for s in scores]
        conf.append(confusion_table(name, sum(confusion_counts(p, target, 2) for p in preds),
                                    ["clamp_detected", "no_clamp"]))
    val_table = tidy_curves(val, "per_class_accuracy")
    loss_table = tidy_curves(loss, "loss")
    val_table.to_csv(summary / "val_per_class_accuracy.csv", index=False)
    loss_table.to_csv(summary / "train_loss.csv", index=False)
    table = accuracy_table(results)
    table.to_csv(summary / "per_class_accuracy.csv", index=False)
    pd.concat(auto).to_csv(evaluate / "automation.csv", index=False)
    pd.concat(conf).to_csv(evaluate / "confusion.csv", index=False)
    validation_curves_chart(val_table, results, summary / "training_curves.png")
    per_class_accuracy_chart(table, results, summary / "per_class_accuracy.png")
    automation_chart(pd.concat(auto), results, summary / "automation.png")
    confusion_chart(pd.concat(conf), results, summary / "confusion.png")
    filters = rng.normal(size=(4, 3, 3, 3))
    filter_grid([(name, [filters, -filters]) for name in STRATEGIES], summary / "filters.png", ["seed-0", "seed-1"],
                "first-layer filters")
    return results


@pytest.fixture(scope="module")
def page(tmp_path_factory) -> Path:
    """A DVC repository holding only dvc.yaml's top-level plots, the templates and the tables; its page."""
    repo = tmp_path_factory.mktemp("plots")
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=repo, check=True)
    shutil.copytree(ROOT / ".dvc/plots", repo / ".dvc/plots")
    shutil.copy(ROOT / ".dvc/config", repo / ".dvc/config")
    plots = yaml.safe_load((ROOT / "dvc.yaml").read_text())["plots"]
    (repo / "dvc.yaml").write_text(yaml.safe_dump({"plots": plots}, sort_keys=False))
    write_tables(repo)
    done = subprocess.run([sys.executable, "-m", "dvc", "plots", "show", "-o", "out"], cwd=repo,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return repo / "out/index.html"


def test_every_declared_plot_is_one_chart_and_the_page_needs_no_network(page: Path):
    html = page.read_text(encoding="utf-8")
    charts, images = static_check(html)
    declared = yaml.safe_load((ROOT / "dvc.yaml").read_text())["plots"]
    vega = [p for p in declared if isinstance(p, dict)]
    assert charts == len(vega) == 5 and images == len(declared) - len(vega)
    assert "cdn.jsdelivr" not in html and "vega-embed 6.29.0" in html
    assert charts + images <= 20
    # the strategies arrive in each chart's data: one chart overlays them all
    for name in STRATEGIES:
        assert html.count(f'"strategy": "{name}"') >= 5


def test_static_check_rejects_a_page_that_loads_vega_from_a_cdn():
    with pytest.raises(SystemExit, match="network"):
        static_check('<html><script src="https://cdn.jsdelivr.net/npm/vega@5"></script></html>')
    with pytest.raises(SystemExit, match="network"):
        static_check('<img src="//example.org/a.png">')
    assert static_check('<img src="static/a.png"><script>vegaEmbed(\'#a\', {})</script>vega-embed') == (1, 1)


@pytest.mark.skipif(find_browser() is None, reason="no Chromium (apt-get install chromium)")
def test_chromium_draws_every_chart_offline(page: Path):
    shot = page.with_name("shot.png")
    done = subprocess.run([sys.executable, str(ROOT / "scripts/check_plots_page.py"), "--page", str(page),
                           "--screenshot", str(shot)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "5 vega charts drawn" in done.stdout and shot.stat().st_size > 10_000


def test_made_up_tables_are_what_the_templates_read(tmp_path):
    """The columns the templates in .dvc/plots use exist in the tables the stages write."""
    write_tables(tmp_path)
    for name, columns in (("summary/val_per_class_accuracy.csv", {"strategy", "seed", "step", "per_class_accuracy"}),
                          ("summary/train_loss.csv", {"strategy", "seed", "step", "loss"}),
                          ("summary/per_class_accuracy.csv", {"strategy", "per_class_accuracy", "ci_low", "ci_high",
                                                              "val_per_class_accuracy", "collapsed",
                                                              "collapsed_seeds", "seeds"}),
                          ("evaluate/automation.csv", {"strategy", "kind", "recall", "cleared", "target_recall"}),
                          ("evaluate/confusion.csv", {"strategy", "actual", "predicted", "count"})):
        assert columns <= set(pd.read_csv(tmp_path / "plots" / name).columns), name
    for template in (ROOT / ".dvc/plots").glob("*.json"):
        assert "<DVC_METRIC_DATA>" in json.dumps(json.loads(template.read_text())), template.name
