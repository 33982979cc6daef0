"""`dvc queue start --jobs 2` against `--jobs 1`: the wall time of two queued experiments, and their metrics.

    python benchmarks/queue_jobs.py --work /tmp/queue_jobs            # two small experiments, each way
    python benchmarks/queue_jobs.py --work /tmp/queue_jobs --size 600 --json docs/queue_jobs.json

In a fresh clone of this repository's committed HEAD (in --work) with small params
(``--size`` photos per rig, a two-strategy study, one seed, ``--epochs`` epochs), it
queues the same two experiments (``train.seeds=[0]`` and ``[1]``) twice and runs the
queue once with ``--jobs 1`` and once with ``--jobs 2``, each from an empty DVC cache,
timing each from ``dvc queue start`` until the queue is empty. With ``--jobs 1`` the
second experiment restores the data stages from the first one's run-cache; with
``--jobs 2`` both compute them at once, as they would for a user. It prints both wall times, their ratio
(target: --jobs 2 takes at most 1.1x --jobs 1) and whether each experiment's metrics
are the same both ways (they must be). Every queued experiment runs the whole
pipeline in its own copy, so the data stages run in each. Run it on an otherwise
idle machine.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
SEEDS = ("[0]", "[1]")


def sh(*args: str, cwd: Path, check: bool = True) -> str:
    done = subprocess.run(list(args), cwd=cwd, capture_output=True, text=True, env=ENV)
    if check and done.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return done.stdout


ENV = {**os.environ, "GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "bench@localhost",
       "GIT_COMMITTER_NAME": "bench", "GIT_COMMITTER_EMAIL": "bench@localhost", "DVC_NO_ANALYTICS": "1",
       "WELDNET_PROGRESS": "lines"}


def small_repo(folder: Path, size: int, epochs: int) -> None:
    if folder.exists():
        shutil.rmtree(folder)
    sh("git", "clone", "-q", str(REPO), str(folder), cwd=REPO)
    params = yaml.safe_load((folder / "params.yaml").read_text())
    params["generate"]["size"] = {"redbox": size, "bluebox": size}
    params["study"] = ["baseline", "bayesian"]
    params["ceiling"] = []
    params["train"]["epochs"] = epochs
    params["audit"]["epochs"] = 2
    params["pretrain"]["epochs"] = 1
    (folder / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    # no lock: the committed one names outputs of the default params that this clone's cache never held
    (folder / "dvc.lock").unlink(missing_ok=True)
    sh("git", "commit", "-qam", "small params", cwd=folder)


def run_queue(folder: Path, jobs: int, tag: str) -> tuple[float, dict[str, dict]]:
    names = [f"{tag}-seed{seed.strip('[]')}" for seed in SEEDS]
    # an empty cache and run-cache, so neither way restores what the other computed
    shutil.rmtree(folder / ".dvc" / "cache", ignore_errors=True)
    for name, seed in zip(names, SEEDS):
        sh(sys.executable, "-m", "dvc", "exp", "run", "--queue", "-n", name, "-S", f"train.seeds={seed}", cwd=folder)
    start = time.perf_counter()
    sh(sys.executable, "-m", "dvc", "queue", "start", "--jobs", str(jobs), cwd=folder)
    while True:
        time.sleep(5)
        status = sh(sys.executable, "-m", "dvc", "queue", "status", cwd=folder, check=False)
        if not any(word in status for word in ("Queued", "Running")):
            break
    wall = time.perf_counter() - start
    sh(sys.executable, "-m", "dvc", "queue", "stop", cwd=folder, check=False)
    failed = [line for line in status.splitlines() if "Failed" in line]
    if failed:
        logs = "\n".join(sh(sys.executable, "-m", "dvc", "queue", "logs", line.split()[0], cwd=folder, check=False)[-2000:]
                         for line in failed)
        raise SystemExit(f"--jobs {jobs}: experiments failed:\n" + "\n".join(failed) + "\n" + logs)
    metrics = {}
    for name in names:
        ref = sh("git", "for-each-ref", "--format=%(objectname)", f"refs/exps/*/*/{name}", cwd=folder).split()
        if not ref:
            ref = [line.split()[0] for line in sh("git", "for-each-ref", "refs/exps", cwd=folder).splitlines()
                   if line.endswith("/" + name)]
        metrics[name.split("-", 1)[1]] = json.loads(sh("git", "show", f"{ref[-1]}:metrics/evaluate.json", cwd=folder))
    return wall, metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, required=True, help="a folder for the clone (emptied)")
    parser.add_argument("--size", type=int, default=300, help="photos per rig of each experiment's export")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the result here")
    args = parser.parse_args()
    folder = args.work / "repo"
    args.work.mkdir(parents=True, exist_ok=True)
    small_repo(folder, args.size, args.epochs)
    load = os.getloadavg()[0]
    wall1, metrics1 = run_queue(folder, 1, "jobs1")
    wall2, metrics2 = run_queue(folder, 2, "jobs2")
    same = {seed: metrics1[seed] == metrics2[seed] for seed in metrics1}
    result = {"size_per_rig": args.size, "epochs": args.epochs, "jobs1_s": round(wall1, 1), "jobs2_s": round(wall2, 1),
              "ratio": round(wall2 / wall1, 3), "same_metrics": same, "cpus": os.cpu_count(),
              "load_before": round(load, 2), "target_ratio": 1.1}
    print(f"--jobs 1: {wall1:.0f} s   --jobs 2: {wall2:.0f} s   ratio {wall2 / wall1:.2f} (target <= 1.1)")
    print("same metrics both ways: " + ", ".join(f"{k}: {v}" for k, v in same.items()))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
