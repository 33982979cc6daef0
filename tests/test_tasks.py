import numpy as np
import pandas as pd
import pytest

from weldnet.core.config import ParamError, build
from weldnet.core.flags import FLAGS
from weldnet.core.params import SPLITS, ImbalanceParams, TaskSpec
from weldnet.photos.tasks import (
    REMOVED,
    assign_classes,
    check_every_class_present,
    class_counts,
    impose_imbalance,
    split_table,
    stratified_split,
)


def flag_table(rows: list[list[str]]) -> pd.DataFrame:
    return pd.DataFrame([[int(f in row) for f in FLAGS] for row in rows], columns=list(FLAGS))


THREE_WAY = TaskSpec(default="clamp", classes={"no_clamp": ["no clamp used"],
                                               "not_enough": ["Photo Does Not Show Enough Of Clamps"]})


def test_classes_follow_flags_with_the_first_listed_class_winning():
    table = flag_table([[], ["No Clamp Used"], ["Photo Does Not Show Enough Of Clamps"],
                        ["No Clamp Used", "Photo Does Not Show Enough Of Clamps"], ["No Ground Sheet"]])
    assert assign_classes(table, THREE_WAY).tolist() == [0, 1, 2, 1, 0]
    assert THREE_WAY.class_names == ["clamp", "no_clamp", "not_enough"]


def test_task_with_unknown_flag_is_rejected_with_the_name():
    with pytest.raises(ParamError, match="unknown flag 'No Clamps'"):
        build(TaskSpec, {"default": "ok", "classes": {"bad": ["No Clamps"]}}, "tasks.t")


def test_task_with_unknown_rig_or_no_class_is_rejected():
    with pytest.raises(ParamError, match="unknown rig 'greenbox'"):
        build(TaskSpec, {"default": "ok", "classes": {"x": ["Other"]}, "rigs": ["greenbox"]}, "tasks.t")
    with pytest.raises(ParamError, match="classes is empty"):
        build(TaskSpec, {"default": "ok", "classes": {}}, "tasks.t")


def test_stratified_split_keeps_each_class_share_in_every_split():
    labels = np.array([0] * 800 + [1] * 150 + [2] * 50)
    split = stratified_split(labels, [0.6, 0.2, 0.2], np.random.default_rng(1))
    for name, share in zip(SPLITS, [0.6, 0.2, 0.2]):
        counts = np.bincount(labels[split == name], minlength=3)
        assert counts.tolist() == [round(800 * share), round(150 * share), round(50 * share)]


def test_stratified_split_is_seeded():
    labels = np.array([0] * 50 + [1] * 10)
    a = stratified_split(labels, [0.6, 0.2, 0.2], np.random.default_rng(3))
    b = stratified_split(labels, [0.6, 0.2, 0.2], np.random.default_rng(3))
    c = stratified_split(labels, [0.6, 0.2, 0.2], np.random.default_rng(4))
    assert (a == b).all() and not (a == c).all()


def test_imbalance_is_imposed_on_training_only_by_removing_minority_cases():
    labels = np.array([0] * 880 + [1] * 120)
    split = stratified_split(labels, [0.6, 0.2, 0.2], np.random.default_rng(0))
    imposed = impose_imbalance(labels, split, 0.98, np.random.default_rng(0))
    train = labels[imposed == "train"]
    assert np.sum(train == 0) == 528  # every default-class training case is kept
    assert np.sum(train == 1) == round(528 * 0.02 / 0.98)  # 11 minority cases stay
    assert set(np.flatnonzero(imposed == REMOVED)) <= set(np.flatnonzero((split == "train") & (labels == 1)))
    for name in ("val", "test"):
        assert (imposed == name).tolist() == (split == name).tolist()


def test_imbalance_shares_removals_between_minority_classes():
    labels = np.array([0] * 900 + [1] * 60 + [2] * 40)
    split = np.array(["train"] * len(labels), dtype=object)
    imposed = impose_imbalance(labels, split, 0.95, np.random.default_rng(0))
    kept = np.bincount(labels[imposed == "train"], minlength=3)
    assert kept.tolist() == [900, 28, 19]  # 47 = round(900 * 0.05 / 0.95), split 60:40


def test_no_imbalance_when_the_data_is_already_more_imbalanced_or_ratio_is_null():
    labels = np.array([0] * 99 + [1])
    split = np.array(["train"] * 100, dtype=object)
    assert (impose_imbalance(labels, split, 0.9, np.random.default_rng(0)) == "train").all()
    assert (impose_imbalance(labels, split, None, np.random.default_rng(0)) == "train").all()


def test_a_class_emptied_by_imbalance_is_a_param_error():
    flags = [["No Clamp Used"]] * 5 + [[]] * 95
    manifest = flag_table(flags).assign(image=[f"i{i}.jpg" for i in range(100)], rig="bluebox")
    task = TaskSpec(default="clamp", classes={"no_clamp": ["No Clamp Used"]})
    table = split_table(manifest, task, ImbalanceParams(ratio=0.995))
    with pytest.raises(ParamError, match="class 'no_clamp' has no train case.*imbalance.ratio"):
        check_every_class_present(class_counts(table, task.class_names), "t", 0.995)


def test_imbalance_params_are_validated():
    with pytest.raises(ParamError, match="imbalance.ratio = 1.5 is out of range"):
        build(ImbalanceParams, {"ratio": 1.5}, "imbalance")
    with pytest.raises(ParamError, match="sum to 1"):
        build(ImbalanceParams, {"split": {"train": 0.5, "val": 0.2, "test": 0.2}}, "imbalance")


from hypothesis import given, settings
from hypothesis import strategies as st


@settings(max_examples=60, deadline=None)
@given(rows=st.lists(st.sets(st.sampled_from(FLAGS), max_size=4), min_size=1, max_size=40))
def test_every_photo_gets_exactly_the_first_matching_class(rows):
    table = flag_table([sorted(r) for r in rows])
    labels = assign_classes(table, THREE_WAY)
    for flags, label in zip(rows, labels):
        if "No Clamp Used" in flags:
            assert label == 1
        elif "Photo Does Not Show Enough Of Clamps" in flags:
            assert label == 2
        else:
            assert label == 0


@settings(max_examples=60, deadline=None)
@given(counts=st.lists(st.integers(0, 60), min_size=2, max_size=4).filter(lambda c: c[0] > 0),
       ratio=st.floats(0.5, 0.99), seed=st.integers(0, 10))
def test_imposed_imbalance_reaches_the_ratio_and_only_removes_minority_training_cases(counts, ratio, seed):
    labels = np.repeat(np.arange(len(counts)), counts)
    split = stratified_split(labels, [0.6, 0.2, 0.2], np.random.default_rng(seed))
    imposed = impose_imbalance(labels, split, ratio, np.random.default_rng(seed))
    removed = imposed == REMOVED
    assert not np.any(removed & ((split != "train") | (labels == 0)))
    train = labels[imposed == "train"]
    n_default, n_minority = np.sum(train == 0), np.sum(train != 0)
    before = np.sum(labels[split == "train"] != 0)
    assert n_minority == min(before, round(n_default * (1 - ratio) / ratio))
