"""End to end: `dvc repro` of a tiny configuration in a temporary copy of the repository."""
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import params_reads
import pytest
import yaml

from weldnet.core.threads import thread_budget

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
    "inspect": {"epochs": 1, "batch_size": 16, "min_flag_count": 5, "losses": ["bce", "asymmetric"]},
    "study": ["baseline", "threshold", "bayesian", "selective_undersample", "crt", "transfer_conv"],
}


def merge(base: dict, override: dict) -> dict:
    out = dict(base)
    for key, value in override.items():
        out[key] = merge(base[key], value) if isinstance(value, dict) and isinstance(base.get(key), dict) else value
    return out


READS = Path(tempfile.mkdtemp()) / "params-read.jsonl"    # what each stage read of params.yaml


def run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(cwd), str(ROOT / "tests")]), "DVC_NO_ANALYTICS": "1",
           "WELDNET_PARAMS_HOOK": params_reads.HOOK, "WELDNET_PARAMS_LOG": str(READS),
           "GIT_AUTHOR_NAME": "t",
           "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=1800)
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


def evaluate_best(evaluate: dict) -> str:
    return next(name for name, result in evaluate.items() if result["best_on_validation"])


def test_repro_runs_every_stage_then_nothing(repo: Path):
    first = run([sys.executable, "-m", "dvc", "repro"], repo)
    for stage in ("generate", "ingest", "audit", "preprocess", "imbalance", "pretrain", "configure",
                  *(f"train@{name}" for name in TINY["study"]), "ceiling@baseline", "evaluate", "plots", "inspect"):
        assert f"Running stage '{stage}'" in first.stdout, stage

    evaluate = json.loads((repo / "metrics/evaluate.json").read_text())
    assert set(evaluate) == set(TINY["study"]) | {"baseline@natural"}     # the ceiling beside the study
    natural = json.loads((repo / "models/strategies/baseline@natural/config.json").read_text())
    trained = json.loads((repo / "models/strategies/baseline/config.json").read_text())
    removed = json.loads((repo / "metrics/split.json").read_text())["counts"]["removed"]
    # every training photo kept: the natural split trains on what the imposed imbalance removed too
    assert natural["train_counts"] == [n + removed[c] for c, n in zip(natural["classes"], trained["train_counts"])]
    # the tiny export may already be past the imposed ratio; then the ceiling is the baseline and no gap is defined
    gap = evaluate["baseline@natural"]["per_class_accuracy"] - evaluate["baseline"]["per_class_accuracy"]
    for name in TINY["study"]:
        if name != "baseline":
            assert {"vs_baseline_diff", "vs_baseline_ci_low", "vs_baseline_p_holm", "vs_baseline_verdict",
                    *(["gap_closed"] if gap else [])} <= set(evaluate[name]), name
            assert ("gap_closed" in evaluate[name]) == bool(gap), name
        assert evaluate[name]["seed_gap"] >= 0 and evaluate[name]["vs_best_diff" if name != evaluate_best(evaluate)
                                                             else "seed_diff"] is not None
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
    assert "## Paired comparisons" in summary and "| baseline@natural |" in summary and "Seed noise floor" in summary
    assert "| strategy | vs baseline |" in summary
    selective = json.loads((repo / "models/strategies/selective_undersample/config.json").read_text())
    rounds = selective["seeds"]["seed-1"]["rounds"]
    assert len(rounds) >= 2 and rounds[-1]["set_aside"] == 0
    crt = json.loads((repo / "models/strategies/crt/config.json").read_text())
    assert crt["axes"]["schedule"] == "crt" and crt["seeds"]["seed-0"]["best_epoch"] > 2   # a re-training epoch
    assert not any((repo / "checkpoints").glob("*/*.pt"))    # finished runs keep no checkpoint

    second = run([sys.executable, "-m", "dvc", "repro"], repo)
    assert "Running stage" not in second.stdout
    assert "up to date" in second.stdout


# declared keys this tiny run cannot read, and why
READ_ONLY_SOMETIMES = {
    "audit.cross_rig_threshold": "read only when a flag is common on both rigs (not on 40 Redbox photos)",
    "losses": "read for strategies whose loss has constants; the tiny study has none",
    "weightings": "read for strategies whose weighting has settings; the tiny study has none",
    "augmentations": "read for strategies whose augmentation has constants (mixup, cutmix, remix); the tiny study has none",
}


def test_each_stage_depends_on_exactly_the_params_it_reads(repo: Path):
    """Every key a stage read during dvc repro is among its dvc.yaml params, and every one listed was read.

    ``workers`` params and the ``loader`` section are the exception: they set how many
    processes share the work and how photos are read (cached or from the shards), and
    every stage writes the same bytes for any value (tests/test_data.py), so they re-run nothing.
    """
    run([sys.executable, "-m", "dvc", "repro"], repo)
    stages = yaml.safe_load((repo / "dvc.yaml").read_text())["stages"]
    declared = {}
    for stage in stages.values():
        body = stage.get("do", stage)
        module = str(body["cmd"]).split("python -m ")[1].split()[0]
        declared[module] = [str(p) for p in body.get("params", [])]
    reads: dict[str, set[str]] = {}
    for line in READS.read_text().splitlines():
        entry = json.loads(line)
        reads.setdefault(entry["module"], set()).update(entry["reads"])
    assert set(reads) >= set(declared) - {"stages.train", "stages.plots"}
    for module, keys in reads.items():
        listed = declared[module]
        unlisted = {k for k in keys if not any(k == d or k.startswith(d + ".") for d in listed)
                    and not k.endswith(".workers") and not k.startswith("loader.")}
        unread = {d for d in listed if not any(k == d or k.startswith(d + ".") or d.startswith(k + ".") for k in keys)
                  and d not in READ_ONLY_SOMETIMES}
        assert not unlisted, f"{module} reads {sorted(unlisted)} but dvc.yaml does not list them"
        assert not unread, f"dvc.yaml lists {sorted(unread)} for {module}, which never reads them"


def trained(output: str) -> set[str]:
    """The strategies whose train stage dvc ran (not skipped, not restored from the run-cache)."""
    return {line.split("'train@")[1].split("'")[0] for line in output.splitlines()
            if line.startswith("Running stage 'train@")}


def test_exp_run_with_bayesian_loss_changes_what_it_should(repo: Path):
    run([sys.executable, "-m", "dvc", "repro"], repo)
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "baseline"], repo)
    exp = run([sys.executable, "-m", "dvc", "exp", "run", "-S", "loss=bayesian"], repo)
    # only the strategies without a loss of their own can change; reuse trains nothing either way
    assert trained(exp.stdout) == {"baseline", "selective_undersample", "crt", "transfer_conv"}
    assert "Running stage 'pretrain'" not in exp.stdout
    assert "Running stage 'evaluate'" in exp.stdout and "Running stage 'plots'" in exp.stdout
    diff = run([sys.executable, "-m", "dvc", "metrics", "diff"], repo)
    assert "baseline.cross_entropy" in diff.stdout
    # bayesian sets its own loss: same model, same metrics; only its comparisons with the changed baseline move
    changed = json.loads(run([sys.executable, "-m", "dvc", "metrics", "diff", "--json"], repo).stdout)
    moved = {key.split(".", 1)[1] for key in changed.get("metrics/evaluate.json", {}) if key.startswith("bayesian.")}
    assert moved and all(key.startswith(("vs_baseline_", "vs_best_", "gap_closed", "best_on_validation"))
                         for key in moved), moved
    config = json.loads((repo / "models/strategies/baseline/config.json").read_text())
    assert config["loss"] == "bayesian"

    # back to the committed loss: every train stage comes back from the run-cache, none retrains
    back = run([sys.executable, "-m", "dvc", "exp", "run", "-S", "loss=cross_entropy"], repo)
    assert trained(back.stdout) == set()
    assert "Stage 'train@baseline' is cached - skipping run" in back.stdout
    assert "baseline." not in run([sys.executable, "-m", "dvc", "metrics", "diff"], repo).stdout
    assert json.loads((repo / "models/strategies/baseline/config.json").read_text())["loss"] == "cross_entropy"


def test_dropping_the_audit_suspects_retrains_only_the_transferred_strategies(repo: Path):
    run([sys.executable, "-m", "dvc", "repro"], repo)
    exp = run([sys.executable, "-m", "dvc", "exp", "run", "-S", "audit.drop_suspects=true"], repo)
    assert "Running stage 'pretrain'" in exp.stdout
    assert "Running stage 'audit'" not in exp.stdout
    assert trained(exp.stdout) <= {"transfer_conv"}      # init: redbox is the only one that reads the weights
    run([sys.executable, "-m", "dvc", "exp", "run", "-S", "audit.drop_suspects=false"], repo)


def train_command(tag: str, config: str) -> list[str]:
    return [sys.executable, "-m", "stages.train", "--config", config, "--split", "data/split.csv",
            "--shards", "data/inputs", "--out", f"out-{tag}", "--live", f"live-{tag}", "--checkpoints",
            f"ckpt-{tag}"]


def configure(repo: Path, out: str, **sections) -> None:
    """Write params.yaml with ``sections`` overridden and resolve its strategies into ``out``."""
    params = yaml.safe_load((repo / "params.yaml").read_text())
    for key, value in sections.items():
        params[key] = merge(params[key], value)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run([sys.executable, "-m", "stages.configure", "--pretrained", "models/pretrain/redbox.pt", "--out", out], repo)


def start_and_kill_after_first_checkpoint(repo: Path, command: list[str], checkpoint: Path) -> None:
    import time

    env = {**os.environ, "PYTHONPATH": str(repo)}
    proc = subprocess.Popen(command, cwd=repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.time() + 300
    while not checkpoint.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    assert checkpoint.exists(), "the run finished before it could be killed"


def processes_running(config: str) -> list[int]:
    """Processes whose command line names ``config``: a stage and the seed processes it forked."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().split(b"\0")
                state = (entry / "stat").read_text().split(") ")[-1].split()[0]
            except OSError:
                continue
            if config.encode() in cmdline and state != "Z":
                found.append(int(entry.name))
    return found


def test_a_killed_training_run_resumes_and_ends_with_the_same_model(repo: Path):
    """Kill train (SIGKILL) mid-run once a checkpoint exists; no seed process outlives it, and the rerun
    resumes and yields the uninterrupted weights of both seeds, trained at once in their own processes."""
    import time

    import torch

    run([sys.executable, "-m", "dvc", "repro"], repo)
    original = (repo / "params.yaml").read_text()
    try:
        configure(repo, "cfg-long", train={"epochs": 40, "seeds": [0, 1]})
        run(train_command("whole", "cfg-long/baseline.json"), repo)
        checkpoint = repo / "ckpt-killed" / "seed-0.pt"
        start_and_kill_after_first_checkpoint(repo, train_command("killed", "cfg-long/baseline.json"), checkpoint)
        deadline = time.time() + 10
        while processes_running("cfg-long/baseline.json") and time.time() < deadline:
            time.sleep(0.05)
        assert not processes_running("cfg-long/baseline.json"), "a seed process outlived its killed stage"
        epochs_done = torch.load(checkpoint, weights_only=True)["epoch"]
        assert epochs_done < 40, "the run finished before it could be killed"
        resumed = run(train_command("killed", "cfg-long/baseline.json"), repo)
    finally:
        (repo / "params.yaml").write_text(original)
    assert "resuming from ckpt-killed/seed-0.pt after epoch" in resumed.stdout
    record = json.loads((repo / "out-whole/config.json").read_text())
    assert record["seed_processes"] == min(2, thread_budget())
    for seed in ("seed-0", "seed-1"):
        whole = torch.load(repo / f"out-whole/{seed}/model.pt", weights_only=True)
        again = torch.load(repo / f"out-killed/{seed}/model.pt", weights_only=True)
        assert all(torch.equal(whole[k], again[k]) for k in whole)
        loss_whole = (repo / f"live-whole/{seed}/plots/metrics/train/loss.tsv").read_text().splitlines()
        loss_again = (repo / f"live-killed/{seed}/plots/metrics/train/loss.tsv").read_text().splitlines()
        assert loss_whole == loss_again  # the replayed log: every step once, same values
    assert record["seeds"] == json.loads((repo / "out-killed/config.json").read_text())["seeds"]
    assert not (repo / "ckpt-killed").exists()          # done: the checkpoint is gone


def first_lines_until(repo: Path, command: list[str], markers: tuple[str, ...]) -> str:
    """Start ``command``, read its output until a line holds one of ``markers``, then stop it."""
    env = {**os.environ, "PYTHONPATH": str(repo)}
    proc = subprocess.Popen(command, cwd=repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen = []
    try:
        for line in proc.stdout:
            seen.append(line)
            if any(marker in line for marker in markers):
                break
    finally:
        proc.kill()
        proc.wait()
    return "".join(seen)


def test_a_checkpoint_from_other_code_is_not_resumed(repo: Path):
    """dvc re-runs train after a library change; the stage must retrain, not resume the old run's checkpoint."""
    run([sys.executable, "-m", "dvc", "repro"], repo)
    original = (repo / "params.yaml").read_text()
    losses = repo / "weldnet" / "strategies" / "losses.py"
    code = losses.read_text()
    try:
        configure(repo, "cfg-code", train={"epochs": 40, "seeds": [0]})
        command = train_command("code", "cfg-code/baseline.json")
        start_and_kill_after_first_checkpoint(repo, command, repo / "ckpt-code" / "seed-0.pt")
        losses.write_text(code + "\n# a change to the training code\n")
        again = first_lines_until(repo, command, ("resuming from", "starting afresh"))
    finally:
        losses.write_text(code)
        (repo / "params.yaml").write_text(original)
    assert "resuming from" not in again
    assert "written by another configuration; starting afresh" in again


def test_the_triage_bundle_reproduces_evaluate_and_triages_a_fresh_export(repo: Path):
    """The bundle stage after evaluate: chosen by validation, the CLI gives evaluate's scores, dvc tracks it."""
    import numpy as np
    import pandas as pd

    from weldnet.core.params import GenerateSpec, RigCounts
    from weldnet.synth.export import generate

    run([sys.executable, "-m", "dvc", "repro"], repo)
    report = json.loads((repo / "models/triage/triage.json").read_text())
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
    run([sys.executable, "-m", "weldnet.triage.command", *(f"data/export/{image}" for image in test), "--bundle", "models/triage",
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
    fresh = run([sys.executable, "-m", "weldnet.triage.command", "fresh", "--bundle", "models/triage", "--out", "fresh.csv",
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
    # threshold reuses the baseline's model; the ceiling's curves are drawn beside the study's
    assert set(curves["strategy"]) == set(study) - {"threshold"} | {"baseline@natural"}
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

    done = run([sys.executable, "-m", "weldnet.scoring.report", "--base", "HEAD", "--out", "review/report.md"], repo)
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


def test_exp_run_with_two_processes_per_node_trains_under_torchrun(repo: Path):
    """`dvc exp run -S train.nproc_per_node=2` on a 2-core machine: pretrain and training run as 2 gloo processes."""
    run([sys.executable, "-m", "dvc", "repro"], repo)
    params = (repo / "params.yaml").read_text()
    try:
        exp = run([sys.executable, "-m", "dvc", "exp", "run", "-S", "train.nproc_per_node=2",
                   "-S", "study=[baseline,threshold]"], repo)
        assert "Running stage 'pretrain'" in exp.stdout
        assert trained(exp.stdout) == {"baseline"}                      # threshold reuses baseline: unchanged
        # pretrain, baseline and the ceiling baseline@natural (not threshold, which reuses the baseline)
        assert exp.stdout.count("2 processes under torchrun") == 3
        config = json.loads((repo / "models/strategies/baseline/config.json").read_text())
        assert config["world_size"] == 2 and len(config["seeds"]) == 2
        assert json.loads((repo / "models/pretrain/config.json").read_text())["world_size"] == 2
        evaluate = json.loads((repo / "metrics/evaluate.json").read_text())
        assert set(evaluate) == {"baseline", "threshold", "baseline@natural"}
        assert not any((repo / "checkpoints").glob("*/*.pt"))
    finally:
        # the module's params again; a later test's `dvc repro` restores their outputs from the run-cache
        # (test_exp_run_with_bayesian_loss_changes_what_it_should checks that restoring trains nothing)
        (repo / "params.yaml").write_text(params)
