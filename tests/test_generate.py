"""The `generate` stage: Table 1 flag frequencies, label noise, rendering and the export it writes."""
from __future__ import annotations

import csv
import math
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from conftest import params_yaml
from PIL import Image

from stages.generate import main
from weldnet.core.config import DataError, ParamError, build
from weldnet.core.flags import FLAGS, PERFECT, RIG_TOTALS, RIGS, TABLE1, parse_flags, table1_share
from weldnet.core.params import GenerateSpec, RigCounts, RigShares
from weldnet.synth.export import generate
from weldnet.synth.flags import (
    EXCLUSIVE_GROUPS,
    flag_model,
    flagless_share,
    flags_from_uniforms,
    missing_flags,
    rig_flag_model,
)
from weldnet.synth.scene import FRAME, SOIL, WATER, frame_reach, render_scene, sample_layout, visible_share

N_PURE = 200_000


def _read(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _pure_sample(rig: str, seed: int = 0) -> np.ndarray:
    model = rig_flag_model(rig)
    return flags_from_uniforms(model, np.random.default_rng(seed).random((N_PURE, model.n_draws)))


# --- flag sampler (pure, no rendering) ---------------------------------------------------

@pytest.mark.parametrize("rig", RIGS)
def test_perfect_rate_solves_table1_flagless_share(rig):
    model = rig_flag_model(rig)
    group_shares = [sum(table1_share(rig)[f] for f in group) for group in model.groups]
    assert 0 < model.perfect_rate < 1
    assert flagless_share(model.perfect_rate, group_shares) == pytest.approx(PERFECT[rig] / RIG_TOTALS[rig], abs=1e-9)


@pytest.mark.parametrize("rig", RIGS)
def test_sampled_flags_follow_table1(rig):
    flags = _pure_sample(rig)
    shares = table1_share(rig)
    for column, name in enumerate(FLAGS):
        p = shares[name]
        tolerance = 4 * math.sqrt(p * (1 - p) / N_PURE) + 1e-4
        assert abs(flags[:, column].mean() - p) < tolerance, name
        if TABLE1[name][RIGS.index(rig)] is None:
            assert not flags[:, column].any(), f"{name} is never recorded on {rig}"
    perfect = PERFECT[rig] / RIG_TOTALS[rig]
    assert abs((~flags.any(axis=1)).mean() - perfect) < 4 * math.sqrt(perfect * (1 - perfect) / N_PURE)


@pytest.mark.parametrize("rig", RIGS)
def test_exclusive_flags_never_co_occur_but_others_do(rig):
    flags = _pure_sample(rig)
    exclusive = [("No Clamp Used", "Inadequate Or Incorrect Clamping"),
                 ("No Clamp Used", "Photo Does Not Show Enough Of Clamps"),
                 ("No Visible Evidence Of Scraping Or Peeling", "Unsuitable Scraping Or Peeling"),
                 *[(f, g) for group in (SOIL, WATER) for f in group for g in group if f < g]]
    for group in (*EXCLUSIVE_GROUPS, *exclusive):
        assert flags[:, [FLAGS.index(f) for f in group]].sum(axis=1).max() <= 1, group
    both = flags[:, FLAGS.index("No Ground Sheet")] & flags[:, FLAGS.index("No Visible Hatch Markings")]
    assert both.any()


def test_unreachable_flagless_share_is_refused():
    with pytest.raises(ValueError, match="no perfect-installation rate"):
        flag_model({"No Ground Sheet": 0.6}, perfect_share=0.1)


@pytest.mark.parametrize("share", [0.1, 0.3])
def test_missing_flags_hit_only_flawed_photos_at_the_given_share(share):
    flags = _pure_sample("redbox")
    noisy = missing_flags(flags, np.random.default_rng(1).random(N_PURE), share)
    flawed = flags.any(axis=1)
    assert not noisy[~flawed].any()
    assert noisy[flawed].mean() == pytest.approx(share, abs=0.005)


# --- scene -------------------------------------------------------------------------------

def test_framing_cuts_exactly_what_the_flags_say():
    rng = np.random.default_rng(0)
    for _ in range(500):
        layout = sample_layout(rng)
        bands = lambda reach: [visible_share(layout.band_in, layout.band_out, r) for r in reach]  # noqa: E731
        zones = lambda reach: [visible_share(layout.fitting_half, layout.scrape_end, r) for r in reach]  # noqa: E731
        whole = frame_reach(layout, rng, cut_clamps=False, cut_scrape=False)
        assert bands(whole) == [1, 1] and zones(whole) == [1, 1]
        clamps_cut = frame_reach(layout, rng, cut_clamps=True, cut_scrape=False)
        assert max(bands(clamps_cut)) <= 0.3 and zones(clamps_cut) == [1, 1]
        scrape_cut = frame_reach(layout, rng, cut_clamps=False, cut_scrape=True)
        cut_side = int(np.argmin(zones(scrape_cut)))
        assert zones(scrape_cut)[cut_side] <= 0.3 and zones(scrape_cut)[1 - cut_side] == 1
        assert bands(scrape_cut)[1 - cut_side] == 1  # the clamp still shows on the other side


def _squash(img: Image.Image, size: int) -> np.ndarray:
    small = img.resize((256, 256), Image.BILINEAR, reducing_gap=2.0)
    return np.asarray(small.resize((size, size), Image.BILINEAR) if size != 256 else small, dtype=float)


@pytest.mark.parametrize("flag", [f for f in FLAGS if "Photo Does Not Show" not in f])
def test_each_flag_is_drawn(flag):
    with_flag = np.asarray(render_scene([flag], "redbox", np.random.default_rng(3)), dtype=float)
    without = np.asarray(render_scene([], "redbox", np.random.default_rng(3)), dtype=float)
    assert (np.abs(with_flag - without).max(axis=2) > 30).sum() > 10


def test_clamp_shows_at_64_pixels_but_droplets_nearly_vanish_at_256():
    def diff(flag: str, size: int | None) -> np.ndarray:
        a = render_scene([flag], "bluebox", np.random.default_rng(5))
        b = render_scene([], "bluebox", np.random.default_rng(5))
        if size is None:
            return np.abs(np.asarray(a, dtype=float) - np.asarray(b, dtype=float)).max(axis=2)
        return np.abs(_squash(a, size) - _squash(b, size)).max(axis=2)

    assert (diff("No Clamp Used", 64) > 30).sum() >= 10
    assert (diff("Water Contamination High Risk", None) > 30).sum() > 300
    assert (diff("Water Contamination High Risk", 256) > 30).sum() < 100  # a few specks out of 65,536


def test_unknown_flag_is_refused():
    with pytest.raises(ValueError, match="unknown flags"):
        render_scene(["No Clamps"], "bluebox", np.random.default_rng(0))


# --- the stage -----------------------------------------------------------------------------

SMALL = GenerateSpec(seed=7, size=RigCounts(redbox=14, bluebox=6), label_noise=RigShares(redbox=0.5, bluebox=0.0),
                     workers=1)


@pytest.fixture(scope="module")
def small_export(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("gen")
    generate(SMALL, root / "export", root / "truth.csv")
    return root


def test_labels_are_the_truth_except_noisy_redbox_rows(small_export):
    labels, truth = _read(small_export / "export" / "labels.csv"), _read(small_export / "truth.csv")
    assert [(r["image"], r["rig"]) for r in labels] == [(r["image"], r["rig"]) for r in truth]
    assert [r["rig"] for r in labels] == ["redbox"] * 14 + ["bluebox"] * 6
    noisy = [r for r in truth if r["noisy"] == "1"]
    assert noisy and all(r["rig"] == "redbox" for r in noisy)
    for label, true in zip(labels, truth):
        assert parse_flags(true["flags"])[1] == [] and parse_flags(label["flags"])[1] == []
        if true["noisy"] == "1":
            assert label["flags"] == "" and true["flags"] != ""
        else:
            assert label["flags"] == true["flags"]


def test_images_are_jpegs_of_each_rigs_size(small_export):
    export = small_export / "export"
    labels = _read(export / "labels.csv")
    on_disk = sorted(str(p.relative_to(export)) for p in (export / "images").rglob("*") if p.is_file())
    assert on_disk == sorted(r["image"] for r in labels)
    for row in labels:
        assert row["image"] == f"images/{row['rig']}/{row['rig']}_{int(row['image'][-9:-4]):05d}.jpg"
        with Image.open(export / row["image"]) as im:
            assert (im.format, im.mode, im.size) == ("JPEG", "RGB", FRAME[row["rig"]])


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_gives_identical_bytes_whatever_the_workers(small_export, tmp_path):
    generate(replace(SMALL, workers=2), tmp_path / "export", tmp_path / "truth.csv")
    assert _snapshot(tmp_path) == _snapshot(small_export)
    generate(replace(SMALL, seed=8), tmp_path / "other", tmp_path / "other.csv")
    first, other = _snapshot(small_export / "export"), _snapshot(tmp_path / "other")
    assert all(first[name] != other[name] for name in first if name.endswith(".jpg"))


def test_rerun_deletes_stale_photos_but_never_a_foreign_directory(tmp_path):
    export = tmp_path / "export"
    generate(replace(SMALL, size=RigCounts(redbox=3, bluebox=2)), export, tmp_path / "truth.csv")
    generate(replace(SMALL, size=RigCounts(redbox=1, bluebox=1)), export, tmp_path / "truth.csv")
    assert sorted(p.name for p in (export / "images").rglob("*.jpg")) == ["bluebox_00000.jpg", "redbox_00000.jpg"]
    assert len(_read(export / "labels.csv")) == 2

    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "labels.csv").write_text("image,rig,flags\n")
    with pytest.raises(DataError, match="not written by this stage"):
        generate(SMALL, foreign, tmp_path / "truth.csv")
    assert (foreign / "labels.csv").exists()


def test_params_section_is_validated():
    assert build(GenerateSpec, {}, "generate") == GenerateSpec()
    spec = build(GenerateSpec, {"seed": 3, "size": {"redbox": 5, "bluebox": 0}}, "generate")
    assert spec.size == RigCounts(redbox=5, bluebox=0)
    bad = [({"size": {"redbox": -1, "bluebox": 0}}, "size.redbox"),
           ({"label_noise": {"redbox": 1.5, "bluebox": 0.0}}, "label_noise.redbox"),
           ({"workers": -1}, "workers"),
           ({"size": {"redbox": 1}}, "bluebox"),
           ({"noise": 0.1}, "unknown key 'noise'")]
    for mapping, message in bad:
        with pytest.raises(ParamError, match=message):
            build(GenerateSpec, mapping, "generate")


def test_cli_reads_params_yaml_from_the_working_directory(tmp_path, monkeypatch):
    (tmp_path / "params.yaml").write_text(params_yaml(generate={
        "seed": 1, "size": {"redbox": 2, "bluebox": 1}, "label_noise": {"redbox": 0.1, "bluebox": 0.0}, "workers": 1}))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["generate", "--export", "data/export", "--truth", "data/truth.csv"])
    main()
    assert len(_read(tmp_path / "data" / "truth.csv")) == 3
    assert (tmp_path / "data" / "export" / "images" / "bluebox" / "bluebox_00000.jpg").is_file()
