"""Markdown tables of the benchmarks' JSON: the scale run, the audit's accuracy, stage times, contention,
the speed ratios, the GPU check.

Pure functions: the parsed JSON in, one Markdown table (with its note) out. The
benchmarks print them and ``python -m weldnet.scoring.docs`` writes them into the
docs, so a table reads the same in both places. The JSON shapes are those the
benchmarks write; they are listed in :mod:`weldnet.scoring.docs`.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence


def photos_of(stage: str, sizes: Mapping[str, int]) -> int | None:
    """The photos a stage handles, for its cost per photo (None: a stage with no per-photo cost)."""
    if stage in ("ingest", "audit", "preprocess", "imbalance", "generate"):
        return sum(sizes.values())
    if stage == "pretrain":
        return sizes["redbox"]
    if stage.startswith("train@") or stage == "evaluate":
        return sizes["bluebox"]
    return None


def scale_table(runs: Mapping[str, Mapping]) -> str:
    """One row per stage of the scaled run, its CPU ms per photo beside the reference run's, and their ratio.

    ``runs``: ``{"reference" and/or "scaled": {"sizes": {rig: photos}, "stages": [stage_times entries]}}``.
    Cost per photo = CPU seconds / the photos the stage handles (:func:`photos_of`).
    """
    ref = runs.get("reference", {"sizes": {}, "stages": []})
    scaled = runs.get("scaled", {"sizes": {}, "stages": []})
    ref_by_stage = {e["stage"]: e for e in ref["stages"]}
    lines = ["| stage | photos | wall s | CPU s | CPU ms/photo | default CPU ms/photo | ratio | peak RSS MiB "
             "| peak PSS MiB | load |", "|---|---|---|---|---|---|---|---|---|---|"]
    for e in scaled["stages"] or ref["stages"]:
        sizes = scaled["sizes"] if scaled["stages"] else ref["sizes"]
        n = photos_of(e["stage"], sizes)
        per = e["cpu_s"] / n * 1e3 if n else None
        r = ref_by_stage.get(e["stage"]) if scaled["stages"] else None
        n_ref = photos_of(e["stage"], ref["sizes"]) if r else None
        per_ref = r["cpu_s"] / n_ref * 1e3 if r and n_ref else None
        ratio = f"{per / per_ref:.2f}" if per is not None and per_ref else ""
        lines.append(f"| {e['stage']} | {n or ''} | {e['wall_s']:.0f} | {e['cpu_s']:.0f} | "
                     f"{'' if per is None else f'{per:.2f}'} | {'' if per_ref is None else f'{per_ref:.2f}'} | "
                     f"{ratio} | {e['peak_rss_mib']:.0f} | {e['peak_pss_mib']:.0f} | "
                     f"{e['load_start']:.1f}-{e['load_end']:.1f} |")
    return "\n".join(lines) + "\n"


def scale_markdown(runs: Mapping[str, Mapping]) -> str:
    """:func:`scale_table` under one line naming the photos of each run."""
    sizes = "; ".join(f"{name}: " + ", ".join(f"{n:,} {rig}" for rig, n in run["sizes"].items())
                      for name, run in runs.items())
    return (f"Photos per run: {sizes}. CPU ms/photo: CPU seconds over the photos the stage handles; ratio: "
            "scaled over default (target at most 1.2; peak RSS at most 3 GB).\n\n" + scale_table(runs))


def _pct(share: float | None) -> str:
    return "" if share is None else f"{100 * share:.2f}"


def audit_accuracy_table(rows: Sequence[Mapping]) -> str:
    """The audit's automatic estimate against the truth, per data set, noise level and task (shares in %).

    ``rows``: benchmarks/audit_accuracy.py's rows, each with ``data``, ``noise``, ``task``, ``truth``,
    ``estimate``, ``ci_low``, ``ci_high``, ``covered``, ``within`` ("yes"/"no"), ``issues`` and ``auc``.
    """
    lines = ["| data | noise | task | truth | estimate [95% interval] | covered | within | cleanlab issues | AUC |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r.get("estimate") is None:
            estimate = "not estimable"
        else:
            estimate = f"{_pct(r['estimate'])} [{_pct(r.get('ci_low'))}, {_pct(r.get('ci_high'))}]"
        auc = "" if r.get("auc") is None else f"{r['auc']:.2f}"
        lines.append(f"| {r['data']} | {r['noise']:.0%} | {r['task']} | {_pct(r['truth'])} | {estimate} | "
                     f"{r['covered']} | {r['within']} | {_pct(r.get('issues'))} | {auc} |")
    return "\n".join(lines) + "\n"


def stage_times_markdown(run: Mapping) -> str:
    """benchmarks/stage_times.py --json: one row per stage, the stages' sum, DVC's own time and the total."""
    entries = run["stages"]
    cpu = f" ({run['cpu']})" if run.get("cpu") else ""
    lines = [f"`{run['command']}` on {run['cpus']} CPUs{cpu}, load average {run['load_start'][0]:.1f} at the start and "
             f"{run['load_end'][0]:.1f} at the end.", "",
             "| stage | wall s | CPU s | peak RSS MiB | peak PSS MiB (tree) | load |", "|---|---|---|---|---|---|"]
    for e in entries:
        lines.append(f"| {e['stage']} | {e['wall_s']:.1f} | {e['cpu_s']:.1f} | {e['peak_rss_mib']:.0f} | "
                     f"{e['peak_pss_mib']:.0f} | {e['load_start']:.1f}-{e['load_end']:.1f} |")
    wall = sum(e["wall_s"] for e in entries)
    lines.append(f"| all stages | {wall:.1f} | {sum(e['cpu_s'] for e in entries):.1f} | | | |")
    lines.append(f"| DVC's own time | {run['total_s'] - wall:.1f} | | | | |")
    lines.append(f"| dvc repro | {run['total_s']:.1f} | | | | |")
    return "\n".join(lines) + "\n"


def stage_times_compare_markdown(reference: Mapping, other: Mapping) -> str:
    """Two benchmarks/stage_times.py --json runs of the same pipeline on two CPUs: each stage's wall time and ratio."""
    def name(run: Mapping) -> str:
        return f"{run.get('cpu', 'unknown CPU')}, {run['cpus']} CPUs"

    def walls(run: Mapping) -> dict[str, float]:
        return {e["stage"]: e["wall_s"] for e in run["stages"]}

    def row(label: str, a: float | None, b: float | None) -> str:
        ratio = f"{b / a:.2f}" if a and b is not None else ""
        return f"| {label} | {'' if a is None else f'{a:.1f}'} | {'' if b is None else f'{b:.1f}'} | {ratio} |"

    ref, oth = walls(reference), walls(other)
    lines = [f"| stage | {name(reference)}: wall s | {name(other)}: wall s | ratio |", "|---|---|---|---|"]
    lines += [row(stage, ref.get(stage), oth.get(stage)) for stage in dict.fromkeys([*ref, *oth])]
    lines += [row("all stages", sum(ref.values()), sum(oth.values())),
              row("dvc repro", reference["total_s"], other["total_s"])]
    return ("\n".join(lines) + f"\n\nLoad average at the start: {reference['load_start'][0]:.1f} and "
            f"{other['load_start'][0]:.1f}. Ratio: the second machine's time over the first's.\n")


def contention_markdown(result: Mapping) -> str:
    """benchmarks/contention.py --json: steps per second alone and beside a torch competitor, and their ratio."""
    lines = ["| workload | alone steps/s | beside steps/s | ratio |", "|---|---|---|---|"]
    for name, r in result["workloads"].items():
        lines.append(f"| {name} | {r['alone_steps_per_s']:.2f} | {r['beside_steps_per_s']:.2f} | {r['ratio']:.3f} |")
    return ("\n".join(lines) + f"\n\n{result['cpus']} CPUs, {result['seconds']:g} s per run, OpenMP wait policy "
            f"{result['wait_policy']}, load average {result['load_before']:.2f} before; target: ratio at least "
            f"{result['target_ratio']:g} (a fair share is about 0.5 on two cores).\n")


def speed_ratios_markdown(report: Mapping) -> str:
    """benchmarks/train_speed.py --json: the training loop against a bare loop, preprocess against plain Pillow."""
    lines = ["| ratio | measured on | ours wall s | reference wall s | ratio (wall) | ratio (CPU) | target |",
             "|---|---|---|---|---|---|---|"]
    t = report.get("training")
    if t:
        lines.append(f"| training loop / bare loop | {t['arch']} at {t['input_size']} px, {t['device']} "
                     f"({t['precision']}), {t['photos']:,} photos x {t['epochs']} epochs, batch {t['batch_size']}, "
                     f"validation on {t['val']:,} | {t['loop']['wall_s']:.2f} | {t['bare']['wall_s']:.2f} | "
                     f"{t['ratio_wall']:.3f} | {t['ratio_cpu']:.3f} | at least 0.9 |")
    p = report.get("preprocess")
    if p:
        start = p.get("startup")
        startup = f", start-up {start['wall_s']:.2f} s of it" if start else ""
        lines.append(f"| plain Pillow / preprocess | {p['photos']:,} JPEGs (half 640x480, half 1280x960) to "
                     f"{p['size']} px, 2 workers{startup} | {p['preprocess']['wall_s']:.2f} | "
                     f"{p['pillow']['wall_s']:.2f} | {p['ratio_wall']:.2f} | {p['ratio_cpu']:.2f} | at least 3 |")
    load = report["load_average_start"]
    return ("\n".join(lines) + f"\n\n{report['cpus']} CPUs, load average {load[0]:.1f} at the start and "
            f"{report['load_average_end'][0]:.1f} at the end; medians of the interleaved repeats. A ratio is the "
            "reference's time over ours: the share of the bare loop's speed the training loop keeps, and how many "
            "times faster than plain Pillow preprocess is.\n")


def gpu_check_markdown(summary: Mapping) -> str:
    """benchmarks/gpu_summary.py's gpu_check.json: each step's GPU use, then the per-stage times it measured."""
    lines = [f"Device: {summary['device']}.", "",
             "| step | rc | wall s | GPU util mean % | GPU util 0% share | GPU memory max MiB |",
             "|---|---|---|---|---|---|"]
    for s in summary["steps"]:
        lines.append(f"| {s['name']} | {s['rc']} | {s['wall_s']} | {s['gpu_util_mean']} | {s['gpu_util_zero_share']} "
                     f"| {s['gpu_mem_max_mib']} |")
    for key in ("default_study", "tenth_scale"):
        study = summary.get(key)
        if study:
            extrapolated = study.get("extrapolated_full_s")
            lines += ["", f"{key}: {study['photos']:,} photos, {study['wall_s']} s in stages"
                      + (f", full size extrapolated: {extrapolated} s" if extrapolated is not None else "") + ".", "",
                      "| stage | wall s | CPU s | peak RSS MiB |", "|---|---|---|---|"]
            lines += [f"| {e['stage']} | {e['wall_s']} | {e['cpu_s']} | {e['peak_rss_mib']} |" for e in study["stages"]]
    return "\n".join(lines) + "\n"
