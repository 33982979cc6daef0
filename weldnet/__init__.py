"""Library for the weld-photo class-imbalance pipeline: pure functions, no file paths.

Importing it first sets up torch's CPU threads before torch loads (a variable the
user set always wins):

* ``OMP_WAIT_POLICY=PASSIVE``: OpenMP's idle threads sleep instead of spinning. With
  the default spinning, two torch processes on a small machine wait at each other's
  barriers and run at a fifth of their speed (benchmarks/contention.py). It changes
  no numbers.
* ``OMP_NUM_THREADS``: the CPUs this process may use (affinity and cgroup quota,
  or ``WELDNET_THREADS``; weldnet.core.threads), where torch would count the host's.
"""
import os

from weldnet.core.threads import thread_budget

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
try:
    os.environ.setdefault("OMP_NUM_THREADS", str(thread_budget()))
except ValueError:          # a bad WELDNET_THREADS: run_stage reports it in one line
    pass
