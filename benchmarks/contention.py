"""Speed beside one other torch job: each workload alone, then beside an equal-priority torch competitor.

    python benchmarks/contention.py                       # train, audit and predict, 20 s each way
    python benchmarks/contention.py --seconds 10 --json docs/contention.json

A workload runs in its own process, set up as a stage is (``import weldnet`` first:
idle OpenMP threads sleep, torch sized to the CPUs granted), and counts steps for a
fixed time after a warm-up:

* ``train``: small_cnn forward, loss, backward and SGD step at the default input
  size and batch (what a train or pretrain stage does per step);
* ``audit``: the audit's tiny CNN on 48 px thumbnails, AdamW (an audit fold);
* ``predict``: small_cnn forward passes in eval mode (evaluate, the bundle and triage).

The competitor is what a user runs beside it: a separate Python process with torch's
default settings (no weldnet import, default thread pool and OpenMP wait policy) in
a convolution loop, at the same priority. The ratio is steps/s beside it over steps/s
alone; a fair share of the machine is 1 / (1 + competitor's threads / CPUs) ~ 0.5 on
two cores. Target: at least 0.4. Nothing is asserted; run it on an otherwise idle machine.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
WORKLOADS = ("train", "audit", "predict")

COMPETITOR = """
import torch, time
x = torch.randn(64, 3, 64, 64)
conv = torch.nn.Sequential(torch.nn.Conv2d(3, 32, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(32, 64, 3, padding=1))
end = time.time() + {seconds}
while time.time() < end:
    conv(x).sum().backward()
"""


def workload_rate(name: str, seconds: float, warmup: float = 3.0) -> float:
    """Steps per second of ``name`` in this process (called in a child: ``--run NAME``)."""
    import torch
    from torch import nn

    import weldnet  # noqa: F401  (before torch: threads and wait policy as in a stage)
    from weldnet.audit.model import tiny_cnn
    from weldnet.core.params import ModelParams
    from weldnet.strategies.models import build_model

    torch.manual_seed(0)
    if name == "audit":
        model = tiny_cnn(8, 16, 48).to(memory_format=torch.channels_last)
        x, y = torch.randn(128, 3, 48, 48).contiguous(memory_format=torch.channels_last), torch.rand(128, 8).round()
        optimizer, loss_fn = torch.optim.AdamW(model.parameters(), 1e-3), nn.BCEWithLogitsLoss()
    else:
        params = ModelParams()
        model = build_model(params, 2)
        x, y = torch.randn(64, 3, params.input_size, params.input_size), torch.randint(0, 2, (64,))
        optimizer, loss_fn = torch.optim.SGD(model.parameters(), 0.01, momentum=0.9), nn.CrossEntropyLoss()

    def step() -> None:
        if name == "predict":
            with torch.no_grad():
                model.eval()
                model(x)
            return
        optimizer.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        optimizer.step()

    start = time.perf_counter()
    while time.perf_counter() - start < warmup:
        step()
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        step()
        steps += 1
    return steps / (time.perf_counter() - start)


def _run_child(name: str, seconds: float, torch_defaults: bool) -> float:
    # An empty OMP_WAIT_POLICY is one weldnet leaves alone and OpenMP ignores: its default (spin, then sleep).
    env = {**os.environ, "OMP_WAIT_POLICY": ""} if torch_defaults else None
    out = subprocess.run([sys.executable, __file__, "--run", name, "--seconds", str(seconds)], cwd=REPO,
                         capture_output=True, text=True, check=True, env=env)
    return float(out.stdout.split()[-1])


def measure(name: str, seconds: float, torch_defaults: bool = False) -> dict[str, float]:
    alone = _run_child(name, seconds, torch_defaults)
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("OMP_", "WELDNET_", "MKL_"))}
    competitor = subprocess.Popen([sys.executable, "-c", COMPETITOR.format(seconds=seconds + 30)], env=clean)
    try:
        time.sleep(2.0)                                         # let it reach its loop
        beside = _run_child(name, seconds, torch_defaults)
    finally:
        competitor.kill()
        competitor.wait()
    return {"alone_steps_per_s": round(alone, 2), "beside_steps_per_s": round(beside, 2),
            "ratio": round(beside / alone, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=20.0, help="measured seconds per run (after a 3 s warm-up)")
    parser.add_argument("--only", choices=WORKLOADS, action="append", help="workloads to run (default: all)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--torch-defaults", action="store_true",
                        help="run the workloads with OpenMP's default wait policy, as before weldnet set it")
    parser.add_argument("--run", choices=WORKLOADS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run:
        print(workload_rate(args.run, args.seconds))
        return
    from weldnet.core.threads import available_cpus

    load = os.getloadavg()[0]
    rows = {}
    print(f"{'workload':<10}{'alone steps/s':>15}{'beside steps/s':>16}{'ratio':>8}")
    for name in args.only or WORKLOADS:
        rows[name] = measure(name, args.seconds, args.torch_defaults)
        r = rows[name]
        print(f"{name:<10}{r['alone_steps_per_s']:>15.2f}{r['beside_steps_per_s']:>16.2f}{r['ratio']:>8.3f}")
    result = {"cpus": available_cpus(), "seconds": args.seconds, "load_before": round(load, 2),
              "load_after": round(os.getloadavg()[0], 2), "workloads": rows, "target_ratio": 0.4,
              "wait_policy": "OpenMP default" if args.torch_defaults else "PASSIVE"}
    print(f"target: ratio >= 0.4 (fair share about 0.5); load average before {load:.2f}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
