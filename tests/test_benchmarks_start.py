"""Every benchmark starts: run as a script from outside the repository, ``--help`` exits 0."""
import subprocess
import sys

import pytest
from conftest import ROOT

BENCHMARKS = sorted(p.name for p in (ROOT / "benchmarks").glob("*.py"))


def test_the_benchmarks_are_found():
    assert {"preprocess_speed.py", "train_speed.py", "scale.py", "audit_accuracy.py"} <= set(BENCHMARKS)


@pytest.mark.parametrize("name", BENCHMARKS)
def test_each_benchmark_starts(name, tmp_path):
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / name), "--help"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "usage" in done.stdout.lower()
