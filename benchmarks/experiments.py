"""The imbalance sweep (report figures 30 and 31) and every task (section 6.2), as queued DVC experiments.

    python -m benchmarks.experiments queue sweep     # one experiment per imbalance.ratio
    python -m benchmarks.experiments queue tasks     # one experiment per task of params.yaml's `tasks`
    dvc queue start --jobs 1                         # runs them one after another (dvc queue status)
    python -m benchmarks.experiments collect sweep   # docs/imbalance_sweep.png and .md
    python -m benchmarks.experiments collect tasks   # docs/all_tasks.md

``queue`` prints and runs one ``dvc exp run --queue -n <name> -S ...`` per
experiment (``--dry-run`` only prints them). Every experiment narrows ``study`` to
the strategies asked for and ``train.seeds`` to the seeds asked for, so each costs
a few strategies' training; the data stages come from the cache.

- sweep: ``imbalance.ratio`` = null (the task's own), 0.90, 0.94, 0.96, 0.98, 0.99;
  by default the baseline and the strongest strategies by validation per-class
  accuracy in the committed metrics/evaluate.json of the default run (oversample,
  threshold and posthoc_logit, which tie and both reuse the baseline's model,
  logit_adjusted, then crt), one seed; ``ceiling`` is emptied (the natural ratio is
  in the sweep itself).
- tasks: ``task`` = each task, ``imbalance.ratio: null`` (the report's tasks failed
  at their own imbalance), baseline and the two best by validation, one seed.

``collect`` reads every experiment whose name starts with ``sweep-`` or ``task-``
from its commit (``git for-each-ref refs/exps``; the newest of each name): its
params and git-tracked metrics, and the validation curves of the plots stage's
table (``plots/summary/val_per_class_accuracy.csv``), and writes the figure and
tables (weldnet.scoring.studies).
"""
from __future__ import annotations

import argparse
import io
import json
import shlex
import subprocess
import sys
from pathlib import Path

import pandas as pd
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # run as a script from anywhere

from weldnet.scoring.studies import sweep_markdown, sweep_plot, sweep_rows, task_markdown, task_rows

SWEEP_RATIOS = ("null", "0.90", "0.94", "0.96", "0.98", "0.99")
SWEEP_STRATEGIES = ("baseline", "oversample", "threshold", "posthoc_logit", "logit_adjusted", "crt")
TASK_STRATEGIES = ("baseline", "oversample", "threshold")


def git(*args: str) -> str:
    return subprocess.run(["git", *args], capture_output=True, text=True, check=True).stdout


def show(rev: str, path: str) -> str | None:
    done = subprocess.run(["git", "show", f"{rev}:{path}"], capture_output=True, text=True)
    return done.stdout if done.returncode == 0 else None


def queue_commands(kind: str, strategies: list[str], seeds: list[int], tasks: list[str]) -> list[list[str]]:
    common = ["-S", f"study=[{','.join(strategies)}]", "-S", f"train.seeds=[{','.join(map(str, seeds))}]",
              "-S", "ceiling=[]"]
    if kind == "sweep":
        return [["dvc", "exp", "run", "--queue", "-n", f"sweep-{ratio.replace('.', '')}",
                 "-S", f"imbalance.ratio={ratio}", *common] for ratio in SWEEP_RATIOS]
    return [["dvc", "exp", "run", "--queue", "-n", f"task-{task}", "-S", f"task={task}",
             "-S", "imbalance.ratio=null", *common] for task in tasks]


def experiments(prefix: str) -> dict[str, str]:
    """Experiment name -> commit, for names starting with ``prefix``; the newest commit of each name."""
    out: dict[str, tuple[int, str]] = {}
    for line in git("for-each-ref", "refs/exps", "--format=%(objectname) %(committerdate:unix) %(refname)").splitlines():
        rev, when, ref = line.split(" ", 2)
        name = ref.rsplit("/", 1)[-1]
        if name.startswith(prefix) and (name not in out or int(when) > out[name][0]):
            out[name] = (int(when), rev)
    return {name: rev for name, (_, rev) in sorted(out.items())}


def read_record(rev: str) -> dict | None:
    """One experiment's params and metrics, and each trained strategy's validation curve per seed."""
    texts = {key: show(rev, path) for key, path in (("params", "params.yaml"), ("evaluate", "metrics/evaluate.json"),
                                                     ("split", "metrics/split.json"), ("audit", "metrics/audit.json"))}
    if any(text is None for text in texts.values()):
        return None
    params = yaml.safe_load(texts["params"])
    evaluate = json.loads(texts["evaluate"])
    curves = epoch_curves(show(rev, "plots/summary/val_per_class_accuracy.csv"), params["study"])
    return {"rev": rev, "ratio": params["imbalance"]["ratio"], "task": params["task"], "tasks": params["tasks"],
            "study": params["study"], "seeds": params["train"]["seeds"], "evaluate": evaluate, "split": json.loads(texts["split"]),
            "audit": json.loads(texts["audit"]), "curves": curves}


def epoch_curves(table: str | None, study: list[str]) -> dict[str, list[list[float]]]:
    """Per strategy, per seed, validation per-class accuracy after each epoch, from the plots stage's
    git-tracked table (plots/summary/val_per_class_accuracy.csv; the dvclive logs are DVC outputs)."""
    if not table:
        return {}
    frame = pd.read_csv(io.StringIO(table))
    curves = {}
    for name in study:
        mine = frame[frame["strategy"] == name]
        seeds = [group.sort_values("step")["per_class_accuracy"].astype(float).tolist()
                 for _, group in mine.groupby("seed", sort=True)]
        if seeds:
            curves[name] = seeds
    return curves


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["queue", "collect"])
    parser.add_argument("kind", choices=["sweep", "tasks"])
    parser.add_argument("--strategies", help="comma-separated (default: see the module doc)")
    parser.add_argument("--seeds", default="0", help="comma-separated training seeds (default 0)")
    parser.add_argument("--out", type=Path, default=Path("docs"))
    parser.add_argument("--dry-run", action="store_true", help="queue: only print the commands")
    args = parser.parse_args()
    default = SWEEP_STRATEGIES if args.kind == "sweep" else TASK_STRATEGIES
    strategies = args.strategies.split(",") if args.strategies else list(default)
    params = yaml.safe_load(Path("params.yaml").read_text())

    if args.action == "queue":
        seeds = [int(s) for s in args.seeds.split(",")]
        for command in queue_commands(args.kind, strategies, seeds, list(params["tasks"])):
            print(shlex.join(command))
            if not args.dry_run:
                subprocess.run(command, check=True)
        return

    found = experiments("sweep-" if args.kind == "sweep" else "task-")
    records = [r for r in (read_record(rev) for rev in found.values()) if r is not None]
    if not records:
        sys.exit(f"no finished {args.kind} experiment found (dvc exp list); queue them and run dvc queue start")
    args.out.mkdir(parents=True, exist_ok=True)
    if args.kind == "sweep":
        rows = sweep_rows(records, strategies)
        task = records[0]["task"]
        table = sweep_markdown(rows, strategies)
        seeds = ", ".join(map(str, records[0]["seeds"]))
        sweep_plot(rows, strategies, args.out / "imbalance_sweep.png",
                   f"{task}: test per-class accuracy against the imbalance of training (seed {seeds})")
        (args.out / "imbalance_sweep.md").write_text(table)
        (args.out / "imbalance_sweep.json").write_text(json.dumps(rows, indent=1) + "\n")
        print(table)
        print(f"wrote {args.out / 'imbalance_sweep.png'}")
    else:
        rows = task_rows(records, params["tasks"], records[-1]["audit"], strategies)
        table = task_markdown(rows, strategies)
        (args.out / "all_tasks.md").write_text(table)
        (args.out / "all_tasks.json").write_text(json.dumps(rows, indent=1) + "\n")
        print(table)


if __name__ == "__main__":
    main()
