"""The pipeline at the report's scale: 127,655 photos (113,865 Redbox, 13,790 Bluebox), against the default run.

    nice -n 19 python benchmarks/scale.py --work /path/with/40GB/free            # full size (hours on 2 cores)
    python benchmarks/scale.py --work /tmp/scale --scale 0.02                     # 1/50 of it, to try it out

It runs ``dvc repro`` twice in fresh copies of this repository: once on the default
export (generate.size 3,000 + 3,000: the reference) and once on an export of the
report's size (``--scale`` times it), with Table 1's flag frequencies per rig, as
the generate stage draws them. Both run every stage: ingest, audit, preprocess,
imbalance, pretrain, and a reduced study (``baseline``, ``bayesian`` and the default
run's best strategy by validation per-class accuracy, one seed, ``--epochs``
epochs), then evaluate. Every stage is timed by benchmarks/stage_times.py: wall
time, CPU time (all of its processes), peak RSS of its largest process and peak
PSS of its process tree.

The table (``<work>/scale.md``) is rewritten after every stage, so a run stopped
half-way keeps what it measured; ``<work>/scale.json`` (or ``--json docs/scale.json``)
holds the runs the docs' scale table is generated from. Cost per photo is CPU seconds over the photos the
stage handles (all photos for ingest, audit, preprocess and imbalance; Redbox for
pretrain; the task's Bluebox photos for train and evaluate), as a ratio to the
same stage of the reference run (target: at most 1.2; peak RSS: at most 3 GB).
CPU time is what other load on a shared machine skews least; the load average is
logged per stage. The exports and shards are deleted at the end unless ``--keep``.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
sys.path.insert(0, str(REPO))

from stage_times import read_log, run_timed  # noqa: E402

from weldnet.core.metrics import best_by_validation  # noqa: E402
from weldnet.scoring.bench import scale_table  # noqa: E402

PAPER = {"redbox": 113_865, "bluebox": 13_790}
DEFAULT = {"redbox": 3_000, "bluebox": 3_000}
# bytes on disk per photo: generated JPEG (export) and one 256x256 RGB shard row
JPEG_BYTES = {"redbox": 34_000, "bluebox": 135_000}
SHARD_BYTES = 256 * 256 * 3


def best_strategy() -> str:
    """The default run's best trained strategy of its study by validation per-class accuracy (never by
    test); the ceiling (``<name>@natural``) and strategies that reuse another's model are not candidates."""
    metrics = json.loads((REPO / "metrics" / "evaluate.json").read_text())
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    trained = [name for name in params["study"] if not (params["strategies"].get(name) or {}).get("reuse")]
    return best_by_validation({name: metrics[name]["val_per_class_accuracy"] for name in trained if name in metrics},
                              trained)


def merge(base: dict, override: dict) -> dict:
    out = dict(base)
    for key, value in override.items():
        out[key] = merge(base[key], value) if isinstance(value, dict) and isinstance(base.get(key), dict) else value
    return out


def parse_set(items: list[str]) -> dict:
    """``["model.arch=alexnet", "train.seeds=[0]"]`` -> nested overrides (values read as YAML)."""
    out: dict = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"--set {item!r}: write it as KEY=VALUE, for example --set model.arch=alexnet")
        node = out
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = yaml.safe_load(value)
    return out


def make_repo(folder: Path, sizes: dict[str, int], study: list[str] | None, epochs: int | None,
              overrides: dict | None = None) -> None:
    """A fresh git + DVC copy of the pipeline with the sizes, the study (None: params.yaml's, with its
    seeds and epochs) and any ``overrides``."""
    folder.mkdir(parents=True)
    for name in ("dvc.yaml", ".gitignore", ".dvcignore"):
        shutil.copy(REPO / name, folder / name)
    for sub in ("stages", "weldnet"):
        shutil.copytree(REPO / sub, folder / sub, ignore=shutil.ignore_patterns("__pycache__"))
    (folder / "data").mkdir()
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params = merge(params, {"generate": {"size": sizes}})
    if study is not None:
        params = merge(params, {"study": study, "train": {"seeds": [0], "epochs": epochs}})
    params = merge(params, overrides or {})
    (folder / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {**os.environ, "GIT_AUTHOR_NAME": "scale", "GIT_AUTHOR_EMAIL": "scale@localhost",
           "GIT_COMMITTER_NAME": "scale", "GIT_COMMITTER_EMAIL": "scale@localhost"}
    for command in (["git", "init", "-q"], [sys.executable, "-m", "dvc", "init", "-q"],
                    [sys.executable, "-m", "dvc", "config", "core.analytics", "false"],
                    # hard links: DVC's cache shares the export's and the shards' files instead of copying them
                    [sys.executable, "-m", "dvc", "config", "cache.type", "hardlink,symlink"],
                    ["git", "add", "-A"], ["git", "commit", "-qm", "scale benchmark"]):
        subprocess.run(command, cwd=folder, env=env, check=True, capture_output=True)


def table(runs: dict[str, tuple[dict[str, int], list[dict]]]) -> str:
    """Markdown: one row per stage of the scaled run, with the reference run's cost per photo beside it."""
    return scale_table(as_json(runs))


def as_json(runs: dict[str, tuple[dict[str, int], list[dict]]]) -> dict[str, dict]:
    """The runs as scale.json holds them (and docs/scale.json, which the docs' scale table is generated from)."""
    return {name: {"sizes": sizes, "stages": entries} for name, (sizes, entries) in runs.items()}


def run(name: str, folder: Path, sizes: dict[str, int], log: Path, runs: dict, report: Path) -> float:
    """dvc repro in ``folder``, the table rewritten to ``report`` after every stage."""
    runs[name] = (sizes, [])
    done = threading.Event()

    def refresh() -> None:
        while not done.wait(20):
            if log.exists():
                runs[name] = (sizes, read_log(log))
                report.write_text(header(runs) + table(runs))

    watcher = threading.Thread(target=refresh, daemon=True)
    watcher.start()
    env = {**os.environ, "PYTHONPATH": str(folder), "DVC_NO_ANALYTICS": "1", "WELDNET_PROGRESS": "lines"}
    try:
        wall = run_timed([sys.executable, "-m", "dvc", "repro"], log, cwd=folder, env=env)
    finally:
        done.set()
        watcher.join()
        runs[name] = (sizes, read_log(log) if log.exists() else [])
        report.write_text(header(runs) + table(runs))
    return wall


def header(runs: dict) -> str:
    parts = [f"{name}: " + ", ".join(f"{n:,} {rig}" for rig, n in sizes.items()) for name, (sizes, _) in runs.items()]
    return (f"# scale benchmark ({'; '.join(parts)}); {os.cpu_count()} CPUs; "
            f"load average now {' '.join(f'{x:.1f}' for x in os.getloadavg())}\n\n")


def free_bytes(path: Path) -> int:
    return shutil.disk_usage(path).free


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, required=True, help="an empty folder with room for the exports")
    parser.add_argument("--scale", type=float, default=1.0, help="share of the report's size (1: 127,655 photos)")
    parser.add_argument("--epochs", type=int, default=3, help="train.epochs of the reduced study")
    parser.add_argument("--skip-reference", action="store_true", help="only the scaled run")
    parser.add_argument("--only-reference", action="store_true", help="only the default-size run")
    parser.add_argument("--study", choices=["reduced", "default"], default="reduced",
                        help="reduced: baseline, bayesian and the default run's best, one seed, --epochs; "
                             "default: params.yaml's study, seeds and epochs")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a params.yaml override for both runs, e.g. --set model.arch=alexnet (repeatable)")
    parser.add_argument("--keep", action="store_true", help="keep the exports and shards")
    parser.add_argument("--json", type=Path, help="also write the runs here (default <work>/scale.json; "
                                                  "docs/scale.json feeds the docs' scale table)")
    args = parser.parse_args()

    sizes = {rig: max(1, round(n * args.scale)) for rig, n in PAPER.items()}
    need = sum(n * (JPEG_BYTES[rig] + SHARD_BYTES) for rig, n in sizes.items())
    need += 0 if args.skip_reference else sum(n * (JPEG_BYTES[rig] + SHARD_BYTES) for rig, n in DEFAULT.items())
    args.work.mkdir(parents=True, exist_ok=True)
    if free_bytes(args.work) < 1.3 * need:
        raise SystemExit(f"{args.work} has {free_bytes(args.work) / 1e9:.1f} GB free; this run needs about "
                         f"{1.3 * need / 1e9:.1f} GB (exports and shards); choose another --work")
    overrides = parse_set(args.set)
    study = ["baseline", "bayesian", best_strategy()] if args.study == "reduced" else None
    print(f"study {study or 'of params.yaml'}{f', {args.epochs} epochs, one seed' if study else ''}"
          f"{f', overrides {overrides}' if overrides else ''}; needs about {need / 1e9:.1f} GB of disk", flush=True)
    report = args.work / "scale.md"
    runs: dict = {}
    plan = ([] if args.skip_reference else [("reference", DEFAULT)]) + ([] if args.only_reference
                                                                       else [("scaled", sizes)])
    try:
        for name, run_sizes in plan:
            folder = args.work / name
            if folder.exists():
                shutil.rmtree(folder)
            make_repo(folder, run_sizes, study, args.epochs, overrides)
            log = args.work / f"{name}.jsonl"
            log.unlink(missing_ok=True)
            started = time.strftime("%H:%M:%S")
            wall = run(name, folder, run_sizes, log, runs, report)
            print(f"{name}: dvc repro took {wall:.0f} s (started {started})", flush=True)
            if not args.keep:
                for heavy in ("data/export", "data/processed", "data/inputs"):
                    shutil.rmtree(folder / heavy, ignore_errors=True)
                shutil.rmtree(folder / ".dvc" / "cache", ignore_errors=True)
    finally:
        print(header(runs) + table(runs))
        print(f"(written to {report})")
        (args.json or args.work / "scale.json").write_text(json.dumps(as_json(runs), indent=2) + "\n")


if __name__ == "__main__":
    main()
