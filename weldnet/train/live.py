"""The training loop's logger: one folder per run, in dvclive's format, which ``dvc plots`` and ``dvc metrics`` read.

A run's folder holds ``plots/metrics/<name>.tsv`` per logged name (columns
``step`` and the name's last part, one row per call) and ``metrics.json`` (every
name's latest value, nested by its ``/`` parts, and the last step), byte for byte
what ``dvclive.Live(dir, save_dvc_exp=False, dvcyaml=None, report=None)`` writes
(tests/test_training.py compares them). Written here because that is all these
runs use of dvclive: its start-up (importing dvc, opening the repository, looking
for Studio) cost about a second of every train stage, and it reopened a file for
every value logged.
"""
from __future__ import annotations

import csv
import json
import math
import os
import time
from pathlib import Path

from weldnet.core.paths import remove_output

FLUSH_EVERY_S = 5.0     # rows are appended to their files at most this long after they are logged, and at close


class DvcLiveLog:
    """Adapter from the training loop's (step, name, value) calls to a dvclive-format folder ``directory``.

    The folder is emptied first (through weldnet.core.paths.remove_output): a run's log holds that run only.
    """

    def __init__(self, directory: Path):
        remove_output(directory)
        self.directory = Path(directory)
        self.directory.mkdir(parents=True)
        self.summary: dict = {}
        self.step: int | None = None
        self.rows: dict[str, list[tuple[int, float | int | str]]] = {}
        self.written: set[str] = set()
        self.flushed_at = time.monotonic()

    def __call__(self, step: int, name: str, value: float) -> None:
        if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
            value = str(value)                          # as dvclive records them
        self.step = step
        self.rows.setdefault(name, []).append((step, value))
        node = self.summary
        *parents, last = os.path.normpath(name).split(os.path.sep)
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value
        if time.monotonic() - self.flushed_at >= FLUSH_EVERY_S:
            self.flush()

    def flush(self) -> None:
        """Append the rows logged since the last flush to their ``plots/metrics/<name>.tsv``."""
        for name, rows in self.rows.items():
            if not rows:
                continue
            path = self.directory / "plots" / "metrics" / f"{name}.tsv"
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "a", encoding="utf-8", newline="") as fh:
                writer = csv.writer(fh, delimiter="\t", lineterminator=os.linesep)
                if name not in self.written:
                    writer.writerow(["step", os.path.basename(name)])
                    self.written.add(name)
                writer.writerows(rows)
            rows.clear()
        self.flushed_at = time.monotonic()

    def close(self) -> None:
        """Write the remaining rows and ``metrics.json``."""
        self.flush()
        if self.step is not None:
            self.summary["step"] = self.step
        with open(self.directory / "metrics.json", "w", encoding="utf-8") as fh:
            json.dump(self.summary, fh, indent=4)
            fh.write("\n")
