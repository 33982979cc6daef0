"""The one worker-pool helper: every stage that spreads work over processes goes through ``ordered_map``.

Every ``workers`` param means the same thing: the number of worker processes, and
0 for one per CPU (:func:`worker_count`). With one worker the work runs in this
process, which is also what a test or a debugger wants. Results come back in the
order of the inputs whatever the number of workers, so outputs never depend on it.

A worker killed from outside (SIGKILL, the kernel's out-of-memory killer) ends the
map with a :class:`WorkerKilled` error in one line, naming what ran out where the
cgroup says so, instead of waiting for a result that never comes.
"""
from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from functools import partial
from multiprocessing import get_context
from pathlib import Path
from typing import TypeVar

from weldnet.core.config import StageError
from weldnet.core.threads import available_cpus

T = TypeVar("T")
R = TypeVar("R")


class WorkerKilled(StageError):
    """A worker process died without a Python error: killed by a signal, most often for memory."""


def oom_kills(cgroup: Path = Path("/sys/fs/cgroup")) -> int | None:
    """The cgroup's count of processes the out-of-memory killer ended (v2 ``memory.events``), or None."""
    try:
        for line in (cgroup / "memory.events").read_text().splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill":
                return int(value)
    except (OSError, ValueError):
        pass
    return None


def killed_message(fn_name: str, workers: int, before: int | None, after: int | None) -> str:
    """One line for a killed worker: out of memory when the cgroup's oom_kill count rose, else a signal."""
    what = f"a worker process of {fn_name} (one of {workers}) was killed"
    if before is not None and after is not None and after > before:
        return (f"{what} by the out-of-memory killer (memory.events oom_kill {before} -> {after}): "
                "free memory, run fewer stages at once (dvc queue --jobs) or lower this stage's workers")
    return (f"{what} by a signal (SIGKILL or the out-of-memory killer; see dmesg): "
            "rerun the stage, or lower its workers if memory is short")


def die_with_parent() -> None:
    """Ask the kernel to kill this process when its parent dies (even by SIGKILL), so no worker outlives a kill."""
    if sys.platform != "linux":
        return
    import ctypes
    import signal

    pr_set_pdeathsig = 1
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
    except OSError:
        pass


def _start_worker() -> None:
    """A worker dies with its stage, and reports progress in lines: bars from several processes would garble."""
    die_with_parent()
    os.environ.setdefault("WELDNET_PROGRESS", "lines")
    for stream in (sys.stdout, sys.stderr):      # whole lines, as they come, whatever the stream is
        reconfigure = getattr(stream, "reconfigure", None)
        if callable(reconfigure):
            reconfigure(line_buffering=True)


# the functions of the live maps, by token: forked workers inherit them, so ``fn`` is never pickled
_FUNCTIONS: dict[int, Callable] = {}


def _call(token: int, item: object) -> object:
    return _FUNCTIONS[token](item)


def worker_count(workers: int) -> int:
    """``workers`` processes, or one per CPU for 0."""
    if workers < 0:
        raise ValueError(f"workers = {workers} must be >= 1, or 0 for one per CPU")
    return workers or available_cpus()


def ordered_map(fn: Callable[[T], R], items: Sequence[T], workers: int, *, chunksize: int | None = None,
                max_chunk: int = 64) -> Iterator[R]:
    """``map(fn, items)`` over ``worker_count(workers)`` forked processes, lazily and in input order.

    Workers are forked, so they inherit ``fn`` (a closure is fine: it is not pickled)
    and the state the caller set up just before (large arrays are shared copy-on-write
    instead of pickled); items and results are pickled. Workers die with this process,
    even when it is killed with SIGKILL. ``chunksize``
    defaults to about eight chunks per worker, at most ``max_chunk`` items each.
    """
    n = worker_count(workers)
    if n <= 1 or len(items) < 2:
        yield from map(fn, items)
        return
    n = min(n, len(items))
    if chunksize is None:
        chunksize = max(1, min(max_chunk, len(items) // (n * 8)))
    before = oom_kills()
    sys.stdout.flush()                      # a forked worker would print what is still buffered a second time
    sys.stderr.flush()
    token = id(fn)
    _FUNCTIONS[token] = fn
    pool = ProcessPoolExecutor(n, mp_context=get_context("fork"), initializer=_start_worker)
    try:
        yield from pool.map(partial(_call, token), items, chunksize=chunksize)
    except BrokenProcessPool:
        name = getattr(fn, "__qualname__", None) or type(fn).__name__
        raise WorkerKilled(killed_message(name, n, before, oom_kills())) from None
    finally:                                # a consumer that stops early does not wait for the rest
        pool.shutdown(wait=True, cancel_futures=True)
        _FUNCTIONS.pop(token, None)
