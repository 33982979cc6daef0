"""Synthetic inspection flags with Table 1 frequencies, and Redbox-style missing labels.

Flag model (per rig). Let ``p_f`` be flag f's Table 1 share on the rig
(:func:`weldnet.core.flags.table1_share`) and ``P`` the share of "Perfect (no labels)"
photos. A photo is a perfect installation with probability ``q``; otherwise the flags
are drawn given "flawed" with probability ``p_f / (1 - q)`` each, so every marginal is
exactly ``p_f``. Flags that cannot be true together form an exclusive group
(:data:`EXCLUSIVE_GROUPS`): one categorical draw picks at most one flag of the group,
with the same probabilities ``p_f / (1 - q)``; every other flag is an independent coin.
Writing ``a_k`` for a group's total share (or a lone flag's share), the flagless share is

    P0(q) = q + (1 - q) * prod_k (1 - a_k / (1 - q)),

which increases with q (its derivative is the chance of two or more flags in a flawed
draw), so ``q`` is found by bisection from ``P0(q) = P``. Flags a rig never recorded
(count None in Table 1) have share 0 and are never drawn there.

Label noise (report section 5.2.5): a share of the *flawed* photos (at least one true
flag) is recorded with no flags at all, as the flagless Redbox photos that should have
carried a flag.

Every draw comes from a per-photo generator seeded with ``(seed, rig, index, stream)``,
so photo i is the same whatever the number of photos or worker processes.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from weldnet.core.flags import FLAGS, PERFECT, RIG_TOTALS, RIGS, table1_share

# Flags that describe one state of one object, so at most one of each group is true:
# the weld clamp is absent, wrong/askew, or cut off by the framing; the scrape zones are
# unscraped or badly scraped; soil and water contamination have one level each.
EXCLUSIVE_GROUPS: tuple[tuple[str, ...], ...] = (
    ("No Clamp Used", "Inadequate Or Incorrect Clamping", "Photo Does Not Show Enough Of Clamps"),
    ("No Visible Evidence Of Scraping Or Peeling", "Unsuitable Scraping Or Peeling"),
    ("Soil Contamination Low Risk", "Soil Contamination Risk", "Soil Contamination High Risk"),
    ("Water Contamination Low Risk", "Water Contamination Risk", "Water Contamination High Risk"),
)

LABEL_STREAM = 0  # per-photo stream for flags and label noise
SCENE_STREAM = 1  # per-photo stream for the rendered photo


@dataclass(frozen=True)
class FlagModel:
    """``groups`` partitions FLAGS; ``probs[k][j]`` = P(flag groups[k][j] | flawed photo)."""

    perfect_rate: float
    groups: tuple[tuple[str, ...], ...]
    probs: tuple[tuple[float, ...], ...]

    @property
    def n_draws(self) -> int:
        """Uniform numbers one photo's flags take: one for "perfect", one per group."""
        return 1 + len(self.groups)


def flag_groups(groups: Sequence[Sequence[str]] = EXCLUSIVE_GROUPS) -> tuple[tuple[str, ...], ...]:
    """The exclusive groups followed by every other flag as a group of its own."""
    grouped = [f for g in groups for f in g]
    unknown = [f for f in grouped if f not in FLAGS]
    if unknown or len(set(grouped)) != len(grouped):
        raise ValueError(f"exclusive groups must name distinct Table 1 flags; bad: {unknown or grouped}")
    return tuple(tuple(g) for g in groups) + tuple((f,) for f in FLAGS if f not in grouped)


def flagless_share(perfect_rate: float, group_shares: Sequence[float]) -> float:
    """P0(q) of the module docstring: share of photos with no flag."""
    flawed = 1.0 - perfect_rate
    none_drawn = float(np.prod([1.0 - a / flawed for a in group_shares])) if flawed > 0 else 0.0
    return perfect_rate + flawed * none_drawn


def solve_perfect_rate(group_shares: Sequence[float], perfect_share: float) -> float:
    """The q with flagless_share(q) == perfect_share, by bisection on [0, 1 - max share]."""
    high = 1.0 - max(group_shares, default=0.0)
    if max(group_shares, default=0.0) > 1.0:
        raise ValueError(f"a flag group's share exceeds 1: {max(group_shares):.3f}")
    low_share, high_share = flagless_share(0.0, group_shares), flagless_share(high, group_shares)
    if not low_share <= perfect_share <= high_share:
        raise ValueError(f"no perfect-installation rate gives a flagless share of {perfect_share:.4f}; "
                         f"reachable: [{low_share:.4f}, {high_share:.4f}]")
    low = 0.0
    for _ in range(200):
        mid = 0.5 * (low + high)
        if flagless_share(mid, group_shares) < perfect_share:
            low = mid
        else:
            high = mid
    return 0.5 * (low + high)


def flag_model(shares: Mapping[str, float], perfect_share: float,
               groups: Sequence[Sequence[str]] = EXCLUSIVE_GROUPS) -> FlagModel:
    """The flag model whose marginals are ``shares`` and whose flagless share is ``perfect_share``."""
    parts = flag_groups(groups)
    group_shares = [sum(shares.get(f, 0.0) for f in g) for g in parts]
    q = solve_perfect_rate(group_shares, perfect_share)
    probs = tuple(tuple(shares.get(f, 0.0) / (1.0 - q) for f in g) for g in parts)
    return FlagModel(perfect_rate=q, groups=parts, probs=probs)


def rig_flag_model(rig: str) -> FlagModel:
    """The flag model of a rig, from Table 1 (flag shares and the "Perfect (no labels)" share)."""
    return flag_model(table1_share(rig), PERFECT[rig] / RIG_TOTALS[rig])


def flags_from_uniforms(model: FlagModel, uniforms: np.ndarray) -> np.ndarray:
    """Bool matrix (n, len(FLAGS)) of true flags from uniforms of shape (n, model.n_draws).

    Column 0 decides "perfect" (u < q); column 1 + k picks flag j of group k when u falls
    in [sum(probs[k][:j]), sum(probs[k][:j + 1])).
    """
    uniforms = np.asarray(uniforms, dtype=float)
    if uniforms.ndim != 2 or uniforms.shape[1] != model.n_draws:
        raise ValueError(f"uniforms must have shape (n, {model.n_draws}), got {uniforms.shape}")
    flawed = uniforms[:, 0] >= model.perfect_rate
    out = np.zeros((len(uniforms), len(FLAGS)), dtype=bool)
    column = {f: i for i, f in enumerate(FLAGS)}
    for k, (names, probs) in enumerate(zip(model.groups, model.probs)):
        pick = np.searchsorted(np.cumsum(probs), uniforms[:, 1 + k], side="right")
        for j, name in enumerate(names):
            out[:, column[name]] = flawed & (pick == j)
    return out


def missing_flags(true_flags: np.ndarray, uniforms: np.ndarray, share: float) -> np.ndarray:
    """Which photos are recorded with no flags: flawed photos whose uniform falls below ``share``."""
    return np.asarray(true_flags, dtype=bool).any(axis=1) & (np.asarray(uniforms) < share)


def photo_rng(seed: int, rig: str, index: int, stream: int) -> np.random.Generator:
    """The generator of one photo's stream (LABEL_STREAM or SCENE_STREAM)."""
    return np.random.default_rng([seed, RIGS.index(rig), index, stream])


def sample_labels(model: FlagModel, seed: int, rig: str, n: int, label_noise: float
                  ) -> tuple[np.ndarray, np.ndarray]:
    """True flags (n, len(FLAGS)) and the "recorded with no flags" mask (n,) of photos 0..n-1."""
    draws = np.array([photo_rng(seed, rig, i, LABEL_STREAM).random(model.n_draws + 1) for i in range(n)])
    draws = draws.reshape(n, model.n_draws + 1)
    true_flags = flags_from_uniforms(model, draws[:, :-1])
    return true_flags, missing_flags(true_flags, draws[:, -1], label_noise)


def flag_names(row: np.ndarray) -> tuple[str, ...]:
    """The flags set in one bool row, in Table 1 order."""
    return tuple(f for f, on in zip(FLAGS, row) if on)
