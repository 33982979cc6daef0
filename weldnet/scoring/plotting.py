"""The summary plots: tidy tables for ``dvc plots`` and the PNGs a pull request or the README shows.

Tables (one row per strategy, seed and step) let one DVC plot overlay every
strategy, whatever ``study`` holds. The PNGs avoid 19 colours in one chart: small
multiples, one panel per strategy, with the others greyed behind, or the strategies
with the best *validation* per-class accuracy in colour and the rest in grey.
Strategies are ordered by validation per-class accuracy, the figure that chooses
between them; the test figures are never used to choose.
"""
from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from weldnet.core.files import render_png, write_bytes  # noqa: E402

CHANCE = 0.5           # per-class accuracy of a constant classifier, two classes
HIGHLIGHT = 5          # strategies drawn in colour where all share one chart
GREY = "#c8c8c8"
COLLAPSED = "#c0392b"
DPI = 100


def save(fig: plt.Figure, out: Path, exact: bool = False) -> None:
    """Write a figure as a 256-colour PNG, a third of the bytes of matplotlib's own, for files kept in git;
    ``exact`` keeps every colour (pictures of data, such as filters)."""
    from PIL import Image

    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=DPI, format="png")
    plt.close(fig)
    if exact:
        write_bytes(out, buffer.getvalue())
        return
    buffer.seek(0)
    with Image.open(buffer) as image:
        write_bytes(out, render_png(image.convert("RGB").quantize(256, method=Image.Quantize.MEDIANCUT).save,
                                    optimize=True))


# ------------------------------------------------------------------ dvclive series to tidy tables

def read_series(live: Path, strategy: str, metric: str) -> pd.DataFrame:
    """Every seed's dvclive series of ``metric`` (e.g. ``val/per_class_accuracy``): seed, step, epoch, value.

    ``epoch`` is the epoch a step ends (from dvclive's ``epoch`` series), empty for
    steps inside an epoch. No seed logged: an empty table.
    """
    frames = []
    for folder in sorted((live / strategy).glob("seed-*"), key=lambda p: int(p.name.split("-")[-1])):
        path = folder / "plots" / "metrics" / f"{metric}.tsv"
        if not path.is_file():
            continue
        frame = pd.read_csv(path, sep="\t")
        frame = frame[["step", frame.columns[-1]]].set_axis(["step", "value"], axis=1)
        epochs = folder / "plots" / "metrics" / "epoch.tsv"
        if epochs.is_file():
            frame = frame.merge(pd.read_csv(epochs, sep="\t")[["step", "epoch"]], on="step", how="left")
        else:
            frame["epoch"] = np.nan
        frame.insert(0, "seed", int(folder.name.split("-")[-1]))
        frames.append(frame)
    if not frames:
        return pd.DataFrame(columns=["seed", "step", "value", "epoch"])
    return pd.concat(frames, ignore_index=True)


def window_mean(frame: pd.DataFrame, window: int) -> pd.DataFrame:
    """Per seed, the mean value over consecutive blocks of ``window`` steps, at each block's last step.

    A training loss logged every step is noisy (the batch composition changes) and
    long; block means keep its trend and cut the rows ``window``-fold.
    """
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    if frame.empty:
        return frame[["seed", "step", "value"]].copy()
    block = frame["step"] // window
    grouped = frame.groupby([frame["seed"], block], sort=True)
    out = pd.DataFrame({"step": grouped["step"].max(), "value": grouped["value"].mean()}).reset_index(level=0)
    return out.reset_index(drop=True)[["seed", "step", "value"]]


def tidy_curves(series: dict[str, pd.DataFrame], value: str) -> pd.DataFrame:
    """One table of every strategy's series: strategy, seed, step, [epoch,] ``value``."""
    frames = [frame.assign(strategy=name) for name, frame in series.items() if not frame.empty]
    if not frames:
        return pd.DataFrame(columns=["strategy", "seed", "step", value])
    table = pd.concat(frames, ignore_index=True).rename(columns={"value": value})
    columns = ["strategy", "seed", "step"] + (["epoch"] if "epoch" in table else []) + [value]
    table = table[columns]
    if "epoch" in table:
        table["epoch"] = table["epoch"].astype("Int64")
    return table


def strategy_order(results: dict) -> list[str]:
    """Strategies by validation per-class accuracy, best first (ties keep the study's order)."""
    names = list(results)
    return sorted(names, key=lambda n: (-results[n].get("val_per_class_accuracy", -math.inf), names.index(n)))


def accuracy_table(results: dict) -> pd.DataFrame:
    """Test per-class accuracy with its 95% interval, validation per-class accuracy and collapse, per strategy."""
    rows = [{"strategy": name, "per_class_accuracy": r["per_class_accuracy"],
             "ci_low": r["per_class_accuracy_ci_low"], "ci_high": r["per_class_accuracy_ci_high"],
             "val_per_class_accuracy": r["val_per_class_accuracy"], "collapsed_seeds": r["collapsed_seeds"],
             "seeds": len(r["best_epoch"]), "collapsed": bool(r["collapsed"])}
            for name, r in results.items()]
    return pd.DataFrame(rows)


# ------------------------------------------------------------------ first-layer filters

def first_layer_filters(state: dict) -> np.ndarray:
    """The first convolution's weights (out, 3, k, k) of a state dict: its first 4-D tensor over 3 channels."""
    for name, tensor in state.items():
        if getattr(tensor, "ndim", 0) == 4 and tensor.shape[1] == 3:
            return np.asarray(tensor.detach().cpu().float().numpy() if hasattr(tensor, "detach") else tensor)
    raise ValueError("no convolution over 3 input channels in the state dict")


def filter_tiles(filters: np.ndarray) -> np.ndarray:
    """Filters (out, 3, k, k) as RGB tiles (out, k, k, 3) in [0, 1], each scaled by its own largest |weight|.

    Zero maps to mid grey, so a filter's sign pattern (edge, colour opponency) shows
    whatever its norm; a constant or noisy pattern shows as such.
    """
    tiles = np.transpose(np.asarray(filters, dtype=np.float64), (0, 2, 3, 1))
    scale = np.abs(tiles).reshape(len(tiles), -1).max(axis=1)
    scale[scale == 0] = 1.0
    return 0.5 + 0.5 * tiles / scale[:, None, None, None]


def filter_mosaic(rows: Sequence[Sequence[np.ndarray]], pixels: int = 18, gap: int = 3,
                  seed_gap: int = 14) -> np.ndarray:
    """One RGB image in [0, 1] of models' first-layer filters: a row per model, each seed's filters side by side.

    ``rows[m][s]`` is model m's filter array (out, 3, k, k) for seed s. Each tile is
    enlarged to about ``pixels`` (nearest neighbour); white gaps separate tiles and seeds.
    """
    if not rows or not any(len(r) for r in rows):
        raise ValueError("filter_mosaic needs at least one model")
    k = max(f.shape[-1] for r in rows for f in r)
    scale = max(1, round(pixels / k))
    tile = k * scale
    n_filters = max(len(f) for r in rows for f in r)
    n_seeds = max(len(r) for r in rows)
    group = n_filters * (tile + gap) - gap
    width = n_seeds * group + (n_seeds - 1) * seed_gap
    image = np.ones((len(rows) * (tile + gap) - gap, width, 3))
    for m, per_seed in enumerate(rows):
        top = m * (tile + gap)
        for s, filters in enumerate(per_seed):
            for i, t in enumerate(filter_tiles(filters)):
                big = np.repeat(np.repeat(t, scale, axis=0), scale, axis=1)
                left = s * (group + seed_gap) + i * (tile + gap)
                image[top:top + big.shape[0], left:left + big.shape[1]] = big
    return image


def filter_grid(rows: Sequence[tuple[str, Sequence[np.ndarray]]], out: Path, seed_labels: Sequence[str],
                title: str) -> None:
    """:func:`filter_mosaic` with each model's label on the left and the seeds named on top."""
    image = filter_mosaic([per_seed for _, per_seed in rows])
    height, width = image.shape[:2]
    label_px, top_px = 16 + 6 * max(len(label) for label, _ in rows), 52     # about 6 px a character at 8 pt
    fig = plt.figure(figsize=((width + label_px + 10) / DPI, (height + top_px + 10) / DPI), dpi=DPI)
    ax = fig.add_axes(((label_px) / (width + label_px + 10), 10 / (height + top_px + 10),
                       width / (width + label_px + 10), height / (height + top_px + 10)))
    ax.imshow(image, interpolation="nearest")
    step = height / len(rows)
    ax.set_yticks([(m + 0.5) * step for m in range(len(rows))], [label for label, _ in rows], fontsize=8)
    n_seeds = max(len(per_seed) for _, per_seed in rows)
    ax.set_xticks([(s + 0.5) * width / n_seeds for s in range(n_seeds)], list(seed_labels[:n_seeds]), fontsize=8)
    ax.xaxis.tick_top()
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    fig.suptitle(title, fontsize=9, y=1 - 4 / (height + top_px + 10), va="top")
    save(fig, out, exact=True)


# ------------------------------------------------------------------ the PNGs

def _grid(n: int, columns: int = 5, size: tuple[float, float] = (2.6, 2.0), **kwargs):
    rows = math.ceil(n / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(size[0] * columns, size[1] * rows + 0.6), squeeze=False,
                             **kwargs)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:n])


def validation_curves_chart(val: pd.DataFrame, results: dict, out: Path) -> None:
    """Small multiples of validation per-class accuracy: each strategy's seeds, the others' means in grey."""
    order = [n for n in strategy_order(results) if n in set(val["strategy"])]
    fig, axes = _grid(len(order), sharex=True, sharey=True)
    means = {name: group.groupby("step")["per_class_accuracy"].mean() for name, group in val.groupby("strategy")}
    for ax, name in zip(axes, order):
        for other, mean in means.items():
            if other != name:
                ax.plot(mean.index, mean.to_numpy(), color=GREY, lw=0.7, zorder=1)
        for seed, group in val[val["strategy"] == name].groupby("seed"):
            ax.plot(group["step"], group["per_class_accuracy"], lw=1.4, marker="o", ms=2, zorder=3,
                    label=f"seed {seed}")
        ax.axhline(CHANCE, color="black", ls=":", lw=0.8)
        collapsed = results[name]["collapsed"]
        ax.set_title(f"{name}{' (collapsed)' if collapsed else ''}", fontsize=9,
                     color=COLLAPSED if collapsed else "black")
        ax.text(0.98, 0.04, f"val {results[name]['val_per_class_accuracy']:.3f}", transform=ax.transAxes,
                ha="right", fontsize=8)
        ax.grid(alpha=0.3)
    values = val["per_class_accuracy"].to_numpy(dtype=float)
    axes[0].set_ylim(max(0.0, min(0.45, values.min() - 0.02)), min(1.0, values.max() + 0.04))
    axes[0].legend(fontsize=7, loc="upper left")
    fig.supxlabel("training step", fontsize=9)
    fig.supylabel("validation per-class accuracy", fontsize=9)
    fig.suptitle("Validation per-class accuracy during training, every seed (grey: the other strategies' means; "
                 "dotted: a constant classifier); best validation first", fontsize=10)
    fig.tight_layout()
    save(fig, out)


def training_loss_chart(loss: pd.DataFrame, results: dict, out: Path) -> None:
    """Small multiples of the training loss (block means), every seed; each panel its own scale,
    since losses of different kinds (hinge, focal, LDAM) are not comparable."""
    order = [n for n in strategy_order(results) if n in set(loss["strategy"])]
    fig, axes = _grid(len(order), sharex=True)
    for ax, name in zip(axes, order):
        for seed, group in loss[loss["strategy"] == name].groupby("seed"):
            ax.plot(group["step"], group["loss"], lw=1.0, label=f"seed {seed}")
        ax.set_title(name, fontsize=9)
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=7)
    if axes:
        axes[0].legend(fontsize=7)
    fig.supxlabel("training step", fontsize=9)
    fig.supylabel("training loss", fontsize=9)
    fig.suptitle("Training loss, every seed (mean over blocks of steps)", fontsize=10)
    fig.tight_layout()
    save(fig, out)


def per_class_accuracy_chart(table: pd.DataFrame, results: dict, out: Path) -> None:
    """Test per-class accuracy with its 95% interval, and validation per-class accuracy, per strategy."""
    table = table.set_index("strategy").loc[strategy_order(results)].reset_index()
    fig, ax = plt.subplots(figsize=(7.5, 0.32 * len(table) + 1.4))
    y = np.arange(len(table))
    colours = [COLLAPSED if c else "tab:blue" for c in table["collapsed"]]
    ax.hlines(y, table["ci_low"], table["ci_high"], color=colours, lw=2.2, alpha=0.6)
    ax.scatter(table["per_class_accuracy"], y, color=colours, s=28, zorder=3, label="test (95% interval)")
    ax.scatter(table["val_per_class_accuracy"], y, facecolors="none", edgecolors="black", s=28, zorder=4,
               label="validation")
    ax.axvline(CHANCE, color="grey", ls=":", lw=1)
    ax.set_yticks(y, table["strategy"], fontsize=8)
    for tick, collapsed in zip(ax.get_yticklabels(), table["collapsed"]):
        tick.set_color(COLLAPSED if collapsed else "black")
    ax.invert_yaxis()
    ax.set_xlim(min(0.45, float(table["ci_low"].min()) - 0.02),
                min(1.0, max(float(table["ci_high"].max()), float(table["val_per_class_accuracy"].max())) + 0.03))
    ax.set_xlabel("per-class accuracy (red: collapsed to a constant on most seeds)", fontsize=9)
    ax.set_title("Per-class accuracy, mean over seeds; best validation first", fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    save(fig, out)


def automation_chart(curves: pd.DataFrame, results: dict, out: Path, highlight: int = HIGHLIGHT,
                     zoom: float = 0.8) -> None:
    """Share of test photos cleared against recall on flawed photos; the best strategies by validation in colour.

    Two panels: the whole curve, and recall from ``zoom`` up, where an inspector works.
    """
    order = strategy_order(results)
    top = [n for n in order if n in set(curves["strategy"])][:highlight]
    curve = curves[curves["kind"] == "curve"]
    points = curves[curves["kind"] != "curve"]
    target = float(curves["target_recall"].iloc[0])
    palette = plt.get_cmap("tab10").colors
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.6), gridspec_kw={"width_ratios": [1.25, 1]})
    for ax in axes:
        for name in order:
            if name in top:
                continue
            part = curve[curve["strategy"] == name]
            ax.plot(part["recall"], part["cleared"], color=GREY, lw=0.8, drawstyle="steps-pre", zorder=1)
        for index, name in enumerate(top):
            part, point = curve[curve["strategy"] == name], points[points["strategy"] == name]
            colour = palette[index % len(palette)]
            ax.fill_between(part["recall"], part["cleared_low"], part["cleared_high"], step="pre", color=colour,
                            alpha=0.15, lw=0)
            ax.plot(part["recall"], part["cleared"], color=colour, lw=1.6, drawstyle="steps-pre", label=name,
                    zorder=3)
            ax.scatter(point["recall"], point["cleared"], color=colour, edgecolors="black", s=36, zorder=4)
        ax.axvline(target, color="black", ls="--", lw=1)
        ax.grid(alpha=0.3)
        ax.set_xlabel("recall on flawed test photos", fontsize=9)
    axes[0].text(target, 0.98, f"target recall {target:g} ", va="top", ha="right", fontsize=8, rotation=90)
    axes[0].set_xlim(0.0, 1.005)
    axes[0].set_ylim(0.0, 1.0)
    axes[0].set_ylabel("share of test photos cleared", fontsize=9)
    axes[0].legend(fontsize=8, loc="lower left")
    near = curve[curve["recall"] >= zoom]
    axes[1].set_xlim(zoom, 1.005)
    axes[1].set_ylim(0.0, min(1.0, float(near["cleared_high"].max()) + 0.05) if len(near) else 1.0)
    axes[1].set_title(f"recall {zoom:g} and up", fontsize=9)
    fig.suptitle(f"Automation on the test split: in colour the {len(top)} best strategies by validation per-class "
                 "accuracy (band: seed range), grey the others;\nline: threshold set on the test photos themselves; "
                 "dot: threshold chosen on validation, the Automation column", fontsize=9)
    fig.tight_layout()
    save(fig, out)


def confusion_chart(confusion: pd.DataFrame, results: dict, out: Path) -> None:
    """Small multiples of the test confusion matrices: colour the share of each actual class, text the count."""
    order = [n for n in strategy_order(results) if n in set(confusion["strategy"])]
    classes = list(dict.fromkeys(confusion["actual"]))
    k = len(classes)
    fig, axes = _grid(len(order), size=(2.5, 2.3))
    for ax, name in zip(axes, order):
        part = confusion[confusion["strategy"] == name]
        share = part.pivot(index="actual", columns="predicted", values="share").loc[classes, classes].to_numpy()
        count = part.pivot(index="actual", columns="predicted", values="count").loc[classes, classes].to_numpy()
        ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
        for i in range(k):
            for j in range(k):
                ax.text(j, i, f"{count[i, j]}\n{share[i, j]:.0%}", ha="center", va="center", fontsize=7,
                        color="white" if share[i, j] > 0.6 else "black")
        ax.set_xticks(range(k), classes if ax in axes[-5:] else [""] * k, fontsize=7, rotation=20)
        ax.set_yticks(range(k), classes if axes.index(ax) % 5 == 0 else [""] * k, fontsize=7)
        collapsed = results[name]["collapsed"]
        ax.set_title(name, fontsize=8, color=COLLAPSED if collapsed else "black")
    fig.supxlabel("predicted", fontsize=9)
    fig.supylabel("actual", fontsize=9)
    fig.suptitle("Test confusion, summed over seeds (colour: share of the actual class); best validation first",
                 fontsize=10)
    fig.tight_layout()
    save(fig, out)


def comparison_chart(metrics: dict[str, dict[str, tuple[object, object]]], base: str, out: Path) -> None:
    """Per-class accuracy with its 95% interval at the base revision (grey) and now (blue), per strategy.

    ``metrics`` is {strategy: {metric: (old, new)}} (weldnet.scoring.report.strategy_metrics);
    strategies are ordered by validation per-class accuracy now, best first.
    """
    def value(name: str, key: str, side: int) -> float:
        v = metrics[name].get(key, (None, None))[side]
        return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else np.nan

    names = sorted(metrics, key=lambda n: (-np.nan_to_num(value(n, "val_per_class_accuracy", 1), nan=-1.0),
                                           list(metrics).index(n)))
    fig, ax = plt.subplots(figsize=(7.5, 0.36 * len(names) + 1.5))
    y = np.arange(len(names))
    lows, highs = [CHANCE], [CHANCE]
    for side, (label, colour, shift) in enumerate(((base, "#9a9a9a", -0.17), ("now", "tab:blue", 0.17))):
        mean = np.array([value(n, "per_class_accuracy", side) for n in names])
        low = np.array([value(n, "per_class_accuracy_ci_low", side) for n in names])
        high = np.array([value(n, "per_class_accuracy_ci_high", side) for n in names])
        ax.hlines(y + shift, low, high, color=colour, lw=2.2, alpha=0.7)
        ax.scatter(mean, y + shift, color=colour, s=26, zorder=3, label=f"{label} (95% interval)")
        lows += [np.nanmin(np.r_[low, mean, 1.0])]
        highs += [np.nanmax(np.r_[high, mean, 0.0])]
    ax.axvline(CHANCE, color="grey", ls=":", lw=1)
    ax.set_yticks(y, names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(max(0.0, min(0.45, min(lows) - 0.02)), min(1.0, max(highs) + 0.03))
    ax.set_xlabel("test per-class accuracy, mean over seeds", fontsize=9)
    ax.set_title(f"Per-class accuracy at {base} and now; best validation (now) first", fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    save(fig, out)
