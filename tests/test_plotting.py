"""The plots stage's tables and pictures: dvclive series to tidy tables, first-layer filters, the PNGs."""
import numpy as np
import pandas as pd
import pytest
import torch

from weldnet.scoring.plotting import (
    accuracy_table,
    comparison_chart,
    filter_mosaic,
    filter_tiles,
    first_layer_filters,
    read_series,
    strategy_order,
    tidy_curves,
    training_loss_chart,
    validation_curves_chart,
    window_mean,
)


def write_tsv(path, header, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(["\t".join(header)] + ["\t".join(str(v) for v in row) for row in rows]) + "\n")


def fake_live(root, strategy, seeds):
    for seed in seeds:
        metrics = root / strategy / f"seed-{seed}" / "plots" / "metrics"
        write_tsv(metrics / "val" / "per_class_accuracy.tsv", ["step", "per_class_accuracy"],
                  [(25, 0.5 + seed / 100), (51, 0.6)])
        write_tsv(metrics / "epoch.tsv", ["step", "epoch"], [(25, 1), (51, 2)])
        write_tsv(metrics / "train" / "loss.tsv", ["step", "loss"], [(s, 1.0 / (s + 1)) for s in range(52)])


def test_read_series_takes_every_seed_with_its_steps_and_epochs(tmp_path):
    fake_live(tmp_path, "bayesian", [0, 1, 10])
    series = read_series(tmp_path, "bayesian", "val/per_class_accuracy")
    assert series["seed"].tolist() == [0, 0, 1, 1, 10, 10]          # seed 10 after seed 1
    assert series["step"].tolist() == [25, 51] * 3                   # the logged step, not the row number
    assert series["epoch"].tolist() == [1, 2] * 3
    assert series["value"].iloc[2] == pytest.approx(0.51)
    assert read_series(tmp_path, "absent", "val/per_class_accuracy").empty
    loss = read_series(tmp_path, "bayesian", "train/loss")
    assert len(loss) == 3 * 52 and loss["epoch"].isna().sum() == 3 * 50   # epochs end at steps 25 and 51 only


def test_window_mean_by_hand():
    frame = pd.DataFrame({"seed": [0] * 5 + [1] * 2, "step": [0, 1, 2, 3, 4, 0, 1], "value": [1, 2, 3, 4, 5, 6, 8]})
    out = window_mean(frame, 2)
    assert out["seed"].tolist() == [0, 0, 0, 1]
    assert out["step"].tolist() == [1, 3, 4, 1]
    assert out["value"].tolist() == pytest.approx([1.5, 3.5, 5.0, 7.0])
    with pytest.raises(ValueError):
        window_mean(frame, 0)


def test_tidy_curves_overlays_strategies_in_one_table(tmp_path):
    fake_live(tmp_path, "a", [0])
    fake_live(tmp_path, "b", [0, 1])
    table = tidy_curves({n: read_series(tmp_path, n, "val/per_class_accuracy") for n in ("a", "b", "absent")},
                        "per_class_accuracy")
    assert list(table.columns) == ["strategy", "seed", "step", "epoch", "per_class_accuracy"]
    assert table.groupby("strategy").size().to_dict() == {"a": 2, "b": 4}


def results(**val):
    return {name: {"per_class_accuracy": v, "per_class_accuracy_ci_low": v - 0.05,
                   "per_class_accuracy_ci_high": v + 0.05, "val_per_class_accuracy": v, "collapsed": v == 0.5,
                   "collapsed_seeds": 2 * (v == 0.5), "best_epoch": {"seed-0": 1, "seed-1": 2}}
            for name, v in val.items()}


def test_strategies_are_ordered_by_validation_ties_in_study_order():
    assert strategy_order(results(a=0.5, b=0.7, c=0.5, d=0.6)) == ["b", "d", "a", "c"]
    table = accuracy_table(results(a=0.5, b=0.7))
    assert table.set_index("strategy").loc["a", "collapsed"] and table["seeds"].tolist() == [2, 2]


def test_first_layer_filters_are_the_first_convolution_over_rgb():
    conv = torch.nn.Conv2d(3, 4, 3)
    state = {"bn.weight": torch.ones(4), "features.0.weight": conv.weight.data,
             "features.4.weight": torch.zeros(8, 4, 3, 3)}
    assert np.allclose(first_layer_filters(state), conv.weight.data.numpy())
    with pytest.raises(ValueError, match="3 input channels"):
        first_layer_filters({"w": torch.zeros(2, 4, 3, 3)})


def test_filter_tiles_map_zero_to_grey_and_each_filters_extremes_to_black_or_white():
    filters = np.zeros((2, 3, 2, 2))
    filters[0, 0, 0, 0], filters[0, 1, 1, 1] = 4.0, -2.0
    tiles = filter_tiles(filters)
    assert tiles.shape == (2, 2, 2, 3)
    assert tiles[0, 0, 0, 0] == 1.0 and tiles[0, 1, 1, 1] == 0.25 and tiles[0, 0, 1, 2] == 0.5
    assert np.all(tiles[1] == 0.5)                                   # an all-zero filter: grey, no division by 0


def test_filter_mosaic_lays_out_models_and_seeds():
    f = np.random.default_rng(0).normal(size=(4, 3, 3, 3))
    image = filter_mosaic([[f, f], [f]], pixels=18, gap=3, seed_gap=14)
    # tiles of 3x3 enlarged 6 times: 4 per seed, 3 px apart; seeds 14 px apart; rows 3 px apart
    assert image.shape == (2 * 18 + 3, 2 * (4 * 21 - 3) + 14, 3)
    assert np.all(image[18:21] == 1.0)                               # the white gap between the rows
    assert np.all(image[21:, 4 * 21 - 3 + 14:] == 1.0)               # the second model has one seed only


def test_the_pngs_are_written(tmp_path):
    fake_live(tmp_path / "live", "a", [0, 1])
    fake_live(tmp_path / "live", "b", [0, 1])
    scores = results(a=0.5, b=0.7)
    val = tidy_curves({n: read_series(tmp_path / "live", n, "val/per_class_accuracy") for n in scores},
                      "per_class_accuracy")
    loss = tidy_curves({n: window_mean(read_series(tmp_path / "live", n, "train/loss"), 10) for n in scores}, "loss")
    validation_curves_chart(val, scores, tmp_path / "val.png")
    training_loss_chart(loss, scores, tmp_path / "loss.png")
    diff = {n: {k: (v if isinstance(v, float) else None, v) for k, v in r.items()} for n, r in scores.items()}
    comparison_chart(diff, "main", tmp_path / "diff.png")
    for name in ("val.png", "loss.png", "diff.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
