"""The sweep and all-task tables built from experiment records, on hand-made records."""
from weldnet.scoring.studies import (
    collapse_onset,
    escape_epoch,
    sweep_markdown,
    sweep_plot,
    sweep_rows,
    task_markdown,
    task_rows,
)


def record(ratio, share, minority, results, curves=None, task="clamp_detection"):
    return {"ratio": ratio, "task": task, "curves": curves or {},
            "split": {"classes": ["clamp_detected", "no_clamp"], "train_majority_share": share,
                      "counts": {"train": {"clamp_detected": 1576, "no_clamp": minority},
                                 "test": {"clamp_detected": 525, "no_clamp": 74}}},
            "evaluate": {name: {"per_class_accuracy": pca, "per_class_accuracy_ci": [pca - 0.05, pca + 0.05],
                                "collapsed": pca == 0.5, "collapsed_seeds": int(pca == 0.5), "best_epoch": [3],
                                "val_per_class_accuracy": pca} for name, pca in results.items()}}


RECORDS = [record(0.98, 0.98, 32, {"baseline": 0.5, "oversample": 0.66},
                  {"baseline": [[0.5] * 15], "oversample": [[0.5, 0.5, 0.6] + [0.7] * 12]}),
           record(None, 0.875, 224, {"baseline": 0.78, "oversample": 0.8}, {"baseline": [[0.5, 0.62] + [0.7] * 13]}),
           record(0.99, 0.99, 16, {"baseline": 0.5, "oversample": 0.5}),
           record(0.94, 0.94, 100, {"baseline": 0.61, "oversample": 0.7})]


def test_escape_epoch_is_the_first_above_chance():
    assert escape_epoch([0.5, 0.5, 0.51, 0.4], 2) == 3
    assert escape_epoch([0.5] * 5, 2) is None
    assert escape_epoch([0.34, 0.3], 3) == 1


def test_sweep_rows_sorted_by_share_with_collapse_and_escape():
    rows = sweep_rows(RECORDS, ["baseline", "oversample"])
    assert [(r["share"], r["strategy"]) for r in rows][:3] == [(0.875, "baseline"), (0.875, "oversample"),
                                                                (0.94, "baseline")]
    by = {(r["strategy"], r["share"]): r for r in rows}
    assert by[("baseline", 0.875)]["escape_epochs"] == [2] and by[("baseline", 0.98)]["escape_epochs"] == [None]
    assert by[("oversample", 0.98)]["escape_epochs"] == [3] and by[("oversample", 0.98)]["epochs"] == 15
    assert by[("baseline", 0.98)]["collapsed"] and by[("baseline", 0.98)]["minority"] == 32


def test_collapse_onset_is_where_collapse_holds_for_every_larger_share():
    rows = sweep_rows(RECORDS, ["baseline", "oversample"])
    assert collapse_onset(rows, "baseline") == 0.98
    assert collapse_onset(rows, "oversample") == 0.99
    assert collapse_onset(sweep_rows(RECORDS[:2], ["oversample"]), "oversample") is None


def test_sweep_markdown_and_plot(tmp_path):
    rows = sweep_rows(RECORDS, ["baseline", "oversample"])
    table = sweep_markdown(rows, ["baseline", "oversample"])
    assert "87.5% (natural), 224 flawed" in table
    assert "| baseline | 0.780 [0.730, 0.830] | 0.610 [0.560, 0.660] | 0.500 [0.450, 0.550] **C** |" in table
    assert table.splitlines()[2].endswith("| 98.0% |") and "| oversample | " in table
    assert "| baseline | 2 / 15 |  | - / 15 |  |" in table
    sweep_plot(rows, ["baseline", "oversample"], tmp_path / "sweep.png", "test")
    assert (tmp_path / "sweep.png").read_bytes()[:4] == b"\x89PNG"


def test_task_rows_put_the_audit_beside_the_results_and_list_tasks_that_did_not_run():
    tasks = {"clamp_detection": {"rigs": ["bluebox"]}, "unsuitable_photo": {"rigs": ["redbox"]}}
    audit = {"clamp_detection": {"bluebox": {"n": 3000, "class_shares": {"clamp_detected": 0.875, "no_clamp": 0.125},
                                             "majority_share": 0.875, "learnable": True, "bound": 0.125,
                                             "mislabelled_rate": {"estimate": 0.024, "method": "confident_learning"}}},
             "unsuitable_photo": {"redbox": {"n": 3000, "class_shares": {"suitable_photo": 1.0, "unsuitable_photo": 0.0},
                                             "majority_share": 1.0, "learnable": None, "bound": 0.0,
                                             "mislabelled_rate": {"estimate": None, "method": "not_estimable"}}}}
    rows = task_rows([RECORDS[1]], tasks, audit, ["baseline", "oversample"])
    assert rows[0]["photos"] == {"clamp_detected": 2625, "no_clamp": 375}
    assert rows[0]["results"]["oversample"]["per_class_accuracy"] == 0.8 and rows[1]["test"] is None
    table = task_markdown(rows, ["baseline", "oversample"])
    assert "| clamp_detection | bluebox | 2625 / 375 (test 525 / 74) | 87.5% | learnable (2.4% vs bound 12.5%) | " \
           "0.780 [0.73, 0.83] | 0.800 [0.75, 0.85] |" in table
    assert "| unsuitable_photo | redbox | 3000 / 0 | 100.0% | not estimable (not_estimable) | not run | not run |" in table


def test_the_queued_experiments_narrow_study_seeds_and_set_the_axis():
    from benchmarks.experiments import SWEEP_RATIOS, queue_commands
    sweep = queue_commands("sweep", ["baseline", "crt"], [0], [])
    assert len(sweep) == len(SWEEP_RATIOS) and sweep[0][:6] == ["dvc", "exp", "run", "--queue", "-n", "sweep-null"]
    assert {"imbalance.ratio=0.99", "study=[baseline,crt]", "train.seeds=[0]", "ceiling=[]"} <= set(sweep[-1])
    tasks = queue_commands("tasks", ["baseline"], [0, 1], ["ground_sheet", "water_contamination"])
    assert [c[5] for c in tasks] == ["task-ground_sheet", "task-water_contamination"]
    assert {"task=water_contamination", "imbalance.ratio=null", "train.seeds=[0,1]"} <= set(tasks[1])
