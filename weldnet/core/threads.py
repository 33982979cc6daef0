"""How many CPU threads a stage's torch may use: the CPUs this process may actually run on.

``os.cpu_count()`` counts the machine; a container or ``taskset`` may grant fewer.
:func:`available_cpus` reads the affinity mask and the cgroup v2/v1 CPU quota.
``WELDNET_THREADS`` overrides it (for example ``WELDNET_THREADS=1`` for each of two
``dvc queue start --jobs 2`` workers on two cores). Floating-point sums on the CPU
are reduced in an order that depends on the thread count, so a run's numbers are
reproducible for a given count, not across counts.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

ENV = "WELDNET_THREADS"


def _cgroup_quota(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]       # cgroup v2: "max 100000" or "200000 100000"
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())      # cgroup v1
        period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return None if quota <= 0 else quota / period
    except (OSError, ValueError):
        return None


def available_cpus(cgroup: Path = Path("/sys/fs/cgroup")) -> int:
    """CPUs this process may use: its affinity mask, capped by the cgroup CPU quota (rounded up), at least 1."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:                                              # not Linux
        cpus = os.cpu_count() or 1
    quota = _cgroup_quota(cgroup)
    if quota is not None:
        cpus = min(cpus, math.ceil(quota))
    return max(1, cpus)


def thread_budget(environ: dict[str, str] | None = None) -> int:
    """``WELDNET_THREADS`` when set (a positive integer), else :func:`available_cpus`."""
    value = (os.environ if environ is None else environ).get(ENV, "").strip()
    if not value:
        return available_cpus()
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"{ENV}={value!r}: set it to a positive whole number of threads, or unset it")
    return int(value)


def set_threads(environ: dict[str, str] | None = None) -> int:
    """Size torch's intra-op pool to the thread budget (inter-op to 1); returns the count."""
    import torch

    n = thread_budget(environ)
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n
