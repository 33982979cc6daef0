"""The summary of benchmarks/gpu_check.sh: one table printed, and OUTDIR/gpu_check.json.

    python benchmarks/gpu_summary.py OUTDIR

gpu_check.json: {"device", "budget_s", "steps": [{"name", "rc", "wall_s", "gpu_util_mean",
"gpu_util_zero_share", "gpu_mem_max_mib"}], "loop_speed": train_speed.py's JSON or null,
"default_study": {"wall_s", "stages": [{"stage", "wall_s", "cpu_s", "peak_rss_mib"}]} or null,
"tenth_scale": the same plus "extrapolated_full_s" or null}. The full-size extrapolation scales each
stage of the one-tenth run by the photos it handles (x10) and each train stage again by the seeds
of the default study (x2); generation included.
"""
from __future__ import annotations

import argparse
import csv
import json
import statistics
import subprocess
from pathlib import Path


def _gpu_name() -> str:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20)
        return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else "no GPU"
    except (OSError, subprocess.TimeoutExpired):
        return "no GPU"


def _samples(path: Path) -> list[tuple[float, float, float]]:
    """(unix time, utilisation %, memory MiB) per nvidia-smi sample."""
    from datetime import datetime

    out = []
    if not path.exists():
        return out
    for row in csv.reader(path.read_text().splitlines()):
        try:
            stamp = datetime.strptime(row[0].strip(), "%Y/%m/%d %H:%M:%S.%f").timestamp()
            out.append((stamp, float(row[1]), float(row[2])))
        except (ValueError, IndexError):
            continue
    return out


def _study(path: Path, extrapolate: bool) -> dict | None:
    if not path.exists():
        return None
    runs = json.loads(path.read_text())
    name = "scaled" if "scaled" in runs else "reference"
    if name not in runs:
        return None
    stages = [{"stage": e["stage"], "wall_s": round(e["wall_s"], 1), "cpu_s": round(e["cpu_s"], 1),
               "peak_rss_mib": round(e["peak_rss_mib"])} for e in runs[name]["stages"]]
    out = {"photos": sum(runs[name]["sizes"].values()), "wall_s": round(sum(s["wall_s"] for s in stages), 1),
           "stages": stages}
    if extrapolate:
        out["extrapolated_full_s"] = round(sum(s["wall_s"] * 10 * (2 if s["stage"].startswith(("train@", "ceiling"))
                                                                   else 1) for s in stages))
    return out


def summarise(folder: Path) -> dict:
    samples = _samples(folder / "gpu_util.csv")
    steps = []
    tsv = folder / "steps.tsv"
    for line in (tsv.read_text().splitlines() if tsv.exists() else []):
        name, rc, wall, t0, t1 = line.split("\t")
        inside = [s for s in samples if float(t0) <= s[0] <= float(t1)]
        util = [s[1] for s in inside]
        steps.append({"name": name, "rc": rc, "wall_s": int(wall),
                      "gpu_util_mean": round(statistics.mean(util), 1) if util else None,
                      "gpu_util_zero_share": round(sum(u == 0 for u in util) / len(util), 2) if util else None,
                      "gpu_mem_max_mib": max((s[2] for s in inside), default=None)})
    loop = folder / "loop_speed.json"
    return {"device": _gpu_name(), "steps": steps,
            "loop_speed": json.loads(loop.read_text()) if loop.exists() else None,
            "default_study": _study(folder / "default_study.json", False),
            "tenth_scale": _study(folder / "tenth_scale.json", True)}


def table(summary: dict) -> str:
    lines = [f"device: {summary['device']}", "",
             "| step | rc | wall s | GPU util mean % | GPU util 0% share | GPU memory max MiB |", "|---|---|---|---|---|---|"]
    for s in summary["steps"]:
        lines.append(f"| {s['name']} | {s['rc']} | {s['wall_s']} | {s['gpu_util_mean']} | {s['gpu_util_zero_share']} "
                     f"| {s['gpu_mem_max_mib']} |")
    for key in ("default_study", "tenth_scale"):
        study = summary.get(key)
        if study:
            lines += ["", f"{key}: {study['photos']:,} photos, {study['wall_s']} s in stages"
                      + (f", full size extrapolated: {study['extrapolated_full_s']} s" if 'extrapolated_full_s' in study
                         else "")]
            lines += ["| stage | wall s | CPU s | peak RSS MiB |", "|---|---|---|---|"]
            lines += [f"| {e['stage']} | {e['wall_s']} | {e['cpu_s']} | {e['peak_rss_mib']} |" for e in study["stages"]]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path, help="the OUTDIR benchmarks/gpu_check.sh wrote")
    args = parser.parse_args()
    args.folder.mkdir(parents=True, exist_ok=True)
    summary = summarise(args.folder)
    (args.folder / "gpu_check.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(table(summary))


if __name__ == "__main__":
    main()
