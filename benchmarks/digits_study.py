"""The study on a second data set of real images: scanned handwritten digits at 98% imbalance.

    python benchmarks/digits_study.py --work /tmp/digits --out docs/digits_summary.md    # about 8 minutes on 2 cores

It writes scikit-learn's 1,797 scanned digits (8x8, 17 grey levels, from 43 writers)
as an export in the layout a user brings (weldnet.synth.digits.write_export): eights
carry "No Clamp Used" and nines "Photo Does Not Show Enough Of Clamps", so the
default task, clamp detection on Bluebox, is "eight or not" (174 eights, 9.7% of the
photos). Every digit is a Bluebox photo upscaled to 64 px, and a softened Redbox
copy with 10% one-sided label noise for the audit and the pretraining. Because the
Redbox copies are the Bluebox digits, the study keeps to strategies trained from
scratch: the default study without those that start from the Redbox pretraining,
plus the newer recipes (mixup, CutMix, Remix, MiSLAS-like, logit adjustment then
cRT, weight balancing, SAM).

Then it runs ``dvc repro`` in a fresh copy of this repository (as benchmarks/scale.py
does) with ``data.export`` pointing at the digits and every other param as
committed: the imbalance stage imposes 98% on training, two seeds, the ceiling
at the natural 90.3%. The study's ``metrics/summary.md`` (the strategies table, then
the paired comparisons) is copied to ``--out``; docs/results.md's digits tables are
generated from it (python -m weldnet.scoring.docs).
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
sys.path.insert(0, str(REPO))

from scale import make_repo  # noqa: E402

from weldnet.synth.digits import write_export  # noqa: E402

NEWER_RECIPES = ["mixup", "cutmix", "remix", "mislas", "logit_adjusted_crt", "weight_balancing", "sam"]
SIZE = 64            # px of each digit photo
REDBOX_NOISE = 0.10  # the generated export's Redbox label noise


def from_scratch(name: str, strategies: dict) -> bool:
    """Whether a strategy's model starts from random weights (following ``reuse`` to the model it reuses)."""
    config = strategies.get(name) or {}
    if config.get("reuse"):
        return from_scratch(config["reuse"], strategies)
    return config.get("init", "scratch") == "scratch"


def digit_study(params: dict) -> list[str]:
    """The default study's strategies trained from scratch, then the newer recipes."""
    strategies = params["strategies"]
    names = [n for n in params["study"] if from_scratch(n, strategies)]
    return names + [n for n in NEWER_RECIPES if n not in names and from_scratch(n, strategies)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, required=True, help="an empty folder (about 30 MB)")
    parser.add_argument("--out", type=Path, help="copy the study's metrics/summary.md here "
                                                 "(docs/digits_summary.md feeds docs/results.md)")
    parser.add_argument("--study", nargs="+", help="strategies to train (default: the default study's strategies "
                                                   "trained from scratch, and the newer recipes)")
    parser.add_argument("--seed", type=int, default=0, help="draw of the Redbox label noise")
    args = parser.parse_args()
    from sklearn.datasets import load_digits

    params = yaml.safe_load((REPO / "params.yaml").read_text())
    study = args.study or digit_study(params)
    refused = [n for n in study if n not in params["strategies"] or not from_scratch(n, params["strategies"])]
    if refused:
        raise SystemExit(f"--study: {', '.join(refused)} {'is' if len(refused) == 1 else 'are'} not a strategy "
                         "trained from scratch; the Redbox copies are the Bluebox digits, so pretraining would "
                         "have seen the test photos")
    args.work.mkdir(parents=True, exist_ok=True)
    digits = load_digits()
    export, repo = args.work / "export", args.work / "repo"
    write_export(export, args.work / "truth.csv", digits.images, digits.target, SIZE, REDBOX_NOISE,
                 np.random.default_rng(args.seed))
    if repo.exists():
        shutil.rmtree(repo)
    # the generate stage still runs (nothing reads it): two photos per rig keep it short
    make_repo(repo, {"redbox": 2, "bluebox": 2}, None, None,
              {"data": {"export": str(export.resolve())}, "study": study})
    print(f"study: {', '.join(study)}; {len(digits.target):,} digits, "
          f"{int(np.sum(digits.target == 8))} eights", flush=True)
    started = time.monotonic()
    env = {**os.environ, "PYTHONPATH": str(repo), "DVC_NO_ANALYTICS": "1", "WELDNET_PROGRESS": "lines"}
    subprocess.run([sys.executable, "-m", "dvc", "repro"], cwd=repo, env=env, check=True)
    print(f"dvc repro took {time.monotonic() - started:.0f} s", flush=True)
    summary = (repo / "metrics" / "summary.md").read_text()
    print(summary)
    if args.out:
        args.out.write_text(summary)
        print(f"(written to {args.out})")


if __name__ == "__main__":
    main()
