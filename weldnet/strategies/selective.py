"""Selective under-sampling (Zhou & Liu 2005, as described in the report's section 6.4.5).

The training set starts as the ``undersample`` strategy's: every non-default
example plus a random share of the default class (class 0) that puts class 0 at
``target_ratio``; the rest of class 0 is set aside. After a first training run, each round

1. brings in set-aside class-0 examples, ``growth`` times the current set's size;
2. classifies the arrivals with the current net and drops those it gets right
   (the "redundant" criterion);
3. if class 0 is still above ``target_ratio``, drops class-0 examples whose nearest
   neighbour in feature space is of another class (the "boundary" criterion),
   nearest to the other class first;
4. if it is still above, drops class-0 examples at random;

and then the net trains on the result. Rounds go on until nothing is set aside.
Dropped examples are gone for good. These functions only choose the rows; the
training schedule (``weldnet.train.schedules``) trains between rounds.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from weldnet.core.class_stats import majority_quota
from weldnet.strategies.sampling import undersampled_rows


def initial_set(labels: np.ndarray, target_ratio: float, draw_rng: np.random.Generator,
                order_rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(training rows, set-aside rows): the ``undersample`` sampler's set, the rest of class 0 set aside.

    ``draw_rng`` must be the generator the sampler draws with
    (``weldnet.strategies.sampling.draw_generator(seed)``), so round 0 trains on exactly the
    ``undersample`` strategy's photos. The set-aside rows come in the random order
    ``order_rng`` gives them, the order in which rounds bring them in.
    """
    labels = np.asarray(labels)
    kept, set_aside = undersampled_rows(labels, target_ratio, draw_rng)
    return np.sort(np.concatenate([kept, np.flatnonzero(labels != 0)])), order_rng.permutation(set_aside)


def boundary_rows(features: np.ndarray, labels: np.ndarray, chunk: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Class-0 rows whose nearest other row (Euclidean) has another label, nearest first, with that distance.

    Returns (positions into ``features``, distances). Ties in distance keep the
    lower position first.
    """
    features = np.asarray(features, dtype=np.float64)
    labels = np.asarray(labels)
    if len(features) < 2:
        return np.zeros(0, dtype=np.int64), np.zeros(0)
    squared = (features ** 2).sum(axis=1)
    nearest = np.empty(len(features), dtype=np.int64)
    nearest_sq = np.empty(len(features))
    for start in range(0, len(features), chunk):          # chunk x n distances at a time: bounded memory
        block = squared[start:start + chunk, None] + squared[None, :] \
            - 2.0 * features[start:start + chunk] @ features.T
        block[np.arange(len(block)), np.arange(start, start + len(block))] = np.inf
        nearest[start:start + chunk] = block.argmin(axis=1)
        nearest_sq[start:start + chunk] = block[np.arange(len(block)), nearest[start:start + chunk]]
    rows = np.flatnonzero((labels == 0) & (labels[nearest] != 0))
    gap = np.sqrt(np.maximum(nearest_sq[rows], 0.0))
    order = np.lexsort((rows, gap))
    return rows[order], gap[order]


@dataclass(frozen=True)
class Round:
    """What one round did: the new training rows and set-aside rows, and how many were dropped by each rule."""

    train: np.ndarray
    pool: np.ndarray
    arrived: int
    dropped_correct: int
    dropped_boundary: int
    dropped_random: int


def selection_round(train: np.ndarray, pool: np.ndarray, labels: np.ndarray, *, growth: float,
                    target_ratio: float, rng: np.random.Generator,
                    classify: Callable[[np.ndarray], np.ndarray],
                    embed: Callable[[np.ndarray], np.ndarray]) -> Round:
    """One round of selective under-sampling on row indices into ``labels``.

    ``classify(rows)`` returns the current net's predicted classes for those rows;
    ``embed(rows)`` their feature vectors. Arrivals are the first rows of ``pool``.
    """
    labels = np.asarray(labels)
    arrived = min(len(pool), max(1, math.ceil(growth * len(train))))
    arrivals, pool = pool[:arrived], pool[arrived:]
    wrong = arrivals[np.asarray(classify(arrivals)) != labels[arrivals]] if arrived else arrivals
    rows = np.concatenate([train, wrong])
    quota = majority_quota(int((labels[rows] != 0).sum()), target_ratio)
    excess = int((labels[rows] == 0).sum()) - quota
    dropped_boundary = dropped_random = 0
    if excess > 0:
        boundary, _ = boundary_rows(embed(rows), labels[rows])
        drop = boundary[:excess]
        dropped_boundary = len(drop)
        rows = np.delete(rows, drop)
        excess -= dropped_boundary
    if excess > 0:
        default = np.flatnonzero(labels[rows] == 0)
        drop = rng.choice(default, size=excess, replace=False)
        dropped_random = len(drop)
        rows = np.delete(rows, drop)
    return Round(train=np.sort(rows), pool=pool, arrived=arrived, dropped_correct=arrived - len(wrong),
                 dropped_boundary=dropped_boundary, dropped_random=dropped_random)
