"""Time the `generate` stage: wall-clock and CPU seconds for a generated export.

    python -m benchmarks.generate_speed [--redbox 3000] [--bluebox 3000] [--workers 2]

Writes into a temporary directory (deleted afterwards), so it needs no params.yaml.
CPU seconds include the worker processes; on a busy machine wall time exceeds CPU / workers.
"""
from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # run as a script from anywhere

from weldnet.core.params import GenerateSpec, RigCounts
from weldnet.synth.export import generate


def _cpu_seconds() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--redbox", type=int, default=3000)
    parser.add_argument("--bluebox", type=int, default=3000)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    spec = GenerateSpec(size=RigCounts(redbox=args.redbox, bluebox=args.bluebox), workers=args.workers)
    with tempfile.TemporaryDirectory() as tmp:
        cpu, start = _cpu_seconds(), time.perf_counter()
        generate(spec, Path(tmp) / "export", Path(tmp) / "truth.csv")
        wall, cpu = time.perf_counter() - start, _cpu_seconds() - cpu
        megabytes = sum(p.stat().st_size for p in Path(tmp).rglob("*") if p.is_file()) / 2**20
    photos = args.redbox + args.bluebox
    print(f"{photos} photos ({args.redbox} redbox + {args.bluebox} bluebox), {args.workers} workers: "
          f"{wall:.1f} s wall, {cpu:.1f} s CPU ({1000 * cpu / max(photos, 1):.1f} ms CPU per photo), "
          f"{megabytes:.0f} MiB")


if __name__ == "__main__":
    main()
