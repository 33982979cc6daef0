import numpy as np
import pytest

from weldnet.core.class_stats import majority_quota
from weldnet.core.params import SamplingParams
from weldnet.strategies.sampling import EpochSampler, draw_generator
from weldnet.strategies.selective import boundary_rows, initial_set, selection_round


def test_initial_set_keeps_every_minority_row_and_the_class0_quota():
    labels = np.array([0] * 100 + [1] * 6 + [2] * 4)
    train, pool = initial_set(labels, 0.8, np.random.default_rng(0), np.random.default_rng(1))
    assert majority_quota(10, 0.8) == 40
    assert np.bincount(labels[train]).tolist() == [40, 6, 4]
    assert len(pool) == 60 and set(labels[pool]) == {0}
    assert not set(train) & set(pool) and len(set(train) | set(pool)) == len(labels)
    again, _ = initial_set(labels, 0.8, np.random.default_rng(0), np.random.default_rng(1))
    assert np.array_equal(train, again)


def test_round_zero_trains_on_exactly_the_undersample_strategys_photos():
    labels = np.random.default_rng(5).permutation(np.array([0] * 300 + [1] * 20))
    sampler = EpochSampler(labels, "undersample", 16, seed=3, params=SamplingParams(target_ratio=0.88))
    train, _ = initial_set(labels, 0.88, draw_generator(3), np.random.default_rng(0))
    for epoch in range(3):
        sampler.set_epoch(epoch)
        assert sorted(iter(sampler)) == train.tolist()


def test_boundary_rows_are_class0_rows_whose_nearest_neighbour_is_another_class_nearest_first():
    features = np.array([[0.0, 0.0], [0.1, 0.0],      # 0: two class-0 rows next to each other
                         [5.0, 0.0], [5.3, 0.0],      # 2: class 0 at 0.3 from the class-1 row 3
                         [9.0, 0.0], [9.1, 0.0]])     # 4: class 0 at 0.1 from the class-1 row 5
    labels = np.array([0, 0, 0, 1, 0, 1])
    rows, gaps = boundary_rows(features, labels)
    assert rows.tolist() == [4, 2]
    assert gaps == pytest.approx([0.1, 0.3])
    # a class-1 row next to a class-0 row is never a candidate: only class 0 is under-sampled
    assert 3 not in rows and 5 not in rows


def toy_space():
    """Class 0 on a line x in [0, 40), class 1 at x = 100..103; four class-0 rows sit on the class-1 cluster."""
    class0 = [[float(i), 0.0] for i in range(40)]
    strays = [[100.05, 0.0], [101.05, 0.0], [102.05, 0.0], [103.05, 0.0]]
    class1 = [[100.0 + i, 0.0] for i in range(4)]
    features = np.array(class0 + strays + class1)
    labels = np.array([0] * 44 + [1] * 4)
    return features, labels


def test_a_round_drops_correct_arrivals_then_boundary_cases_then_random_ones():
    features, labels = toy_space()
    train = np.array([0, 1, 2, 44, 45, 46, 47])          # 3 class-0 + 4 class-1
    pool = np.array([40, 41, 42, 43, 10, 11, 12, 13, 14, 15])
    # the net gets every arrival on the line right and misses the strays in the class-1 cluster
    classify = lambda rows: np.where(features[rows, 0] > 50, 1, 0)
    embed = lambda rows: features[rows]
    done = selection_round(train, pool, labels, growth=1.0, target_ratio=0.5, rng=np.random.default_rng(0),
                           classify=classify, embed=embed)
    assert done.arrived == 7                               # growth 1.0 of a set of 7
    assert done.pool.tolist() == [13, 14, 15]             # the rest stays set aside, in order
    assert done.dropped_correct == 3                      # 10, 11, 12: on the line, predicted 0
    # 3 + 4 strays = 7 class-0 rows beside 4 class-1 rows at 50%: 3 too many; strays are boundary cases
    assert done.dropped_boundary == 3 and done.dropped_random == 0
    kept = set(done.train.tolist())
    assert {44, 45, 46, 47} <= kept and {0, 1, 2} <= kept
    assert len(kept & {40, 41, 42, 43}) == 1
    assert np.bincount(labels[done.train]).tolist() == [4, 4]


def test_random_drops_fill_in_when_there_are_too_few_boundary_cases():
    features, labels = toy_space()
    train = np.array([0, 1, 2, 3, 4, 44, 45, 46, 47])
    pool = np.arange(5, 40)
    done = selection_round(train, pool, labels, growth=1.0, target_ratio=0.5, rng=np.random.default_rng(0),
                           classify=lambda rows: np.ones(len(rows), dtype=int),   # every arrival is a mistake
                           embed=lambda rows: features[rows])
    assert done.arrived == 9 and done.dropped_correct == 0 and done.dropped_boundary == 0
    assert done.dropped_random == 14 - 4
    assert np.bincount(labels[done.train]).tolist() == [4, 4]
    assert len(set(done.train.tolist())) == len(done.train)


def test_a_balanced_set_after_the_redundant_rule_loses_nothing_more():
    features, labels = toy_space()
    done = selection_round(np.array([0, 44, 45, 46, 47]), np.array([5, 6, 7]), labels, growth=1.0,
                           target_ratio=0.5, rng=np.random.default_rng(0),
                           classify=lambda rows: np.zeros(len(rows), dtype=int), embed=lambda rows: features[rows])
    assert done.dropped_correct == 3 and done.dropped_boundary == done.dropped_random == 0
    assert done.train.tolist() == [0, 44, 45, 46, 47] and len(done.pool) == 0


def test_boundary_rows_in_chunks_match_the_whole_distance_matrix():
    rng = np.random.default_rng(3)
    features = rng.normal(size=(300, 5))
    labels = (rng.random(300) < 0.3).astype(int)
    whole = boundary_rows(features, labels, chunk=1000)
    chunked = boundary_rows(features, labels, chunk=7)
    assert len(whole[0]) > 0
    np.testing.assert_array_equal(whole[0], chunked[0])
    np.testing.assert_allclose(whole[1], chunked[1])
    # against a direct nearest-neighbour search
    distance = np.linalg.norm(features[:, None] - features[None], axis=2)
    np.fill_diagonal(distance, np.inf)
    expected = {i for i in range(300) if labels[i] == 0 and labels[distance[i].argmin()] != 0}
    assert set(whole[0].tolist()) == expected
