"""The audit benchmark's real-image stand-in: digits as photos, two digits as flags, the generator's noise."""
import numpy as np
import pandas as pd
import pytest

from weldnet.core.flags import FLAGS
from weldnet.synth.digits import (
    FLAG_DIGITS,
    FLAG_SHARES,
    draw_photos,
    recorded_flags,
    true_flags,
    upscale,
    write_export,
)


def test_upscale_makes_dark_ink_on_white_thumbnails():
    images = np.array([[[0, 16], [16, 0]], [[8, 8], [8, 8]]], dtype=float)
    thumbs = upscale(images, 6, levels=16.0)
    assert thumbs.shape == (2, 6, 6, 3) and thumbs.dtype == np.uint8
    assert (thumbs[..., 0] == thumbs[..., 2]).all(), "grey"
    assert thumbs[0, 0, 0, 0] == 255 and thumbs[0, 0, 5, 0] == 0     # blank is white, full ink black
    assert (thumbs[1] == 128).all()                                  # a flat image stays flat


def test_draw_photos_keeps_the_shares_with_as_many_photos_as_the_scarcest_group_allows():
    digits = np.array([8] * 100 + [9] * 100 + [0] * 500 + [1] * 500)
    rows = draw_photos(digits, {8: 0.08, 9: 0.04}, np.random.default_rng(0))
    # flagless digits limit it: 1000 / 0.88 = 1136 photos, of which 8% eights, 4% nines
    counts = pd.Series(digits[rows]).value_counts()
    assert len(rows) == len(set(rows)) == 1136
    assert counts[8] == 91 and counts[9] == 45 and counts[0] + counts[1] == 1000
    assert not np.all(np.diff(rows) > 0), "shuffled"
    assert np.array_equal(rows, draw_photos(digits, {8: 0.08, 9: 0.04}, np.random.default_rng(0)))


def test_draw_photos_refuses_shares_it_cannot_meet():
    digits = np.array([8] * 10 + [0] * 10)
    with pytest.raises(ValueError, match="sum to less than 1"):
        draw_photos(digits, {8: 0.6, 0: 0.5}, np.random.default_rng(0))
    with pytest.raises(ValueError, match="no photo of digit 9"):
        draw_photos(digits, {8: 0.1, 9: 0.1}, np.random.default_rng(0))


def test_true_flags_give_each_flag_digit_its_flag():
    table = true_flags(np.array([8, 9, 3]))
    assert list(table.columns) == list(FLAGS)
    assert table.loc[0, FLAG_DIGITS[8]] == 1 and table.loc[1, FLAG_DIGITS[9]] == 1
    assert table.sum(axis=1).tolist() == [1, 1, 0]
    assert sum(FLAG_SHARES.values()) == pytest.approx(0.12), "88% flagless, as a Bluebox-like rig"


def test_recorded_flags_drop_whole_records_of_flawed_photos_below_the_noise_level():
    true = true_flags(np.array([8, 9, 8, 3, 3]))
    uniforms = np.array([0.01, 0.5, 0.08, 0.01, 0.9])
    low, high = recorded_flags(true, uniforms, 0.05), recorded_flags(true, uniforms, 0.10)
    assert low.sum(axis=1).tolist() == [0, 1, 1, 0, 0]
    assert high.sum(axis=1).tolist() == [0, 1, 0, 0, 0], "photos hidden at 5% stay hidden at 10%"
    assert recorded_flags(true, uniforms, 0.0).equals(true)
    assert true.sum(axis=1).tolist() == [1, 1, 1, 0, 0], "the true flags are left alone"


def test_the_digit_export_is_read_by_ingest_with_its_flags_and_only_redbox_noise(tmp_path):
    """Each digit once per rig; eights carry No Clamp Used, nines the other flag; the noise hides Redbox flags only."""
    from weldnet.photos.files import read_photos
    from weldnet.photos.images import PhotoInfo
    from weldnet.photos.ingest import build_manifest, check_rows, decode_labels, parse_label_table

    digits = np.array([8, 9, 0, 8, 1, 8, 9, 2] * 3)
    images = np.random.default_rng(0).integers(0, 17, (len(digits), 8, 8)).astype(float)
    export = tmp_path / "export"
    write_export(export, tmp_path / "truth.csv", images, digits, 32, 0.5, np.random.default_rng(1))
    entries, rejected = check_rows(parse_label_table(decode_labels((export / "labels.csv").read_bytes())))
    assert not rejected
    results = read_photos(export, entries, max_pixels=10**8, workers=1)
    assert all(isinstance(r, PhotoInfo) for r in results)
    manifest = build_manifest(entries, dict(zip([e.image for e in entries], results)))
    truth = pd.read_csv(tmp_path / "truth.csv", keep_default_na=False)
    blue = manifest[manifest["rig"] == "bluebox"].reset_index(drop=True)
    red = manifest[manifest["rig"] == "redbox"].reset_index(drop=True)
    assert len(blue) == len(red) == len(digits)
    assert (blue["No Clamp Used"].to_numpy() == (digits == 8)).all()
    assert (blue[FLAG_DIGITS[9]].to_numpy() == (digits == 9)).all()
    hidden = truth.loc[truth["rig"] == "redbox", "noisy"].to_numpy().astype(bool)
    assert 0 < hidden.sum() < np.isin(digits, [8, 9]).sum(), "half of the flagged Redbox photos, none else"
    assert not np.isin(digits[hidden], [0, 1, 2]).any()
    assert (red.loc[hidden, list(FLAGS)].to_numpy() == 0).all()
    assert not truth.loc[truth["rig"] == "bluebox", "noisy"].any()
    with pytest.raises(Exception, match="not empty"):
        write_export(tmp_path, tmp_path / "t.csv", images, digits, 32, 0.5, np.random.default_rng(1))
