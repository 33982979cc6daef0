"""Ingest cost against the number of label rows: wall time, rejected.csv size and peak memory.

    python benchmarks/ingest_rows.py [--rows 100000] [--conflicting 4000] [--repo PATH] [--timeout 300]

Each case writes a tiny export (a few 64x48 JPEGs) and a labels.csv in a temporary
folder, runs ``python -m stages.ingest`` there (ingest.workers = 1) and prints:

  * many rows naming 4 photos (duplicates of one, conflicting labels on one, one
    rejected row among many good ones for one, duplicates of the last), at 1/4,
    1/2 and all of --rows, so the growth with the number of rows shows;
  * --conflicting rows for one photo with alternating labels (plus one good row), at
    1/4, 1/2 and all.

Peak memory is the maximum resident set size of the stage process (os.wait4).
``--repo`` runs another checkout's stage (e.g. an older commit) on the same data;
a run over ``--timeout`` seconds is reported as such. Nothing is asserted: the
numbers are printed as measured.
"""
from __future__ import annotations

import argparse
import io
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

REPO = Path(__file__).resolve().parents[1]


def jpeg(seed: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


def four_photo_rows(n: int) -> list[str]:
    labels = {"a": ["redbox,Other"], "b": ["redbox,", "bluebox,"], "c": ["redbox,"], "d": ["bluebox,"]}
    rows = []
    for i in range(n):
        name = "abcd"[i % 4]
        rows.append(f"{name}.jpg,{labels[name][(i // 4) % len(labels[name])]}")
    rows[n // 2 - (n // 2) % 4 + 2] = "c.jpg,redbox,No Clamp Usd"  # one bad row for c, mid-table
    return rows


def conflicting_rows(n: int) -> list[str]:
    """``n`` rows for p.jpg, alternating two label sets, and one good row (a stage needs one accepted photo)."""
    return [*(f"p.jpg,redbox,{'Other' if i % 2 else ''}" for i in range(n)), "q.jpg,redbox,"]


def run_case(repo: Path, rows: list[str], photos: list[str], timeout: float) -> dict[str, float | str]:
    """Ingest ``rows`` in a fresh folder with ``repo``'s stage: wall s, rejected.csv MiB, peak RSS MiB."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        export = folder / "export"
        export.mkdir()
        for k, name in enumerate(photos):
            (export / name).write_bytes(jpeg(k))
        (export / "labels.csv").write_text("\n".join(["image,rig,flags", *rows]) + "\n")
        params = yaml.safe_load((repo / "params.yaml").read_text())
        params["ingest"] = {**params.get("ingest", {}), "workers": 1, "strict": False}
        (folder / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        env = {**os.environ, "PYTHONPATH": str(repo)}
        start = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "stages.ingest", "--export", str(export), "--manifest",
                                 "manifest.csv", "--rejected", "rejected.csv", "--metrics", "ingest.json"],
                                cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = start + timeout
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                proc.kill()
                os.wait4(proc.pid, 0)
                return {"wall": f"over {timeout:.0f} s (killed)", "rejected": "-", "peak": "-"}
            time.sleep(0.02)
        wall = time.perf_counter() - start
        if os.waitstatus_to_exitcode(status) != 0:
            return {"wall": f"failed: {proc.stderr.read().decode()[-200:].strip()}", "rejected": "-", "peak": "-"}
        rejected = (folder / "rejected.csv").stat().st_size / 2**20
        return {"wall": wall, "rejected": rejected, "peak": usage.ru_maxrss / 1024}


def show(value: float | str, unit: str, digits: int = 2) -> str:
    return f"{value:.{digits}f} {unit}" if isinstance(value, float) else str(value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=100_000, help="rows naming 4 photos (largest case)")
    parser.add_argument("--conflicting", type=int, default=4000, help="conflicting rows for one photo (largest case)")
    parser.add_argument("--repo", type=Path, default=REPO, help="checkout whose stages.ingest runs")
    parser.add_argument("--timeout", type=float, default=300)
    args = parser.parse_args()
    print(f"ingest of {args.repo} (1 worker, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f})")
    cases = [(f"{n:>7,} rows naming 4 photos", four_photo_rows(n), ["a.jpg", "b.jpg", "c.jpg", "d.jpg"])
             for n in (args.rows // 4, args.rows // 2, args.rows)]
    cases += [(f"{n:>7,} conflicting rows for 1 photo", conflicting_rows(n), ["p.jpg", "q.jpg"])
              for n in (args.conflicting // 4, args.conflicting // 2, args.conflicting)]
    for label, rows, photos in cases:
        result = run_case(args.repo, rows, photos, args.timeout)
        per_row = (f", {1e6 * result['wall'] / len(rows):.0f} us/row" if isinstance(result["wall"], float) else "")
        print(f"{label}: {show(result['wall'], 's')} wall{per_row}, rejected.csv {show(result['rejected'], 'MiB')}, "
              f"peak RSS {show(result['peak'], 'MiB', 0)}", flush=True)


if __name__ == "__main__":
    main()
