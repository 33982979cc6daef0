"""Tables and the plot of two studies run as DVC experiments: the imbalance sweep and every task.

Each experiment is one ``record``: the params it ran with and the metrics files it
wrote (``evaluate``: metrics/evaluate.json, ``split``: metrics/split.json,
``audit``: metrics/audit.json) and, per trained strategy, its validation per-class
accuracy after each epoch (``curves``: {strategy: [per seed: [epoch 1, 2, ...]]}).
``benchmarks/experiments.py`` reads them from the experiments' commits; everything
here is pure: records in, rows, Markdown and a figure out.

- The **sweep** (the report's figures 30 and 31): per-class accuracy of each
  strategy against the share of the default class in training, with its bootstrap
  interval, collapsed runs marked, and the epoch at which each trained strategy's
  validation per-class accuracy first leaves the constant classifier's 1/K (how late
  it "creeps out", figure 31).
- **Every task** (section 6.2): per task, its rig, class counts on test, the
  majority share and the audit's learnable verdict, and each strategy's per-class
  accuracy.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from weldnet.core.files import render_png, write_bytes

CONSTANT_EPS = 1e-9


def escape_epoch(curve: Sequence[float], num_classes: int) -> int | None:
    """First (1-based) epoch whose validation per-class accuracy is above 1/K, or None if it never is."""
    for epoch, value in enumerate(curve, start=1):
        if value > 1.0 / num_classes + CONSTANT_EPS:
            return epoch
    return None


def sweep_rows(records: Sequence[Mapping], strategies: Sequence[str]) -> list[dict]:
    """One row per (experiment, strategy), sorted by the training share of the default class."""
    rows = []
    for record in records:
        split, results = record["split"], record["evaluate"]
        num_classes = len(split["classes"])
        for name in strategies:
            if name not in results:
                continue
            r = results[name]
            low, high = _interval(r)
            curves = record.get("curves", {}).get(name) or []
            escapes = [escape_epoch(c, num_classes) for c in curves]
            rows.append({"ratio": record["ratio"], "share": float(split["train_majority_share"]),
                         "minority": int(sum(n for c, n in split["counts"]["train"].items() if c != split["classes"][0])),
                         "strategy": name, "per_class_accuracy": float(r["per_class_accuracy"]),
                         "ci_low": low, "ci_high": high, "collapsed": bool(r["collapsed"]),
                         "collapsed_seeds": int(r.get("collapsed_seeds", int(r["collapsed"]))),
                         "seeds": len(r.get("best_epoch", [0])),
                         "val_per_class_accuracy": float(r["val_per_class_accuracy"]),
                         "escape_epochs": escapes, "epochs": max((len(c) for c in curves), default=0)})
    return sorted(rows, key=lambda row: (row["share"], list(strategies).index(row["strategy"])))


def _interval(result: Mapping) -> tuple[float, float]:
    """The marginal bootstrap interval, under either key layout (a list, or scalar _low/_high keys)."""
    if "per_class_accuracy_ci" in result:
        low, high = result["per_class_accuracy_ci"]
    else:
        low, high = result["per_class_accuracy_ci_low"], result["per_class_accuracy_ci_high"]
    return float(low), float(high)


def collapse_onset(rows: Sequence[Mapping], strategy: str) -> float | None:
    """The smallest default-class share from which the strategy is collapsed at every larger share, or None."""
    mine = sorted((r for r in rows if r["strategy"] == strategy), key=lambda r: r["share"])
    onset = None
    for row in reversed(mine):
        if not row["collapsed"]:
            break
        onset = row["share"]
    return onset


def _share(share: float) -> str:
    return f"{share:.1%}"


def sweep_markdown(rows: Sequence[Mapping], strategies: Sequence[str]) -> str:
    """Per-class accuracy [interval] by strategy (rows) and training share (columns), collapse and escape marked."""
    shares = sorted({r["share"] for r in rows})
    by = {(r["strategy"], r["share"]): r for r in rows}
    labels = []
    for share in shares:
        sample = next(r for r in rows if r["share"] == share)
        natural = " (natural)" if sample["ratio"] is None else ""
        labels.append(f"{_share(share)}{natural}, {sample['minority']} flawed")
    lines = ["| strategy | " + " | ".join(labels) + " | collapses from |", "|" + "---|" * (len(shares) + 2)]
    for name in strategies:
        cells = []
        for share in shares:
            r = by.get((name, share))
            if r is None:
                cells.append("")
                continue
            mark = " **C**" if r["collapsed"] else ""
            cells.append(f"{r['per_class_accuracy']:.3f} [{r['ci_low']:.3f}, {r['ci_high']:.3f}]{mark}")
        onset = collapse_onset(rows, name)
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {_share(onset) if onset is not None else 'never'} |")
    escape = ["", "Epoch at which validation per-class accuracy first leaves 1/K (of the epochs trained; "
                  "- : never):", "", "| strategy | " + " | ".join(_share(s) for s in shares) + " |",
              "|" + "---|" * (len(shares) + 1)]
    for name in strategies:
        cells = []
        for share in shares:
            r = by.get((name, share))
            if r is None or not r["escape_epochs"]:
                cells.append("")
            else:
                cells.append(", ".join("-" if e is None else str(e) for e in r["escape_epochs"])
                             + f" / {r['epochs']}")
        if any(cells):
            escape.append(f"| {name} | " + " | ".join(cells) + " |")
    note = ("\n**C**: collapsed (one class for every test photo on at least half the seeds); interval: 95% "
            "bootstrap over the test photos; \"collapses from\": the smallest training share from which it is "
            "collapsed at every larger share tried.\n")
    return "\n".join(lines) + "\n" + "\n".join(escape) + "\n" + note


def sweep_plot(rows: Sequence[Mapping], strategies: Sequence[str], out: Path, title: str) -> None:
    """Per-class accuracy against the training share of the default class, one line per strategy."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.6), dpi=100)
    shares = sorted({r["share"] for r in rows})
    positions = {s: i for i, s in enumerate(shares)}      # even spacing: the interesting shares crowd near 1
    offsets = np.linspace(-0.18, 0.18, max(len(strategies), 1))
    colours = plt.get_cmap("tab10")
    for k, name in enumerate(strategies):
        mine = sorted((r for r in rows if r["strategy"] == name), key=lambda r: r["share"])
        if not mine:
            continue
        x = np.array([positions[r["share"]] + offsets[k] for r in mine])
        y = np.array([r["per_class_accuracy"] for r in mine])
        err = np.array([[r["per_class_accuracy"] - r["ci_low"] for r in mine],
                        [r["ci_high"] - r["per_class_accuracy"] for r in mine]])
        colour = colours(k % 10)
        ax.errorbar(x, y, yerr=err, color=colour, marker="o", ms=4, capsize=2, lw=1.4, label=name)
        dead = np.array([r["collapsed"] for r in mine])
        if dead.any():
            ax.scatter(x[dead], y[dead], marker="x", s=70, color="black", zorder=5, linewidths=1.5)
    ax.axhline(0.5, color="grey", ls=":", lw=1)
    ax.scatter([], [], marker="x", color="black", label="collapsed")
    labels = []
    for s in shares:
        natural = next(r["ratio"] is None for r in rows if r["share"] == s)
        labels.append(f"{s:.1%}\n(natural)" if natural else f"{s:.1%}")
    ax.set_xticks(range(len(shares)), labels)
    ax.set_xlabel("share of the default class in training")
    ax.set_ylabel("test per-class accuracy (95% interval)")
    ax.set_title(title, fontsize=10)
    ax.set_ylim(0.4, 1.0)
    ax.legend(fontsize=8, loc="upper right", ncol=2)
    fig.tight_layout()
    write_bytes(out, render_png(fig.savefig))
    plt.close(fig)


def task_rows(records: Sequence[Mapping], tasks: Mapping[str, Mapping], audit: Mapping[str, Mapping],
              strategies: Sequence[str]) -> list[dict]:
    """One row per task of ``tasks`` (params.yaml's), with its experiment's results when it ran."""
    ran = {record["task"]: record for record in records}
    rows = []
    for name, spec in tasks.items():
        rig = spec.get("rigs", ["bluebox"])[0]
        verdict = audit.get(name, {}).get(rig, {})
        counts = {c: int(round(verdict.get("n", 0) * share)) for c, share in verdict.get("class_shares", {}).items()}
        row = {"task": name, "rig": rig, "majority_share": verdict.get("majority_share"),
               "learnable": verdict.get("learnable"), "method": verdict.get("mislabelled_rate", {}).get("method"),
               "estimate": verdict.get("mislabelled_rate", {}).get("estimate"), "bound": verdict.get("bound"),
               "photos": counts, "results": {}, "test": None}
        record = ran.get(name)
        if record is not None:
            row["test"] = record["split"]["counts"]["test"]
            for strategy in strategies:
                if strategy in record["evaluate"]:
                    r = record["evaluate"][strategy]
                    low, high = _interval(r)
                    row["results"][strategy] = {"per_class_accuracy": float(r["per_class_accuracy"]),
                                                "ci_low": low, "ci_high": high, "collapsed": bool(r["collapsed"])}
        rows.append(row)
    return rows


def _verdict(row: Mapping) -> str:
    if row["learnable"] is None:
        return f"not estimable ({row['method']})" if row["method"] else "not audited"
    word = "learnable" if row["learnable"] else "**unlearnable**"
    return f"{word} ({row['estimate']:.1%} vs bound {row['bound']:.1%})"


def task_markdown(rows: Sequence[Mapping], strategies: Sequence[str]) -> str:
    """The all-task table: audit verdict beside each strategy's per-class accuracy."""
    header = ["task", "rig", "photos (default / flagged)", "majority share", "audit", *strategies]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        photos = " / ".join(str(n) for n in row["photos"].values()) if row["photos"] else ""
        if row["test"] is not None:
            photos += " (test " + " / ".join(str(n) for n in row["test"].values()) + ")"
        cells = [row["task"], row["rig"], photos,
                 f"{row['majority_share']:.1%}" if row["majority_share"] is not None else "", _verdict(row)]
        for strategy in strategies:
            r = row["results"].get(strategy)
            if r is None:
                cells.append("not run" if row["test"] is None else "")
            else:
                cells.append(f"{r['per_class_accuracy']:.3f} [{r['ci_low']:.2f}, {r['ci_high']:.2f}]"
                             + (" **C**" if r["collapsed"] else ""))
        lines.append("| " + " | ".join(cells) + " |")
    note = ("\nphotos: on the task's rig, all splits (test in brackets); majority share and verdict: the audit's, "
            "on that rig; per-class accuracy on test with its 95% bootstrap interval; **C**: collapsed (one class for "
            "every test photo); not run: the task's split could not be made (a class without a test photo).\n")
    return "\n".join(lines) + "\n" + note
