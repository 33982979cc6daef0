"""Progress of long stages: a tqdm bar on a terminal, a plain line every few seconds anywhere else.

In CI, in a log file or under a captured ``dvc exp run`` there is no terminal, and
a bar's carriage returns would fill the log; there each bar prints one line every
``every`` seconds (and a last one when done) with the count, the total and the rate.
Set ``WELDNET_PROGRESS=lines`` or ``=bar`` to force either, ``=off`` to silence both.

    for photo in progress(photos, desc="ingest", unit="photo"):
        ...

    with Progress(total=steps, desc="train baseline seed 0", unit="step") as bar:
        bar.update(1)
"""
from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import TextIO, TypeVar

T = TypeVar("T")


def _mode(stream: TextIO) -> str:
    forced = os.environ.get("WELDNET_PROGRESS", "").strip().lower()
    if forced in ("bar", "lines", "off"):
        return forced
    interactive = hasattr(stream, "isatty") and stream.isatty()
    return "bar" if interactive and not os.environ.get("CI") else "lines"


class Progress:
    """A counter shown as a bar on a terminal, or as periodic lines; use as a context manager."""

    def __init__(self, total: int | None, desc: str, unit: str = "item", every: float = 10.0,
                 stream: TextIO | None = None):
        self.total, self.desc, self.unit, self.every = total, desc, unit, every
        self.stream = stream or sys.stderr
        self.mode = _mode(self.stream)
        self.count = 0
        self.started = self.last = time.monotonic()
        self._bar = None
        if self.mode == "bar":
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=desc, unit=unit, file=self.stream, dynamic_ncols=True, leave=False)

    def update(self, n: int = 1) -> None:
        self.count += n
        if self._bar is not None:
            self._bar.update(n)
        elif self.mode == "lines" and time.monotonic() - self.last >= self.every:
            self._line()

    def rate(self) -> float:
        """Items per second so far."""
        return self.count / max(time.monotonic() - self.started, 1e-9)

    def _line(self, done: bool = False) -> None:
        self.last = time.monotonic()
        of = f"/{self.total}" if self.total is not None else ""
        elapsed = self.last - self.started
        end = f" in {elapsed:.0f} s" if done else ""
        print(f"{self.desc}: {self.count}{of} {self.unit}s, {self.rate():.1f} {self.unit}s/s{end}",
              file=self.stream, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
            print(f"{self.desc}: {self.count} {self.unit}s, {self.rate():.1f} {self.unit}s/s in "
                  f"{time.monotonic() - self.started:.0f} s", file=self.stream, flush=True)
        elif self.mode == "lines":
            self._line(done=True)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def progress(items: Iterable[T], *, desc: str, unit: str = "item", total: int | None = None,
             every: float = 10.0, stream: TextIO | None = None) -> Iterator[T]:
    """Yield ``items``, counting them with a :class:`Progress` (total: ``len(items)`` when it has one)."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with Progress(total, desc, unit, every, stream) as bar:
        for item in items:
            yield item
            bar.update(1)
