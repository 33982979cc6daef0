"""Benchmark ingest and preprocess on synthetic 1280x960 JPEGs (Bluebox size).

Prints, in one run:
  * CPU time per photo for draft-mode decoding + resize vs full decode + resize;
  * preprocess wall time (and CPU time of parent + workers) with 1 worker vs 2 workers;
    wall times only mean something on an otherwise idle machine (the load average is printed);
  * peak memory of preprocess (parent + workers, PSS, so shared pages count once)
    for N and 4N photos at a fixed shard size: it should not grow with N;
  * ingest wall time for the 4N photos (2 workers).
With --ingest-6000 it also times ingest on 3000 640x480 + 3000 1280x960 photos,
the size of the generated export.

Run from the repository root:  python benchmarks/preprocess_speed.py [--n 250] [--ingest-6000]
Nothing is asserted: the numbers are printed for the README.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np
import yaml
from PIL import Image, ImageDraw

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from weldnet.photos.images import load_resized, to_rgb  # noqa: E402

MAX_PIXELS = 89_478_485


_NOISE: dict[tuple[int, int, float], np.ndarray] = {}


def synthetic_photo(task: tuple[str, int, int, int, float, int]) -> None:
    """A random-ish photo like the generated export's: smooth shading, shapes with edges, sensor noise, JPEG."""
    path, seed, width, height, noise, quality = task
    rng = np.random.default_rng(seed)
    field = rng.integers(40, 220, (6, 8, 3), dtype=np.uint8)
    img = Image.fromarray(field).resize((width, height), Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(img)
    for _ in range(12):
        x0, x1 = sorted(rng.uniform(0, width, 2))
        y0, y1 = sorted(rng.uniform(0, height, 2))
        fill = tuple(int(c) for c in rng.integers(0, 256, 3))
        kind = rng.integers(3)
        if kind == 0:
            draw.ellipse((x0, y0, x1, y1), fill=fill)
        elif kind == 1:
            draw.rectangle((x0, y0, x1, y1), outline=fill, width=int(rng.integers(2, 12)))
        else:
            draw.line((x0, y0, x1, y1), fill=fill, width=int(rng.integers(2, 20)))
    key = (width, height, noise)
    if key not in _NOISE:  # one noise bank per process, cropped at random offsets
        bank = np.random.default_rng(0).normal(0, noise, (height + height // 4, width + width // 4, 3))
        _NOISE[key] = np.rint(bank).astype(np.int16)
    dy, dx = rng.integers(0, height // 4), rng.integers(0, width // 4)
    pixels = np.asarray(img, dtype=np.int16) + _NOISE[key][dy:dy + height, dx:dx + width]
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path, "JPEG", quality=quality)


# rig -> (width, height, noise sigma, JPEG quality), as the generate stage's cameras
CAMERAS = {"redbox": (640, 480, 7.0, 75), "bluebox": (1280, 960, 2.5, 90)}


def build_export(root: Path, counts: dict[str, int]) -> list[str]:
    """Write photos and labels.csv (rig -> number of photos); returns the image paths."""
    tasks, rows = [], ["image,rig,flags"]
    for r, (rig, count) in enumerate(counts.items()):
        (root / "images" / rig).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            image = f"images/{rig}/{rig}_{i:05d}.jpg"
            tasks.append((str(root / image), r * 1_000_000 + i, *CAMERAS[rig]))
            rows.append(f"{image},{rig},{'No Clamp Used' if i % 7 == 0 else ''}")
    with Pool(os.cpu_count()) as pool:
        pool.map(synthetic_photo, tasks, chunksize=16)
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return [r.split(",")[0] for r in rows[1:]]


def full_decode_resized(path: Path, size: int) -> np.ndarray:
    """The slow way: decode every pixel, then resize (same orientation/mode handling, no draft)."""
    with Image.open(path) as im:
        im.load()
        im = to_rgb(im)
    return np.asarray(im.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=2.0))


def time_per_photo(paths: list[Path], fn) -> float:
    """CPU seconds per photo of this process (CPU time, so other load on the machine does not skew the ratio)."""
    start = time.process_time()
    for path in paths:
        fn(path)
    return (time.process_time() - start) / len(paths)


def _tree_pss_kib(pid: int) -> int:
    """PSS of a process and all its descendants (kB); shared pages are split, not counted twice."""
    total, stack = 0, [pid]
    while stack:
        p = stack.pop()
        try:
            with open(f"/proc/{p}/smaps_rollup") as fh:
                total += next(int(line.split()[1]) for line in fh if line.startswith("Pss:"))
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as fh:
                    stack.extend(int(c) for c in fh.read().split())
        except (OSError, StopIteration):
            continue
    return total


def run_stage(cwd: Path, module: str, argv: list[str], watch: bool = False) -> tuple[float, float, float]:
    """Run `python -m module argv` in cwd: (wall s, peak PSS of the process tree MiB, peak RSS of one process MiB).

    PSS is sampled every 20 ms only when ``watch`` (sampling costs CPU, so timed runs leave it off).
    """
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", module, *argv], cwd=cwd, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak = [0]
    done = threading.Event()

    def poll() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _tree_pss_kib(proc.pid))
            time.sleep(0.02)

    watcher = threading.Thread(target=poll if watch else done.wait, daemon=True)
    watcher.start()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    done.set()
    watcher.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{module} failed: {proc.stderr.read().decode()}")
    run_stage.cpu_s = usage.ru_utime + usage.ru_stime  # parent + workers (waited-for children count)
    return wall, peak[0] / 1024, usage.ru_maxrss / 1024


def write_params(folder: Path, size: int, shard_size: int, workers: int) -> None:
    """The repository's params.yaml (every stage checks the whole file) with ingest and preprocess set."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["ingest"] = {"max_pixels": MAX_PIXELS, "strict": False, "workers": 2}
    params["preprocess"] = {"size": size, "shard_size": shard_size, "workers": workers}
    (folder / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def ingest(folder: Path, export: Path) -> float:
    wall, _, _ = run_stage(folder, "stages.ingest", ["--export", str(export), "--manifest", "manifest.csv",
                                                     "--rejected", "rejected.csv", "--metrics", "ingest.json"])
    return wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=250, help="N: photos in the small run (the large one has 4N)")
    parser.add_argument("--size", type=int, default=256, help="preprocess.size")
    parser.add_argument("--decode-sample", type=int, default=60, help="photos timed for draft vs full decoding")
    parser.add_argument("--ingest-6000", action="store_true", help="also time ingest of 3000+3000 photos")
    args = parser.parse_args()
    n, size = args.n, args.size
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start; photos 1280x960 JPEG q90, noise 2.5 (generate's bluebox camera); "
          f"preprocess.size {size}")

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        export = tmp / "export"
        start = time.perf_counter()
        images = build_export(export, {"bluebox": 4 * n})
        sizes = [os.path.getsize(export / i) for i in images]
        print(f"built {4 * n} photos in {time.perf_counter() - start:.1f} s (mean {np.mean(sizes) / 1024:.0f} KiB)")

        sample = [export / i for i in images[: args.decode_sample]]
        draft = time_per_photo(sample, lambda p: load_resized(p, size, MAX_PIXELS))
        full = time_per_photo(sample, lambda p: full_decode_resized(p, size))
        print(f"decode+resize per photo (CPU time, 1 process): draft {draft * 1e3:.1f} ms, full {full * 1e3:.1f} ms, "
              f"full/draft = {full / draft:.2f}x")

        work = tmp / "run"
        work.mkdir()
        write_params(work, size, n, 2)
        wall = ingest(work, export)
        print(f"ingest, {4 * n} photos, 2 workers: {wall:.1f} s ({wall / (4 * n) * 1e3:.2f} ms/photo)")
        full_manifest = (work / "manifest.csv").read_text().splitlines()
        (work / "manifest_n.csv").write_text("\n".join(full_manifest[: n + 1]) + "\n")

        timings, cpu = {}, {}
        for workers in (1, 2):
            write_params(work, size, n, workers)
            timings[workers], _, _ = run_stage(work, "stages.preprocess", [
                "--export", str(export), "--manifest", "manifest_n.csv", "--out", "processed"])
            cpu[workers] = run_stage.cpu_s
        print(f"preprocess, {n} photos: 1 worker {timings[1]:.1f} s wall ({cpu[1]:.1f} CPU s), "
              f"2 workers {timings[2]:.1f} s wall ({cpu[2]:.1f} CPU s); wall speed-up {timings[1] / timings[2]:.2f}x")

        write_params(work, size, n, 2)
        memory = {}
        for label, manifest in (("N", "manifest_n.csv"), ("4N", "manifest.csv")):
            memory[label] = run_stage(work, "stages.preprocess", [
                "--export", str(export), "--manifest", manifest, "--out", "processed"], watch=True)
        shard_mib = n * size * size * 3 / 2**20
        for label, count in (("N", n), ("4N", 4 * n)):
            wall, pss, rss = memory[label]
            print(f"preprocess, {count} photos ({label}), 2 workers, shard_size {n} ({shard_mib:.0f} MiB/shard): "
                  f"{wall:.1f} s, peak PSS parent+workers {pss:.0f} MiB, peak RSS largest process {rss:.0f} MiB")
        print(f"memory 4N/N: PSS {memory['4N'][1] / memory['N'][1]:.2f}x, RSS {memory['4N'][2] / memory['N'][2]:.2f}x "
              f"(data grew 4x; {4 * n * size * size * 3 / 2**20:.0f} MiB of shards written)")

    if args.ingest_6000:
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            start = time.perf_counter()
            build_export(tmp / "export", {"redbox": 3000, "bluebox": 3000})
            print(f"built 3000 640x480 + 3000 1280x960 photos in {time.perf_counter() - start:.0f} s")
            write_params(tmp, size, 1000, 2)
            wall = ingest(tmp, tmp / "export")
            print(f"ingest, 6000 photos, 2 workers: {wall:.1f} s")
            wall, pss, _ = run_stage(tmp, "stages.preprocess", ["--export", str(tmp / "export"), "--manifest",
                                                                "manifest.csv", "--out", "processed"], watch=True)
            print(f"preprocess, 6000 photos, 2 workers, shard_size 1000: {wall:.1f} s, peak PSS {pss:.0f} MiB")


if __name__ == "__main__":
    main()
