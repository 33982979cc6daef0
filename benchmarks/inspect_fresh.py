"""Do the inspection bundle's certified recalls hold on an export it never saw? And what does the task bundle miss?

    python -m benchmarks.inspect_fresh --bundle models/inspect --seed 7 --size 3000
    python -m benchmarks.inspect_fresh --bundle models/inspect --task-bundle models/triage --seed 7

Generates a fresh Bluebox export with another ``generate.seed`` (the camera and
flag shares of params.yaml), triages it with ``python -m weldnet.triage``'s own
code, and prints, for any flaw and each flag the bundle certifies, the fresh
recall with its two-sided 95% Clopper-Pearson interval and the one-sided binomial
check: the recall is *not significantly below* the target when
``P(Binomial(n, target) <= caught) >= 0.05 / risks`` (Bonferroni over the risks).
Exits 1 when a certified recall fails it.

With ``--task-bundle`` (the single-task bundle of the bundle stage) it also
triages the fresh export with that bundle and reports its **hidden miss rate**:
of the photos it clears, the share that carry some flag (its task's or another).
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # run as a script from anywhere

from weldnet.core.params import GenerateSpec, RigCounts, load_checked_params
from weldnet.synth.export import generate
from weldnet.triage import command
from weldnet.triage.certify import binomial_cdf, clopper_pearson_interval
from weldnet.triage.simultaneous import ANY_FLAW


def _rows(path: Path) -> list[dict]:
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _labels(export: Path) -> dict[str, set[str]]:
    with (export / "labels.csv").open(newline="", encoding="utf-8") as fh:
        return {str(export / r["image"]): {f for f in r["flags"].split(";") if f} for r in csv.DictReader(fh)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, default=Path("models/inspect"))
    parser.add_argument("--task-bundle", type=Path, default=None, help="the single-task bundle, e.g. models/triage")
    parser.add_argument("--seed", type=int, default=7, help="generate.seed of the fresh export (params: 2014)")
    parser.add_argument("--size", type=int, default=3000, help="fresh Bluebox photos")
    parser.add_argument("--workers", type=int, default=0)
    args = parser.parse_args()
    report = json.loads((args.bundle / "triage.json").read_text())
    if report.get("rig") != "bluebox":
        sys.exit(f"{args.bundle} is not a Bluebox inspection bundle")
    spec = load_checked_params().generate
    fresh_spec = GenerateSpec(seed=args.seed, size=RigCounts(redbox=0, bluebox=args.size), label_noise=spec.label_noise,
                              workers=args.workers, camera=spec.camera)
    target = report["target_recall"]
    with tempfile.TemporaryDirectory() as tmp:
        export = Path(tmp) / "export"
        generate(fresh_spec, export, Path(tmp) / "truth.csv")
        labels = _labels(export)
        out = Path(tmp) / "inspect.csv"
        command.run([str(export)], args.bundle, out, workers=args.workers, stream=io.StringIO())
        rows = _rows(out)
        certified = [ANY_FLAW] + [f for f, r in report["per_flag"].items() if r["certified"]]
        print(f"fresh export: generate.seed {args.seed}, {len(rows)} Bluebox photos; target recall {target:.0%}")
        print(f"{'risk':45s} {'caught':>7s} {'of':>5s} {'recall':>7s}  95% interval    check")
        failed = 0
        for name in certified:
            mine = [r for r in rows if (labels[r["image"]] if name == ANY_FLAW else name in labels[r["image"]])]
            n, caught = len(mine), sum(r["decision"] == "review" for r in mine)
            low, high = clopper_pearson_interval(caught, n, 0.95)
            ok = binomial_cdf(caught, n, target) >= 0.05 / len(certified)
            failed += not ok
            print(f"{name:45s} {caught:7d} {n:5d} {caught / max(n, 1):7.3f}  [{low:.3f}, {high:.3f}]  "
                  f"{'holds' if ok else 'BELOW TARGET'}")
        perfect = [r for r in rows if not labels[r["image"]]]
        print(f"perfect photos cleared: {sum(r['decision'] == 'clear' for r in perfect)} of {len(perfect)}")
        if args.task_bundle is not None:
            out = Path(tmp) / "task.csv"
            command.run([str(export)], args.task_bundle, out, workers=args.workers, stream=io.StringIO())
            cleared = [r for r in _rows(out) if r["decision"] == "clear"]
            task = json.loads((args.task_bundle / "bundle.json").read_text())["task"]
            own = {f for flags in task["classes"].values() for f in flags}
            other = [r for r in cleared if labels[r["image"]] - own]
            low, high = clopper_pearson_interval(len(other), len(cleared), 0.95)
            print(f"task bundle ({task['name']}): clears {len(cleared)} of {len(rows)} photos; "
                  f"{len(other)} of them carry another flag: hidden miss rate {len(other) / max(len(cleared), 1):.3f} "
                  f"[{low:.3f}, {high:.3f}]; {sum(1 for r in cleared if not labels[r['image']])} are perfect")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
