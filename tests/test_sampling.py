"""Samplers judged by the class histograms of the epochs and batches they yield."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.data import BatchSampler, DataLoader, TensorDataset

from weldnet.core.config import ParamError, build
from weldnet.core.params import SamplingParams
from weldnet.strategies.sampling import SAMPLERS, EpochSampler, epoch_indices

# 94% default class, like the report's imbalanced clamp task; two minority classes 3:1
LABELS = np.repeat([0, 1, 2], [940, 45, 15])
PARAMS = SamplingParams()


def indices(name, labels=LABELS, batch_size=32, seed=0, params=PARAMS):
    return epoch_indices(name, labels, batch_size, np.random.default_rng(seed), params)


def test_none_is_a_permutation():
    order = indices("none")
    np.testing.assert_array_equal(np.sort(order), np.arange(len(LABELS)))
    assert not np.array_equal(order, np.arange(len(LABELS)))


def test_oversample_reaches_the_target_ratio():
    order = indices("oversample")
    hist = np.bincount(LABELS[order])
    wanted = round(940 * 0.12 / 0.88)  # 128 non-default examples in all, shared 3:1
    np.testing.assert_array_equal(hist, [940, 96, 32])
    assert abs(hist[0] / hist.sum() - 0.88) < 1 / hist.sum() and hist[1:].sum() == wanted
    assert set(order) == set(range(len(LABELS)))  # every original example still appears
    assert len(order) > len(np.unique(order))  # with duplicates of minority examples


def test_undersample_reaches_the_target_ratio():
    order = indices("undersample")
    hist = np.bincount(LABELS[order])
    np.testing.assert_array_equal(hist, [440, 45, 15])  # round(60 * 0.88 / 0.12) = 440
    assert hist[0] / hist.sum() == pytest.approx(0.88)
    assert len(np.unique(order)) == len(order)  # drawn without replacement


@pytest.mark.parametrize("name", ["oversample", "undersample"])
def test_resampling_leaves_data_already_below_the_ratio_alone(name):
    labels = np.repeat([0, 1], [50, 50])
    np.testing.assert_array_equal(np.sort(indices(name, labels)), np.arange(100))


@pytest.mark.parametrize("batch_size", [32, 64, 256, 1000, 2000])
def test_stratified_batches_hold_the_training_proportions(batch_size):
    order = indices("stratified", batch_size=batch_size)
    np.testing.assert_array_equal(np.sort(order), np.arange(len(LABELS)))  # each example once
    shares = np.bincount(LABELS) / len(LABELS)
    for start in range(0, len(order), batch_size):
        batch = LABELS[order[start:start + batch_size]]
        expected = shares * len(batch)
        assert np.all(np.abs(np.bincount(batch, minlength=3) - expected) < 1), (start, np.bincount(batch))


@settings(max_examples=60, deadline=None)
@given(sizes=st.lists(st.integers(0, 300), min_size=2, max_size=5).filter(lambda s: sum(s) > 0),
       batch_size=st.integers(1, 400), seed=st.integers(0, 2 ** 16))
def test_stratified_bounds_hold_for_any_counts(sizes, batch_size, seed):
    labels = np.repeat(np.arange(len(sizes)), sizes)
    order = indices("stratified", labels, batch_size=batch_size, seed=seed)
    np.testing.assert_array_equal(np.sort(order), np.arange(len(labels)))
    shares = np.bincount(labels, minlength=len(sizes)) / len(labels)
    for start in range(0, len(order), batch_size):
        batch = labels[order[start:start + batch_size]]
        assert np.all(np.abs(np.bincount(batch, minlength=len(sizes)) - shares * len(batch)) < 1)


def test_plain_shuffle_batches_do_not_hold_the_proportions():
    # the contrast that makes the stratified test meaningful: with 4.5% and 1.5% minority
    # classes, plain shuffled batches of 32 often miss or double them
    order = indices("none")
    counts = [np.bincount(LABELS[order[s:s + 32]], minlength=3) for s in range(0, 1000, 32)]
    assert any(np.any(np.abs(c - np.bincount(LABELS) / 1000 * 32) >= 1) for c in counts)


def test_class_balanced_draws_classes_near_uniformly():
    order = indices("class_balanced")
    hist = np.bincount(LABELS[order])
    assert len(order) == len(LABELS)
    # binomial(1000, 1/3): sd ~ 15, so 60 is four standard deviations
    assert np.all(np.abs(hist - 1000 / 3) < 60), hist


def test_unknown_sampler_names_the_valid_ones():
    with pytest.raises(ParamError, match="unknown name 'smote'; valid: none, oversample, undersample, stratified"):
        indices("smote")


def test_bad_labels_and_batch_size_are_rejected():
    with pytest.raises(ValueError, match="labels"):
        indices("none", np.array([0.0, 1.0]))
    with pytest.raises(ValueError, match="batch_size"):
        indices("stratified", batch_size=0)


@pytest.mark.parametrize("mapping, message", [({"target_ratio": 1.0}, "target_ratio"),
                                              ({"target_ratio": 0}, "target_ratio"),
                                              ({"ratio": 0.5}, "unknown key 'ratio'")])
def test_sampling_params_are_validated(mapping, message):
    with pytest.raises(ParamError, match=message):
        build(SamplingParams, mapping, "sampling")
    assert build(SamplingParams, {}, "sampling") == SamplingParams(target_ratio=0.88, redraw_each_epoch=False)


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_epoch_sampler_is_reproducible_and_changes_across_epochs(name):
    first = EpochSampler(LABELS, name, 32, seed=7, params=PARAMS)
    epochs = [list(first), list(first)]
    assert epochs[0] != epochs[1]
    again = EpochSampler(LABELS, name, 32, seed=7, params=PARAMS)
    assert [list(again), list(again)] == epochs
    assert list(EpochSampler(LABELS, name, 32, seed=8, params=PARAMS)) != epochs[0]
    again.set_epoch(1)
    assert list(again) == epochs[1]
    assert len(first) == len(epochs[0]) == len(epochs[1])


def test_undersampled_set_is_drawn_once_unless_redrawn_each_epoch():
    def kept(params):
        sampler = EpochSampler(LABELS, "undersample", 32, seed=3, params=params)
        return [frozenset(list(sampler)) for _ in range(2)]

    once = kept(PARAMS)
    assert once[0] == once[1]  # the report's fixed under-sampled training set
    fresh = kept(SamplingParams(redraw_each_epoch=True))
    assert fresh[0] != fresh[1]


def test_dataloader_with_epoch_sampler_yields_the_resampled_histogram():
    # LDAM-DRW built its resampler and never gave it to the loader; this would catch that
    dataset = TensorDataset(torch.as_tensor(LABELS))
    sampler = EpochSampler(LABELS, "undersample", 64, seed=0, params=PARAMS)
    loader = DataLoader(dataset, batch_size=64, sampler=sampler)
    assert len(loader) == int(np.ceil(500 / 64))
    for _ in range(2):
        seen = torch.cat([y for (y,) in loader]).numpy()
        np.testing.assert_array_equal(np.bincount(seen), [440, 45, 15])


def test_batch_sampler_over_epoch_sampler_yields_stratified_batches():
    dataset = TensorDataset(torch.as_tensor(LABELS))
    sampler = EpochSampler(LABELS, "stratified", 50, seed=0, params=PARAMS)
    loader = DataLoader(dataset, batch_sampler=BatchSampler(sampler, 50, drop_last=False))
    batches = [np.bincount(y.numpy(), minlength=3) for (y,) in loader]
    assert len(batches) == 20
    assert all(np.all(np.abs(b - [47, 2.25, 0.75]) < 1) for b in batches)
