"""Per-stage wall time, CPU time and peak memory of a `dvc repro` (or any command that runs stages).

    python benchmarks/stage_times.py --log times.jsonl -- dvc repro
    python benchmarks/stage_times.py --table times.jsonl          # print the table of an earlier run

Every stage command in dvc.yaml starts with ``python``; this puts a ``python`` first
on the PATH that runs the real interpreter as its child and, when the child exits,
appends one JSON line to the log: the stage (``train@<s>`` from its --config), wall
seconds, CPU seconds of the stage and every process it waited for (workers, torchrun
ranks), the peak RSS of its largest process (what the kernel reports, shared pages
included) and the peak PSS of its whole process tree (sampled every 0.5 s; shared
pages split between the processes that map them). The load average at the start
and end of each stage is logged too, since the machine may be shared. DVC's own
time (hashing, caching, the run-cache) is the total wall time less the stages'.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

SHIM = '''#!{python}
import sys
sys.path.insert(0, {here!r})
from stage_times import record_child
record_child({python!r}, sys.argv[1:], {log!r})
'''


def _tree(pid: int) -> list[int]:
    out, stack = [], [pid]
    while stack:
        p = stack.pop()
        out.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as fh:
                    stack.extend(int(c) for c in fh.read().split())
        except OSError:
            continue
    return out


def _pss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as fh:
            return next(int(line.split()[1]) for line in fh if line.startswith("Pss:"))
    except (OSError, StopIteration):
        return 0


def stage_name(argv: list[str]) -> str:
    """``train@<out>`` for ``-m stages.train ... --out .../<out>`` (``baseline``, the ceiling's
    ``baseline@natural``), ``train@<s>`` for ``--config .../<s>.json`` alone, else the stage module's last part."""
    if "-m" not in argv:
        return " ".join(argv)[:60]
    module = argv[argv.index("-m") + 1]
    name = module.rsplit(".", 1)[-1]
    if "--config" in argv:
        out = argv[argv.index("--out") + 1] if "--out" in argv[:-1] else None
        name += "@" + (Path(out).name if out else Path(argv[argv.index("--config") + 1]).stem)
    return name


def record_child(python: str, argv: list[str], log: str) -> None:
    """Run ``python argv`` as a child, then append its timings to ``log``; exit with its status."""
    start_wall, load0 = time.time(), os.getloadavg()[0]
    proc = subprocess.Popen([python, *argv])
    peak = [0]
    done = [False]

    def poll() -> None:
        while not done[0]:
            peak[0] = max(peak[0], sum(_pss_kib(p) for p in _tree(proc.pid)))
            time.sleep(0.5)

    watcher = threading.Thread(target=poll, daemon=True)
    watcher.start()
    _, status, usage = os.wait4(proc.pid, 0)
    done[0] = True
    wall = time.time() - start_wall
    code = os.waitstatus_to_exitcode(status)
    entry = {"stage": stage_name(argv), "argv": argv, "start": start_wall, "wall_s": round(wall, 2),
             "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
             "peak_rss_mib": round(usage.ru_maxrss / 1024, 1), "peak_pss_mib": round(peak[0] / 1024, 1),
             "load_start": load0, "load_end": os.getloadavg()[0], "status": code}
    if os.environ.get("STAGE_TIMES_SKIP") != "1":
        with open(log, "a") as fh:
            fh.write(json.dumps(entry) + "\n")
    sys.exit(code)


def install_shim(log: Path) -> Path:
    """A temporary folder holding the ``python`` shim; put it first on PATH."""
    folder = Path(tempfile.mkdtemp(prefix="stage-times-"))
    here = str(Path(__file__).resolve().parent)
    for name in ("python", "python3"):
        path = folder / name
        path.write_text(SHIM.format(python=sys.executable, here=here, log=str(log.resolve())))
        path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return folder


def run_timed(command: list[str], log: Path, cwd: Path | None = None, env: dict | None = None) -> float:
    """Run ``command`` with the shim first on PATH; return its wall time (stages append to ``log``)."""
    folder = install_shim(log)
    env = dict(os.environ if env is None else env)
    env["PATH"] = f"{folder}{os.pathsep}{env.get('PATH', '')}"
    start = time.time()
    try:
        subprocess.run(command, cwd=cwd, env=env, check=True)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return time.time() - start


def read_log(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]


def table(entries: list[dict], total: float | None = None) -> str:
    lines = ["| stage | wall s | CPU s | peak RSS MiB | peak PSS MiB (tree) | load |", "|---|---|---|---|---|---|"]
    for e in entries:
        lines.append(f"| {e['stage']} | {e['wall_s']:.1f} | {e['cpu_s']:.1f} | {e['peak_rss_mib']:.0f} | "
                     f"{e['peak_pss_mib']:.0f} | {e['load_start']:.1f}-{e['load_end']:.1f} |")
    wall = sum(e["wall_s"] for e in entries)
    cpu = sum(e["cpu_s"] for e in entries)
    lines.append(f"| all stages | {wall:.1f} | {cpu:.1f} | | | |")
    if total is not None:
        lines.append(f"| dvc's own time | {total - wall:.1f} | | | | |")
        lines.append(f"| dvc repro | {total:.1f} | | | | |")
    return "\n".join(lines)


def cpu_description(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The CPU's model name and its widest matrix/vector unit: training precision and speed depend on it."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return "unknown CPU"
    first_core = text.split("\n\n", 1)[0]
    fields = {key.strip(): value.strip() for key, value in
              (line.split(":", 1) for line in first_core.splitlines() if ":" in line)}
    flags = set(fields.get("flags", "").split())
    unit = next((name for flag, name in (("amx_tile", "AMX"), ("avx512_bf16", "AVX512-BF16"), ("avx512f", "AVX-512"),
                                         ("avx2", "AVX2")) if flag in flags), "no AVX2")
    return f"{fields.get('model name', 'unknown CPU')}, {unit}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--log", type=Path, help="JSON lines, one per stage (appended to)")
    parser.add_argument("--table", type=Path, help="print the table of an existing log and exit")
    parser.add_argument("--json", type=Path, help="also write the run here: total_s, load, cpus, the CPU and every stage "
                                                  "(docs/stage_times.json feeds the docs' stage table)")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    if args.table:
        print(table(read_log(args.table)))
        return
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command or args.log is None:
        parser.error("give --log and a command after --")
    load = os.getloadavg()
    total = run_timed(command, args.log)
    print(f"load average at start {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}, at end "
          f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}; {os.cpu_count()} CPUs")
    print(table(read_log(args.log), total))
    if args.json:
        args.json.write_text(json.dumps({"command": " ".join(command), "total_s": round(total, 1),
                                         "load_start": [round(x, 2) for x in load],
                                         "load_end": [round(x, 2) for x in os.getloadavg()],
                                         "cpus": os.cpu_count(), "cpu": cpu_description(),
                                         "stages": read_log(args.log)}, indent=2) + "\n")


if __name__ == "__main__":
    main()
