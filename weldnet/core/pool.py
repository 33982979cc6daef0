"""The one worker-pool helper: every stage that spreads work over processes goes through ``ordered_map``.

Every ``workers`` param means the same thing: the number of worker processes, and
0 for one per CPU (:func:`worker_count`). With one worker the work runs in this
process, which is also what a test or a debugger wants. Results come back in the
order of the inputs whatever the number of workers, so outputs never depend on it.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from multiprocessing import get_context
from typing import TypeVar

from weldnet.core.threads import available_cpus

T = TypeVar("T")
R = TypeVar("R")


def worker_count(workers: int) -> int:
    """``workers`` processes, or one per CPU for 0."""
    if workers < 0:
        raise ValueError(f"workers = {workers} must be >= 1, or 0 for one per CPU")
    return workers or available_cpus()


def ordered_map(fn: Callable[[T], R], items: Sequence[T], workers: int, *, chunksize: int | None = None,
                max_chunk: int = 64) -> Iterator[R]:
    """``map(fn, items)`` over ``worker_count(workers)`` forked processes, lazily and in input order.

    Workers are forked, so they inherit module-level state the caller set up just
    before (large arrays are shared copy-on-write instead of pickled). ``chunksize``
    defaults to about eight chunks per worker, at most ``max_chunk`` items each.
    """
    n = worker_count(workers)
    if n <= 1 or len(items) < 2:
        yield from map(fn, items)
        return
    n = min(n, len(items))
    if chunksize is None:
        chunksize = max(1, min(max_chunk, len(items) // (n * 8)))
    with get_context("fork").Pool(n) as pool:
        yield from pool.imap(fn, items, chunksize=chunksize)
