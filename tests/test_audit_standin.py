"""The audit benchmark's real-image stand-in: digits as photos, two digits as flags, the generator's noise."""
import numpy as np
import pandas as pd
import pytest

from weldnet.core.flags import FLAGS
from weldnet.synth.digits import FLAG_DIGITS, FLAG_SHARES, draw_photos, recorded_flags, true_flags, upscale


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
