"""The summary charts: every strategy's training curves and their per-class accuracy, as PNG and CSV."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402


def read_curve(live: Path, strategy: str, metric: str) -> pd.DataFrame | None:
    """The first seed's dvclive series of ``metric`` for a strategy, or None if it was not logged."""
    seeds = sorted((live / strategy).glob("seed-*"))
    if not seeds:
        return None
    path = seeds[0] / "plots" / "metrics" / f"{metric}.tsv"
    if not path.exists():
        return None
    frame = pd.read_csv(path, sep="\t")
    return frame[["step", frame.columns[-1]]].rename(columns={frame.columns[-1]: "value"})


def smooth(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing moving average, so a step's value uses only earlier steps."""
    if len(values) == 0:
        return values
    kernel = np.ones(min(window, len(values)))
    sums = np.convolve(values, kernel)[: len(values)]
    counts = np.convolve(np.ones(len(values)), kernel)[: len(values)]
    return sums / counts


def training_curves(live: Path, strategies: list[str], out: Path) -> None:
    panels = [("train/loss", "training loss (moving average)"),
              ("val/cross_entropy", "validation cross entropy"),
              ("val/per_class_accuracy", "validation per-class accuracy")]
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.2))
    palette = plt.get_cmap("tab20").colors
    for ax, (metric, title) in zip(axes, panels):
        for index, name in enumerate(strategies):
            curve = read_curve(live, name, metric)
            if curve is None:
                continue
            values = curve["value"].to_numpy(dtype=float)
            if metric == "train/loss":
                values = smooth(values, 20)
            # 20 colours, then the same colours dashed: every strategy stays tellable apart
            ax.plot(curve["step"], values, label=name, marker=None if metric == "train/loss" else "o", ms=3,
                    color=palette[index % len(palette)], ls="-" if index < len(palette) else "--")
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes[-1].axhline(0.5, color="grey", ls=":", lw=1)
    fig.legend(*axes[0].get_legend_handles_labels(), loc="center right", fontsize=8)
    fig.tight_layout(rect=(0, 0, 0.86, 1))
    fig.savefig(out, dpi=110)
    plt.close(fig)


def per_class_accuracy_chart(results: dict, out_png: Path, out_csv: Path) -> None:
    names = list(results)
    mean = np.array([results[n]["per_class_accuracy"] for n in names])
    ci = np.array([results[n].get("per_class_accuracy_ci", [m, m]) for n, m in zip(names, mean)])
    pd.DataFrame({"strategy": names, "per_class_accuracy": mean, "ci_low": ci[:, 0], "ci_high": ci[:, 1]}
                 ).to_csv(out_csv, index=False)
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(names) + 1.5))
    colours = ["tab:red" if results[n]["collapsed"] else "tab:blue" for n in names]
    ax.barh(names, mean, xerr=[mean - ci[:, 0], ci[:, 1] - mean], color=colours, capsize=3)
    ax.axvline(0.5, color="grey", ls=":", lw=1)
    ax.set_xlim(0, 1)
    ax.invert_yaxis()
    ax.set_xlabel("test per-class accuracy (95% bootstrap interval); red: collapsed to a constant")
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
