"""Thread budgets: what a stage's torch may use, from the CPUs it was granted or the user's setting."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from weldnet.core.threads import available_cpus, thread_budget


def test_cgroup_v2_quota_caps_the_affinity(tmp_path):
    (tmp_path / "cpu.max").write_text("150000 100000\n")        # 1.5 CPUs -> 2 threads at most
    assert available_cpus(tmp_path) == min(len(os.sched_getaffinity(0)), 2)
    (tmp_path / "cpu.max").write_text("50000 100000\n")         # half a CPU still gets one thread
    assert available_cpus(tmp_path) == 1
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert available_cpus(tmp_path) == len(os.sched_getaffinity(0))


def test_cgroup_v1_quota(tmp_path):
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("100000\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert available_cpus(tmp_path) == 1


def test_the_user_setting_wins_and_a_bad_one_names_the_fix():
    assert thread_budget({"WELDNET_THREADS": "3"}) == 3
    assert thread_budget({}) == available_cpus()
    for bad in ("0", "-1", "two"):
        with pytest.raises(ValueError, match="WELDNET_THREADS=.*positive whole number"):
            thread_budget({"WELDNET_THREADS": bad})


def _torch_env(extra: dict[str, str]) -> list[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS", "WELDNET_THREADS")}
    code = "import weldnet, os, torch; print(os.environ['OMP_WAIT_POLICY'], torch.get_num_threads())"
    out = subprocess.run([sys.executable, "-c", code], env={**env, **extra}, capture_output=True, text=True,
                         check=True)
    return out.stdout.split()


def test_importing_weldnet_makes_idle_threads_sleep_and_sizes_torch():
    assert _torch_env({}) == ["PASSIVE", str(available_cpus())]
    assert _torch_env({"WELDNET_THREADS": "1"}) == ["PASSIVE", "1"]
    assert _torch_env({"OMP_WAIT_POLICY": "ACTIVE", "OMP_NUM_THREADS": "1"}) == ["ACTIVE", "1"]


def test_a_bad_thread_setting_ends_a_stage_in_one_line(tmp_path):
    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "WELDNET_THREADS": "lots", "PYTHONPATH": root}
    out = subprocess.run([sys.executable, "-m", "weldnet.core.params"], env=env, capture_output=True, text=True,
                         cwd=tmp_path)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == ["error: WELDNET_THREADS='lots': set it to a positive whole number "
                                               "of threads, or unset it"]
