"""The worker pool: results in input order for any worker count; a killed worker ends the map in one line."""
from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from weldnet.core.pool import WorkerKilled, killed_message, oom_kills, ordered_map


def _square(x: int) -> int:
    return x * x


def _die_on_three(x: int) -> int:
    if x == 3:
        os.kill(os.getpid(), signal.SIGKILL)
    return x


def _fail_on_two(x: int) -> int:
    if x == 2:
        raise ValueError("bad item 2")
    return x


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_results_come_back_in_input_order(workers):
    assert list(ordered_map(_square, list(range(50)), workers, chunksize=3)) == [x * x for x in range(50)]


def test_a_closure_runs_in_forked_workers_without_being_pickled():
    offset = 1000
    assert list(ordered_map(lambda x: x + offset, list(range(10)), 2, chunksize=1)) == [x + 1000 for x in range(10)]


def test_a_killed_worker_ends_the_map_with_one_line_instead_of_hanging():
    with pytest.raises(WorkerKilled) as err:
        list(ordered_map(_die_on_three, list(range(8)), 2, chunksize=1))
    message = str(err.value)
    assert "_die_on_three" in message and "killed" in message and "\n" not in message


def test_an_error_in_a_worker_reaches_the_caller_as_itself():
    with pytest.raises(ValueError, match="bad item 2"):
        list(ordered_map(_fail_on_two, list(range(6)), 2, chunksize=1))


def test_the_message_names_the_out_of_memory_killer_when_the_cgroup_counted_one(tmp_path: Path):
    (tmp_path / "memory.events").write_text("low 0\nhigh 0\nmax 3\noom 1\noom_kill 4\n")
    assert oom_kills(tmp_path) == 4
    assert oom_kills(tmp_path / "absent") is None
    assert "out-of-memory killer (memory.events oom_kill 3 -> 4)" in killed_message("decode", 2, 3, 4)
    assert "by a signal" in killed_message("decode", 2, 3, 3)
    assert "by a signal" in killed_message("decode", 2, None, None)


def test_workers_die_with_a_parent_killed_by_sigkill(tmp_path: Path):
    """kill -9 of a stage leaves no worker behind to go on writing: the kernel ends them with it."""
    import subprocess
    import sys
    import time

    pids = tmp_path / "pids"
    script = f"""
import os, time
from pathlib import Path
from weldnet.core.pool import ordered_map

def record(x):
    with open({str(pids)!r}, "a") as f:
        f.write(f"{{os.getpid()}}\\n")
    time.sleep(60)
    return x

list(ordered_map(record, [0, 1], 2, chunksize=1))
"""
    proc = subprocess.Popen([sys.executable, "-c", script])
    deadline = time.time() + 60
    while (not pids.exists() or len(pids.read_text().split()) < 2) and time.time() < deadline:
        time.sleep(0.05)
    workers = [int(p) for p in pids.read_text().split()]
    assert len(workers) == 2
    proc.kill()
    proc.wait()

    def alive(pid: int) -> bool:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().split(") ")[-1].split()[0]
        except OSError:
            return False
        return state != "Z"

    deadline = time.time() + 10
    while any(alive(pid) for pid in workers) and time.time() < deadline:
        time.sleep(0.05)
    assert not any(alive(pid) for pid in workers)
